//! Refresh, don't drop: an entry a change makes stale is re-rendered and swapped in, so a
//! write never turns a hot read into a miss; readers get the previous body until the new one
//! is in. After helpful votes alone, a product's review lists are re-rendered from the items
//! held and what the lists sort by, not from every review read again.
//!
//! Changes from the feed are refreshed in the background by [`run`]; the instance that takes
//! a write refreshes what it changed before answering ([`ResponseCache::apply_own_write`]), so
//! its client's next read is the new body. Refreshes of one key can overlap (two changes in a
//! row), and a slow one must not overwrite a newer one: every change to a held key takes a new
//! number, and a refresh swaps its body in only if no later change has taken one since — under
//! the lock changes take their numbers under. A key waits in the background queue at most once
//! however many changes it gets (the refresh renders for the latest), so the queue is bounded
//! by the keys the cache holds. An entry not held is simply dropped (which also cancels a fill
//! in flight); a refresh that fails, or is abandoned half-way, drops its entry, so the next
//! read fills it; emptying the cache abandons every refresh under way.

use std::sync::atomic::Ordering;

use tokio::sync::mpsc;

use super::fill::{fill_review_orders, revote_review_orders};
use super::{fill, Key, ResponseCache};
use crate::domain::ReviewOrder;
use crate::pg::database::{Database, ReadFrom};
use crate::render::Compaction;
use crate::render::Rendered;

/// A key with a refresh under way.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pending {
    /// The number of the latest change to the key.
    latest: u64,
    /// Whether the key waits in the background queue.
    queued: bool,
    /// Whether every change since the body held was a helpful vote: then a product's review
    /// lists are re-rendered from their held items and the reviews' sort keys, not read again
    /// whole (`render::reviews::revoted_review_orders`).
    only_votes: bool,
}

