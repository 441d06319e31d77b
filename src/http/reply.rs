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
use crate::render::{self, Rendered};

/// A catalog read's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A 200 JSON body as it is sent (`coding`), with the digest of its plain bytes, which
    /// its entity tag is made from.
    Json {
        body: Bytes,
        digest: u64,
        coding: Coding,
    },
    /// The resource does not exist.
    NotFound,
    /// A kept body that would not unpack, or a list that is not one (a bug): 500.
    Unreadable,
}

impl Reply {
    /// A plain JSON body made for this request.
    pub fn fresh(body: Bytes) -> Reply {
        let digest = render::digest(&body);
        Reply::Json {
            body,
            digest,
            coding: Coding::Identity,
        }
    }

    /// The whole body `entry` holds: sent as it is kept to a client that takes gzip (`gzip`),
    /// inflated for one that does not; unpacked for every client when packed against a
    /// dictionary (no client has it).
    pub fn whole(entry: Rendered, gzip: bool) -> Reply {
        match entry {
            Rendered::Json(body) => Reply::fresh(body),
            Rendered::Gzip(g) if gzip => Reply::Json {
                body: g.gz,
                digest: g.digest,
                coding: Coding::Gzip,
            },
            Rendered::Gzip(g) => Reply::unpacked(g.plain(), g.digest),
            Rendered::Packed(p) => Reply::unpacked(p.plain(), p.digest),
            Rendered::List(_) | Rendered::NotFound => Reply::NotFound,
        }
    }

    /// A kept body unpacked for the client (sent plain), or `Unreadable` when it would not
    /// unpack.
    fn unpacked(body: Option<Bytes>, digest: u64) -> Reply {
        match body {
            Some(body) => Reply::Json {
                body,
                digest,
                coding: Coding::Identity,
            },
            None => Reply::Unreadable,
        }
    }

    /// What `entry` shows for a request of `shown` (see [`catalog_read`]).
    pub fn of(entry: Rendered, key: &Key, shown: Shown, gzip: bool) -> Reply {
        let Shown::Page { page, count } = shown else {
            return Reply::whole(entry, gzip);
        };
        let Some(frame) = key.frame() else {
            return Reply::Unreadable;
        };
        match entry {
            // The lead page as it is kept, or the page cut from the list.
            Rendered::List(list) => match list.lead_page(page, count) {
                Some(lead) => Reply::whole(Rendered::Gzip(lead.clone()), gzip),
                None => Reply::fresh(frame.page(&list, page, count)),
            },
            // Only a question that does not exist has no list: a product's lists are empty,
            // never absent.
            _ if matches!(frame, render::Frame::Answers(_)) => Reply::NotFound,
            _ => Reply::Unreadable,
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
            } => respond::json_with(body, digest, coding),
            Reply::NotFound => respond::not_found(),
            Reply::Unreadable => respond::internal_error(),
        }
    }
}

/// How a request shows its cache entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    Whole,
    /// One page of the entry's list.
    Page {
        page: u64,
        count: u64,
    },
}

/// The one cache entry `route` reads, for the routes whose answer is one entry of the
/// precomputed catalog; `None` for the rest (products pages, carts, writes, operations).
pub fn catalog_read(route: &Route) -> Option<(Key, Shown)> {
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
        } => (
            Key::Reviews { product_id, order },
            Shown::Page { page, count },
        ),
        Route::Questions {
            product_id,
            page,
            count,
        } => (Key::Questions(product_id), Shown::Page { page, count }),
        Route::Answers {
            question_id,
            page,
            count,
        } => (Key::Answers(question_id), Shown::Page { page, count }),
        _ => return None,
    })
}
