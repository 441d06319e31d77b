//! Request counters and a latency histogram in Prometheus' text format, kept in atomics
//! striped across threads ([`Counters`]), so that recording a request takes no lock and moves
//! no cache line between cores.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::route::ROUTE_LABELS;
use crate::cache::CacheStats;
use crate::stripes::Counters;

/// Status codes counted one by one; anything else counts as "other".
const STATUSES: [u16; 13] = [
    200, 201, 204, 400, 401, 404, 405, 408, 413, 422, 500, 501, 503,
];
/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
];

/// Where each count is among [`Metrics`]' counters: requests by route and status, then the
/// latency buckets (the last one past every bound), then the latencies' sum in microseconds.
const REQUESTS: usize = 0;
const LATENCY: usize = REQUESTS + ROUTE_LABELS.len() * (STATUSES.len() + 1);
const LATENCY_SUM_US: usize = LATENCY + BUCKETS.len() + 1;
/// Requests the fast lane answered, and connections it handed to hyper ([`super::fast`]).
const FAST_LANE_ANSWERED: usize = LATENCY_SUM_US + 1;
const FAST_LANE_HANDOFFS: usize = FAST_LANE_ANSWERED + 1;
/// POSTs answered from an earlier attempt's claim of their `Idempotency-Key`.
const POSTS_REPEATED: usize = FAST_LANE_HANDOFFS + 1;
const COUNTS: usize = POSTS_REPEATED + 1;

pub struct Metrics {
    counts: Counters,
    /// Runs of products read for `GET /products` pages sent in runs; shared with the task that
    /// reads a page's later runs.
    products_runs: std::sync::Arc<AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            counts: Counters::new(COUNTS),
            products_runs: Default::default(),
        }
    }
}

/// Everything else /metrics reports, gathered when it is scraped.
pub struct Gauges {
    pub cache: CacheStats,
    pub pool_size: usize,
    pub pool_open: usize,
    /// Client connections open, and those closed or refused at the cap.
    pub connections_open: usize,
    pub connections_evicted: u64,
    pub connections_refused: u64,
    pub feed: Option<std::sync::Arc<crate::pg::feed::FeedStatus>>,
    pub warmup: std::sync::Arc<crate::cache::warm::WarmupStatus>,
    pub snapshots: std::sync::Arc<crate::cache::snapshot::SnapshotStatus>,
    pub replicas: Vec<crate::pg::database::ReplicaStats>,
    /// Reads sent to the primary though replicas are configured.
    pub primary_reads: u64,
}

impl Metrics {
    pub fn record(&self, route: usize, status: u16, elapsed: Duration) {
        let s = STATUSES
            .iter()
            .position(|&c| c == status)
            .unwrap_or(STATUSES.len());
        if route < ROUTE_LABELS.len() {
            self.counts
                .add(REQUESTS + route * (STATUSES.len() + 1) + s, 1);
        }
        let secs = elapsed.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(BUCKETS.len());
        self.counts.add(LATENCY + bucket, 1);
        self.counts.add(LATENCY_SUM_US, elapsed.as_micros() as u64);
    }

    /// The count of runs read for `GET /products` pages sent in runs, for the task that reads
    /// a page's runs to add to.
    pub fn products_runs(&self) -> std::sync::Arc<AtomicU64> {
        std::sync::Arc::clone(&self.products_runs)
    }

    /// A request the fast lane answered (also counted by [`Self::record`]).
    pub fn fast_lane_answered(&self) {
        self.counts.add(FAST_LANE_ANSWERED, 1);
    }

    /// A connection the fast lane handed to hyper.
    pub fn fast_lane_handed_off(&self) {
        self.counts.add(FAST_LANE_HANDOFFS, 1);
    }

    /// A POST whose key an earlier attempt of the same request claimed: answered 201 and not
    /// made again.
    pub fn post_repeated(&self) {
        self.counts.add(POSTS_REPEATED, 1);
    }

