//! Rendering: database rows to finished JSON bytes, one module per API area. This is the only
//! place response bodies are made — cache fills and tests alike go through it — so a cached
//! body is by construction what a fresh render gives.

pub mod cart;
pub mod json;
pub mod products;
pub mod qa;
pub mod reviews;

use std::collections::HashMap;

use bytes::Bytes;

use crate::pg::read::PhotoUrlRow;

/// A rendered resource: what the cache holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rendered {
    /// A whole body.
    Json(Bytes),
    /// The items of a paged list; each request wraps a slice of them.
    List(std::sync::Arc<ItemList>),
    /// The resource does not exist (404, or an empty list where the contract says so).
    NotFound,
}

impl Rendered {
    /// Whether `self` and `other` are the very same cached value, not merely equal bytes: an
    /// entry dropped and filled again is a new value even when its bytes are the old ones.
    pub fn is_same_value(&self, other: &Rendered) -> bool {
        match (self, other) {
            (Rendered::Json(a), Rendered::Json(b)) => {
                a.as_ptr() == b.as_ptr() && a.len() == b.len()
            }
            (Rendered::List(a), Rendered::List(b)) => std::sync::Arc::ptr_eq(a, b),
            (Rendered::NotFound, Rendered::NotFound) => true,
            _ => false,
        }
    }

    /// Bytes held, for the cache's weight.
    pub fn weight(&self) -> usize {
        match self {
            Rendered::Json(b) => b.len(),
            Rendered::List(l) => l.weight(),
            Rendered::NotFound => 0,
        }
    }
}

/// The rendered items of a list, in order, comma-separated in one buffer, so that any page is
/// one contiguous slice: serving page 7 of a product's reviews copies bytes, it renders
/// nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ItemList {
    json: Bytes,
    /// End offset of each item (the comma after it, if any, not included).
    ends: Vec<u32>,
}

impl ItemList {
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Bytes held (for the cache's weight).
    pub fn weight(&self) -> usize {
        self.json.len() + self.ends.len() * 4
    }

    /// Page `page` (1-based) of `count` items, as JSON array contents: empty past the end.
    pub fn page(&self, page: u64, count: u64) -> &[u8] {
        let skip = u64::try_from(page_offset(page, count)).unwrap_or(u64::MAX);
        self.slice(skip, count)
    }

    /// Items `skip..skip + take` as JSON array contents (without brackets).
    pub fn slice(&self, skip: u64, take: u64) -> &[u8] {
        let len = self.ends.len() as u64;
        let first = skip.min(len);
        let last = skip.saturating_add(take).min(len);
        if first == last {
            return &[];
        }
        let start = if first == 0 {
            0
        } else {
            self.ends[first as usize - 1] as usize + 1
        };
        let end = self.ends[last as usize - 1] as usize;
        &self.json[start..end]
    }
}

/// Builds an [`ItemList`] one item at a time.
#[derive(Debug, Default)]
pub struct ItemListBuilder {
    json: Vec<u8>,
    ends: Vec<u32>,
}

impl ItemListBuilder {
    /// The buffer to write the next item into; call [`Self::end_item`] after writing it.
    pub fn next_item(&mut self) -> &mut Vec<u8> {
        if !self.ends.is_empty() {
            self.json.push(b',');
        }
        &mut self.json
    }

    pub fn end_item(&mut self) {
        // Bodies over 4 GB are not a thing this server makes; saturate rather than wrap.
        self.ends
            .push(u32::try_from(self.json.len()).unwrap_or(u32::MAX));
    }

    pub fn finish(self) -> ItemList {
        ItemList {
            json: Bytes::from(self.json),
            ends: self.ends,
        }
    }
}

/// The zero-based row offset of page `page` (1-based) of `count` rows. It needs 128 bits:
/// clients send counts up to 2^64-1, and `/reviews` echoes the exact offset.
pub fn page_offset(page: u64, count: u64) -> u128 {
    u128::from(page.saturating_sub(1)) * u128::from(count)
}

/// Groups rows by a parent id (a photo's review or answer, an answer's question), keeping
/// their order within each group.
pub(crate) fn group_by<T>(rows: &[T], parent: impl Fn(&T) -> i64) -> HashMap<i64, Vec<&T>> {
    let mut groups: HashMap<i64, Vec<&T>> = HashMap::new();
    for row in rows {
        groups.entry(parent(row)).or_default().push(row);
    }
    groups
}

/// `[{"id":2,"url":"…"}]`: the photos of a review or of an answer in `/answers`.
pub(crate) fn push_id_url_photos(out: &mut Vec<u8>, photos: Option<&Vec<&PhotoUrlRow>>) {
    out.push(b'[');
    for (i, p) in photos.into_iter().flatten().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"id\":");
        json::push_int(out, p.id);
        out.extend_from_slice(b",\"url\":");
        json::push_str(out, &p.url);
        out.push(b'}');
    }
    out.push(b']');
}

/// Wraps a page of items in the bytes before and after it.
pub fn envelope(head: &[u8], items: &[u8], tail: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(head.len() + items.len() + tail.len());
    out.extend_from_slice(head);
    out.extend_from_slice(items);
    out.extend_from_slice(tail);
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_pages() {
        let mut b = ItemListBuilder::default();
        for item in ["{\"a\":1}", "2", "[3]"] {
            b.next_item().extend_from_slice(item.as_bytes());
            b.end_item();
        }
        let list = b.finish();
        assert_eq!(list.slice(0, 5), b"{\"a\":1},2,[3]");
        assert_eq!(list.slice(1, 1), b"2");
        assert_eq!(list.slice(1, u64::MAX), b"2,[3]");
        assert_eq!(list.slice(2, 1), b"[3]");
        assert_eq!(list.slice(3, 1), b"");
        assert_eq!(list.slice(u64::MAX, u64::MAX), b"");
        assert_eq!(ItemList::default().slice(0, 5), b"");
    }
}
