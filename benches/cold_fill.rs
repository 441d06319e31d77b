//! Cold-fill latency: how long a cache miss takes, end to end from the pool to finished bytes,
//! for every cached resource of random products in the last 10% of ids (the rows loaded last,
//! so the least likely to be in PostgreSQL's buffers).
//!
//! Needs a loaded database:
//!
//!   DATABASE_URL=... cargo bench --bench cold_fill [-- SAMPLES]
//!
//! Prints p50/p90/p99/max per resource. Without DATABASE_URL it says so and does nothing.

use std::time::{Duration, Instant};

use atelier::cache::{fill, Key};
use atelier::dataset::rng::Rng;
use atelier::domain::ReviewOrder;
use atelier::pg::pool::Pool;

fn main() {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        eprintln!("cold_fill: set DATABASE_URL to a loaded database to run this benchmark");
        return;
    };
    let samples: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1000);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(&url, samples));
}

async fn run(url: &str, samples: usize) {
    let config = atelier::pg::parse_url(url).expect("DATABASE_URL");
    let client = atelier::pg::connect(&config).await.expect("connect");
    let max: i64 = client
        .query_one("SELECT max(id) FROM products", &[])
        .await
        .expect("max id")
        .get(0);
    let low = max - max / 10;
    let questions: Vec<i64> = client
        .query(
            "SELECT id FROM questions WHERE product_id > $1 ORDER BY random() LIMIT $2",
            &[&low, &(samples as i64)],
        )
        .await
        .expect("sample questions")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let pool = Pool::new(config, 1, Duration::from_secs(30));
    pool.get().await.expect("pool connection");
    let mut rng = Rng::new(7);
    println!(
        "cold fills of {samples} random products with ids {low}..={max} (one connection, sequential)"
    );
    println!(
        "{:<28} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "resource", "p50 ms", "p90 ms", "p99 ms", "max ms", "mean ms"
    );
    type KeyOf = fn(i64) -> Key;
    let kinds: [(&str, KeyOf); 8] = [
        ("product", Key::Product),
        ("styles", Key::Styles),
        ("related", Key::Related),
        ("reviews (relevant)", |id| Key::Reviews {
            product_id: id,
            order: ReviewOrder::Helpful,
        }),
        ("reviews (newest)", |id| Key::Reviews {
            product_id: id,
            order: ReviewOrder::Newest,
        }),
        ("reviews/meta", Key::ReviewsMeta),
        ("qa/questions", Key::Questions),
        ("answers (by question)", Key::Answers),
    ];
    let mut all = Vec::new();
    for (name, key) in kinds {
        let mut times = Vec::with_capacity(samples);
        for i in 0..samples {
            let id = if name.starts_with("answers") {
                match questions.get(i) {
                    Some(&q) => q,
                    None => break,
                }
            } else {
                rng.range(low + 1, max)
            };
            let started = Instant::now();
            fill(&key(id), &pool).await.expect("fill");
            times.push(started.elapsed());
        }
        report(name, &mut times);
        all.extend(times);
    }
    report("all", &mut all);
}

fn report(name: &str, times: &mut [Duration]) {
    if times.is_empty() {
        return;
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let at = |q: f64| ms(times[((times.len() as f64 * q) as usize).min(times.len() - 1)]);
    let mean = times.iter().map(|d| ms(*d)).sum::<f64>() / times.len() as f64;
    println!(
        "{name:<28} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
        at(0.5),
        at(0.9),
        at(0.99),
        ms(times[times.len() - 1]),
        mean
    );
}
