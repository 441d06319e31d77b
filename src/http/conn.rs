//! What one client can hold of the server: a cap on open connections, and a time limit on a
//! response write that makes no progress.
//!
//! At the cap a new connection closes the connection that has been idle longest (between
//! requests, or still sending its first request's headers), so that idle connections, however
//! many, cannot shut out clients with requests to make; when every open connection is busy,
//! the new one is answered 503 and closed.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
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
}

#[derive(Default)]
struct Registry {
    next_id: u64,
    by_id: HashMap<u64, Arc<ConnState>>,
}

/// One open connection as the registry sees it.
pub struct ConnState {
    id: u64,
    /// Requests being handled now.
    busy: AtomicU32,
    /// When it last finished a request (or opened), in ms since the server started.
    idle_since_ms: AtomicU64,
    /// Notified when the connection is to close to make room.
    pub evict: Notify,
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
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
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
        });
        registry.by_id.insert(id, Arc::clone(&state));
        Admission::Admitted(state)
    }

    /// Forgets a connection that has closed.
    pub fn closed(&self, conn: &ConnState) {
        self.registry().by_id.remove(&conn.id);
    }

    /// Marks `conn` busy until the returned guard drops.
    pub fn busy<'a>(&'a self, conn: &'a ConnState) -> Busy<'a> {
        conn.busy.fetch_add(1, Ordering::AcqRel);
        Busy {
            connections: self,
            conn,
        }
    }
}

/// A request in progress on a connection; see [`Connections::busy`].
pub struct Busy<'a> {
    connections: &'a Connections,
    conn: &'a ConnState,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.conn
            .idle_since_ms
            .store(self.connections.now_ms(), Ordering::Relaxed);
        self.conn.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An IO whose writes fail with `TimedOut` once one has made no progress for `limit`: a client
/// that stops reading its response does not hold its connection forever.
pub struct WriteDeadline<T> {
    inner: T,
    limit: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T> WriteDeadline<T> {
    pub fn new(inner: T, limit: Duration) -> WriteDeadline<T> {
        WriteDeadline {
            inner,
            limit,
            stalled: None,
        }
    }

    /// After the inner write returned Pending: Pending until the stall lasts `limit`.
    fn poll_stall<R>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        let limit = self.limit;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read nothing of its response for too long",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn progressed<R>(
        &mut self,
        ready: Poll<io::Result<R>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<R>> {
        match ready {
            Poll::Pending => self.poll_stall(cx),
            ready => {
                self.stalled = None;
                ready
            }
        }
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
        let ready = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.progressed(ready, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let ready = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.progressed(ready, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let ready = Pin::new(&mut this.inner).poll_flush(cx);
        this.progressed(ready, cx)
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
}
