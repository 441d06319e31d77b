//! Checks a response against `openapi.yaml`, so the description cannot drift from the server:
//! [`super::send_raw`] runs every reply the tests receive through [`check`].
//!
//! For a request `METHOD /path?query`, the path (its trailing slash dropped) is matched against
//! the description's path templates; the operation for the method (`HEAD` uses `head`, or `get`)
//! must list the reply's status; the reply's `Content-Type` must be one of that response's media
//! types, and its body must validate against the media type's JSON Schema (a text body is
//! validated as a JSON string); every header the response marks `required` must be present and
//! valid. A path the description does not know must answer `NotFound`, a known path with a
//! method it lacks `MethodNotAllowed`, and `OPTIONS` anywhere `Preflight` (all three from
//! `components/responses`). A refusal by the HTTP layer itself (a request that is not valid
//! HTTP/1.1) must match `MalformedRequest`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::Value;

use super::Reply;

/// The parsed description, loaded once per test binary.
fn description() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml");
        let text = std::fs::read_to_string(path).expect("read openapi.yaml");
        serde_norway::from_str(&text).expect("openapi.yaml is YAML")
    })
}

/// Follows a local `$ref` (`#/components/...`) until it reaches an object that is not one.
fn resolve(mut v: &Value) -> &Value {
    while let Some(reference) = v.get("$ref").and_then(Value::as_str) {
        let pointer = reference
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("openapi.yaml: only local references: {reference}"));
        v = description()
            .pointer(pointer)
            .unwrap_or_else(|| panic!("openapi.yaml: dangling reference {reference}"));
    }
    v
}

/// A validator for `schema`, which may refer to `#/components/...` of the description: the
/// schema is compiled inside a document that carries the description's components.
fn validator(schema: &Value) -> Arc<jsonschema::Validator> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<jsonschema::Validator>>>> = OnceLock::new();
    let key = schema.to_string();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(v) = cache.lock().unwrap().get(&key) {
        return Arc::clone(v);
    }
    let mut document = serde_json::json!({ "components": description()["components"] });
    match schema {
        Value::Object(fields) => {
            for (k, v) in fields {
                document[k] = v.clone();
            }
        }
        other => panic!("openapi.yaml: a schema must be an object, not {other}"),
    }
    let compiled = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .build(&document)
        .unwrap_or_else(|e| panic!("openapi.yaml: schema {key} does not compile: {e}"));
    let compiled = Arc::new(compiled);
    cache.lock().unwrap().insert(key, Arc::clone(&compiled));
    compiled
}

