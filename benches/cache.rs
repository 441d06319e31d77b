//! Criterion benches: a cache hit through the router (no socket), rendering each body type from
//! rows, and gzipping a whole body as the catalog keeps it. `cargo bench --bench cache`; figures
//! in docs/benchmarks.md.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};

use atelier::cache::{CatalogSize, Key};
use atelier::config::ServeSettings;
use atelier::domain::ReviewOrder;
use atelier::http::App;
use atelier::pg::database::Database;
use atelier::pg::pool::Pool;
use atelier::pg::read::*;
use atelier::render::{self, Rendered};

fn product() -> ProductRow {
    ProductRow {
        id: 42,
        name: Some("Camo Onesie".into()),
        slogan: Some("Blend in to your crowd".into()),
        description: Some("The So Fatigues will wake you up and fit you in. This high energy camo will have you blending in to even the wildest surroundings.".into()),
        category: Some("Jackets".into()),
        default_price: Some("140.00".into()),
    }
}

fn features() -> Vec<FeatureRow> {
    (0..3)
        .map(|i| FeatureRow {
            feature: Some(format!("Feature {i}")),
            value: (i != 1).then(|| "Canvas".into()),
        })
        .collect()
}

fn styles() -> (Vec<StyleRow>, Vec<PhotoRow>, Vec<SkuRow>) {
    let url = "https://images.unsplash.com/photo-1501088430049-71c79fa3283e?ixlib=rb-1.2.1&ixid=eyJhcHBfaWQiOjEyMDd9&auto=format&fit=crop&w=668&q=80";
    let styles = (1..=4)
        .map(|id| StyleRow {
            id,
            name: Some("Forest Green & Black".into()),
            original_price: Some("140.00".into()),
            sale_price: (id % 2 == 0).then(|| "100.00".into()),
            default: id == 1,
        })
        .collect();
    let photos = (1..=4)
        .flat_map(|s| {
            (0..3).map(move |_| PhotoRow {
                style_id: s,
                url: Some(url.into()),
                thumbnail_url: Some(url.into()),
            })
        })
        .collect();
    let skus = (1..=4)
        .flat_map(|s| {
            (0..6).map(move |i| SkuRow {
                style_id: s,
                id: s * 10 + i,
                size: Some("XL".into()),
                quantity: 8,
            })
        })
        .collect();
    (styles, photos, skus)
}

fn reviews(n: i64) -> (Vec<ReviewRow>, Vec<PhotoUrlRow>) {
    let reviews = (1..=n)
        .map(|id| ReviewRow {
            id,
            rating: (id % 5 + 1) as i16,
            summary: Some("I am liking these glasses".into()),
            recommend: id % 3 != 0,
            response: (id % 4 == 0).then(|| "Glad you're enjoying the product!".into()),
            body: Some(
                "They are very dark.  But that's good because I'm in very sunny spots, \"really\"."
                    .into(),
            ),
            date_ms: 1_609_325_851_021 - id * 1000,
            reviewer_name: Some("bigbrotherbenjamin".into()),
            helpfulness: (100 - id) as i32,
        })
        .collect();
    let photos = (1..=n / 2)
        .map(|id| PhotoUrlRow {
            owner_id: id * 2,
            id,
            url: Some("https://images.unsplash.com/photo-review?w=975&q=80".into()),
        })
        .collect();
    (reviews, photos)
}

fn questions(n: i64) -> (Vec<QuestionRow>, Vec<AnswerRow>, Vec<PhotoUrlRow>) {
    let questions = (1..=n)
        .map(|id| QuestionRow {
            id,
            body: Some("Does this product run big or small?".into()),
            date_ms: 1_608_535_907_083,
            asker_name: Some("jbilas".into()),
            helpfulness: 8,
        })
        .collect();
    let answers: Vec<AnswerRow> = (1..=n * 2)
        .map(|id| AnswerRow {
            question_id: (id + 1) / 2,
            id,
            body: Some("Something pretty soft but I can't be sure".into()),
            date_ms: 1_599_990_560_555,
            answerer_name: Some("sillyguy".into()),
            helpfulness: 5,
        })
        .collect();
    let photos = (1..=n)
        .map(|id| PhotoUrlRow {
            owner_id: id,
            id,
            url: Some("https://images.unsplash.com/photo-answer?w=1650".into()),
        })
        .collect();
    (questions, answers, photos)
}

