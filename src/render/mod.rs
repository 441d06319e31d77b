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

/// The rendered items of a list, comma-separated in one buffer, so that a page is copied, not
/// rendered: serving page 7 of a product's reviews copies bytes.
///
/// Lists of the same items in another order share the buffer ([`ItemList::reordered`]): a
/// product's reviews are held once, with an index per sort order.
#[derive(Debug, Clone, Default)]
pub struct ItemList {
    json: Bytes,
    /// End offset of each item in `json` (the comma after it, if any, not included).
    ends: Vec<u32>,
    /// The list's order as indexes into `ends`; None: the buffer's own order.
    order: Option<Box<[u32]>>,
}

impl ItemList {
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Bytes held (for the cache's weight). A reordered list counts only its index: the
    /// buffer is counted once, by the list it was made from.
    pub fn weight(&self) -> usize {
        match &self.order {
            None => self.json.len() + self.ends.len() * 4,
            Some(order) => self.ends.len() * 4 + order.len() * 4,
        }
    }

    /// The same items in another order: `order[i]` is the index in `self` of item `i`. The
    /// buffer is shared, not copied. None if `order` is not a permutation of `self`'s items.
    pub fn reordered(&self, order: Vec<u32>) -> Option<ItemList> {
        let mut seen = vec![false; self.len()];
        for &i in &order {
            let slot = seen.get_mut(self.position(i as usize)?)?;
            if std::mem::replace(slot, true) {
                return None;
            }
        }
        if order.len() != self.len() {
            return None;
        }
        let order = order
            .into_iter()
            .map(|i| self.position(i as usize).map(|p| p as u32))
            .collect::<Option<Box<[u32]>>>()?;
        Some(ItemList {
            json: self.json.clone(),
            ends: self.ends.clone(),
            order: Some(order),
        })
    }

    /// Where item `i` of the list lies in the buffer's own order.
    fn position(&self, i: usize) -> Option<usize> {
        match &self.order {
            None => (i < self.ends.len()).then_some(i),
            Some(order) => order.get(i).map(|&p| p as usize),
        }
    }

    /// Item `i` of the buffer's own order.
    fn stored_item(&self, i: usize) -> &[u8] {
        let start = if i == 0 {
            0
        } else {
            self.ends[i - 1] as usize + 1
        };
        &self.json[start..self.ends[i] as usize]
    }

    /// Item `i` of the list, if there is one.
    pub fn item(&self, i: usize) -> Option<&[u8]> {
        self.position(i).map(|p| self.stored_item(p))
    }

    /// Appends page `page` (1-based) of `count` items to `out`, as JSON array contents:
    /// nothing past the end.
    pub fn write_page(&self, page: u64, count: u64, out: &mut Vec<u8>) {
        let skip = u64::try_from(page_offset(page, count)).unwrap_or(u64::MAX);
        self.write_slice(skip, count, out);
    }

    /// Appends items `skip..skip + take` to `out`, as JSON array contents (no brackets).
    pub fn write_slice(&self, skip: u64, take: u64, out: &mut Vec<u8>) {
        let len = self.ends.len() as u64;
        let first = skip.min(len) as usize;
        let last = skip.saturating_add(take).min(len) as usize;
        if first == last {
            return;
        }
        match &self.order {
            None => {
                let start = if first == 0 {
                    0
                } else {
                    self.ends[first - 1] as usize + 1
                };
                out.extend_from_slice(&self.json[start..self.ends[last - 1] as usize]);
            }
            Some(order) => {
                for (n, &p) in order[first..last].iter().enumerate() {
                    if n > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(self.stored_item(p as usize));
                }
            }
        }
    }

    /// The length [`Self::write_slice`] appends, to size a buffer once.
    fn slice_len(&self, skip: u64, take: u64) -> usize {
        let len = self.ends.len() as u64;
        let first = skip.min(len) as usize;
        let last = skip.saturating_add(take).min(len) as usize;
        (first..last)
            .filter_map(|i| self.item(i))
            .map(|item| item.len() + 1)
            .sum()
    }
}

/// Two lists are equal when they hold the same items in the same order, however stored: a
/// reordered list equals the same items rendered in that order.
impl PartialEq for ItemList {
    fn eq(&self, other: &ItemList) -> bool {
        self.len() == other.len() && (0..self.len()).all(|i| self.item(i) == other.item(i))
    }
}

impl Eq for ItemList {}

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
            json: frozen(self.json),
            ends: shrunk(self.ends),
            order: None,
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

/// Page `page` of `count` items of `list`, wrapped in the bytes before and after it.
pub fn envelope(head: &[u8], list: &ItemList, page: u64, count: u64, tail: &[u8]) -> Bytes {
    let skip = u64::try_from(page_offset(page, count)).unwrap_or(u64::MAX);
    let mut out = Vec::with_capacity(head.len() + list.slice_len(skip, count) + tail.len());
    out.extend_from_slice(head);
    list.write_slice(skip, count, &mut out);
    out.extend_from_slice(tail);
    Bytes::from(out)
}

/// A rendered body frozen for the cache, holding no spare capacity: a body grown by pushes
/// holds up to twice its length, and the cache keeps millions of them.
pub fn frozen(body: Vec<u8>) -> Bytes {
    Bytes::from(body.into_boxed_slice())
}

fn shrunk<T>(mut v: Vec<T>) -> Vec<T> {
    v.shrink_to_fit();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(list: &ItemList, skip: u64, take: u64) -> Vec<u8> {
        let mut out = Vec::new();
        list.write_slice(skip, take, &mut out);
        assert_eq!(
            out.len() + usize::from(!out.is_empty()),
            list.slice_len(skip, take)
        );
        out
    }

    fn list_of(items: &[&str]) -> ItemList {
        let mut b = ItemListBuilder::default();
        for item in items {
            b.next_item().extend_from_slice(item.as_bytes());
            b.end_item();
        }
        b.finish()
    }

    #[test]
    fn slices_pages() {
        let list = list_of(&["{\"a\":1}", "2", "[3]"]);
        assert_eq!(slice(&list, 0, 5), b"{\"a\":1},2,[3]");
        assert_eq!(slice(&list, 1, 1), b"2");
        assert_eq!(slice(&list, 1, u64::MAX), b"2,[3]");
        assert_eq!(slice(&list, 2, 1), b"[3]");
        assert_eq!(slice(&list, 3, 1), b"");
        assert_eq!(slice(&list, u64::MAX, u64::MAX), b"");
        assert_eq!(slice(&ItemList::default(), 0, 5), b"");
    }

    #[test]
    fn a_reordered_list_shares_the_buffer_and_equals_a_list_rendered_in_its_order() {
        let list = list_of(&["\"a review\"", "\"another review\"", "\"a third\""]);
        let reordered = list.reordered(vec![2, 0, 1]).expect("a permutation");
        assert_eq!(
            reordered.json.as_ptr(),
            list.json.as_ptr(),
            "shared, not copied"
        );
        assert_eq!(
            slice(&reordered, 0, 5),
            b"\"a third\",\"a review\",\"another review\""
        );
        assert_eq!(slice(&reordered, 1, 1), b"\"a review\"");
        assert_eq!(slice(&reordered, 2, 9), b"\"another review\"");
        assert_eq!(
            reordered,
            list_of(&["\"a third\"", "\"a review\"", "\"another review\""])
        );
        assert_ne!(reordered, list);
        assert!(reordered.weight() < list.weight());
        // Reordering a reordered list composes the orders.
        let back = reordered.reordered(vec![1, 2, 0]).expect("a permutation");
        assert_eq!(back, list);
        for bad in [vec![0, 0, 1], vec![0, 1], vec![0, 1, 3], vec![0, 1, 2, 0]] {
            assert!(list.reordered(bad.clone()).is_none(), "{bad:?}");
        }
    }
}
