//! Typed configuration of the HTTP server, built from flags and environment by the binary.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use crate::pg::feed::FeedSettings;

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
    /// Most rows one `GET /products` page returns, whatever `count` asks for.
    pub max_page_rows: u64,
    /// When set, only these `Authorization` values are accepted (others get 401).
    pub auth_tokens: Option<HashSet<String>>,
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
    /// Where the warm-up scan reads, when not where the pool does.
    pub scan_database: Option<tokio_postgres::Config>,
    /// How far the precomputed catalog compacts its bodies.
    pub compaction: crate::render::Compaction,
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
            max_page_rows: 100_000,
            auth_tokens: None,
            body_limit: 64 << 10,
            feed_staleness: Duration::from_secs(5),
            feed: FeedSettings::default(),
            feed_database: None,
            sweep_period: Some(Duration::from_secs(15 * 60)),
            sweep_max_rate: 200,
            precompute: Precompute::All,
            scan_database: None,
            compaction: crate::render::Compaction::All,
        }
    }
}
