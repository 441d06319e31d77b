//! Bounded work per request, over real sockets: clients that send their headers or body too
//! slowly, or stop reading their response, are cut off at the limit while others are served;
//! the connection cap holds under 10,000 idle connections while clients with requests are
//! served; heads too large are refused; a huge `/products` page is read in runs (no more of
//! them once its client is gone, only the first for a HEAD), and a page past the last product
//! is answered without the database.
//!
//! (A query past `statement_timeout` answering 503 and leaving its pooled connection usable is
//! `tests/pool.rs`.)

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use atelier::cache::{fill, Key};
use atelier::config::{Limits, ServeSettings};
use atelier::pg::pool::Pool;
use common::{count, get, sample_dir, send_raw, server_with_settings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn settings(limits: Limits) -> ServeSettings {
    ServeSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        pool_size: 2,
        sweep_period: None,
        limits,
        ..Default::default()
    }
}

/// Sends `bytes` on a new connection and leaves it open.
async fn open_with(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("send");
    stream
}

/// Reads until the server closes `stream` (within 10 s); returns what it sent and when.
async fn until_closed(stream: &mut TcpStream) -> (Vec<u8>, Instant) {
    let mut reply = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut reply))
        .await
        .expect("the server closes the connection within 10 s");
    // A reset is a close too.
    let _ = read;
    (reply, Instant::now())
}

/// What `atelier load` logs after a load: everything changed.
const LOG_ALL: &str = "SELECT atelier_log_change('all', 0, NULL)";

const QUESTION_HEAD: &str = "POST /qa/questions HTTP/1.1\r\nHost: test\r\nAuthorization: t\r\n\
    Content-Type: application/json\r\nContent-Length: 200\r\n\r\n";

#[tokio::test]
async fn slow_headers_and_slow_bodies_are_cut_off_at_their_limits_while_others_are_served() {
    let limit = Duration::from_millis(400);
    let limits = Limits {
        header_timeout: limit,
        body_timeout: limit,
        ..Default::default()
    };
    let (db, server) = server_with_settings(&sample_dir(), settings(limits)).await;
    let a = server.addr;
    let client = db.client().await;
    let questions = count(&client, "questions").await;

    let started = Instant::now();
    let mut slow_head = open_with(a, b"GET /products/1 HTTP/1.1\r\nHost: te").await;
    let mut slow_body = open_with(a, format!("{QUESTION_HEAD}{{\"body\":\"half").as_bytes()).await;
    let mut idle = open_with(a, b"").await;
    // A kept-alive connection idle after its first response.
    let mut kept = open_with(a, b"GET /products/1 HTTP/1.1\r\nHost: t\r\n\r\n").await;
    // Others are served meanwhile.
    for _ in 0..5 {
        assert_eq!(get(a, "/products/1").await.status, 200);
    }

    let (sent, closed) = until_closed(&mut slow_head).await;
    assert!(
        closed - started >= limit,
        "cut off at the limit, not before"
    );
    assert!(
        !String::from_utf8_lossy(&sent).contains("200 OK"),
        "{sent:?}"
    );
    let (_, closed) = until_closed(&mut idle).await;
    assert!(closed - started >= limit, "an idle connection too");
    let (answered, closed) = until_closed(&mut kept).await;
    assert!(String::from_utf8_lossy(&answered).starts_with("HTTP/1.1 200 "));
    assert!(closed - started >= limit, "and one idle after a response");
    let (reply, closed) = until_closed(&mut slow_body).await;
    assert!(closed - started >= limit);
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 408 "), "{reply}");
    assert!(reply.ends_with("Request Timeout"), "{reply}");
    assert_eq!(
        count(&client, "questions").await,
        questions,
        "a body cut off writes nothing"
    );
    assert_eq!(get(a, "/products/1").await.status, 200);
}

