//! What a read of the catalog comes to, before either HTTP path sends it: the routes whose
//! answer is one cache entry, and how an entry becomes the bytes a client gets (whole, or one
//! page of a list; sent as kept, inflated or unpacked).
//!
//! Shared by the handler behind hyper ([`super::App`]) and by the fast lane
//! ([`super::fast`]), so that the two cannot answer one request differently.

use bytes::Bytes;
use hyper::Response;

use super::respond::{self, Body, Coding};
use super::route::Route;
use crate::cache::Key;
use crate::domain::PagingDigits;
use crate::render::kept::{self, Form, Kept};
use crate::render::shared_codes::{self, CodesKind};
use crate::render::{self, Rendered, RenderedRef};

/// A catalog read's answer, borrowing from the entry it was made of (`'a`).
#[derive(Debug, Clone)]
pub enum Reply<'a> {
    /// A 200 JSON body as it is sent (`coding`), with the digest its entity tag is made from:
    /// of its plain bytes, mixed with the fingerprint of the shared code a gzip body is
    /// written in ([`shared_codes::SharedCodes::fingerprint`]).
    Json {
        body: Payload<'a>,
        digest: u64,
        coding: Coding,
    },
    /// The resource does not exist.
    NotFound,
    /// A kept body that would not unpack, or a list that is not one (a bug): 500.
    Unreadable,
}

/// A 200 reply's bytes: those an entry keeps, borrowed for as long as the reader holds the
/// entry (the fast lane copies them into its write, so a hit takes no count on them), or
/// bytes made for the request.
#[derive(Debug, Clone)]
pub enum Payload<'a> {
    /// Bytes an entry keeps in a box or in a catalog slot's allocation: borrowed, not shared.
    Kept(&'a [u8]),
    /// Kept bytes sent behind a prefix the process keeps once for a kind of body: a body
    /// written in a shared code ([`crate::render::shared_codes`]).
    Behind(&'static [u8], &'a [u8]),
    /// A plain body, whose bytes can be shared.
    Shared(&'a Bytes),
    Made(Bytes),
}

impl Payload<'_> {
    /// The bytes sent, in two parts: what goes before (empty but for a body behind a prefix),
    /// and the rest.
    pub fn parts(&self) -> (&[u8], &[u8]) {
        match self {
            Payload::Kept(body) => (&[], body),
            Payload::Behind(prefix, body) => (prefix, body),
            Payload::Shared(body) => (&[], body),
            Payload::Made(body) => (&[], body),
        }
    }

    /// The bytes, owned: a kept body's copied (the catalog keeps it with its head in one
    /// allocation, and an entry kept compressed in a box, neither of them `Bytes`), a plain
    /// one's shared.
    pub fn into_bytes(self) -> Bytes {
        match self {
            Payload::Kept(body) => Bytes::copy_from_slice(body),
            Payload::Behind(prefix, body) => Bytes::from([prefix, body].concat()),
            Payload::Shared(body) => body.clone(),
            Payload::Made(body) => body,
        }
    }
}

