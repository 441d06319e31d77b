//! Building responses: JSON bodies, the contract's plain-text errors, and the headers every
//! response carries.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

use super::route::RouteError;

pub type Body = Full<Bytes>;

/// The 500 text of the hosted API.
pub const INTERNAL_ERROR: &str =
    "An error occurred. If this error persists, contact your instruction team.";

/// A 200 JSON body, with its strong entity tag.
pub fn json(body: Bytes) -> Response<Body> {
    let tag = entity_tag(&body);
    let mut r = Response::new(Full::new(body));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::ETAG, tag);
    r
}

/// A strong entity tag for `body`: a 64-bit hash of its bytes, the same on every instance of
/// one build, so a client's `If-None-Match` works whichever instance the balancer picks. It
/// tells versions of one resource apart, so it need not resist attack, only be well mixed;
/// eight bytes a step keeps it well under a microsecond for a typical body.
pub fn entity_tag(body: &[u8]) -> HeaderValue {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h = (body.len() as u64).wrapping_mul(K);
    let mut words = body.chunks_exact(8);
    for word in &mut words {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(K).rotate_left(31);
    }
    for &b in words.remainder() {
        h = (h ^ u64::from(b)).wrapping_mul(K).rotate_left(31);
    }
    // A final avalanche, so that every input bit reaches every output bit.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    let mut tag = [0u8; 18];
    tag[0] = b'"';
    tag[17] = b'"';
    for (i, digit) in tag[1..17].iter_mut().enumerate() {
        *digit = b"0123456789abcdef"[((h >> (60 - 4 * i)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&tag).unwrap_or(HeaderValue::from_static("\"0\""))
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
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::NOT_MODIFIED;
    r.headers_mut().insert(header::ETAG, tag.clone());
    Some(r)
}

pub fn text(status: StatusCode, message: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(message.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

pub fn not_found() -> Response<Body> {
    text(StatusCode::NOT_FOUND, "Not Found")
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
    let mut r = Response::new(Full::new(Bytes::new()));
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
    fn entity_tags_are_stable_and_tell_bodies_apart() {
        let body = br#"{"id":1,"name":"Camo Onesie"}"#;
        let tag = entity_tag(body);
        assert_eq!(tag, entity_tag(body));
        assert_eq!(tag.len(), 18);
        let mut flipped = body.to_vec();
        flipped[5] ^= 1;
        assert_ne!(entity_tag(&flipped), tag);
        assert_ne!(entity_tag(b""), entity_tag(b"\0"), "length counts");
    }
}
