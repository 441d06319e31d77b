//! The request-path pool against a real PostgreSQL: every connection carries a
//! `statement_timeout`, a query past the limit answers 503 fast, a query the pool gives up on
//! is cancelled on the server as well (not only by `statement_timeout`), a connection whose
//! query outlived the limit is replaced while the next request is served, and a replica's pool
//! refuses a connection that reached another server than its watcher polls. Dates are read
//! as PostgreSQL counts them, and a date no body can show (which migration 9 refuses, see
//! tests/migrate.rs) is a 500, not a panic.

mod common;

use std::time::{Duration, Instant};

use atelier::config::ServeSettings;
use atelier::pg::pool::Pool;
use common::get;
use common::proxy::Proxy;

#[tokio::test]
async fn pooled_connections_carry_the_time_limit_as_statement_timeout_and_no_jit_nor_parallel_plans(
) {
    let db = common::migrated_database().await;
    let pool = Pool::new(db.config.clone(), 1, Duration::from_millis(750));
    let shown: String = pool
        .run(|c| async move {
            let row = c.client.query_one("SHOW statement_timeout", &[]).await?;
            Ok(row.get(0))
        })
        .await
        .unwrap();
    assert_eq!(shown, "750ms");
    let jit: String = pool
        .run(|c| async move { Ok(c.client.query_one("SHOW jit", &[]).await?.get(0)) })
        .await
        .unwrap();
    assert_eq!(jit, "off", "small queries are not worth compiling");
    let workers: String = pool
        .run(|c| async move {
            let row = c
                .client
                .query_one("SHOW max_parallel_workers_per_gather", &[])
                .await?;
            Ok(row.get(0))
        })
        .await
        .unwrap();
    assert_eq!(workers, "0", "one product's rows are not worth two workers");
}

#[tokio::test]
async fn a_replica_pool_refuses_a_server_other_than_the_one_its_watcher_polls() {
    use std::sync::atomic::AtomicI64;
    use std::sync::Arc;
    let db = common::migrated_database().await;
    let client = db.client().await;
    let started: i64 = client
        .query_one(
            "SELECT (extract(epoch FROM pg_postmaster_start_time()) * 1e6)::int8",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let expected = Arc::new(AtomicI64::new(started + 1));
    let pool = Pool::new(db.config.clone(), 1, Duration::from_secs(5))
        .only_on_server(Arc::clone(&expected));
    let refused = pool.get().await.err().expect("another server's start time");
    assert!(refused.is_unavailable(), "{refused}");
    assert!(refused.to_string().contains("another server"), "{refused}");
    expected.store(started, std::sync::atomic::Ordering::Release);
    assert!(pool.get().await.is_ok(), "the server the watcher polls");
}

async fn pool_backend(db: &common::TestDb) -> Vec<i32> {
    db.client()
        .await
        .query(
            "SELECT pid FROM pg_stat_activity
              WHERE application_name = 'atelier pool' AND datname = current_database() ORDER BY pid",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn a_query_the_server_holds_past_the_limit_answers_503_and_the_connection_stays_usable() {
    let db = common::loaded_database(&common::sample_dir()).await;
    let settings = ServeSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        pool_size: 1,
        db_timeout: Duration::from_millis(400),
        // On demand, so that these reads go to the database.
        precompute: atelier::config::Precompute::None,
        ..Default::default()
    };
    let server = atelier::http::start(settings, db.config.clone())
        .await
        .unwrap();
    let a = server.addr;
    // Another session holds a lock the fill needs: PostgreSQL cancels the fill at the limit.
    let mut locker = db.client().await;
    let tx = locker.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE products IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let asked = Instant::now();
    let r = get(a, "/products/2").await;
    assert_eq!((r.status, r.header("retry-after")), (503, Some("1")));
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "{:?}",
        asked.elapsed()
    );
    tx.rollback().await.unwrap();
    assert!(get(a, "/products/2").await.body.contains("Bright Future"));
}

