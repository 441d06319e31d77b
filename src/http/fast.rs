//! The fast lane: the catalog's hits answered straight on the socket, every other request by
//! hyper.
//!
//! Nearly every request a storefront makes is a whole `GET` of a body the precomputed catalog
//! holds. Through hyper such a hit costs about three times the user time of a hit answered
//! from a parsed head with a head written by hand (see docs/benchmarks.md, "The front end"):
//! hyper's request and response maps, a timer per request, header values allocated one by one. So
//! every connection starts here. While its requests are ones the lane answers exactly as the
//! handler behind hyper would (same bytes, same headers, same metrics and log), it answers
//! them, pipelined ones in one write; at the first request it does not, it hands the
//! connection, that request's bytes included, to hyper, which serves the rest of it.
//!
//! What the lane answers ([`read_head`], `App::answer_in_lane`): an HTTP/1.1 `GET`
//! with no body and no `Expect`, `Upgrade` or `If-None-Match`, whose target is made only of
//! bytes hyper's URI parser keeps as they are, of a catalog route ([`super::reply`]) whose
//! entry the cache holds now, from a caller the instance authorizes. Anything else — a miss, a
//! write, a 304, `HEAD`, HTTP/1.0, a malformed head — goes to hyper, whose answer it always
//! was.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::conn::ConnState;
use super::reply::Reply;
use super::respond::{self, Coding, EntityTag};
use super::App;
use crate::task;

/// The most header fields the lane reads; a request with more goes to hyper.
const MAX_HEADERS: usize = 64;

/// The longest request target hyper takes (`MAX_URI_LEN`): a longer one is hyper's 414.
const MAX_TARGET: usize = u16::MAX as usize - 1;

/// Bytes of answers the lane gathers before it writes them. Pipelined answers go out together
/// up to here, so that a client pipelining hundreds of requests for long pages cannot make one
/// connection hold all their answers at once (hyper answers them one at a time).
const MOST_GATHERED: usize = 64 * 1024;

/// The limits a head must keep to be the lane's (`--max-headers`, `--max-header-bytes`):
/// past either, it is hyper's to refuse, as it always was.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    pub max_headers: usize,
    pub max_bytes: usize,
}

/// A request head the lane may answer, borrowed from the connection's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head<'b> {
    /// Path and query, as sent.
    pub target: &'b str,
    /// False when a `Connection` header says `close`.
    pub keep_alive: bool,
    /// Whether `Accept-Encoding` takes gzip ([`respond::accepts_gzip`]).
    pub gzip: bool,
    /// The first `Authorization` value.
    pub authorization: Option<&'b [u8]>,
    /// The first `X-Request-Id` value.
    pub request_id: Option<&'b [u8]>,
}

impl Head<'_> {
    /// The path, and the query after the first `?` (empty, not absent, after a bare `?`).
    pub fn path_and_query(&self) -> (&str, Option<&str>) {
        match self.target.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (self.target, None),
        }
    }
}

/// What the start of a connection's buffer holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Read<'b> {
    /// A whole head the lane may answer, and its length in bytes.
    Head(Head<'b>, usize),
    /// Part of a head: read more.
    Partial,
    /// Something for hyper: another method or version, a body, a header the lane leaves to
    /// the handler, a target hyper would read differently, or a malformed head.
    NotForLane,
}

/// Reads the request head at the start of `buf`.
pub fn read_head(buf: &[u8], limits: HeadLimits) -> Read<'_> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut fields);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Read::Partial,
        Err(_) => return Read::NotForLane,
    };
    if request.method != Some("GET")
        || request.version != Some(1)
        || len > limits.max_bytes
        || request.headers.len() > limits.max_headers
    {
        return Read::NotForLane;
    }
    let Some(target) = request
        .path
        .filter(|t| t.len() <= MAX_TARGET && is_plain_target(t.as_bytes()))
    else {
        return Read::NotForLane;
    };
    let mut head = Head {
        target,
        keep_alive: true,
        gzip: false,
        authorization: None,
        request_id: None,
    };
    let mut accept_encoding = false;
    for field in request.headers.iter() {
        let name = field.name;
        let is = |wanted: &str| name.eq_ignore_ascii_case(wanted);
        if is("content-length")
            || is("transfer-encoding")
            || is("expect")
            || is("upgrade")
            || is("if-none-match")
        {
            return Read::NotForLane;
        } else if is("connection") {
            // As hyper reads it: any `close` token ends the connection after the answer; a
            // value that is not visible ASCII hyper ignores whole, so it is hyper's.
            let Some(value) = respond::visible_str(field.value) else {
                return Read::NotForLane;
            };
            if has_token(value, "close") {
                head.keep_alive = false;
            }
        } else if is("accept-encoding") {
            accept_encoding = true;
        } else if is("authorization") {
            head.authorization.get_or_insert(field.value);
        } else if is("x-request-id") {
            head.request_id.get_or_insert(field.value);
        }
    }
    if accept_encoding {
        head.gzip = respond::accepts_gzip(
            request
                .headers
                .iter()
                .filter(|f| f.name.eq_ignore_ascii_case("accept-encoding"))
                .map(|f| f.value),
        );
    }
    Read::Head(head, len)
}

