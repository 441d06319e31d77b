//! A whole body as the precomputed catalog keeps it: how it is kept, the digest of its plain
//! bytes and the bytes themselves, in one block of the catalog's heap that a catalog slot
//! points at.
//!
//! The catalog holds four million whole bodies at full scale. Kept as a [`Rendered`] in an
//! `Arc`, each was two allocations: a 56-byte box (which mimalloc gives 64 bytes) and its
//! bytes. Here the head is 24 bytes in front of the bytes (the reference count, the bytes'
//! length and a 16-byte [`KeptHead`]), in a block of the catalog's [`heap`], which rounds it up
//! by less than a general allocator would (docs/benchmarks.md, Warm-up and The catalog's
//! heap).

use std::ptr::NonNull;
use std::sync::atomic::{self, AtomicU32, Ordering};

use bytes::Bytes;

use super::compress::{self, DictionaryKind};
use super::heap;
use super::shared_codes::{self, CodesKind};
use super::{digest, Gzipped, PackedBody, Rendered};

/// A whole body (or a 404) in one reference-counted block of the catalog's heap; a catalog
/// slot holds one. Clones share it. Two kept bodies are the same value only if they are the
/// same block ([`is_same`]): a refresh's new 404 is not the one a sweep judged.
pub struct Kept(NonNull<KeptBlock>);

/// The front of a kept body's block; its bytes follow.
#[doc(hidden)]
#[repr(C)]
pub struct KeptBlock {
    count: AtomicU32,
    /// The bytes' length.
    len: u32,
    head: KeptHead,
}

// SAFETY: a kept body is immutable but for its count, which is atomic, as an `Arc<[u8]>`'s.
unsafe impl Send for Kept {}
// SAFETY: as above.
unsafe impl Sync for Kept {}

/// More counts than this on one body can only be a leak; as `Arc` does, end the process
/// rather than wrap.
const MAX_COUNT: u32 = u32::MAX / 2;

impl Kept {
    /// `bytes` behind `head`, in a block of the heap; None for 4 GiB or more.
    fn new(head: KeptHead, bytes: &[u8]) -> Option<Kept> {
        let len = u32::try_from(bytes.len()).ok()?;
        let block = heap::alloc(HEAD_BYTES + bytes.len()).cast::<KeptBlock>();
        // SAFETY: the block has room for the head and the bytes, is aligned to 8 (the head's
        // alignment) and is no one else's.
        unsafe {
            block.as_ptr().write(KeptBlock {
                count: AtomicU32::new(1),
                len,
                head,
            });
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                block.as_ptr().cast::<u8>().add(HEAD_BYTES),
                bytes.len(),
            );
        }
        Some(Kept(block))
    }

    fn block(&self) -> &KeptBlock {
        // SAFETY: the block lives while any count on it does, and this is one.
        unsafe { self.0.as_ref() }
    }

    fn slice(&self) -> &[u8] {
        // SAFETY: `len` bytes follow the head, written once in `new`.
        unsafe {
            std::slice::from_raw_parts(
                self.0.as_ptr().cast::<u8>().add(HEAD_BYTES),
                self.block().len as usize,
            )
        }
    }
}

impl Clone for Kept {
    fn clone(&self) -> Self {
        // Relaxed, as `Arc::clone`: the new count is made from one already held.
        if self.block().count.fetch_add(1, Ordering::Relaxed) > MAX_COUNT {
            std::process::abort();
        }
        Kept(self.0)
    }
}

impl Drop for Kept {
    fn drop(&mut self) {
        if self.block().count.fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        // Every other holder's use of the block happens before it is freed, as in `Arc`.
        atomic::fence(Ordering::Acquire);
        let size = HEAD_BYTES + self.block().len as usize;
        // SAFETY: the last count is gone; the block came from `heap::alloc(size)`.
        unsafe { heap::free(self.0.cast(), size) };
    }
}

impl std::fmt::Debug for Kept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kept")
            .field("head", &self.block().head)
            .field("len", &self.block().len)
            .finish()
    }
}

// SAFETY: `into_ptr` and `from_ptr` pass one count through a raw pointer to the block, which
// lives while the count does; `as_ptr` takes none.
unsafe impl arc_swap::RefCnt for Kept {
    type Base = KeptBlock;

