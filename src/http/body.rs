//! Request bodies of the writes: read with a size limit, parsed as JSON, and validated exactly
//! as the contract says into the typed values `pg::write` takes. Nothing a client sends gets
//! past here unchecked: ids are positive 63-bit integers, texts have bounded lengths and no
//! NUL, emails look like emails, photo URLs are http(s).

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Body;
use serde_json::{Map, Value};

use super::route::parse_id;
use crate::pg::write::{NewAnswer, NewInteraction, NewQuestion, NewReview};

/// Why a body was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// 413: larger than the limit.
    TooLarge,
    /// 400: the body could not be read at all.
    Unreadable,
    /// 408: the body did not arrive within the time limit.
    TooSlow,
    /// 422: not valid JSON, or not what the contract asks for.
    Invalid,
}

/// Reads the whole body, refusing more than `limit` bytes.
pub async fn read<B>(body: B, content_length: Option<u64>, limit: usize) -> Result<Bytes, BodyError>
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if content_length.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge);
    }
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(BodyError::TooLarge)
        }
        Err(_) => Err(BodyError::Unreadable),
    }
}

fn object(bytes: &[u8]) -> Result<Map<String, Value>, BodyError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(BodyError::Invalid),
    }
}

/// An `ID`: a JSON integer or a string of digits, 1 ..= 2^63-1.
fn id(v: Option<&Value>) -> Result<i64, BodyError> {
    match v {
        Some(Value::Number(n)) => n.as_i64().filter(|&i| i > 0).ok_or(BodyError::Invalid),
        Some(Value::String(s)) => parse_id(s).ok_or(BodyError::Invalid),
        _ => Err(BodyError::Invalid),
    }
}

/// A JSON integer in `min..=max`. The contract allows a numeric string only for ids; any
/// other wrong type is a 422.
fn small_int(v: Option<&Value>, min: i64, max: i64) -> Result<i16, BodyError> {
    match v {
        Some(Value::Number(n)) => n.as_i64(),
        _ => None,
    }
    .filter(|n| (min..=max).contains(n))
    .and_then(|n| i16::try_from(n).ok())
    .ok_or(BodyError::Invalid)
}

/// A string of `min..=max` characters without NUL (PostgreSQL text cannot hold one).
fn text(v: Option<&Value>, min: usize, max: usize) -> Result<String, BodyError> {
    match v {
        Some(Value::String(s)) if !s.contains('\0') && (min..=max).contains(&s.chars().count()) => {
            Ok(s.clone())
        }
        _ => Err(BodyError::Invalid),
    }
}

/// A JSON boolean (the contract's `recommend (bool)`; `"true"` is a wrong type).
fn boolean(v: Option<&Value>) -> Result<bool, BodyError> {
    match v {
        Some(Value::Bool(b)) => Ok(*b),
        _ => Err(BodyError::Invalid),
    }
}

/// 1–60 characters, one `@` with something before it and a dotted domain after it.
fn email(v: Option<&Value>) -> Result<String, BodyError> {
    let s = text(v, 1, 60)?;
    let valid = match s.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !s.chars().any(char::is_whitespace)
        }
        None => false,
    };
    if valid {
        Ok(s)
    } else {
        Err(BodyError::Invalid)
    }
}

/// At most 5 http(s) URLs; absent or null means none.
fn photos(v: Option<&Value>) -> Result<Vec<String>, BodyError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) if items.len() <= 5 => items
            .iter()
            .map(|item| {
                let url = text(Some(item), 1, 2048)?;
                let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
                if scheme_ok && !url.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    Ok(url)
                } else {
                    Err(BodyError::Invalid)
                }
            })
            .collect(),
        _ => Err(BodyError::Invalid),
    }
}