/// `segment` with each `%XX` escape replaced by its byte (lossily, for a check of digits).
fn percent_decoded(segment: &str) -> String {
    let mut bytes = Vec::new();
    let mut rest = segment.as_bytes();
    while let Some((&b, after)) = rest.split_first() {
        let escaped = (b == b'%')
            .then(|| after.get(..2))
            .flatten()
            .and_then(|hex| u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok());
        match escaped {
            Some(decoded) => {
                bytes.push(decoded);
                rest = &after[2..];
            }
            None => {
                bytes.push(b);
                rest = after;
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The path item whose template matches `path`, with the template, preferring literal
/// segments over parameters (`/reviews/meta` over `/reviews/{review_id}`).
fn path_item(path: &str) -> Option<(&'static str, &'static Value)> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let paths = description()["paths"]
        .as_object()
        .expect("openapi.yaml has paths");
    paths
        .iter()
        .filter_map(|(template, item)| {
            let parts: Vec<&str> = template.trim_start_matches('/').split('/').collect();
            if parts.len() != segments.len() {
                return None;
            }
            let mut literal = 0;
            for (part, segment) in parts.iter().zip(&segments) {
                if let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                    // An id parameter matches only an `ID` (percent-decoded, as OpenAPI reads
                    // a path parameter); anything else in its place is an unknown path (404),
                    // not a known path with a bad value.
                    let is_id = || {
                        let value = percent_decoded(segment);
                        value.bytes().all(|b| b.is_ascii_digit())
                            && value.parse::<i64>().is_ok_and(|v| v > 0)
                    };
                    if segment.is_empty() || (name.ends_with("_id") && !is_id()) {
                        return None;
                    }
                } else if part == segment {
                    literal += 1;
                } else {
                    return None;
                }
            }
            Some((literal, template.as_str(), resolve(item)))
        })
        .max_by_key(|(literal, _, _)| *literal)
        .map(|(_, template, item)| (template, item))
}

fn component_response(name: &str) -> &'static Value {
    description()
        .pointer(&format!("/components/responses/{name}"))
        .map(resolve)
        .unwrap_or_else(|| panic!("openapi.yaml lacks components/responses/{name}"))
}

/// Checks `reply` to the raw HTTP `request` against the description; panics with what differs.
pub fn check(request: &[u8], reply: &Reply) {
    if reply.status == 0 {
        return; // the server closed the connection: nothing to check
    }
    if ANSWERED_BY_THE_HTTP_LAYER.contains(&reply.status) && reply.header("content-type").is_none()
    {
        // The HTTP layer refused the request before the application saw it.
        let context = format!(
            "{:?} -> {}",
            String::from_utf8_lossy(&request[..request.len().min(60)]),
            reply.status
        );
        return check_response("", component_response("MalformedRequest"), reply, &context);
    }
    let head = match request.split(|&b| b == b'\r').next() {
        Some(line) => String::from_utf8_lossy(line).into_owned(),
        None => return,
    };
    let mut words = head.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        panic!("{head:?} is not HTTP/1.x, yet it got an application's answer: {reply:?}");
    };
    assert!(
        target.starts_with('/') && matches!(version, "HTTP/1.1" | "HTTP/1.0"),
        "{head:?} is not HTTP/1.x, yet it got an application's answer: {reply:?}"
    );
    let path = target.split('?').next().unwrap_or(target);
    let path = match path.strip_suffix('/') {
        Some(stripped) if !stripped.is_empty() => stripped,
        _ => path,
    };
    let context = format!("{method} {target} -> {}", reply.status);
    if reply.header("content-encoding").is_some() {
        // A coded body only to a request that accepts the coding (the description's
        // `Accept-Encoding` parameter).
        let text = String::from_utf8_lossy(request).to_ascii_lowercase();
        // gzip, x-gzip or *, unless with q=0 (a reading of RFC 9110 of its own, apart from
        // the server's).
        let accepts = text.lines().any(|l| {
            l.strip_prefix("accept-encoding:").is_some_and(|v| {
                v.split(',').any(|item| {
                    let mut parts = item.split(';').map(str::trim);
                    let coding = parts.next().unwrap_or("");
                    let refused = parts.any(|p| {
                        p.strip_prefix("q=")
                            .and_then(|q| q.parse::<f64>().ok())
                            .is_some_and(|q| q == 0.0)
                    });
                    matches!(coding, "gzip" | "x-gzip" | "*") && !refused
                })
            })
        });
        assert!(
            accepts,
            "{context}: Content-Encoding {:?} to a request that did not accept it",
            reply.header("content-encoding")
        );
    }

    let response = match path_item(path) {
        _ if method == "OPTIONS" => component_response("Preflight"),
        None => component_response("NotFound"),
        Some((template, item)) => {
            // Methods are case-sensitive: `get` is not `GET`.
            let op_name = method.to_ascii_lowercase();
            let operation = (op_name.to_ascii_uppercase() == method)
                .then(|| item.get(&op_name))
                .flatten()
                .or_else(|| (method == "HEAD").then(|| item.get("get")).flatten());
            match operation {
                None => {
                    check_allow(item, reply, &context);
                    component_response("MethodNotAllowed")
                }
                Some(operation) => {
                    let responses = &resolve(operation)["responses"];
                    let status = reply.status.to_string();
                    let wildcard = format!("{}XX", &status[..1]);
                    let found = responses
                        .get(&status)
                        .or_else(|| responses.get(&wildcard))
                        .or_else(|| responses.get("default"));
                    resolve(found.unwrap_or_else(|| {
                        panic!(
                            "openapi.yaml: {method} {template} does not list status {status}\n\
                             ({context}, body {:?})",
                            reply.body
                        )
                    }))
                }
            }
        }
    };
    check_response(method, response, reply, &context);
}

