//! The fast lane (`--engine fast`, the default) answers the catalog's hits on the socket and
//! hands every other request to hyper. Whatever a client sends, it must get the very bytes an
//! instance serving every request through hyper (`--engine hyper`) sends: status line, headers
//! in order, body, connection kept or closed; over pipelined requests, heads split across
//! packets, a hand-off in the middle of a connection, a draining instance and an instance that
//! asks for a token. Only the `Date` header's value may differ.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use atelier::config::ServeSettings;
use atelier::http::Running;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Two instances over one database loaded from a generated set: one with the lane, one
/// without. Both warmed.
async fn lane_and_hyper(settings: ServeSettings) -> (common::TestDb, Running, Running) {
    let data = common::generated("fast-lane", 0.0005, 17);
    let lane_settings = ServeSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        pool_size: 2,
        fast_lane: true,
        ..settings.clone()
    };
    let (db, lane) = common::server_with_settings(data.path(), lane_settings).await;
    let hyper_settings = ServeSettings {
        fast_lane: false,
        ..lane.app.settings.clone()
    };
    let hyper = atelier::http::start(hyper_settings, db.config.clone())
        .await
        .expect("start the hyper-only server");
    common::ready(lane.addr).await;
    common::ready(hyper.addr).await;
    (db, lane, hyper)
}

/// Everything the server sends on one connection for `requests` (sent in `parts`, with a
/// pause between), until it closes the connection; `Date` and `X-Request-Id` values blanked.
async fn exchange(addr: SocketAddr, parts: &[&[u8]]) -> Vec<u8> {
    let mut raw = exchange_raw(addr, parts).await;
    blank(&mut raw, b"\r\ndate: ");
    blank(&mut raw, b"\r\nx-request-id: ");
    raw
}

/// Sends `parts` on one connection to each instance, requires the same bytes from both, and
/// gives the lane's answer and the requests its lane answered and the connections it handed
/// to hyper meanwhile.
async fn same_from_both(lane: &Running, hyper: &Running, parts: &[&[u8]]) -> (String, u64, u64) {
    let (answered_before, handoffs_before) = lane.app.metrics.fast_lane_counts();
    let from_lane = exchange(lane.addr, parts).await;
    let from_hyper = exchange(hyper.addr, parts).await;
    let text = String::from_utf8_lossy(&from_lane).into_owned();
    assert_eq!(text, String::from_utf8_lossy(&from_hyper));
    let (answered, handoffs) = lane.app.metrics.fast_lane_counts();
    (text, answered - answered_before, handoffs - handoffs_before)
}

/// [`exchange`], nothing blanked.
async fn exchange_raw(addr: SocketAddr, parts: &[&[u8]]) -> Vec<u8> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        stream.write_all(part).await.expect("send");
    }
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("the server closes the connection within 10 s")
        .expect("read");
    raw
}