/// `POST /reviews`.
pub fn review(bytes: &[u8]) -> Result<NewReview, BodyError> {
    let o = object(bytes)?;
    // Required, unlike `photos`: the contract marks only `photos` as one that may be absent.
    let characteristics = match o.get("characteristics") {
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| {
                Ok((
                    parse_id(k).ok_or(BodyError::Invalid)?,
                    small_int(Some(v), 1, 5)?,
                ))
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(BodyError::Invalid),
    };
    Ok(NewReview {
        product_id: id(o.get("product_id"))?,
        rating: small_int(o.get("rating"), 1, 5)?,
        summary: text(o.get("summary"), 0, 1000)?,
        body: text(o.get("body"), 1, 1000)?,
        recommend: boolean(o.get("recommend"))?,
        name: text(o.get("name"), 1, 60)?,
        email: email(o.get("email"))?,
        photos: photos(o.get("photos"))?,
        characteristics,
    })
}

/// `POST /qa/questions`; `query_product_id` is the query string's, used when the body has none
/// (a `null` is none: a form that sends every field, empty ones as `null`, still posts).
pub fn question(bytes: &[u8], query_product_id: Option<i64>) -> Result<NewQuestion, BodyError> {
    let o = object(bytes)?;
    let product_id = match (o.get("product_id"), query_product_id) {
        (None | Some(Value::Null), Some(id)) => id,
        (v, _) => id(v)?,
    };
    Ok(NewQuestion {
        product_id,
        body: text(o.get("body"), 1, 1000)?,
        name: text(o.get("name"), 1, 60)?,
        email: email(o.get("email"))?,
    })
}

/// `POST /qa/questions/{id}/answers`.
pub fn answer(bytes: &[u8]) -> Result<NewAnswer, BodyError> {
    let o = object(bytes)?;
    Ok(NewAnswer {
        body: text(o.get("body"), 1, 1000)?,
        name: text(o.get("name"), 1, 60)?,
        email: email(o.get("email"))?,
        photos: photos(o.get("photos"))?,
    })
}

/// `POST /cart`: `sku_id` or `skuId` (a `null` is none, as for a question's `product_id`).
pub fn cart_sku(bytes: &[u8]) -> Result<i64, BodyError> {
    let o = object(bytes)?;
    let given = |name| o.get(name).filter(|v| !v.is_null());
    id(given("sku_id").or_else(|| given("skuId")))
}

/// `POST /interactions`.
pub fn interaction(bytes: &[u8]) -> Result<NewInteraction, BodyError> {
    let o = object(bytes)?;
    // The contract asks only that `element` and `widget` be there: any string will do.
    let time = match o.get("time") {
        None | Some(Value::Null) => String::new(),
        v => text(v, 0, 1000)?,
    };
    Ok(NewInteraction {
        element: text(o.get("element"), 0, 1000)?,
        widget: text(o.get("widget"), 0, 1000)?,
        time,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const REVIEW: &str = r#"{"product_id":"2","rating":5,"summary":"Great","body":"Really great.","recommend":true,
        "name":"jo","email":"jo@example.com","photos":["https://a.example/1.jpg"],"characteristics":{"5":4}}"#;

    #[test]
    fn a_valid_review() {
        let r = review(REVIEW.as_bytes()).unwrap();
        assert_eq!(r.product_id, 2);
        assert_eq!(r.characteristics, vec![(5, 4)]);
        assert_eq!(r.photos, vec!["https://a.example/1.jpg".to_owned()]);
    }

    #[test]
    fn invalid_reviews() {
        let v: Value = serde_json::from_str(REVIEW).unwrap();
        let broken = |field: &str, value: Value| {
            let mut o = v.as_object().unwrap().clone();
            if value.is_null() {
                o.remove(field);
            } else {
                o.insert(field.into(), value);
            }
            review(serde_json::to_string(&o).unwrap().as_bytes())
        };
        use serde_json::json;
        for (field, value) in [
            ("rating", json!(6)),
            ("rating", json!(0)),
            ("rating", json!(4.5)),
            ("rating", json!("x")),
            ("rating", json!("5")),
            ("product_id", json!(0)),
            ("product_id", json!(-1)),
            ("product_id", json!("5.5")),
            ("product_id", json!(1e30)),
            ("product_id", Value::Null),
            ("body", json!("")),
            ("body", json!("x".repeat(1001))),
            ("body", json!(7)),
            ("body", json!("nul\u{0}byte")),
            ("summary", json!("x".repeat(1001))),
            ("name", json!("n".repeat(61))),
            ("email", json!("not-an-email")),
            ("email", json!("a@b")),
            ("recommend", json!("yes")),
            ("recommend", json!("true")),
            ("recommend", Value::Null),
            ("photos", json!(["ftp://x/y"])),
            (
                "photos",
                json!([
                    "https://a",
                    "https://b",
                    "https://c",
                    "https://d",
                    "https://e",
                    "https://f"
                ]),
            ),
            ("photos", json!("https://a")),
            ("characteristics", json!({"5": 6})),
            ("characteristics", json!({"5": "4"})),
            ("characteristics", json!({"x": 3})),
            ("characteristics", json!([1])),
            ("characteristics", Value::Null),
            ("summary", Value::Null),
        ] {
            assert_eq!(
                broken(field, value.clone()),
                Err(BodyError::Invalid),
                "{field} = {value}"
            );
        }
        assert_eq!(review(b"{not json"), Err(BodyError::Invalid));
        assert_eq!(review(b"[1,2]"), Err(BodyError::Invalid));
        assert_eq!(review(b""), Err(BodyError::Invalid));
    }

    #[test]
    fn other_bodies() {
        assert_eq!(cart_sku(br#"{"sku_id":3}"#), Ok(3));
        assert_eq!(cart_sku(br#"{"skuId":"4"}"#), Ok(4));
        assert_eq!(cart_sku(br#"{"sku":4}"#), Err(BodyError::Invalid));
        assert_eq!(cart_sku(br#"{"sku_id":null,"skuId":5}"#), Ok(5));
        assert_eq!(cart_sku(br#"{"sku_id":6,"skuId":null}"#), Ok(6));
        assert_eq!(cart_sku(br#"{"sku_id":null}"#), Err(BodyError::Invalid));
        let q = question(br#"{"body":"Why?","name":"a","email":"a@b.co"}"#, Some(7)).unwrap();
        assert_eq!(q.product_id, 7);
        assert!(question(br#"{"body":"Why?","name":"a","email":"a@b.co"}"#, None).is_err());
        let null_in_body = br#"{"product_id":null,"body":"Why?","name":"a","email":"a@b.co"}"#;
        assert_eq!(question(null_in_body, Some(7)).unwrap().product_id, 7);
        assert!(question(null_in_body, None).is_err());
        let both = br#"{"product_id":8,"body":"Why?","name":"a","email":"a@b.co"}"#;
        assert_eq!(question(both, Some(7)).unwrap().product_id, 8);
        assert!(interaction(br#"{"element":"img","time":"now"}"#).is_err());
        assert_eq!(
            interaction(br#"{"element":"img","widget":"Overview"}"#)
                .unwrap()
                .time,
            ""
        );
        let any_strings =
            interaction(br#"{"element":"","widget":"","time":"2021-05-01T10:00:00.000Z (local)"}"#)
                .unwrap();
        assert_eq!(
            (any_strings.element.as_str(), any_strings.widget.as_str()),
            ("", "")
        );
        assert!(interaction(br#"{"element":1,"widget":"Overview"}"#).is_err());
        let with_time = |n: usize| {
            interaction(
                format!(
                    r#"{{"element":"a","widget":"b","time":"{}"}}"#,
                    "t".repeat(n)
                )
                .as_bytes(),
            )
        };
        assert!(with_time(1000).is_ok());
        assert!(with_time(1001).is_err());
    }
}
