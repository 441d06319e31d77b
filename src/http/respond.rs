//! Building responses: JSON bodies, the contract's plain-text errors, and the headers every
//! response carries.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Frame, SizeHint};
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use tokio::sync::mpsc;

use super::conn::Busy;
use super::route::RouteError;
use crate::pg::DbError;
use crate::render;

/// A response body: whole, or runs of bytes made while the client reads them (a `GET
/// /products` page too large to hold, [`streamed_json`]).
#[derive(Debug)]
pub enum Body {
    Whole(Full<Bytes>),
    /// Each run as it is made; an error cuts the response short (the client sees the
    /// connection end before the last chunk, so never a well-formed body).
    Runs {
        runs: mpsc::Receiver<Result<Bytes, DbError>>,
        /// Keeps the connection busy while the runs are sent: the connection cap closes an
        /// idle connection to make room, never one still sending.
        busy: Option<Busy>,
    },
}

impl Body {
    pub fn new(bytes: Bytes) -> Body {
        Body::Whole(Full::new(bytes))
    }

    /// The body, keeping `busy` (its request's mark on the connection) until it is sent.
    pub fn keeping(self, busy: Busy) -> Body {
        match self {
            Body::Runs { runs, .. } => Body::Runs {
                runs,
                busy: Some(busy),
            },
            whole => whole,
        }
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = DbError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, DbError>>> {
        match self.get_mut() {
            Body::Whole(whole) => Pin::new(whole)
                .poll_frame(cx)
                .map_err(|never| match never {}),
            Body::Runs { runs, .. } => runs
                .poll_recv(cx)
                .map(|run| run.map(|bytes| bytes.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Whole(whole) => whole.is_end_stream(),
            Body::Runs { .. } => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Whole(whole) => whole.size_hint(),
            Body::Runs { .. } => SizeHint::default(),
        }
    }
}

/// A 200 JSON body sent as `runs` yields it: no length, and no entity tag (it would need the
/// whole body first).
pub fn streamed_json(runs: mpsc::Receiver<Result<Bytes, DbError>>) -> Response<Body> {
    let mut r = Response::new(Body::Runs { runs, busy: None });
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    r
}

/// The 500 text of the hosted API.
/// The body of a 404.
pub const NOT_FOUND: &str = "Not Found";

pub const INTERNAL_ERROR: &str =
    "An error occurred. If this error persists, contact your instruction team.";

/// A 200 JSON body, with its strong entity tag.
pub fn json(body: Bytes) -> Response<Body> {
    let digest = render::digest(&body);
    json_with(body, digest, Coding::Identity)
}

/// How a body is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Identity,
    Gzip,
}

/// A 200 JSON body as it is sent (`coding`), with the digest of its plain bytes.
///
/// Every JSON response says `Vary: Accept-Encoding`: whether a body is sent compressed
/// depends on that header, and a cache between client and server must not hand a compressed
/// body to a client that did not ask for one.
pub fn json_with(body: Bytes, digest: u64, coding: Coding) -> Response<Body> {
    let mut r = Response::new(Body::new(body));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::ETAG, entity_tag(digest, coding));
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    if coding == Coding::Gzip {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    r
}

/// A strong entity tag from the digest of a body's plain bytes ([`render::digest`]), the
/// same on every instance of one build, so a client's `If-None-Match` works whichever
/// instance the balancer picks. The gzip-coded body is another representation and gets
/// another tag (RFC 9110, 8.8.3).
pub fn entity_tag(digest: u64, coding: Coding) -> HeaderValue {
    HeaderValue::from_bytes(EntityTag::new(digest, coding).as_bytes())
        .unwrap_or(HeaderValue::from_static("\"0\""))
}

/// The bytes of an [`entity_tag`], on the stack: `"`, 16 hex digits, an optional `-gzip`, `"`.
#[derive(Debug, Clone, Copy)]
pub struct EntityTag {
    bytes: [u8; 23],
    len: usize,
}

impl EntityTag {
    pub fn new(digest: u64, coding: Coding) -> EntityTag {
        let mut bytes = *b"\"0123456789abcdef-gzip\"";
        for (i, digit) in bytes[1..17].iter_mut().enumerate() {
            *digit = b"0123456789abcdef"[((digest >> (60 - 4 * i)) & 0xf) as usize];
        }
        let len = if coding == Coding::Gzip {
            bytes.len()
        } else {
            bytes[17] = b'"';
            18
        };
        EntityTag { bytes, len }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Whether a request's `Accept-Encoding` values accept gzip: `gzip` (or `x-gzip`), or `*`
/// when gzip is not named, with a non-zero `q` (RFC 9110, 12.5.3). A value that is not
/// visible ASCII is skipped.
pub fn accepts_gzip<'a>(values: impl Iterator<Item = &'a [u8]>) -> bool {
    let mut named = None;
    let mut any = None;
    for value in values {
        let Some(value) = visible_str(value) else {
            continue;
        };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q=").or(p.trim().strip_prefix("Q=")))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            let wanted = q > 0.0;
            if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
                named = Some(named.unwrap_or(false) || wanted);
            } else if coding == "*" {
                any = Some(wanted);
            }
        }
    }
    named.or(any).unwrap_or(false)
}

/// A header value as text, if it is visible ASCII (tabs allowed), as
/// [`HeaderValue::to_str`] reads one.
pub fn visible_str(value: &[u8]) -> Option<&str> {
    let visible = value
        .iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b));
    visible.then(|| std::str::from_utf8(value).ok()).flatten()
}

