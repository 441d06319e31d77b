//! Test support: one PostgreSQL server per test binary (a private cluster, or the server named
//! by `DATABASE_URL`) and a fresh database for each test, cloned from a migrated template so
//! tests run in parallel without seeing each other's rows.
#![allow(dead_code)]

pub mod openapi;
pub mod proxy;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use atelier::pg::cluster::{ClusterOptions, PrivateCluster};
use atelier::pg::{self, migrate::migrate};
use tokio_postgres::{Client, Config};

struct Server {
    admin: Config,
    template: String,
    _cluster: Option<PrivateCluster>,
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        // The test's own runtime cannot block on setup; use a thread with its own.
        std::thread::spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(start_server())
        })
        .join()
        .expect("test database setup panicked")
    })
}

async fn start_server() -> Server {
    let (admin, cluster) = match std::env::var("DATABASE_URL") {
        Ok(url) => (pg::parse_url(&url).expect("DATABASE_URL"), None),
        Err(_) => {
            let cluster = PrivateCluster::start(&ClusterOptions {
                shared_buffers: "128MB".into(),
                maintenance_work_mem: "64MB".into(),
                max_connections: 200,
                ..Default::default()
            })
            .expect("start a private PostgreSQL cluster");
            (cluster.config("postgres"), Some(cluster))
        }
    };
    let template = format!("atelier_template_{}", std::process::id());
    let client = pg::connect(&admin)
        .await
        .expect("connect to the test server");
    client
        .batch_execute(&format!("CREATE DATABASE {template}"))
        .await
        .expect("create the template database");
    let mut config = admin.clone();
    config.dbname(&template);
    let mut template_client = pg::connect(&config).await.expect("connect to the template");
    migrate(&mut template_client)
        .await
        .expect("migrate the template");
    Server {
        admin,
        template,
        _cluster: cluster,
    }
}

/// A database of its own for one test.
pub struct TestDb {
    pub config: Config,
    pub name: String,
}

impl TestDb {
    pub async fn client(&self) -> Client {
        pg::connect(&self.config)
            .await
            .expect("connect to the test database")
    }

    /// The ids `sql` selects (its first column, a bigint).
    pub async fn ids(&self, sql: &str) -> Vec<i64> {
        let rows = self.client().await.query(sql, &[]).await.expect(sql);
        rows.iter().map(|r| r.get(0)).collect()
    }

    /// The lowest id of `product_id`'s visible reviews.
    pub async fn first_visible_review(&self, product_id: i64) -> i64 {
        self.client()
            .await
            .query_one(
                "SELECT min(id) FROM reviews WHERE product_id = $1 AND NOT reported",
                &[&product_id],
            )
            .await
            .unwrap()
            .get(0)
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

async fn create_database(template: &str) -> TestDb {
    let server = server();
    let name = format!(
        "atelier_test_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let admin = pg::connect(&server.admin)
        .await
        .expect("connect to the test server");
    admin
        .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {template}"))
        .await
        .expect("create a test database");
    let mut config = server.admin.clone();
    config.dbname(&name);
    TestDb { config, name }
}

/// A fresh database with the schema migrated and no rows.
pub async fn migrated_database() -> TestDb {
    create_database(&server().template).await
}

/// A fresh database without the schema.
pub async fn empty_database() -> TestDb {
    create_database("template0").await
}

/// The hand-made sample data set (`tests/data/sample`): a few rows of each file, with every
/// quirk the loader handles at least once.
pub fn sample_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/sample")
}

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "atelier-test-{label}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Copies a data set directory, so a test can break one file of it.
pub fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy file");
    }
}

/// Rows in `table`, which may carry a condition: `"reviews WHERE rating = 5"`.
pub async fn count(client: &Client, table: &str) -> i64 {
    client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .expect("count rows")
        .get(0)
}

/// A response as the tests see it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The body as a browser shows it: decoded (by the system's `gzip`, a decoder independent
    /// of the server's) when it came with `Content-Encoding: gzip`.
    pub body: String,
    /// The body's bytes as they came.
    pub raw_body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one raw HTTP/1.1 request over a fresh TCP connection and reads the whole reply.
/// Written by hand so tests can also send what a well-behaved client never would. Every reply
/// is checked against `openapi.yaml` ([`openapi::check`]).
pub async fn send_raw(addr: std::net::SocketAddr, request: &[u8]) -> Reply {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("send");
    let mut raw = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut raw),
    )
    .await
    .expect("reply within 10 s")
    .expect("read");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(raw.len(), |at| at + 4);
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let chunked = head.lines().any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("transfer-encoding") && v.trim() == "chunked"
        })
    });
    let raw_body = if chunked {
        dechunk(&raw[split..])
    } else {
        raw[split..].to_vec()
    };
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let gzipped = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("content-encoding") && v == "gzip");
    let decoded = if gzipped && !raw_body.is_empty() {
        gunzip(&raw_body)
    } else {
        raw_body.clone()
    };
    let reply = Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&decoded).into_owned(),
        raw_body,
    };
    openapi::check(request, &reply);
    reply
}

