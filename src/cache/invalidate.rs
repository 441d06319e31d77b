//! Which cache entries a change makes stale. The change feed and the instance that takes a
//! write both go through here, so the two can never disagree.

use std::sync::Arc;

use super::{Key, ResponseCache};
use crate::domain::Change;
use crate::domain::ReviewOrder;
use crate::pg::feed::ChangeSink;

/// The entries a change makes stale (besides the products pages of a product change, which
/// go by generation).
pub fn stale_keys(change: &Change) -> Vec<Key> {
    match change {
        // A product's detail, and its existence (styles and related answer 404 without it).
        Change::Product(id) => vec![Key::Product(*id), Key::Styles(*id), Key::Related(*id)],
        Change::Features(id) => vec![Key::Product(*id)],
        Change::Styles(id) => vec![Key::Styles(*id)],
        Change::Related(id) => vec![Key::Related(*id)],
        Change::Reviews(id) => vec![
            Key::Reviews {
                product_id: *id,
                order: ReviewOrder::Helpful,
            },
            Key::Reviews {
                product_id: *id,
                order: ReviewOrder::Newest,
            },
            Key::ReviewsMeta(*id),
        ],
        Change::Questions(id) => vec![Key::Questions(*id)],
        Change::Answers(id) => vec![Key::Answers(*id)],
        Change::Cart(session) => vec![Key::Cart(Arc::from(session.as_str()))],
        Change::All => Vec::new(),
    }
}

impl ResponseCache {
    /// Makes every entry `change` touches current again: each one held is re-rendered in the
    /// background and swapped in (readers get the previous body meanwhile), each one being
    /// filled is cancelled, and every page of the products list of a product change becomes
    /// unreachable (a new generation). Without a refresher running, stale entries are dropped.
    pub fn apply_change(&self, change: &Change) {
        for key in self.stale_after(change) {
            self.stale(key);
        }
    }

    /// [`apply_change`](Self::apply_change) for a write this instance made: what it changed is
    /// re-rendered before this returns, so the writer's next read gets the new body. A
    /// product's two review orders are rendered together, from one read.
    pub async fn apply_own_change(&self, change: &Change, pool: &crate::pg::pool::Pool) {
        let mut keys = self.stale_after(change);
        let reviews: Vec<Key> = keys
            .iter()
            .filter(|key| matches!(key, Key::Reviews { .. }))
            .cloned()
            .collect();
        keys.retain(|key| !matches!(key, Key::Reviews { .. }));
        let together = std::iter::once(reviews).filter(|group| !group.is_empty());
        let groups = together.chain(keys.into_iter().map(|key| vec![key]));
        let refreshes = groups.map(|group| async move { self.refresh_now(&group, pool).await });
        futures_util::future::join_all(refreshes).await;
    }

    /// What every change does before its keys are refreshed: `all` empties the cache (no key
    /// is left to refresh), a product change starts a new generation of products pages.
    fn stale_after(&self, change: &Change) -> Vec<Key> {
        match change {
            Change::All => self.clear(),
            Change::Product(_) => self.next_products_generation(),
            _ => {}
        }
        stale_keys(change)
    }
}

impl ChangeSink for ResponseCache {
    fn apply(&self, change: &Change) {
        self.apply_change(change);
    }

    fn reset(&self) {
        self.clear();
    }
}
