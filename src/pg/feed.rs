//! The change feed: one task per server instance that follows `change_log` (see
//! sql/0002_change_feed.sql) over a dedicated connection — never one from the pool — and hands
//! each change to a [`ChangeSink`] (the response cache).
//!
//! The task LISTENs on `atelier_changes`, and on each notification (bursts are coalesced) reads
//! the log from the last sequence number it applied. Sequence numbers are handed out when a
//! writer inserts its log row but become visible when it commits, so a lower number can
//! appear after a higher one: the task remembers which numbers above its floor it has
//! applied and only moves the floor over a gap once the gap has stayed empty for
//! `gap_timeout` (a rolled-back write leaves a gap that never fills). Applying a change twice
//! is harmless (it drops a cache entry), missing one is not.
//!
//! On connection loss it reconnects with capped exponential backoff and jitter and replays
//! from its floor. If the log was pruned past the floor while it was away, it cannot know what
//! it missed and resets the sink (empties the cache). The task also prunes the log: rows older
//! than `retention` are deleted, and the highest pruned sequence number is recorded.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio_postgres::{AsyncMessage, Client, Config, NoTls};

use super::DbError;

/// What changed, as logged by the triggers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A product row: its detail, existence and the products list.
    Product(i64),
    /// A product's features.
    Features(i64),
    /// A product's styles, photos or skus.
    Styles(i64),
    /// A product's related rows.
    Related(i64),
    /// A product's reviews, their photos and ratings, or its characteristics.
    Reviews(i64),
    /// A product's questions (or the answers nested in them).
    Questions(i64),
    /// A question's answers.
    Answers(i64),
    /// A caller's cart.
    Cart(String),
    /// Anything at all (a bulk load).
    All,
}

impl Change {
    fn from_row(kind: &str, id: Option<i64>, session: Option<String>) -> Option<Change> {
        Some(match (kind, id, session) {
            ("product", Some(id), _) => Change::Product(id),
            ("features", Some(id), _) => Change::Features(id),
            ("styles", Some(id), _) => Change::Styles(id),
            ("related", Some(id), _) => Change::Related(id),
            ("reviews", Some(id), _) => Change::Reviews(id),
            ("questions", Some(id), _) => Change::Questions(id),
            ("answers", Some(id), _) => Change::Answers(id),
            ("cart", _, Some(session)) => Change::Cart(session),
            ("all", _, _) => Change::All,
            _ => return None,
        })
    }
}

/// Where the feed delivers changes.
pub trait ChangeSink: Send + Sync + 'static {
    fn apply(&self, change: &Change);
    /// Forget everything: the feed cannot tell what changed.
    fn reset(&self);
}

/// Tuning of the feed.
#[derive(Debug, Clone)]
pub struct FeedSettings {
    /// How long change_log rows are kept before pruning.
    pub retention: Duration,
    /// How long a gap in sequence numbers may stay open before it counts as a rollback.
    pub gap_timeout: Duration,
    /// Re-read the log this often even without notifications (closes gaps, prunes).
    pub poll_interval: Duration,
    /// Longest wait between reconnect attempts.
    pub max_backoff: Duration,
}

