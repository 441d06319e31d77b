//! A snapshot whose bodies are packed against other dictionaries than the ones this process
//! already packs against is not restored: the instance warms from scratch and serves what a
//! fresh render gives. A test binary of its own: the dictionaries are the process's, and this
//! test decides which ones it has.

mod common;

use std::sync::atomic::Ordering::Relaxed;

use atelier::config::{ServeSettings, SnapshotSettings};
use atelier::render::compress::{self, DictionaryKind};
use atelier::render::Compaction;
use common::{get, ready, serve_with, stop, TempDir};

/// Every answers list and every product's styles at `addr`: lists and whole bodies.
async fn pages(addr: std::net::SocketAddr, db: &common::TestDb) -> Vec<String> {
    let mut pages = Vec::new();
    for q in db.ids("SELECT id FROM questions ORDER BY id").await {
        let path = format!("/qa/questions/{q}/answers?count=100");
        pages.push(get(addr, &path).await.body);
    }
    for p in db.ids("SELECT id FROM products ORDER BY id").await {
        pages.push(get(addr, &format!("/products/{p}/styles")).await.body);
    }
    pages
}

#[tokio::test]
async fn a_snapshot_packed_against_other_dictionaries_than_the_processs_is_not_restored() {
    // Another process trains its dictionaries on this set and leaves a snapshot of it.
    let data = common::generated("refused-dictionary", 0.0005, 13);
    let db = common::loaded_database(data.path()).await;
    let snapshots = TempDir::new("refused-dictionary-files");
    let dense = ["--compress", "dense", "--dictionary-sample-kb", "64"];
    let (addr, mut child) = serve_with(&db, snapshots.path(), &dense);
    ready(addr).await;
    assert!(common::dictionary_gauge(addr, "bodies").await > 0);
    let before = pages(addr, &db).await;
    stop(&mut child);

    // This process trains its own on another set.
    let other = common::generated("refused-dictionary-other", 0.0005, 14);
    let other = common::loaded_database(other.path()).await;
    let trainer = common::server_training_dictionaries(&other, Compaction::Dense).await;
    trainer.stop().await.unwrap();
    assert!(DictionaryKind::ALL
        .into_iter()
        .all(|kind| compress::dictionary(kind).is_some()));

    let settings = ServeSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        pool_size: 2,
        sweep_period: None,
        compaction: Compaction::Dense,
        dictionary_sample_bytes: 0,
        snapshot: Some(SnapshotSettings {
            dir: snapshots.path().to_path_buf(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let server = atelier::http::start(settings, db.config.clone())
        .await
        .unwrap();
    ready(server.addr).await;
    assert_eq!(server.app.snapshots.restored.load(Relaxed), 0);
    assert_eq!(
        server.app.warmup.completed.load(Relaxed),
        1,
        "warmed by a scan"
    );
    let refusal = server.app.snapshots.last_refusal.lock().unwrap().clone();
    let refusal = refusal.expect("the snapshot was refused");
    assert!(refusal.contains("against another dictionary"), "{refusal}");
    assert_eq!(pages(server.addr, &db).await, before);
}