/// Whether a request target is an origin-form path and query that hyper's URI parser keeps
/// byte for byte: unreserved and sub-delimiter characters, `%`, `:`, `@`, `/` and `?`. (It
/// drops a fragment, and takes some bytes this set leaves out; those requests go to hyper.)
fn is_plain_target(target: &[u8]) -> bool {
    target.first() == Some(&b'/')
        && target.iter().all(|&b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'-' | b'.'
                        | b'_'
                        | b'~'
                        | b'!'
                        | b'$'
                        | b'&'
                        | b'\''
                        | b'('
                        | b')'
                        | b'*'
                        | b'+'
                        | b','
                        | b';'
                        | b'='
                        | b'%'
                        | b':'
                        | b'@'
                        | b'/'
                        | b'?'
                )
        })
}

/// Whether the bytes from `from` on (and the three before, which a head's end may straddle)
/// could end a head: hyper's quick check before it parses a head again.
fn may_end_head(buf: &[u8], from: usize) -> bool {
    let tail = &buf[from.saturating_sub(3).min(buf.len())..];
    tail.iter().enumerate().any(|(i, &b)| {
        b == b'\n' && (tail[i + 1..].starts_with(b"\n") || tail[i + 1..].starts_with(b"\r\n"))
    })
}

/// Whether a comma-separated header value lists `token` (any case).
fn has_token(value: &str, token: &str) -> bool {
    value
        .split(',')
        .any(|item| item.trim().eq_ignore_ascii_case(token))
}

/// The parts of a response the lane writes besides its reply.
pub struct Framing<'a> {
    /// `Access-Control-Allow-Origin`.
    pub cors_origin: &'a [u8],
    pub request_id: &'a [u8],
    /// The instance is draining: every response says `Connection: close`.
    pub draining: bool,
    /// The request asked for the connection to close after its answer.
    pub closing: bool,
}

/// Appends `reply` as hyper sends the handler's response for it, header for header in the
/// same order: the handler's headers, then the `connection: close` hyper adds when the
/// request asked for it, then `content-length` and `date`.
pub fn write_response(out: &mut Vec<u8>, reply: &Reply<'_>, framing: &Framing<'_>) {
    const TEXT: &[u8] = b"content-type: text/plain; charset=utf-8\r\n";
    let (before, body): (&[u8], &[u8]) = match reply {
        Reply::Json {
            body,
            digest,
            coding,
        } => {
            out.extend_from_slice(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\netag: ");
            out.extend_from_slice(EntityTag::new(*digest, *coding).as_bytes());
            out.extend_from_slice(b"\r\nvary: Accept-Encoding\r\n");
            if *coding == Coding::Gzip {
                out.extend_from_slice(b"content-encoding: gzip\r\n");
            }
            body.parts()
        }
        Reply::NotFound => {
            out.extend_from_slice(b"HTTP/1.1 404 Not Found\r\n");
            out.extend_from_slice(TEXT);
            (&[], respond::NOT_FOUND.as_bytes())
        }
        Reply::Unreadable => {
            out.extend_from_slice(b"HTTP/1.1 500 Internal Server Error\r\n");
            out.extend_from_slice(TEXT);
            (&[], respond::INTERNAL_ERROR.as_bytes())
        }
    };
    out.extend_from_slice(b"access-control-allow-origin: ");
    out.extend_from_slice(framing.cors_origin);
    if framing.draining {
        out.extend_from_slice(b"\r\nconnection: close");
    }
    out.extend_from_slice(b"\r\nx-request-id: ");
    out.extend_from_slice(framing.request_id);
    if framing.closing && !framing.draining {
        out.extend_from_slice(b"\r\nconnection: close");
    }
    out.extend_from_slice(b"\r\ncontent-length: ");
    out.extend_from_slice(
        itoa::Buffer::new()
            .format(before.len() + body.len())
            .as_bytes(),
    );
    out.extend_from_slice(b"\r\ndate: ");
    http_date(|date| out.extend_from_slice(date));
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(before);
    out.extend_from_slice(body);
}

/// Calls `f` with the `Date` header's value now (IMF-fixdate), formatted once a second per
/// thread as hyper does.
fn http_date(f: impl FnOnce(&[u8])) {
    thread_local! {
        static DATE: std::cell::RefCell<(u64, [u8; 29])> = const {
            std::cell::RefCell::new((u64::MAX, [0; 29]))
        };
    }
    let now = SystemTime::now();
    let second = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != second {
            let formatted = httpdate::fmt_http_date(now);
            let bytes = formatted.as_bytes();
            if bytes.len() == 29 {
                cached.1.copy_from_slice(bytes);
                cached.0 = second;
            }
        }
        f(&cached.1);
    });
}