    /// Requests the fast lane answered, and connections it handed to hyper, so far.
    pub fn fast_lane_counts(&self) -> (u64, u64) {
        (
            self.counts.sum(FAST_LANE_ANSWERED),
            self.counts.sum(FAST_LANE_HANDOFFS),
        )
    }

    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::with_capacity(4096);
        out.push_str("# HELP atelier_requests_total Requests answered, by route and status.\n");
        out.push_str("# TYPE atelier_requests_total counter\n");
        for (r, label) in ROUTE_LABELS.iter().enumerate() {
            for s in 0..=STATUSES.len() {
                let n = self.counts.sum(REQUESTS + r * (STATUSES.len() + 1) + s);
                if n > 0 {
                    let status = STATUSES
                        .get(s)
                        .map(u16::to_string)
                        .unwrap_or_else(|| "other".into());
                    let _ = writeln!(
                        out,
                        "atelier_requests_total{{route=\"{label}\",status=\"{status}\"}} {n}"
                    );
                }
            }
        }
        out.push_str("# HELP atelier_request_duration_seconds Time from request to response.\n");
        out.push_str("# TYPE atelier_request_duration_seconds histogram\n");
        let mut cumulative = 0;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += self.counts.sum(LATENCY + i);
            let _ = writeln!(
                out,
                "atelier_request_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += self.counts.sum(LATENCY + BUCKETS.len());
        let _ = writeln!(
            out,
            "atelier_request_duration_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
        );
        let sum = self.counts.sum(LATENCY_SUM_US) as f64 / 1e6;
        let _ = writeln!(out, "atelier_request_duration_seconds_sum {sum}");
        let _ = writeln!(out, "atelier_request_duration_seconds_count {cumulative}");
        write_metric(
            &mut out,
            "atelier_fast_lane_requests_total",
            "counter",
            "Requests answered by the fast lane (whole GETs of bodies held), of all requests.",
            self.counts.sum(FAST_LANE_ANSWERED),
        );
        write_metric(
            &mut out,
            "atelier_fast_lane_handoffs_total",
            "counter",
            "Connections the fast lane handed to hyper, at the first request it does not answer.",
            self.counts.sum(FAST_LANE_HANDOFFS),
        );
        write_metric(
            &mut out,
            "atelier_posts_repeated_total",
            "counter",
            "POSTs whose Idempotency-Key an earlier attempt of the same request claimed: \
             answered 201, nothing written.",
            self.counts.sum(POSTS_REPEATED),
        );
        out.push_str(
            "# HELP atelier_products_runs_total Runs of products read for GET /products pages \
             larger than --max-page-rows.\n",
        );
        out.push_str("# TYPE atelier_products_runs_total counter\n");
        let runs = self.products_runs.load(Ordering::Relaxed);
        let _ = writeln!(out, "atelier_products_runs_total {runs}");
        let c = &gauges.cache;
        for (name, kind, help, value) in [
            (
                "atelier_cache_hits_total",
                "counter",
                "Cache lookups answered from memory.",
                c.hits,
            ),
            (
                "atelier_cache_misses_total",
                "counter",
                "Cache lookups filled from the database.",
                c.misses,
            ),
            (
                "atelier_cache_evictions_total",
                "counter",
                "Entries evicted to stay within the byte budget.",
                c.evictions,
            ),
            (
                "atelier_cache_entries",
                "gauge",
                "Entries in the cache.",
                c.entries,
            ),
            (
                "atelier_cache_bytes",
                "gauge",
                "Bytes the cache holds: bodies plus a per-entry overhead.",
                c.bytes,
            ),
            (
                "atelier_cache_catalog_entries",
                "gauge",
                "Entries of the precomputed catalog (part of atelier_cache_entries).",
                c.catalog_entries,
            ),
            (
                "atelier_cache_catalog_bytes",
                "gauge",
                "Bytes of the precomputed catalog (part of atelier_cache_bytes).",
                c.catalog_bytes,
            ),
            (
                "atelier_cache_capacity_bytes",
                "gauge",
                "The cache's byte budget.",
                c.capacity_bytes,
            ),
            (
                "atelier_db_pool_size",
                "gauge",
                "Connections the pool may open.",
                gauges.pool_size as u64,
            ),
            (
                "atelier_db_pool_open",
                "gauge",
                "Connections the pool has open.",
                gauges.pool_open as u64,
            ),
            (
                "atelier_http_connections_open",
                "gauge",
                "Client connections open.",
                gauges.connections_open as u64,
            ),
            (
                "atelier_http_connections_evicted_total",
                "counter",
                "Idle connections closed to make room for a new one at --max-connections.",
                gauges.connections_evicted,
            ),
            (
                "atelier_http_connections_refused_total",
                "counter",
                "Connections answered 503 at --max-connections because every open one was busy.",
                gauges.connections_refused,
            ),
            (
                "atelier_cache_refreshed_total",
                "counter",
                "Stale entries re-rendered and swapped in after a change.",
                c.refreshed,
            ),
            (
                "atelier_cache_revoted_total",
                "counter",
                "Renders of a product's review lists after helpful votes alone that reused the items held, reading only what the lists sort by (including renders a later change superseded).",
                c.revoted,
            ),
            (
                "atelier_cache_revoted_by_review_total",
                "counter",
                "Of those revotes, the ones that read the sort keys of the reviews voted on alone, not every review's.",
                c.revoted_by_review,
            ),
            (
                "atelier_cache_reanswered_total",
                "counter",
                "Renders of a product's questions list after answers alone that reused the items held, reading only those questions' answers and what the list is ordered by (including renders a later change superseded).",
                c.reanswered,
            ),
            (
                "atelier_cache_reanswered_in_place_total",
                "counter",
                "Of those reanswers, the ones that read one question's sort key alone, not every question's, and replaced its item where it is (or left the list as it is, where it does not show the question).",
                c.reanswered_in_place,
            ),
            (
                "atelier_cache_own_changes_skipped_total",
                "counter",
                "Changes the feed brought back from this instance's own writes, which it had refreshed already.",
                c.own_changes_skipped,
            ),
            (
                "atelier_cache_refreshes_pending",
                "gauge",
                "Refreshes of stale entries under way.",
                c.refreshes_pending,
            ),
            (
                "atelier_cache_swept_total",
                "counter",
                "Entries the anti-entropy sweep re-rendered.",
                c.swept,
            ),
            (
                "atelier_cache_drift_total",
                "counter",
                "Entries the sweep found stale with no change to explain it (non-zero: a bug, or a write that bypassed the triggers).",
                c.drift,
            ),
        ] {
            write_metric(&mut out, name, kind, help, value);
        }
        {
            use std::sync::atomic::Ordering::Relaxed;
            let w = &gauges.warmup;
            for (name, kind, help, value) in [
                (
                    "atelier_warmup_done",
                    "gauge",
                    "1 once the first warm-up of the catalog has finished (or filled its budget).",
                    u64::from(w.first_done.load(Relaxed)),
                ),
                (
                    "atelier_warmup_running",
                    "gauge",
                    "1 while a warm-up scans the catalog.",
                    u64::from(w.running.load(Relaxed)),
                ),
                (
                    "atelier_warmup_products",
                    "gauge",
                    "Products the current or last warm-up has rendered.",
                    w.products_done.load(Relaxed),
                ),
                (
                    "atelier_warmup_products_total",
                    "gauge",
                    "Products in the catalog the warm-up scans.",
                    w.products_total.load(Relaxed),
                ),
                (
                    "atelier_warmup_entries",
                    "gauge",
                    "Entries the current or last warm-up put in the cache.",
                    w.entries.load(Relaxed),
                ),
                (
                    "atelier_warmup_last_seconds",
                    "gauge",
                    "How long the last finished warm-up took, in whole seconds.",
                    w.last_ms.load(Relaxed) / 1000,
                ),
                (
                    "atelier_warmup_completed_total",
                    "counter",
                    "Warm-ups finished.",
                    w.completed.load(Relaxed),
                ),
            ] {
                write_metric(&mut out, name, kind, help, value);
            }
            out.push_str("# HELP atelier_dictionary_bytes Size of the dictionary the catalog packs lists, or whole bodies (--compress dense), against (0: none yet).\n# TYPE atelier_dictionary_bytes gauge\n");
            for kind in crate::render::compress::DictionaryKind::ALL {
                let bytes = crate::render::compress::dictionary(kind).map_or(0, <[u8]>::len);
                let _ = writeln!(
                    out,
                    "atelier_dictionary_bytes{{kind=\"{}\"}} {bytes}",
                    kind.name()
                );
            }
            out.push_str("# HELP atelier_shared_code_prefix_bytes Size of the prefix the catalog sends a kind's gzip bodies behind, once it has trained that kind's shared code (0: none yet).\n# TYPE atelier_shared_code_prefix_bytes gauge\n");
            for kind in crate::render::shared_codes::CodesKind::ALL {
                let prefix = crate::render::shared_codes::prefix(Some(kind));
                let _ = writeln!(
                    out,
                    "atelier_shared_code_prefix_bytes{{kind=\"{}\"}} {}",
                    kind.name(),
                    prefix.map_or(0, <[u8]>::len)
                );
            }
            out.push_str("# HELP atelier_warmup_bytes Bytes of bodies the last warm-up put in the cache, by kind.\n# TYPE atelier_warmup_bytes gauge\n");
            for (kind, bytes) in crate::cache::warm::KINDS.iter().zip(&w.bytes) {
                let _ = writeln!(
                    out,
                    "atelier_warmup_bytes{{kind=\"{kind}\"}} {}",
                    bytes.load(Relaxed)
                );
            }
        }
        {
            use std::sync::atomic::Ordering::Relaxed;
            let s = &gauges.snapshots;
            for (name, kind, help, value) in [
                (
                    "atelier_snapshot_restored_total",
                    "counter",
                    "Catalogs restored from a snapshot at start (a warm restart).",
                    s.restored.load(Relaxed) as f64,
                ),
                (
                    "atelier_snapshot_refused_total",
                    "counter",
                    "Snapshots found at start and not used (damaged, or not describing this build and database): warmed from scratch instead.",
                    s.refused.load(Relaxed) as f64,
                ),
                (
                    "atelier_snapshot_last_restore_seconds",
                    "gauge",
                    "How long the last restore took to load the catalog.",
                    s.last_restore_ms.load(Relaxed) as f64 / 1000.0,
                ),
                (
                    "atelier_snapshot_written_total",
                    "counter",
                    "Catalog snapshots written.",
                    s.written.load(Relaxed) as f64,
                ),
                (
                    "atelier_snapshot_write_failures_total",
                    "counter",
                    "Catalog snapshots not written (not warm, feed not following, or an error).",
                    s.write_failures.load(Relaxed) as f64,
                ),
                (
                    "atelier_snapshot_last_write_bytes",
                    "gauge",
                    "Size of the last snapshot written.",
                    s.last_write_bytes.load(Relaxed) as f64,
                ),
                (
                    "atelier_snapshot_last_write_seconds",
                    "gauge",
                    "How long the last snapshot took to write.",
                    s.last_write_ms.load(Relaxed) as f64 / 1000.0,
                ),
            ] {
                write_metric(&mut out, name, kind, help, value);
            }
        }
        if let Some(feed) = &gauges.feed {
            use std::sync::atomic::Ordering::Relaxed;
            let lag_seconds = feed.lag_ms.load(Relaxed) as f64 / 1000.0;
            for (name, kind, help, value) in [
                (
                    "atelier_feed_connected",
                    "gauge",
                    "1 while the change feed is connected and following the log.",
                    u64::from(feed.is_connected()).to_string(),
                ),
                (
                    "atelier_feed_lag_seconds",
                    "gauge",
                    "From the start of the last applied change's transaction to its application.",
                    lag_seconds.to_string(),
                ),
                (
                    "atelier_feed_last_seq",
                    "gauge",
                    "Highest change_log sequence number applied.",
                    feed.last_seq.load(Relaxed).to_string(),
                ),
                (
                    "atelier_feed_pending_transactions",
                    "gauge",
                    "Open transactions whose logged changes the feed is still waiting for (its open holes).",
                    feed.pending_transactions.load(Relaxed).to_string(),
                ),
                (
                    "atelier_feed_reconnects_total",
                    "counter",
                    "Times the change feed lost its connection.",
                    feed.reconnects.load(Relaxed).to_string(),
                ),
                (
                    "atelier_feed_resets_total",
                    "counter",
                    "Times the cache was emptied by the feed (start, bulk load, TRUNCATE, pruned past, unknown change).",
                    feed.resets.load(Relaxed).to_string(),
                ),
                (
                    "atelier_feed_restarts_total",
                    "counter",
                    "Times the change feed task panicked and was restarted.",
                    feed.restarts.load(Relaxed).to_string(),
                ),
                (
                    "atelier_feed_unknown_changes_total",
                    "counter",
                    "Log rows of a kind this build does not know.",
                    feed.unknown_changes.load(Relaxed).to_string(),
                ),
            ] {
                write_metric(&mut out, name, kind, help, value);
            }
        }
        render_replicas(&mut out, gauges);
        out
    }
}

