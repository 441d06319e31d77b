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
    /// The compressor, and a scratch buffer it writes into (kept, so that compressing a
    /// catalog is not millions of large allocations).
    static COMPRESSOR: RefCell<(Compressor, Vec<u8>)> =
        RefCell::new((Compressor::new(LEVEL), Vec::new()));
    static DECOMPRESSOR: RefCell<Decompressor> = RefCell::new(Decompressor::new());
}

/// Whether `compressed` bytes for `plain` bytes save enough to pay for inflating them: at
/// least an eighth.
fn worth_it(compressed: usize, plain: usize) -> bool {
    compressed + plain / 8 <= plain
}

/// `plain` as a gzip member, if that saves at least an eighth. The result holds no spare
/// capacity: it is kept for a long time, in millions.
pub fn gzip(plain: &[u8]) -> Option<Box<[u8]>> {
    compressed(plain, |c, out| {
        let bound = c.gzip_compress_bound(plain.len());
        out.resize(bound, 0);
        c.gzip_compress(plain, out).ok()
    })
}

/// Runs `compress` with this thread's compressor and scratch buffer; returns an exact copy of
/// what it wrote if that is worth keeping.
fn compressed(
    plain: &[u8],
    compress: impl FnOnce(&mut Compressor, &mut Vec<u8>) -> Option<usize>,
) -> Option<Box<[u8]>> {
    COMPRESSOR.with(|c| {
        let (compressor, scratch) = &mut *c.borrow_mut();
        let n = compress(compressor, scratch)?;
        worth_it(n, plain.len()).then(|| Box::from(&scratch[..n]))
    })
}

/// The bytes of a gzip member made by [`gzip`]; None if it is not one.
pub fn gunzip(gz: &[u8]) -> Option<Vec<u8>> {
    let mut out = vec![0; gzip_size(gz)?];
    let n = DECOMPRESSOR
        .with(|d| d.borrow_mut().gzip_decompress(gz, &mut out))
        .ok()?;
    (n == out.len()).then_some(out)
}

/// The most deflate expands: 258 bytes from each 2-bit code, give or take its block headers.
pub const MAX_DEFLATE_RATIO: usize = 1_032;

/// The size a gzip member says its contents have (its trailer's last four bytes, mod 2^32;
/// bodies here are far smaller), if plausible for its length: a header (10 bytes) and a
/// trailer (8) at least, and no more than deflate expands. What inflating it allocates.
pub fn gzip_size(gz: &[u8]) -> Option<usize> {
    let at = gz.len().checked_sub(4).filter(|_| gz.len() >= 18)?;
    let size = u32::from_le_bytes(gz.get(at..)?.try_into().ok()?) as usize;
    (size <= gz.len().saturating_mul(MAX_DEFLATE_RATIO)).then_some(size)
}

/// `plain` as raw deflate, if that saves at least an eighth (no spare capacity either).
pub fn deflate(plain: &[u8]) -> Option<Box<[u8]>> {
    compressed(plain, |c, out| {
        let bound = c.deflate_compress_bound(plain.len());
        out.resize(bound, 0);
        c.deflate_compress(plain, out).ok()
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
        assert_eq!(
            Vec::from(gz.clone()).capacity(),
            gz.len(),
            "no spare capacity"
        );
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