/// How a connection left the lane.
pub enum Ended {
    /// Closed: by the client, a limit, eviction, shutdown, or after a `Connection: close`.
    Closed,
    /// For hyper to serve from the request the lane did not answer on.
    HandOff(Rewind<TcpStream>),
}

/// What [`gather`] did with the bytes a connection has sent.
#[derive(Debug, PartialEq, Eq)]
struct Gathered {
    /// Bytes of the buffer whose requests were answered.
    used: usize,
    /// The last answer closes the connection.
    closing: bool,
    /// The head after the answered ones is hyper's.
    hand_off: bool,
    /// `out` reached [`MOST_GATHERED`] with heads possibly still waiting.
    full: bool,
}

/// Answers the whole heads at the front of `buf`, in order, into `out` with `answer` (which
/// returns whether the connection stays open, or `None` for a request that is hyper's),
/// until one is hyper's, one closes the connection, `out` holds [`MOST_GATHERED`], or only
/// part of a head is left (`partial` then says how much of `buf` was there, and the head is
/// not parsed again until bytes come that may end it). An answer that panics (a bug) leaves
/// `out` as it was and its request to hyper, which answers it afresh; the panic is logged.
fn gather(
    buf: &[u8],
    partial: &mut Option<usize>,
    limits: HeadLimits,
    out: &mut Vec<u8>,
    mut answer: impl FnMut(&Head<'_>, &mut Vec<u8>) -> Option<bool>,
) -> Gathered {
    let mut gathered = Gathered {
        used: 0,
        closing: false,
        hand_off: false,
        full: false,
    };
    while gathered.used < buf.len() {
        if partial.is_some_and(|seen| !may_end_head(buf, seen)) {
            break;
        }
        let (head, len) = match read_head(&buf[gathered.used..], limits) {
            Read::Head(head, len) => (head, len),
            Read::Partial => {
                *partial = Some(buf.len());
                break;
            }
            Read::NotForLane => {
                gathered.hand_off = true;
                break;
            }
        };
        *partial = None;
        let mark = out.len();
        let answered =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| answer(&head, &mut *out)));
        if answered.is_err() {
            let target = &head.target;
            tracing::error!(%target, "the fast lane's answer panicked; hyper answers it");
        }
        let Ok(Some(keep_open)) = answered else {
            out.truncate(mark);
            gathered.hand_off = true;
            break;
        };
        gathered.used += len;
        if !keep_open {
            gathered.closing = true;
            break;
        }
        if out.len() >= MOST_GATHERED {
            gathered.full = true;
            break;
        }
    }
    gathered
}

