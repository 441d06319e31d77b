//! Typed configuration of the HTTP server, built from flags and environment by the binary.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use crate::pg::feed::FeedSettings;

/// How often a running warm-up logs its progress, unless a library user says otherwise.
pub const WARMUP_PROGRESS_PERIOD: Duration = Duration::from_secs(5);

/// Everything `atelier serve` needs besides the database connection string.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Connections in the request-path pool.
    pub pool_size: usize,
    /// Bound on connecting and on each query; past it a request answers 503.
    pub db_timeout: Duration,
    /// The response cache's byte budget.
    pub cache_bytes: u64,
    /// `Access-Control-Allow-Origin`.
    pub cors_origin: String,
    /// Most rows of a `GET /products` page cached whole; a larger page (a huge `count`, meaning
    /// "all") is read and sent in runs of this many.
    pub max_page_rows: u64,
    /// When set, only these `Authorization` values are accepted (others get 401).
    pub auth_tokens: Option<Secret<HashSet<String>>>,
    /// What a caller's `Authorization` value becomes before its cart is stored under it.
    pub cart_keys: crate::cart_key::CartKeys,
    /// Largest request body accepted (413 past it).
    pub body_limit: usize,
    /// How long the change feed may be down before `/readyz` answers 503.
    pub feed_staleness: Duration,
    pub feed: FeedSettings,
    /// Where the change feed connects, when not where the pool does (a pool behind a
    /// transaction-pooling proxy cannot LISTEN).
    pub feed_database: Option<tokio_postgres::Config>,
    /// The anti-entropy sweep re-renders every cached entry within this period; `None`: off.
    pub sweep_period: Option<Duration>,
    /// The most entries the sweep re-renders a second, whatever the period asks.
    pub sweep_max_rate: u32,
    /// Whether the catalog is rendered into the cache at start (and after the feed empties it).
    pub precompute: Precompute,
    /// Where the warm-up scan reads on the primary, when not where the pool does.
    pub scan_database: Option<tokio_postgres::Config>,
    /// Streaming replicas that warm-ups, refreshes and fills may read from, fenced.
    pub replicas: crate::pg::database::ReplicaSettings,
    /// How far the precomputed catalog compacts its bodies.
    pub compaction: crate::render::Compaction,
    /// How many bytes of lists (and, dense, of whole bodies) a warm-up samples to train
    /// a dictionary on (0: none is trained; one restored with a snapshot is still used).
    pub dictionary_sample_bytes: usize,
    /// How often a running warm-up logs its progress ([`WARMUP_PROGRESS_PERIOD`]).
    pub warmup_progress_period: Duration,
    /// What one client can make the server hold or do.
    pub limits: Limits,
    /// A request at least this slow gets a log line.
    pub slow_request: Duration,
    /// One request in this many gets an access log line (0: none).
    pub access_log_sample: u64,
    /// Whether connections start in the fast lane (`--engine fast`, [`crate::http::fast`]),
    /// or go to hyper from their first request (`--engine hyper`).
    pub fast_lane: bool,
    /// How long a draining instance keeps serving (with `/readyz` at 503) before it stops
    /// accepting: longer than the balancer's health-check interval.
    pub drain_delay: Duration,
    /// How long open requests get to finish once accepting has stopped.
    pub drain_timeout: Duration,
    /// Where the catalog is written for warm restarts; None: no snapshots.
    pub snapshot: Option<SnapshotSettings>,
    /// The part of the catalog this instance precomputes (None: all of it).
    pub shard: Option<crate::shard::Shard>,
}

/// Warm restarts (see `cache::snapshot`): the catalog written to `dir` every `period` (None:
/// only at shutdown) and when the instance stops, and loaded from there at start.
#[derive(Debug, Clone, Default)]
pub struct SnapshotSettings {
    pub dir: std::path::PathBuf,
    pub period: Option<Duration>,
    /// Test hooks: how long a restore waits before loading the snapshot, and after loading it
    /// before the change feed replays what changed since, so that a test can act meanwhile.
    #[doc(hidden)]
    pub pause_before_load: Duration,
    #[doc(hidden)]
    pub pause_before_replay: Duration,
}

/// Bounds on what one client can make the server hold or do: connections, time, header bytes.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most connections open at once. At the cap a new connection closes the one idle longest;
    /// when all are busy it is answered 503 and closed.
    pub max_connections: usize,
    /// How long a client may take to send a request's headers, and may keep a connection idle
    /// between requests.
    pub header_timeout: Duration,
    /// How long a request's body may take to arrive (408 past it).
    pub body_timeout: Duration,
    /// How long a request may take from its headers to its answer, body included (503 past it).
    pub request_timeout: Duration,
    /// How long writing a response may make no progress before the connection is closed.
    pub write_timeout: Duration,
    /// The largest request head (request line and headers) read, in bytes; at least 8,192
    /// (431 past it).
    pub max_header_bytes: usize,
    /// The most header fields a request may have (431 past it).
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 10_000,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(20),
            write_timeout: Duration::from_secs(10),
            max_header_bytes: 16 << 10,
            max_headers: 64,
        }
    }
}

/// A value kept out of logs: its `Debug` says only that it is there.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret<T>(pub T);

impl<T> std::fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// What the instance renders before it reports ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precompute {
    /// The whole catalog (as much as the cache budget holds; see `cache::warm`).
    All,
    /// Nothing: every body is filled on its first request.
    None,
}

impl Default for ServeSettings {
    fn default() -> Self {
        ServeSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 3000)),
            pool_size: 8,
            db_timeout: Duration::from_secs(1),
            cache_bytes: 512 << 20,
            cors_origin: "*".into(),
            max_page_rows: 1_000,
            auth_tokens: None,
            cart_keys: crate::cart_key::CartKeys::default(),
            body_limit: 64 << 10,
            feed_staleness: Duration::from_secs(5),
            feed: FeedSettings::default(),
            feed_database: None,
            sweep_period: Some(Duration::from_secs(15 * 60)),
            sweep_max_rate: 200,
            precompute: Precompute::All,
            scan_database: None,
            replicas: Default::default(),
            compaction: crate::render::Compaction::All,
            dictionary_sample_bytes: crate::cache::DEFAULT_DICTIONARY_SAMPLE_BYTES,
            warmup_progress_period: WARMUP_PROGRESS_PERIOD,
            limits: Limits::default(),
            slow_request: Duration::from_secs(1),
            access_log_sample: 0,
            fast_lane: true,
            drain_delay: Duration::from_secs(15),
            drain_timeout: Duration::from_secs(10),
            snapshot: None,
            shard: None,
        }
    }
}
