//! The body of `GET /cart`: `[{"sku_id":1,"count":"2"}]`, the count as a string.

use bytes::Bytes;

use super::json::{push_int, push_int_str};
use crate::pg::read::CartRow;

pub fn render_cart(rows: &[CartRow]) -> Bytes {
    let mut out = Vec::with_capacity(2 + rows.len() * 32);
    out.push(b'[');
    for (i, r) in rows.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"sku_id\":");
        push_int(&mut out, r.sku_id);
        out.extend_from_slice(b",\"count\":");
        push_int_str(&mut out, r.count);
        out.push(b'}');
    }
    out.push(b']');
    super::frozen(out)
}
