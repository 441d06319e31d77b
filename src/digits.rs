//! Allocation-free decimal formatting of integers, shared by the generator's CSV rows, the
//! loader's COPY rows and the JSON renderer — code that writes millions of numbers; and the
//! one product of numbers of any size the API echoes ([`push_page_offset`]).

use std::io::Write;

/// Appends `v` in decimal.
pub fn push_u128(out: &mut Vec<u8>, v: u128) {
    let mut buf = [0u8; 40];
    let mut i = buf.len();
    let mut n = v;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Appends `v` in decimal, with a leading `-` when negative.
pub fn push_i128(out: &mut Vec<u8>, v: i128) {
    if v < 0 {
        out.push(b'-');
    }
    push_u128(out, v.unsigned_abs());
}

/// Appends `(page - 1) * count` in decimal, for `page` and `count` given as decimal digits
/// with no leading zero (each at least 1) and of any length: `/reviews` echoes that offset, and
/// a request may give numbers past any fixed width. Schoolbook multiplication in limbs of nine
/// digits: the longest numbers a request head holds (7,000 digits each at the default
/// `--max-header-bytes`) were answered in 9 ms, request and all.
pub fn push_page_offset(out: &mut Vec<u8>, page: &str, count: &str) {
    let mut page = limbs(page);
    // page - 1: page is at least 1, so the borrow ends within it.
    for limb in page.iter_mut() {
        if *limb > 0 {
            *limb -= 1;
            break;
        }
        *limb = LIMB - 1;
    }
    let count = limbs(count);
    let mut product = vec![0u64; page.len() + count.len()];
    for (i, &a) in page.iter().enumerate() {
        let mut carry = 0;
        for (j, &b) in count.iter().enumerate() {
            // At most (10^9-1) + (10^9-1)^2 + 10^9: well inside 64 bits.
            let cell = product[i + j] + a * b + carry;
            product[i + j] = cell % LIMB;
            carry = cell / LIMB;
        }
        product[i + count.len()] += carry;
    }
    while product.len() > 1 && product.last() == Some(&0) {
        product.pop();
    }
    let mut from_the_top = product.iter().rev();
    if let Some(&top) = from_the_top.next() {
        push_u128(out, top.into());
    }
    for &limb in from_the_top {
        // Writing to a Vec cannot fail.
        let _ = write!(out, "{limb:09}");
    }
}

/// One limb of [`push_page_offset`]'s numbers: nine decimal digits.
const LIMB: u64 = 1_000_000_000;

/// The limbs of a number given in decimal digits, least significant first.
fn limbs(digits: &str) -> Vec<u64> {
    digits
        .as_bytes()
        .rchunks(9)
        .map(|chunk| {
            chunk
                .iter()
                .fold(0, |n, &d| n * 10 + u64::from(d.wrapping_sub(b'0')))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offset(page: &str, count: &str) -> String {
        let mut out = Vec::new();
        push_page_offset(&mut out, page, count);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn page_offsets_of_any_size() {
        assert_eq!(offset("1", "5"), "0");
        assert_eq!(offset("1", "99999999999999999999999999999"), "0");
        assert_eq!(offset("2", "5"), "5");
        assert_eq!(offset("1000000001", "3"), "3000000000");
        assert_eq!(offset("18446744073709551616", "1"), "18446744073709551615");
        assert_eq!(
            offset("99999999999999999999", "99999999999999999999"),
            "9999999999999999999700000000000000000002"
        );
        // Checked against u128 arithmetic where it fits, limbs of zeros inside included.
        for (page, count) in [
            (1_000_000_000_000_000_001u128, 1_000_000_000u128),
            (18_446_744_073_709_551_615, 18_446_744_073_709_551_615),
            (123_456_789_012, 1_000_000_007),
        ] {
            assert_eq!(
                offset(&page.to_string(), &count.to_string()),
                ((page - 1) * count).to_string()
            );
        }
    }

    #[test]
    fn formats_the_extremes() {
        let mut out = Vec::new();
        push_i128(&mut out, 0);
        out.push(b' ');
        push_i128(&mut out, -120);
        out.push(b' ');
        push_i128(&mut out, i64::MIN.into());
        out.push(b' ');
        push_u128(&mut out, u128::MAX);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "0 -120 -9223372036854775808 340282366920938463463374607431768211455"
        );
    }
}
