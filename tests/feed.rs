//! The change feed against real PostgreSQL servers: two instances on one database, a feed
//! connection killed while writes go on, and the database stopped and restarted under load
//! and in the middle of a page sent in runs.

mod common;

use std::sync::atomic::Ordering::{Acquire, Relaxed};
use std::time::{Duration, Instant};

use atelier::cache::{fill, Key};
use atelier::config::ServeSettings;
use atelier::pg::cluster::{ClusterOptions, PrivateCluster};
use atelier::pg::pool::Pool;
use atelier::render::Rendered;
use common::{count, eventually, get, post_json, put, server_with_data};

fn settings() -> ServeSettings {
    ServeSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        pool_size: 2,
        ..Default::default()
    }
}

async fn wait_connected(app: &atelier::http::App) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !app.feed_status().is_some_and(|f| f.is_connected()) {
        assert!(Instant::now() < deadline, "the change feed did not connect");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the feed has counted `n` lost connections.
async fn wait_reconnects(app: &atelier::http::App, n: u64) {
    let feed = app.feed_status().expect("a change feed");
    let deadline = Instant::now() + Duration::from_secs(30);
    while feed.reconnects.load(Acquire) < n {
        assert!(
            Instant::now() < deadline,
            "the feed never counted {n} lost connections"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

#[tokio::test]
async fn a_write_through_one_instance_reaches_the_other() {
    let (db, a) = server_with_data(&common::sample_dir()).await;
    let b = atelier::http::start(settings(), db.config.clone())
        .await
        .expect("second instance");
    wait_connected(&a.app).await;
    wait_connected(&b.app).await;

    let mut staleness = Vec::new();
    for i in 1..=40 {
        // Review 1 starts with 8 helpful votes; each PUT adds one.
        // Keep the entry cached on b, so only the feed can make it current.
        assert!(get(b.addr, "/reviews?product_id=1")
            .await
            .body
            .contains(r#""review_id":1,"rating":5"#));
        let votes = format!(r#""helpfulness":{},"photos""#, 8 + i);
        assert_eq!(put(a.addr, "/reviews/1/helpful").await.status, 204);
        let committed = Instant::now();
        // The writer reads its own write at once.
        assert!(get(a.addr, "/reviews?product_id=1")
            .await
            .body
            .contains(&votes));
        let body = eventually(b.addr, "/reviews?product_id=1", |b| b.contains(&votes)).await;
        assert!(body.contains(&votes), "instance b never served vote {i}");
        staleness.push(committed.elapsed());
    }
    staleness.sort();
    println!(
        "staleness from commit on instance a to instance b serving the new body, 40 writes: p50 {:?}, p99 {:?}, max {:?}",
        percentile(&staleness, 0.5),
        percentile(&staleness, 0.99),
        staleness[staleness.len() - 1]
    );
}

#[tokio::test]
async fn no_change_is_missed_across_feed_reconnects() {
    let (db, server) = server_with_data(&common::sample_dir()).await;
    let a = server.addr;
    wait_connected(&server.app).await;
    let before = server.app.feed_status().unwrap().reconnects.load(Relaxed);
    let client = db.client().await;
    let paths: Vec<String> = (1..=6).map(|id| format!("/products/{id}")).collect();
    for p in &paths {
        get(a, p).await;
    }
    for round in 0..30u64 {
        for id in 1..=6i64 {
            client
                .execute(
                    "UPDATE products SET slogan = $1 WHERE id = $2",
                    &[&format!("round {round}"), &id],
                )
                .await
                .unwrap();
        }
        if round % 10 == 3 {
            // Only once the feed has noticed the last kill and connected anew: a kill that
            // finds the previous, dying backend still listed would be no new reconnect.
            let kills = round / 10;
            wait_reconnects(&server.app, before + kills).await;
            wait_connected(&server.app).await;
            let killed = client
                .query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                      WHERE application_name = 'atelier change feed' AND datname = current_database()",
                    &[],
                )
                .await
                .unwrap();
            // The previous, dying backend may still be listed beside the new one.
            assert!(
                killed.iter().any(|r| r.get::<_, bool>(0)),
                "a feed connection to kill in round {round}"
            );
        }
        // Keep the entries cached, so a missed change would leave a stale body behind.
        for p in &paths {
            get(a, p).await;
        }
    }
    wait_reconnects(&server.app, before + 3).await;
    let pool = Pool::new(db.config.clone(), 1, Duration::from_secs(5));
    for (id, p) in (1..=6).zip(&paths) {
        let Rendered::Json(fresh) = fill(&Key::Product(id), &pool).await.unwrap() else {
            panic!("product {id}")
        };
        let fresh = String::from_utf8(fresh.to_vec()).unwrap();
        assert!(fresh.contains("round 29"));
        assert_eq!(
            eventually(a, p, |b| b == fresh).await,
            fresh,
            "{p} after reconnects"
        );
    }
}

#[tokio::test]
async fn the_database_stopped_and_restarted_under_reads() {
    let cluster = own_cluster().await;
    let mut s = settings();
    s.db_timeout = Duration::from_millis(500);
    s.feed_staleness = Duration::from_secs(1);
    // On demand, so that a body not yet asked for is a miss.
    s.precompute = atelier::config::Precompute::None;
    let server = atelier::http::start(s, cluster.config("atelier"))
        .await
        .expect("server");
    let a = server.addr;
    wait_connected(&server.app).await;
    let cached = get(a, "/products/1").await.body;
    assert!(cached.contains("Camo Onesie"));
    let body = eventually(a, "/readyz", |b| b == "ready").await;
    assert_eq!(body, "ready", "warmed up and following the log");

    cluster.pause().expect("stop PostgreSQL");
    for _ in 0..5 {
        let r = get(a, "/products/1").await;
        assert_eq!(
            (r.status, &r.body),
            (200, &cached),
            "hits answer while the database is down"
        );
    }
    let started = Instant::now();
    let miss = get(a, "/products/2").await;
    assert_eq!(miss.status, 503, "{}", miss.body);
    assert_eq!(miss.header("retry-after"), Some("1"));
    let write = put(a, "/reviews/1/helpful").await;
    assert_eq!(write.status, 503);
    // A page sent in runs reads its first run before the head: a 503, not a 200 cut short.
    let all = get(a, "/products?count=100000").await;
    assert_eq!((all.status, all.header("retry-after")), (503, Some("1")));
    println!(
        "a miss and a write with the database down answered 503 in {:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "failing fast, not hanging"
    );
    // Many requests waiting on one uncached key must not retry one after another.
    let started = Instant::now();
    let waiting: Vec<_> = (0..20)
        .map(|_| tokio::spawn(async move { get(a, "/products/3").await.status }))
        .collect();
    for w in waiting {
        assert_eq!(w.await.unwrap(), 503);
    }
    println!(
        "20 concurrent misses on one key with the database down answered 503 in {:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "waiters fail together, not in turn"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        get(a, "/readyz").await.status,
        503,
        "not ready while the feed is down"
    );

    cluster.resume().expect("start PostgreSQL");
    let ready = eventually(a, "/products/2", |b| b.contains("Bright Future")).await;
    assert!(ready.contains("Bright Future"), "misses recover: {ready}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(a, "/readyz").await.status != 200 {
        assert!(Instant::now() < deadline, "never ready again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        put(a, "/reviews/1/helpful").await.status,
        204,
        "writes recover"
    );
    let r = post_json(a, "/cart", r#"{"sku_id":2}"#).await;
    assert_eq!(r.status, 201);
    // And the feed is following again: a write made in SQL reaches the cache.
    let client = atelier::pg::connect(&cluster.config("atelier"))
        .await
        .unwrap();
    client
        .batch_execute("UPDATE products SET name = 'Back Again' WHERE id = 1")
        .await
        .unwrap();
    let body = eventually(a, "/products/1", |b| b.contains("Back Again")).await;
    assert!(body.contains("Back Again"), "{body}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_page_in_runs_cut_short_by_the_database_ends_without_its_last_chunk() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let cluster = own_cluster().await;
    let client = atelier::pg::connect(&cluster.config("atelier"))
        .await
        .unwrap();
    client
        .batch_execute(
            "INSERT INTO products (name, slogan, description, category, default_price)
             SELECT 'bulk ' || n, 's', 'd', 'c', 10 FROM generate_series(1, 5000) AS n",
        )
        .await
        .unwrap();
    let total = count(&client, "products").await;
    drop(client);
    let mut s = settings();
    s.db_timeout = Duration::from_millis(500);
    // Runs of one product: the page is thousands of queries.
    s.max_page_rows = 1;
    let server = atelier::http::start(s, cluster.config("atelier"))
        .await
        .expect("server");
    let a = server.addr;
    wait_connected(&server.app).await;

    let mut stream = tokio::net::TcpStream::connect(a).await.unwrap();
    stream
        .write_all(b"GET /products?count=1000000 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = vec![0; 256];
    let n = stream.read(&mut raw).await.unwrap();
    raw.truncate(n);
    assert!(raw.starts_with(b"HTTP/1.1 200"), "the first run was read");
    // The test's runtime is the server's too: while PostgreSQL stops, the server waits.
    cluster.pause().expect("stop PostgreSQL");
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("the server ends the reply, not leaves it hanging")
        .unwrap_or_default();
    let reply = String::from_utf8_lossy(&raw);
    assert!(reply.contains("transfer-encoding: chunked"), "{reply:.300}");
    // A client sees the page cut short: no last chunk, and no closing bracket.
    assert!(
        !reply.ends_with("0\r\n\r\n") && !reply.trim_end().ends_with(']'),
        "a page cut short must not look whole: …{}",
        &reply[reply.len().saturating_sub(200)..]
    );

    cluster.resume().expect("start PostgreSQL");
    let whole = eventually(a, "/products?count=1000000", |b| b.ends_with(']')).await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&whole)
            .unwrap()
            .as_array()
            .map(Vec::len),
        usize::try_from(total).ok(),
        "the whole page once the database is back"
    );
    server.stop().await.unwrap();
}

/// A private PostgreSQL of the test's own, to stop and start, loaded with the sample.
async fn own_cluster() -> PrivateCluster {
    let cluster = PrivateCluster::start(&ClusterOptions {
        shared_buffers: "32MB".into(),
        maintenance_work_mem: "16MB".into(),
        max_connections: 50,
        ..Default::default()
    })
    .expect("private cluster");
    let admin = atelier::pg::connect(&cluster.config("postgres"))
        .await
        .unwrap();
    admin
        .batch_execute("CREATE DATABASE atelier")
        .await
        .unwrap();
    atelier::pg::load::load(
        &cluster.config("atelier"),
        &atelier::pg::load::LoadOptions {
            dir: common::sample_dir(),
            replace: false,
            jobs: 1,
            quiet: true,
        },
    )
    .await
    .expect("load the sample");
    cluster
}

#[tokio::test]
async fn an_instance_the_pruned_log_no_longer_reaches_empties_its_cache() {
    // On demand, so that no re-warm refills the cache the reset emptied.
    let mut s = settings();
    s.precompute = atelier::config::Precompute::None;
    let (db, server) = common::server_with_settings(&common::sample_dir(), s).await;
    let a = server.addr;
    wait_connected(&server.app).await;
    for path in ["/products/1", "/products/2", "/reviews?product_id=1"] {
        get(a, path).await;
    }
    assert!(server.app.cache.stats().entries >= 3);
    let feed = server.app.feed_status().unwrap();
    let resets = feed.resets.load(Relaxed);
    // As if the log had been pruned past this instance while its feed was away.
    let client = db.client().await;
    client
        .batch_execute(
            "UPDATE change_log_pruned SET through = (SELECT coalesce(max(seq), 0) FROM change_log) + 1000;
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity
              WHERE application_name = 'atelier change feed' AND datname = current_database();",
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while feed.resets.load(Relaxed) == resets {
        assert!(Instant::now() < deadline, "the cache was never emptied");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(server.app.cache.stats().entries, 0);
    assert!(
        get(a, "/products/1").await.body.contains("Camo Onesie"),
        "refilled from the database"
    );
}

#[tokio::test]
async fn the_feed_prunes_rows_visible_for_the_whole_retention_and_records_how_far() {
    let db = common::migrated_database().await;
    let client = db.client().await;
    // Rows from before transaction ids were logged (xid 0): long visible.
    client
        .batch_execute(
            "INSERT INTO change_log (kind, id, xid) VALUES ('product', 1, 0), ('product', 2, 0);
             UPDATE change_log_pruned SET min_retention_s = 0",
        )
        .await
        .unwrap();
    let mut s = settings();
    s.feed.retention = Duration::from_secs(1);
    let server = atelier::http::start(s, db.config.clone()).await.unwrap();
    wait_connected(&server.app).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while count(&client, "change_log").await > 0 {
        assert!(Instant::now() < deadline, "the feed never pruned");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let through: i64 = client
        .query_one("SELECT through FROM change_log_pruned", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(through, 2, "the highest pruned number is recorded");
}

#[tokio::test]
async fn a_log_row_is_kept_until_it_has_been_visible_for_the_retention() {
    use atelier::pg::feed::prune;
    let db = common::migrated_database().await;
    let client = db.client().await;
    client
        .batch_execute(
            "INSERT INTO change_log (kind, id, xid) VALUES ('product', 1, 0);
             UPDATE change_log_pruned SET min_retention_s = 0",
        )
        .await
        .unwrap();
    let retention = Duration::from_millis(500);
    assert_eq!(
        prune(&client, retention).await.unwrap(),
        0,
        "no run is old enough yet"
    );
    // A row committed after that run.
    client
        .batch_execute("SELECT atelier_log_change('product', 2, NULL)")
        .await
        .unwrap();
    tokio::time::sleep(retention + Duration::from_millis(100)).await;
    assert_eq!(
        prune(&client, retention).await.unwrap(),
        1,
        "only the old row goes"
    );
    let left: Vec<i64> = client
        .query("SELECT id FROM change_log", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        left,
        [2],
        "the young row stays: it has not been visible that long"
    );
    // Once a run that saw it is a retention old, it goes too (other tests' open transactions
    // in this cluster can hold the horizon back a little).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        tokio::time::sleep(retention + Duration::from_millis(100)).await;
        if prune(&client, retention).await.unwrap() == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the young row was never pruned");
    }
    assert_eq!(count(&client, "change_log").await, 0);
}

#[tokio::test]
async fn a_bulk_load_empties_every_instances_cache_once() {
    let (db, server) = server_with_data(&common::sample_dir()).await;
    let a = server.addr;
    wait_connected(&server.app).await;
    let before = get(a, "/products/1").await.body;
    let seq_before: i64 = db
        .client()
        .await
        .query_one("SELECT max(seq) FROM change_log", &[])
        .await
        .unwrap()
        .get(0);

    let dir = common::TempDir::new("reload");
    common::copy_dir(&common::sample_dir(), dir.path());
    let products = std::fs::read_to_string(dir.path().join("product.csv")).unwrap();
    std::fs::write(
        dir.path().join("product.csv"),
        products.replace("Camo Onesie", "Camo Reloaded"),
    )
    .unwrap();
    atelier::pg::load::load(
        &db.config,
        &atelier::pg::load::LoadOptions {
            dir: dir.path().to_path_buf(),
            replace: true,
            jobs: 2,
            quiet: true,
        },
    )
    .await
    .expect("reload");

    let after = eventually(a, "/products/1", |b| b.contains("Camo Reloaded")).await;
    assert!(
        after.contains("Camo Reloaded") && before.contains("Camo Onesie"),
        "{after}"
    );
    let logged: i64 = db
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM change_log WHERE seq > $1",
            &[&seq_before],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        logged, 14,
        "the load bypassed the row triggers: one 'all' event per file, and one for emptying the carts"
    );
}

#[tokio::test]
async fn a_change_committed_after_a_later_one_is_not_missed() {
    let (db, server) = server_with_data(&common::sample_dir()).await;
    let a = server.addr;
    wait_connected(&server.app).await;
    for path in ["/products/1", "/products/2", "/products/3"] {
        get(a, path).await;
    }
    // The first writer takes the lower sequence number but commits last.
    let mut slow = db.client().await;
    let tx = slow.transaction().await.unwrap();
    tx.batch_execute("UPDATE products SET name = 'Slow Writer' WHERE id = 1")
        .await
        .unwrap();
    let fast = db.client().await;
    fast.batch_execute("UPDATE products SET name = 'Fast Writer' WHERE id = 2")
        .await
        .unwrap();
    assert!(eventually(a, "/products/2", |b| b.contains("Fast Writer"))
        .await
        .contains("Fast Writer"));
    // A write that rolls back leaves a hole that never fills; later changes still arrive.
    fast.batch_execute("BEGIN; UPDATE products SET name = 'Never' WHERE id = 3; ROLLBACK")
        .await
        .unwrap();
    fast.batch_execute("UPDATE products SET name = 'After Rollback' WHERE id = 3")
        .await
        .unwrap();
    assert!(
        eventually(a, "/products/3", |b| b.contains("After Rollback"))
            .await
            .contains("After Rollback")
    );
    // Keep the stale body cached, then commit the slow write.
    assert!(get(a, "/products/1").await.body.contains("Camo Onesie"));
    tx.commit().await.unwrap();
    let body = eventually(a, "/products/1", |b| b.contains("Slow Writer")).await;
    assert!(
        body.contains("Slow Writer"),
        "the lower sequence number, committed last, was applied: {body}"
    );
}