/// A chunked body's content; panics unless it is well framed and ends with the last chunk (a
/// response cut short does not).
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut content = Vec::new();
    loop {
        let line_end = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("a chunk size line");
        let size = std::str::from_utf8(&raw[..line_end])
            .ok()
            .and_then(|line| usize::from_str_radix(line.split(';').next()?.trim(), 16).ok())
            .expect("a hexadecimal chunk size");
        raw = &raw[line_end + 2..];
        if size == 0 {
            assert_eq!(raw, b"\r\n", "the last chunk, and nothing after it");
            return content;
        }
        assert!(raw.len() >= size + 2, "a whole chunk");
        content.extend_from_slice(&raw[..size]);
        assert_eq!(&raw[size..size + 2], b"\r\n", "a chunk's end");
        raw = &raw[size + 2..];
    }
}

/// `gz` decoded by the system's `gzip -d`.
pub fn gunzip(gz: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = std::process::Command::new("gzip")
        .arg("-dc")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run gzip (every Debian system has it)");
    let mut stdin = child.stdin.take().expect("gzip's stdin");
    let input = gz.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().expect("gzip's output");
    writer.join().expect("writer").expect("write to gzip");
    assert!(out.status.success(), "gzip -d refused the body: {out:?}");
    out.stdout
}

/// `method path` with an Authorization header, as the storefront sends it.
pub async fn request(addr: std::net::SocketAddr, method: &str, path: &str) -> Reply {
    let raw = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nAuthorization: test-token\r\nConnection: close\r\n\r\n"
    );
    send_raw(addr, raw.as_bytes()).await
}

pub async fn get(addr: std::net::SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path).await
}

/// A server on a free port over a fresh database loaded from `dir`.
pub async fn server_with_data(dir: &Path) -> (TestDb, atelier::http::Running) {
    let settings = atelier::config::ServeSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        pool_size: 2,
        ..Default::default()
    };
    server_with_settings(dir, settings).await
}

/// A fresh database loaded from `dir`.
pub async fn loaded_database(dir: &Path) -> TestDb {
    let db = migrated_database().await;
    atelier::pg::load::load(
        &db.config,
        &atelier::pg::load::LoadOptions {
            dir: dir.to_path_buf(),
            replace: false,
            jobs: 2,
            quiet: true,
        },
    )
    .await
    .expect("load");
    db
}

/// A server over `db`, compacting as far as `compaction` goes, once it is ready; its warm-up
/// trains the dictionaries on a small catalog's first 64 KB of each kind (the process's, if it
/// has none yet).
pub async fn server_training_dictionaries(
    db: &TestDb,
    compaction: atelier::render::Compaction,
) -> atelier::http::Running {
    let settings = atelier::config::ServeSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        pool_size: 2,
        sweep_period: None,
        compaction,
        dictionary_sample_bytes: 64 << 10,
        ..Default::default()
    };
    let server = atelier::http::start(settings, db.config.clone())
        .await
        .expect("start server");
    ready(server.addr).await;
    server
}

/// The size of the `kind` dictionary (`lists` or `bodies`) the server at `addr` reports packing
/// against (0: none).
pub async fn dictionary_gauge(addr: std::net::SocketAddr, kind: &str) -> usize {
    let metrics = get(addr, "/metrics").await.body;
    let gauge = format!("atelier_dictionary_bytes{{kind=\"{kind}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&gauge))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {kind} dictionary gauge: {metrics}"))
}

/// A server with `settings` over a fresh database loaded from `dir`.
pub async fn server_with_settings(
    dir: &Path,
    settings: atelier::config::ServeSettings,
) -> (TestDb, atelier::http::Running) {
    let db = loaded_database(dir).await;
    let running = atelier::http::start(settings, db.config.clone())
        .await
        .expect("start server");
    (db, running)
}

/// `method path` with a body and a Content-Type, as the storefront sends a write.
pub async fn send(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    content_type: &str,
    body: &str,
) -> Reply {
    let raw = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nAuthorization: test-token\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    send_raw(addr, raw.as_bytes()).await
}

pub async fn post_json(addr: std::net::SocketAddr, path: &str, body: &str) -> Reply {
    send(addr, "POST", path, "application/json", body).await
}

/// As [`post_json`], with an `Idempotency-Key`: the same key with the same request is a retry.
pub async fn post_json_with_key(
    addr: std::net::SocketAddr,
    path: &str,
    body: &str,
    key: &str,
) -> Reply {
    post_json_as(addr, "test-token", path, body, key).await
}

