//! What the log says about requests: one line for each 5xx, carrying the request's id and the
//! cause chain; none for a request that went well (unless the access log is on); and the id
//! echoed in the response, the client's own or a new one.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use atelier::config::ServeSettings;
use common::{sample_dir, send_raw, server_with_settings};

/// Log lines, as JSON objects, written by every event of this thread.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// The lines that mention `needle`.
    fn lines_with(&self, needle: &str) -> Vec<serde_json::Value> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .filter(|l| l.contains(needle))
            .map(|l| serde_json::from_str(l).expect("a JSON log line"))
            .collect()
    }

    /// Installs a JSON logger writing here, for this thread (a current-thread runtime's
    /// tasks, the server's included, run on it).
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        let writer = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }
}

async fn get_with_id(addr: std::net::SocketAddr, path: &str, id: Option<&str>) -> common::Reply {
    let id = id.map_or(String::new(), |id| format!("X-Request-Id: {id}\r\n"));
    let raw = format!("GET {path} HTTP/1.1\r\nHost: t\r\n{id}Connection: close\r\n\r\n");
    send_raw(addr, raw.as_bytes()).await
}

fn settings() -> ServeSettings {
    ServeSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        pool_size: 1,
        sweep_period: None,
        precompute: atelier::config::Precompute::None,
        ..Default::default()
    }
}

