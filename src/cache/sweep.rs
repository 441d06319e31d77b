//! Anti-entropy: a background sweep that re-renders every cached entry within a period and
//! compares it with what the cache holds. It is the backstop that bounds staleness whatever
//! went wrong (a bug, a write made with the triggers disabled, a restored backup), and an
//! alarm: with a correct change feed it finds nothing.
//!
//! A difference alone is not drift: the entry may have changed an instant before the fresh
//! render, with the feed about to apply it. So the sweep first waits for a read of the change
//! log that began after its render; if the cache still holds the same body, no change that
//! the feed knows of explains it. That entry is counted in
//! [`CacheStats::drift`](super::CacheStats::drift), logged with its key, and dropped, so the
//! next read renders it fresh.
//!
//! The database cost is bounded by pacing: one render at a time, spread evenly over the
//! period, so a sweep of `n` entries costs `n / period` renders per second.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{fill, Key, ResponseCache};
use crate::pg::feed::FeedStatus;
use crate::pg::pool::Pool;

/// How long the sweep waits for the feed to vouch for a changed entry before leaving it for
/// the next round (the feed is down, or far behind).
const FEED_WAIT: Duration = Duration::from_secs(10);

/// Sweeps `cache` for ever, each round re-rendering every entry present when it began within
/// `period`. Runs until the task is aborted.
pub async fn run(cache: &ResponseCache, pool: &Pool, feed: &FeedStatus, period: Duration) {
    loop {
        if round(cache, pool, feed, period).await == 0 {
            tokio::time::sleep(period.min(Duration::from_secs(1))).await;
        }
    }
}

/// One round: re-renders every entry present now, spread over `period` (or as fast as the
/// database answers, if that is slower). Returns how many entries it visited.
pub async fn round(
    cache: &ResponseCache,
    pool: &Pool,
    feed: &FeedStatus,
    period: Duration,
) -> usize {
    let keys: Vec<Key> = cache.inner.iter().map(|(key, _)| key).collect();
    if keys.is_empty() {
        return 0;
    }
    let gap = (period / keys.len() as u32).max(Duration::from_micros(10));
    let mut pace = tokio::time::interval(gap);
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for key in &keys {
        pace.tick().await;
        check(cache, pool, feed, key).await;
    }
    keys.len()
}

/// Re-renders one entry and, if it drifted, counts, logs and drops it.
async fn check(cache: &ResponseCache, pool: &Pool, feed: &FeedStatus, key: &Key) {
    if let Key::ProductsPage { generation, .. } = key {
        if *generation != cache.products_generation.load(Ordering::Acquire) {
            return; // unreachable already; it ages out
        }
    }
    let Some(cached) = cache.inner.peek(key) else {
        return;
    };
    let Ok(fresh) = fill(key, pool).await else {
        return; // the database is away: next round
    };
    cache.swept.fetch_add(1, Ordering::Relaxed);
    if fresh == cached || !feed.wait_for_fresh_read(FEED_WAIT).await {
        return;
    }
    if cache.inner.remove_if(key, |now| *now == cached).is_some() {
        cache.drift.fetch_add(1, Ordering::Relaxed);
        let shown = match key {
            Key::Cart(_) => "Cart(<a session>)".to_owned(),
            other => format!("{other:?}"),
        };
        eprintln!(
            "cache drift: {shown} differed from a fresh render and no change explained it; dropped"
        );
    }
}