/// Statuses the HTTP layer (hyper) answers by itself to a request that is not valid HTTP/1.1:
/// no body, no `Content-Type`, no CORS header (`components/responses/MalformedRequest`).
const ANSWERED_BY_THE_HTTP_LAYER: [u16; 3] = [400, 414, 431];

/// A 405's `Allow` lists exactly the methods the path's description has.
fn check_allow(item: &Value, reply: &Reply, context: &str) {
    let mut described: Vec<String> = ["get", "head", "post", "put", "options"]
        .into_iter()
        .filter(|m| item.get(m).is_some())
        .map(str::to_ascii_uppercase)
        .collect();
    let mut allowed: Vec<String> = reply
        .header("allow")
        .unwrap_or_else(|| panic!("{context}: a 405 without Allow"))
        .split(',')
        .map(|m| m.trim().to_owned())
        .collect();
    described.sort();
    allowed.sort();
    assert_eq!(
        allowed, described,
        "{context}: Allow differs from the path's methods"
    );
}

fn check_response(method: &str, response: &Value, reply: &Reply, context: &str) {
    if let Some(headers) = response.get("headers").and_then(Value::as_object) {
        for (name, header) in headers {
            let header = resolve(header);
            let value = reply.header(name);
            if header.get("required").and_then(Value::as_bool) == Some(true) {
                assert!(
                    value.is_some(),
                    "{context}: header {name} is required by openapi.yaml; got {:?}",
                    reply.headers
                );
            }
            if let (Some(value), Some(schema)) = (value, header.get("schema")) {
                let v = Value::String(value.to_owned());
                if let Err(e) = validator(schema).validate(&v) {
                    panic!("{context}: header {name}: {value:?} does not match openapi.yaml: {e}");
                }
            }
        }
    }
    let content = response.get("content").and_then(Value::as_object);
    let Some(content) = content else {
        assert!(
            reply.body.is_empty(),
            "{context}: openapi.yaml gives this response no body, but it has {:?}",
            reply.body
        );
        return;
    };
    let content_type = reply.header("content-type").unwrap_or_else(|| {
        panic!(
            "{context}: no Content-Type; openapi.yaml says one of {:?}",
            content.keys()
        )
    });
    let essence = |t: &str| {
        t.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    };
    let media = content
        .get(content_type)
        .or_else(|| {
            content
                .iter()
                .find(|(k, _)| essence(k) == essence(content_type) && !k.contains(';'))
                .map(|(_, v)| v)
        })
        .unwrap_or_else(|| {
            panic!(
                "{context}: Content-Type {content_type:?} is not one of openapi.yaml's {:?}",
                content.keys()
            )
        });
    if method == "HEAD" {
        assert!(reply.body.is_empty(), "{context}: HEAD with a body");
        return;
    }
    let Some(schema) = media.get("schema") else {
        return;
    };
    let instance = if essence(content_type).ends_with("json") {
        serde_json::from_str(&reply.body)
            .unwrap_or_else(|e| panic!("{context}: body is not JSON ({e}): {:?}", reply.body))
    } else {
        Value::String(reply.body.clone())
    };
    if let Err(e) = validator(schema).validate(&instance) {
        let body: String = reply.body.chars().take(2000).collect();
        panic!(
            "{context}: body does not match openapi.yaml at {}: {e}\nbody: {body}",
            e.instance_path()
        );
    }
}