/// Serves `stream` in the lane until it closes or reaches a request the lane does not answer.
///
/// The same limits apply as under hyper: a head must be whole within `--header-timeout-ms` of
/// the wait for it starting (so an idle connection closes then too), a response write may make
/// no progress for `--write-timeout-ms`, a head may be `--max-header-bytes` long; the
/// connection is marked busy while it answers (the cap closes idle ones only), closes when it
/// is evicted or the server stops, and says `Connection: close` while the instance drains.
pub async fn serve(
    app: &App,
    conn: &Arc<ConnState>,
    mut stream: TcpStream,
    stop: &mut watch::Receiver<bool>,
) -> Ended {
    let limits = &app.settings.limits;
    let head_limits = HeadLimits {
        max_headers: limits.max_headers,
        max_bytes: limits.max_header_bytes,
    };
    let most_bytes = limits.max_header_bytes.max(8192);
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut out: Vec<u8> = Vec::with_capacity(4096);
    // How much of `buf` was there when it last held only part of a head: until a read brings
    // bytes that may end it, the head is not parsed again (a head sent a byte at a time would
    // otherwise be parsed once a byte).
    let mut partial: Option<usize> = None;
    let mut deadline = Instant::now() + limits.header_timeout;
    let idle = tokio::time::sleep_until(deadline.into());
    tokio::pin!(idle);
    loop {
        // Marked busy only while it answers: a connection still sending a head keeps the idle
        // time of its last answer, as under hyper, for the cap to close it first.
        let mut busy = None;
        let Gathered {
            used,
            closing,
            hand_off,
            full,
        } = gather(&buf, &mut partial, head_limits, &mut out, |head, out| {
            busy.get_or_insert_with(|| app.connections.busy(conn));
            app.answer_in_lane(head, out)
        });
        if !out.is_empty() {
            let written = task::within(limits.write_timeout, stream.write_all(&out)).await;
            if !matches!(written, Ok(Ok(()))) {
                return Ended::Closed;
            }
            out.clear();
            // One long answer does not keep its buffer for the rest of the connection.
            if out.capacity() > 2 * MOST_GATHERED {
                out = Vec::with_capacity(4096);
            }
            deadline = Instant::now() + limits.header_timeout;
        }
        drop(busy);
        if hand_off || (!closing && buf.len() - used >= most_bytes) {
            // A head too long for the lane is hyper's to refuse, as it always was.
            app.metrics.fast_lane_handed_off();
            buf.drain(..used);
            return Ended::HandOff(Rewind::new(buf, stream));
        }
        if closing {
            let _ = task::within(limits.write_timeout, stream.shutdown()).await;
            return Ended::Closed;
        }
        buf.drain(..used);
        if let Some(seen) = &mut partial {
            *seen -= used;
        }
        // A client that always has more to send never lets the select below wait on the stop
        // or the eviction: both are looked at here too, at the cost of two atomic loads.
        if conn.is_evicted() || stop.has_changed().unwrap_or(true) {
            return Ended::Closed;
        }
        if full {
            // More whole heads may be waiting in `buf`: answer them before reading again.
            tokio::task::yield_now().await;
            continue;
        }
        buf.reserve(4096.min(most_bytes + 1 - buf.len()));
        loop {
            tokio::select! {
                biased;
                read = stream.read_buf(&mut buf) => match read {
                    Ok(0) | Err(_) => return Ended::Closed,
                    Ok(_) => break,
                },
                _ = &mut idle => {
                    // One timer for the connection, moved only when it fires early.
                    if Instant::now() >= deadline {
                        return Ended::Closed;
                    }
                    idle.as_mut().reset(deadline.into());
                }
                _ = stop.changed() => return Ended::Closed,
                _ = conn.evict.notified() => return Ended::Closed,
            }
        }
    }
}

/// A stream that yields `prefix` before what is still to be read from `inner`: the bytes the
/// lane read but did not answer, for hyper to read first.
pub struct Rewind<T> {
    prefix: Vec<u8>,
    /// How much of `prefix` has been read.
    taken: usize,
    inner: T,
}