/// A 304 in place of `response` when it is a 200 whose entity tag `if_none_match` lists
/// (`*` lists every tag; a weak `W/` prefix is ignored, as RFC 9110 asks for this header).
pub fn not_modified(
    response: &Response<Body>,
    if_none_match: &HeaderValue,
) -> Option<Response<Body>> {
    if response.status() != StatusCode::OK {
        return None;
    }
    let tag = response.headers().get(header::ETAG)?;
    let listed = if_none_match.to_str().ok()?;
    let matches = listed.split(',').map(str::trim).any(|candidate| {
        candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate) == tag
    });
    if !matches {
        return None;
    }
    let mut r = Response::new(Body::new(Bytes::new()));
    *r.status_mut() = StatusCode::NOT_MODIFIED;
    let h = r.headers_mut();
    h.insert(header::ETAG, tag.clone());
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    Some(r)
}

pub fn text(status: StatusCode, message: &'static str) -> Response<Body> {
    let mut r = Response::new(Body::new(Bytes::from_static(message.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

pub fn not_found() -> Response<Body> {
    text(StatusCode::NOT_FOUND, NOT_FOUND)
}

pub fn unavailable() -> Response<Body> {
    let mut r = text(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable");
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

pub fn internal_error() -> Response<Body> {
    text(StatusCode::INTERNAL_SERVER_ERROR, INTERNAL_ERROR)
}

pub fn no_content() -> Response<Body> {
    let mut r = Response::new(Body::new(Bytes::new()));
    *r.status_mut() = StatusCode::NO_CONTENT;
    r
}

pub fn route_error(e: &RouteError) -> Response<Body> {
    match e {
        RouteError::NotFound => not_found(),
        RouteError::MethodNotAllowed(allow) => {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
            r
        }
        RouteError::InvalidProductId => text(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Error: invalid product_id provided",
        ),
        RouteError::InvalidPaging("page") => text(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Error: invalid page provided",
        ),
        RouteError::InvalidPaging(_) => text(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Error: invalid count provided",
        ),
    }
}

/// The answer to a CORS preflight.
pub fn preflight() -> Response<Body> {
    let mut r = no_content();
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, PUT, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Authorization, Content-Type"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_tags_are_stable_and_tell_bodies_and_codings_apart() {
        let body = br#"{"id":1,"name":"Camo Onesie"}"#;
        let tag = entity_tag(render::digest(body), Coding::Identity);
        assert_eq!(tag, entity_tag(render::digest(body), Coding::Identity));
        assert_eq!(tag.len(), 18);
        let mut flipped = body.to_vec();
        flipped[5] ^= 1;
        assert_ne!(entity_tag(render::digest(&flipped), Coding::Identity), tag);
        assert_ne!(render::digest(b""), render::digest(b"\0"), "length counts");
        let gzip = entity_tag(render::digest(body), Coding::Gzip);
        assert_ne!(gzip, tag);
        assert_eq!(gzip.as_bytes()[..17], tag.as_bytes()[..17]);
    }

    #[test]
    fn accept_encoding_is_read_as_rfc_9110_says() {
        let accepts = |values: &[&'static str]| accepts_gzip(values.iter().map(|v| v.as_bytes()));
        assert!(accepts(&["gzip"]));
        assert!(accepts(&["gzip, deflate, br"]));
        assert!(accepts(&["br;q=1.0, GZIP;q=0.5"]));
        assert!(accepts(&["x-gzip"]));
        assert!(accepts(&["*"]));
        assert!(accepts(&["deflate", "gzip"]), "one header per line");
        assert!(!accepts(&[]));
        assert!(!accepts(&["identity"]));
        assert!(!accepts(&["br, deflate"]));
        assert!(!accepts(&["gzip;q=0"]));
        assert!(!accepts(&["gzip; q=0.000"]));
        assert!(!accepts(&["*, gzip;q=0"]), "named beats the wildcard");
        assert!(!accepts(&["*;q=0"]));
        assert!(!accepts(&["gzipper"]));
        assert!(accepts_gzip([&b"\xffgzip"[..], b"gzip"].into_iter()));
        assert!(
            !accepts_gzip([&b"gzip\x7f"[..]].into_iter()),
            "not visible ASCII"
        );
    }
}
