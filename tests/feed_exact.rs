//! The change feed loses nothing and says when it cannot be trusted: changes of transactions
//! held open past every timeout the feed has, a feed connection that goes silent while the
//! pool works, a panic in the feed, a pruned log far ahead of zero, a products page filled
//! while a product changes, a backlog, and a write that bypasses the triggers (repaired by the
//! sweep).

mod common;

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use atelier::config::ServeSettings;
use atelier::pg::feed::FeedSettings;
use common::proxy::Proxy;
use common::{eventually, get, put, server_with_settings};

/// A feed with short timeouts, so "longer than any timeout the feed has" fits in a test.
fn quick() -> ServeSettings {
    ServeSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        pool_size: 2,
        feed_staleness: Duration::from_secs(1),
        feed: FeedSettings {
            poll_interval: Duration::from_millis(50),
            query_timeout: Duration::from_millis(500),
            max_backoff: Duration::from_millis(200),
            ..Default::default()
        },
        sweep_period: None,
        ..Default::default()
    }
}

/// Polls `check` every 10 ms until it holds, for up to `limit`.
async fn until<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn readyz(addr: std::net::SocketAddr) -> (u16, String) {
    let r = get(addr, "/readyz").await;
    (r.status, r.body)
}

/// A server over the sample whose change feed connects through a proxy (the pool does not),
/// ready unless the proxy starts black-holed.
async fn server_with_proxied_feed(
    settings: ServeSettings,
    black_holed: bool,
) -> (common::TestDb, Proxy, atelier::http::Running) {
    let db = common::loaded_database(&common::sample_dir()).await;
    let proxy = Proxy::start(&db.config).await;
    if black_holed {
        proxy.black_hole();
    }
    let mut settings = settings;
    settings.feed_database = Some(proxy.config(&db.config));
    let server = atelier::http::start(settings, db.config.clone())
        .await
        .unwrap();
    if !black_holed {
        let a = server.addr;
        until("ready", Duration::from_secs(10), || async {
            readyz(a).await.0 == 200
        })
        .await;
    }
    (db, proxy, server)
}