impl Default for FeedSettings {
    fn default() -> Self {
        FeedSettings {
            retention: Duration::from_secs(24 * 3600),
            gap_timeout: Duration::from_secs(30),
            poll_interval: Duration::from_secs(1),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// The feed's state, for `/readyz` and `/metrics`.
#[derive(Debug)]
pub struct FeedStatus {
    connected: AtomicBool,
    ever_connected: AtomicBool,
    down_since: Mutex<Option<Instant>>,
    /// Highest sequence number applied.
    pub last_seq: AtomicI64,
    pub reconnects: AtomicU64,
    pub resets: AtomicU64,
    /// Milliseconds from the start of the last applied change's transaction to its application.
    pub lag_ms: AtomicU64,
}

impl FeedStatus {
    fn new() -> FeedStatus {
        FeedStatus {
            connected: AtomicBool::new(false),
            ever_connected: AtomicBool::new(false),
            down_since: Mutex::new(Some(Instant::now())),
            last_seq: AtomicI64::new(0),
            reconnects: AtomicU64::new(0),
            resets: AtomicU64::new(0),
            lag_ms: AtomicU64::new(0),
        }
    }

    /// Whether the feed is connected and caught up.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// Whether the feed has not yet connected once.
    pub fn never_connected(&self) -> bool {
        !self.ever_connected.load(Ordering::Acquire)
    }

    /// How long the feed has been down (zero while it is up).
    pub fn down_for(&self) -> Duration {
        self.down_since
            .lock()
            .ok()
            .and_then(|d| d.map(|since| since.elapsed()))
            .unwrap_or_default()
    }

    fn set_up(&self) {
        self.connected.store(true, Ordering::Release);
        self.ever_connected.store(true, Ordering::Release);
        if let Ok(mut d) = self.down_since.lock() {
            *d = None;
        }
    }

    fn set_down(&self) {
        if self.connected.swap(false, Ordering::AcqRel) {
            if let Ok(mut d) = self.down_since.lock() {
                d.get_or_insert_with(Instant::now);
            }
        }
    }
}

/// Starts the feed task; it runs until the returned handle is aborted.
pub fn spawn(
    config: Config,
    sink: Arc<dyn ChangeSink>,
    settings: FeedSettings,
) -> (Arc<FeedStatus>, tokio::task::JoinHandle<()>) {
    let status = Arc::new(FeedStatus::new());
    let task_status = Arc::clone(&status);
    let handle = tokio::spawn(async move {
        let mut follower = Follower {
            floor: None,
            applied: BTreeSet::new(),
            gaps: BTreeMap::new(),
            high: 0,
            last_prune: None,
        };
        let mut backoff = Duration::from_millis(50);
        let mut jitter = crate::dataset::rng::Rng::new(u64::from(std::process::id()));
        loop {
            let started = Instant::now();
            let err = follower
                .session(&config, sink.as_ref(), &task_status, &settings)
                .await;
            task_status.set_down();
            task_status.reconnects.fetch_add(1, Ordering::Relaxed);
            if started.elapsed() > Duration::from_secs(10) {
                backoff = Duration::from_millis(50);
            }
            let wait = backoff.mul_f64(0.5 + jitter.unit());
            eprintln!(
                "change feed: {err}; reconnecting in {} ms",
                wait.as_millis()
            );
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(settings.max_backoff);
        }
    });
    (status, handle)
}

struct Follower {
    /// Every sequence number up to the floor is applied (or was a rollback). None until the
    /// first connection, which starts from the log's current end: the cache starts empty.
    floor: Option<i64>,
    /// Applied sequence numbers above the floor.
    applied: BTreeSet<i64>,
    /// Missing sequence numbers above the floor, with when they were first seen missing.
    gaps: BTreeMap<i64, Instant>,
    /// The highest sequence number read so far.
    high: i64,
    last_prune: Option<Instant>,
}

/// Rows read from the log per query.
const BATCH: i64 = 10_000;

impl Follower {
    /// One connection's life: returns why it ended.
    async fn session(
        &mut self,
        config: &Config,
        sink: &dyn ChangeSink,
        status: &FeedStatus,
        settings: &FeedSettings,
    ) -> DbError {
        match self.follow(config, sink, status, settings).await {
            Ok(never) => match never {},
            Err(e) => e,
        }
    }

    async fn follow(
        &mut self,
        config: &Config,
        sink: &dyn ChangeSink,
        status: &FeedStatus,
        settings: &FeedSettings,
    ) -> Result<std::convert::Infallible, DbError> {
        let mut config = config.clone();
        config
            .connect_timeout(Duration::from_secs(2))
            .application_name("atelier change feed");
        let (client, mut connection) = config
            .connect(NoTls)
            .await
            .map_err(|e| DbError::Unavailable(e.to_string()))?;
        let (notify_tx, mut notified) = tokio::sync::mpsc::unbounded_channel::<()>();
        let driver = tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(_)) => {
                        if notify_tx.send(()).is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        });
        let _driver = AbortOnDrop(driver);
        client
            .batch_execute("LISTEN atelier_changes")
            .await
            .map_err(DbError::from_query)?;

        // Listening before reading: nothing committed from here on can be missed.
        match self.floor {
            None => {
                let end: i64 = client
                    .query_one("SELECT coalesce(max(seq), 0) FROM change_log", &[])
                    .await
                    .map_err(DbError::from_query)?
                    .get(0);
                self.floor = Some(end);
            }
            Some(floor) => {
                let pruned: i64 = client
                    .query_one("SELECT through FROM change_log_pruned", &[])
                    .await
                    .map_err(DbError::from_query)?
                    .get(0);
                if pruned > floor {
                    sink.reset();
                    status.resets.fetch_add(1, Ordering::Relaxed);
                    self.floor = Some(pruned);
                    self.applied.retain(|&s| s > pruned);
                    self.gaps.retain(|&s, _| s > pruned);
                }
            }
        }
        self.catch_up(&client, sink, status, settings).await?;
        status.set_up();

        let mut poll = tokio::time::interval(settings.poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                message = notified.recv() => {
                    if message.is_none() {
                        return Err(DbError::Unavailable("the change feed connection closed".into()));
                    }
                    while notified.try_recv().is_ok() {} // coalesce a burst into one read
                }
                _ = poll.tick() => self.prune_if_due(&client, settings).await?,
            }
            self.catch_up(&client, sink, status, settings).await?;
        }
    }

