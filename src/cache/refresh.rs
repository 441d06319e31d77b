//! Refresh, don't drop: an entry a change makes stale is re-rendered and swapped in, so a
//! write never turns a hot read into a miss (unless the database slows a writer's own refresh
//! past its request's time: [`ResponseCache::apply_own_write`]); readers get the previous body
//! until the new one is in. After helpful votes alone, a product's review lists are
//! re-rendered from the items held and what the lists sort by, not from every review read
//! again; after answers alone, a product's questions list from the items held and those
//! questions' answers.
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

use std::collections::hash_map::Entry;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;

use super::fill::{fill_review_orders, reanswer_questions, revote_review_orders, RevoteFrom};
use super::{fill, Key, ResponseCache};
use crate::domain::{Change, ReviewOrder};
use crate::pg::database::{Database, ReadFrom};
use crate::pg::read::QuestionKeys;
use crate::pg::DbError;
use crate::render::{Compaction, Frame, Rendered};

/// A key with a refresh under way.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    /// The number of the latest change to the key.
    latest: u64,
    /// Whether the key waits in the background queue.
    queued: bool,
    /// What every change since the body held leaves the refresh free to reuse of that body.
    reuse: Reuse,
}

/// What the changes to a key since the body held leave its refresh free to reuse of that body,
/// instead of reading every row behind it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reuse {
    /// Nothing: the body is rendered afresh.
    Nothing,
    /// All but the reviews' helpfulness: a product's two review lists after helpful votes
    /// alone, re-rendered from their items and the reviews' sort keys
    /// (`render::reviews::revoted_review_orders`).
    AllButVotes,
    /// All but the helpfulness of these reviews: a product's two review lists after helpful
    /// votes on them alone, re-rendered from their items and the sort keys of these reviews
    /// alone (`render::reviews::revoted_review_orders_of`).
    AllButVotesOn(Vec<i64>),
    /// All but the nested answers of these questions: a product's questions list after
    /// answers alone changed, those questions' items re-rendered from their answers
    /// (`render::qa::reanswered_question_list`).
    AllButAnswersOf(Vec<i64>),
}

/// Past this many questions whose answers changed, a questions list is read again whole.
const MAX_REANSWERED: usize = 16;

/// Past this many reviews voted on, every review's sort key is read, not theirs alone.
const MAX_REVOTED: usize = 64;

impl Reuse {
    /// What `change` leaves reusable of the bodies it makes stale.
    pub(crate) fn after(change: &Change) -> Reuse {
        match change {
            Change::ReviewVotes {
                review: Some(review),
                ..
            } => Reuse::AllButVotesOn(vec![*review]),
            Change::ReviewVotes { review: None, .. } => Reuse::AllButVotes,
            Change::QuestionAnswers { question, .. } => Reuse::AllButAnswersOf(vec![*question]),
            _ => Reuse::Nothing,
        }
    }

    /// What is left reusable after the changes of `self` and those of `other`.
    pub(crate) fn and(&self, other: &Reuse) -> Reuse {
        match (self, other) {
            (Reuse::AllButVotesOn(a), Reuse::AllButVotesOn(b)) => match union(a, b, MAX_REVOTED) {
                Some(reviews) => Reuse::AllButVotesOn(reviews),
                None => Reuse::AllButVotes,
            },
            (
                Reuse::AllButVotes | Reuse::AllButVotesOn(_),
                Reuse::AllButVotes | Reuse::AllButVotesOn(_),
            ) => Reuse::AllButVotes,
            (Reuse::AllButAnswersOf(a), Reuse::AllButAnswersOf(b)) => {
                match union(a, b, MAX_REANSWERED) {
                    Some(questions) => Reuse::AllButAnswersOf(questions),
                    None => Reuse::Nothing,
                }
            }
            _ => Reuse::Nothing,
        }
    }

    /// Whether the changes leave a product's review lists free to be revoted (from every
    /// review's sort key, or from those of the reviews voted on).
    fn only_votes(&self) -> bool {
        matches!(self, Reuse::AllButVotes | Reuse::AllButVotesOn(_))
    }
}