    fn into_ptr(me: Self) -> *mut KeptBlock {
        let ptr = me.0.as_ptr();
        std::mem::forget(me);
        ptr
    }

    fn as_ptr(me: &Self) -> *mut KeptBlock {
        me.0.as_ptr()
    }

    unsafe fn from_ptr(ptr: *const KeptBlock) -> Self {
        // SAFETY: the caller passes a pointer `into_ptr` made, so not null.
        Kept(unsafe { NonNull::new_unchecked(ptr as *mut KeptBlock) })
    }
}

/// What a kept body is, besides its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeptHead {
    /// The digest of the plain bytes, which the body's entity tag is made from.
    digest: u64,
    /// The plain bytes' length, for a body packed against the body dictionary (0 otherwise).
    plain_len: u32,
    form: Form,
}

/// How a kept body's bytes are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// Plain JSON.
    Json,
    /// A whole gzip member, sent as it is to a client that takes gzip.
    Gzip,
    /// A gzip body written in its kind's shared code, sent behind that code's prefix
    /// ([`shared_codes`]).
    Coded(CodesKind),
    /// Packed against the process's body dictionary (`--compress dense`).
    Packed,
    /// The resource does not exist; no bytes.
    NotFound,
}

/// `body` as the catalog keeps it; None for a list, which the catalog keeps as it is (and for
/// a body of 4 GiB or more, which no resource is, and which the catalog would then not hold).
pub fn keep(body: &Rendered) -> Option<Kept> {
    // The plain length is kept for a packed body only, which needs it to unpack.
    let (form, digest, plain_len, bytes): (Form, u64, u32, &[u8]) = match body {
        Rendered::Json(plain) => (Form::Json, digest(plain), 0, plain),
        Rendered::Gzip(g) => {
            let form = g.codes.map_or(Form::Gzip, Form::Coded);
            (form, g.digest, 0, &g.gz)
        }
        Rendered::Packed(p) => (Form::Packed, p.digest, p.len, &p.packed),
        Rendered::NotFound => (Form::NotFound, 0, 0, &[]),
        Rendered::List(_) => return None,
    };
    let head = KeptHead {
        digest,
        plain_len,
        form,
    };
    Kept::new(head, bytes)
}

fn head(kept: &Kept) -> &KeptHead {
    &kept.block().head
}

/// How `kept` keeps its bytes.
pub fn form(kept: &Kept) -> Form {
    head(kept).form
}

/// The digest of `kept`'s plain bytes (0 for a 404).
pub fn digest_of(kept: &Kept) -> u64 {
    head(kept).digest
}

/// The bytes as kept (gzip-compressed, packed or plain, as [`form`] says).
pub fn bytes(kept: &Kept) -> &[u8] {
    kept.slice()
}

/// The plain bytes, inflated or unpacked if need be; None for a 404, or bytes that would not
/// unpack (which bytes packed here cannot be).
pub fn plain(kept: &Kept) -> Option<Bytes> {
    let bytes = kept.slice();
    match form(kept) {
        Form::Json => Some(Bytes::copy_from_slice(bytes)),
        Form::Gzip => compress::gunzip(bytes).map(Bytes::from),
        Form::Coded(kind) => {
            compress::gunzip_behind(shared_codes::prefix(Some(kind))?, bytes).map(Bytes::from)
        }
        Form::Packed => {
            compress::unpack_against(DictionaryKind::Bodies, bytes, head(kept).plain_len as usize)
                .map(Bytes::from)
        }
        Form::NotFound => None,
    }
}

/// The body as a [`Rendered`] of its own (its bytes copied), for a reader that wants one.
pub fn to_rendered(kept: &Kept) -> Rendered {
    let head = head(kept);
    let bytes = kept.slice();
    match head.form {
        Form::Json => Rendered::Json(Bytes::copy_from_slice(bytes)),
        Form::Gzip => Rendered::Gzip(Gzipped {
            gz: bytes.into(),
            digest: head.digest,
            codes: None,
        }),
        Form::Coded(kind) => Rendered::Gzip(Gzipped {
            gz: bytes.into(),
            digest: head.digest,
            codes: Some(kind),
        }),
        Form::Packed => Rendered::Packed(PackedBody {
            packed: bytes.into(),
            len: head.plain_len,
            digest: head.digest,
        }),
        Form::NotFound => Rendered::NotFound,
    }
}

