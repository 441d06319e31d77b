//! What one client can hold of the server: a cap on open connections, and a time limit on a
//! response write that makes no progress.
//!
//! At the cap a new connection closes the connection that has been idle longest (between
//! requests, or still sending its first request's headers), so that idle connections, however
//! many, cannot shut out clients with requests to make; when every open connection is busy
//! (handling a request, or sending an answer its client has not taken in yet), the new one is
//! answered 503 and closed.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use std::future::Future as _;

use tokio::sync::Notify;

/// The open connections of one server.
pub struct Connections {
    cap: usize,
    started: Instant,
    open: Mutex<Registry>,
    /// Connections closed to make room for a new one.
    pub evicted: AtomicU64,
    /// Connections refused because every open one was busy.
    pub refused: AtomicU64,
    /// Refusals being answered now (each holds its socket for up to a second).
    answering_refusals: AtomicU64,
    /// The second (since start) of the last refusal logged.
    refusal_logged_s: AtomicU64,
}

/// The most refusals answered at once; past it a refused connection is closed without a word.
const MAX_ANSWERED_REFUSALS: u64 = 64;

#[derive(Default)]
struct Registry {
    next_id: u64,
    by_id: HashMap<u64, Arc<ConnState>>,
}

/// One open connection as the registry sees it.
#[derive(Debug)]
pub struct ConnState {
    id: u64,
    /// Requests being handled now, and answers its client has not taken in yet.
    busy: AtomicU32,
    /// When it last finished a request (or opened), in ms since the server started.
    idle_since_ms: AtomicU64,
    /// Notified when the connection is to close to make room.
    pub evict: Notify,
    /// Set before `evict` is notified: for a loop that reads without waiting on `evict`.
    evicted: AtomicBool,
}

impl ConnState {
    /// Whether a request is being handled on the connection now, or an answer is waiting
    /// for its client to take it in.
    pub fn is_busy(&self) -> bool {
        self.busy.load(Ordering::Acquire) > 0
    }

    /// Whether the connection was closed to make room (its `evict` notified).
    pub fn is_evicted(&self) -> bool {
        self.evicted.load(Ordering::Acquire)
    }
}

/// What the accept loop does with a new connection.
pub enum Admission {
    /// Serve it (room was made if need be).
    Admitted(Arc<ConnState>),
    /// Every open connection is busy: answer 503 and close it.
    Refused,
}

impl Connections {
    pub fn new(cap: usize) -> Connections {
        Connections {
            cap: cap.max(1),
            started: Instant::now(),
            open: Mutex::new(Registry::default()),
            evicted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            answering_refusals: AtomicU64::new(0),
            refusal_logged_s: AtomicU64::new(u64::MAX),
        }
    }