#[tokio::test]
async fn a_5xx_writes_one_line_with_the_request_id_and_its_cause() {
    let log = Captured::default();
    let _installed = log.install();
    let (db, server) = server_with_settings(&sample_dir(), settings()).await;
    let a = server.addr;

    let fine = get_with_id(a, "/products/1", Some("fine-request-1")).await;
    assert_eq!(fine.status, 200);
    assert_eq!(
        fine.header("x-request-id"),
        Some("fine-request-1"),
        "echoed"
    );
    assert!(
        log.lines_with("fine-request-1").is_empty(),
        "no line for a request that went well"
    );
    // Made here when the request has none (or one that is not an id).
    let too_long = "x".repeat(129);
    for given in [None, Some("has a space"), Some(too_long.as_str())] {
        let made = get_with_id(a, "/products/2", given).await;
        let id = made.header("x-request-id").expect("an id").to_owned();
        assert_eq!(id.len(), 24, "{id}");
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    // A product's features can no longer be read: its fill fails with a 500.
    db.client()
        .await
        .batch_execute("DROP TABLE features")
        .await
        .unwrap();
    let failed = get_with_id(a, "/products/3", Some("broken-request-7")).await;
    assert_eq!(failed.status, 500);
    assert_eq!(failed.header("x-request-id"), Some("broken-request-7"));
    let lines = log.lines_with("broken-request-7");
    assert_eq!(lines.len(), 1, "one line: {lines:?}");
    let fields = &lines[0]["fields"];
    assert_eq!(lines[0]["level"], "ERROR");
    assert_eq!(fields["request_id"], "broken-request-7");
    assert_eq!(fields["status"], 500);
    assert_eq!(fields["uri"], "/products/3");
    let cause = fields["cause"].as_str().unwrap();
    assert!(cause.contains("features"), "the cause chain: {cause}");

    // The change feed's events: its start (which empties the cache), a lost connection and
    // the reconnect.
    let reset = log.lines_with("emptying the cache");
    assert!(
        !reset.is_empty() && reset[0]["fields"]["why"].is_string(),
        "{reset:?}"
    );
    let connected = || log.lines_with("connected and listening").len();
    assert_eq!(connected(), 1);
    db.client()
        .await
        .batch_execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
              WHERE application_name = 'atelier change feed' AND datname = current_database()",
        )
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while connected() < 2 {
        assert!(std::time::Instant::now() < deadline, "no reconnect logged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lost = log.lines_with("connection lost; reconnecting");
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert_eq!(lost[0]["level"], "WARN");
    assert!(lost[0]["fields"]["cause"].is_string());
}

#[tokio::test]
async fn the_access_log_and_slow_requests_get_lines_when_asked_for() {
    let log = Captured::default();
    let _installed = log.install();
    let (_db, server) = server_with_settings(
        &sample_dir(),
        ServeSettings {
            access_log_sample: 2,
            slow_request: Duration::from_secs(3600),
            ..settings()
        },
    )
    .await;
    for i in 0..6 {
        let id = format!("sampled-{i}");
        assert_eq!(
            get_with_id(server.addr, "/products/1", Some(&id))
                .await
                .status,
            200
        );
    }
    let logged = log.lines_with("sampled-");
    assert_eq!(logged.len(), 3, "one in two: {logged:?}");
    assert_eq!(logged[0]["fields"]["message"], "request");
    drop(server);

    let (_db, slow) = server_with_settings(
        &sample_dir(),
        ServeSettings {
            slow_request: Duration::ZERO,
            ..settings()
        },
    )
    .await;
    get_with_id(slow.addr, "/products/1", Some("slow-one")).await;
    let lines = log.lines_with("slow-one");
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["level"], "WARN");
    assert_eq!(lines[0]["fields"]["message"], "slow request");
}

#[tokio::test]
async fn serve_logs_its_start_with_secrets_redacted_and_its_stop() {
    use std::io::BufRead;
    let db = common::migrated_database().await;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_atelier"))
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .args(["--precompute", "none", "--sweep-period-s", "0"])
        .env(
            "DATABASE_URL",
            format!(
                "{} password=db-password-xyz",
                common::connection_string(&db.config)
            ),
        )
        .env("ATELIER_AUTH_TOKENS", "secret-token-xyz")
        .env("ATELIER_CART_SECRET", "cart-secret-0123456789")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run atelier serve");
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    while !lines.iter().any(|l: &String| l.contains("\"serving\"")) {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no `serving` line; got {lines:?}"));
        lines.push(line);
    }
    // SAFETY: kill only sends a signal to the child this test started.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    assert!(child.wait().unwrap().success());
    lines.extend(rx.iter());
    let parsed: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    let message = |m: &str| parsed.iter().find(|l| l["fields"]["message"] == m);
    let serving = message("serving").expect("a start line");
    let settings = serving["fields"]["settings"].as_str().unwrap();
    assert!(settings.contains("max_connections: 10000"), "{settings}");
    assert!(
        settings.contains("auth_tokens: Some([redacted])"),
        "{settings}"
    );
    for secret in [
        "secret-token-xyz",
        "cart-secret-0123456789",
        "db-password-xyz",
    ] {
        assert!(
            lines.iter().all(|l| !l.contains(secret)),
            "{secret} is in no line"
        );
    }
    assert!(
        settings.contains("cart_keys: CartKeys { secret: Some([redacted]) }"),
        "{settings}"
    );
    assert!(message("change feed: connected and listening").is_some());
    assert!(message("stopped").is_some(), "a stop line: {lines:?}");
}

#[tokio::test]
async fn a_warm_up_logs_its_progress_as_it_goes_and_nothing_after_its_summary() {
    let log = Captured::default();
    let _installed = log.install();
    let data = common::generated("warm-up-progress", 0.002, 9);
    let period = Duration::from_millis(1);
    let (_db, server) = server_with_settings(
        data.path(),
        ServeSettings {
            precompute: atelier::config::Precompute::All,
            warmup_progress_period: period,
            ..settings()
        },
    )
    .await;
    common::ready(server.addr).await;
    // Long enough for a progress task left running to have logged again many times over.
    tokio::time::sleep(period * 50).await;

    let messages: Vec<String> = log
        .lines_with("warm-up")
        .iter()
        .filter_map(|l| l["fields"]["message"].as_str().map(String::from))
        .collect();
    let at = |m: &str| messages.iter().position(|l| l.starts_with(m));
    let started = at("warm-up started").expect("a line as it starts");
    let done = at("warm-up done").expect("a summary");
    let progress = |m: &String| {
        m == "warm-up in progress" || m == "warm-up waits for the database's first rows"
    };
    assert!(
        messages[started..done].iter().any(progress),
        "progress between the start and the summary: {messages:?}"
    );
    assert!(
        !messages[done..].iter().any(progress),
        "nothing after the summary: {messages:?}"
    );
}
