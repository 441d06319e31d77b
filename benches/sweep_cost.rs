//! What the anti-entropy sweep costs the database: fills a response cache with every cached
//! resource of random products (uniform over the whole catalog), then runs one sweep round as
//! fast as the database answers and measures the PostgreSQL backend's CPU time for it.
//!
//! Needs a loaded database:
//!
//!   DATABASE_URL=... cargo bench --bench sweep_cost [-- PRODUCTS]
//!
//! Prints entries, bytes per entry, database CPU per re-rendered entry, and what a full
//! default cache (512 MiB) swept every 15 minutes costs. Reads the backend's CPU time from
//! /proc, so the database must run on this machine. Without DATABASE_URL it does nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use atelier::cache::sweep::SweepPace;
use atelier::cache::{Key, ResponseCache};
use atelier::dataset::rng::Rng;
use atelier::domain::ReviewOrder;
use atelier::pg::database::Database;
use atelier::pg::feed::{self, ChangeSink, FeedSettings};
use atelier::pg::pool::Pool;

fn main() {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        eprintln!("sweep_cost: set DATABASE_URL to a loaded database to run this benchmark");
        return;
    };
    let products: i64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(&url, products));
}

/// User plus system CPU seconds of process `pid`.
fn cpu_seconds(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

async fn run(url: &str, products: i64) {
    let config = atelier::pg::parse_url(url).expect("DATABASE_URL");
    let client = atelier::pg::connect(&config).await.expect("connect");
    let max: i64 = client
        .query_one("SELECT max(id) FROM products", &[])
        .await
        .expect("max id")
        .get(0);
    let cache = Arc::new(ResponseCache::new(8 << 30));
    let db = Database::primary_only(Pool::new(config.clone(), 1, Duration::from_secs(30)));
    let pool = &db.primary;
    let backend: i32 = pool
        .run(|c| async move {
            Ok(c.client
                .query_one("SELECT pg_backend_pid()", &[])
                .await?
                .get(0))
        })
        .await
        .expect("backend pid");
    let sink: Arc<dyn ChangeSink> = cache.clone();
    let (status, feed_task) = feed::spawn(
        config,
        sink,
        FeedSettings::default(),
        feed::FeedStart::Fresh,
        None,
    );
    while !status.is_established() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let mut rng = Rng::new(11);
    let started = Instant::now();
    for _ in 0..products {
        let id = 1 + (rng.unit() * max as f64) as i64 % max;
        for key in [
            Key::Product(id),
            Key::Styles(id),
            Key::Related(id),
            Key::Reviews {
                product_id: id,
                order: ReviewOrder::Helpful,
            },
            Key::Reviews {
                product_id: id,
                order: ReviewOrder::Newest,
            },
            Key::ReviewsMeta(id),
            Key::Questions(id),
        ] {
            cache.get(&key, &db).await.expect("fill");
        }
    }
    let stats = cache.stats();
    println!(
        "filled {} entries of {products} random products (ids 1..={max}) in {:.1} s; {:.0} bytes per entry",
        stats.entries,
        started.elapsed().as_secs_f64(),
        stats.bytes as f64 / stats.entries as f64
    );

    let cpu_before = cpu_seconds(backend);
    let started = Instant::now();
    let visited = atelier::cache::sweep::round(&cache, pool, &status, SweepPace::FLAT_OUT).await;
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(backend) - cpu_before;
    let after = cache.stats();
    println!(
        "one sweep round, one connection, as fast as it goes: {visited} entries in {wall:.1} s ({:.0} entries/s)",
        visited as f64 / wall
    );
    println!(
        "database backend CPU: {cpu:.2} s in all, {:.0} us per entry; drift found: {}",
        cpu / visited as f64 * 1e6,
        after.drift
    );
    let per_entry_bytes = stats.bytes as f64 / stats.entries as f64;
    let full_cache_entries = (512u64 << 20) as f64 / per_entry_bytes;
    let cores = full_cache_entries * cpu / visited as f64 / 900.0;
    println!(
        "a full 512 MiB cache holds about {full_cache_entries:.0} such entries; swept every 900 s that is {:.0} renders/s and {:.1}% of one database core",
        full_cache_entries / 900.0,
        cores * 100.0
    );
    feed_task.abort();
}
