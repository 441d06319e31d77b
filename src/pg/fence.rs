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
}

/// Where a replica stands against the fence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// It has every change seen so far.
    CaughtUp,
    /// It lacks changes seen less than the bound ago: worth waiting for until `deadline`,
    /// when it lacks `fence`.
    Behind { fence: Lsn, deadline: Instant },
    /// It lacks a change seen longer than the bound ago.
    Lagging,
}

/// Entries kept in `recent` at most: a burst of changes within the bound keeps the newest
/// ones, which only makes a lagging replica's deadline earlier.
const RECENT_KEPT: usize = 4096;

impl Fence {
    pub fn new(max_lag: Duration) -> Fence {
        Fence {
            state: Mutex::new(State::default()),
            max_lag,
        }
    }

    /// How long a replica may be behind a change.
    pub fn max_lag(&self) -> Duration {
        self.max_lag
    }

    /// Records that the primary was at `lsn` when a change was seen.
    pub fn raise(&self, lsn: Lsn) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        if lsn <= state.high {
            return;
        }
        let now = Instant::now();
        state.high = lsn;
        state.recent.push_back((lsn, now));
        self.forget_old(&mut state, now);
        if state.recent.len() > RECENT_KEPT {
            // A replica lacking it lacks the next one too, seen a little later: its deadline
            // moves a little, never its fence.
            state.recent.pop_front();
        }
    }

    /// The highest position seen (0 before any change).
    pub fn high(&self) -> Lsn {
        self.state.lock().map(|s| s.high).unwrap_or(Lsn::MAX)
    }

    /// Where a replica that has replayed up to `replayed` stands.
    pub fn standing(&self, replayed: Lsn) -> Standing {
        let Ok(mut state) = self.state.lock() else {
            return Standing::Lagging;
        };
        if caught_up(replayed, state.high) {
            return Standing::CaughtUp;
        }
        let now = Instant::now();
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
            if now.duration_since(seen) < self.max_lag {
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
        let fence = Fence::new(Duration::from_millis(300));
        assert_eq!(fence.standing(0), Standing::CaughtUp, "nothing seen yet");
        fence.raise(1_000);
        std::thread::sleep(Duration::from_millis(150));
        fence.raise(2_000);
        assert_eq!(fence.standing(2_000), Standing::CaughtUp);
        let Standing::Behind {
            fence: at,
            deadline,
        } = fence.standing(1_500)
        else {
            panic!("behind the second change only");
        };
        assert_eq!(at, 2_000);
        let first_deadline = match fence.standing(500) {
            Standing::Behind { deadline, .. } => deadline,
            other => panic!("behind both, within the bound: {other:?}"),
        };
        assert!(
            first_deadline < deadline,
            "the bound counts from the first change it lacks"
        );
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            fence.standing(500),
            Standing::Lagging,
            "the first change was seen 350 ms ago"
        );
        assert!(
            matches!(fence.standing(1_500), Standing::Behind { .. }),
            "the second 200 ms ago"
        );
        fence.raise(1_800);
        assert_eq!(fence.high(), 2_000, "the fence never goes back down");
    }
}
