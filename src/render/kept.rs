//! A whole body as the precomputed catalog keeps it: how it is kept, the digest of its plain
//! bytes and the bytes themselves, in one allocation that a catalog slot points at.
//!
//! The catalog holds four million whole bodies at full scale. Kept as a [`Rendered`] in an
//! `Arc`, each was two allocations: a 56-byte box (which mimalloc gives 64 bytes) and its
//! bytes. Here the head is 32 bytes in front of the bytes (the reference count, the slice's
//! length and a 16-byte [`KeptHead`]), in the bytes' own allocation (docs/benchmarks.md,
//! Warm-up).

use bytes::Bytes;
use triomphe::ThinArc;

use super::compress::{self, DictionaryKind};
use super::shared_codes::{self, CodesKind};
use super::{digest, Gzipped, PackedBody, Rendered};

/// A whole body (or a 404) in one reference-counted allocation; a catalog slot holds one.
/// Clones share it. Two kept bodies are the same value only if they are the same allocation
/// ([`is_same`]): a refresh's new 404 is not the one a sweep judged.
pub type Kept = ThinArc<KeptHead, u8>;

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

/// `body` as the catalog keeps it; None for a list, which the catalog keeps as it is.
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
    Some(ThinArc::from_header_and_slice(head, bytes))
}

fn head(kept: &Kept) -> &KeptHead {
    &kept.header.header
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
    &kept.slice
}

/// The plain bytes, inflated or unpacked if need be; None for a 404, or bytes that would not
/// unpack (which bytes packed here cannot be).
pub fn plain(kept: &Kept) -> Option<Bytes> {
    let bytes = &kept.slice;
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
    let bytes = &kept.slice;
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

/// What a kept body's allocation holds besides its bytes: the reference count, the bytes'
/// length and the head.
pub const HEAD_BYTES: usize = 2 * std::mem::size_of::<usize>() + std::mem::size_of::<KeptHead>();

/// The bytes `kept`'s allocation holds, head included.
pub fn weight(kept: &Kept) -> usize {
    HEAD_BYTES + kept.slice.len()
}

/// Whether `a` and `b` are the very same kept body (one allocation).
pub fn is_same(a: &Kept, b: &Kept) -> bool {
    a.ptr() == b.ptr()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::SharedList;
    use crate::render::{Compaction, ItemList};

    #[test]
    fn a_kept_body_is_a_thin_pointer_to_a_32_byte_head_and_its_bytes() {
        assert_eq!(std::mem::size_of::<Kept>(), 8);
        assert_eq!(std::mem::size_of::<Option<Kept>>(), 8);
        assert_eq!(HEAD_BYTES, 32);
        let kept = keep(&Rendered::Json(Bytes::from_static(b"{\"id\":1}"))).expect("a body");
        assert_eq!(weight(&kept), 32 + 8);
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