impl<T> Rewind<T> {
    pub fn new(prefix: Vec<u8>, inner: T) -> Rewind<T> {
        Rewind {
            prefix,
            taken: 0,
            inner,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.taken < this.prefix.len() {
            let rest = &this.prefix[this.taken..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.taken += n;
            if this.taken == this.prefix.len() {
                this.prefix = Vec::new();
                this.taken = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT_LIMITS: HeadLimits = HeadLimits {
        max_headers: MAX_HEADERS,
        max_bytes: 16 * 1024,
    };

    fn head_of(request: &str) -> Read<'_> {
        read_head(request.as_bytes(), DEFAULT_LIMITS)
    }

    #[test]
    fn a_plain_get_is_read_and_anything_else_is_left_to_hyper() {
        let request = "GET /reviews?product_id=7&count=5 HTTP/1.1\r\nHost: x\r\n\
             Accept-Encoding: br\r\naccept-encoding: gzip;q=0.5\r\nAuthorization: a\r\n\
             Authorization: b\r\nX-Request-Id: r1\r\n\r\nGET /next";
        let Read::Head(head, len) = head_of(request) else {
            panic!("a plain GET")
        };
        assert_eq!(&request[len..], "GET /next", "the head's length");
        assert_eq!(head.target, "/reviews?product_id=7&count=5");
        assert_eq!(
            head.path_and_query(),
            ("/reviews", Some("product_id=7&count=5"))
        );
        assert!(head.keep_alive && head.gzip);
        assert_eq!(
            head.authorization,
            Some(&b"a"[..]),
            "the first, as HeaderMap::get"
        );
        assert_eq!(head.request_id, Some(&b"r1"[..]));

        let Read::Head(head, _) = head_of("GET /a? HTTP/1.1\r\nConnection: TE, Close\r\n\r\n")
        else {
            panic!("a plain GET")
        };
        assert_eq!(head.path_and_query(), ("/a", Some("")));
        assert!(!head.keep_alive && !head.gzip);

        assert_eq!(
            head_of("GET /products/1 HTTP/1.1\r\nHost: x\r\n"),
            Read::Partial
        );
        for not_for_lane in [
            "HEAD /products/1 HTTP/1.1\r\n\r\n",
            "POST /cart HTTP/1.1\r\n\r\n",
            "GET /products/1 HTTP/1.0\r\n\r\n",
            "GET /products/1 HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            "GET /products/1 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /products/1 HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            "GET /products/1 HTTP/1.1\r\nUpgrade: h2c\r\n\r\n",
            "GET /products/1 HTTP/1.1\r\nIf-None-Match: \"x\"\r\n\r\n",
            "GET /products/1#frag HTTP/1.1\r\n\r\n",
            "GET /products/\"1\" HTTP/1.1\r\n\r\n",
            "GET http://x/products/1 HTTP/1.1\r\n\r\n",
            "GET * HTTP/1.1\r\n\r\n",
            "GET /products/1 HTTP/1.1\r\nBad Header\r\n\r\n",
        ] {
            assert_eq!(head_of(not_for_lane), Read::NotForLane, "{not_for_lane:?}");
        }
        let many: String = (0..=MAX_HEADERS).map(|i| format!("h{i}: v\r\n")).collect();
        let crowded = format!("GET /products/1 HTTP/1.1\r\n{many}\r\n");
        assert_eq!(head_of(&crowded), Read::NotForLane);
        assert_eq!(
            head_of("GET /products/1 HTTP/1.1\r\nConnection: close, \u{e9}\r\n\r\n"),
            Read::NotForLane,
            "a Connection value hyper does not read"
        );
    }

    #[test]
    fn a_head_past_the_configured_limits_is_hyper_s() {
        let head = "GET /products/1 HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n";
        let fits = |max_headers, max_bytes| {
            matches!(
                read_head(
                    head.as_bytes(),
                    HeadLimits {
                        max_headers,
                        max_bytes
                    }
                ),
                Read::Head(..)
            )
        };
        assert!(fits(2, head.len()));
        assert!(!fits(1, head.len()), "--max-headers");
        assert!(!fits(2, head.len() - 1), "--max-header-bytes");
        let long = format!(
            "GET /products/1?{} HTTP/1.1\r\n\r\n",
            "a".repeat(MAX_TARGET)
        );
        let roomy = HeadLimits {
            max_headers: MAX_HEADERS,
            max_bytes: 1 << 20,
        };
        assert_eq!(
            read_head(long.as_bytes(), roomy),
            Read::NotForLane,
            "hyper's 414"
        );
    }

    #[test]
    fn a_head_is_parsed_again_only_when_new_bytes_may_end_it() {
        let head = b"GET /products/1 HTTP/1.1\r\nHost: x\r\n\r\n";
        // Every split of a whole head: the bytes after the split may end it.
        for split in 0..head.len() {
            assert!(may_end_head(head, split), "split at {split}");
        }
        assert!(!may_end_head(b"GET / HTTP/1.1\r\nHost: x\r\nAcc", 20));
        assert!(may_end_head(b"GET / HTTP/1.1\n\n", 15), "bare line feeds");
        assert!(!may_end_head(b"GET / HTTP/1.1\r\n", 99), "past the end");
    }

    /// `n` pipelined GETs of `/products/1`, and the length of one.
    fn pipelined(n: usize) -> (Vec<u8>, usize) {
        let one = b"GET /products/1 HTTP/1.1\r\nHost: x\r\n\r\n";
        (one.repeat(n), one.len())
    }

    #[test]
    fn answers_are_gathered_up_to_the_cap_and_no_further() {
        let (buf, one) = pipelined(100);
        let mut out = Vec::new();
        let mut partial = None;
        let mut answered = 0;
        let gathered = gather(&buf, &mut partial, DEFAULT_LIMITS, &mut out, |_, out| {
            answered += 1;
            out.extend_from_slice(&[b'x'; 10_000]);
            Some(true)
        });
        // 7 answers make 70,000 bytes, the first past 64 KiB.
        assert_eq!(answered, 7);
        assert_eq!(
            gathered,
            Gathered {
                used: 7 * one,
                closing: false,
                hand_off: false,
                full: true
            }
        );
        assert_eq!(out.len(), 70_000);

        // Small answers: every head is answered in one pass.
        out.clear();
        let gathered = gather(&buf, &mut partial, DEFAULT_LIMITS, &mut out, |_, out| {
            out.extend_from_slice(b"ok");
            Some(true)
        });
        assert_eq!((gathered.used, gathered.full), (buf.len(), false));
    }

    #[test]
    fn gathering_stops_at_a_close_a_hand_off_a_panic_and_a_partial_head() {
        let (mut buf, one) = pipelined(3);
        // Answers that close the connection at the `closing_at`th request (0: never).
        let answering_until = |closing_at: usize| {
            let mut n = 0;
            move |_: &Head<'_>, out: &mut Vec<u8>| {
                n += 1;
                out.extend_from_slice(b"answer");
                Some(n != closing_at)
            }
        };
        let mut out = Vec::new();
        let closed = gather(
            &buf,
            &mut None,
            DEFAULT_LIMITS,
            &mut out,
            answering_until(2),
        );
        assert_eq!((closed.used, closed.closing), (2 * one, true));

        // A panic on the second answer: the first stays, the second's bytes go, and the
        // request is hyper's.
        out.clear();
        let mut n = 0;
        let panicked = gather(&buf, &mut None, DEFAULT_LIMITS, &mut out, |_, out| {
            n += 1;
            out.extend_from_slice(b"answer");
            assert!(n < 2, "a bug in the second answer");
            Some(true)
        });
        assert_eq!((panicked.used, panicked.hand_off), (one, true));
        assert_eq!(out, b"answer");

        // A request the lane does not read after the first.
        out.clear();
        let mut mixed = buf[..one].to_vec();
        mixed.extend_from_slice(b"POST /cart HTTP/1.1\r\n\r\n");
        let handed = gather(
            &mixed,
            &mut None,
            DEFAULT_LIMITS,
            &mut out,
            answering_until(0),
        );
        assert_eq!((handed.used, handed.hand_off), (one, true));

        // Part of a head after two whole ones: noted, and not parsed again until bytes come
        // that may end it.
        out.clear();
        buf.truncate(2 * one + 10);
        let mut partial = None;
        let cut = gather(
            &buf,
            &mut partial,
            DEFAULT_LIMITS,
            &mut out,
            answering_until(0),
        );
        assert_eq!(cut.used, 2 * one);
        assert_eq!(partial, Some(buf.len()));
        // Told that no byte that may end a head came since it last looked (`seen` at the end,
        // past a whole head and the start of another), gather does not parse, even a head
        // that is whole; told that such bytes came, it does.
        let (mut held, one) = pipelined(1);
        held.extend_from_slice(b"GET /pro");
        let mut answers = 0;
        let mut seen = Some(held.len());
        let waiting = gather(&held, &mut seen, DEFAULT_LIMITS, &mut out, |_, _| {
            answers += 1;
            Some(true)
        });
        assert_eq!((waiting.used, waiting.hand_off, answers), (0, false, 0));
        assert_eq!(seen, Some(held.len()), "still waiting");
        let mut seen = Some(10);
        let read = gather(&held, &mut seen, DEFAULT_LIMITS, &mut out, |_, _| {
            answers += 1;
            Some(true)
        });
        assert_eq!((read.used, answers, seen), (one, 1, Some(held.len())));
    }

    #[tokio::test]
    async fn a_rewound_stream_reads_its_prefix_first() {
        let mut rewound = Rewind::new(b"abc".to_vec(), &b"def"[..]);
        let mut all = String::new();
        rewound.read_to_string(&mut all).await.expect("read");
        assert_eq!(all, "abcdef");
    }
}