impl ResponseCache {
    /// Starts taking refreshes: returns the queue [`run`] serves. Until this is called (and
    /// after [`run`] stops), stale entries are dropped instead.
    pub fn refresh_queue(&self) -> mpsc::UnboundedReceiver<Key> {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut queue) = self.refresh_tx.lock() {
            *queue = Some(tx);
        }
        rx
    }

    /// Marks `keys` stale: refreshes each in the background if the cache holds it (or a
    /// refresh of it is under way), drops it otherwise. Every key is numbered before any is
    /// queued, so the refresher finds a product's two review orders both waiting and renders
    /// them from one read. `only_votes`: the change was a helpful vote, and nothing else.
    pub(crate) fn stale(&self, keys: Vec<Key>, only_votes: bool) {
        let queue = self.refresh_tx.lock().ok().and_then(|q| q.clone());
        let numbered: Vec<(Key, u64)> = keys
            .into_iter()
            .filter_map(|key| {
                let (number, newly_queued) = self.take_number(&key, queue.is_some(), only_votes)?;
                // Already waiting: its refresh will render for this change too. Without a
                // refresher nothing waits: the entry is dropped below.
                (newly_queued || queue.is_none()).then_some((key, number))
            })
            .collect();
        for (key, number) in numbered {
            let refused = match &queue {
                Some(queue) => queue.send(key).err().map(|e| e.0),
                None => Some(key),
            };
            if let Some(key) = refused {
                // No refresher: drop the entry instead.
                self.finish(key, number, None);
            }
        }
    }

    /// Numbers the changes to `keys` the cache holds (their refreshes are under way from
    /// here), dropping those it does not: the first half of the refresh after an own write
    /// ([`ResponseCache::apply_own_write`]). `only_votes` as for [`Self::stale`].
    pub(crate) fn number(&self, keys: &[Key], only_votes: bool) -> Vec<(Key, u64)> {
        keys.iter()
            .filter_map(|key| Some((key.clone(), self.take_number(key, false, only_votes)?.0)))
            .collect()
    }

    /// Renders and swaps in keys [`Self::number`] numbered (siblings from one read; one whose
    /// render fails is dropped), from a replica that has the write if one has it soon enough,
    /// else the primary: the second half of the refresh after an own write.
    pub(crate) async fn refresh_numbered(&self, numbered: Vec<(Key, u64)>, db: &Database) {
        if numbered.is_empty() {
            return; // dropped: the next read fills them fresh
        }
        let mut superseded = self
            .render_and_finish(numbered, db, ReadFrom::AfterOwnWrite)
            .await;
        // A later change took a key over; its refresh (in the background, fenced) also reads
        // after this write, but may wait for a replica longer than a writer does. What is
        // still being refreshed is rendered again here, from the primary, under a number of
        // its own (a refresh that finished meanwhile read after this write).
        let deadline = std::time::Instant::now() + db.timeout();
        while std::time::Instant::now() < deadline {
            superseded.retain(|key| self.is_being_refreshed(key));
            if superseded.is_empty() {
                return;
            }
            // Still under way, so each key's flag already says whether every change since
            // the body held was a vote; this number adds no change of its own. (Should that
            // refresh finish first, the body it swaps in was read after this write.)
            let renumbered = self.number(&superseded, true);
            superseded = self
                .render_and_finish(renumbered, db, ReadFrom::Primary)
                .await;
        }
    }

    /// Renders the numbered keys afresh (siblings from one read) and swaps each in; returns
    /// the keys a later change took over meanwhile.
    async fn render_and_finish(
        &self,
        numbered: Vec<(Key, u64)>,
        db: &Database,
        from: ReadFrom,
    ) -> Vec<Key> {
        let guards: Vec<Abandoned> = numbered
            .iter()
            .map(|(key, number)| Abandoned::new(self, key, *number))
            .collect();
        let keys: Vec<Key> = numbered.iter().map(|(key, _)| key.clone()).collect();
        let fresh = self.render_together(&keys, db, from).await;
        // Compacted here, not under the lock `finish` takes: compressing a long list takes a
        // while, and every change waits on that lock.
        let fresh: Vec<Option<Rendered>> = keys
            .iter()
            .zip(fresh)
            .map(|(key, body)| match body {
                Some(body) if self.store.has_slot(key) => Some(self.compact(key, body)),
                other => other,
            })
            .collect();
        guards.into_iter().for_each(Abandoned::disarm);
        numbered
            .into_iter()
            .zip(fresh)
            .filter_map(|((key, number), body)| {
                (!self.finish(key.clone(), number, body)).then_some(key)
            })
            .collect()
    }

    /// Fresh renders of `keys`, in order; None where a render failed. A product's two review
    /// orders come from one read, sharing one buffer (compacted first if the catalog holds
    /// them, so that they share it there); where only votes changed them since the bodies
    /// held, that read is of the reviews' sort keys alone, and the held items are reused
    /// (`render::reviews::revoted_review_orders`), unless the keys show something else changed.
    async fn render_together(
        &self,
        keys: &[Key],
        db: &Database,
        from: ReadFrom,
    ) -> Vec<Option<Rendered>> {
        if let [first, second] = keys {
            if let (Key::Reviews { product_id, order }, Some(other)) = (first, sibling(first)) {
                if *second == other {
                    // Compacted before the newest order is made from it, so that the two share
                    // the compact buffer; only where the catalog has both's slots.
                    let compaction = if self.store.has_slot(first) && self.store.has_slot(second) {
                        self.compaction
                    } else {
                        Compaction::None
                    };
                    let held = self
                        .only_votes_since_held(keys)
                        .then(|| {
                            self.store.peek(&Key::Reviews {
                                product_id: *product_id,
                                order: ReviewOrder::Helpful,
                            })
                        })
                        .flatten();
                    let revoted = match held {
                        Some(Rendered::List(held)) => {
                            db.read_from(from, |pool| {
                                revote_review_orders(pool, *product_id, &held, compaction)
                            })
                            .await
                        }
                        _ => Ok(None),
                    };
                    let read = match revoted {
                        Ok(Some(both)) => {
                            self.revoted.fetch_add(1, Ordering::Relaxed);
                            Ok(both)
                        }
                        Err(e) => Err(e),
                        Ok(None) => {
                            db.read_from(from, |pool| {
                                fill_review_orders(pool, *product_id, compaction)
                            })
                            .await
                        }
                    };
                    return match read {
                        Ok((helpful, newest)) if *order == ReviewOrder::Helpful => {
                            vec![Some(helpful), Some(newest)]
                        }
                        Ok((helpful, newest)) => vec![Some(newest), Some(helpful)],
                        Err(_) => vec![None, None],
                    };
                }
            }
        }
        let renders = keys
            .iter()
            .map(|key| async { db.read_from(from, |pool| fill(key, pool)).await.ok() });
        futures_util::future::join_all(renders).await
    }

    /// Gives `key`'s latest change a number if the cache holds the key or a refresh of it is
    /// under way, and with `enqueue` marks it queued (returning whether it was not already);
    /// otherwise drops it (cancelling a fill in flight) and returns None. Either way, a
    /// warm-up running now will not insert the key.
    fn take_number(&self, key: &Key, enqueue: bool, only_votes: bool) -> Option<(u64, bool)> {
        self.while_warming(|warming| {
            if let Some(w) = warming {
                w.keys.insert(key.clone());
            }
            let mut pending = self.refreshing.lock().ok()?;
            if !pending.contains_key(key) && !self.store.contains_key(key) {
                self.store.remove(key);
                return None;
            }
            let number = self.refresh_numbers.fetch_add(1, Ordering::Relaxed) + 1;
            let entry = pending.entry(key.clone()).or_insert(Pending {
                latest: number,
                queued: false,
                only_votes: true,
            });
            entry.latest = number;
            entry.only_votes &= only_votes;
            let newly_queued = enqueue && !entry.queued;
            entry.queued |= enqueue;
            Some((number, newly_queued))
        })
    }

    /// Whether every change to each of `keys` since the body held was a helpful vote.
    fn only_votes_since_held(&self, keys: &[Key]) -> bool {
        self.refreshing.lock().is_ok_and(|pending| {
            keys.iter()
                .all(|key| pending.get(key).is_some_and(|p| p.only_votes))
        })
    }

    /// Takes `key` off the queue for rendering: the number of the change to render for; None
    /// if the refresh was abandoned meanwhile, or taken to be rendered with its sibling (its
    /// turn in the queue then finds nothing to do).
    fn dequeue(&self, key: &Key) -> Option<u64> {
        let mut pending = self.refreshing.lock().ok()?;
        let entry = pending.get_mut(key).filter(|entry| entry.queued)?;
        entry.queued = false;
        Some(entry.latest)
    }

    /// Swaps `fresh` in for `key` (or drops the entry if None), unless a change after the one
    /// numbered `number` has come since: its own refresh will. Returns whether it did.
    fn finish(&self, key: Key, number: u64, fresh: Option<Rendered>) -> bool {
        let Ok(mut pending) = self.refreshing.lock() else {
            return false;
        };
        if pending.get(&key).map(|p| p.latest) != Some(number) {
            return false;
        }
        pending.remove(&key);
        match fresh {
            Some(body) => {
                self.store.insert(key, body);
                self.refreshed.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                self.store.remove(&key);
            }
        }
        drop(pending);
        self.refresh_done.notify_waiters();
        true
    }

    /// Abandons every refresh under way (the cache is being emptied): none will swap in.
    pub(crate) fn abandon_refreshes(&self) {
        if let Ok(mut pending) = self.refreshing.lock() {
            pending.clear();
        }
        self.refresh_done.notify_waiters();
    }

    /// Drops the body of every key whose refresh is under way (the refresh still swaps its
    /// new body in): the next reads fill them from the database instead of getting the
    /// previous body meanwhile. Returns how many.
    pub fn drop_bodies_being_refreshed(&self) -> usize {
        let Ok(pending) = self.refreshing.lock() else {
            return 0;
        };
        for key in pending.keys() {
            self.store.remove(key);
        }
        pending.len()
    }

    /// Whether a change's refresh of `key` is under way.
    pub fn is_being_refreshed(&self, key: &Key) -> bool {
        self.refreshing
            .lock()
            .map(|n| n.contains_key(key))
            .unwrap_or(false)
    }

    /// Refreshes not yet swapped in.
    pub fn refreshes_pending(&self) -> usize {
        self.refreshing.lock().map(|n| n.len()).unwrap_or(0)
    }
}

