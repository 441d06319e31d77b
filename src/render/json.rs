//! A minimal JSON writer: the bodies are written by hand, field by field, so their bytes are
//! exactly the contract's (field order, number and string forms) with no intermediate values.
//! String escaping follows JavaScript's `JSON.stringify`, which the hosted API used.

/// Appends `s` as a JSON string literal.
pub fn push_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    while let Some(i) = next_escaped(bytes, start) {
        out.extend_from_slice(&bytes[start..i]);
        push_escaped(out, bytes[i]);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Whether `b` is escaped in a JSON string: a quote, a backslash or a control character.
fn is_escaped(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// The position of the first byte of `bytes` from `from` on that is escaped. Most text has
/// none, so the bytes are tested a block at a time without stopping early, which the
/// compiler turns into a few vector compares a block; only a block with one is searched.
fn next_escaped(bytes: &[u8], from: usize) -> Option<usize> {
    const BLOCK: usize = 16;
    let rest = bytes.get(from..)?;
    let mut blocks = rest.chunks_exact(BLOCK);
    let mut at = from;
    for block in &mut blocks {
        if block.iter().fold(false, |any, &b| any | is_escaped(b)) {
            return block.iter().position(|&b| is_escaped(b)).map(|i| at + i);
        }
        at += BLOCK;
    }
    blocks
        .remainder()
        .iter()
        .position(|&b| is_escaped(b))
        .map(|i| at + i)
}

/// Appends the escape of `b`, one of the bytes [`is_escaped`] names, as `JSON.stringify`
/// writes it.
fn push_escaped(out: &mut Vec<u8>, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    match b {
        b'"' => out.extend_from_slice(b"\\\""),
        b'\\' => out.extend_from_slice(b"\\\\"),
        b'\n' => out.extend_from_slice(b"\\n"),
        b'\r' => out.extend_from_slice(b"\\r"),
        b'\t' => out.extend_from_slice(b"\\t"),
        0x08 => out.extend_from_slice(b"\\b"),
        0x0c => out.extend_from_slice(b"\\f"),
        _ => {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 15)]);
        }
    }
}

/// Appends a string literal, or `null`.
pub fn push_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => push_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// Appends an integer.
pub fn push_int(out: &mut Vec<u8>, v: impl Into<i128>) {
    crate::digits::push_i128(out, v.into());
}

/// Appends an unsigned integer; `(page - 1) * count` can need all 128 bits.
pub fn push_uint(out: &mut Vec<u8>, v: u128) {
    crate::digits::push_u128(out, v);
}

/// Appends an integer as a JSON string (`"40344"`): the contract echoes ids and counts so.
pub fn push_int_str(out: &mut Vec<u8>, v: impl Into<i128>) {
    out.push(b'"');
    push_int(out, v);
    out.push(b'"');
}

pub fn push_bool(out: &mut Vec<u8>, v: bool) {
    out.extend_from_slice(if v { b"true" } else { b"false" });
}

/// Appends an epoch-milliseconds instant as an ISO-8601 string.
pub fn push_date(out: &mut Vec<u8>, ms: i64) {
    out.push(b'"');
    crate::time::push_iso_millis(out, ms);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_as_serde_json_does_wherever_the_escaped_bytes_fall() {
        // serde_json escapes as JSON.stringify does (control characters as \u00xx but for the
        // five short forms; not `/`, not U+2028): an independent writer to check against, over
        // strings of every length around the search's blocks, dense with bytes to escape.
        let pieces = [
            "a", "Z", " ", "\"", "\\", "\n", "\r", "\t", "\u{8}", "\u{c}", "\u{0}", "\u{1f}",
            "\u{7f}", "/", "é", "\u{2028}", "😀", "{}",
        ];
        let mut rng = crate::dataset::rng::Rng::new(7);
        for _ in 0..20_000 {
            let len = rng.below(70);
            let plain = rng.chance(0.5);
            let s: String = (0..len)
                .map(|_| match plain {
                    true if !rng.chance(0.05) => "x",
                    _ => *rng.pick(&pieces),
                })
                .collect();
            let mut out = b"prefix".to_vec();
            push_str(&mut out, &s);
            let expected = serde_json::to_vec(&s).unwrap();
            assert_eq!(&out[6..], &expected[..], "{s:?}");
        }
    }

    #[test]
    fn escapes_like_json_stringify() {
        let mut out = Vec::new();
        push_str(&mut out, "a\"b\\c\nd\u{1}é/\u{2028}");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\"a\\\"b\\\\c\\nd\\u0001é/\u{2028}\""
        );
        let mut out = Vec::new();
        push_opt_str(&mut out, None);
        push_int_str(&mut out, 40344);
        push_int(&mut out, -3);
        push_int(&mut out, 0);
        push_int(&mut out, i128::MIN);
        push_uint(&mut out, u128::MAX);
        assert_eq!(
            out,
            b"null\"40344\"-30-170141183460469231731687303715884105728340282366920938463463374607431768211455"
        );
    }
}
