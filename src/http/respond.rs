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

pub fn json(body: Bytes) -> Response<Body> {
    let mut r = Response::new(Full::new(body));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
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