/// Blanks the value of every header line that starts with `marker` (its name, lowercase as
/// sent): the date, and request ids the server made, which differ between two instances.
fn blank(raw: &mut [u8], marker: &[u8]) {
    let mut at = 0;
    while let Some(found) = raw[at..].windows(marker.len()).position(|w| w == marker) {
        let start = at + found + marker.len();
        let end = raw[start..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map_or(raw.len(), |n| start + n);
        raw[start..end].fill(b'#');
        at = end;
    }
}

/// A GET of `target`, with `extra` header lines.
fn get(target: &str, extra: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: test\r\nAuthorization: t\r\n{extra}\r\n").into_bytes()
}

/// Every catalog route over a few products (one of them with the most reviews and one absent),
/// pages past the lead page included, each with and without gzip.
async fn catalog_targets(db: &common::TestDb) -> Vec<String> {
    let mut products = db
        .ids("SELECT product_id FROM reviews GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 2")
        .await;
    products.push(99_999_999);
    let questions = db
        .ids("SELECT question_id FROM answers GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1")
        .await;
    let mut targets = Vec::new();
    for p in products {
        targets.extend([
            format!("/products/{p}"),
            format!("/products/{p}/styles"),
            format!("/products/{p}/related"),
            format!("/reviews/meta?product_id={p}"),
            format!("/reviews?product_id={p}&count=5&sort=relevant"),
            format!("/reviews?product_id={p}&page=2&count=3&sort=newest"),
            format!("/reviews/?product_id={p}&sort=helpful"),
            format!("/qa/questions?product_id={p}&count=5"),
            format!("/qa/questions?product_id={p}&page=3&count=1"),
        ]);
    }
    // An id escaped in the path is the id (RFC 3986), in the lane as behind hyper.
    targets.push("/products/%31/styles".into());
    for q in questions.into_iter().chain([99_999_999]) {
        targets.push(format!("/qa/questions/{q}/answers?count=2"));
        targets.push(format!("/qa/questions/{q}/answers?page=2&count=1"));
    }
    targets
}

#[tokio::test]
async fn the_lane_answers_every_catalog_read_as_hyper_does_byte_for_byte() {
    let (db, lane, hyper) = lane_and_hyper(ServeSettings::default()).await;
    let targets = catalog_targets(&db).await;
    // Twice over: an absent product's or question's first request fills the on-demand cache
    // through hyper, and the second is a hit the lane answers.
    for round in 0..2 {
        for target in &targets {
            for extra in [
                "Accept-Encoding: gzip, deflate\r\nX-Request-Id: fixed-1\r\nConnection: close\r\n",
                "X-Request-Id: fixed-2\r\nconnection: keep-alive, CLOSE\r\n",
                // Kept alive, with an id the server makes (and one it must not take), then
                // a request that closes the connection.
                "Accept-Encoding: gzip\r\n",
                "X-Request-Id: \r\n",
            ] {
                let mut request = get(target, extra);
                if !extra.to_ascii_lowercase().contains("close") {
                    request.extend(get(target, "Connection: close\r\n"));
                }
                let from_lane = exchange(lane.addr, &[&request]).await;
                let from_hyper = exchange(hyper.addr, &[&request]).await;
                assert_eq!(
                    String::from_utf8_lossy(&from_lane),
                    String::from_utf8_lossy(&from_hyper),
                    "round {round}, {target} with {extra:?}"
                );
                assert!(from_lane.starts_with(b"HTTP/1.1 "), "{target}: an answer");
            }
        }
    }
    // An escaped id is the id (without the decoding both front ends answered it 404 alike),
    // and a hit the lane answers.
    let lane_before = common::metric(lane.addr, "atelier_fast_lane_requests_total").await;
    let escaped = common::get(lane.addr, "/products/%31/styles").await;
    let plain = common::get(lane.addr, "/products/1/styles").await;
    assert_eq!(escaped.status, 200);
    assert_eq!(escaped.body, plain.body);
    assert_eq!(
        common::metric(lane.addr, "atelier_fast_lane_requests_total").await,
        lane_before + 2
    );
    let answered = common::metric(lane.addr, "atelier_fast_lane_requests_total").await;
    assert!(
        answered as usize >= targets.len() * 2,
        "the lane answered the hits ({answered} of {} requests)",
        targets.len() * 12
    );
    assert_eq!(
        common::metric(hyper.addr, "atelier_fast_lane_requests_total").await,
        0,
        "--engine hyper has no lane"
    );
    // The metrics count each request once, whichever path answered it.
    let product_200 = "atelier_requests_total{route=\"product\",status=\"200\"}";
    assert_eq!(
        common::metric(lane.addr, product_200).await,
        common::metric(hyper.addr, product_200).await
    );
}

#[tokio::test]
async fn pipelined_requests_split_heads_and_a_hand_off_mid_connection_read_as_under_hyper() {
    let (db, lane, hyper) = lane_and_hyper(ServeSettings::default()).await;
    let product = db.ids("SELECT min(id)::bigint FROM products").await[0];
    let etag = common::get(lane.addr, &format!("/products/{product}"))
        .await
        .header("etag")
        .expect("an entity tag")
        .to_owned();
    let id = |n: u32| format!("X-Request-Id: r{n}\r\n");
    let reviews = format!("/reviews?product_id={product}&count=50");
    // Three hits pipelined in one packet; one head split over three packets; then a 304 and
    // a write with a body (hyper's), and reads after them on the same connection, the last
    // of which closes it.
    let mut pipelined = get(&format!("/products/{product}"), &id(1));
    pipelined.extend(get(&format!("/products/{product}/styles"), &id(2)));
    pipelined.extend(get(
        &reviews,
        &format!("{}Accept-Encoding: gzip\r\n", id(3)),
    ));
    let split = get(&format!("/reviews/meta?product_id={product}"), &id(4));
    let conditional = get(
        &format!("/products/{product}"),
        &format!("{}If-None-Match: {etag}\r\n", id(5)),
    );
    let body = r#"{"element":"button","widget":"overview","time":"12:00"}"#;
    let write = format!(
        "POST /interactions HTTP/1.1\r\nHost: test\r\nAuthorization: t\r\n{}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        id(6),
        body.len()
    );
    let mut after = get(&reviews, &id(7));
    after.extend(get(
        &format!("/products/{product}/related"),
        &format!("{}Connection: close\r\n", id(8)),
    ));
    let parts: Vec<&[u8]> = vec![
        &pipelined,
        &split[..7],
        &split[7..30],
        &split[30..],
        &conditional,
        write.as_bytes(),
        &after,
    ];
    let (text, answered, handoffs) = same_from_both(&lane, &hyper, &parts).await;
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 6, "{text}");
    assert_eq!(text.matches("HTTP/1.1 304 Not Modified").count(), 1);
    assert_eq!(text.matches("HTTP/1.1 201 Created").count(), 1);
    assert_eq!(
        (answered, handoffs),
        (4, 1),
        "the four requests before the 304 answered in the lane, then one hand-off"
    );
}

