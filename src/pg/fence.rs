//! The fence a replica must have passed before a body is read from it: the primary's WAL
//! position when this instance last saw a change.
//!
//! A change is seen when the change feed reads it, when this instance commits a write of its
//! own, and when a warm-up begins. The position is taken on the primary after the change is
//! visible there (`pg_current_wal_insert_lsn()`, which is past the change's commit record
//! even when commits are asynchronous), so a replica that has replayed up to it has the
//! change. A read from a replica that has not waits for it at most a bound counted from when
//! the first change it lacks was seen; past that the replica counts as lagging and the read
//! goes to the primary.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A WAL position, as PostgreSQL's `pg_lsn` (bytes since the start of the log).
pub type Lsn = u64;

/// Size of a WAL page (`XLOG_BLCKSZ`, 8 kB in every standard build).
const WAL_PAGE: Lsn = 8192;
/// Size of a WAL segment (`--wal-segsize`, 16 MB unless initdb was told otherwise).
const WAL_SEGMENT: Lsn = 16 << 20;
/// Sizes of the header of a WAL page, and of the first page of a segment.
const PAGE_HEADER: Lsn = 24;
const SEGMENT_HEADER: Lsn = 40;

/// Whether a replica that has replayed up to `replayed` has every change before `fence`.
///
/// `pg_last_wal_replay_lsn()` is the end of the last record replayed, while the primary's
/// insert position on a page boundary is already past the next page's header; with nothing
/// written since, the two differ by the header alone. No record ends inside a header, so a
/// replica at the page's start has everything before it.
pub fn caught_up(replayed: Lsn, fence: Lsn) -> bool {
    if replayed >= fence {
        return true;
    }
    let page_start = fence - fence % WAL_PAGE;
    let header = if fence % WAL_SEGMENT == SEGMENT_HEADER {
        SEGMENT_HEADER
    } else {
        PAGE_HEADER
    };
    fence - page_start == header && replayed >= page_start
}

/// The positions seen recently, each with when it was first seen.
#[derive(Debug)]
pub struct Fence {
    state: Mutex<State>,
    /// How long a replica may be behind a change seen before it counts as lagging.
    max_lag: Duration,
}

#[derive(Debug, Default)]
struct State {
    /// The highest position seen.
    high: Lsn,
    /// Positions seen within the last `max_lag`, rising, with when each was seen.
    recent: VecDeque<(Lsn, Instant)>,
    /// The highest position dropped from `recent`: seen longer than `max_lag` ago.
    old: Lsn,
    /// Since when the fence cannot be trusted (see [`Fence::blind`]).
    blind_since: Option<Instant>,
}

/// Where a replica stands against the fence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// It has every change seen so far.
    CaughtUp,
    /// It lacks changes seen less than the bound ago: worth waiting for until `deadline`,
    /// when it lacks `fence`.
    Behind { fence: Lsn, deadline: Instant },
    /// It lacks a change seen longer than the bound ago (or the fence is not known).
    Lagging,
}

/// Entries kept in `recent` at most. Past it a new position replaces the newest entry's,
/// keeping that entry's time: a replica lacking it gets an earlier deadline, never a later one.
const RECENT_KEPT: usize = 4096;

impl Fence {
    /// A fence no replica passes until a query sent after now has raised it: until then this
    /// instance has seen nothing of the log (a restore replays it only later).
    pub fn new(max_lag: Duration) -> Fence {
        Fence {
            state: Mutex::new(State {
                blind_since: Some(Instant::now()),
                ..State::default()
            }),
            max_lag,
        }
    }

    /// How long a replica may be behind a change.
    pub fn max_lag(&self) -> Duration {
        self.max_lag
    }

    /// Records that the primary was at `lsn` when a change was seen (or the log read), in
    /// answer to a query sent at `asked`.
    pub fn raise(&self, lsn: Lsn, asked: Instant) {
        self.raise_at(lsn, asked, Instant::now());
    }