/// As [`post_json_with_key`], from the caller whose `Authorization` is `token`.
pub async fn post_json_as(
    addr: std::net::SocketAddr,
    token: &str,
    path: &str,
    body: &str,
    key: &str,
) -> Reply {
    let raw = format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nAuthorization: {token}\r\nIdempotency-Key: {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    send_raw(addr, raw.as_bytes()).await
}

pub async fn put(addr: std::net::SocketAddr, path: &str) -> Reply {
    request(addr, "PUT", path).await
}

/// What an instance's /metrics says of `series` (a name, and labels if any): 0 when absent, as
/// a labelled series is until it counts something. A name /metrics does not describe panics.
pub async fn metric(addr: std::net::SocketAddr, series: &str) -> u64 {
    let metrics = get(addr, "/metrics").await.body;
    let name = series.split('{').next().unwrap_or(series);
    assert!(
        metrics.contains(&format!("# HELP {name} ")),
        "no metric {name} in /metrics:\n{metrics}"
    );
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

/// Polls `path` until its body satisfies `done`, for up to 10 s; returns the last body.
pub async fn eventually(
    addr: std::net::SocketAddr,
    path: &str,
    done: impl Fn(&str) -> bool,
) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let body = get(addr, path).await.body;
        if done(&body) || std::time::Instant::now() > deadline {
            return body;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

/// `config` as a key=value connection string, for a child process's `DATABASE_URL`.
pub fn connection_string(config: &tokio_postgres::Config) -> String {
    let host = match &config.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(host) => host.clone(),
        tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
    };
    format!(
        "host={host} port={} user={} dbname={}",
        config.get_ports()[0],
        config.get_user().unwrap_or("postgres"),
        config.get_dbname().unwrap_or("postgres")
    )
}

/// A data set generated at `scale` with `seed`, in a directory of its own.
pub fn generated(label: &str, scale: f64, seed: u64) -> TempDir {
    let dir = TempDir::new(label);
    atelier::dataset::generate::generate(&atelier::dataset::generate::GenerateOptions {
        scale,
        seed,
        out: dir.path().into(),
        quiet: true,
    })
    .expect("generate");
    dir
}

/// Waits until the server at `addr` says it is ready (up to 10 s).
pub async fn ready(addr: std::net::SocketAddr) {
    assert_eq!(eventually(addr, "/readyz", |b| b == "ready").await, "ready");
}

/// Waits until `server`'s feed has read everything committed so far and every refresh is in.
pub async fn settled(server: &atelier::http::Running) {
    let feed = server.app.feed_status().expect("a change feed");
    assert!(
        feed.wait_for_fresh_read(std::time::Duration::from_secs(10))
            .await
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while server.app.cache.refreshes_pending() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "refreshes never finished"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// Asserts that every body `server`'s cache holds (products pages of old generations aside:
/// no request reaches them) equals a fresh render through `pool`; returns the keys checked.
pub async fn every_entry_is_fresh(
    server: &atelier::http::Running,
    pool: &atelier::pg::pool::Pool,
) -> Vec<atelier::cache::Key> {
    let mut checked = Vec::new();
    for key in server.app.cache.keys() {
        if !server.app.cache.is_current(&key) {
            continue;
        }
        let Some(cached) = server.app.cache.peek(&key) else {
            continue; // invalidated meanwhile
        };
        let fresh = atelier::cache::fill(&key, pool)
            .await
            .expect("fresh render");
        assert!(cached == fresh, "{key:?}: differs from a fresh render");
        checked.push(key);
    }
    checked
}

/// A child process (a server), killed if the test ends early: a failed assertion must not
/// leave it running, holding the test harness's output open.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for KillOnDrop {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

/// The address an `atelier serve --log-format json` child says it serves on, read from its
/// standard error (piped); its later lines go to the returned receiver.
pub fn served_address(
    child: &mut std::process::Child,
) -> (std::net::SocketAddr, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    let stderr = std::io::BufReader::new(child.stderr.take().expect("stderr piped"));
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    loop {
        let line = lines
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("a start line");
        let parsed: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
        if parsed["fields"]["message"] == "serving" {
            let addr = parsed["fields"]["address"]
                .as_str()
                .expect("an address")
                .parse()
                .expect("a socket address");
            return (addr, lines);
        }
    }
}

/// `atelier serve` over `db` with `--snapshot-dir snapshots` and `args`, as a child process:
/// its address once it serves, and the process.
pub fn serve_with(
    db: &TestDb,
    snapshots: &Path,
    args: &[&str],
) -> (std::net::SocketAddr, KillOnDrop) {
    let mut child = KillOnDrop(
        std::process::Command::new(env!("CARGO_BIN_EXE_atelier"))
            .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
            .args(["--drain-delay-ms", "100", "--sweep-period-s", "0"])
            .args(args)
            .arg("--snapshot-dir")
            .arg(snapshots)
            .env("DATABASE_URL", connection_string(&db.config))
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run atelier serve"),
    );
    let (addr, _lines) = served_address(&mut child);
    (addr, child)
}

/// Stops `child` as systemd does (SIGTERM: it drains and writes its snapshot), and waits for a
/// clean exit.
pub fn stop(child: &mut KillOnDrop) {
    // SAFETY: a plain signal to the child this test started.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    assert!(child.0.wait().unwrap().success());
}