    fn now_ms(&self) -> u64 {
        ms_since(self.started)
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.registry().by_id.len()
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        // The registry holds no invariant a panic elsewhere could break.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a new connection, closing the longest-idle one if the cap is reached.
    pub fn admit(&self) -> Admission {
        let mut registry = self.registry();
        if registry.by_id.len() >= self.cap {
            let idlest = registry
                .by_id
                .values()
                .filter(|c| c.busy.load(Ordering::Acquire) == 0)
                .min_by_key(|c| c.idle_since_ms.load(Ordering::Relaxed))
                .map(|c| c.id);
            match idlest.and_then(|id| registry.by_id.remove(&id)) {
                Some(evicted) => {
                    evicted.evicted.store(true, Ordering::Release);
                    evicted.evict.notify_one();
                    self.evicted.fetch_add(1, Ordering::Relaxed);
                }
                None => {
                    self.refused.fetch_add(1, Ordering::Relaxed);
                    return Admission::Refused;
                }
            }
        }
        let id = registry.next_id;
        registry.next_id += 1;
        let state = Arc::new(ConnState {
            id,
            busy: AtomicU32::new(0),
            idle_since_ms: AtomicU64::new(self.now_ms()),
            evict: Notify::new(),
            evicted: AtomicBool::new(false),
        });
        registry.by_id.insert(id, Arc::clone(&state));
        Admission::Admitted(state)
    }

    /// Whether a refused connection may be answered (a 503) rather than closed at once: true
    /// while fewer than 64 are; call [`Self::refusal_answered`] after.
    pub fn may_answer_refusal(&self) -> bool {
        let answering = self.answering_refusals.fetch_add(1, Ordering::AcqRel);
        if answering >= MAX_ANSWERED_REFUSALS {
            self.answering_refusals.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// A refusal that [`Self::may_answer_refusal`] allowed has been answered.
    pub fn refusal_answered(&self) {
        self.answering_refusals.fetch_sub(1, Ordering::AcqRel);
    }

    /// Whether to log a refusal now: the first in each second (a flood writes a line a second).
    pub fn should_log_refusal(&self) -> bool {
        let second = self.now_ms() / 1000;
        self.refusal_logged_s.swap(second, Ordering::Relaxed) != second
    }

    /// Forgets a connection that has closed.
    pub fn closed(&self, conn: &ConnState) {
        self.registry().by_id.remove(&conn.id);
    }

    /// Marks `conn` busy until the returned guard drops: when its request is answered, or,
    /// for a body sent in runs, when the last run is written ([`super::respond::Body`]).
    pub fn busy(&self, conn: &Arc<ConnState>) -> Busy {
        self.marker(conn).busy()
    }

    /// What marks `conn` busy on demand, for its IO ([`WriteDeadline::busy_while_stuck`]).
    pub fn marker(&self, conn: &Arc<ConnState>) -> BusyMarker {
        BusyMarker {
            started: self.started,
            conn: Arc::clone(conn),
        }
    }
}

/// Marks one connection busy ([`Connections::marker`]).
#[derive(Debug)]
pub struct BusyMarker {
    /// The registry's clock ([`Connections::now_ms`]).
    started: Instant,
    conn: Arc<ConnState>,
}

impl BusyMarker {
    /// The connection, busy until the returned guard drops.
    pub fn busy(&self) -> Busy {
        self.conn.busy.fetch_add(1, Ordering::AcqRel);
        Busy {
            started: self.started,
            conn: Arc::clone(&self.conn),
        }
    }
}

/// Milliseconds since `started` (saturating).
fn ms_since(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// A request in progress on a connection; see [`Connections::busy`].
#[derive(Debug)]
pub struct Busy {
    /// The registry's clock ([`Connections::now_ms`]).
    started: Instant,
    conn: Arc<ConnState>,
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.conn
            .idle_since_ms
            .store(ms_since(self.started), Ordering::Relaxed);
        self.conn.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An IO whose writes fail with `TimedOut` once the client has kept a response waiting for
/// `limit`: from the first write the socket could not take, until everything written is
/// flushed. Progress in between does not restart the clock, so a client that reads a trickle
/// is cut off as surely as one that reads nothing.
pub struct WriteDeadline<T> {
    inner: T,
    limit: Duration,
    /// Running from the first write the socket could not take since the last complete flush.
    waiting: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Marks the connection busy while `waiting` runs (see [`Self::busy_while_stuck`]).
    marker: Option<BusyMarker>,
    /// The busy mark held while `waiting` runs.
    stuck: Option<Busy>,
}

impl<T> WriteDeadline<T> {
    pub fn new(inner: T, limit: Duration) -> WriteDeadline<T> {
        WriteDeadline {
            inner,
            limit,
            waiting: None,
            marker: None,
            stuck: None,
        }
    }

    /// Keeps the connection busy while an answer waits for its client to take it in: hyper
    /// counts a request done once its answer is handed over, not once it is sent, and the
    /// connection cap must not close a connection mid-answer to make room (its client would
    /// get a cut-off body).
    pub fn busy_while_stuck(mut self, marker: BusyMarker) -> WriteDeadline<T> {
        self.marker = Some(marker);
        self
    }

    /// What the inner IO answered, unless the client has kept this write waiting too long.
    fn within_limit<R>(
        &mut self,
        answered: Poll<io::Result<R>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<R>> {
        if answered.is_pending() && self.waiting.is_none() {
            self.waiting = Some(Box::pin(tokio::time::sleep(self.limit)));
            self.stuck = self.marker.as_ref().map(BusyMarker::busy);
        }
        let expired = self
            .waiting
            .as_mut()
            .is_some_and(|timer| timer.as_mut().poll(cx).is_ready());
        if expired {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client kept its response waiting for too long",
            )));
        }
        answered
    }
}

impl<T: hyper::rt::Read + Unpin> hyper::rt::Read for WriteDeadline<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: hyper::rt::Write + Unpin> hyper::rt::Write for WriteDeadline<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let answered = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.within_limit(answered, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let answered = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.within_limit(answered, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let answered = Pin::new(&mut this.inner).poll_flush(cx);
        let answered = this.within_limit(answered, cx);
        if matches!(answered, Poll::Ready(Ok(()))) {
            // Everything written has gone out: the client is keeping up again.
            this.waiting = None;
            this.stuck = None;
        }
        answered
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_the_cap_the_longest_idle_connection_makes_room_and_busy_ones_are_kept() {
        let connections = Connections::new(2);
        let Admission::Admitted(first) = connections.admit() else {
            panic!("room")
        };
        std::thread::sleep(Duration::from_millis(5));
        let Admission::Admitted(second) = connections.admit() else {
            panic!("room")
        };
        // At the cap: the first, idle longest, is closed for the third.
        let Admission::Admitted(third) = connections.admit() else {
            panic!("the idle one makes room")
        };
        assert_eq!(connections.open(), 2);
        assert_eq!(connections.evicted.load(Ordering::Relaxed), 1);
        assert!(futures_util::FutureExt::now_or_never(first.evict.notified()).is_some());
        assert!(futures_util::FutureExt::now_or_never(second.evict.notified()).is_none());
        assert!(first.is_evicted() && !second.is_evicted());
        // Both open ones busy: a new connection is refused, and nothing is closed.
        let _a = connections.busy(&second);
        let _b = connections.busy(&third);
        assert!(matches!(connections.admit(), Admission::Refused));
        assert_eq!(connections.refused.load(Ordering::Relaxed), 1);
        assert_eq!(connections.open(), 2);
        drop(_a);
        assert!(matches!(connections.admit(), Admission::Admitted(_)));
        connections.closed(&third);
        assert_eq!(connections.open(), 1);
    }

    /// A socket that takes a byte, then makes the writer wait, then takes a byte…
    #[derive(Default)]
    struct Trickle {
        waited: bool,
    }

    impl hyper::rt::Write for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            _: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.waited = !self.waited;
            if !self.waited {
                Poll::Ready(Ok(1))
            } else {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    async fn write_byte(io: &mut WriteDeadline<Trickle>) -> io::Result<usize> {
        std::future::poll_fn(|cx| hyper::rt::Write::poll_write(Pin::new(&mut *io), cx, b"x")).await
    }

    #[tokio::test]
    async fn a_response_kept_waiting_fails_at_the_limit_though_it_trickles_out() {
        let limit = Duration::from_millis(100);
        let mut io = WriteDeadline::new(Trickle::default(), limit);
        let started = Instant::now();
        let cut = loop {
            match write_byte(&mut io).await {
                Ok(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                Err(e) => break e,
            }
            assert!(started.elapsed() < Duration::from_secs(2), "never cut off");
        };
        assert_eq!(cut.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= limit);

        // A client that keeps up (every write flushed out) is never cut off.
        let mut io = WriteDeadline::new(Trickle::default(), limit);
        let started = Instant::now();
        while started.elapsed() < 3 * limit {
            write_byte(&mut io).await.expect("within the limit");
            std::future::poll_fn(|cx| hyper::rt::Write::poll_flush(Pin::new(&mut io), cx))
                .await
                .expect("flushed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