/// Drops the entry of a refresh abandoned half-way (its future dropped, or a panic), so the
/// key is neither left stale nor left looking refreshed for ever.
struct Abandoned<'a> {
    cache: &'a ResponseCache,
    key: Option<(Key, u64)>,
}

impl<'a> Abandoned<'a> {
    fn new(cache: &'a ResponseCache, key: &Key, number: u64) -> Abandoned<'a> {
        Abandoned {
            cache,
            key: Some((key.clone(), number)),
        }
    }

    fn disarm(mut self) {
        self.key = None;
    }
}

impl Drop for Abandoned<'_> {
    fn drop(&mut self) {
        if let Some((key, number)) = self.key.take() {
            self.cache.finish(key, number, None);
        }
    }
}

/// The key rendered from the same read as `key`: a product's other review order.
fn sibling(key: &Key) -> Option<Key> {
    match *key {
        Key::Reviews { product_id, order } => Some(Key::Reviews {
            product_id,
            order: match order {
                ReviewOrder::Helpful => ReviewOrder::Newest,
                ReviewOrder::Newest => ReviewOrder::Helpful,
            },
        }),
        _ => None,
    }
}

/// `keys` in groups rendered together: each key with its sibling, if that is among them.
pub(crate) fn with_siblings(mut keys: Vec<Key>) -> Vec<Vec<Key>> {
    let mut groups = Vec::with_capacity(keys.len());
    while let Some(key) = keys.pop() {
        let mut group = vec![key];
        if let Some(at) = sibling(&group[0]).and_then(|s| keys.iter().position(|k| *k == s)) {
            group.push(keys.swap_remove(at));
        }
        groups.push(group);
    }
    groups
}

/// Serves the refresh queue until it closes: up to `concurrency` re-renders at once.
pub async fn run(
    cache: &ResponseCache,
    db: &Database,
    mut queue: mpsc::UnboundedReceiver<Key>,
    concurrency: usize,
) {
    use futures_util::StreamExt;
    let mut running = futures_util::stream::FuturesUnordered::new();
    loop {
        tokio::select! {
            next = queue.recv(), if running.len() < concurrency => match next {
                Some(key) => {
                    let Some(number) = cache.dequeue(&key) else {
                        continue; // abandoned, or rendered with its sibling, meanwhile
                    };
                    let mut numbered = vec![(key.clone(), number)];
                    if let Some(other) = sibling(&key) {
                        if let Some(n) = cache.dequeue(&other) {
                            numbered.push((other, n));
                        }
                    }
                    running.push(async move {
                        cache.render_and_finish(numbered, db, ReadFrom::Fenced).await;
                    });
                }
                None => break,
            },
            Some(()) = running.next(), if !running.is_empty() => {}
        }
    }
    while running.next().await.is_some() {}
}
