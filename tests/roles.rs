//! Least privilege: an instance logged in as a member of `atelier_serve` (migration 5) warms
//! up, follows the change feed, prunes the log and serves every read and write of the API,
//! and that role can do nothing else: no DDL, no trigger control, no TRUNCATE, no writes the
//! API does not make (the change log included: its triggers and its pruning run as the
//! owner), and no access to the migrations' and the loader's bookkeeping.

mod common;

use std::time::{Duration, Instant};

use atelier::config::ServeSettings;
use common::{eventually, get, post_json, put, sample_dir};
use tokio_postgres::error::SqlState;

#[tokio::test]
async fn an_instance_serves_as_the_serving_role_which_can_do_nothing_else() {
    let db = common::loaded_database(&sample_dir()).await;
    let owner = db.client().await;
    let login = format!("{}_web", db.name);
    owner
        .batch_execute(&format!("CREATE ROLE {login} LOGIN IN ROLE atelier_serve"))
        .await
        .unwrap();
    let mut config = db.config.clone();
    config.user(&login);

    let snapshots = common::TempDir::new("roles-snapshots");
    let settings = ServeSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        pool_size: 2,
        sweep_period: Some(Duration::from_secs(1)),
        snapshot: Some(atelier::config::SnapshotSettings {
            dir: snapshots.path().into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let server = atelier::http::start(settings.clone(), config.clone())
        .await
        .unwrap();
    let a = server.addr;
    assert_eq!(eventually(a, "/readyz", |b| b == "ready").await, "ready");

    for path in [
        "/products",
        "/products/1",
        "/products/1/styles",
        "/products/1/related",
        "/reviews?product_id=1",
        "/reviews/meta?product_id=1",
        "/qa/questions?product_id=1",
        "/qa/questions/1/answers",
        "/cart",
    ] {
        assert_eq!(get(a, path).await.status, 200, "{path}");
    }
    let review = r#"{"product_id":2,"rating":3,"summary":"Okay","body":"Decent lenses.","recommend":false,
        "name":"newbie","email":"new@example.com","photos":["https://example.com/a.jpg"],
        "characteristics":{"5":3}}"#;
    let question =
        r#"{"body":"Does it fit?","name":"asker","email":"a@example.com","product_id":1}"#;
    let answer = r#"{"body":"Yes.","name":"answerer","email":"b@example.com","photos":["https://example.com/c.jpg"]}"#;
    for (path, body) in [
        ("/reviews", review),
        ("/qa/questions", question),
        ("/qa/questions/1/answers", answer),
        ("/cart", r#"{"sku_id":1}"#),
        (
            "/interactions",
            r#"{"element":"img","widget":"Overview","time":"t"}"#,
        ),
    ] {
        let r = post_json(a, path, body).await;
        assert_eq!(r.status, 201, "POST {path}: {}", r.body);
        // A retry key is claimed with the serving role's grants.
        let r =
            common::post_json_with_key(a, path, body, &format!("key{}", path.replace('/', "-")))
                .await;
        assert_eq!(r.status, 201, "POST {path} with a key: {}", r.body);
    }
    assert_eq!(
        common::count(&owner, "applied_requests WHERE id LIKE 'post % key-%'").await,
        5,
        "each keyed POST claimed its key"
    );
    for path in [
        "/reviews/1/helpful",
        "/reviews/1/report",
        "/qa/questions/1/helpful",
        "/qa/questions/2/report",
        "/qa/answers/1/helpful",
        "/qa/answers/2/report",
    ] {
        assert_eq!(put(a, path).await.status, 204, "PUT {path}");
    }
    // The feed, connected as the serving role, brings the owner's own change.
    owner
        .execute("UPDATE products SET name = 'Renamed' WHERE id = 1", &[])
        .await
        .unwrap();
    let body = eventually(a, "/products/1", |b| b.contains("Renamed")).await;
    assert!(body.contains("Renamed"), "{body}");
    // A warm restart's snapshot is written as the serving role (it names the database's
    // identity and migrations, read through a function that runs as the owner).
    let written = server
        .app
        .save_snapshot()
        .await
        .expect("a snapshot as the serving role")
        .expect("snapshots are configured");
    assert!(written.bodies > 0);
    // And restored as the serving role (it reads the database's state on a connection of its
    // own).
    let mut restoring = settings.clone();
    restoring.sweep_period = None;
    let second = atelier::http::start(restoring, config.clone())
        .await
        .unwrap();
    assert_eq!(
        eventually(second.addr, "/readyz", |b| b == "ready").await,
        "ready"
    );
    assert_eq!(
        second
            .app
            .snapshots
            .restored
            .load(std::sync::atomic::Ordering::Relaxed),
        1,
        "{:?}",
        second.app.snapshots.last_refusal.lock().unwrap()
    );
    second.stop().await.unwrap();
    // And it may prune the log, but not below the retention the owner set (an hour by
    // default), however often and with whatever retention it asks.
    let serving = atelier::pg::connect(&config).await.unwrap();
    let logged = common::count(&owner, "change_log").await;
    assert!(logged > 0);
    for retention in ["0", "-1", "'NaN'", "NULL", "'-Infinity'"] {
        serving
            .batch_execute(&format!("SELECT atelier_prune_change_log({retention})"))
            .await
            .expect("prune as the serving role");
    }
    atelier::pg::feed::prune(&serving, Duration::ZERO)
        .await
        .expect("prune as the serving role");
    // Nor through tables of its own that stand in for the log's in the function's path (in a
    // session of their own: they would shadow the real ones for the checks below).
    atelier::pg::connect(&config)
        .await
        .unwrap()
        .batch_execute(
            "CREATE TEMP TABLE change_log_prune_runs (at timestamptz, ended_below bigint);
             INSERT INTO change_log_prune_runs VALUES ('2000-01-01', 9223372036854775807);
             CREATE TEMP TABLE change_log_pruned (one boolean, through bigint, min_retention_s float8);
             INSERT INTO change_log_pruned VALUES (true, 0, 0);
             SELECT atelier_prune_change_log(0);",
        )
        .await
        .expect("prune with stand-ins in place");
    assert_eq!(
        common::count(&owner, "change_log").await,
        logged,
        "nothing pruned"
    );
    // The instance's own connections (pool and feed) are the serving role's.
    let row = owner
        .query_one(
            "SELECT count(*) FILTER (WHERE usename = $1), count(*) FROM pg_stat_activity
              WHERE application_name IN ('atelier pool', 'atelier change feed')
                AND datname = current_database()",
            &[&login],
        )
        .await
        .unwrap();
    let (theirs, all): (i64, i64) = (row.get(0), row.get(1));
    assert!(theirs >= 2 && theirs == all, "{theirs} of {all}");
    let metrics = get(a, "/metrics").await.body;
    assert!(
        !metrics.contains("atelier_cache_drift_total 1"),
        "{metrics}"
    );

    let started = Instant::now();
    for forbidden in [
        "CREATE TABLE mine (id int)",
        "ALTER TABLE reviews DISABLE TRIGGER log_change",
        "ALTER TABLE reviews ADD COLUMN extra int",
        "DROP TABLE interactions",
        "TRUNCATE change_log",
        "SELECT * FROM schema_migrations",
        "SELECT * FROM loader_deferred_ddl",
        "SELECT * FROM interactions",
        "DELETE FROM products",
        "DELETE FROM reviews",
        "UPDATE reviews SET body = 'rewritten'",
        "UPDATE products SET name = 'mine'",
        "INSERT INTO products (name, slogan, description, category, default_price) VALUES ('a','b','c','d',1)",
        "CREATE ROLE another",
        "INSERT INTO change_log (kind, id, xid) VALUES ('all', 0, 0)",
        "SELECT atelier_log_change('all', 0, NULL)",
        "DELETE FROM change_log",
        "UPDATE change_log_pruned SET through = 0",
        "UPDATE change_log_pruned SET min_retention_s = 0",
        "CREATE TEMP TABLE t (id bigint);
         CREATE TRIGGER forged AFTER TRUNCATE ON t EXECUTE FUNCTION atelier_truncated()",
        "CREATE TEMP TABLE u (id bigint);
         CREATE TRIGGER forged AFTER INSERT ON u FOR EACH ROW
             EXECUTE FUNCTION atelier_changed_by_id('all')",
        "CREATE TEMP TABLE v (id bigint, characteristic_id bigint, review_id bigint);
         CREATE TRIGGER forged AFTER INSERT ON v FOR EACH ROW
             EXECUTE FUNCTION atelier_changed_characteristic_review()",
        "CREATE TEMP TABLE w (id bigint, product_id bigint, reported boolean);
         CREATE TRIGGER forged AFTER UPDATE ON w FOR EACH ROW
             EXECUTE FUNCTION atelier_changed_review_visibility()",
        "CREATE TEMP TABLE x (id bigint, question_id bigint);
         CREATE TRIGGER forged AFTER INSERT ON x FOR EACH ROW
             EXECUTE FUNCTION atelier_changed_answer()",
        "CREATE TEMP TABLE y (id bigint, answer_id bigint);
         CREATE TRIGGER forged AFTER INSERT ON y FOR EACH ROW
             EXECUTE FUNCTION atelier_changed_by_answer()",
    ] {
        let e = serving
            .batch_execute(forbidden)
            .await
            .expect_err(forbidden);
        assert_eq!(
            e.code(),
            Some(&SqlState::INSUFFICIENT_PRIVILEGE),
            "{forbidden}: {e:?}"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn every_trigger_function_runs_as_the_owner_on_a_fixed_path_and_no_one_else_may_call_it() {
    let db = common::loaded_database(&sample_dir()).await;
    let owner = db.client().await;
    // A migration that replaces a function (CREATE OR REPLACE) resets what migration 5 set.
    let loose: Vec<String> = owner
        .query(
            "SELECT p.proname::text FROM pg_proc p
               JOIN pg_namespace n ON n.oid = p.pronamespace
              WHERE n.nspname = 'public' AND p.prorettype = 'trigger'::regtype
                AND (NOT p.prosecdef
                     OR NOT coalesce('search_path=pg_catalog, public, pg_temp' = ANY (p.proconfig), false)
                     OR has_function_privilege('public', p.oid, 'EXECUTE'))",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(loose.is_empty(), "{loose:?}");
    let checked: i64 = owner
        .query_one(
            "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
              WHERE n.nspname = 'public' AND p.prorettype = 'trigger'::regtype",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(checked >= 10, "{checked} trigger functions");
}