    fn raise_at(&self, lsn: Lsn, asked: Instant, now: Instant) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        if state.blind_since.is_some_and(|since| asked > since) {
            state.blind_since = None;
        }
        if lsn <= state.high {
            return;
        }
        state.high = lsn;
        self.forget_old(&mut state, now);
        let full = state.recent.len() >= RECENT_KEPT;
        match state.recent.back_mut() {
            Some(newest) if full => newest.0 = lsn,
            _ => state.recent.push_back((lsn, now)),
        }
    }

    /// Says that a change was made whose position could not be taken (the primary did not
    /// answer just after the commit): no replica counts as current until the fence is raised
    /// by a query sent after this.
    pub fn blind(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.blind_since = Some(Instant::now());
        }
    }

    /// The highest position seen (0 before any change).
    pub fn high(&self) -> Lsn {
        self.state.lock().map(|s| s.high).unwrap_or(Lsn::MAX)
    }

    /// Where a replica that has replayed up to `replayed` stands.
    pub fn standing(&self, replayed: Lsn) -> Standing {
        self.standing_at(replayed, Instant::now())
    }

    fn standing_at(&self, replayed: Lsn, now: Instant) -> Standing {
        let Ok(mut state) = self.state.lock() else {
            return Standing::Lagging;
        };
        if state.blind_since.is_some() {
            return Standing::Lagging;
        }
        if caught_up(replayed, state.high) {
            return Standing::CaughtUp;
        }
        self.forget_old(&mut state, now);
        if !caught_up(replayed, state.old) {
            return Standing::Lagging;
        }
        // The first position it lacks is the oldest one still recent above what it has.
        match state
            .recent
            .iter()
            .find(|(lsn, _)| !caught_up(replayed, *lsn))
        {
            Some(&(_, seen)) => Standing::Behind {
                fence: state.high,
                deadline: seen + self.max_lag,
            },
            None => Standing::CaughtUp,
        }
    }

    fn forget_old(&self, state: &mut State, now: Instant) {
        while let Some(&(lsn, seen)) = state.recent.front() {
            if now.saturating_duration_since(seen) < self.max_lag {
                break;
            }
            state.old = state.old.max(lsn);
            state.recent.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_is_caught_up_at_or_past_the_fence_or_at_the_page_its_header_begins() {
        assert!(caught_up(100, 100));
        assert!(caught_up(101, 100));
        assert!(!caught_up(99, 100));
        // The primary idle just past a page header; the replica at the page's start.
        let page = 5 * WAL_PAGE;
        assert!(caught_up(page, page + PAGE_HEADER));
        assert!(!caught_up(page - 8, page + PAGE_HEADER));
        // A segment's first page has the long header.
        let segment = 3 * WAL_SEGMENT;
        assert!(caught_up(segment, segment + SEGMENT_HEADER));
        assert!(!caught_up(segment, segment + SEGMENT_HEADER + 8));
        // Not a header: a record ends 40 bytes into an ordinary page.
        assert!(!caught_up(page, page + 40));
    }

    #[test]
    fn a_replica_behind_waits_until_the_bound_after_the_first_change_it_lacks() {
        let bound = Duration::from_millis(300);
        let fence = Fence::new(bound);
        let t0 = Instant::now() + Duration::from_millis(1);
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(
            fence.standing_at(0, t0),
            Standing::Lagging,
            "nothing seen yet: no replica is known to be current"
        );
        fence.raise_at(1_000, at(0), at(0));
        fence.raise_at(2_000, at(150), at(150));
        assert_eq!(fence.standing_at(2_000, at(150)), Standing::CaughtUp);
        assert_eq!(
            fence.standing_at(1_500, at(150)),
            Standing::Behind {
                fence: 2_000,
                deadline: at(150) + bound
            },
            "behind the second change only"
        );
        assert_eq!(
            fence.standing_at(500, at(150)),
            Standing::Behind {
                fence: 2_000,
                deadline: at(0) + bound
            },
            "the bound counts from the first change it lacks"
        );
        assert_eq!(
            fence.standing_at(500, at(350)),
            Standing::Lagging,
            "the first change was seen 350 ms ago"
        );
        assert!(
            matches!(fence.standing_at(1_500, at(350)), Standing::Behind { .. }),
            "the second 200 ms ago"
        );
        fence.raise_at(1_800, at(400), at(400));
        assert_eq!(fence.high(), 2_000, "the fence never goes back down");
    }

    #[test]
    fn a_burst_past_the_kept_positions_never_moves_a_deadline_later() {
        let bound = Duration::from_secs(1);
        let fence = Fence::new(bound);
        let t0 = Instant::now() + Duration::from_millis(1);
        for i in 0..(RECENT_KEPT as u64 + 100) {
            let now = t0 + Duration::from_micros(i);
            fence.raise_at(1_000 + i, now, now);
        }
        // A replica behind the very first position: its deadline is the bound after it.
        assert_eq!(
            fence.standing_at(0, t0),
            Standing::Behind {
                fence: 1_000 + RECENT_KEPT as u64 + 99,
                deadline: t0 + bound
            }
        );
        // One behind only the last few: no later than the bound after the newest kept entry.
        match fence.standing_at(1_000 + RECENT_KEPT as u64 + 50, t0) {
            Standing::Behind { deadline, .. } => {
                assert!(deadline <= t0 + Duration::from_micros(RECENT_KEPT as u64 + 100) + bound)
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(fence.standing_at(0, t0 + bound), Standing::Lagging);
    }

    #[test]
    fn a_fence_not_known_trusts_no_replica_until_raised_by_a_query_sent_after() {
        let fence = Fence::new(Duration::from_secs(1));
        std::thread::sleep(Duration::from_millis(1));
        let asked_before = Instant::now();
        fence.raise(1_000, asked_before);
        fence.blind();
        assert_eq!(fence.standing(5_000), Standing::Lagging);
        fence.raise(900, asked_before);
        assert_eq!(
            fence.standing(5_000),
            Standing::Lagging,
            "a query sent before may not have seen the change"
        );
        std::thread::sleep(Duration::from_millis(1));
        fence.raise(900, Instant::now());
        assert_eq!(fence.standing(5_000), Standing::CaughtUp);
    }
}
