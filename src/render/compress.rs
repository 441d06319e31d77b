//! Compact bodies for the precomputed catalog: a whole body kept gzip-compressed (sent as it
//! is to clients that accept gzip, inflated for those that do not), and a list's item buffer
//! kept as raw deflate (inflated to copy a page out of it).
//!
//! libdeflate works on whole buffers, which is what a cached body is, and inflates several
//! times faster than a streaming zlib. Its compressors and decompressors hold state, so each
//! thread keeps its own.

use std::cell::RefCell;

use libdeflater::{CompressionLvl, Compressor, Decompressor};

/// libdeflate's level 6: a catalog's bodies compress about as well as at its highest levels,
/// several times faster.
const LEVEL: CompressionLvl = match CompressionLvl::new(6) {
    Ok(level) => level,
    Err(_) => CompressionLvl::fastest(),
};

thread_local! {
    static COMPRESSOR: RefCell<Compressor> = RefCell::new(Compressor::new(LEVEL));
    static DECOMPRESSOR: RefCell<Decompressor> = RefCell::new(Decompressor::new());
}

/// Whether `compressed` bytes for `plain` bytes save enough to pay for inflating them: at
/// least an eighth.
fn worth_it(compressed: usize, plain: usize) -> bool {
    compressed + plain / 8 <= plain
}

/// `plain` as a gzip member, if that saves at least an eighth.
pub fn gzip(plain: &[u8]) -> Option<Vec<u8>> {
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        let mut out = vec![0; c.gzip_compress_bound(plain.len())];
        let n = c.gzip_compress(plain, &mut out).ok()?;
        out.truncate(n);
        worth_it(n, plain.len()).then_some(out)
    })
}

/// The bytes of a gzip member made by [`gzip`]; None if it is not one.
pub fn gunzip(gz: &[u8]) -> Option<Vec<u8>> {
    // The trailer's last four bytes are the length (mod 2^32; bodies here are far smaller).
    let size: [u8; 4] = gz.get(gz.len().checked_sub(4)?..)?.try_into().ok()?;
    let mut out = vec![0; u32::from_le_bytes(size) as usize];
    let n = DECOMPRESSOR
        .with(|d| d.borrow_mut().gzip_decompress(gz, &mut out))
        .ok()?;
    (n == out.len()).then_some(out)
}

/// `plain` as raw deflate, if that saves at least an eighth.
pub fn deflate(plain: &[u8]) -> Option<Vec<u8>> {
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        let mut out = vec![0; c.deflate_compress_bound(plain.len())];
        let n = c.deflate_compress(plain, &mut out).ok()?;
        out.truncate(n);
        worth_it(n, plain.len()).then_some(out)
    })
}

/// The `len` bytes that `raw` deflates; None if it is not that.
pub fn inflate(raw: &[u8], len: usize) -> Option<Vec<u8>> {
    let mut out = vec![0; len];
    let n = DECOMPRESSOR
        .with(|d| d.borrow_mut().deflate_decompress(raw, &mut out))
        .ok()?;
    (n == len).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_declines_what_does_not_shrink() {
        let text = br#"{"id":1,"name":"Camo Onesie","slogan":"Blend in"}"#.repeat(20);
        let gz = gzip(&text).expect("repetitive text shrinks");
        assert!(gz.len() < text.len() / 4);
        assert_eq!(gunzip(&gz).as_deref(), Some(&text[..]));
        let raw = deflate(&text).expect("shrinks");
        assert_eq!(inflate(&raw, text.len()).as_deref(), Some(&text[..]));
        assert_eq!(
            inflate(&raw, text.len() - 1),
            None,
            "a wrong length is refused"
        );
        assert_eq!(gzip(b"[1]"), None, "too small to shrink");
        assert_eq!(gunzip(b"not gzip at all"), None);
        assert_eq!(gunzip(b""), None);
    }
}