/// The replicas' lines: none without replicas.
fn render_replicas(out: &mut String, gauges: &Gauges) {
    if gauges.replicas.is_empty() {
        return;
    }
    write_metric(
        out,
        "atelier_replica_primary_reads_total",
        "counter",
        "Reads sent to the primary because no replica had every change seen (or answered).",
        gauges.primary_reads,
    );
    type Field = fn(&crate::pg::database::ReplicaStats) -> u64;
    let families: [(&str, &str, &str, Field); 5] = [
        (
            "atelier_replica_up",
            "gauge",
            "Whether the replica answered its last poll.",
            |r| u64::from(r.up),
        ),
        (
            "atelier_replica_behind_bytes",
            "gauge",
            "Bytes of WAL the replica has yet to replay to have the last change seen.",
            |r| r.behind_bytes,
        ),
        (
            "atelier_replica_reads_total",
            "counter",
            "Reads the replica served.",
            |r| r.reads,
        ),
        (
            "atelier_replica_warmups_total",
            "counter",
            "Warm-ups that scanned the replica.",
            |r| r.warmups,
        ),
        (
            "atelier_replica_failures_total",
            "counter",
            "Reads and warm-up scans that failed on the replica and were done on the primary.",
            |r| r.failures,
        ),
    ];
    for (name, kind, help, value) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (i, r) in gauges.replicas.iter().enumerate() {
            let _ = writeln!(out, "{name}{{replica=\"{i}\"}} {}", value(r));
        }
    }
    let name = "atelier_replica_info";
    let _ = writeln!(
        out,
        "# HELP {name} Where each replica is (host, port, database).\n# TYPE {name} gauge"
    );
    for (i, r) in gauges.replicas.iter().enumerate() {
        let target = label_value(&r.name);
        let _ = writeln!(out, "{name}{{replica=\"{i}\",target=\"{target}\"}} 1");
    }
    let name = "atelier_replica_skipped_total";
    let _ = writeln!(
        out,
        "# HELP {name} Reads sent elsewhere because the replica was down, or lacked a change \
         seen longer ago than --replica-max-lag-ms.\n# TYPE {name} counter"
    );
    for (i, r) in gauges.replicas.iter().enumerate() {
        let _ = writeln!(
            out,
            "{name}{{replica=\"{i}\",reason=\"down\"}} {}",
            r.skipped_down
        );
        let _ = writeln!(
            out,
            "{name}{{replica=\"{i}\",reason=\"lagging\"}} {}",
            r.skipped_lagging
        );
    }
}

/// `text` as a Prometheus label value: backslashes, quotes and line breaks escaped.
fn label_value(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn write_metric(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    value: impl std::fmt::Display,
) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}
