//! Gzip bodies written in codes shared by their kind: a warm-up trains one code per kind on the
//! first bodies of that kind (products, styles, reviews meta, and the lead pages of reviews
//! and questions), and writes every later body of that kind in it. Sent behind the code's
//! prefix, each is one gzip member that the system's `gzip` decodes to a fresh render's bytes,
//! through the fast lane and through hyper, before and after a write refreshes it.
//!
//! A process has one code per kind, for good: this binary's tests are the only ones that
//! train them.

mod common;

use std::time::Duration;

use atelier::cache::{fill, Key};
use atelier::config::ServeSettings;
use atelier::dataset::generate::{generate, GenerateOptions};
use atelier::domain::ReviewOrder;
use atelier::pg::pool::Pool;
use atelier::render::shared_codes::{self, CodesKind};
use atelier::render::{Compaction, Rendered};
use common::{eventually, get, put, send_raw, Reply, TempDir};

async fn request(addr: std::net::SocketAddr, method: &str, path: &str, extra: &str) -> Reply {
    let raw = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n{extra}Connection: close\r\n\r\n");
    send_raw(addr, raw.as_bytes()).await
}

/// The bytes a fresh render gives `key` as `path` shows it: the whole body, or page 1 of 5 of
/// the list.
async fn fresh(key: &Key, pool: &Pool) -> Vec<u8> {
    match fill(key, pool).await.unwrap() {
        Rendered::List(list) => key.frame().unwrap().page(&list, 1, 5).to_vec(),
        body => body.plain().unwrap().to_vec(),
    }
}

/// Asserts that `key` is kept written in its kind's shared code and that `path` serves it: to
/// a client that takes gzip, through the fast lane and through hyper (which answers a request
/// with a validator), the same gzip member, which `gzip -d` turns into a fresh render's bytes
/// and whose length HEAD gives; to one that does not, those bytes.
async fn assert_served_in_its_code(
    server: &atelier::http::Running,
    pool: &Pool,
    key: &Key,
    path: &str,
) {
    let kind = key.codes_kind().expect("a kind with a code");
    let codes = match server.app.cache.peek(key) {
        Some(Rendered::Gzip(g)) => g.codes,
        Some(Rendered::List(list)) => list.kept_lead_page().and_then(|lead| lead.codes),
        other => panic!("{key:?} not kept gzip: {other:?}"),
    };
    assert_eq!(codes, Some(kind), "{key:?}");
    let prefix = shared_codes::prefix(Some(kind)).unwrap();
    let fresh = fresh(key, pool).await;
    let a = server.addr;
    let lane = request(a, "GET", path, "Accept-Encoding: gzip\r\n").await;
    let hyper = request(
        a,
        "GET",
        path,
        "Accept-Encoding: gzip\r\nIf-None-Match: \"another\"\r\n",
    )
    .await;
    for r in [&lane, &hyper] {
        assert_eq!(
            (r.status, r.header("content-encoding")),
            (200, Some("gzip")),
            "{path}"
        );
        assert!(r.raw_body.starts_with(prefix), "{path}: behind its prefix");
        assert_eq!(r.body.as_bytes(), &fresh[..], "gzip -d gives {path}");
    }
    assert_eq!(lane.raw_body, hyper.raw_body, "{path}");
    // Its tag names the code too, and validates itself only.
    let plain_tag = request(a, "HEAD", path, "").await;
    let plain_tag = plain_tag.header("etag").unwrap();
    let digest = u64::from_str_radix(&plain_tag[1..17], 16).unwrap();
    let fingerprint = shared_codes::codes(kind).unwrap().fingerprint();
    let tag = format!("\"{:016x}-gzip\"", digest ^ fingerprint);
    for r in [&lane, &hyper] {
        assert_eq!(r.header("etag"), Some(tag.as_str()), "{path}");
    }
    let validated = format!("Accept-Encoding: gzip\r\nIf-None-Match: {tag}\r\n");
    assert_eq!(request(a, "GET", path, &validated).await.status, 304);
    let member_tag = format!("If-None-Match: {}-gzip\"\r\n", &plain_tag[..17]);
    let whole = request(
        a,
        "GET",
        path,
        &format!("Accept-Encoding: gzip\r\n{member_tag}"),
    )
    .await;
    assert_eq!(
        whole.status, 200,
        "{path}: a whole member's tag is another's"
    );
    let head = request(a, "HEAD", path, "Accept-Encoding: gzip\r\n").await;
    assert_eq!(
        head.header("content-length"),
        Some(lane.raw_body.len().to_string().as_str()),
        "{path}"
    );
    let plain = request(a, "GET", path, "").await;
    assert_eq!(plain.header("content-encoding"), None, "{path}");
    assert_eq!(plain.raw_body, fresh, "inflated for {path}");
}