#[tokio::test]
async fn a_change_in_a_transaction_open_past_every_feed_timeout_is_applied_at_commit() {
    let (db, server) = server_with_settings(&common::sample_dir(), quick()).await;
    let a = server.addr;
    let meta = "/reviews/meta?product_id=1";
    assert!(get(a, meta)
        .await
        .body
        .contains(r#""ratings":{"4":"1","5":"1"}"#));

    // An analyst's session: takes a sequence number now, commits much later.
    let mut analyst = db.client().await;
    let tx = analyst.transaction().await.unwrap();
    tx.batch_execute("UPDATE reviews SET rating = 5 WHERE id = 2")
        .await
        .unwrap();

    // Meanwhile later writes commit (through the API and with SQL), and one rolls back.
    let other = db.client().await;
    assert_eq!(put(a, "/reviews/3/helpful").await.status, 204);
    other
        .batch_execute("BEGIN; UPDATE products SET name = 'Never' WHERE id = 3; ROLLBACK")
        .await
        .unwrap();
    other
        .batch_execute("UPDATE products SET slogan = 'Later' WHERE id = 2")
        .await
        .unwrap();
    assert!(eventually(a, "/products/2", |b| b.contains("Later"))
        .await
        .contains("Later"));
    let feed = server.app.feed_status().unwrap();
    until(
        "the open transaction is awaited",
        Duration::from_secs(5),
        || async { feed.pending_transactions.load(Relaxed) >= 1 },
    )
    .await;

    // Five times the feed's query timeout, fifty poll intervals.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        readyz(a).await.0,
        200,
        "an open transaction is not an outage"
    );
    assert!(
        get(a, meta)
            .await
            .body
            .contains(r#""ratings":{"4":"1","5":"1"}"#),
        "still cached, uncommitted"
    );
    assert!(!get(a, "/products/3").await.body.contains("Never"));

    tx.commit().await.unwrap();
    let body = eventually(a, meta, |b| b.contains(r#""ratings":{"5":"2"}"#)).await;
    assert!(
        body.contains(r#""ratings":{"5":"2"}"#),
        "the change committed last, with the lowest number, was applied: {body}"
    );
}

#[tokio::test]
async fn a_silent_feed_connection_fails_readyz_and_misses_nothing_once_back() {
    let (db, proxy, server) = server_with_proxied_feed(quick(), true).await;
    let a = server.addr;

    // The feed cannot find its place in the log: not ready, though the pool works.
    assert_eq!(readyz(a).await, (503, "change feed starting".to_owned()));
    assert!(get(a, "/products/1").await.body.contains("Camo Onesie"));
    // A change the feed will count as before its start: the fill above must not outlive it.
    let client = db.client().await;
    client
        .batch_execute("UPDATE products SET name = 'Before The Feed' WHERE id = 1")
        .await
        .unwrap();
    proxy.pass();
    until("ready", Duration::from_secs(10), || async {
        readyz(a).await.0 == 200
    })
    .await;
    assert!(
        get(a, "/products/1").await.body.contains("Before The Feed"),
        "nothing filled before the feed found its place survives it"
    );

    let feed = server.app.feed_status().unwrap();
    until("the feed is connected", Duration::from_secs(10), || async {
        feed.is_connected()
    })
    .await;
    // The network drops the feed's packets silently: no error, no FIN, nothing.
    proxy.black_hole();
    let went = Instant::now();
    until(
        "/readyz says the feed is gone",
        Duration::from_secs(5),
        || async { readyz(a).await == (503, "change feed disconnected".to_owned()) },
    )
    .await;
    println!(
        "/readyz failed {:?} after the feed went silent",
        went.elapsed()
    );
    client
        .batch_execute("UPDATE products SET name = 'While Silent' WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(
        get(a, "/products/2").await.status,
        200,
        "misses are still filled through the pool"
    );

    proxy.pass();
    until("ready again", Duration::from_secs(10), || async {
        readyz(a).await.0 == 200
    })
    .await;
    let body = eventually(a, "/products/1", |b| b.contains("While Silent")).await;
    assert!(
        body.contains("While Silent"),
        "the change made while silent: {body}"
    );
}

#[tokio::test]
async fn a_panic_in_the_feed_is_counted_and_the_feed_starts_over() {
    let (db, server) = server_with_settings(&common::sample_dir(), quick()).await;
    let a = server.addr;
    let feed = server.app.feed_status().unwrap();
    assert!(get(a, "/products/1").await.body.contains("Camo Onesie"));
    feed.inject_panic();
    until("the feed restarted", Duration::from_secs(10), || async {
        feed.restarts.load(Relaxed) == 1 && feed.is_connected()
    })
    .await;
    assert_eq!(readyz(a).await.0, 200);
    assert!(get(a, "/metrics")
        .await
        .body
        .contains("\natelier_feed_restarts_total 1\n"));
    db.client()
        .await
        .batch_execute("UPDATE products SET name = 'After The Panic' WHERE id = 1")
        .await
        .unwrap();
    let body = eventually(a, "/products/1", |b| b.contains("After The Panic")).await;
    assert!(body.contains("After The Panic"), "{body}");
}

#[tokio::test]
async fn a_pruned_empty_log_far_from_zero_costs_no_memory() {
    let db = common::loaded_database(&common::sample_dir()).await;
    // A million writes ago, all pruned: the log is empty, its numbers far from zero.
    db.client()
        .await
        .batch_execute(
            "DELETE FROM change_log;
             SELECT setval('change_log_seq_seq', 1000000);
             UPDATE change_log_pruned SET through = 1000000;",
        )
        .await
        .unwrap();
    let server = atelier::http::start(quick(), db.config.clone())
        .await
        .unwrap();
    let a = server.addr;
    assert!(get(a, "/products/1").await.body.contains("Camo Onesie"));
    db.client()
        .await
        .batch_execute("UPDATE products SET name = 'A Million And One' WHERE id = 1")
        .await
        .unwrap();
    let body = eventually(a, "/products/1", |b| b.contains("A Million And One")).await;
    assert!(body.contains("A Million And One"));
    let feed = server.app.feed_status().unwrap();
    assert_eq!(feed.last_seq.load(Relaxed), 1_000_001);
    assert_eq!(
        feed.resets.load(Relaxed),
        1,
        "only the start emptied the cache: the feed started from the pruned mark"
    );
    assert!(
        feed.pending_transactions.load(Relaxed) < 10,
        "the feed's state is the open transactions, not the numbers below it"
    );
}

#[tokio::test]
async fn a_products_page_filled_while_a_product_changes_is_not_served_stale() {
    let db = common::loaded_database(&common::sample_dir()).await;
    // The pool's replies arrive late; the feed's do not.
    let proxy = Proxy::start(&db.config).await;
    let mut settings = quick();
    settings.feed_database = Some(db.config.clone());
    // One connection, opened before the replies slow down; time enough for a slow reply.
    settings.pool_size = 1;
    settings.db_timeout = Duration::from_secs(5);
    let server = atelier::http::start(settings, proxy.config(&db.config))
        .await
        .unwrap();
    let a = server.addr;
    proxy.delay_replies(Duration::from_millis(700));

    let in_flight = tokio::spawn(async move { get(a, "/products?count=3").await });
    // The fill's query has run (its snapshot holds the old name); its reply is on the way.
    tokio::time::sleep(Duration::from_millis(200)).await;
    db.client()
        .await
        .batch_execute("UPDATE products SET name = 'Renamed Meanwhile' WHERE id = 1")
        .await
        .unwrap();
    let first = in_flight.await.unwrap();
    assert_eq!(first.status, 200);
    assert!(
        first.body.contains("Camo Onesie"),
        "the request that raced the change saw the old row: {}",
        first.body
    );
    let second = get(a, "/products?count=3").await;
    assert!(
        second.body.contains("Renamed Meanwhile"),
        "the page filled before the change was not kept: {}",
        second.body
    );
}

#[tokio::test]
async fn readyz_fails_while_the_feed_reads_a_backlog() {
    let mut settings = quick();
    settings.feed.batch_rows = 5;
    settings.feed.query_timeout = Duration::from_secs(5);
    let (db, proxy, server) = server_with_proxied_feed(settings, false).await;
    let a = server.addr;
    // 500 changes at once, read 5 per query, each reply 40 ms late: seconds of backlog.
    proxy.delay_replies(Duration::from_millis(40));
    db.client()
        .await
        .batch_execute(
            "SELECT atelier_log_change('product', g, NULL) FROM generate_series(1000, 1499) g",
        )
        .await
        .unwrap();
    until(
        "/readyz reports the backlog",
        Duration::from_secs(10),
        || async { readyz(a).await == (503, "change feed catching up".to_owned()) },
    )
    .await;
    proxy.delay_replies(Duration::ZERO);
    until("caught up", Duration::from_secs(10), || async {
        readyz(a).await.0 == 200
    })
    .await;
}

#[tokio::test]
async fn the_sweep_repairs_a_write_that_bypassed_the_triggers() {
    let mut settings = quick();
    settings.sweep_period = Some(Duration::from_millis(300));
    let (db, server) = server_with_settings(&common::sample_dir(), settings).await;
    let a = server.addr;
    let client = db.client().await;
    for path in ["/products/1", "/products/2", "/reviews?product_id=2"] {
        assert_eq!(get(a, path).await.status, 200);
    }
    // Ordinary writes are the feed's: the sweep sees them as changes, not drift.
    client
        .batch_execute("UPDATE products SET slogan = 'Ordinary' WHERE id = 2")
        .await
        .unwrap();
    assert_eq!(put(a, "/reviews/3/helpful").await.status, 204);
    get(a, "/reviews?product_id=2").await;
    until("a sweep round", Duration::from_secs(10), || async {
        server.app.cache.stats().swept >= 6
    })
    .await;
    assert_eq!(server.app.cache.stats().drift, 0, "no false alarm");

    client
        .batch_execute(
            "ALTER TABLE products DISABLE TRIGGER log_change;
             UPDATE products SET name = 'Behind Your Back' WHERE id = 1;
             ALTER TABLE products ENABLE TRIGGER log_change;",
        )
        .await
        .unwrap();
    let body = eventually(a, "/products/1", |b| b.contains("Behind Your Back")).await;
    assert!(
        body.contains("Behind Your Back"),
        "repaired by the sweep: {body}"
    );
    assert_eq!(server.app.cache.stats().drift, 1);
    assert!(get(a, "/metrics")
        .await
        .body
        .contains("\natelier_cache_drift_total 1\n"));
}

#[tokio::test]
async fn an_unknown_change_kind_empties_the_cache_and_is_counted() {
    // On demand, so that no re-warm refills the cache the change emptied.
    let mut settings = quick();
    settings.precompute = atelier::config::Precompute::None;
    let (db, server) = server_with_settings(&common::sample_dir(), settings).await;
    let a = server.addr;
    assert!(get(a, "/products/1").await.body.contains("Camo Onesie"));
    assert!(server.app.cache.stats().entries > 0);
    // A newer writer logs a kind this build does not know.
    db.client()
        .await
        .batch_execute("SELECT atelier_log_change('gift_cards', 1, NULL)")
        .await
        .unwrap();
    let feed = server.app.feed_status().unwrap();
    until(
        "the unknown change is counted",
        Duration::from_secs(10),
        || async { feed.unknown_changes.load(Relaxed) == 1 },
    )
    .await;
    assert_eq!(
        server.app.cache.stats().entries,
        0,
        "it may have changed anything"
    );
}

#[tokio::test]
async fn the_metrics_export_the_feeds_state() {
    let (db, server) = server_with_settings(&common::sample_dir(), quick()).await;
    let a = server.addr;
    db.client()
        .await
        .batch_execute("UPDATE products SET name = 'Counted' WHERE id = 1")
        .await
        .unwrap();
    let feed = server.app.feed_status().unwrap();
    until("the change is applied", Duration::from_secs(10), || async {
        feed.last_seq.load(Relaxed) > 0
    })
    .await;
    let metrics = get(a, "/metrics").await.body;
    let last = feed.last_seq.load(Relaxed);
    for line in [
        "atelier_feed_connected 1".to_owned(),
        format!("atelier_feed_last_seq {last}"),
        "atelier_feed_reconnects_total 0".to_owned(),
        "atelier_feed_restarts_total 0".to_owned(),
        "atelier_feed_resets_total 1".to_owned(),
        "atelier_feed_unknown_changes_total 0".to_owned(),
        "atelier_cache_drift_total 0".to_owned(),
    ] {
        assert!(
            metrics.contains(&format!("\n{line}\n")),
            "{line} in:\n{metrics}"
        );
    }
    for name in [
        "atelier_feed_lag_seconds",
        "atelier_feed_pending_transactions",
        "atelier_cache_swept_total",
    ] {
        assert!(metrics.contains(&format!("\n{name} ")), "{name}");
    }
}

#[tokio::test]
async fn a_change_by_a_transaction_that_took_its_id_after_the_snapshot_is_not_missed() {
    let (db, server) = server_with_settings(&common::sample_dir(), quick()).await;
    let a = server.addr;
    let meta = "/reviews/meta?product_id=2";
    assert!(get(a, meta)
        .await
        .body
        .contains(r#""ratings":{"3":"1","4":"1"}"#));
    assert!(get(a, "/products/3").await.body.contains("Morning Joggers"));
    // A takes the lower transaction id, B the higher one and a sequence number between A's.
    let mut first = db.client().await;
    let ta = first.transaction().await.unwrap();
    ta.batch_execute("UPDATE products SET name = 'First Id' WHERE id = 1")
        .await
        .unwrap();
    let mut second = db.client().await;
    let tb = second.transaction().await.unwrap();
    tb.batch_execute("UPDATE reviews SET rating = 5 WHERE id = 4")
        .await
        .unwrap();
    ta.batch_execute("UPDATE products SET slogan = 'Later Number' WHERE id = 3")
        .await
        .unwrap();
    // A commits: a snapshot now ends (xmax) below B's id, and does not list B as running.
    ta.commit().await.unwrap();
    assert!(eventually(a, "/products/3", |b| b.contains("Later Number"))
        .await
        .contains("Later Number"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    tb.commit().await.unwrap();
    let body = eventually(a, meta, |b| b.contains(r#""ratings":{"4":"1","5":"1"}"#)).await;
    assert!(body.contains(r#""ratings":{"4":"1","5":"1"}"#), "{body}");
}

#[tokio::test]
async fn a_transaction_with_more_rows_than_a_batch_below_the_high_mark_does_not_stall_the_feed() {
    let mut settings = quick();
    settings.feed.batch_rows = 5;
    let (db, server) = server_with_settings(&common::sample_dir(), settings).await;
    let a = server.addr;
    for path in ["/products/2", "/products/3"] {
        assert_eq!(get(a, path).await.status, 200);
    }
    let mut batch_job = db.client().await;
    let job = batch_job.transaction().await.unwrap();
    job.batch_execute(
        "SELECT atelier_log_change('product', g, NULL) FROM generate_series(100, 119) g",
    )
    .await
    .unwrap();
    // A later number commits first: the job's twenty rows will lie below the feed's mark.
    db.client()
        .await
        .batch_execute("UPDATE products SET name = 'Meanwhile' WHERE id = 2")
        .await
        .unwrap();
    assert!(eventually(a, "/products/2", |b| b.contains("Meanwhile"))
        .await
        .contains("Meanwhile"));
    job.commit().await.unwrap();
    let feed = server.app.feed_status().unwrap();
    until(
        "the job's rows are read",
        Duration::from_secs(10),
        || async { feed.last_seq.load(Relaxed) > 0 && readyz(a).await.0 == 200 },
    )
    .await;
    db.client()
        .await
        .batch_execute("UPDATE products SET name = 'Still Following' WHERE id = 3")
        .await
        .unwrap();
    let body = eventually(a, "/products/3", |b| b.contains("Still Following")).await;
    assert!(body.contains("Still Following"), "{body}");
    assert_eq!(readyz(a).await.0, 200);
}

#[tokio::test]
async fn a_feed_away_longer_than_rows_are_kept_empties_the_cache() {
    let mut settings = quick();
    settings.feed.retention = Duration::from_secs(2);
    let (db, proxy, server) = server_with_proxied_feed(settings, false).await;
    let a = server.addr;
    // Retentions this short are below what pruning takes unless the owner says so.
    db.client()
        .await
        .batch_execute("UPDATE change_log_pruned SET min_retention_s = 0")
        .await
        .unwrap();
    assert!(get(a, "/products/1").await.body.contains("Camo Onesie"));
    assert!(get(a, "/products/2").await.body.contains("Bright Future"));
    // A transaction older than the retention, waited for by the feed.
    let mut old = db.client().await;
    let tx = old.transaction().await.unwrap();
    tx.batch_execute("UPDATE products SET name = 'Long Ago' WHERE id = 1")
        .await
        .unwrap();
    let client = db.client().await;
    client
        .batch_execute("UPDATE products SET slogan = 'Passed It' WHERE id = 2")
        .await
        .unwrap();
    // Cached, so only the feed can bring it: the feed's mark is now past the open one's row.
    assert!(eventually(a, "/products/2", |b| b.contains("Passed It"))
        .await
        .contains("Passed It"));
    // The feed goes away; the transaction commits; once the retention has passed, another
    // instance prunes its rows.
    proxy.black_hole();
    tx.commit().await.unwrap();
    // (Other tests' transactions in this cluster can hold the horizon back a while.)
    let retention = Duration::from_secs(2);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut pruned = 0;
    while pruned < 2 {
        assert!(Instant::now() < deadline, "never pruned");
        pruned += atelier::pg::feed::prune(&client, retention).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    proxy.pass();
    let body = eventually(a, "/products/1", |b| b.contains("Long Ago")).await;
    assert!(
        body.contains("Long Ago"),
        "the feed knew it missed rows it waited for: {body}"
    );
}

#[tokio::test]
async fn a_question_created_after_its_answers_were_asked_for_is_served() {
    let (db, server) = server_with_settings(&common::sample_dir(), quick()).await;
    let a = server.addr;
    let client = db.client().await;
    let next: i64 = client
        .query_one("SELECT max(id) + 1 FROM questions", &[])
        .await
        .unwrap()
        .get(0);
    let path = format!("/qa/questions/{next}/answers");
    assert_eq!(get(a, &path).await.status, 404, "cached as unknown");
    client
        .batch_execute(&format!(
            "INSERT INTO questions (id, product_id, body, asker_name, asker_email)
             VALUES ({next}, 1, 'New?', 'n', 'n@example.com')"
        ))
        .await
        .unwrap();
    until(
        "the new question's answers are served",
        Duration::from_secs(10),
        || async { get(a, &path).await.status == 200 },
    )
    .await;
    client
        .batch_execute(&format!("DELETE FROM questions WHERE id = {next}"))
        .await
        .unwrap();
    until(
        "the deleted question's answers are gone",
        Duration::from_secs(10),
        || async { get(a, &path).await.status == 404 },
    )
    .await;
}

/// The instance that takes a new question answers for its answers at once, not only once its
/// feed brings the question back: here the feed hears nothing after the 404 is held.
#[tokio::test]
async fn a_question_posted_after_its_answers_were_asked_for_is_served_by_its_writer_at_once() {
    let (db, proxy, server) = server_with_proxied_feed(quick(), false).await;
    let a = server.addr;
    let next: i64 = db
        .client()
        .await
        .query_one(
            "SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END
             FROM questions_id_seq",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let path = format!("/qa/questions/{next}/answers");
    assert_eq!(get(a, &path).await.status, 404, "cached as unknown");
    proxy.black_hole();
    let posted = common::post_json(
        a,
        "/qa/questions",
        r#"{"product_id":1,"body":"Does it fold?","name":"asker","email":"asker@example.com"}"#,
    )
    .await;
    assert_eq!(posted.status, 201);
    let answers = get(a, &path).await;
    assert_eq!(
        (answers.status, answers.body.as_str()),
        (
            200,
            format!(r#"{{"question":"{next}","page":1,"count":5,"results":[]}}"#).as_str()
        ),
        "the writer's next read of the new question's answers"
    );
}

#[tokio::test]
async fn a_write_never_turns_a_hot_read_into_a_miss() {
    let mut settings = quick();
    settings.precompute = atelier::config::Precompute::None;
    let (db, server) = server_with_settings(&common::sample_dir(), settings).await;
    let a = server.addr;
    let old = get(a, "/products/1").await.body;
    let reviews = get(a, "/reviews?product_id=1").await.body;
    assert!(reviews.contains(r#""helpfulness":8"#));
    let misses = server.app.cache.stats().misses;

    // A change from elsewhere: readers get the previous body until the new one is in.
    db.client()
        .await
        .batch_execute("UPDATE products SET name = 'Refreshed In Place' WHERE id = 1")
        .await
        .unwrap();
    loop {
        let body = get(a, "/products/1").await.body;
        if body.contains("Refreshed In Place") {
            break;
        }
        assert_eq!(body, old, "the previous body, whole, until the new one");
    }
    // The instance's own write: its writer's next read is the new body, and a hit too.
    assert_eq!(put(a, "/reviews/1/helpful").await.status, 204);
    assert!(get(a, "/reviews?product_id=1")
        .await
        .body
        .contains(r#""helpfulness":9"#));
    assert_eq!(
        server.app.cache.stats().misses,
        misses,
        "every read was a hit"
    );
    assert!(server.app.cache.stats().refreshed >= 2);
}