impl<'a> Reply<'a> {
    /// A plain JSON body made for this request.
    pub fn fresh(body: Bytes) -> Reply<'a> {
        Reply::Json {
            digest: render::digest(&body),
            body: Payload::Made(body),
            coding: Coding::Identity,
        }
    }

    /// The whole body `entry` holds: sent as it is kept to a client that takes gzip (`gzip`),
    /// inflated for one that does not; unpacked for every client when packed against a
    /// dictionary (no client has it).
    pub fn whole(entry: &'a Rendered, gzip: bool) -> Reply<'a> {
        match entry {
            Rendered::Json(body) => Reply::Json {
                body: Payload::Shared(body),
                digest: render::digest(body),
                coding: Coding::Identity,
            },
            Rendered::Gzip(g) => Reply::gzip_member(g.codes, &g.gz, g.digest, gzip),
            Rendered::Packed(p) => Reply::unpacked(p.plain(), p.digest),
            Rendered::List(_) | Rendered::NotFound => Reply::NotFound,
        }
    }

    /// The whole body a catalog slot keeps, as [`Reply::whole`] sends a body.
    pub fn kept(entry: &'a Kept, gzip: bool) -> Reply<'a> {
        let digest = kept::digest_of(entry);
        match kept::form(entry) {
            Form::Json => Reply::Json {
                body: Payload::Kept(kept::bytes(entry)),
                digest,
                coding: Coding::Identity,
            },
            Form::Gzip => Reply::gzip_member(None, kept::bytes(entry), digest, gzip),
            Form::Coded(kind) => Reply::gzip_member(Some(kind), kept::bytes(entry), digest, gzip),
            Form::Packed => Reply::unpacked(kept::plain(entry), digest),
            Form::NotFound => Reply::NotFound,
        }
    }

    /// The gzip member `gz` of a body whose plain bytes' digest is `digest`, or with `codes`
    /// the member that body written in that shared code makes behind the code's prefix. Its
    /// tag's digest mixes in the code's fingerprint: another code would send other bytes. A
    /// code the process lacks (which no body can be written in) is `Unreadable`.
    fn gzip_member(codes: Option<CodesKind>, gz: &'a [u8], digest: u64, gzip: bool) -> Reply<'a> {
        let (prefix, tagged): (&'static [u8], u64) = match codes {
            None => (&[], digest),
            Some(kind) => match shared_codes::codes(kind) {
                Some(code) => (code.prefix(), digest ^ code.fingerprint()),
                None => return Reply::Unreadable,
            },
        };
        if gzip {
            let body = match prefix {
                [] => Payload::Kept(gz),
                prefix => Payload::Behind(prefix, gz),
            };
            return Reply::Json {
                body,
                digest: tagged,
                coding: Coding::Gzip,
            };
        }
        Reply::unpacked(
            render::compress::gunzip_behind(prefix, gz).map(Bytes::from),
            digest,
        )
    }

    /// A kept body unpacked for the client (sent plain), or `Unreadable` when it would not
    /// unpack.
    fn unpacked(body: Option<Bytes>, digest: u64) -> Reply<'a> {
        match body {
            Some(body) => Reply::Json {
                body: Payload::Made(body),
                digest,
                coding: Coding::Identity,
            },
            None => Reply::Unreadable,
        }
    }

    /// What `entry` shows for a request of `shown` (see [`catalog_read`]).
    pub fn of(entry: RenderedRef<'a>, key: &Key, shown: Shown<'_>, gzip: bool) -> Reply<'a> {
        let Shown::Page {
            page,
            count,
            digits,
        } = shown
        else {
            return match entry {
                RenderedRef::Body(body) => Reply::whole(body, gzip),
                RenderedRef::Kept(body) => Reply::kept(body, gzip),
                RenderedRef::List(_) => Reply::NotFound,
            };
        };
        let Some(frame) = key.frame() else {
            return Reply::Unreadable;
        };
        match entry {
            // The lead page as it is kept, or the page cut from the list.
            RenderedRef::List(list) => match list.lead_page(page, count) {
                Some(lead) => Reply::gzip_member(lead.codes, lead.gz, lead.digest, gzip),
                None => Reply::fresh(frame.page_echoing(list, page, count, digits)),
            },
            // Only a question that does not exist has no list: a product's lists are empty,
            // never absent.
            RenderedRef::Body(_) | RenderedRef::Kept(_)
                if matches!(frame, render::Frame::Answers(_)) =>
            {
                Reply::NotFound
            }
            RenderedRef::Body(_) | RenderedRef::Kept(_) => Reply::Unreadable,
        }
    }

    /// The status it is answered with.
    pub fn status(&self) -> u16 {
        match self {
            Reply::Json { .. } => 200,
            Reply::NotFound => 404,
            Reply::Unreadable => 500,
        }
    }

    /// The response the handler sends.
    pub fn into_response(self) -> Response<Body> {
        match self {
            Reply::Json {
                body,
                digest,
                coding,
            } => respond::json_with(body.into_bytes(), digest, coding),
            Reply::NotFound => respond::not_found(),
            Reply::Unreadable => respond::internal_error(),
        }
    }
}

/// How a request shows its cache entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown<'r> {
    Whole,
    /// One page of the entry's list.
    Page {
        page: u64,
        count: u64,
        /// How the request wrote `page` and `count`, where one was past 2^64-1.
        digits: Option<&'r PagingDigits>,
    },
}

