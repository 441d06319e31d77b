//! The hit path's store, side by side: today's quick_cache lookup against two lock-free
//! candidates for the precomputed catalog, an immutable map behind arc-swap and one arc-swap
//! slot per product id, each holding 100,000 entries and read in a scattered order.
//!
//!   cargo bench --bench hit_path
//!
//! The single-threaded figures show the cost of one lookup; the two-thread figures show what
//! happens when both cores read at once (quick_cache takes a read lock on a shard).
//!
//! Then what counting a request costs when both cores count at once: the five counts a hit
//! adds to (the route and status, the latency bucket, the latencies' sum, the cache hit, the
//! request id's number) in shared atomics, against the same in [`Counters`] striped across
//! threads.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};

use std::sync::atomic::{AtomicU64, Ordering};

use atelier::cache::Key;
use atelier::render::Rendered;
use atelier::stripes::Counters;

const ENTRIES: usize = 100_000;

/// A scattered walk over the ids, the same for every store.
fn ids() -> Vec<usize> {
    (0..ENTRIES)
        .map(|i| (i * 7919 + 13) % ENTRIES + 1)
        .collect()
}

struct Stores {
    quick: quick_cache::sync::Cache<Key, Rendered>,
    map: ArcSwap<HashMap<Key, Rendered>>,
    slots: Vec<ArcSwapOption<Rendered>>,
}

fn stores() -> Stores {
    // A body of its own per entry, as in the cache: one shared body would make every lookup
    // fight over the same reference count.
    let body_of = |id: usize| Rendered::Json(Bytes::from(format!("{id:>600}")));
    let quick = quick_cache::sync::Cache::new(ENTRIES * 2);
    let mut map = HashMap::with_capacity(ENTRIES);
    let slots: Vec<ArcSwapOption<Rendered>> =
        (0..=ENTRIES).map(|_| ArcSwapOption::empty()).collect();
    for (id, slot) in slots.iter().enumerate().skip(1) {
        let key = Key::Product(id as i64);
        let body = body_of(id);
        quick.insert(key.clone(), body.clone());
        map.insert(key, body.clone());
        slot.store(Some(Arc::new(body)));
    }
    Stores {
        quick,
        map: ArcSwap::from_pointee(map),
        slots,
    }
}

fn lookup(stores: &Stores, which: usize, id: usize) -> Option<Rendered> {
    match which {
        0 => stores.quick.get(&Key::Product(id as i64)),
        1 => stores.map.load().get(&Key::Product(id as i64)).cloned(),
        _ => stores.slots[id].load_full().map(|b| (*b).clone()),
    }
}

const NAMES: [&str; 3] = [
    "quick_cache get (today)",
    "arc-swap map load + get",
    "arc-swap slot by product id",
];

fn single(c: &mut Criterion) {
    let stores = stores();
    let ids = ids();
    for (which, name) in NAMES.iter().enumerate() {
        let mut i = 0;
        c.bench_function(&format!("hit, one thread: {name}"), |b| {
            b.iter(|| {
                i = (i + 1) % ENTRIES;
                black_box(lookup(&stores, which, ids[i]))
            })
        });
    }
}

fn two_threads(c: &mut Criterion) {
    let stores = Arc::new(stores());
    let ids = Arc::new(ids());
    for (which, name) in NAMES.iter().enumerate() {
        c.bench_function(&format!("hit, two threads: {name}"), |b| {
            b.iter_custom(|iters| {
                let started = Instant::now();
                let workers: Vec<_> = (0..2)
                    .map(|t| {
                        let (stores, ids) = (Arc::clone(&stores), Arc::clone(&ids));
                        std::thread::spawn(move || {
                            for n in 0..iters as usize {
                                let id = ids[(n * 2 + t) % ENTRIES];
                                black_box(lookup(&stores, which, id));
                            }
                        })
                    })
                    .collect();
                for w in workers {
                    let _ = w.join();
                }
                // Time per lookup pair: both threads did `iters` lookups at once.
                started.elapsed()
            })
        });
    }
}

/// Runs `count` on two threads at once, `iters` times each; the time per pair of requests.
fn on_two_threads(iters: u64, count: impl Fn(u64) + Send + Sync + 'static) -> Duration {
    let count = Arc::new(count);
    let started = Instant::now();
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let count = Arc::clone(&count);
            std::thread::spawn(move || (0..iters).for_each(|n| count(n)))
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    started.elapsed()
}

fn counting(c: &mut Criterion) {
    const COUNTS: usize = 5;
    c.bench_function("count a request, two threads: shared atomics", |b| {
        let shared: Arc<Vec<AtomicU64>> =
            Arc::new((0..COUNTS).map(|_| AtomicU64::new(0)).collect());
        b.iter_custom(|iters| {
            let shared = Arc::clone(&shared);
            on_two_threads(iters, move |n| {
                for counter in shared.iter() {
                    counter.fetch_add(black_box(n & 1), Ordering::Relaxed);
                }
            })
        })
    });
    c.bench_function(
        "count a request, two threads: striped (stripes::Counters)",
        |b| {
            let striped = Arc::new(Counters::new(COUNTS));
            b.iter_custom(|iters| {
                let striped = Arc::clone(&striped);
                on_two_threads(iters, move |n| {
                    for i in 0..COUNTS {
                        striped.add(i, black_box(n & 1));
                    }
                })
            })
        },
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = single, two_threads, counting
}
criterion_main!(benches);