/// What a kept body's block holds besides its bytes: the reference count, the bytes' length
/// and the head.
pub const HEAD_BYTES: usize = std::mem::size_of::<KeptBlock>();

/// The bytes `kept`'s block holds, head included.
pub fn weight(kept: &Kept) -> usize {
    HEAD_BYTES + kept.slice().len()
}

/// Whether `a` and `b` are the very same kept body (one block).
pub fn is_same(a: &Kept, b: &Kept) -> bool {
    a.0 == b.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::SharedList;
    use crate::render::{Compaction, ItemList};

    #[test]
    fn a_kept_body_is_a_thin_pointer_to_a_24_byte_head_and_its_bytes() {
        assert_eq!(std::mem::size_of::<Kept>(), 8);
        assert_eq!(std::mem::size_of::<Option<Kept>>(), 8);
        assert_eq!(HEAD_BYTES, 24);
        let kept = keep(&Rendered::Json(Bytes::from_static(b"{\"id\":1}"))).expect("a body");
        assert_eq!(weight(&kept), 24 + 8);
        assert_eq!(bytes(&kept), b"{\"id\":1}");
    }

    #[test]
    fn a_kept_body_goes_back_to_the_heap_when_its_last_holder_lets_go() {
        let _turn = heap::TEST_TURN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let text = Bytes::from(vec![b'x'; 14_500]);
        let size = HEAD_BYTES + text.len();
        let before = heap::live_blocks(size);
        let kept = keep(&Rendered::Json(text.clone())).expect("a body");
        let slot: arc_swap::ArcSwapAny<Option<Kept>> =
            arc_swap::ArcSwapAny::new(Some(kept.clone()));
        assert_eq!(heap::live_blocks(size), before + 1);
        drop(kept);
        let loaded = slot.load_full().expect("held");
        assert_eq!(bytes(&loaded), &text[..]);
        drop(loaded);
        assert_eq!(
            heap::live_blocks(size),
            before + 1,
            "the slot still holds it"
        );
        slot.store(None);
        assert_eq!(heap::live_blocks(size), before);
    }

    #[test]
    fn every_whole_body_is_kept_as_it_was_and_serves_the_same_bytes() {
        let text = Bytes::from(format!("{{\"name\":\"{}\"}}", "wool coat ".repeat(20)));
        shared_codes::test_codes(CodesKind::Product);
        let coded = Rendered::Json(text.clone()).compacted_over(
            Compaction::All,
            None,
            Some(CodesKind::Product),
            None,
        );
        assert!(matches!(
            form(&keep(&coded).expect("kept")),
            Form::Coded(CodesKind::Product)
        ));
        for body in [
            Rendered::Json(text.clone()),
            Rendered::Json(text.clone()).compacted_as(Compaction::All, None),
            coded,
            Rendered::NotFound,
        ] {
            let kept = keep(&body).expect("a whole body");
            let back = to_rendered(&kept);
            assert_eq!(back, body);
            assert_eq!(
                std::mem::discriminant(&back),
                std::mem::discriminant(&body),
                "kept as it was"
            );
            assert_eq!(plain(&kept), body.plain());
            let expected_digest = match &body {
                Rendered::NotFound => 0,
                _ => digest(&text),
            };
            assert_eq!(digest_of(&kept), expected_digest);
        }
        assert!(matches!(
            form(&keep(&Rendered::Json(text.clone()).compacted(None)).expect("kept")),
            Form::Gzip
        ));
        assert!(keep(&Rendered::List(SharedList::new(ItemList::default()))).is_none());
    }

    #[test]
    fn a_kept_body_is_the_same_only_as_its_own_clones() {
        let one = keep(&Rendered::NotFound).expect("kept");
        let other = keep(&Rendered::NotFound).expect("kept");
        assert!(is_same(&one, &one.clone()));
        assert!(!is_same(&one, &other), "an equal 404 is another value");
    }
}
