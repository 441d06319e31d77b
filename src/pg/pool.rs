//! A small pool of long-lived connections for the request path.
//!
//! tokio-postgres pipelines queries issued concurrently on one connection, so a handful of
//! connections shared round-robin serve many concurrent fills; each connection prepares every
//! read statement once, so a fill costs one round trip, not a Parse plus an Execute. A
//! connection found closed is replaced on next use. Connecting and querying are bounded by a
//! timeout, so a database that is down makes requests fail fast (503) instead of hanging.
//!
//! The same limit is the connections' `statement_timeout`, so PostgreSQL itself stops a query
//! nobody waits for any more. A query that outlives the limit on our side (a stalled network,
//! a server too busy to cancel) costs its connection: the pool asks the server to cancel what
//! runs there and opens a fresh connection for the next request, so the queries pipelined
//! behind a stuck one do not queue behind it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio_postgres::{Client, Config};

use super::read::Statements;
use super::DbError;

/// One pooled connection with its prepared statements.
pub struct Conn {
    pub client: Client,
    pub statements: Statements,
    /// Set when a query on it outlived the time limit: the next request replaces it.
    abandoned: std::sync::atomic::AtomicBool,
}

/// When the server's postmaster started, in microseconds since the epoch: how a replica's pool
/// and its watcher tell that they reach the very same server (`replica.rs`).
macro_rules! postmaster_started {
    () => {
        "(extract(epoch FROM pg_postmaster_start_time()) * 1e6)::int8"
    };
}
pub(crate) use postmaster_started;

/// Connections to the database for cache fills and writes.
pub struct Pool {
    config: Config,
    slots: Vec<Mutex<Option<Arc<Conn>>>>,
    next: AtomicUsize,
    timeout: Duration,
    /// For a replica's pool: the start time of the server each connection must reach
    /// (microseconds since the epoch; see [`Pool::only_on_server`]).
    server_started: Option<Arc<std::sync::atomic::AtomicI64>>,
}

impl Pool {
    /// A pool of `size` connections, opened lazily. `timeout` bounds connecting and each query.
    pub fn new(config: Config, size: usize, timeout: Duration) -> Pool {
        let mut config = config;
        super::notice_failures(&mut config, timeout);
        config.application_name("atelier pool");
        let limit = format!("-c statement_timeout={}", timeout.as_millis().max(1));
        super::add_options(&mut config, &limit);
        super::add_options(&mut config, "-c jit=off");
        // The request path reads one product's rows at a time; on a product with thousands of
        // reviews PostgreSQL plans the photos' join in parallel, and starting two workers
        // costs more CPU than the join (10 ms against 6 ms, measured at full scale), on a
        // database whose cores the other queries need.
        super::add_options(&mut config, "-c max_parallel_workers_per_gather=0");
        Pool {
            config,
            slots: (0..size.max(1)).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
            timeout,
            server_started: None,
        }
    }

    /// Makes each connection check, once opened, that it reached the server whose postmaster
    /// started at `started` (microseconds since the epoch, as a replica's watcher last saw it),
    /// and be refused otherwise.
    pub fn only_on_server(mut self, started: Arc<std::sync::atomic::AtomicI64>) -> Pool {
        self.server_started = Some(started);
        self
    }

    /// How the pool's connections connect: what [`Pool::new`] made of the configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The per-query time limit.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A live connection (connecting one if its slot is empty or its connection died). Waiting
    /// for the slot and connecting share one time limit, so a request never waits longer than
    /// that for a connection, however many others are queued on the same slot.
    pub async fn get(&self) -> Result<Arc<Conn>, DbError> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let attempt = async {
            let mut slot = self.slots[i].lock().await;
            if let Some(conn) = slot.as_ref() {
                if !conn.client.is_closed() && !conn.abandoned.load(Ordering::Acquire) {
                    return Ok(Arc::clone(conn));
                }
            }
            *slot = None;
            let conn = Arc::new(self.connect().await?);
            *slot = Some(Arc::clone(&conn));
            Ok(conn)
        };
        tokio::time::timeout(self.timeout, attempt)
            .await
            .map_err(|_| DbError::Unavailable("timed out connecting".into()))?
    }

    /// Gives up on `conn`: the next request for its slot opens a fresh connection, and the
    /// server is asked to cancel whatever runs on it. Takes no lock, so a request that has
    /// already waited its limit does not wait behind a slot being reconnected.
    fn discard(&self, conn: &Arc<Conn>) {
        conn.abandoned.store(true, Ordering::Release);
        let cancel = conn.client.cancel_token();
        let limit = self.timeout;
        tokio::spawn(async move {
            let _ = tokio::time::timeout(limit, cancel.cancel_query(tokio_postgres::NoTls)).await;
        });
    }

    async fn connect(&self) -> Result<Conn, DbError> {
        let client = super::connect(&self.config)
            .await
            .map_err(|e| DbError::Unavailable(e.to_string()))?;
        if let Some(expected) = &self.server_started {
            let started: i64 = client
                .query_one(concat!("SELECT ", postmaster_started!()), &[])
                .await
                .map_err(DbError::from_query)?
                .get(0);
            if started != expected.load(Ordering::Acquire) {
                return Err(DbError::Unavailable(
                    "the replica's pool reached another server than its watcher polls".into(),
                ));
            }
        }
        let statements = Statements::prepare(&client).await?;
        Ok(Conn {
            client,
            statements,
            abandoned: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Connections currently open.
    pub fn open_connections(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| {
                s.try_lock()
                    .map(|s| s.as_ref().is_some_and(|c| !c.client.is_closed()))
                    .unwrap_or(true)
            })
            .count()
    }

    pub fn size(&self) -> usize {
        self.slots.len()
    }

    /// Runs `f` on a pooled connection within the time limit. Past it, the connection is
    /// replaced (see the module docs).
    pub async fn run<T, F, Fut>(&self, f: F) -> Result<T, DbError>
    where
        F: FnOnce(Arc<Conn>) -> Fut,
        Fut: std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    {
        let conn = self.get().await?;
        match tokio::time::timeout(self.timeout, f(Arc::clone(&conn))).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(DbError::from_query(e)),
            Err(_) => {
                self.discard(&conn);
                Err(DbError::Unavailable("query timed out".into()))
            }
        }
    }
}
