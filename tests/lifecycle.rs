//! `atelier serve` as systemd runs it (`Type=notify`, `WatchdogSec=`), over real sockets: it
//! says `READY=1` once `/readyz` answers 200, and not while it does not (`STATUS=` lines say
//! why); it pings the watchdog; and on SIGTERM it says `STOPPING=1`, answers `/readyz` with 503 `draining` at
//! once while it still serves requests (each with `Connection: close`) for the drain delay,
//! then stops accepting and exits cleanly; a second signal cuts the delay short. A hung change
//! feed stops the watchdog's pings, and a request still open when the drain timeout is up is
//! cut off.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::{get, sample_dir, KillOnDrop};

#[tokio::test]
async fn serve_tells_systemd_when_it_is_ready_alive_and_stopping_and_drains() {
    let db = common::loaded_database(&sample_dir()).await;
    let dir = common::TempDir::new("notify");
    let socket_path = dir.path().join("notify");
    let systemd = UnixDatagram::bind(&socket_path).unwrap();
    systemd
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut child = KillOnDrop(
        std::process::Command::new(env!("CARGO_BIN_EXE_atelier"))
            .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
            .args(["--drain-delay-ms", "1500", "--sweep-period-s", "0"])
            .env("DATABASE_URL", common::connection_string(&db.config))
            .env("NOTIFY_SOCKET", &socket_path)
            .env("WATCHDOG_USEC", "400000")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run atelier serve"),
    );

    // The address, from the start line.
    let (addr, lines) = common::served_address(&mut child);

    // Messages until READY=1: the instance answers /readyz with 200 by then, and not before
    // its first STATUS.
    let mut before_ready = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut buf = [0u8; 512];
    loop {
        assert!(
            Instant::now() < deadline,
            "no READY=1; got {before_ready:?}"
        );
        let Ok(n) = systemd.recv(&mut buf) else {
            continue;
        };
        let message = String::from_utf8_lossy(&buf[..n]).into_owned();
        if message.contains("READY=1") {
            break;
        }
        before_ready.push(message);
    }
    assert_eq!(get(addr, "/readyz").await.body, "ready");
    // Before it: what the instance is waiting for, and watchdog pings (harmless before
    // READY=1: systemd watches only from then).
    assert!(
        before_ready
            .iter()
            .all(|m| m.starts_with("STATUS=") || m == "WATCHDOG=1"),
        "{before_ready:?}"
    );
    // The watchdog is pinged every 200 ms.
    let mut pings = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(1) {
        if let Ok(n) = systemd.recv(&mut buf) {
            pings += usize::from(&buf[..n] == b"WATCHDOG=1");
            assert!(
                !String::from_utf8_lossy(&buf[..n]).contains("READY=1"),
                "said once"
            );
        }
    }
    assert!(pings >= 3, "{pings} pings in a second");

    // SIGTERM: STOPPING=1, /readyz 503 at once, requests still served for the delay.
    // SAFETY: kill only sends a signal to the child this test started.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let signalled = Instant::now();
    loop {
        assert!(
            signalled.elapsed() < Duration::from_secs(5),
            "no STOPPING=1"
        );
        if let Ok(n) = systemd.recv(&mut buf) {
            if String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1") {
                break;
            }
        }
    }
    let readyz = get(addr, "/readyz").await;
    assert_eq!((readyz.status, readyz.body.as_str()), (503, "draining"));
    let served = get(addr, "/products/1").await;
    assert_eq!(served.status, 200, "still served while draining");
    assert_eq!(served.header("connection"), Some("close"));
    assert!(signalled.elapsed() < Duration::from_millis(1500));
    // Then it stops accepting, and exits cleanly.
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        signalled.elapsed() >= Duration::from_millis(1400),
        "not before the delay"
    );
    assert!(child.wait().unwrap().success());
    // Its last word: stopped, the catalog left for the exit to take back rather than freed
    // body by body.
    // (Every line to the end: the reader's channel closes once the exited child's pipe does.)
    let stopped: Vec<serde_json::Value> = lines
        .iter()
        .filter_map(|line| serde_json::from_str(&line).ok())
        .filter(|line: &serde_json::Value| line["fields"]["message"] == "stopped")
        .collect();
    assert_eq!(stopped.len(), 1, "one stopped line");
    assert_eq!(stopped[0]["fields"]["catalog"], "left to the exit");
}

