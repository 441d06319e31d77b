//! Reads from a streaming replica, fenced by the primary's WAL position: a primary and a hot
//! standby started here (`pg_basebackup`), the standby applying every commit seconds after the
//! primary made it (`recovery_min_apply_delay`), and instances serving real sockets.
//!
//! Three instances read from the standby: one that waits for it (a bound past its lag), one
//! that gives up on it quickly and reads the primary instead, and one started just after a
//! change the standby has yet to apply. None may serve a body older than a change it has seen,
//! and each must end with every body what a fresh render from the primary gives. Then the
//! standby stops, and everything is still served, from the primary.

mod common;

use std::time::{Duration, Instant};

use atelier::config::ServeSettings;
use atelier::pg::cluster::{ClusterOptions, PrivateCluster};
use atelier::pg::database::ReplicaSettings;
use atelier::pg::pool::Pool;
use atelier::pg::scan::Snapshot;
use common::{every_entry_is_fresh, get, put, ready, settled};
use tokio_postgres::types::PgLsn;
use tokio_postgres::Config;

/// How late the standby applies each commit.
const APPLY_DELAY: Duration = Duration::from_secs(3);

fn settings(replica: &Config, max_lag: Duration) -> ServeSettings {
    ServeSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        pool_size: 2,
        // The sweep would mend a stale body on its own: what is tested is that none is cached.
        sweep_period: None,
        replicas: ReplicaSettings {
            replicas: vec![replica.clone()],
            max_lag,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Polls `addr`'s metric `series` until it is `want`, for up to `limit` seconds.
async fn until_metric(
    addr: std::net::SocketAddr,
    series: &str,
    want: u64,
    limit: u64,
    never: &str,
) {
    let started = Instant::now();
    while common::metric(addr, series).await != want {
        assert!(started.elapsed() < Duration::from_secs(limit), "{never}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The helpfulness review `review` shows in `body` (a reviews list).
fn helpfulness_in(body: &str, review: i64) -> i64 {
    let list: serde_json::Value = serde_json::from_str(body).expect("a reviews list");
    list["results"]
        .as_array()
        .expect("results")
        .iter()
        .find(|r| r["review_id"] == review)
        .and_then(|r| r["helpfulness"].as_i64())
        .unwrap_or_else(|| panic!("review {review} not in {body}"))
}

/// Polls `addr` for `path` until it shows review `review` with helpfulness `new` and the
/// standby has it too; once the new body has been served, the old one never is again.
async fn serves_the_new_body_from_now_on(
    addr: std::net::SocketAddr,
    path: &str,
    review: i64,
    new: i64,
    standby: &tokio_postgres::Client,
) {
    let started = Instant::now();
    let mut new_served = false;
    let on_standby = format!("SELECT helpfulness::int8 FROM reviews WHERE id = {review}");
    loop {
        let shown = helpfulness_in(&get(addr, path).await.body, review);
        if new_served {
            assert_eq!(shown, new, "an older body after the new one");
        }
        new_served |= shown == new;
        let applied: i64 = standby
            .query_one(on_standby.as_str(), &[])
            .await
            .unwrap()
            .get(0);
        if new_served && applied == new {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never served the new body"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the standby has every commit the primary has made so far: commits apply in
/// order, so once it has a new one, it has every one before.
async fn caught_up(primary: &tokio_postgres::Client, standby: &tokio_postgres::Client) {
    let marker: i64 = primary
        .query_one("INSERT INTO markers VALUES (DEFAULT) RETURNING id", &[])
        .await
        .expect("a marker")
        .get(0);
    let query = format!("SELECT count(*) FROM markers WHERE id = {marker}");
    until_value(standby, &query, 1).await;
}

/// Waits (up to 30 s) until `query`'s single value on `client` is `expected`.
async fn until_value(client: &tokio_postgres::Client, query: &str, expected: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let value: i64 = client.query_one(query, &[]).await.expect(query).get(0);
        if value == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{query}: {value}, never {expected}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_replica_never_gives_an_older_body_and_a_stopped_one_is_not_an_outage() {
    let primary = PrivateCluster::start(&ClusterOptions {
        shared_buffers: "64MB".into(),
        maintenance_work_mem: "32MB".into(),
        max_connections: 100,
        replication: true,
    })
    .expect("a primary");
    let admin = atelier::pg::connect(&primary.config("postgres"))
        .await
        .expect("connect");
    admin
        .batch_execute("CREATE DATABASE atelier")
        .await
        .expect("create");
    let database = primary.config("atelier");
    let mut client = atelier::pg::connect(&database).await.expect("connect");
    atelier::pg::migrate::migrate(&mut client)
        .await
        .expect("migrate");
    let data = common::generated("replicas-data", 0.0005, 31);
    atelier::pg::load::load(
        &database,
        &atelier::pg::load::LoadOptions {
            dir: data.path().to_path_buf(),
            replace: false,
            jobs: 2,
            quiet: true,
        },
    )
    .await
    .expect("load");
    client
        .batch_execute("CREATE TABLE markers (id bigserial PRIMARY KEY)")
        .await
        .unwrap();
    let products: i64 = client
        .query_one("SELECT count(*) FROM products", &[])
        .await
        .unwrap()
        .get(0);
    let mut standby = primary.start_standby(APPLY_DELAY).expect("a standby");
    let replica = standby.config("atelier");
    let on_standby = atelier::pg::connect(&replica).await.expect("connect");
    until_value(&on_standby, "SELECT count(*) FROM products", products).await;
    caught_up(&client, &on_standby).await;
    let fresh = Pool::new(database.clone(), 2, Duration::from_secs(5));

    // A warm-up's scan checks, on its own connection, that its replica has replayed as far as
    // it must: a position past the standby's is refused.
    let replayed: PgLsn = on_standby
        .query_one("SELECT pg_last_wal_replay_lsn()", &[])
        .await
        .unwrap()
        .get(0);
    let replayed = u64::from(replayed);
    assert!(Snapshot::take(&replica, Some(replayed)).await.is_ok());
    let refused = Snapshot::take(&replica, Some(replayed + (16 << 20)))
        .await
        .err()
        .expect("a standby behind the position asked for");
    assert!(refused.to_string().contains("short of"), "{refused}");

    // Both warm up from the standby: it has every change either has seen.
    let waiting = atelier::http::start(
        settings(&replica, Duration::from_secs(10)),
        database.clone(),
    )
    .await
    .expect("start");
    let impatient = atelier::http::start(
        settings(&replica, Duration::from_millis(300)),
        database.clone(),
    )
    .await
    .expect("start");
    let (a, b) = (waiting.addr, impatient.addr);
    ready(a).await;
    ready(b).await;
    for addr in [a, b] {
        assert_eq!(
            common::metric(addr, "atelier_replica_up{replica=\"0\"}").await,
            1
        );
    }
    // Any commit (another instance's start prunes the change log) keeps a standby that
    // applies commits late behind for seconds: only the waiting instance is sure to have
    // scanned it.
    assert_eq!(
        common::metric(a, "atelier_replica_warmups_total{replica=\"0\"}").await,
        1,
        "the warm-up waited for the standby, then scanned it"
    );

    let row = client
        .query_one(
            "SELECT id, product_id, helpfulness FROM reviews WHERE NOT reported ORDER BY id LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    let (review, product, before): (i64, i64, i32) = (row.get(0), row.get(1), row.get(2));
    let before = i64::from(before);
    let path = format!("/reviews?product_id={product}&sort=helpful&count=100");
    let vote = format!("/reviews/{review}/helpful");
    assert_eq!(helpfulness_in(&get(a, &path).await.body, review), before);
    assert_eq!(helpfulness_in(&get(b, &path).await.body, review), before);

    // A vote through the waiting instance: its next read is the new body (its own refresh
    // reads the primary). The impatient one learns of the vote from its feed and refreshes
    // from the primary rather than wait past its bound.
    caught_up(&client, &on_standby).await;
    let lagging = "atelier_replica_skipped_total{replica=\"0\",reason=\"lagging\"}";
    let (skipped, primary_reads) = (
        common::metric(b, lagging).await,
        common::metric(b, "atelier_replica_primary_reads_total").await,
    );
    assert_eq!(put(a, &vote).await.status, 204);
    assert_eq!(
        helpfulness_in(&get(a, &path).await.body, review),
        before + 1,
        "the writer's next read is the new body"
    );
    serves_the_new_body_from_now_on(b, &path, review, before + 1, &on_standby).await;
    assert!(
        common::metric(b, lagging).await > skipped,
        "the standby lagged past the impatient instance's bound"
    );
    assert!(common::metric(b, "atelier_replica_primary_reads_total").await > primary_reads);

    // A vote through the impatient one: the waiting one learns of it from its feed, waits for
    // the standby to apply it, and refreshes from there.
    caught_up(&client, &on_standby).await;
    let replica_reads = common::metric(a, "atelier_replica_reads_total{replica=\"0\"}").await;
    let primary_reads = common::metric(a, "atelier_replica_primary_reads_total").await;
    assert_eq!(put(b, &vote).await.status, 204);
    assert_eq!(
        helpfulness_in(&get(b, &path).await.body, review),
        before + 2,
        "the writer's next read is the new body"
    );
    serves_the_new_body_from_now_on(a, &path, review, before + 2, &on_standby).await;
    assert!(
        common::metric(a, "atelier_replica_reads_total{replica=\"0\"}").await > replica_reads,
        "the refresh read the standby, once it had the vote"
    );
    assert_eq!(
        common::metric(a, "atelier_replica_primary_reads_total").await,
        primary_reads,
        "nothing needed the primary"
    );
    // The standby has caught up: every body of both is what the primary gives.
    for server in [&waiting, &impatient] {
        settled(server).await;
        let checked = every_entry_is_fresh(server, &fresh).await;
        assert!(checked.len() > 1_000, "{} bodies checked", checked.len());
    }

    // A body the cache does not hold, read by the writer just after its write: filled from the
    // standby only once the standby has the write, even while the writer's feed is slow to
    // bring the change (its replies held 2 s by a proxy).
    let proxy = common::proxy::Proxy::start(&database).await;
    let mut slow = settings(&replica, Duration::from_millis(300));
    slow.feed_database = Some(proxy.config(&database));
    let slow_feed = atelier::http::start(slow, database.clone())
        .await
        .expect("start");
    let w = slow_feed.addr;
    ready(w).await;
    caught_up(&client, &on_standby).await;
    until_metric(
        w,
        "atelier_replica_behind_bytes{replica=\"0\"}",
        0,
        10,
        "never caught up",
    )
    .await;
    proxy.delay_replies(Duration::from_secs(2));
    let sku: i64 = client
        .query_one("SELECT min(id) FROM skus WHERE quantity > 0", &[])
        .await
        .unwrap()
        .get(0);
    let added = common::post_json(w, "/cart", &format!("{{\"sku_id\":{sku}}}")).await;
    assert_eq!(added.status, 201, "{}", added.body);
    let cart = get(w, "/cart").await.body;
    assert!(
        cart.contains(&format!("\"sku_id\":{sku}")),
        "the writer's cart lacks what it just added: {cart}"
    );
    proxy.pass();
    drop(slow_feed);

    // A replica whose reads fail (here: a database of the standby without the tables) while
    // it answers its watcher: the warm-up that fails there is done again on the primary, and
    // each read that fails there is read again from the primary.
    let mut elsewhere = replica.clone();
    elsewhere.dbname("postgres");
    let misled = atelier::http::start(
        settings(&elsewhere, Duration::from_secs(10)),
        database.clone(),
    )
    .await
    .expect("start");
    ready(misled.addr).await;
    let page = "/products?page=3&count=9";
    let reply = get(misled.addr, page).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body, get(a, page).await.body);
    assert!(common::metric(misled.addr, "atelier_replica_failures_total{replica=\"0\"}").await > 0);
    assert_eq!(
        common::metric(misled.addr, "atelier_replica_up{replica=\"0\"}").await,
        1
    );
    drop(misled);

    // Two replicas, the standby that applies late and one that applies at once: an instance
    // reading both refreshes from the one that has the change first, without waiting for the
    // other.
    let mut current = primary
        .start_standby(Duration::ZERO)
        .expect("a second standby");
    let on_current = atelier::pg::connect(&current.config("atelier"))
        .await
        .expect("connect");
    caught_up(&client, &on_standby).await;
    caught_up(&client, &on_current).await;
    let mut both = settings(&replica, Duration::from_secs(10));
    both.replicas.replicas.push(current.config("atelier"));
    // Room for a slow machine: the prompt replica has a write within milliseconds.
    both.replicas.write_wait = Duration::from_secs(1);
    let two = atelier::http::start(both, database.clone())
        .await
        .expect("start");
    ready(two.addr).await;
    assert_eq!(
        helpfulness_in(&get(two.addr, &path).await.body, review),
        before + 2
    );
    let late_reads = common::metric(two.addr, "atelier_replica_reads_total{replica=\"0\"}").await;
    let prompt_reads = common::metric(two.addr, "atelier_replica_reads_total{replica=\"1\"}").await;
    let primary_reads = common::metric(two.addr, "atelier_replica_primary_reads_total").await;
    // Three votes: reads take the replicas in turn, and a page filled between votes (a read
    // too) shifts the turn, so some refresh looks at the late one first.
    for votes in 3..6 {
        assert_eq!(put(b, &vote).await.status, 204);
        serves_the_new_body_from_now_on(two.addr, &path, review, before + votes, &on_current).await;
        // An on-demand fill (a page no warm-up rendered) reads the prompt replica.
        let filled = common::metric(two.addr, "atelier_replica_reads_total{replica=\"1\"}").await;
        let page = get(two.addr, &format!("/products?page={}&count=7", 10 + votes)).await;
        assert_eq!(page.status, 200);
        assert!(
            common::metric(two.addr, "atelier_replica_reads_total{replica=\"1\"}").await > filled,
            "the fill read the prompt replica"
        );
    }
    assert!(
        common::metric(two.addr, "atelier_replica_reads_total{replica=\"1\"}").await > prompt_reads,
        "the refresh read the replica that had the vote"
    );
    assert_eq!(
        common::metric(two.addr, "atelier_replica_reads_total{replica=\"0\"}").await,
        late_reads,
        "nothing waited for the late one"
    );
    assert_eq!(
        common::metric(two.addr, "atelier_replica_primary_reads_total").await,
        primary_reads,
        "nothing went to the primary"
    );
    // A vote through the instance with the prompt replica: its own refreshes read that
    // replica (which has the vote within the writer's wait), not the primary.
    let prompt_reads = common::metric(two.addr, "atelier_replica_reads_total{replica=\"1\"}").await;
    assert_eq!(put(two.addr, &vote).await.status, 204);
    assert_eq!(
        helpfulness_in(&get(two.addr, &path).await.body, review),
        before + 6,
        "the writer's next read is the new body"
    );
    assert!(
        common::metric(two.addr, "atelier_replica_reads_total{replica=\"1\"}").await > prompt_reads,
        "the writer's refresh read the prompt replica"
    );
    assert_eq!(
        common::metric(two.addr, "atelier_replica_primary_reads_total").await,
        primary_reads,
        "nothing went to the primary"
    );
    drop(two);
    current.stop();

    // A change made just before an instance starts: its warm-up must not scan the standby
    // until the standby has it (the feed of the new instance will never bring it).
    let renamed = product;
    client
        .execute(
            "UPDATE products SET name = 'Renamed before the start' WHERE id = $1",
            &[&renamed],
        )
        .await
        .unwrap();
    let late = atelier::http::start(
        settings(&replica, Duration::from_secs(10)),
        database.clone(),
    )
    .await
    .expect("start");
    ready(late.addr).await;
    let body = get(late.addr, &format!("/products/{renamed}")).await.body;
    assert!(body.contains("Renamed before the start"), "{body}");
    assert_eq!(
        common::metric(late.addr, "atelier_replica_warmups_total{replica=\"0\"}").await,
        1,
        "it waited for the standby, then scanned it"
    );
    settled(&late).await;
    every_entry_is_fresh(&late, &fresh).await;

    // The standby stops with the waiting instance sure it has every change: that instance
    // must not try it (a read tried there would fail, and count), and neither may the other.
    caught_up(&client, &on_standby).await;
    until_metric(
        a,
        "atelier_replica_behind_bytes{replica=\"0\"}",
        0,
        10,
        "never caught up",
    )
    .await;
    standby.pause().expect("stop the standby");
    // At once (well within the watcher's 1 s poll): the watcher's connection ended with the
    // server, and that alone counts the standby down.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let failures = common::metric(a, "atelier_replica_failures_total{replica=\"0\"}").await;
    let reply = get(a, "/products?page=7&count=3").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        common::metric(a, "atelier_replica_failures_total{replica=\"0\"}").await,
        failures,
        "a read tried the stopped standby"
    );
    for addr in [a, b] {
        until_metric(
            addr,
            "atelier_replica_up{replica=\"0\"}",
            0,
            10,
            "still counted up",
        )
        .await;
    }
    let failures = common::metric(a, "atelier_replica_failures_total{replica=\"0\"}").await;
    // Pages no warm-up rendered are filled on demand.
    for addr in [a, b] {
        for page in 2..6 {
            let reply = get(addr, &format!("/products?page={page}&count=7")).await;
            assert_eq!(reply.status, 200, "{}", reply.body);
        }
        assert!(
            common::metric(
                addr,
                "atelier_replica_skipped_total{replica=\"0\",reason=\"down\"}"
            )
            .await
                > 0,
            "reads skipped the stopped standby"
        );
    }
    assert_eq!(
        common::metric(a, "atelier_replica_failures_total{replica=\"0\"}").await,
        failures,
        "a read tried the stopped standby"
    );
    assert_eq!(put(b, &vote).await.status, 204);
    assert_eq!(
        helpfulness_in(&get(b, &path).await.body, review),
        before + 7
    );
    let after_stop = atelier::http::start(
        settings(&replica, Duration::from_millis(300)),
        database.clone(),
    )
    .await
    .expect("start");
    ready(after_stop.addr).await;
    assert_eq!(
        common::metric(
            after_stop.addr,
            "atelier_replica_warmups_total{replica=\"0\"}"
        )
        .await,
        0,
        "warmed from the primary"
    );
    for server in [&waiting, &impatient, &late, &after_stop] {
        assert_eq!(get(server.addr, "/readyz").await.body, "ready");
        settled(server).await;
        assert_eq!(
            helpfulness_in(&get(server.addr, &path).await.body, review),
            before + 7
        );
        every_entry_is_fresh(server, &fresh).await;
    }

    // The standby comes back: it is read again once its watcher has heard from it, and only
    // once it has the changes it missed.
    standby.resume().expect("restart the standby");
    until_metric(
        a,
        "atelier_replica_up{replica=\"0\"}",
        1,
        30,
        "never back up",
    )
    .await;
    let on_standby = atelier::pg::connect(&replica).await.expect("connect");
    caught_up(&client, &on_standby).await;
    let replica_reads = common::metric(a, "atelier_replica_reads_total{replica=\"0\"}").await;
    assert_eq!(put(b, &vote).await.status, 204);
    serves_the_new_body_from_now_on(a, &path, review, before + 8, &on_standby).await;
    assert!(
        common::metric(a, "atelier_replica_reads_total{replica=\"0\"}").await > replica_reads,
        "the refresh read the standby again"
    );
    settled(&waiting).await;
    every_entry_is_fresh(&waiting, &fresh).await;
    standby.stop();
}
