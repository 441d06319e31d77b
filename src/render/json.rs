//! A minimal JSON writer: the bodies are written by hand, field by field, so their bytes are
//! exactly the contract's (field order, number and string forms) with no intermediate values.
//! String escaping follows JavaScript's `JSON.stringify`, which the hosted API used.

/// Appends `s` as a JSON string literal.
pub fn push_str(out: &mut Vec<u8>, s: &str) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => {
                out.extend_from_slice(&bytes[start..i]);
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 15)]);
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escape);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
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