    /// Reads and applies every logged change above the floor not yet applied.
    async fn catch_up(
        &mut self,
        client: &Client,
        sink: &dyn ChangeSink,
        status: &FeedStatus,
        settings: &FeedSettings,
    ) -> Result<(), DbError> {
        let mut floor = self.floor.unwrap_or(0);
        loop {
            // Only what is new, plus the holes still open: applied rows are not read again.
            let high = self.high.max(floor);
            let holes: Vec<i64> = self.gaps.keys().copied().take(BATCH as usize).collect();
            let rows = client
                .query(
                    "SELECT seq, kind, id, session,
                            (extract(epoch FROM clock_timestamp() - at) * 1000)::int8
                       FROM change_log WHERE seq > $1 OR seq = ANY ($2::int8[])
                      ORDER BY seq LIMIT $3",
                    &[&high, &holes, &BATCH],
                )
                .await
                .map_err(DbError::from_query)?;
            let full = rows.len() as i64 == BATCH;
            for row in &rows {
                let seq: i64 = row.get(0);
                self.high = self.high.max(seq);
                self.gaps.remove(&seq);
                if seq <= floor || !self.applied.insert(seq) {
                    continue;
                }
                if let Some(change) = Change::from_row(row.get(1), row.get(2), row.get(3)) {
                    if change == Change::All {
                        sink.reset();
                        status.resets.fetch_add(1, Ordering::Relaxed);
                    } else {
                        sink.apply(&change);
                    }
                }
                status
                    .lag_ms
                    .store(row.get::<_, i64>(4).max(0) as u64, Ordering::Relaxed);
                status.last_seq.fetch_max(seq, Ordering::Relaxed);
            }
            // Note the holes below the highest number seen: writes not yet committed, or
            // rolled back.
            let now = Instant::now();
            let mut expected = floor + 1;
            if self.high > floor {
                for &seq in self.applied.range(floor + 1..=self.high) {
                    for hole in expected..seq {
                        self.gaps.entry(hole).or_insert(now);
                    }
                    expected = seq + 1;
                }
            }
            // Advance the floor over applied numbers and expired holes.
            loop {
                let next = floor + 1;
                if self.applied.remove(&next) {
                    floor = next;
                } else if self
                    .gaps
                    .get(&next)
                    .is_some_and(|t| t.elapsed() >= settings.gap_timeout)
                {
                    self.gaps.remove(&next);
                    floor = next;
                } else {
                    break;
                }
            }
            self.floor = Some(floor);
            if !full {
                return Ok(());
            }
        }
    }

    async fn prune_if_due(
        &mut self,
        client: &Client,
        settings: &FeedSettings,
    ) -> Result<(), DbError> {
        let every =
            (settings.retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(600));
        if self.last_prune.is_some_and(|t| t.elapsed() < every) {
            return Ok(());
        }
        self.last_prune = Some(Instant::now());
        let retention_secs = settings.retention.as_secs_f64();
        client
            .execute(
                "WITH gone AS (DELETE FROM change_log WHERE at < now() - make_interval(secs => $1) RETURNING seq)
                 UPDATE change_log_pruned SET through = GREATEST(through, (SELECT max(seq) FROM gone))
                  WHERE EXISTS (SELECT 1 FROM gone)",
                &[&retention_secs],
            )
            .await
            .map_err(DbError::from_query)?;
        Ok(())
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