#[tokio::test]
async fn a_request_past_its_time_limit_answers_503() {
    let limits = Limits {
        request_timeout: Duration::from_millis(300),
        body_timeout: Duration::from_secs(30),
        ..Default::default()
    };
    let (db, server) = server_with_settings(&sample_dir(), settings(limits)).await;
    let questions = count(&db.client().await, "questions").await;
    let started = Instant::now();
    let mut slow = open_with(server.addr, format!("{QUESTION_HEAD}{{").as_bytes()).await;
    let (reply, closed) = until_closed(&mut slow).await;
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 503 "), "{reply}");
    assert!(reply.to_ascii_lowercase().contains("retry-after: 1"));
    assert!(closed - started >= Duration::from_millis(300));
    assert!(
        closed - started < Duration::from_secs(5),
        "not the body's 30 s"
    );
    assert_eq!(count(&db.client().await, "questions").await, questions);
}

/// Opens a connection that asks, pipelined, for thousands of 100 KB bodies: far more than the
/// socket buffers hold, so the server's writes wait on the client's reads.
async fn heavy_pipeline(addr: SocketAddr) -> TcpStream {
    let requests = b"GET /openapi.yaml HTTP/1.1\r\nHost: test\r\n\r\n".repeat(3000);
    open_with(addr, &requests).await
}

/// Waits until the server has accepted a connection, then until it has none open; returns
/// how long the second wait took.
async fn until_cut_off(server: &atelier::http::Running, what: &str) -> Duration {
    let connections = &server.app.connections;
    let deadline = Instant::now() + Duration::from_secs(10);
    while connections.open() == 0 {
        assert!(Instant::now() < deadline, "never accepted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    while connections.open() > 0 {
        assert!(Instant::now() < deadline, "{what} held its connection");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

#[tokio::test]
async fn clients_that_stop_reading_or_read_a_trickle_are_cut_off() {
    let limits = Limits {
        write_timeout: Duration::from_millis(500),
        ..Default::default()
    };
    let (_db, server) = server_with_settings(&sample_dir(), settings(limits)).await;
    let a = server.addr;

    let _never_read = heavy_pipeline(a).await;
    let took = until_cut_off(&server, "a client that reads nothing").await;
    assert!(took >= Duration::from_millis(400), "{took:?}");

    // One that keeps reading, 4 KB every 50 ms: its response is never done in time either.
    let mut trickle = heavy_pipeline(a).await;
    let reader = tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        loop {
            match trickle.read(&mut buf).await {
                Ok(n) if n > 0 => tokio::time::sleep(Duration::from_millis(50)).await,
                _ => return,
            }
        }
    });
    until_cut_off(&server, "a client that reads a trickle").await;
    reader.abort();
    assert_eq!(get(a, "/products/1").await.status, 200);
}

/// How many descriptors this process has open.
fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// Raises this process's open-file limit as far as allowed; returns it.
fn raise_open_files_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
    }
    limit.rlim_cur
}

