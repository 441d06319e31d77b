//! Which cache entries a change makes stale. The change feed and the instance that takes a
//! write both go through here, so the two can never disagree.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::refresh::Reuse;
use super::{Key, ResponseCache};
use crate::domain::Change;
use crate::domain::ReviewOrder;
use crate::pg::database::Database;
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
        Change::Reviews(id) => {
            let mut keys = review_lists(*id);
            keys.push(Key::ReviewsMeta(*id));
            keys
        }
        Change::ReviewVotes { product, .. } => review_lists(*product),
        Change::Questions(id) => vec![Key::Questions(*id)],
        Change::QuestionAnswers { product, .. } => vec![Key::Questions(*product)],
        Change::Answers(id) => vec![Key::Answers(*id)],
        Change::Cart(session) => vec![Key::Cart(Arc::from(session.as_str()))],
        Change::All => Vec::new(),
    }
}

/// A product's review list in each order.
fn review_lists(product_id: i64) -> Vec<Key> {
    [ReviewOrder::Helpful, ReviewOrder::Newest]
        .map(|order| Key::Reviews { product_id, order })
        .to_vec()
}

impl ResponseCache {
    /// Makes every entry `change` touches current again: each one held is re-rendered in the
    /// background and swapped in (readers get the previous body meanwhile), each one being
    /// filled is cancelled, and every page of the products list of a product change becomes
    /// unreachable (a new generation). Without a refresher running, stale entries are dropped.
    pub fn apply_change(&self, change: &Change) {
        let keys = self.stale_after(change);
        self.stale(keys, &Reuse::after(change));
    }

    /// [`apply_change`](Self::apply_change) for a write this instance made (`changes`, by
    /// transaction `xid`): what it changed is re-rendered before this returns, so the writer's
    /// next read gets the new body. A product's two review orders are rendered together, from
    /// one read. When the change feed brings the same changes back, they are not refreshed
    /// again: these renders read after the write committed, from a replica that has it within
    /// the writer's wait or else the primary. The primary's position taken first fences what
    /// this instance reads from replicas from now on (a key the cache does not hold, filled on
    /// its next read, must not come from a replica that lacks the write).
    ///
    /// The renders get at most `most`: past it what they had not swapped in is dropped, so the
    /// writer's next read fills it afresh, after the write, and the write is answered in time
    /// whatever the database's pace (the fence's query, with replicas, comes before and is not
    /// cut: it has the database's own time limit).
    pub async fn apply_own_write(
        &self,
        changes: &[Change],
        xid: Option<i64>,
        db: &Database,
        most: Duration,
    ) {
        // Should the primary not tell its position (it went away just after the commit), no
        // replica is read until a later query has told it (`Fence::blind`).
        let _ = db.fence_now().await;
        // Each key with what every change of the write that touches it leaves reusable.
        let mut keys: Vec<(Key, Reuse)> = Vec::new();
        for change in changes {
            let reuse = Reuse::after(change);
            for key in self.stale_after(change) {
                match keys.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, both)) => *both = both.and(&reuse),
                    None => keys.push((key, reuse.clone())),
                }
            }
        }
        let groups: Vec<_> =
            super::refresh::with_siblings(keys.iter().map(|(key, _)| key.clone()).collect())
                .iter()
                .map(|group| {
                    let reuse = group
                        .iter()
                        .filter_map(|key| keys.iter().find(|(k, _)| k == key))
                        .map(|(_, reuse)| reuse.clone())
                        .reduce(|a, b| a.and(&b))
                        .unwrap_or(Reuse::Nothing);
                    self.number(group, Some(&reuse))
                })
                .collect();
        // Remembered only once every key is numbered (its refresh under way): a snapshot
        // taken after the feed skips these changes leaves the keys out until they are in.
        if let Some(xid) = xid {
            self.own_writes.remember(xid, changes);
        }
        let numbered: Vec<Key> = groups.iter().flatten().map(|(k, _)| k.clone()).collect();
        let refreshes = groups
            .into_iter()
            .map(|numbered| async move { self.refresh_numbered(numbered, db).await });
        if tokio::time::timeout(most, futures_util::future::join_all(refreshes))
            .await
            .is_err()
        {
            // A refresh cut short drops its entry only while its number is the key's latest
            // (its guard's `finish`); a change that took the key over meanwhile (the feed's,
            // queued in the background) would leave the body from before this write in place
            // until its own refresh is in. Such a key is still being refreshed: dropped here,
            // the writer's next read is a miss, filled after the write, and the later refresh
            // still swaps in. A key already swapped in stays a hit.
            let taken_over: Vec<&Key> = numbered
                .iter()
                .filter(|key| self.is_being_refreshed(key))
                .collect();
            for key in &taken_over {
                self.store.remove(key);
            }
            tracing::warn!(
                ms = most.as_millis() as u64,
                keys = numbered.len(),
                taken_over = taken_over.len(),
                "a write's own refresh ran out of time: what it had not swapped in is dropped, to be filled afresh"
            );
        }
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

/// The changes of this instance's own recent writes, by transaction: the feed skips them when
/// it brings them back, since the writer refreshed them after its commit. Bounded: the oldest
/// go first, past [`OWN_WRITE_MEMORY`] or [`OWN_WRITES_KEPT`] writes (a change the feed
/// brings later than that is refreshed again, which costs only the render).
#[derive(Default)]
pub(crate) struct OwnWrites(std::sync::Mutex<OwnWritesInner>);

#[derive(Default)]
pub(crate) struct OwnWritesInner {
    changes: HashMap<i64, Vec<Change>>,
    /// Transactions in the order they were remembered.
    order: VecDeque<(Instant, i64)>,
}

const OWN_WRITE_MEMORY: Duration = Duration::from_secs(60);
const OWN_WRITES_KEPT: usize = 65_536;

impl OwnWrites {
    fn remember(&self, xid: i64, changes: &[Change]) {
        let Ok(mut writes) = self.0.lock() else {
            return;
        };
        let writes = &mut *writes;
        while let Some(&(at, oldest)) = writes.order.front() {
            if writes.order.len() < OWN_WRITES_KEPT && at.elapsed() < OWN_WRITE_MEMORY {
                break;
            }
            writes.order.pop_front();
            writes.changes.remove(&oldest);
        }
        writes.order.push_back((Instant::now(), xid));
        writes.changes.insert(xid, changes.to_vec());
    }

    /// Whether this instance's write `xid` made `change`, or a change that includes it (and so
    /// refreshed it already).
    fn covers(&self, xid: i64, change: &Change) -> bool {
        self.0
            .lock()
            .map(|writes| {
                writes
                    .changes
                    .get(&xid)
                    .is_some_and(|own| own.iter().any(|c| c.includes(change)))
            })
            .unwrap_or(false)
    }
}

impl ChangeSink for ResponseCache {
    fn apply(&self, change: &Change) {
        self.apply_change(change);
    }

    fn apply_logged(&self, change: &Change, xid: i64) {
        if self.own_writes.covers(xid, change) {
            self.own_changes_skipped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.apply_change(change);
    }

    fn reset(&self) {
        self.clear();
    }
}
