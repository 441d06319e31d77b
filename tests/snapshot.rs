//! Warm restarts: an instance writes its catalog to a snapshot with the change feed's
//! position, and the next start loads it instead of scanning, replays what changed since
//! (including a transaction that was open when the snapshot was taken), and serves exactly
//! what a fresh render gives. A snapshot that is damaged, cut short, from another database or
//! schema, or past the pruned log is not used: the instance warms from scratch. The binary writes one
//! when it stops and loads it when it starts again.

mod common;

use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use atelier::cache::snapshot::FILE_NAME;
use atelier::cache::Key;
use atelier::config::{ServeSettings, SnapshotSettings};
use atelier::pg::pool::Pool;
use common::{
    every_entry_is_fresh, get, post_json, put, ready, serve_with, settled, stop, KillOnDrop,
    TempDir,
};

fn settings(snapshots: &Path) -> ServeSettings {
    ServeSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        pool_size: 2,
        sweep_period: None,
        snapshot: Some(SnapshotSettings {
            dir: snapshots.to_path_buf(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn generated(label: &str) -> TempDir {
    common::generated(label, 0.0005, 11)
}

/// How many product, review-list and answer-list bodies `keys` name.
fn kinds(keys: &[Key]) -> [usize; 3] {
    let mut kinds = [0; 3];
    for key in keys {
        match key {
            Key::Product(_) => kinds[0] += 1,
            Key::Reviews { .. } => kinds[1] += 1,
            Key::Answers(_) => kinds[2] += 1,
            _ => {}
        }
    }
    kinds
}

async fn snapshot_of(server: &atelier::http::Running) -> atelier::cache::snapshot::Written {
    server
        .app
        .save_snapshot()
        .await
        .expect("a snapshot")
        .expect("snapshots are configured")
}

#[tokio::test]
async fn a_restart_from_a_snapshot_replays_what_changed_and_serves_fresh_bodies() {
    let data = generated("snapshot-restart");
    let db = common::loaded_database(data.path()).await;
    let snapshots = TempDir::new("snapshot-dir");
    let first = atelier::http::start(settings(snapshots.path()), db.config.clone())
        .await
        .unwrap();
    ready(first.addr).await;
    let a = first.addr;
    // Writes of every kind before the snapshot, so that it holds refreshed bodies.
    let review = r#"{"product_id":2,"rating":4,"summary":"s","body":"before the snapshot","recommend":true,
        "name":"n","email":"n@example.com","photos":[],"characteristics":{}}"#;
    assert_eq!(post_json(a, "/reviews", review).await.status, 201);
    assert_eq!(put(a, "/qa/answers/1/helpful").await.status, 204);
    settled(&first).await;
    let products = first.app.cache.stats().catalog_entries;
    assert!(products > 0);

    // A transaction open when the snapshot is taken: its change is pending at the snapshot's
    // position, and must be read once it commits, after the restart.
    let open = db.client().await;
    open.batch_execute(
        "BEGIN; UPDATE products SET name = 'Committed After The Snapshot' WHERE id = 3;",
    )
    .await
    .unwrap();
    // A write committed after it: the feed's position passes the open transaction's change,
    // which it can only hold pending.
    assert_eq!(put(a, "/reviews/1/helpful").await.status, 204);
    settled(&first).await;
    let written = snapshot_of(&first).await;
    assert!(written.bodies > 0 && written.bytes > 0);
    assert!(snapshots.path().join(FILE_NAME).exists());
    first.stop().await.unwrap();

    // Changes while no instance runs.
    open.batch_execute("COMMIT").await.unwrap();
    db.client()
        .await
        .batch_execute(
            "UPDATE products SET name = 'Renamed While Down' WHERE id = 1;
             UPDATE reviews SET helpfulness = helpfulness + 1000 WHERE id = (SELECT min(id) FROM reviews WHERE product_id = 4);
             UPDATE answers SET body = 'edited while down' WHERE id = 2;
             DELETE FROM related WHERE product_id = 5;",
        )
        .await
        .unwrap();

    let second = atelier::http::start(settings(snapshots.path()), db.config.clone())
        .await
        .unwrap();
    ready(second.addr).await;
    let b = second.addr;
    let app = &second.app;
    assert_eq!(app.snapshots.restored.load(Relaxed), 1, "restored");
    assert_eq!(app.snapshots.refused.load(Relaxed), 0);
    assert_eq!(
        app.warmup.completed.load(Relaxed),
        0,
        "no scan: the catalog came from the snapshot"
    );
    assert!(get(b, "/products/1")
        .await
        .body
        .contains("Renamed While Down"));
    assert!(get(b, "/products/3")
        .await
        .body
        .contains("Committed After The Snapshot"));
    assert!(get(b, "/reviews?product_id=2&count=100")
        .await
        .body
        .contains("before the snapshot"));
    settled(&second).await;
    let pool = Pool::new(db.config.clone(), 2, Duration::from_secs(5));
    let [products_held, reviews_held, answers_held] =
        kinds(&every_entry_is_fresh(&second, &pool).await);
    assert!(products_held > 0 && reviews_held > 0 && answers_held > 0);
    // Every GET is a hit: the catalog was loaded whole.
    let misses = app.cache.stats().misses;
    for path in [
        "/products/2",
        "/products/2/styles",
        "/products/2/related",
        "/reviews?product_id=2&sort=newest",
        "/reviews/meta?product_id=2",
        "/qa/questions?product_id=2",
    ] {
        assert_eq!(get(b, path).await.status, 200, "{path}");
        assert_eq!(
            app.cache.stats().misses,
            misses,
            "{path}: no miss after a restore"
        );
    }
    assert!(app.cache.stats().catalog_entries >= products - 10);
    // And the metrics say so.
    let metrics = get(b, "/metrics").await.body;
    assert!(
        metrics.contains("atelier_snapshot_restored_total 1"),
        "{metrics}"
    );
    second.stop().await.unwrap();
}

/// Starts an instance over `db` with `snapshots`, waits until it is ready, and returns it
/// with why it did not restore the snapshot (None: it did; it scanned otherwise).
async fn start_and_see(
    db: &common::TestDb,
    snapshots: &Path,
) -> (atelier::http::Running, Option<String>) {
    let server = atelier::http::start(settings(snapshots), db.config.clone())
        .await
        .unwrap();
    ready(server.addr).await;
    let restored = server.app.snapshots.restored.load(Relaxed) == 1;
    let scanned = server.app.warmup.completed.load(Relaxed) == 1;
    assert!(restored != scanned, "one or the other");
    let refusal = server.app.snapshots.last_refusal.lock().unwrap().clone();
    assert_eq!(refusal.is_none(), restored, "{refusal:?}");
    (server, refusal)
}

/// Asserts that an instance did not restore, for `why`.
fn refused(refusal: Option<String>, why: &str) {
    let refusal = refusal.expect("not restored");
    assert!(refusal.contains(why), "{refusal}");
}

#[tokio::test]
async fn a_snapshot_that_cannot_be_trusted_is_not_used() {
    let db = common::loaded_database(&common::sample_dir()).await;
    let snapshots = TempDir::new("snapshot-untrusted");
    let path = snapshots.path().join(FILE_NAME);
    let first = atelier::http::start(settings(snapshots.path()), db.config.clone())
        .await
        .unwrap();
    ready(first.addr).await;
    assert_eq!(
        first.app.warmup.completed.load(Relaxed),
        1,
        "nothing to restore"
    );
    snapshot_of(&first).await;
    first.stop().await.unwrap();
    let good = std::fs::read(&path).unwrap();

    // Sound: restored.
    let (server, refusal) = start_and_see(&db, snapshots.path()).await;
    assert_eq!(refusal, None);
    server.stop().await.unwrap();

    // A byte changed in the middle, and a file cut short (as a crash mid-write would leave a
    // file written in place, which this one never is): warmed from scratch, and correct.
    let mut flipped = good.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x20;
    let cut = good[..good.len() - 5].to_vec();
    for (bytes, why) in [(flipped, "checksum"), (cut, "cut short")] {
        std::fs::write(&path, bytes).unwrap();
        let (server, refusal) = start_and_see(&db, snapshots.path()).await;
        refused(refusal, why);
        assert!(get(server.addr, "/products/1").await.status == 200);
        let pool = Pool::new(db.config.clone(), 2, Duration::from_secs(5));
        assert!(kinds(&every_entry_is_fresh(&server, &pool).await)[0] > 0);
        server.stop().await.unwrap();
    }

    // Another database with the same data: refused.
    std::fs::write(&path, &good).unwrap();
    let other = common::loaded_database(&common::sample_dir()).await;
    let (server, refusal) = start_and_see(&other, snapshots.path()).await;
    refused(refusal, "another database");
    server.stop().await.unwrap();

    // A migration since, and a table changed by hand since: refused.
    let owner = db.client().await;
    for (change, undo) in [
        (
            "INSERT INTO schema_migrations (version, name, checksum) VALUES (999, 'later', 0)",
            "DELETE FROM schema_migrations WHERE version = 999",
        ),
        (
            "ALTER TABLE products ADD COLUMN note text",
            "ALTER TABLE products DROP COLUMN note",
        ),
    ] {
        std::fs::write(&path, &good).unwrap();
        owner.batch_execute(change).await.unwrap();
        let (server, refusal) = start_and_see(&db, snapshots.path()).await;
        refused(refusal, "another database");
        server.stop().await.unwrap();
        owner.batch_execute(undo).await.unwrap();
    }

    // The log pruned past the snapshot's position: refused.
    std::fs::write(&path, &good).unwrap();
    owner
        .batch_execute("UPDATE change_log_pruned SET through = through + 1000000")
        .await
        .unwrap();
    let (server, refusal) = start_and_see(&db, snapshots.path()).await;
    refused(refusal, "pruned past");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn while_it_restores_an_instance_serves_fresh_bodies_and_keeps_its_own_writes() {
    let db = common::loaded_database(&common::sample_dir()).await;
    let snapshots = TempDir::new("snapshot-window");
    let first = atelier::http::start(settings(snapshots.path()), db.config.clone())
        .await
        .unwrap();
    ready(first.addr).await;
    snapshot_of(&first).await;
    first.stop().await.unwrap();
    let review = db
        .client()
        .await
        .query_one(
            "SELECT id, product_id, helpfulness FROM reviews WHERE NOT reported ORDER BY id LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    let (review, product, helpfulness): (i64, i64, i32) =
        (review.get(0), review.get(1), review.get(2));
    let voted = format!(r#""helpfulness":{}"#, helpfulness + 1);
    let reviews = format!("/reviews?product_id={product}&count=100");

    // The restore waits before loading the snapshot, and again before the feed replays the
    // log: the instance serves meanwhile (as nginx would send it requests).
    let mut s = settings(snapshots.path());
    if let Some(snapshot) = &mut s.snapshot {
        snapshot.pause_before_load = Duration::from_millis(2000);
        snapshot.pause_before_replay = Duration::from_millis(2000);
    }
    let second = atelier::http::start(s, db.config.clone()).await.unwrap();
    let b = second.addr;
    let app = &second.app;
    // A write before the snapshot is loaded: the load must not overwrite its bodies.
    assert_eq!(app.snapshots.restored.load(Relaxed), 0);
    assert!(app.cache.is_restoring());
    assert_eq!(
        put(b, &format!("/reviews/{review}/helpful")).await.status,
        204
    );
    assert!(get(b, &reviews).await.body.contains(&voted));
    // (The load had not begun: it sets the products it loads.)
    assert_eq!(
        app.warmup.products_total.load(Relaxed),
        0,
        "written before the load"
    );
    // Loaded, not yet replayed: a change made elsewhere meanwhile is what a read gets, not the
    // snapshot's body from before it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.snapshots.restored.load(Relaxed) == 0 {
        assert!(Instant::now() < deadline, "never loaded");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(app.cache.is_restoring(), "still replaying");
    db.client()
        .await
        .batch_execute("UPDATE products SET name = 'Renamed While Restoring' WHERE id = 2")
        .await
        .unwrap();
    assert!(get(b, "/products/2")
        .await
        .body
        .contains("Renamed While Restoring"));
    assert!(app.cache.is_restoring(), "read before the replay");
    assert_ne!(get(b, "/readyz").await.body, "ready");
    ready(b).await;
    assert!(!app.cache.is_restoring());
    // Restored and current: both changes (the written key was not loaded: its first read
    // fills it), then from the cache.
    assert!(get(b, &reviews).await.body.contains(&voted));
    let misses = app.cache.stats().misses;
    assert!(get(b, &reviews).await.body.contains(&voted));
    assert!(get(b, "/products/2")
        .await
        .body
        .contains("Renamed While Restoring"));
    assert_eq!(app.cache.stats().misses, misses, "hits");
    settled(&second).await;
    let pool = Pool::new(db.config.clone(), 2, Duration::from_secs(5));
    every_entry_is_fresh(&second, &pool).await;
    second.stop().await.unwrap();
}

#[tokio::test]
async fn snapshots_are_written_every_period() {
    let db = common::loaded_database(&common::sample_dir()).await;
    let snapshots = TempDir::new("snapshot-period");
    let mut s = settings(snapshots.path());
    if let Some(snapshot) = &mut s.snapshot {
        snapshot.period = Some(Duration::from_millis(200));
    }
    let server = atelier::http::start(s, db.config.clone()).await.unwrap();
    ready(server.addr).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.app.snapshots.written.load(Relaxed) < 2 {
        assert!(Instant::now() < deadline, "no periodic snapshots");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(snapshots.path().join(FILE_NAME).exists());
    server.stop().await.unwrap();
}

/// `atelier serve` with `snapshots`, until it is ready: its address and its process.
fn serve(db: &common::TestDb, snapshots: &Path) -> (std::net::SocketAddr, KillOnDrop) {
    serve_with(db, snapshots, &[])
}

#[tokio::test]
async fn serve_writes_a_snapshot_when_it_stops_and_restores_it_when_it_starts() {
    let db = common::loaded_database(&common::sample_dir()).await;
    let snapshots = TempDir::new("snapshot-binary");
    let (addr, mut child) = serve(&db, snapshots.path());
    ready(addr).await;
    assert!(!snapshots.path().join(FILE_NAME).exists());
    stop(&mut child);
    assert!(
        snapshots.path().join(FILE_NAME).exists(),
        "written at shutdown"
    );

    let (addr, _child) = serve(&db, snapshots.path());
    ready(addr).await;
    assert_restored(addr).await;
    let metrics = get(addr, "/metrics").await.body;
    assert!(
        metrics.contains("atelier_warmup_completed_total 0"),
        "{metrics}"
    );
}

/// Asserts that the server at `addr` restored its catalog from a snapshot.
async fn assert_restored(addr: std::net::SocketAddr) {
    let metrics = get(addr, "/metrics").await.body;
    assert!(
        metrics.contains("atelier_snapshot_restored_total 1"),
        "{metrics}"
    );
}

/// The sizes of the list and body dictionaries the server at `addr` packs against (0: none).
async fn dictionary_bytes(addr: std::net::SocketAddr) -> [usize; 2] {
    [
        common::dictionary_gauge(addr, "lists").await,
        common::dictionary_gauge(addr, "bodies").await,
    ]
}

#[tokio::test]
async fn a_restart_restores_the_dictionaries_the_snapshots_bodies_are_packed_against() {
    let data = generated("snapshot-dictionary");
    let db = common::loaded_database(data.path()).await;
    let questions = db.ids("SELECT id FROM questions ORDER BY id").await;
    let products = db.ids("SELECT id FROM products ORDER BY id").await;
    // Every answers list and every product's styles: lists and whole bodies.
    let pages = |addr| {
        let (questions, products) = (&questions, &products);
        async move {
            let mut pages = Vec::new();
            for q in questions {
                let path = format!("/qa/questions/{q}/answers?count=100");
                pages.push(get(addr, &path).await.body);
            }
            for p in products {
                pages.push(get(addr, &format!("/products/{p}/styles")).await.body);
            }
            pages
        }
    };
    let snapshots = TempDir::new("snapshot-dictionary-files");
    let dense = ["--compress", "dense"];
    let sample = [&dense[..], &["--dictionary-sample-kb", "64"]].concat();
    let (addr, mut child) = serve_with(&db, snapshots.path(), &sample);
    ready(addr).await;
    let trained = dictionary_bytes(addr).await;
    assert!(trained.iter().all(|&b| b > 0), "the warm-up trained both");
    let before = pages(addr).await;
    stop(&mut child);

    // An instance that samples nothing has dictionaries only if its snapshot gave them.
    let sample_none = [&dense[..], &["--dictionary-sample-kb", "0"]].concat();
    let (addr, child) = serve_with(&db, snapshots.path(), &sample_none);
    ready(addr).await;
    assert_restored(addr).await;
    assert_eq!(
        dictionary_bytes(addr).await,
        trained,
        "restored with its bodies"
    );
    assert_eq!(pages(addr).await, before);
    drop(child);

    // Without a snapshot, it has none: lists are deflated, whole bodies kept gzip.
    let empty = TempDir::new("snapshot-dictionary-none");
    let (addr, _child) = serve_with(&db, empty.path(), &sample_none);
    ready(addr).await;
    assert_eq!(dictionary_bytes(addr).await, [0, 0]);
    assert_eq!(pages(addr).await, before);
}

/// What `addr` sends a client that takes gzip for each product page body of the last
/// `products`: status, entity tag and the bytes as they came.
async fn gzip_answers(addr: std::net::SocketAddr, products: &[i64]) -> Vec<(u16, String, Vec<u8>)> {
    let mut answers = Vec::new();
    for p in products {
        for path in [
            format!("/products/{p}"),
            format!("/products/{p}/styles"),
            format!("/reviews/meta?product_id={p}"),
            format!("/reviews?product_id={p}&count=5"),
            format!("/qa/questions?product_id={p}&count=5"),
        ] {
            let raw = format!(
                "GET {path} HTTP/1.1\r\nHost: test\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n"
            );
            let r = common::send_raw(addr, raw.as_bytes()).await;
            let tag = r.header("etag").unwrap_or_default().to_owned();
            answers.push((r.status, tag, r.raw_body));
        }
    }
    answers
}

#[tokio::test]
async fn a_restart_restores_the_shared_codes_the_snapshots_bodies_are_written_in() {
    let data = generated("snapshot-codes");
    let db = common::loaded_database(data.path()).await;
    let products = db
        .ids("SELECT id FROM products ORDER BY id DESC LIMIT 30")
        .await;
    let snapshots = TempDir::new("snapshot-code-files");
    // The codes trained on the first 16 KiB of each kind: the last products are written in
    // them.
    let (addr, mut child) = serve_with(&db, snapshots.path(), &["--dictionary-sample-kb", "16"]);
    ready(addr).await;
    let before = gzip_answers(addr, &products).await;
    stop(&mut child);

    // An instance that samples nothing has codes only if its snapshot gave them: then it
    // sends the very same members under the same tags.
    let sample_none = ["--dictionary-sample-kb", "0"];
    let (addr, child) = serve_with(&db, snapshots.path(), &sample_none);
    ready(addr).await;
    assert_restored(addr).await;
    assert_eq!(gzip_answers(addr, &products).await, before);
    drop(child);

    // Without a snapshot it has none: the same bodies go out as whole members, other bytes
    // under other tags.
    let empty = TempDir::new("snapshot-code-none");
    let (addr, _child) = serve_with(&db, empty.path(), &sample_none);
    ready(addr).await;
    let whole = gzip_answers(addr, &products).await;
    let differ = whole
        .iter()
        .zip(&before)
        .filter(|(a, b)| a.1 != b.1 && a.2 != b.2)
        .count();
    assert!(
        differ > whole.len() / 2,
        "{differ} of {} sent otherwise without the codes",
        whole.len()
    );
}