fn meta() -> (Vec<MetaCountRow>, Vec<CharacteristicRow>) {
    let counts = (1..=5)
        .flat_map(|rating| {
            [false, true].map(|recommend| MetaCountRow {
                rating,
                recommend,
                count: 7,
            })
        })
        .collect();
    let chars = ["Fit", "Length", "Comfort", "Quality"]
        .iter()
        .enumerate()
        .map(|(i, n)| CharacteristicRow {
            id: i as i64,
            name: Some((*n).into()),
            mean: Some("3.5000000000000000".into()),
        })
        .collect();
    (counts, chars)
}

fn render_bodies(c: &mut Criterion) {
    let mut g = c.benchmark_group("render");
    let p = product();
    let f = features();
    g.bench_function("product", |b| {
        b.iter(|| render::products::render_product(black_box(&p), black_box(&f)))
    });
    let (s, ph, sk) = styles();
    g.bench_function("styles (4 styles, 12 photos, 24 skus)", |b| {
        b.iter(|| {
            render::products::render_styles(42, black_box(&s), black_box(&ph), black_box(&sk))
        })
    });
    let ids: Vec<i64> = (1..=8).collect();
    g.bench_function("related (8)", |b| {
        b.iter(|| render::products::render_related(black_box(&ids)))
    });
    let (r, rp) = reviews(50);
    g.bench_function("reviews (50)", |b| {
        b.iter(|| render::reviews::render_review_list(black_box(&r), black_box(&rp)))
    });
    let (counts, chars) = meta();
    g.bench_function("reviews meta", |b| {
        b.iter(|| render::reviews::render_meta(42, black_box(&counts), black_box(&chars)))
    });
    let (q, a, qp) = questions(20);
    g.bench_function("questions (20, 40 answers)", |b| {
        b.iter(|| {
            render::qa::render_question_list(
                black_box(&q),
                black_box(&a),
                &render::PhotosByOwner::new(black_box(&qp)),
            )
        })
    });
    g.bench_function("answers (40)", |b| {
        b.iter(|| {
            render::qa::render_answer_list(
                black_box(&a),
                &render::PhotosByOwner::new(black_box(&qp)),
            )
        })
    });
    g.finish();
}

/// A helpful vote's refresh of a product with 4,000 reviews, lists packed in runs against a
/// dictionary as the catalog keeps them: the two orders rebuilt from the held list's items
/// (`revoted_review_orders`), against rendering them from rows (a whole read's refresh, the
/// read itself not counted).
fn revote(c: &mut Criterion) {
    use atelier::render::compress::{self, DictionaryKind};
    use atelier::render::Compaction;
    let (mut rows, photos) = reviews(4_000);
    rows.sort_by_key(|r| std::cmp::Reverse((r.helpfulness, r.date_ms, r.id)));
    let dates_us: Vec<i64> = rows.iter().map(|r| r.date_ms * 1000).collect();
    if compress::dictionary(DictionaryKind::Lists).is_none() {
        let held = render::reviews::render_review_list(&rows, &photos);
        let items = held.own_items().expect("a plain list");
        let samples: Vec<&[u8]> = items.chunks(2_000).collect();
        let dictionary = compress::train_dictionary(&samples, 64 * 1024).expect("a dictionary");
        compress::install_dictionary(DictionaryKind::Lists, &dictionary).expect("installed");
    }
    let (held, _) =
        render::reviews::render_review_orders(42, &rows, &dates_us, &photos, Compaction::All, None);
    // Votes move the review in the middle up by one place.
    let mut keys: Vec<SortKeyRow> = rows
        .iter()
        .zip(&dates_us)
        .map(|(r, &d)| SortKeyRow {
            id: r.id,
            helpfulness: r.helpfulness,
            date: atelier::pg::read::Timestamp::from_micros(d),
        })
        .collect();
    keys[2_000].helpfulness += 2;
    keys.sort_by_key(|k| std::cmp::Reverse((k.helpfulness, k.date.micros(), k.id)));
    let mut g = c.benchmark_group("a vote's refresh, 4,000 reviews");
    g.sample_size(20);
    g.bench_function("revoted from the held items", |b| {
        b.iter(|| {
            render::reviews::revoted_review_orders(42, &held, black_box(&keys), Compaction::All)
                .expect("only a vote changed")
        })
    });
    g.bench_function("rendered from rows", |b| {
        b.iter(|| {
            render::reviews::render_review_orders(
                42,
                black_box(&rows),
                &dates_us,
                &photos,
                Compaction::All,
                Some(&held),
            )
        })
    });
    g.finish();
}

