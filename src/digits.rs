//! Allocation-free decimal formatting of integers, shared by the generator's CSV rows, the
//! loader's COPY rows and the JSON renderer — code that writes millions of numbers.

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

#[cfg(test)]
mod tests {
    use super::*;

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
