//! A catalog sharded across instances behind nginx (`--shard I/N`, `atelier shards nginx`):
//! three shards of a generated catalog, two instances each, behind the nginx configuration the
//! server prints. Every key is precomputed by exactly one shard; every GET through nginx
//! answers exactly what one unsharded instance answers (each reply also checked against
//! `openapi.yaml`), and is a hit on the instance nginx routed it to; with one instance of a
//! shard stopped, its twin serves.

mod common;

use std::collections::BTreeSet;

use atelier::cache::Key;
use atelier::config::ServeSettings;
use atelier::shard::Shard;
use common::{get, ready, TempDir};

fn settings(shard: Option<Shard>) -> ServeSettings {
    ServeSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        pool_size: 2,
        sweep_period: None,
        shard,
        ..Default::default()
    }
}

/// nginx, run from `dir` with `config` (an `http`-level include) until dropped.
struct Nginx {
    dir: TempDir,
}

impl Nginx {
    fn start(config: &str) -> Nginx {
        let dir = TempDir::new("shards-nginx");
        // nginx's workers drop to an unprivileged user when started as root.
        let _ = std::process::Command::new("chmod")
            .args(["755", &dir.path().to_string_lossy()])
            .status();
        let path = dir.path();
        std::fs::write(path.join("atelier.conf"), config).unwrap();
        std::fs::write(
            path.join("nginx.conf"),
            format!(
                "worker_processes 1;\npid {p}/nginx.pid;\nerror_log {p}/error.log;\n\
                 events {{ worker_connections 1024; }}\n\
                 http {{\n    access_log off;\n    client_body_temp_path {p}/body;\n    \
                 proxy_temp_path {p}/proxy;\n    fastcgi_temp_path {p}/fastcgi;\n    \
                 uwsgi_temp_path {p}/uwsgi;\n    scgi_temp_path {p}/scgi;\n    \
                 include {p}/atelier.conf;\n}}\n",
                p = path.display()
            ),
        )
        .unwrap();
        let nginx = ["nginx", "/usr/sbin/nginx"]
            .into_iter()
            .find(|n| {
                std::process::Command::new(n)
                    .arg("-v")
                    .output()
                    .is_ok_and(|o| o.status.success())
            })
            .expect("nginx is installed (apt-get install nginx-light; .ci/run installs it)");
        let status = std::process::Command::new(nginx)
            .arg("-c")
            .arg(path.join("nginx.conf"))
            .status()
            .expect("run nginx");
        assert!(
            status.success(),
            "nginx refused the generated configuration"
        );
        Nginx { dir }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("nginx.pid")) {
            let _ = std::process::Command::new("kill").arg(pid.trim()).status();
        }
    }
}