fn cache_hit(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // No database behind it: a hit must not need one.
    let mut config = tokio_postgres::Config::new();
    config.host_path("/nonexistent").user("none").dbname("none");
    let app = || {
        Arc::new(App::new(
            ServeSettings::default(),
            Database::primary_only(Pool::new(config.clone(), 1, Duration::from_millis(10))),
        ))
    };
    let (on_demand, catalog) = (app(), app());
    let p = product();
    let product = Rendered::Json(render::products::render_product(&p, &features()));
    let (r, rp) = reviews(200);
    let helpful = render::SharedList::new(render::reviews::render_review_list(&r, &rp));
    let newest =
        render::ItemList::reordered(&helpful, (0..200).rev().collect()).expect("a permutation");
    let entries = [
        (Key::Product(42), product),
        (
            Key::Reviews {
                product_id: 42,
                order: ReviewOrder::Helpful,
            },
            Rendered::List(helpful),
        ),
        (
            Key::Reviews {
                product_id: 42,
                order: ReviewOrder::Newest,
            },
            Rendered::List(render::SharedList::new(newest)),
        ),
    ];
    for (key, body) in entries.clone() {
        on_demand.cache.insert(key, body);
    }
    catalog.cache.open_catalog(CatalogSize {
        products: 100,
        max_product_id: 100,
        ..Default::default()
    });
    for (key, body) in entries {
        assert!(catalog.cache.precompute(key, body));
    }

    let mut g = c.benchmark_group("cache hit through the router");
    for (store, app) in [("on demand", &on_demand), ("catalog", &catalog)] {
        for path in [
            "/products/42",
            "/reviews?product_id=42&page=3&count=5",
            "/reviews?product_id=42&page=3&count=5&sort=newest",
        ] {
            g.bench_function(format!("{store} {path}"), |b| {
                b.iter(|| {
                    let req = hyper::Request::get(path)
                        .body(http_body_util::Empty::<bytes::Bytes>::new())
                        .unwrap();
                    let response = runtime.block_on(app.handle(req));
                    assert_eq!(response.status(), 200);
                    black_box(response)
                })
            });
        }
    }
    g.finish();
}

/// A whole body gzipped as the catalog keeps it once its kind's shared code is trained
/// (`render::shared_codes`), against a whole member at libdeflate's level 1 (as before the
/// code, and for a kind without one) and level 6: bytes out are printed once per body, since
/// how bodies are gzipped trades the warm-up's time against the catalog's memory
/// (docs/benchmarks.md, Warm-up and Shared codes).
fn gzip_levels(c: &mut Criterion) {
    use libdeflater::{CompressionLvl, Compressor};
    let (s, ph, sk) = styles();
    let (counts, chars) = meta();
    let bodies = [
        (
            "product",
            render::products::render_product(&product(), &features()),
        ),
        (
            "styles (4 styles, 12 photos, 24 skus)",
            render::products::render_styles(42, &s, &ph, &sk),
        ),
        (
            "reviews meta",
            render::reviews::render_meta(42, &counts, &chars),
        ),
    ];
    let mut g = c.benchmark_group("gzip a whole body");
    let mut level6 = Compressor::new(CompressionLvl::new(6).expect("a level libdeflate has"));
    let mut out = vec![0u8; 1 << 16];
    // A shared code trained on these bodies themselves: the bytes it keeps are a best case,
    // its time is not.
    let mut counts = render::shared_codes::SymbolCounts::default();
    for (_, plain) in &bodies {
        counts.add(plain);
    }
    let code = render::shared_codes::SharedCodes::from_lengths(&counts.lengths()).expect("usable");
    for (name, plain) in &bodies {
        let kept = render::compress::gzip(plain).map_or(plain.len(), |gz| gz.len());
        let before = level6.gzip_compress(plain, &mut out).expect("fits");
        println!(
            "{name}: {} bytes plain, {kept} as a whole member (level 1), {before} at level 6, {} \
             in a shared code (behind a {}-byte prefix)",
            plain.len(),
            code.encode(plain).len(),
            code.prefix().len()
        );
        g.bench_function(format!("{name}, level 1 (a whole member)"), |b| {
            b.iter(|| render::compress::gzip(black_box(plain)))
        });
        g.bench_function(format!("{name}, shared code (kept)"), |b| {
            b.iter(|| code.encode(black_box(plain)))
        });
        g.bench_function(format!("{name}, level 6 (before)"), |b| {
            b.iter(|| {
                level6
                    .gzip_compress(black_box(plain), &mut out)
                    .expect("fits")
            })
        });
    }
    g.finish();
}

criterion_group!(benches, render_bodies, cache_hit, revote, gzip_levels);
criterion_main!(benches);