/// A second signal while the instance drains skips the rest of the delay: with a delay of an
/// hour, the instance still exits.
#[tokio::test]
async fn a_second_signal_while_draining_stops_without_waiting_out_the_delay() {
    let db = common::loaded_database(&sample_dir()).await;
    let mut child = KillOnDrop(
        std::process::Command::new(env!("CARGO_BIN_EXE_atelier"))
            .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
            .args(["--drain-delay-ms", "3600000", "--sweep-period-s", "0"])
            .env("DATABASE_URL", common::connection_string(&db.config))
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run atelier serve"),
    );
    let (addr, _lines) = common::served_address(&mut child);
    common::ready(addr).await;
    // SAFETY: kill only sends a signal to the child this test started.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let readiness = common::eventually(addr, "/readyz", |body| body == "draining").await;
    assert_eq!(readiness, "draining", "never drained");
    assert_eq!(get(addr, "/products/1").await.status, 200, "still serving");
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still running 30 s after the second signal, in an hour's drain delay"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_instance_that_cannot_be_ready_never_says_ready_but_says_why() {
    let dir = common::TempDir::new("notify-unready");
    let socket_path = dir.path().join("notify");
    let systemd = UnixDatagram::bind(&socket_path).unwrap();
    systemd
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    // A database nothing listens for.
    let mut nowhere = tokio_postgres::Config::new();
    nowhere
        .host("127.0.0.1")
        .port(1)
        .user("nobody")
        .dbname("nothing")
        .connect_timeout(Duration::from_millis(200));
    let settings = atelier::config::ServeSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        db_timeout: Duration::from_millis(200),
        ..Default::default()
    };
    let server = atelier::http::start(settings, nowhere).await.unwrap();
    let notifier = std::sync::Arc::new(atelier::notify::Notifier::at(&socket_path).unwrap());
    let reporting = tokio::spawn(atelier::http::lifecycle::report_readiness(
        std::sync::Arc::clone(&server.app),
        notifier,
    ));
    let mut statuses = Vec::new();
    let mut buf = [0u8; 512];
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        if let Ok(n) = systemd.recv(&mut buf) {
            statuses.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(get(server.addr, "/readyz").await.status, 503);
    assert!(!reporting.is_finished(), "still waiting to be ready");
    assert!(
        statuses.iter().all(|s| !s.contains("READY=1")),
        "{statuses:?}"
    );
    assert!(
        statuses.len() >= 2 && statuses.iter().all(|s| s.starts_with("STATUS=")),
        "{statuses:?}"
    );
    reporting.abort();
}

#[tokio::test]
async fn a_hung_change_feed_stops_the_watchdog_pings() {
    let db = common::loaded_database(&sample_dir()).await;
    let dir = common::TempDir::new("watchdog");
    let socket_path = dir.path().join("notify");
    let systemd = UnixDatagram::bind(&socket_path).unwrap();
    systemd.set_nonblocking(true).unwrap();
    // Short feed limits: the feed counts as hung after 3 × (0.2 + 0.1 + 0.1) s = 1.2 s.
    let settings = atelier::config::ServeSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        pool_size: 2,
        sweep_period: None,
        feed: atelier::pg::feed::FeedSettings {
            query_timeout: Duration::from_millis(200),
            max_backoff: Duration::from_millis(100),
            poll_interval: Duration::from_millis(100),
            ..Default::default()
        },
        ..Default::default()
    };
    let server = atelier::http::start(settings, db.config.clone())
        .await
        .unwrap();
    assert_eq!(
        common::eventually(server.addr, "/readyz", |b| b == "ready").await,
        "ready"
    );
    let notifier = std::sync::Arc::new(atelier::notify::Notifier::at(&socket_path).unwrap());
    let pinging = tokio::spawn(atelier::http::lifecycle::ping_watchdog(
        std::sync::Arc::clone(&server.app),
        notifier,
        Duration::from_millis(100),
    ));
    let pings_within = |window: Duration| {
        let systemd = &systemd;
        async move {
            let mut buf = [0u8; 64];
            while systemd.recv(&mut buf).is_ok() {} // what came before
            tokio::time::sleep(window).await;
            let mut pings = 0;
            while let Ok(n) = systemd.recv(&mut buf) {
                pings += usize::from(&buf[..n] == b"WATCHDOG=1");
            }
            pings
        }
    };
    assert!(
        pings_within(Duration::from_millis(600)).await >= 3,
        "alive: pinged"
    );
    server.app.feed_status().unwrap().inject_hang();
    // Past the liveness bound, no more pings: systemd would restart the instance.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(
        pings_within(Duration::from_millis(600)).await,
        0,
        "hung: silent"
    );
    pinging.abort();
}

/// A server whose database replies take `reply_delay` once it is ready, and a request sent to
/// it (still waiting for its reply): the server stops (with `drain_timeout`) 200 ms later.
/// Returns how long the stop took and what the request got.
async fn stop_with_a_request_open(
    drain_timeout: Duration,
    reply_delay: Duration,
) -> (Duration, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let db = common::loaded_database(&sample_dir()).await;
    let proxy = common::proxy::Proxy::start(&db.config).await;
    let settings = atelier::config::ServeSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        pool_size: 2,
        sweep_period: None,
        precompute: atelier::config::Precompute::None,
        db_timeout: Duration::from_secs(20),
        drain_timeout,
        feed_database: Some(db.config.clone()),
        ..Default::default()
    };
    let server = atelier::http::start(settings, proxy.config(&db.config))
        .await
        .unwrap();
    assert_eq!(
        common::eventually(server.addr, "/readyz", |b| b == "ready").await,
        "ready"
    );
    proxy.delay_replies(reply_delay);
    let mut client = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    client
        .write_all(b"GET /products/1 HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopping = Instant::now();
    server.drain(Duration::ZERO).await.unwrap();
    let took = stopping.elapsed();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut reply)).await;
    (took, reply)
}

#[tokio::test]
async fn a_request_open_when_accepting_stops_finishes_within_the_drain_timeout() {
    let (_, reply) =
        stop_with_a_request_open(Duration::from_secs(5), Duration::from_millis(800)).await;
    assert!(
        reply.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
}

#[tokio::test]
async fn a_request_still_open_after_the_drain_timeout_is_cut_off() {
    let (took, reply) =
        stop_with_a_request_open(Duration::from_millis(300), Duration::from_secs(5)).await;
    assert!(
        took < Duration::from_secs(2),
        "stopped after the drain timeout, not the request: {took:?}"
    );
    assert!(reply.is_empty(), "{}", String::from_utf8_lossy(&reply));
}
