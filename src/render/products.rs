//! Bodies of the product overview widget: the products list, one product with its features,
//! its styles (with photos and skus) and its related product ids.

use bytes::Bytes;

use super::json::{push_bool, push_int, push_int_str, push_opt_str};
use crate::pg::read::{FeatureRow, PhotoRow, ProductRow, SkuRow, StyleRow};

/// `"id":1,"name":"…",…,"default_price":"140.00"` — the fields the list and the detail share.
fn push_product_fields(out: &mut Vec<u8>, p: &ProductRow) {
    out.extend_from_slice(b"\"id\":");
    push_int(out, p.id);
    out.extend_from_slice(b",\"name\":");
    push_opt_str(out, p.name.as_deref());
    out.extend_from_slice(b",\"slogan\":");
    push_opt_str(out, p.slogan.as_deref());
    out.extend_from_slice(b",\"description\":");
    push_opt_str(out, p.description.as_deref());
    out.extend_from_slice(b",\"category\":");
    push_opt_str(out, p.category.as_deref());
    out.extend_from_slice(b",\"default_price\":");
    push_opt_str(out, p.default_price.as_deref());
}

/// `GET /products`: a bare array.
pub fn render_product_list(rows: &[ProductRow]) -> Bytes {
    let mut out = Vec::with_capacity(64 + rows.len() * 256);
    out.push(b'[');
    push_product_items(&mut out, rows);
    out.push(b']');
    super::frozen(out)
}

/// The items of a `GET /products` page, comma-separated, without the brackets: a page too
/// large to hold is sent as runs of these.
pub fn push_product_items(out: &mut Vec<u8>, rows: &[ProductRow]) {
    for (i, p) in rows.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'{');
        push_product_fields(out, p);
        out.push(b'}');
    }
}

/// `GET /products/{id}`.
pub fn render_product(p: &ProductRow, features: &[FeatureRow]) -> Bytes {
    let mut out = Vec::with_capacity(512 + features.len() * 64);
    out.push(b'{');
    push_product_fields(&mut out, p);
    out.extend_from_slice(b",\"features\":[");
    for (i, f) in features.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"feature\":");
        push_opt_str(&mut out, f.feature.as_deref());
        out.extend_from_slice(b",\"value\":");
        push_opt_str(&mut out, f.value.as_deref());
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    super::frozen(out)
}

/// `GET /products/{id}/styles`. `photos` and `skus` are ordered by style id, then their own id.
pub fn render_styles(
    product_id: i64,
    styles: &[StyleRow],
    photos: &[PhotoRow],
    skus: &[SkuRow],
) -> Bytes {
    let mut out =
        Vec::with_capacity(128 + styles.len() * 256 + photos.len() * 256 + skus.len() * 48);
    out.extend_from_slice(b"{\"product_id\":");
    push_int_str(&mut out, product_id);
    out.extend_from_slice(b",\"results\":[");
    let (mut photo, mut sku) = (0, 0);
    for (i, s) in styles.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"style_id\":");
        push_int(&mut out, s.id);
        out.extend_from_slice(b",\"name\":");
        push_opt_str(&mut out, s.name.as_deref());
        out.extend_from_slice(b",\"original_price\":");
        push_opt_str(&mut out, s.original_price.as_deref());
        out.extend_from_slice(b",\"sale_price\":");
        push_opt_str(&mut out, s.sale_price.as_deref());
        out.extend_from_slice(b",\"default?\":");
        push_bool(&mut out, s.default);

        // Clients index photos[0] and the first sku unguarded: an empty style gets one
        // placeholder of each, as the hosted API did.
        out.extend_from_slice(b",\"photos\":[");
        while photos.get(photo).is_some_and(|p| p.style_id < s.id) {
            photo += 1;
        }
        let first_photo = photo;
        while let Some(p) = photos.get(photo).filter(|p| p.style_id == s.id) {
            if photo > first_photo {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"thumbnail_url\":");
            push_opt_str(&mut out, p.thumbnail_url.as_deref());
            out.extend_from_slice(b",\"url\":");
            push_opt_str(&mut out, p.url.as_deref());
            out.push(b'}');
            photo += 1;
        }
        if photo == first_photo {
            out.extend_from_slice(b"{\"thumbnail_url\":null,\"url\":null}");
        }
        out.extend_from_slice(b"],\"skus\":{");
        while skus.get(sku).is_some_and(|k| k.style_id < s.id) {
            sku += 1;
        }
        let first_sku = sku;
        while let Some(k) = skus.get(sku).filter(|k| k.style_id == s.id) {
            if sku > first_sku {
                out.push(b',');
            }
            push_int_str(&mut out, k.id);
            out.extend_from_slice(b":{\"quantity\":");
            push_int(&mut out, k.quantity);
            out.extend_from_slice(b",\"size\":");
            push_opt_str(&mut out, k.size.as_deref());
            out.push(b'}');
            sku += 1;
        }
        if sku == first_sku {
            out.extend_from_slice(b"\"null\":{\"quantity\":null,\"size\":null}");
        }
        out.extend_from_slice(b"}}");
    }
    out.extend_from_slice(b"]}");
    super::frozen(out)
}

/// `GET /products/{id}/related`: a bare array of ids.
pub fn render_related(ids: &[i64]) -> Bytes {
    let mut out = Vec::with_capacity(2 + ids.len() * 8);
    out.push(b'[');
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_int(&mut out, *id);
    }
    out.push(b']');
    super::frozen(out)
}
