//! The warm-up renders the catalog from one scan before the instance reports ready: every
//! body it puts in the cache is what a fill renders, before and after writes of every kind; a
//! write made while it scans is not lost; and a budget smaller than the catalog is kept.

mod common;

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use atelier::cache::Key;
use atelier::config::ServeSettings;
use atelier::pg::pool::Pool;
use atelier::pg::scan::{CatalogScan, Snapshot};
use atelier::render::Rendered;
use common::proxy::Proxy;
use common::{every_entry_is_fresh, get, post_json, put, ready, TempDir};

fn settings() -> ServeSettings {
    ServeSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        pool_size: 2,
        sweep_period: None,
        // Only the dense pass below trains dictionaries, on purpose.
        dictionary_sample_bytes: 0,
        ..Default::default()
    }
}

fn generated(label: &str, scale: f64) -> TempDir {
    common::generated(label, scale, 5)
}

#[tokio::test]
async fn every_warmed_body_is_what_a_fill_renders_before_and_after_writes() {
    let generated = generated("warm-generated", 0.0005);
    // Dense packs whole bodies against a dictionary too, trained here on the first 64 KB.
    let dense = ServeSettings {
        compaction: atelier::render::Compaction::Dense,
        dictionary_sample_bytes: 64 << 10,
        ..settings()
    };
    for (dir, settings) in [
        (common::sample_dir(), settings()),
        (generated.0.clone(), settings()),
        (generated.0.clone(), dense),
    ] {
        let dense = settings.compaction == atelier::render::Compaction::Dense;
        let db = common::loaded_database(&dir).await;
        let server = atelier::http::start(settings, db.config.clone())
            .await
            .unwrap();
        let a = server.addr;
        ready(a).await;
        let client = db.client().await;
        let count = |sql: &'static str| {
            let client = &client;
            async move { client.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) as usize }
        };
        let products = count("SELECT count(*) FROM products").await;
        let questions = count("SELECT count(*) FROM questions").await;
        let keys = server.app.cache.keys();
        let of = |f: fn(&Key) -> bool| keys.iter().filter(|k| f(k)).count();
        assert_eq!(of(|k| matches!(k, Key::Product(_))), products, "{dir:?}");
        assert_eq!(of(|k| matches!(k, Key::Styles(_))), products);
        assert_eq!(of(|k| matches!(k, Key::Reviews { .. })), 2 * products);
        assert_eq!(of(|k| matches!(k, Key::Questions(_))), products);
        assert_eq!(of(|k| matches!(k, Key::Answers(_))), questions);
        let pages = of(|k| matches!(k, Key::ProductsPage { .. }));
        assert!(pages >= 1);
        assert_eq!(
            server.app.cache.stats().catalog_entries as usize,
            keys.len() - pages,
            "every warmed body but the products pages is in the lock-free catalog"
        );
        let pool = Pool::new(db.config.clone(), 2, Duration::from_secs(5));
        every_entry_is_fresh(&server, &pool).await;
        if dense {
            let packed = keys
                .iter()
                .filter(|k| matches!(server.app.cache.peek(k), Some(Rendered::Packed(_))))
                .count();
            assert!(packed > products, "dense packs whole bodies: {packed}");
        }

        // Every GET of a warmed catalog is a hit.
        let misses = server.app.cache.stats().misses;
        for id in [1, products as i64] {
            for path in [
                format!("/products/{id}"),
                format!("/products/{id}/styles"),
                format!("/products/{id}/related"),
                format!("/reviews?product_id={id}&sort=newest"),
                format!("/reviews/meta?product_id={id}"),
                format!("/qa/questions?product_id={id}"),
                "/products".to_owned(),
            ] {
                assert_eq!(get(a, &path).await.status, 200, "{path}");
            }
        }
        assert_eq!(
            server.app.cache.stats().misses,
            misses,
            "no miss after the warm-up"
        );

        // A burst of writes of every kind, through the API and with SQL.
        let review = r#"{"product_id":1,"rating":5,"summary":"s","body":"b","recommend":true,
            "name":"n","email":"n@example.com","photos":["https://example.com/p.jpg"],"characteristics":{}}"#;
        assert_eq!(post_json(a, "/reviews", review).await.status, 201);
        let question = r#"{"product_id":1,"body":"q?","name":"n","email":"n@example.com"}"#;
        assert_eq!(post_json(a, "/qa/questions", question).await.status, 201);
        let answer = r#"{"body":"a","name":"n","email":"n@example.com","photos":[]}"#;
        assert_eq!(
            post_json(a, "/qa/questions/1/answers", answer).await.status,
            201
        );
        for path in [
            "/reviews/1/helpful",
            "/reviews/2/report",
            "/qa/questions/1/helpful",
            "/qa/questions/2/report",
            "/qa/answers/1/helpful",
            "/qa/answers/2/report",
        ] {
            assert_eq!(put(a, path).await.status, 204, "{path}");
        }
        client
            .batch_execute(
                "UPDATE products SET name = name || '!' WHERE id = 1;
                 UPDATE styles SET name = name || '!' WHERE product_id = 1;
                 DELETE FROM related WHERE product_id = 1;
                 UPDATE features SET value = 'x' WHERE product_id = 1;",
            )
            .await
            .unwrap();
        let feed = server.app.feed_status().unwrap();
        assert!(feed.wait_for_fresh_read(Duration::from_secs(10)).await);
        let deadline = Instant::now() + Duration::from_secs(10);
        while server.app.cache.refreshes_pending() > 0 {
            assert!(Instant::now() < deadline, "refreshes never finished");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let checked = every_entry_is_fresh(&server, &pool).await.len();
        assert!(checked > 0);
    }
}