/// The ids of `a` and those of `b` not in `a`; None past `max` of them.
fn union(a: &[i64], b: &[i64], max: usize) -> Option<Vec<i64>> {
    let mut all = a.to_vec();
    for id in b {
        if !all.contains(id) {
            all.push(*id);
        }
    }
    (all.len() <= max).then_some(all)
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
    /// them from one read. `reuse`: what the change leaves reusable of their bodies.
    pub(crate) fn stale(&self, keys: Vec<Key>, reuse: &Reuse) {
        let queue = self.refresh_tx.lock().ok().and_then(|q| q.clone());
        let numbered: Vec<(Key, u64)> = keys
            .into_iter()
            .filter_map(|key| {
                let (number, newly_queued) =
                    self.take_number(&key, queue.is_some(), Some(reuse))?;
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
    /// ([`ResponseCache::apply_own_write`]). `reuse` as for [`Self::stale`]; None: the number
    /// is for no change of its own (a key whose refresh is under way keeps what it allows, a
    /// key numbered anew allows nothing).
    pub(crate) fn number(&self, keys: &[Key], reuse: Option<&Reuse>) -> Vec<(Key, u64)> {
        keys.iter()
            .filter_map(|key| Some((key.clone(), self.take_number(key, false, reuse)?.0)))
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
            // Still under way, so each key already holds what every change since the body held
            // leaves reusable; this number adds no change of its own.
            let renumbered = self.number(&superseded, None);
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
    /// them, so that they share it there). Where the changes since the bodies held leave part
    /// of them reusable ([`Reuse`]), only the rest is read, unless what is read shows that
    /// more changed.
    async fn render_together(
        &self,
        keys: &[Key],
        db: &Database,
        from: ReadFrom,
    ) -> Vec<Option<Rendered>> {
        if let [first, second] = keys {
            if let (Key::Reviews { product_id, order }, Some(other)) = (first, sibling(first)) {
                if *second == other {
                    return match self
                        .refresh_review_orders(keys, *product_id, db, from)
                        .await
                    {
                        Some((helpful, newest)) if *order == ReviewOrder::Helpful => {
                            vec![Some(helpful), Some(newest)]
                        }
                        Some((helpful, newest)) => vec![Some(newest), Some(helpful)],
                        None => vec![None, None],
                    };
                }
            }
        }
        let renders = keys.iter().map(|key| self.render_one(key, db, from));
        futures_util::future::join_all(renders).await
    }

    /// Both of `product_id`'s review lists (`keys`), the `helpful` one first: revoted from the
    /// held items where only votes changed them, else read whole.
    async fn refresh_review_orders(
        &self,
        keys: &[Key],
        product_id: i64,
        db: &Database,
        from: ReadFrom,
    ) -> Option<(Rendered, Rendered)> {
        // Compacted before the newest order is made from it, so that the two share the
        // compact buffer; only where the catalog has both's slots.
        let compaction = if keys.iter().all(|key| self.store.has_slot(key)) {
            self.compaction
        } else {
            Compaction::None
        };
        let reuse = keys
            .iter()
            .map(|key| self.reuse_since_held(key))
            .reduce(|a, b| a.and(&b))
            .unwrap_or(Reuse::Nothing);
        let held_list = |order| match self.store.peek(&Key::Reviews { product_id, order }) {
            Some(Rendered::List(held)) => Some(held),
            _ => None,
        };
        // The lists these replace: revoted from, and their packed runs of the same items reused.
        let held = held_list(ReviewOrder::Helpful);
        let newest = held_list(ReviewOrder::Newest);
        // The voted reviews' keys alone where the two lists are one buffer and its order by
        // date, as a warm-up or a refresh renders them; every key where they are two lists
        // filled apart (on demand), whose dates the keys tell.
        let revote_from = match (&reuse, &held, &newest) {
            (Reuse::AllButVotesOn(reviews), Some(held), Some(newest))
                if newest.is_reordered_over(held) =>
            {
                RevoteFrom::KeysOf { reviews, newest }
            }
            _ => RevoteFrom::EveryKey,
        };
        let revote = held
            .as_ref()
            .filter(|_| reuse.only_votes())
            .map(|held| async move {
                let revoted = db
                    .read_from(from, |pool| {
                        revote_review_orders(pool, product_id, held, revote_from, compaction)
                    })
                    .await;
                if matches!(
                    (revote_from, &revoted),
                    (RevoteFrom::KeysOf { .. }, Ok(Some(_)))
                ) {
                    self.revoted_by_review.fetch_add(1, Ordering::Relaxed);
                }
                revoted
            });
        let whole = db.read_from(from, |pool| {
            fill_review_orders(pool, product_id, compaction, held.as_deref())
        });
        reusing(&self.revoted, revote, whole).await
    }

    /// `key` rendered afresh; a product's questions list re-answered from its held items where
    /// only some questions' answers changed.
    async fn render_one(&self, key: &Key, db: &Database, from: ReadFrom) -> Option<Rendered> {
        let held = match (key, self.reuse_since_held(key)) {
            (Key::Questions(product_id), Reuse::AllButAnswersOf(answered)) => {
                match self.store.peek(key) {
                    Some(Rendered::List(held)) => Some((*product_id, held, answered)),
                    _ => None,
                }
            }
            _ => None,
        };
        let reanswer = held
            .as_ref()
            .map(|(product_id, held, answered)| async move {
                // One question's key alone where its item can be replaced where it is, in a list
                // the catalog keeps in runs; every question's otherwise.
                let in_runs = self.store.has_slot(key)
                    && self
                        .compaction
                        .keeps_in_runs(held, Frame::Questions(*product_id));
                let whose = match answered.as_slice() {
                    [question] if in_runs => QuestionKeys::Of(*question),
                    _ => QuestionKeys::Every,
                };
                let reanswered = db
                    .read_from(from, |pool| {
                        reanswer_questions(pool, *product_id, held, whose, answered)
                    })
                    .await;
                if matches!((whose, &reanswered), (QuestionKeys::Of(_), Ok(Some(_)))) {
                    self.reanswered_in_place.fetch_add(1, Ordering::Relaxed);
                }
                reanswered
            });
        let whole = db.read_from(from, |pool| fill(key, pool));
        reusing(&self.reanswered, reanswer, whole).await
    }

    /// Gives `key`'s latest change a number if the cache holds the key or a refresh of it is
    /// under way, and with `enqueue` marks it queued (returning whether it was not already);
    /// otherwise drops it (cancelling a fill in flight) and returns None. Either way, a
    /// warm-up running now will not insert the key.
    fn take_number(&self, key: &Key, enqueue: bool, reuse: Option<&Reuse>) -> Option<(u64, bool)> {
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
            let entry = match pending.entry(key.clone()) {
                Entry::Occupied(held) => {
                    let entry = held.into_mut();
                    if let Some(reuse) = reuse {
                        entry.reuse = entry.reuse.and(reuse);
                    }
                    entry
                }
                Entry::Vacant(new) => new.insert(Pending {
                    latest: number,
                    queued: false,
                    reuse: reuse.cloned().unwrap_or(Reuse::Nothing),
                }),
            };
            entry.latest = number;
            let newly_queued = enqueue && !entry.queued;
            entry.queued |= enqueue;
            Some((number, newly_queued))
        })
    }

    /// What every change to `key` since the body held leaves reusable of it.
    fn reuse_since_held(&self, key: &Key) -> Reuse {
        self.refreshing
            .lock()
            .ok()
            .and_then(|pending| pending.get(key).map(|p| p.reuse.clone()))
            .unwrap_or(Reuse::Nothing)
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

/// What `partial` renders from a held body (counted in `reused`) where it can; where what it
/// read shows that more changed, or there is no `partial`, what `whole` reads. None where a
/// read fails. (Futures do nothing until awaited: `whole` is read only when needed.)
async fn reusing<T>(
    reused: &AtomicU64,
    partial: Option<impl std::future::Future<Output = Result<Option<T>, DbError>>>,
    whole: impl std::future::Future<Output = Result<T, DbError>>,
) -> Option<T> {
    if let Some(partial) = partial {
        match partial.await {
            Ok(Some(body)) => {
                reused.fetch_add(1, Ordering::Relaxed);
                return Some(body);
            }
            Ok(None) => {} // more changed than the held body can take
            Err(_) => return None,
        }
    }
    whole.await.ok()
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

#[cfg(test)]
mod tests {
    use super::{Reuse, MAX_REANSWERED, MAX_REVOTED};
    use crate::domain::Change;

    #[test]
    fn what_is_reusable_after_changes_is_what_each_of_them_leaves() {
        let votes = Reuse::after(&Change::ReviewVotes {
            product: 1,
            review: None,
        });
        let votes_on = |review| {
            Reuse::after(&Change::ReviewVotes {
                product: 1,
                review: Some(review),
            })
        };
        let answers = |question| {
            Reuse::after(&Change::QuestionAnswers {
                product: 1,
                question,
            })
        };
        assert_eq!(votes, Reuse::AllButVotes);
        assert_eq!(votes_on(5), Reuse::AllButVotesOn(vec![5]));
        assert_eq!(Reuse::after(&Change::Reviews(1)), Reuse::Nothing);
        assert_eq!(Reuse::after(&Change::Questions(1)), Reuse::Nothing);
        assert_eq!(votes.and(&votes), Reuse::AllButVotes);
        assert_eq!(votes.and(&Reuse::Nothing), Reuse::Nothing);
        assert_eq!(Reuse::Nothing.and(&votes), Reuse::Nothing);
        assert_eq!(votes.and(&answers(3)), Reuse::Nothing);
        assert_eq!(
            votes_on(5).and(&votes_on(6)).and(&votes_on(5)),
            Reuse::AllButVotesOn(vec![5, 6])
        );
        assert_eq!(votes_on(5).and(&votes), Reuse::AllButVotes);
        assert_eq!(votes.and(&votes_on(5)), Reuse::AllButVotes);
        assert_eq!(votes_on(5).and(&Reuse::Nothing), Reuse::Nothing);
        assert_eq!(votes_on(5).and(&answers(5)), Reuse::Nothing);
        let many = (0..=MAX_REVOTED as i64).fold(votes_on(0), |r, id| r.and(&votes_on(id)));
        assert_eq!(
            many,
            Reuse::AllButVotes,
            "past the limit, every review's key"
        );
        assert_eq!(
            answers(3).and(&answers(4)).and(&answers(3)),
            Reuse::AllButAnswersOf(vec![3, 4])
        );
        assert_eq!(answers(3).and(&Reuse::Nothing), Reuse::Nothing);
        let many = (0..=MAX_REANSWERED as i64).fold(answers(0), |r, q| r.and(&answers(q)));
        assert_eq!(many, Reuse::Nothing, "past the limit, a whole read");
    }
}
