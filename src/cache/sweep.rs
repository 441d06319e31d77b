//! Anti-entropy: a background sweep that re-renders every cached entry within a period and
//! compares it with what the cache holds. It is the backstop that bounds staleness whatever
//! went wrong (a bug, a write made with the triggers disabled, a restored backup), and an
//! alarm: with a correct change feed it finds nothing.
//!
//! A difference alone is not drift: the entry may have changed an instant before the fresh
//! render, with the feed about to apply it. So differing entries are set aside, and once per
//! batch of them the sweep waits for a complete read of the change log that began after their
//! renders. An entry the cache still holds as the very same value (not merely equal bytes: a
//! dropped and refilled entry is a new value) was not explained by any change the feed knows
//! of: it is counted in [`CacheStats::drift`](super::CacheStats::drift), logged with its key,
//! and dropped, so the next read renders it fresh. If the feed cannot complete a read in time,
//! the sweep cannot tell drift from lag: it drops the entry without counting it, so staleness
//! stays bounded by a round's length even then.
//!
//! The database cost is bounded by pacing: one render at a time, spread evenly over the
//! period, so a sweep of `n` entries costs `n / period` renders per second, and never more
//! than a rate cap: a precomputed full catalog (10.5 million entries) swept every 15 minutes
//! would be 11,700 renders a second, well over a database core (`benches/sweep_cost.rs`
//! measures the database's CPU per render, about 140 µs). Past the cap a round takes longer
//! than the period.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::store::Held;
use super::{fill, Key, ResponseCache};
use crate::pg::feed::FeedStatus;
use crate::pg::pool::Pool;

/// How long the sweep waits for the feed to vouch for changed entries.
const FEED_WAIT: Duration = Duration::from_secs(10);

/// Differing entries judged together, after one wait for the feed.
const JUDGED_TOGETHER: usize = 64;

/// How fast a sweep goes: every entry within `period`, at most `max_per_second` renders a
/// second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweepPace {
    pub period: Duration,
    pub max_per_second: u32,
}

impl SweepPace {
    /// As fast as the database answers (for measuring what a render costs).
    pub const FLAT_OUT: SweepPace = SweepPace {
        period: Duration::ZERO,
        max_per_second: u32::MAX,
    };

    /// The time between two renders of a round of `entries`.
    fn gap(&self, entries: usize) -> Duration {
        let spread = self.period / u32::try_from(entries).unwrap_or(u32::MAX).max(1);
        let capped = Duration::from_secs(1) / self.max_per_second.max(1);
        spread.max(capped).max(Duration::from_micros(10))
    }
}

/// Sweeps `cache` for ever, each round re-rendering every entry present when it began at
/// `pace`. Runs until the task is aborted.
pub async fn run(cache: &ResponseCache, pool: &Pool, feed: &FeedStatus, pace: SweepPace) {
    let period = pace.period;
    loop {
        if round(cache, pool, feed, pace).await == 0 {
            tokio::time::sleep(period.min(Duration::from_secs(1))).await;
        }
    }
}

/// One round: re-renders every entry present now at `pace` (or as fast as the database
/// answers, if that is slower). Returns how many entries it visited.
pub async fn round(
    cache: &ResponseCache,
    pool: &Pool,
    feed: &FeedStatus,
    pace: SweepPace,
) -> usize {
    let keys = cache.keys();
    if keys.is_empty() {
        return 0;
    }
    let mut pace = tokio::time::interval(pace.gap(keys.len()));
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut differing = Vec::new();
    for key in &keys {
        pace.tick().await;
        if let Some(cached) = rerender(cache, pool, key).await {
            differing.push((key, cached));
            if differing.len() == JUDGED_TOGETHER {
                judge(cache, feed, &mut differing, FEED_WAIT).await;
            }
        }
    }
    judge(cache, feed, &mut differing, FEED_WAIT).await;
    keys.len()
}

/// Re-renders one entry; returns the cached value if the fresh render differs from it.
async fn rerender(cache: &ResponseCache, pool: &Pool, key: &Key) -> Option<Held> {
    if !cache.is_current(key) {
        return None; // a products page of an old generation: unreachable already
    }
    let cached = cache.store.peek_held(key)?;
    let fresh = fill(key, pool).await.ok()?; // the database is away: next round
    cache.swept.fetch_add(1, Ordering::Relaxed);
    (fresh != *cached).then_some(cached)
}

/// Decides, after the feed has caught up with the renders (waiting at most `feed_wait`), which
/// differing entries drifted.
async fn judge(
    cache: &ResponseCache,
    feed: &FeedStatus,
    differing: &mut Vec<(&Key, Held)>,
    feed_wait: Duration,
) {
    if differing.is_empty() {
        return;
    }
    let vouched = feed.wait_for_fresh_read(feed_wait).await;
    for (key, cached) in differing.drain(..) {
        if !cache.is_current(key) || cache.is_being_refreshed(key) {
            // A product changed meanwhile (its pages are unreachable already), or a change's
            // refresh is about to swap the new body in.
            continue;
        }
        let dropped = cache.store.remove_if_still(key, &cached);
        if dropped && vouched {
            cache.drift.fetch_add(1, Ordering::Relaxed);
            let shown = match key {
                Key::Cart(_) => "Cart(<a session>)".to_owned(),
                other => format!("{other:?}"),
            };
            tracing::warn!(
                key = %shown,
                "cache drift: an entry differed from a fresh render and no change explained it; dropped"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::CatalogSize;
    use crate::render::Rendered;

    #[tokio::test]
    async fn a_catalog_404_refreshed_into_another_404_is_not_judged_as_the_one_rendered() {
        let cache = ResponseCache::new(1 << 20);
        cache.open_catalog(CatalogSize {
            products: 10,
            max_product_id: 10,
            ..Default::default()
        });
        let key = Key::Product(2);
        assert!(cache.precompute(key.clone(), Rendered::NotFound));
        let judged = cache.store.peek_held(&key).expect("held");
        // A refresh swaps in a 404 of its own before the sweep judges the one it read.
        cache.insert(key.clone(), Rendered::NotFound);
        let feed = FeedStatus::new();
        // No wait for the feed: an entry still the one judged is dropped, uncounted.
        judge(&cache, &feed, &mut vec![(&key, judged)], Duration::ZERO).await;
        assert!(
            cache.store.peek_held(&key).is_some(),
            "the refreshed 404 stays"
        );
        let judged = cache.store.peek_held(&key).expect("held");
        judge(&cache, &feed, &mut vec![(&key, judged)], Duration::ZERO).await;
        assert!(
            cache.store.peek_held(&key).is_none(),
            "the very one judged is dropped"
        );
        assert_eq!(cache.stats().drift, 0, "the feed did not vouch");
    }

    #[test]
    fn a_round_is_spread_over_its_period_but_never_faster_than_the_cap() {
        let pace = SweepPace {
            period: Duration::from_secs(900),
            max_per_second: 200,
        };
        assert_eq!(
            pace.gap(9_000),
            Duration::from_millis(100),
            "spread over the period"
        );
        assert_eq!(
            pace.gap(10_500_000),
            Duration::from_millis(5),
            "capped at 200 a second"
        );
        assert_eq!(SweepPace::FLAT_OUT.gap(1_000), Duration::from_micros(10));
    }
}