#[tokio::test]
async fn a_write_made_while_the_warm_up_scans_is_not_lost() {
    let db = common::loaded_database(&common::sample_dir()).await;
    // The scan's replies crawl; the pool's and the feed's do not.
    let proxy = Proxy::start(&db.config).await;
    proxy.delay_replies(Duration::from_millis(150));
    let mut s = settings();
    s.scan_database = Some(proxy.config(&db.config));
    let server = atelier::http::start(s, db.config.clone()).await.unwrap();
    let a = server.addr;
    let warmup = &server.app.warmup;
    let deadline = Instant::now() + Duration::from_secs(10);
    // The scan has taken its snapshot once it has counted the products.
    while warmup.products_total.load(Relaxed) == 0 {
        assert!(Instant::now() < deadline, "the warm-up never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(get(a, "/readyz").await.body, "warming up the catalog");
    db.client()
        .await
        .batch_execute(
            "UPDATE products SET name = 'Renamed While Warming' WHERE id = 6;
             UPDATE reviews SET helpfulness = 99 WHERE id = 6;",
        )
        .await
        .unwrap();
    assert!(
        warmup.running.load(Relaxed),
        "the write landed during the scan"
    );
    ready(a).await;
    assert!(get(a, "/products/6")
        .await
        .body
        .contains("Renamed While Warming"));
    assert!(get(a, "/reviews?product_id=3")
        .await
        .body
        .contains(r#""helpfulness":99"#));
}

#[tokio::test]
async fn a_budget_smaller_than_the_catalog_is_kept_and_the_rest_served_on_demand() {
    let dir = generated("warm-budget", 0.0005);
    let db = common::loaded_database(dir.path()).await;
    let mut s = settings();
    s.cache_bytes = 256 << 10;
    let server = atelier::http::start(s, db.config.clone()).await.unwrap();
    let a = server.addr;
    ready(a).await;
    let stats = server.app.cache.stats();
    assert!(
        stats.bytes <= stats.capacity_bytes,
        "{} bytes in a {}-byte cache",
        stats.bytes,
        stats.capacity_bytes
    );
    let warmup = &server.app.warmup;
    let (done, total) = (
        warmup.products_done.load(Relaxed),
        warmup.products_total.load(Relaxed),
    );
    assert!(
        done > 0 && done < total,
        "warmed {done} of {total} products"
    );
    // Products past the budget are filled on their first request, into the on-demand cache:
    // what the warm-up precomputed stays, however much is filled on demand.
    let catalog = server.app.cache.stats().catalog_entries;
    assert!(catalog > 0);
    for id in done + 1..=total {
        for path in [
            format!("/products/{id}"),
            format!("/products/{id}/styles"),
            format!("/reviews?product_id={id}"),
            format!("/qa/questions?product_id={id}"),
        ] {
            assert_eq!(get(a, &path).await.status, 200, "{path}");
        }
    }
    let after = server.app.cache.stats();
    assert_eq!(
        after.catalog_entries, catalog,
        "the catalog is never evicted"
    );
    assert!(after.bytes <= after.capacity_bytes);
    assert!(after.misses > 0);
    assert!(get(a, "/metrics")
        .await
        .body
        .contains("\natelier_warmup_done 1\n"));
}

/// The scan's reads hold their tables' locks on three connections. A bulk load (or a
/// migration) whose exclusive lock queues between two of them makes a cycle PostgreSQL cannot
/// see: the read still to open waits for the load, the load for a table another connection
/// holds, and that connection for the read. The scan gives up its locks instead, and the
/// warm-up starts over once the load is done.
#[tokio::test]
async fn a_lock_queued_between_the_scans_reads_holds_up_neither_the_warm_up_nor_the_locker() {
    let db = common::loaded_database(&common::sample_dir()).await;
    // Features are read on the scan's second connection; its first holds products from the
    // statement that takes the snapshot on.
    let locker = db.client().await;
    locker
        .batch_execute(
            "SET statement_timeout = '20s';
             BEGIN;
             LOCK TABLE features IN ACCESS EXCLUSIVE MODE",
        )
        .await
        .unwrap();
    let server = atelier::http::start(settings(), db.config.clone())
        .await
        .unwrap();
    let watcher = db.client().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let waiting: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                  WHERE datname = current_database() AND wait_event_type = 'Lock'
                    AND query LIKE 'DECLARE scan%'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "no read of the scan waited");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    locker
        .batch_execute("LOCK TABLE products IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("the scan let go of products");
    locker.batch_execute("COMMIT").await.unwrap();
    ready(server.addr).await;
    assert_eq!(get(server.addr, "/products/1").await.status, 200);
}

#[tokio::test]
async fn every_connection_of_the_scan_reads_the_snapshot_taken_first() {
    let db = common::loaded_database(&common::sample_dir()).await;
    let snapshot = Snapshot::take(&db.config, None).await.unwrap();
    // Features are read on the scan's second connection, styles on its third, products on
    // the first (the one that took the snapshot).
    db.client()
        .await
        .batch_execute(
            "UPDATE products SET name = 'Changed After' WHERE id = 1;
             UPDATE features SET value = 'Changed After' WHERE product_id = 1;
             UPDATE styles SET name = 'Changed After' WHERE product_id = 1;",
        )
        .await
        .unwrap();
    let mut scan = CatalogScan::open(snapshot, &db.config).await.unwrap();
    let rows = scan.next().await.unwrap().expect("product 1");
    assert_eq!(rows.product.id, 1);
    assert_eq!(rows.product.name.as_deref(), Some("Camo Onesie"));
    assert!(!rows.features.is_empty() && !rows.styles.is_empty());
    assert!(rows
        .features
        .iter()
        .all(|f| f.value.as_deref() != Some("Changed After")));
    assert!(rows
        .styles
        .iter()
        .all(|s| s.name.as_deref() != Some("Changed After")));
}

/// A characteristic's mean counts every visible review that rated it, whichever product the
/// review belongs to (a loaded set may pair a review with another product's characteristic;
/// the API never does): the warm-up's scan, a fill and the refreshes after a write all agree,
/// and a write that changes such a mean reaches the characteristic's product.
#[tokio::test]
async fn a_rating_of_another_products_characteristic_counts_where_the_characteristic_is() {
    let db = common::loaded_database(&common::sample_dir()).await;
    let client = db.client().await;
    // A characteristic, and two visible reviews of some other product.
    let row = client
        .query_one(
            "SELECT c.id, c.product_id, c.name, r.product_id,
                    array_agg(r.id ORDER BY r.id)
               FROM characteristics c JOIN reviews r ON r.product_id <> c.product_id
              WHERE NOT r.reported
              GROUP BY c.id, c.product_id, c.name, r.product_id
             HAVING count(*) >= 2
              ORDER BY c.id, r.product_id LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    let (characteristic, product, name): (i64, i64, String) = (row.get(0), row.get(1), row.get(2));
    let reviews: Vec<i64> = row.get(4);
    client
        .execute(
            "INSERT INTO characteristic_reviews (characteristic_id, review_id, value)
             VALUES ($1, $2, 1)",
            &[&characteristic, &reviews[0]],
        )
        .await
        .unwrap();
    // The mean as the contract words it, computed here without the server's statements.
    let expected = || {
        let client = &client;
        async move {
            let values: Vec<i16> = client
                .query(
                    "SELECT cr.value FROM characteristic_reviews cr, reviews r
                      WHERE cr.characteristic_id = $1 AND r.id = cr.review_id AND NOT r.reported",
                    &[&characteristic],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            assert!(!values.is_empty());
            // Sixteen places, rounded half up, as PostgreSQL's numeric avg() renders.
            let (sum, n) = (
                values.iter().map(|&v| i128::from(v)).sum::<i128>(),
                values.len() as i128,
            );
            let scaled = (sum * 10i128.pow(16) * 2 + n) / (2 * n);
            format!(
                "{}.{:016}",
                scaled / 10i128.pow(16),
                scaled % 10i128.pow(16)
            )
        }
    };
    let server = atelier::http::start(settings(), db.config.clone())
        .await
        .unwrap();
    let a = server.addr;
    ready(a).await;
    let pool = Pool::new(db.config.clone(), 2, Duration::from_secs(5));
    let name = &name;
    let served = || async move {
        let body = get(a, &format!("/reviews/meta?product_id={product}"))
            .await
            .body;
        let meta: serde_json::Value = serde_json::from_str(&body).unwrap();
        meta["characteristics"][&name]["value"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(served().await, expected().await, "after the warm-up");
    every_entry_is_fresh(&server, &pool).await;

    // Another such rating, written with SQL: the change log names the characteristic's
    // product, and its meta is refreshed.
    client
        .execute(
            "INSERT INTO characteristic_reviews (characteristic_id, review_id, value)
             VALUES ($1, $2, 5)",
            &[&characteristic, &reviews[1]],
        )
        .await
        .unwrap();
    common::settled(&server).await;
    assert_eq!(
        served().await,
        expected().await,
        "after a rating written with SQL"
    );
    every_entry_is_fresh(&server, &pool).await;

    // Reporting the review (of the other product) takes its rating out of this mean.
    let before = served().await;
    assert_eq!(
        put(a, &format!("/reviews/{}/report", reviews[1]))
            .await
            .status,
        204
    );
    common::settled(&server).await;
    assert_eq!(served().await, expected().await, "after a report");
    assert_ne!(served().await, before, "the report changed the mean");
    every_entry_is_fresh(&server, &pool).await;

    // And with SQL: the mark taken back, a rating changed, a rating deleted.
    for (sql, what) in [
        ("UPDATE reviews SET reported = false WHERE id = $1", "un-reported"),
        (
            "UPDATE characteristic_reviews SET value = 4 WHERE review_id = $1 AND characteristic_id = $2",
            "a rating changed",
        ),
        (
            "DELETE FROM characteristic_reviews WHERE review_id = $1 AND characteristic_id = $2",
            "a rating deleted",
        ),
    ] {
        let before = served().await;
        let args: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = if sql.contains("$2") {
            vec![&reviews[1], &characteristic]
        } else {
            vec![&reviews[1]]
        };
        assert_eq!(client.execute(sql, &args).await.unwrap(), 1, "{what}");
        common::settled(&server).await;
        assert_eq!(served().await, expected().await, "{what}");
        assert_ne!(served().await, before, "{what} changed the mean");
        every_entry_is_fresh(&server, &pool).await;
    }
}