#[tokio::test]
async fn a_draining_instance_closes_lane_connections_after_each_answer() {
    let (db, lane, hyper) = lane_and_hyper(ServeSettings::default()).await;
    let product = db.ids("SELECT min(id)::bigint FROM products").await[0];
    let mut two = get(&format!("/products/{product}"), "X-Request-Id: d1\r\n");
    two.extend(get(
        &format!("/products/{product}/styles"),
        "X-Request-Id: d2\r\n",
    ));
    lane.app.start_draining();
    hyper.app.start_draining();
    // One answer, `Connection: close`, and the connection closed: the second request is
    // never answered.
    let from_lane = exchange(lane.addr, &[&two]).await;
    let from_hyper = exchange(hyper.addr, &[&two]).await;
    let text = String::from_utf8_lossy(&from_lane);
    assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "{text}");
    assert!(text.contains("\r\nconnection: close\r\n"), "{text}");
    assert_eq!(text, String::from_utf8_lossy(&from_hyper));
    assert_eq!(
        common::metric(lane.addr, "atelier_fast_lane_requests_total").await,
        1
    );
    // An HTTP/1.0 client that asked to keep its connection is told `close`, and nothing else.
    let old_client = common::send_raw(
        lane.addr,
        format!("GET /products/{product} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(old_client.status, 200);
    assert_eq!(old_client.header("connection"), Some("close"));
}

#[tokio::test]
async fn an_instance_that_asks_for_a_token_answers_in_the_lane_only_those_that_carry_one() {
    let settings = ServeSettings {
        auth_tokens: Some(atelier::config::Secret(
            ["t".to_owned()].into_iter().collect(),
        )),
        ..Default::default()
    };
    let (db, lane, hyper) = lane_and_hyper(settings).await;
    let product = db.ids("SELECT min(id)::bigint FROM products").await[0];
    let target = format!("/products/{product}");
    for request in [
        format!("GET {target} HTTP/1.1\r\nX-Request-Id: a1\r\nConnection: close\r\n\r\n"),
        format!("GET {target} HTTP/1.1\r\nAuthorization: u\r\nX-Request-Id: a2\r\nConnection: close\r\n\r\n"),
        format!("GET {target} HTTP/1.1\r\nAuthorization: t\r\nX-Request-Id: a3\r\nConnection: close\r\n\r\n"),
    ] {
        same_from_both(&lane, &hyper, &[request.as_bytes()]).await;
    }
    assert_eq!(
        lane.app.metrics.fast_lane_counts().0,
        1,
        "only the request with the token"
    );
}

#[tokio::test]
async fn a_connection_that_sends_no_whole_head_in_time_is_closed_in_the_lane() {
    let mut settings = ServeSettings::default();
    settings.limits.header_timeout = Duration::from_millis(300);
    let (_db, lane, _hyper) = lane_and_hyper(settings).await;
    let before = lane.app.metrics.fast_lane_counts();
    for sent in [&b""[..], b"GET /products/1 HTTP/1.1\r\nHost:"] {
        let mut stream = tokio::net::TcpStream::connect(lane.addr)
            .await
            .expect("connect");
        stream.write_all(sent).await.expect("send");
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
            .await
            .expect("closed well within 5 s");
        assert!(closed.is_ok() && rest.is_empty(), "{sent:?}: {rest:?}");
    }
    assert_eq!(
        lane.app.metrics.fast_lane_counts(),
        before,
        "closed by the lane, not handed to hyper"
    );
}

#[tokio::test]
async fn a_hand_off_replays_every_byte_the_lane_read_before_it() {
    let (db, lane, hyper) = lane_and_hyper(ServeSettings::default()).await;
    let product = db.ids("SELECT min(id)::bigint FROM products").await[0];
    // One packet: a hit, a write with its body, and two more reads, the last closing.
    let body = r#"{"element":"a","widget":"qa","time":"09:30"}"#;
    let mut packet = get(&format!("/products/{product}"), "X-Request-Id: p1\r\n");
    packet.extend(
        format!(
            "POST /interactions HTTP/1.1\r\nHost: test\r\nAuthorization: t\r\n\
             X-Request-Id: p2\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    );
    packet.extend(get(
        &format!("/products/{product}/styles"),
        "X-Request-Id: p3\r\n",
    ));
    packet.extend(get(
        &format!("/reviews/meta?product_id={product}"),
        "X-Request-Id: p4\r\nConnection: close\r\n",
    ));
    let (text, answered, handoffs) = same_from_both(&lane, &hyper, &[&packet]).await;
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 3, "{text}");
    assert_eq!(text.matches("HTTP/1.1 201 Created").count(), 1, "{text}");
    assert_eq!(
        (answered, handoffs),
        (1, 1),
        "the first read answered in the lane, the rest by hyper from the rewound bytes"
    );
}

#[tokio::test]
async fn many_pipelined_requests_for_long_pages_are_answered_in_order() {
    let (db, lane, hyper) = lane_and_hyper(ServeSettings::default()).await;
    let product = db
        .ids("SELECT product_id FROM reviews GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1")
        .await[0];
    // Far more than the lane gathers before it writes (64 KiB): it writes in turns, and every
    // answer comes, in order.
    let mut packet = Vec::new();
    for n in 0..120 {
        packet.extend(get(
            &format!("/reviews?product_id={product}&count=1000&page=1"),
            &format!("X-Request-Id: m{n}\r\n"),
        ));
    }
    packet.extend(get(
        &format!("/products/{product}"),
        "Connection: close\r\n",
    ));
    let raw = exchange_raw(lane.addr, &[&packet]).await;
    let from_hyper = exchange(hyper.addr, &[&packet]).await;
    let mut from_lane = raw.clone();
    blank(&mut from_lane, b"\r\ndate: ");
    blank(&mut from_lane, b"\r\nx-request-id: ");
    assert!(
        from_lane.len() > 4 * 64 * 1024,
        "long answers: {}",
        from_lane.len()
    );
    assert!(from_lane == from_hyper, "the same bytes as hyper's");
    let text = String::from_utf8_lossy(&raw);
    let ids: Vec<&str> = text
        .split("\r\nx-request-id: ")
        .skip(1)
        .map(|rest| rest.split("\r\n").next().unwrap_or(""))
        .collect();
    assert_eq!(ids.len(), 121);
    assert!(ids[..120]
        .iter()
        .enumerate()
        .all(|(n, id)| *id == format!("m{n}")));
}

#[tokio::test]
async fn requests_the_lane_leaves_to_hyper_are_answered_as_hyper_does() {
    let mut settings = ServeSettings::default();
    settings.limits.max_headers = 16;
    let (db, lane, hyper) = lane_and_hyper(settings).await;
    let product = db.ids("SELECT min(id)::bigint FROM products").await[0];
    let target = format!("/products/{product}");
    // Warm the hit first, so that each hand-off below is the request's doing, not a miss's.
    exchange(lane.addr, &[&get(&target, "Connection: close\r\n")]).await;
    let crowded: String = (0..20).map(|i| format!("X-Extra-{i}: v\r\n")).collect();
    let requests = [
        format!("HEAD {target} HTTP/1.1\r\nX-Request-Id: h1\r\nConnection: close\r\n\r\n"),
        format!("GET {target} HTTP/1.0\r\nX-Request-Id: h2\r\n\r\n"),
        format!("GET http://test{target} HTTP/1.1\r\nX-Request-Id: h3\r\nConnection: close\r\n\r\n"),
        format!("GET {target} HTTP/1.1\r\nExpect: 100-continue\r\nX-Request-Id: h4\r\nConnection: close\r\n\r\n"),
        format!("GET {target}?x=%7Bbraces%7D#frag HTTP/1.1\r\nX-Request-Id: h5\r\nConnection: close\r\n\r\n"),
        format!("GET {target} HTTP/1.1\r\n{crowded}X-Request-Id: h6\r\nConnection: close\r\n\r\n"),
    ];
    let (answered_before, handoffs_before) = lane.app.metrics.fast_lane_counts();
    for request in &requests {
        same_from_both(&lane, &hyper, &[request.as_bytes()]).await;
    }
    let crowded_answer = exchange(hyper.addr, &[requests[5].as_bytes()]).await;
    assert!(
        crowded_answer.starts_with(b"HTTP/1.1 431"),
        "--max-headers 16: {}",
        String::from_utf8_lossy(&crowded_answer)
    );
    assert_eq!(
        lane.app.metrics.fast_lane_counts(),
        (answered_before, handoffs_before + requests.len() as u64),
        "each handed to hyper"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_stops_sending_does_not_hold_up_a_stop() {
    let data = common::generated("fast-lane", 0.0005, 17);
    let settings = ServeSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        fast_lane: true,
        drain_timeout: Duration::from_secs(120),
        ..Default::default()
    };
    let (db, lane) = common::server_with_settings(data.path(), settings).await;
    common::ready(lane.addr).await;
    let product = db.ids("SELECT min(id)::bigint FROM products").await[0];
    let mut batch = Vec::new();
    for _ in 0..1_000 {
        batch.extend(get(&format!("/products/{product}"), ""));
    }
    let stream = tokio::net::TcpStream::connect(lane.addr)
        .await
        .expect("connect");
    let (mut from_server, mut to_server) = stream.into_split();
    // Always more to send: the lane finds bytes waiting on nearly every read, and must still
    // see the stop (between batches, or when tokio's budget makes a read wait).
    let sender = tokio::spawn(async move { while to_server.write_all(&batch).await.is_ok() {} });
    let reader = tokio::spawn(async move {
        let mut buf = vec![0; 64 * 1024];
        let mut total = 0;
        while let Ok(n @ 1..) = from_server.read(&mut buf).await {
            total += n;
        }
        total
    });
    tokio::time::timeout(Duration::from_secs(30), async {
        while common::metric(lane.addr, "atelier_fast_lane_requests_total").await < 1_000 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the lane answers the client");
    // The connection finishes what it gathered and closes; the stop does not wait out the
    // 120 s drain timeout (after which it would cut the connection itself).
    tokio::time::timeout(Duration::from_secs(60), lane.stop())
        .await
        .expect("the stop ends before the drain timeout")
        .expect("stop");
    let read = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("the connection is closed")
        .expect("reader");
    assert!(read > 0);
    sender.abort();
}
