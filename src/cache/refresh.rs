//! Refresh, don't drop: an entry a change makes stale is re-rendered and swapped in, so a
//! write never turns a hot read into a miss; readers get the previous body until the new one
//! is in.
//!
//! Changes from the feed are refreshed in the background by [`run`]; the instance that takes
//! a write refreshes what it changed before answering ([`ResponseCache::refresh_now`]), so
//! its client's next read is the new body. Refreshes of one key can overlap (two changes in a
//! row), and a slow one must not overwrite a newer one: every change to a held key takes a new
//! number, and a refresh swaps its body in only if no later change has taken one since — under
//! the lock changes take their numbers under. An entry not held is simply dropped (which also
//! cancels a fill in flight); a refresh that fails drops its entry, so the next read fills it.

use std::sync::atomic::Ordering;

use tokio::sync::mpsc;

use super::{fill, Key, ResponseCache};
use crate::pg::pool::Pool;
use crate::render::Rendered;

/// A refresh to run: the key, and the number of the change it answers.
pub struct Refresh {
    key: Key,
    number: u64,
}

impl ResponseCache {
    /// Starts taking refreshes: returns the queue [`run`] serves. Until this is called (and
    /// after [`run`] stops), stale entries are dropped instead.
    pub fn refresh_queue(&self) -> mpsc::UnboundedReceiver<Refresh> {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut queue) = self.refresh_tx.lock() {
            *queue = Some(tx);
        }
        rx
    }

    /// Marks `key` stale: refreshes it in the background if the cache holds it (or a refresh
    /// of it is under way), drops it otherwise.
    pub(crate) fn stale(&self, key: Key) {
        let queue = self.refresh_tx.lock().ok().and_then(|q| q.clone());
        match (queue, self.take_number(&key)) {
            (Some(queue), Some(number)) => {
                if let Err(refused) = queue.send(Refresh { key, number }) {
                    // The refresher is gone: fall back to dropping.
                    self.finish(refused.0.key, refused.0.number, None);
                }
            }
            (None, Some(number)) => {
                self.finish(key, number, None);
            }
            (_, None) => {}
        }
    }

    /// Re-renders `key` now, if the cache holds it, and swaps the new body in; drops it if
    /// the render fails. For the instance's own writes.
    pub async fn refresh_now(&self, key: Key, pool: &Pool) {
        let Some(number) = self.take_number(&key) else {
            return; // dropped: the next read fills it fresh
        };
        let fresh = fill(&key, pool).await.ok();
        if self.finish(key.clone(), number, fresh) {
            return;
        }
        // A later change took the key over; its refresh also reads after this write. Wait
        // for it, so that the writer's next read is not the body from before its write.
        let _ = tokio::time::timeout(pool.timeout(), async {
            loop {
                let done = self.refresh_done.notified();
                tokio::pin!(done);
                done.as_mut().enable();
                if !self.is_being_refreshed(&key) {
                    return;
                }
                done.await;
            }
        })
        .await;
    }

    /// Gives `key`'s next change a number if the cache holds the key or a refresh of it is
    /// under way; otherwise drops it (cancelling a fill in flight) and returns None. Either
    /// way, a warm-up running now will not insert the key.
    fn take_number(&self, key: &Key) -> Option<u64> {
        self.while_warming(|warming| {
            if let Some(w) = warming {
                w.keys.insert(key.clone());
            }
            let mut numbers = self.refreshing.lock().ok()?;
            if self.inner.peek(key).is_none() && !numbers.contains_key(key) {
                self.inner.remove(key);
                return None;
            }
            let number = self.refresh_numbers.fetch_add(1, Ordering::Relaxed) + 1;
            numbers.insert(key.clone(), number);
            Some(number)
        })
    }

    /// Swaps `fresh` in for `key` (or drops the entry if None), unless a change after the one
    /// numbered `number` has come since: its own refresh will. Returns whether it did.
    fn finish(&self, key: Key, number: u64, fresh: Option<Rendered>) -> bool {
        let Ok(mut numbers) = self.refreshing.lock() else {
            return false;
        };
        if numbers.get(&key) != Some(&number) {
            return false;
        }
        numbers.remove(&key);
        match fresh {
            Some(body) => {
                self.inner.insert(key, body);
                self.refreshed.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                self.inner.remove(&key);
            }
        }
        drop(numbers);
        self.refresh_done.notify_waiters();
        true
    }

    /// Whether a later change has superseded refresh `number` of `key` (so it need not run).
    fn superseded(&self, key: &Key, number: u64) -> bool {
        self.refreshing
            .lock()
            .map(|n| n.get(key) != Some(&number))
            .unwrap_or(true)
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

/// Serves the refresh queue until it closes: up to `concurrency` re-renders at once.
pub async fn run(
    cache: &ResponseCache,
    pool: &Pool,
    mut queue: mpsc::UnboundedReceiver<Refresh>,
    concurrency: usize,
) {
    let mut running = futures_util::stream::FuturesUnordered::new();
    use futures_util::StreamExt;
    loop {
        tokio::select! {
            next = queue.recv(), if running.len() < concurrency => match next {
                Some(Refresh { key, number }) => {
                    if cache.superseded(&key, number) {
                        continue;
                    }
                    running.push(async move {
                        let fresh = fill(&key, pool).await.ok();
                        cache.finish(key, number, fresh);
                    });
                }
                None => break,
            },
            Some(()) = running.next(), if !running.is_empty() => {}
        }
    }
    while running.next().await.is_some() {}
}
