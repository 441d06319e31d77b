//! The binary's allocation census (`--features alloc-census`): mimalloc behind a counter of
//! live allocations by size, logged every 30 s, to say where an instance's resident memory
//! goes (docs/benchmarks.md, Warm-up): bytes asked for, bytes mimalloc's size classes hand out
//! for them, and, against the process's resident size, what the allocator holds beside both.
//!
//! Off by default: every allocation and free pays three atomic additions and a size lookup.
//! What C code allocates with its own `malloc` (libdeflate's and zstd's contexts) is not
//! counted: it is part of what the process holds beyond the census.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::time::Duration;

// Declared here: the binary does not depend on libmimalloc-sys itself, only through mimalloc.
extern "C" {
    /// mimalloc's size of the block it gave `p` (its size class, or the page rounding).
    fn mi_usable_size(p: *const u8) -> usize;
}

/// Sizes up to 1 KiB by 8 bytes (mimalloc's classes are no finer), then by powers of two.
const SMALL_LIMIT: usize = 1024;
const BUCKETS: usize = SMALL_LIMIT / 8 + 1 + 64;

struct Tally {
    asked: [AtomicI64; BUCKETS],
    given: [AtomicI64; BUCKETS],
    count: [AtomicI64; BUCKETS],
}

static TALLY: Tally = Tally {
    asked: [const { AtomicI64::new(0) }; BUCKETS],
    given: [const { AtomicI64::new(0) }; BUCKETS],
    count: [const { AtomicI64::new(0) }; BUCKETS],
};

fn bucket(size: usize) -> usize {
    match size {
        0..=SMALL_LIMIT => size.div_ceil(8),
        _ => SMALL_LIMIT / 8 + (usize::BITS - size.leading_zeros()) as usize,
    }
}

/// What a bucket's sizes are, for the log.
fn bucket_label(b: usize) -> String {
    match b.checked_sub(SMALL_LIMIT / 8) {
        None | Some(0) => format!("{} bytes", b * 8),
        Some(bits) => format!("up to 2^{bits} bytes"),
    }
}

fn tally(size: usize, given: usize, sign: i64) {
    let b = bucket(size);
    TALLY.asked[b].fetch_add(sign * size as i64, Relaxed);
    TALLY.given[b].fetch_add(sign * given as i64, Relaxed);
    TALLY.count[b].fetch_add(sign, Relaxed);
}

/// mimalloc, counted.
pub struct Counted;

// SAFETY: every call is mimalloc's own; the tally only reads the block it returned or is
// about to free.
unsafe impl GlobalAlloc for Counted {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = mimalloc::MiMalloc.alloc(layout);
        if !p.is_null() {
            tally(layout.size(), mi_usable_size(p), 1);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = mimalloc::MiMalloc.alloc_zeroed(layout);
        if !p.is_null() {
            tally(layout.size(), mi_usable_size(p), 1);
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        tally(layout.size(), mi_usable_size(p), -1);
        mimalloc::MiMalloc.dealloc(p, layout)
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = mi_usable_size(p);
        let q = mimalloc::MiMalloc.realloc(p, layout, new_size);
        if !q.is_null() {
            tally(layout.size(), old, -1);
            tally(new_size, mi_usable_size(q), 1);
        }
        q
    }
}

/// Logs the census every 30 s, from a thread of its own, for the life of the process.
pub fn log_periodically() {
    let spawned = std::thread::Builder::new()
        .name("atelier-alloc-census".into())
        .spawn(|| loop {
            std::thread::sleep(Duration::from_secs(30));
            log_census();
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "no allocation census: its thread did not start");
    }
}

fn log_census() {
    const MB: i64 = 1 << 20;
    let load = |counter: &[AtomicI64; BUCKETS], b: usize| counter[b].load(Relaxed);
    let given_total: i64 = (0..BUCKETS).map(|b| load(&TALLY.given, b)).sum();
    tracing::info!(
        allocations = (0..BUCKETS).map(|b| load(&TALLY.count, b)).sum::<i64>(),
        asked_mb = (0..BUCKETS).map(|b| load(&TALLY.asked, b)).sum::<i64>() / MB,
        given_mb = given_total / MB,
        resident_mb = resident_kb().map(|kb| kb / 1024),
        "allocation census"
    );
    // Each bucket that holds at least 1% of what was given out.
    for b in 0..BUCKETS {
        let given = load(&TALLY.given, b);
        if given > 0 && given >= given_total / 100 {
            tracing::info!(
                size = bucket_label(b),
                allocations = load(&TALLY.count, b),
                asked_mb = load(&TALLY.asked, b) / MB,
                given_mb = given / MB,
                "allocation census by size"
            );
        }
    }
}

/// The process's resident size (`VmRSS`), in KiB.
fn resident_kb() -> Option<i64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