/// The one cache entry `route` reads, for the routes whose answer is one entry of the
/// precomputed catalog; `None` for the rest (products pages, carts, writes, operations).
pub fn catalog_read(route: &Route) -> Option<(Key, Shown<'_>)> {
    Some(match *route {
        Route::Product(id) => (Key::Product(id), Shown::Whole),
        Route::Styles(id) => (Key::Styles(id), Shown::Whole),
        Route::Related(id) => (Key::Related(id), Shown::Whole),
        Route::ReviewsMeta { product_id } => (Key::ReviewsMeta(product_id), Shown::Whole),
        Route::Reviews {
            product_id,
            page,
            count,
            order,
            ref digits,
        } => (
            Key::Reviews { product_id, order },
            Shown::Page {
                page,
                count,
                digits: digits.as_deref(),
            },
        ),
        // The questions' head echoes neither.
        Route::Questions {
            product_id,
            page,
            count,
        } => (
            Key::Questions(product_id),
            Shown::Page {
                page,
                count,
                digits: None,
            },
        ),
        Route::Answers {
            question_id,
            page,
            count,
            ref digits,
        } => (
            Key::Answers(question_id),
            Shown::Page {
                page,
                count,
                digits: digits.as_deref(),
            },
        ),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(reply: Reply<'_>) -> Bytes {
        match reply {
            Reply::Json { body, .. } => body.into_bytes(),
            other => panic!("not a body: {other:?}"),
        }
    }

    #[test]
    fn a_plain_body_is_shared_and_a_kept_one_copied_out_of_its_box() {
        let plain = Bytes::from(br#"{"name":"a style","photos":[]}"#.repeat(30));
        let sent = owned(Reply::whole(&Rendered::Json(plain.clone()), true));
        assert_eq!(
            sent.as_ptr(),
            plain.as_ptr(),
            "a plain body's bytes are shared"
        );

        let kept = Rendered::Json(plain).compacted(None);
        let Rendered::Gzip(g) = &kept else {
            panic!("not kept gzip: {kept:?}")
        };
        let sent = owned(Reply::whole(&kept, true));
        assert_eq!(sent, g.gz[..], "sent as it is kept");
        assert_ne!(
            sent.as_ptr(),
            g.gz.as_ptr(),
            "copied: the box is the entry's"
        );
    }

    #[test]
    fn a_body_in_a_shared_code_is_sent_behind_its_prefix_and_inflated_with_it() {
        let kind = shared_codes::CodesKind::Styles;
        let code = shared_codes::test_codes(kind);
        let plain = Bytes::from(render::compress::tests::product(9));
        let body = Rendered::Json(plain.clone()).compacted_over(
            render::Compaction::All,
            None,
            Some(kind),
            None,
        );
        let Rendered::Gzip(g) = &body else {
            panic!("not kept gzip: {body:?}")
        };
        assert_eq!(g.codes, Some(kind));
        let kept = kept::keep(&body).expect("a whole body");
        for reply in [Reply::whole(&body, true), Reply::kept(&kept, true)] {
            let Reply::Json {
                body: payload,
                coding: Coding::Gzip,
                digest,
            } = &reply
            else {
                panic!("not gzip: {reply:?}")
            };
            assert_eq!(payload.parts(), (code.prefix(), &g.gz[..]));
            // Tagged with the code's fingerprint: a whole member is tagged with the digest.
            assert_eq!(*digest, render::digest(&plain) ^ code.fingerprint());
            assert_ne!(code.fingerprint(), 0);
            let member = owned(reply.clone());
            assert_eq!(member.len(), code.prefix().len() + g.gz.len());
            assert_eq!(render::compress::gunzip(&member), Some(plain.to_vec()));
        }
        for reply in [Reply::whole(&body, false), Reply::kept(&kept, false)] {
            assert_eq!(
                sent(reply),
                (
                    200,
                    Some((plain.clone(), render::digest(&plain), Coding::Identity))
                )
            );
        }
    }

    /// A reply's status, and its bytes, digest and coding if it has a body.
    fn sent(reply: Reply<'_>) -> (u16, Option<(Bytes, u64, Coding)>) {
        let status = reply.status();
        match reply {
            Reply::Json {
                body,
                digest,
                coding,
            } => (status, Some((body.into_bytes(), digest, coding))),
            _ => (status, None),
        }
    }

    #[test]
    fn a_body_a_catalog_slot_keeps_is_answered_as_the_body_it_was_kept_from() {
        render::compress::test_dictionary(render::compress::DictionaryKind::Bodies);
        let plain = Bytes::from(render::compress::tests::product(7));
        let kind = shared_codes::CodesKind::Meta;
        shared_codes::test_codes(kind);
        for body in [
            Rendered::Json(plain.clone()),
            Rendered::Json(plain.clone()).compacted(None),
            Rendered::Json(plain.clone()).compacted_as(render::Compaction::Dense, None),
            Rendered::Json(plain.clone()).compacted_over(
                render::Compaction::All,
                None,
                Some(kind),
                None,
            ),
            Rendered::NotFound,
        ] {
            let kept = kept::keep(&body).expect("a whole body");
            for gzip in [true, false] {
                let expected = sent(Reply::whole(&body, gzip));
                assert_eq!(
                    sent(Reply::kept(&kept, gzip)),
                    expected,
                    "{body:?}, gzip {gzip}"
                );
                assert_eq!(
                    sent(Reply::of(
                        RenderedRef::Kept(&kept),
                        &Key::Product(7),
                        Shown::Whole,
                        gzip
                    )),
                    expected
                );
            }
        }
    }
}