#[tokio::test]
async fn the_connection_cap_holds_under_ten_thousand_idle_connections_while_clients_are_served() {
    let cap = 100;
    let limits = Limits {
        max_connections: cap,
        ..Default::default()
    };
    let (_db, server) = server_with_settings(&sample_dir(), settings(limits)).await;
    let a = server.addr;
    // Ten thousand where the system allows it (each costs this process a descriptor).
    let idle_wanted = 10_000.min(raise_open_files_limit().saturating_sub(500) as usize);
    assert!(idle_wanted >= 2 * cap, "too few descriptors to test with");
    if idle_wanted < 10_000 {
        eprintln!("open-file limit: testing with {idle_wanted} idle connections");
    }
    let connections = &server.app.connections;
    // The server runs in this process: the descriptors it holds are this process's, less the
    // idle clients' own and what was open before.
    assert_eq!(get(a, "/products/1").await.status, 200);
    let before = open_descriptors();
    let mut idle = Vec::with_capacity(idle_wanted);
    let mut most_open = 0;
    let mut served = 0;
    for i in 0..idle_wanted {
        idle.push(TcpStream::connect(a).await.expect("connect"));
        if i % 50 == 0 {
            let servers_sockets = open_descriptors().saturating_sub(before + idle.len());
            most_open = most_open.max(servers_sockets);
        }
        if i % 250 == 0 {
            let started = Instant::now();
            let r = get(a, "/products/1").await;
            assert_eq!(r.status, 200, "a client with a request is served");
            assert!(started.elapsed() < Duration::from_secs(2));
            served += 1;
        }
    }
    // A few more than the cap: an evicted socket closes as its task ends, a moment later.
    assert!(most_open <= cap + 20, "{most_open} sockets open, cap {cap}");
    assert!(served >= 40);
    // The last ones may still wait to be accepted.
    let evicted = || {
        connections
            .evicted
            .load(std::sync::atomic::Ordering::Relaxed) as usize
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while evicted() < idle_wanted - cap {
        assert!(
            Instant::now() < deadline,
            "idle connections made room: {} evicted",
            evicted()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(connections.open() <= cap);
    let metrics = get(a, "/metrics").await.body;
    assert!(metrics.contains("atelier_http_connections_evicted_total"));
}

#[tokio::test]
async fn heads_too_large_or_with_too_many_fields_get_431_and_the_server_goes_on() {
    let (_db, server) = server_with_settings(&sample_dir(), settings(Limits::default())).await;
    let a = server.addr;
    let many: String = (0..80).map(|i| format!("X-Field-{i}: v\r\n")).collect();
    let r = send_raw(
        a,
        format!("GET /products/1 HTTP/1.1\r\nHost: t\r\n{many}Connection: close\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert_eq!(r.status, 431, "80 header fields (hyper alone takes 100)");
    let big = "x".repeat(20 << 10);
    let r = send_raw(
        a,
        format!("GET /products/1 HTTP/1.1\r\nHost: t\r\nX-Big: {big}\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(r.status, 431, "a 20 KiB head");
    let fine: String = (0..40).map(|i| format!("X-Field-{i}: v\r\n")).collect();
    let r = send_raw(
        a,
        format!("GET /products/1 HTTP/1.1\r\nHost: t\r\n{fine}Connection: close\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200, "40 fields are fine");
}

#[tokio::test]
async fn huge_products_pages_are_served_whole_in_runs_and_past_the_last_product_cost_no_query() {
    let mut s = settings(Limits::default());
    s.max_page_rows = 4;
    assert_eq!(ServeSettings::default().max_page_rows, 1_000);
    let (db, server) = server_with_settings(&sample_dir(), s).await;
    let a = server.addr;
    let rows = |body: &str| {
        serde_json::from_str::<serde_json::Value>(body)
            .unwrap()
            .as_array()
            .unwrap()
            .len()
    };
    let total = count(&db.client().await, "products").await;
    assert!(
        total > 4 && total % 4 != 0,
        "the sample ends in a short run of 4"
    );
    // A count above --max-page-rows is served whole (clients send huge counts to mean
    // "all"), read in runs of 4, byte for byte what one fresh render of the page gives: whole
    // runs, a short last one, a first one that is the last.
    let pool = Pool::new(db.config.clone(), 2, Duration::from_secs(5));
    let fresh = |limit: i64, offset: i64| {
        let pool = &pool;
        async move {
            let key = Key::ProductsPage {
                generation: 0,
                limit,
                offset,
            };
            String::from_utf8(fill(&key, pool).await.unwrap().plain().unwrap().to_vec()).unwrap()
        }
    };
    for (query, limit, offset) in [
        ("page=1&count=100000", total, 0),
        ("count=9007199254740991", total, 0),
        ("count=99999999999999999999999999", total, 0),
        ("page=1&count=5", 5, 0),
        ("page=1&count=8", 8, 0),
        ("page=2&count=5", 5, 5),
        ("page=2&count=3", 3, 3),
    ] {
        let r = get(a, &format!("/products?{query}")).await;
        assert_eq!(r.status, 200, "{query}");
        assert_eq!(r.body, fresh(limit, offset).await, "{query}");
    }
    assert_eq!(
        rows(&get(a, "/products?page=1&count=100000").await.body) as i64,
        total
    );
    // HTTP/1.0 has no chunked coding: a page in runs ends when the connection closes, and the
    // head says so to a client that asked to keep it open.
    let old_client = send_raw(
        a,
        b"GET /products?count=100000 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    )
    .await;
    assert_eq!(old_client.status, 200);
    assert_eq!(old_client.header("connection"), Some("close"));
    assert_eq!(rows(&old_client.body) as i64, total);

    let last = format!("/products?page={total}&count=1");
    assert_eq!(rows(&get(a, &last).await.body), 1);
    // The first page past the end counts the products; none after it asks the database.
    let past = format!("/products?page={}&count=1", total + 1);
    assert_eq!(get(a, &past).await.body, "[]");
    let cache = &server.app.cache;
    let misses = cache.stats().misses;
    for page in [
        format!("{}", total + 2),
        "1000000".into(),
        "9223372036854775807".into(),
        u64::MAX.to_string(),
    ] {
        for count in ["1", "1000", "100000"] {
            let r = get(a, &format!("/products?page={page}&count={count}")).await;
            assert_eq!(
                (r.status, r.body.as_str()),
                (200, "[]"),
                "page {page} of {count}"
            );
        }
    }
    assert_eq!(
        cache.stats().misses,
        misses,
        "no fill (and no cache entry) for a page past the end"
    );
    assert_eq!(cache.products_counted(), 1, "counted once");
    // A new product starts a new generation of the list: it is counted again.
    db.client()
        .await
        .batch_execute(
            "INSERT INTO products (name, slogan, description, category, default_price)
             VALUES ('new', 's', 'd', 'c', 10)",
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while rows(&get(a, &past).await.body) != 1 {
        assert!(Instant::now() < deadline, "the new product never showed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(cache.products_counted(), 2, "counted again");
    // So does a bulk load, which logs no row change but `all` (as `atelier load` does).
    let client = db.client().await;
    client
        .batch_execute(
            "ALTER TABLE products DISABLE TRIGGER log_change;
             INSERT INTO products (name, slogan, description, category, default_price)
                  VALUES ('bulk', 's', 'd', 'c', 10);
             ALTER TABLE products ENABLE TRIGGER log_change;",
        )
        .await
        .unwrap();
    let loaded = format!("/products?page={}&count=1", total + 2);
    assert_eq!(get(a, &loaded).await.body, "[]", "not yet told");
    client.batch_execute(LOG_ALL).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while rows(&get(a, &loaded).await.body) != 1 {
        assert!(Instant::now() < deadline, "the loaded product never showed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The runs of products read so far for pages sent in runs, from `/metrics`.
async fn runs_read(addr: SocketAddr) -> u64 {
    common::metric(addr, "atelier_products_runs_total").await
}

/// Waits until the runs read stop moving (two samples 300 ms apart agree, within 10 s).
async fn runs_settled(addr: SocketAddr) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = runs_read(addr).await;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = runs_read(addr).await;
        if now == last {
            return now;
        }
        assert!(Instant::now() < deadline, "the runs never stopped");
        last = now;
    }
}

#[tokio::test]
async fn a_page_in_runs_stops_reading_when_its_client_goes_away_and_a_head_sends_no_body() {
    let mut s = settings(Limits::default());
    // Runs of one product: a page of thousands is thousands of queries, long enough to leave.
    s.max_page_rows = 1;
    let (db, server) = server_with_settings(&sample_dir(), s).await;
    let a = server.addr;
    db.client()
        .await
        .batch_execute(
            "INSERT INTO products (name, slogan, description, category, default_price)
             SELECT 'bulk ' || n, 's', 'd', 'c', 10 FROM generate_series(1, 5000) AS n",
        )
        .await
        .unwrap();
    let total = u64::try_from(count(&db.client().await, "products").await).unwrap();
    assert_eq!(runs_read(a).await, 0);

    // The whole page, for a client that reads it: one run a product, counted.
    let page = get(a, "/products?count=100000").await;
    assert_eq!(page.status, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&page.body)
            .unwrap()
            .as_array()
            .map(Vec::len),
        Some(total as usize)
    );
    let whole = runs_settled(a).await;
    assert!(whole >= total, "{whole} runs for {total} products");

    // HEAD: the head a GET would get and no body, and the connection goes on to its next
    // request. The first run is read before the head, as a GET's is (a database that cannot
    // answer is a 503); the page's later runs are not read, but for one the task may have
    // begun before the body was dropped.
    let mut stream = open_with(
        a,
        b"HEAD /products?count=100000 HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /products/1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    let (reply, _) = until_closed(&mut stream).await;
    let reply = String::from_utf8_lossy(&reply).into_owned();
    let (head, next) = reply.split_once("\r\n\r\n").expect("a head");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    assert!(
        next.starts_with("HTTP/1.1 200") && next.contains("Camo Onesie"),
        "no body after the HEAD's head, then the next response: {next:.200}"
    );
    let after_head = runs_settled(a).await;
    assert!(
        after_head - whole <= 2,
        "a HEAD read {} runs",
        after_head - whole
    );

    // A client that reads the head and goes away: the runs stop once the server notices,
    // well short of the page (the socket's buffers take runs until then).
    let mut stream = open_with(a, b"GET /products?count=100000 HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let mut first = vec![0; 1024];
    let n = stream.read(&mut first).await.expect("the head");
    assert!(first[..n].starts_with(b"HTTP/1.1 200"));
    drop(stream);
    let after_leaving = runs_settled(a).await;
    assert!(
        after_leaving - after_head < total / 2,
        "{} runs of a page of {total} read for a client that left",
        after_leaving - after_head
    );
}

/// Waits until `server` has `n` connections open.
async fn until_open(server: &atelier::http::Running, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.app.connections.open() != n {
        assert!(Instant::now() < deadline, "never {n} open");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether the server has closed `stream` within 2 s (a read that ends it, or fails).
async fn is_closed(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn at_the_cap_a_connection_still_sending_an_answer_is_not_closed_to_make_room() {
    let limits = Limits {
        max_connections: 2,
        ..Default::default()
    };
    let (_db, server) = server_with_settings(&sample_dir(), settings(limits)).await;
    let a = server.addr;
    let document = get(a, "/openapi.yaml").await.body;
    // A client that asks for more than the sockets' buffers hold, and does not read yet:
    // hyper is done with each request once it has its answer, while the answer waits.
    const ASKED: usize = 100;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut slow = socket.connect(a).await.expect("connect");
    let pipeline = b"GET /openapi.yaml HTTP/1.1\r\nHost: test\r\n\r\n".repeat(ASKED);
    slow.write_all(&pipeline).await.expect("send");
    until_open(&server, 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // One connection opened after it, with nothing asked: idle for less time.
    let mut idle = TcpStream::connect(a).await.expect("connect");
    until_open(&server, 2).await;
    // At the cap, a new client is served, and the connection closed to make room is the idle
    // one, not the one whose answer is on its way.
    assert_eq!(get(a, "/products/1").await.status, 200);
    assert!(is_closed(&mut idle).await, "the idle connection made room");
    // Read until the server sends no more for a second (or closes the connection).
    let mut answers = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let read = tokio::time::timeout(Duration::from_secs(1), slow.read(&mut buf)).await;
        match read {
            Ok(Ok(n)) if n > 0 => answers.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&answers);
    assert_eq!(
        text.matches(document.as_str()).count(),
        ASKED,
        "every answer whole ({} bytes read)",
        answers.len()
    );
    // Its answers taken in, it is idle again, and the next to make room.
    let _newer = TcpStream::connect(a).await.expect("connect");
    until_open(&server, 2).await;
    assert_eq!(get(a, "/products/1").await.status, 200);
    assert!(
        is_closed(&mut slow).await,
        "idle again once its answers were sent"
    );
}

#[tokio::test]
async fn at_the_cap_with_every_connection_busy_a_new_one_gets_503_and_is_closed() {
    let limits = Limits {
        max_connections: 2,
        body_timeout: Duration::from_secs(30),
        ..Default::default()
    };
    let (_db, server) = server_with_settings(&sample_dir(), settings(limits)).await;
    let a = server.addr;
    // Two requests in progress, each still sending its body.
    let _busy = [
        open_with(a, format!("{QUESTION_HEAD}{{").as_bytes()).await,
        open_with(a, format!("{QUESTION_HEAD}{{").as_bytes()).await,
    ];
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.app.connections.open() < 2 {
        assert!(Instant::now() < deadline, "never accepted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let refused = get(a, "/products/1").await;
    assert_eq!(refused.status, 503);
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert!(refused.header("x-request-id").is_some());
    assert_eq!(refused.body, "Service Unavailable");
    let refusals = server
        .app
        .connections
        .refused
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(refusals, 1);
}