#[tokio::test]
async fn a_connection_whose_reply_never_comes_in_time_is_replaced() {
    let db = common::loaded_database(&common::sample_dir()).await;
    let proxy = Proxy::start(&db.config).await;
    let settings = ServeSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        pool_size: 1,
        db_timeout: Duration::from_millis(400),
        // On demand, so that these reads go to the database.
        precompute: atelier::config::Precompute::None,
        feed_database: Some(db.config.clone()),
        ..Default::default()
    };
    let server = atelier::http::start(settings, proxy.config(&db.config))
        .await
        .unwrap();
    let a = server.addr;
    assert!(get(a, "/products/1").await.body.contains("Camo Onesie"));
    let before = pool_backend(&db).await;
    assert_eq!(before.len(), 1);

    // The network stalls: the reply would come, but far too late.
    proxy.delay_replies(Duration::from_secs(3));
    let asked = Instant::now();
    assert_eq!(get(a, "/products/2").await.status, 503);
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );
    proxy.delay_replies(Duration::ZERO);

    let r = get(a, "/products/3").await;
    assert!(r.body.contains("Morning Joggers"), "{r:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let after = pool_backend(&db).await;
        if after.len() == 1 && after != before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stalled connection was not replaced: {before:?} -> {after:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn pool_and_feed_connections_notice_a_dead_peer() {
    let database: tokio_postgres::Config = "host=db.example user=u dbname=d".parse().unwrap();
    let pool = Pool::new(database.clone(), 1, Duration::from_millis(800));
    let feed = atelier::pg::feed::connection_config(&database, &Default::default());
    for (who, config) in [("pool", pool.config()), ("feed", &feed)] {
        assert!(config.get_keepalives(), "{who}: keepalives");
        assert!(
            config.get_keepalives_retries().is_some(),
            "{who}: keepalive probes"
        );
        assert!(
            config.get_tcp_user_timeout().is_some(),
            "{who}: TCP user timeout"
        );
        assert!(
            config.get_connect_timeout().is_some(),
            "{who}: connect limit"
        );
        assert!(
            config.get_options().is_some_and(|o| o.contains("jit=off")),
            "{who}: no JIT"
        );
    }
}

#[tokio::test]
async fn the_feed_plans_each_read_of_the_log_for_its_own_parameters() {
    let db = common::migrated_database().await;
    let config = atelier::pg::feed::connection_config(&db.config, &Default::default());
    let (client, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let mode: String = client
        .query_one("SHOW plan_cache_mode", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        mode, "force_custom_plan",
        "a generic plan walks the whole log"
    );
}

#[tokio::test]
async fn a_query_given_up_on_is_cancelled_on_the_server_too() {
    let db = common::migrated_database().await;
    let pool = Pool::new(db.config.clone(), 1, Duration::from_millis(300));
    // This session's own limit off, so that only the pool's cancel can stop the query.
    let given_up = Instant::now();
    let result = pool
        .run(|c| async move {
            c.client.batch_execute("SET statement_timeout = 0").await?;
            c.client.batch_execute("SELECT pg_sleep(30)").await
        })
        .await;
    assert!(result.is_err(), "given up at the limit");
    assert!(given_up.elapsed() < Duration::from_secs(2));
    let observer = db.client().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let running: i64 = observer
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                  WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'
                    AND datname = current_database()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if running == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the query still runs on the server after the pool gave up on it"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn dates_are_read_to_the_microsecond_postgresql_counts() {
    use atelier::pg::read::Timestamp;
    let db = common::migrated_database().await;
    let client = db.client().await;
    // Around the epoch and 2000 (where PostgreSQL counts from), before both with fractions
    // (where rounding down and truncating differ), and the years the loader allows. Counted
    // from whole seconds and the microseconds within them, which every PostgreSQL counts
    // exactly (`extract(epoch …)` is a float before PostgreSQL 14, and rounds 9999's last
    // microsecond).
    let rows = client
        .query(
            "SELECT t, floor(us::numeric / 1000)::int8, us
               FROM (SELECT t, extract(epoch FROM date_trunc('second', t))::int8 * 1000000
                               + extract(microseconds FROM t)::int8 % 1000000 AS us
                       FROM unnest(ARRAY['1970-01-01 00:00:00+00', '1969-12-31 23:59:59.999999+00',
                                 '1969-12-31 23:59:59.0005+00', '2000-01-01 00:00:00+00',
                                 '1999-12-31 23:59:59.999501+00', '2019-01-06 18:24:35.123456+00',
                                 '0001-01-01 00:00:00+00', '9999-12-31 23:59:59.999999+00',
                                 '1905-07-11 12:00:00.000001+00', now()]::timestamptz[]) AS t) AS d",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 10);
    for row in rows {
        let date: Timestamp = row.get(0);
        assert_eq!(
            (date.millis(), date.micros()),
            (row.get::<_, i64>(1), row.get::<_, i64>(2))
        );
    }
}

#[tokio::test]
async fn a_row_with_a_date_no_body_can_show_is_a_500_and_the_rest_still_serves() {
    let (db, server) = common::server_with_data(&common::sample_dir()).await;
    let a = server.addr;
    // Migration 9 refuses such a date; a database whose check was dropped by hand can hold one.
    db.client()
        .await
        .batch_execute(
            "ALTER TABLE reviews DROP CONSTRAINT reviews_date_shown;
             UPDATE reviews SET date = 'infinity' WHERE id = 3",
        )
        .await
        .unwrap();
    // Review 3 is product 2's: its refresh fails and drops the list; a read fills it again
    // and fails the same way.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = get(a, "/reviews?product_id=2").await;
        if reply.status == 500 {
            break;
        }
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert!(
            Instant::now() < deadline,
            "the infinite date was never read"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(get(a, "/reviews?product_id=1").await.status, 200);
    assert_eq!(get(a, "/products/2").await.status, 200);
}
