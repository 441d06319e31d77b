//! Bodies of the ratings & reviews widget: a product's reviews (every page of one sort order
//! from one list) and its review metadata.

use std::sync::Arc;

use bytes::Bytes;

use super::json::{
    push_bool, push_date, push_int, push_int_str, push_opt_str, push_str, push_uint,
};
use super::{group_by, push_id_url_photos, Compaction, Frame, ItemList, ItemListBuilder};
use crate::pg::read::{CharacteristicRow, MetaCountRow, PhotoUrlRow, ReviewRow};

/// The items of `GET /reviews`, in the order given.
pub fn render_review_list(reviews: &[ReviewRow], photos: &[PhotoUrlRow]) -> ItemList {
    let photos = group_by(photos, |p| p.owner_id);
    let mut list = ItemListBuilder::default();
    for r in reviews {
        let out = list.next_item();
        out.extend_from_slice(b"{\"review_id\":");
        push_int(out, r.id);
        out.extend_from_slice(b",\"rating\":");
        push_int(out, r.rating);
        out.extend_from_slice(b",\"summary\":");
        push_str(out, &r.summary);
        out.extend_from_slice(b",\"recommend\":");
        push_bool(out, r.recommend);
        out.extend_from_slice(b",\"response\":");
        push_opt_str(out, r.response.as_deref());
        out.extend_from_slice(b",\"body\":");
        push_str(out, &r.body);
        out.extend_from_slice(b",\"date\":");
        push_date(out, r.date_ms);
        out.extend_from_slice(b",\"reviewer_name\":");
        push_str(out, &r.reviewer_name);
        out.extend_from_slice(b",\"helpfulness\":");
        push_int(out, r.helpfulness);
        out.extend_from_slice(b",\"photos\":");
        push_id_url_photos(out, photos.get(&r.id));
        out.push(b'}');
        list.end_item();
    }
    list.finish()
}

/// The `newest` order of reviews given in `helpful` order, as indexes into them: by date, then
/// id, both descending (`dates_us[i]` is review `i`'s date in microseconds).
/// Always a permutation of every review (one without a date sorts last).
fn newest_order(reviews: &[ReviewRow], dates_us: &[i64]) -> Vec<u32> {
    let mut order: Vec<u32> = (0..reviews.len() as u32).collect();
    order.sort_by_key(|&i| {
        let date = dates_us.get(i as usize).copied().unwrap_or(i64::MIN);
        std::cmp::Reverse((date, reviews[i as usize].id))
    });
    order
}

/// Both orders of a product's reviews from one render: `reviews` in `helpful` order (with
/// `dates_us`, their dates in microseconds) rendered once, and the `newest` list an index into
/// the same buffer. The buffer is compacted first as far as `compaction` packs lists, for
/// `product_id`'s pages ([`ItemList::compacted`]), so that the two orders share the compact
/// buffer. Returns the `helpful` list, then the `newest`.
pub fn render_review_orders(
    product_id: i64,
    reviews: &[ReviewRow],
    dates_us: &[i64],
    photos: &[PhotoUrlRow],
    compaction: Compaction,
) -> (Arc<ItemList>, Arc<ItemList>) {
    let mut helpful = render_review_list(reviews, photos);
    if compaction.packs_lists() {
        helpful = helpful.compacted(compaction.lead_frame(Some(Frame::Reviews(product_id))));
    }
    let helpful = Arc::new(helpful);
    // `newest_order` is always a permutation, which `reordered` takes.
    let newest = match helpful.reordered(newest_order(reviews, dates_us)) {
        Some(newest) => Arc::new(newest),
        None => Arc::clone(&helpful),
    };
    (helpful, newest)
}

/// What precedes the items of a page of `GET /reviews`: `page` is echoed as the zero-based
/// row offset.
pub(super) fn page_head(product_id: i64, page: u64, count: u64) -> Vec<u8> {
    let offset = super::page_offset(page, count);
    let mut head = Vec::with_capacity(96);
    head.extend_from_slice(b"{\"product\":");
    push_int_str(&mut head, product_id);
    head.extend_from_slice(b",\"page\":");
    push_uint(&mut head, offset);
    head.extend_from_slice(b",\"count\":");
    push_int(&mut head, count);
    head.extend_from_slice(b",\"results\":[");
    head
}

/// `GET /reviews/meta`. Counts are strings; ratings list only non-zero counts, 1 to 5;
/// `recommended` always has both keys.
pub fn render_meta(
    product_id: i64,
    counts: &[MetaCountRow],
    characteristics: &[CharacteristicRow],
) -> Bytes {
    let mut ratings = [0i64; 6];
    let mut recommended = [0i64; 2];
    for c in counts {
        if let Some(slot) = ratings.get_mut(c.rating as usize) {
            *slot += c.count;
        }
        recommended[usize::from(c.recommend)] += c.count;
    }
    let mut out = Vec::with_capacity(256 + characteristics.len() * 64);
    out.extend_from_slice(b"{\"product_id\":");
    push_int_str(&mut out, product_id);
    out.extend_from_slice(b",\"ratings\":{");
    let mut first = true;
    for (rating, &n) in ratings.iter().enumerate().skip(1) {
        if n > 0 {
            if !first {
                out.push(b',');
            }
            first = false;
            push_int_str(&mut out, rating as i64);
            out.push(b':');
            push_int_str(&mut out, n);
        }
    }
    out.extend_from_slice(b"},\"recommended\":{\"false\":");
    push_int_str(&mut out, recommended[0]);
    out.extend_from_slice(b",\"true\":");
    push_int_str(&mut out, recommended[1]);
    out.extend_from_slice(b"},\"characteristics\":{");
    let mut seen: Vec<&str> = Vec::with_capacity(characteristics.len());
    for c in characteristics {
        // A JSON object cannot hold a name twice; the first characteristic of a name wins.
        if seen.contains(&c.name.as_str()) {
            continue;
        }
        if !seen.is_empty() {
            out.push(b',');
        }
        seen.push(&c.name);
        push_str(&mut out, &c.name);
        out.extend_from_slice(b":{\"id\":");
        push_int(&mut out, c.id);
        out.extend_from_slice(b",\"value\":");
        push_opt_str(&mut out, c.mean.as_deref());
        out.push(b'}');
    }
    out.extend_from_slice(b"}}");
    super::frozen(out)
}
