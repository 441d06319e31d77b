//! Counters that many threads add to without sharing a cache line. A counter every request
//! adds to, kept in one atomic, moves its cache line from core to core on every request; here
//! each thread adds to a stripe of its own (the one it is given on its first count), and a
//! read sums the stripes. Reads are rare (a `/metrics` scrape, a test), adds are per request.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Stripes of each set of counters. Threads past this many share stripes, which stays correct
/// (adds are atomic) and only brings the sharing back among them.
const STRIPES: usize = 16;

/// Counters in a cache line (64 bytes): each stripe is padded to whole lines and a line
/// more, so that no two stripes share one whatever the allocation's alignment (a prefetcher
/// that fetches lines in pairs can still pair neighbours).
const PER_LINE: usize = 8;

/// `len` counters, striped across threads.
pub struct Counters {
    len: usize,
    /// Cells from one stripe to the next.
    stride: usize,
    cells: Box<[AtomicU64]>,
}

impl Counters {
    pub fn new(len: usize) -> Counters {
        let stride = len.div_ceil(PER_LINE) * PER_LINE + PER_LINE;
        Counters {
            len,
            stride,
            cells: (0..stride * STRIPES).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Stripe `s` of counter `i`; None if there is no such counter.
    fn cell(&self, s: usize, i: usize) -> Option<&AtomicU64> {
        (i < self.len).then(|| self.cells.get(s * self.stride + i))?
    }

    /// Adds `n` to counter `i` (nothing if there is no such counter).
    pub fn add(&self, i: usize, n: u64) {
        if let Some(cell) = self.cell(stripe(), i) {
            cell.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Counter `i`: the sum of its stripes.
    pub fn sum(&self, i: usize) -> u64 {
        (0..STRIPES)
            .filter_map(|s| self.cell(s, i))
            .map(|cell| cell.load(Ordering::Relaxed))
            .sum()
    }

    /// A number no other call returns for counter `i` of this set: a count of this thread's
    /// stripe, and the stripe.
    pub fn next_unique(&self, i: usize) -> u64 {
        let s = stripe();
        let before = self
            .cell(s, i)
            .map_or(0, |cell| cell.fetch_add(1, Ordering::Relaxed));
        before.wrapping_mul(STRIPES as u64) + s as u64
    }
}

/// This thread's stripe.
fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
    }
    STRIPE.with(|s| *s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::Arc;

    #[test]
    fn adds_from_many_threads_sum_to_the_total_and_numbers_never_repeat() {
        let counters = Arc::new(Counters::new(3));
        // More threads than stripes, so that some share one.
        let threads: Vec<_> = (0..STRIPES + 5)
            .map(|t| {
                let counters = Arc::clone(&counters);
                std::thread::spawn(move || {
                    let mut numbers = Vec::new();
                    for _ in 0..1_000 {
                        counters.add(0, 1);
                        counters.add(2, t as u64);
                        numbers.push(counters.next_unique(1));
                    }
                    counters.add(3, 1); // no such counter: ignored
                    numbers
                })
            })
            .collect();
        let mut seen = HashSet::new();
        for thread in threads {
            for n in thread.join().unwrap() {
                assert!(seen.insert(n), "{n} given twice");
            }
        }
        let threads = (STRIPES + 5) as u64;
        assert_eq!(counters.sum(0), threads * 1_000);
        assert_eq!(counters.sum(1), threads * 1_000);
        assert_eq!(counters.sum(2), (0..threads).sum::<u64>() * 1_000);
        assert_eq!(counters.sum(3), 0);
    }

    #[test]
    fn no_two_stripes_share_a_cache_line() {
        for len in [1, 7, 8, 9, 300] {
            let counters = Counters::new(len);
            let line = std::mem::size_of::<AtomicU64>() * PER_LINE;
            let last_of_first = (len - 1) * 8;
            let first_of_second = counters.stride * 8;
            assert!(first_of_second - last_of_first > line, "len {len}");
        }
    }
}
