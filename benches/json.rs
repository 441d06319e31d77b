//! Request-body parsing: serde_json against simd-json, on a typical review body and on one
//! near the 64 KiB limit. `cargo bench --features simd-json --bench json`; the figures and the
//! decision are in docs/benchmarks.md.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};

fn review_body(body_len: usize) -> Vec<u8> {
    format!(
        r#"{{"product_id":40344,"rating":5,"summary":"Best purchase this year","body":"{}","recommend":true,"name":"jackson11","email":"jackson11@email.com","photos":["https://images.unsplash.com/photo-1560570803-7474c0f9af99?ixlib=rb-1.2.1&auto=format&fit=crop&w=975&q=80"],"characteristics":{{"135219":4,"135220":3,"135221":5,"135222":4}}}}"#,
        "Really comfortable, and the fabric holds up. ".repeat(body_len / 45 + 1)
    )
    .into_bytes()
}

fn parse(c: &mut Criterion) {
    for (name, body) in [
        ("typical review (600 B)", review_body(300)),
        ("large review (60 KB)", review_body(60_000)),
    ] {
        let mut g = c.benchmark_group(name);
        // Validation refuses bodies over 1,000 characters, so only the small one is valid.
        g.bench_function("serde_json -> Value + validation", |b| {
            b.iter(|| atelier::http::body::review(black_box(&body)))
        });
        g.bench_function("serde_json -> Value", |b| {
            b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(&body)).unwrap())
        });
        g.bench_function("simd_json -> serde_json::Value (incl. copy)", |b| {
            b.iter(|| {
                let mut buf = body.clone();
                simd_json::serde::from_slice::<serde_json::Value>(black_box(&mut buf)).unwrap()
            })
        });
        g.bench_function("simd_json -> BorrowedValue (incl. copy)", |b| {
            b.iter(|| {
                let mut buf = body.clone();
                let v = simd_json::to_borrowed_value(black_box(&mut buf)).unwrap();
                black_box(&v);
            })
        });
        g.finish();
    }
}

criterion_group!(benches, parse);
criterion_main!(benches);