/// The product with visible reviews and questions and the highest id: rendered after the
/// warm-up's first products, which the codes are trained on.
async fn last_product_with_reviews_and_questions(db: &common::TestDb) -> i64 {
    db.client()
        .await
        .query_one(
            "SELECT max(r.product_id) FROM reviews r JOIN questions q USING (product_id) \
             WHERE NOT r.reported AND NOT q.reported",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn gzip_bodies_are_written_in_shared_codes_trained_on_the_first_ones() {
    let dir = TempDir::new("shared-codes");
    generate(&GenerateOptions {
        scale: 0.0005,
        seed: 11,
        out: dir.path().into(),
        quiet: true,
    })
    .expect("generate");
    let db = common::loaded_database(dir.path()).await;
    let settings = ServeSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        pool_size: 2,
        sweep_period: None,
        compaction: Compaction::All,
        // Codes trained on the first 16 KiB of each kind: a few dozen products.
        dictionary_sample_bytes: 16 << 10,
        ..Default::default()
    };
    let server = atelier::http::start(settings, db.config.clone())
        .await
        .unwrap();
    eventually(server.addr, "/readyz", |b| b == "ready").await;
    let metrics = get(server.addr, "/metrics").await.body;
    for kind in CodesKind::ALL {
        let prefix = shared_codes::codes(kind).expect("trained").prefix().len();
        let gauge = format!(
            "atelier_shared_code_prefix_bytes{{kind=\"{}\"}} {prefix}\n",
            kind.name()
        );
        assert!(
            prefix > 10 && metrics.contains(&gauge),
            "{gauge}: {metrics}"
        );
    }
    let pool = Pool::new(db.config.clone(), 2, Duration::from_secs(5));
    // Trained on the first products in id order: their first 16 KiB of each kind.
    let first = db.ids("SELECT id FROM products ORDER BY id").await;
    for (kind, key) in [
        (CodesKind::Product, Key::Product as fn(i64) -> Key),
        (CodesKind::Meta, Key::ReviewsMeta),
    ] {
        let mut counts = shared_codes::SymbolCounts::default();
        let mut sampled = 0;
        for &id in &first {
            if sampled >= 16 << 10 {
                break;
            }
            let plain = fresh(&key(id), &pool).await;
            counts.add(&plain);
            sampled += plain.len();
        }
        assert_eq!(
            shared_codes::codes(kind).unwrap().lengths(),
            counts.lengths(),
            "{kind:?} trained on the first products"
        );
    }
    let id = last_product_with_reviews_and_questions(&db).await;
    let helpful = Key::Reviews {
        product_id: id,
        order: ReviewOrder::Helpful,
    };
    let reviews = format!("/reviews?product_id={id}&count=5");
    let meta = format!("/reviews/meta?product_id={id}");
    let keys = [
        (Key::Product(id), format!("/products/{id}")),
        (Key::Styles(id), format!("/products/{id}/styles")),
        (Key::ReviewsMeta(id), meta.clone()),
        (helpful.clone(), reviews.clone()),
        (
            Key::Questions(id),
            format!("/qa/questions?product_id={id}&count=5"),
        ),
    ];
    for (key, path) in &keys {
        assert_served_in_its_code(&server, &pool, key, path).await;
    }

    // A write refreshes the lead page and the meta body in their codes.
    let review = db.first_visible_review(id).await;
    assert_eq!(
        put(server.addr, &format!("/reviews/{review}/helpful"))
            .await
            .status,
        204
    );
    db.client()
        .await
        .execute(
            "UPDATE reviews SET rating = CASE WHEN rating = 5 THEN 1 ELSE 5 END WHERE id = $1",
            &[&review],
        )
        .await
        .unwrap();
    let expected = fresh(&Key::ReviewsMeta(id), &pool).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while get(server.addr, &meta).await.raw_body != expected
        || server.app.cache.refreshes_pending() > 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the feed's refresh never came"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_served_in_its_code(&server, &pool, &Key::ReviewsMeta(id), &meta).await;
    assert_served_in_its_code(&server, &pool, &helpful, &reviews).await;
}