#[tokio::test]
async fn three_shards_behind_nginx_answer_as_one_instance_and_survive_losing_one() {
    let data = common::generated("shards-data", 0.0005, 21);
    let db = common::loaded_database(data.path()).await;
    let whole = atelier::http::start(settings(None), db.config.clone())
        .await
        .unwrap();
    let mut shards = Vec::new();
    for index in 0..3 {
        let shard = Some(Shard { index, count: 3 });
        let mut twins = Vec::new();
        for _ in 0..2 {
            twins.push(
                atelier::http::start(settings(shard), db.config.clone())
                    .await
                    .unwrap(),
            );
        }
        shards.push(twins);
    }
    for server in std::iter::once(&whole).chain(shards.iter().flatten()) {
        ready(server.addr).await;
    }

    // Each body is precomputed by exactly one shard, key for key (the products pages, which
    // name no product, by every instance).
    let catalog = |s: &atelier::http::Running| -> BTreeSet<String> {
        s.app
            .cache
            .keys()
            .into_iter()
            .filter(|k| !matches!(k, Key::ProductsPage { .. }))
            .map(|k| format!("{k:?}"))
            .collect()
    };
    let mut union = BTreeSet::new();
    for twins in &shards {
        let held = catalog(&twins[0]);
        assert!(!held.is_empty());
        assert_eq!(held, catalog(&twins[1]), "twins hold the same");
        assert!(union.is_disjoint(&held), "a key in two shards");
        union.extend(held);
    }
    assert_eq!(union, catalog(&whole), "the shards hold the whole catalog");

    // nginx, configured by the server's own shard map.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let map: Vec<Vec<String>> = shards
        .iter()
        .map(|twins| twins.iter().map(|s| s.addr.to_string()).collect())
        .collect();
    let _nginx = Nginx::start(&atelier::shard::nginx_config(
        &map,
        &format!("127.0.0.1:{port}"),
    ));
    let lb: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    ready(lb).await;

    let client = db.client().await;
    // Ids across the whole range (of one to four digits here), every sixth.
    let products: Vec<i64> = client
        .query("SELECT id FROM products WHERE id % 6 = 0 ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let questions: Vec<i64> = client
        .query(
            "SELECT id FROM questions WHERE id % 40 = 0 ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut paths = Vec::new();
    for id in &products {
        paths.push(format!("/products/{id}"));
        paths.push(format!("/products/{id}/styles"));
        paths.push(format!("/products/{id}/related"));
        paths.push(format!("/reviews?product_id={id}"));
        paths.push(format!(
            "/reviews?product_id={id}&sort=newest&count=2&page=2"
        ));
        paths.push(format!("/reviews/meta?product_id={id}"));
        paths.push(format!("/qa/questions?product_id={id}"));
    }
    for id in &questions {
        paths.push(format!("/qa/questions/{id}/answers"));
    }
    // The hosted API's prefix, and a trailing slash, route as the plain paths do.
    if let Some(id) = products.first() {
        paths.push(format!("/api/fec2/hr-rfe/products/{id}/styles"));
        paths.push(format!("/products/{id}/"));
        paths.push(format!("/api/fec2/hr-rfe/reviews/meta?product_id={id}"));
    }
    let same_as_one_instance = |paths: Vec<String>| {
        let whole = whole.addr;
        async move {
            for path in &paths {
                let (via_nginx, direct) = (get(lb, path).await, get(whole, path).await);
                assert_eq!(via_nginx.status, direct.status, "{path}");
                assert_eq!(via_nginx.body, direct.body, "{path}");
            }
        }
    };
    let misses = |s: &atelier::http::Running| s.app.cache.stats().misses;
    let before: Vec<u64> = shards.iter().flatten().map(misses).collect();
    same_as_one_instance(paths.clone()).await;
    // nginx routed every request to an instance that precomputed it: no instance missed.
    let after: Vec<u64> = shards.iter().flatten().map(misses).collect();
    assert_eq!(
        before, after,
        "every request routed through nginx was a hit"
    );
    // What names no product goes to any instance.
    same_as_one_instance(vec!["/products".into(), "/products?page=2&count=3".into()]).await;

    // One instance of each shard stopped in turn: its twin serves, and nothing changes.
    for index in 0..shards.len() {
        let stopped = shards[index].remove(0);
        stopped.stop().await.unwrap();
        let before: Vec<u64> = shards.iter().flatten().map(misses).collect();
        same_as_one_instance(paths.clone()).await;
        let after: Vec<u64> = shards.iter().flatten().map(misses).collect();
        assert_eq!(before, after, "the twin served from its catalog");
    }
}

/// nginx retries a POST on another instance after an error, a timeout or a 503, and the
/// instance that answered 503 may have made the write (its database took the statement, and
/// answered too late). Every attempt carries nginx's `$request_id` as its `Idempotency-Key`,
/// so the retry finds the first attempt's claim and writes nothing: each review is stored once,
/// and the client gets its 201. A client's own key passes through instead, so that the
/// client's own retry is made once too.
#[tokio::test]
async fn a_post_retried_through_nginx_by_nginx_or_by_its_client_is_stored_once() {
    let db = common::loaded_database(&common::sample_dir()).await;
    // One instance whose database answers late (its statements still run at once).
    let proxy = common::proxy::Proxy::start(&db.config).await;
    let late = atelier::http::start(
        ServeSettings {
            db_timeout: std::time::Duration::from_millis(500),
            feed_database: Some(db.config.clone()),
            ..settings(None)
        },
        proxy.config(&db.config),
    )
    .await
    .unwrap();
    let prompt = atelier::http::start(settings(None), db.config.clone())
        .await
        .unwrap();
    ready(late.addr).await;
    ready(prompt.addr).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let instances = vec![late.addr.to_string(), prompt.addr.to_string()];
    let _nginx = Nginx::start(&atelier::shard::nginx_config(
        &[instances],
        &format!("127.0.0.1:{port}"),
    ));
    let lb: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    ready(lb).await;

    proxy.delay_replies(std::time::Duration::from_millis(1500));
    // nginx takes turns between the two: about half of these reach the late one first.
    for n in 0..4 {
        let review = format!(
            r#"{{"product_id":1,"rating":4,"summary":"Through nginx {n}","body":"Retried on the other instance.","recommend":true,"name":"n","email":"n@example.com","characteristics":{{}}}}"#
        );
        let posted = common::post_json(lb, "/reviews", &review).await;
        assert_eq!(
            (posted.status, posted.body.as_str()),
            (201, "Created"),
            "{n}"
        );
    }
    proxy.delay_replies(std::time::Duration::ZERO);
    let client = db.client().await;
    for n in 0..4 {
        let summary = format!("reviews WHERE summary = 'Through nginx {n}'");
        assert_eq!(common::count(&client, &summary).await, 1, "{summary}");
    }
    // The late instance did answer 503, and a retry found the review its statement had made.
    let late_503s = common::metric(
        late.addr,
        r#"atelier_requests_total{route="post_review",status="503"}"#,
    )
    .await;
    assert!(late_503s >= 1, "the late instance answered no 503");
    let repeats = async || {
        let on = |addr| common::metric(addr, "atelier_posts_repeated_total");
        on(prompt.addr).await + on(late.addr).await
    };
    let repeated = repeats().await;
    assert!(repeated >= 1, "no retry found its request already made");
    // A client retrying on its own (after nginx gave up, or its own timeout) sends its key
    // again, and nginx passes it on rather than its own id, new for each request.
    let review = r#"{"product_id":1,"rating":4,"summary":"Client's key","body":"Sent twice by the client.","recommend":true,"name":"n","email":"n@example.com","characteristics":{}}"#;
    for attempt in 0..2 {
        let posted = common::post_json_with_key(lb, "/reviews", review, "client-key-1").await;
        assert_eq!(
            (posted.status, posted.body.as_str()),
            (201, "Created"),
            "{attempt}"
        );
    }
    assert_eq!(
        common::count(&client, "reviews WHERE summary = 'Client''s key'").await,
        1
    );
    assert_eq!(repeats().await, repeated + 1, "the client's second attempt");
}
