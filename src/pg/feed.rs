//! The change feed: one task per server instance that follows `change_log` (see
//! sql/0002_change_feed.sql and sql/0003_change_log_xid.sql) over a dedicated connection —
//! never one from the pool — and hands each change to a [`ChangeSink`] (the response cache).
//!
//! # Why no change is missed
//!
//! Sequence numbers are drawn when a writer logs a change but become visible when it commits,
//! so a lower number can appear after a higher one, however long the writer's transaction
//! stays open. The feed therefore never guesses that a missing number is a rollback. Every
//! read of the log happens in one statement together with `pg_current_snapshot()`, and each log
//! row carries its writer's top-level transaction id. A row the read did not see belongs to a
//! transaction that snapshot shows as not committed: one in its list of running transactions,
//! or one at or past its `xmax` (which is the latest completed id plus one, so transactions
//! that took their id later, and are still running, lie there too). The feed keeps both —
//! `pending`, at most one id per open transaction of the cluster, and `pending_from` — and asks
//! again for those transactions' rows below `high` (`xid = ANY(pending) OR xid >= pending_from`)
//! until a later snapshot shows them ended: committed rows are then read, rolled-back ones
//! never existed. Memory is bounded by the number of open transactions, not by the history,
//! and nothing depends on the order in which sequence numbers are drawn.
//!
//! A backlog larger than one batch is read in several statements with a cursor on the
//! sequence number; the transactions still pending afterwards are those not committed at the
//! first of them.
//!
//! Applying a change twice is harmless (it drops a cache entry twice); missing one is not.
//!
//! # Start, reconnects, pruning
//!
//! The first read establishes `high` and then resets the sink: nothing filled before the feed
//! knew where it stood survives. On connection loss the task reconnects with capped
//! exponential backoff and jitter and resumes from its state. The task also prunes the log
//! ([`prune`]): a row goes only once it has been visible for the whole retention, and the
//! highest sequence number deleted is recorded. A feed whose last complete read is older than
//! half the retention (it was away), or that finds the log pruned past `high`, cannot know
//! what it missed and resets the sink. Every instance must use the same retention.
//!
//! Every query of the feed has a time limit, and its connection has TCP keepalives and a TCP
//! user timeout, so a silent network drop is noticed within seconds. The task is supervised:
//! a panic is counted, and the feed starts over (and resets the sink, since its state is
//! lost).

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio_postgres::types::PgLsn;
use tokio_postgres::{AsyncMessage, Client, Config, NoTls, Statement};

use super::fence::Fence;
use super::DbError;
pub use crate::domain::Change;
use crate::task::{supervised, AbortOnDrop};

/// The change a log row describes; `None` for a kind this build does not know (a newer
/// writer), which the feed must treat as "anything may have changed". A detail this build
/// does not know leaves the kind's change as it is (migration 10 added `votes` so, migration
/// 11 `answers:<question id>`, and migration 13 `votes:<review id>`).
fn change_from_row(
    kind: &str,
    id: Option<i64>,
    session: Option<String>,
    detail: Option<&str>,
) -> Option<Change> {
    Some(match (kind, id, session) {
        ("product", Some(id), _) => Change::Product(id),
        ("features", Some(id), _) => Change::Features(id),
        ("styles", Some(id), _) => Change::Styles(id),
        ("related", Some(id), _) => Change::Related(id),
        ("reviews", Some(product), _) => match (detail, named(detail, "votes:")) {
            (Some("votes"), _) => Change::ReviewVotes {
                product,
                review: None,
            },
            (_, Some(review)) => Change::ReviewVotes {
                product,
                review: Some(review),
            },
            _ => Change::Reviews(product),
        },
        ("questions", Some(product), _) => match named(detail, "answers:") {
            Some(question) => Change::QuestionAnswers { product, question },
            None => Change::Questions(product),
        },
        ("answers", Some(id), _) => Change::Answers(id),
        ("cart", _, Some(session)) => Change::Cart(session),
        ("all", _, _) => Change::All,
        _ => return None,
    })
}

/// The id a detail such as `votes:31` names after `prefix`; None for another detail, or none.
fn named(detail: Option<&str>, prefix: &str) -> Option<i64> {
    detail?.strip_prefix(prefix)?.parse().ok()
}

/// Where the feed delivers changes.
pub trait ChangeSink: Send + Sync + 'static {
    fn apply(&self, change: &Change);
    /// A change as the log has it, with the id of the transaction that made it.
    fn apply_logged(&self, change: &Change, _xid: i64) {
        self.apply(change);
    }
    /// Forget everything: the feed cannot tell what changed.
    fn reset(&self);
}

/// Where a feed stands in the log: every row numbered at most `high` has been applied, or was
/// written by a transaction in `pending` or at or past `pending_from` (not committed at the
/// read that established this). A feed resumed from it reads exactly what it had not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedPosition {
    pub high: i64,
    /// Sorted transaction ids.
    pub pending: Vec<i64>,
    pub pending_from: i64,
}

/// Where a feed begins.
pub enum FeedStart {
    /// At the log's end, emptying the sink: nothing it held can be vouched for.
    Fresh,
    /// Where the position the receiver gives says (a restored snapshot's), keeping the sink:
    /// the feed waits for it, and starts fresh if none comes.
    Resume(tokio::sync::oneshot::Receiver<Option<FeedPosition>>),
}

/// Tuning of the feed.
#[derive(Debug, Clone)]
pub struct FeedSettings {
    /// How long change_log rows are kept before pruning.
    pub retention: Duration,
    /// Re-read the log this often even without notifications (prunes, and notices a dead
    /// connection that no notification would reveal).
    pub poll_interval: Duration,
    /// Longest wait between reconnect attempts.
    pub max_backoff: Duration,
    /// Time limit for connecting and for each of the feed's queries.
    pub query_timeout: Duration,
    /// Log rows read per query; a backlog larger than this is read in several.
    pub batch_rows: i64,
}

impl Default for FeedSettings {
    fn default() -> Self {
        FeedSettings {
            retention: Duration::from_secs(24 * 3600),
            poll_interval: Duration::from_secs(1),
            max_backoff: Duration::from_secs(5),
            query_timeout: Duration::from_secs(5),
            batch_rows: 10_000,
        }
    }
}

/// The feed's state, for `/readyz`, `/metrics` and the anti-entropy sweep.
#[derive(Debug)]
pub struct FeedStatus {
    connected: AtomicBool,
    /// Whether the feed has established where it stands in the log (and reset the sink).
    established: AtomicBool,
    /// Whether the feed is reading a backlog larger than one batch.
    catching_up: AtomicBool,
    down_since: Mutex<Option<Instant>>,
    /// Highest sequence number applied.
    pub last_seq: AtomicI64,
    /// Transactions that were open at the last read and may still commit logged changes.
    pub pending_transactions: AtomicU64,
    pub reconnects: AtomicU64,
    /// Times the sink was emptied (a bulk load, a TRUNCATE, a pruned-past reconnect, a restart).
    pub resets: AtomicU64,
    /// Times the feed task panicked and was restarted.
    pub restarts: AtomicU64,
    /// Log rows of a kind this build does not know (each reset the sink).
    pub unknown_changes: AtomicU64,
    /// Milliseconds from the start of the last applied change's transaction to its application.
    pub lag_ms: AtomicU64,
    /// When the feed's task last did something (a read, a connection attempt), in ms since
    /// [`epoch`]: a watchdog tells a hung feed from a slow one by it.
    beat_ms: AtomicU64,
    /// Reads of the log begun and completed, numbered: a read numbered n sees every
    /// transaction that committed before read n began.
    reads_begun: AtomicU64,
    reads_done: AtomicU64,
    read_done: tokio::sync::Notify,
    /// The position after the last complete read: every change it covers has been applied.
    position: Mutex<Option<FeedPosition>>,
    panic_requested: AtomicBool,
    hang_requested: AtomicBool,
}

impl FeedStatus {
    pub(crate) fn new() -> FeedStatus {
        FeedStatus {
            connected: AtomicBool::new(false),
            established: AtomicBool::new(false),
            catching_up: AtomicBool::new(false),
            down_since: Mutex::new(Some(Instant::now())),
            last_seq: AtomicI64::new(0),
            pending_transactions: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            resets: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            unknown_changes: AtomicU64::new(0),
            lag_ms: AtomicU64::new(0),
            beat_ms: AtomicU64::new(since_epoch_ms()),
            reads_begun: AtomicU64::new(0),
            reads_done: AtomicU64::new(0),
            read_done: tokio::sync::Notify::new(),
            position: Mutex::new(None),
            panic_requested: AtomicBool::new(false),
            hang_requested: AtomicBool::new(false),
        }
    }

    /// Whether the feed is connected and following the log.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// Whether the feed has found its place in the log since it (re)started.
    pub fn is_established(&self) -> bool {
        self.established.load(Ordering::Acquire)
    }

    /// Whether the feed is reading a backlog.
    pub fn is_catching_up(&self) -> bool {
        self.catching_up.load(Ordering::Acquire)
    }

    /// How long the feed has been down (zero while it is up).
    pub fn down_for(&self) -> Duration {
        self.down_since
            .lock()
            .ok()
            .and_then(|d| d.map(|since| since.elapsed()))
            .unwrap_or_default()
    }

    /// Why this instance cannot vouch for its cache now, if it cannot: not yet established,
    /// down longer than `staleness`, or reading a backlog.
    pub fn unready_reason(&self, staleness: Duration) -> Option<&'static str> {
        if !self.is_established() {
            Some("change feed starting")
        } else if !self.is_connected() && self.down_for() > staleness {
            Some("change feed disconnected")
        } else if self.is_catching_up() {
            Some("change feed catching up")
        } else {
            None
        }
    }

    /// Waits until a read of the log that began after this call has completed: every change
    /// committed before the call has then been applied. Gives up after `limit` (false).
    pub async fn wait_for_fresh_read(&self, limit: Duration) -> bool {
        let target = self.reads_begun.load(Ordering::Acquire) + 1;
        tokio::time::timeout(limit, async {
            loop {
                let notified = self.read_done.notified();
                if self.reads_done.load(Ordering::Acquire) >= target {
                    return;
                }
                notified.await;
            }
        })
        .await
        .is_ok()
    }

    /// The feed's position after its last complete read (None before the first): every change
    /// it covers had been applied to the sink when it was recorded. A snapshot of the sink
    /// taken afterwards resumes from it.
    pub fn position(&self) -> Option<FeedPosition> {
        self.position.lock().ok().and_then(|p| p.clone())
    }

    /// Test hook: makes the feed task panic at its next step, to exercise its supervision.
    #[doc(hidden)]
    pub fn inject_panic(&self) {
        self.panic_requested.store(true, Ordering::Release);
    }

    /// Test hook: makes the feed task hang for good at its next step (no panic, no beat), to
    /// exercise the watchdog.
    #[doc(hidden)]
    pub fn inject_hang(&self) {
        self.hang_requested.store(true, Ordering::Release);
    }

    fn set_up(&self) {
        self.connected.store(true, Ordering::Release);
        if let Ok(mut d) = self.down_since.lock() {
            *d = None;
        }
    }

    fn set_down(&self) {
        self.connected.store(false, Ordering::Release);
        self.catching_up.store(false, Ordering::Release);
        if let Ok(mut d) = self.down_since.lock() {
            d.get_or_insert_with(Instant::now);
        }
    }

    fn begin_read(&self) -> u64 {
        self.beat();
        self.reads_begun.fetch_add(1, Ordering::AcqRel) + 1
    }

    fn beat(&self) {
        self.beat_ms.store(since_epoch_ms(), Ordering::Release);
    }

    /// How long since the feed's task last did something: it reads at least every poll
    /// interval while connected (every batch of a catch-up counts), and tries to connect at
    /// least every `max_backoff` (plus a connection's time limit) while not.
    pub fn since_last_beat(&self) -> Duration {
        let beat = self.beat_ms.load(Ordering::Acquire);
        Duration::from_millis(since_epoch_ms().saturating_sub(beat))
    }

    /// Whether the feed's task has done something within `within`: not hung.
    pub fn is_alive(&self, within: Duration) -> bool {
        self.alive_at(since_epoch_ms(), within)
    }

    /// [`Self::is_alive`], `now_ms` after the epoch.
    fn alive_at(&self, now_ms: u64, within: Duration) -> bool {
        let beat = self.beat_ms.load(Ordering::Acquire);
        u128::from(now_ms.saturating_sub(beat)) < within.as_millis()
    }

    fn end_read(&self, n: u64) {
        self.reads_done.fetch_max(n, Ordering::AcqRel);
        self.read_done.notify_waiters();
    }

    fn reset(&self, sink: &dyn ChangeSink, why: &str) {
        tracing::info!(why, "change feed: emptying the cache");
        sink.reset();
        self.resets.fetch_add(1, Ordering::Relaxed);
    }
}

/// Starts the feed task; it runs until the returned handle is aborted. A panic inside it is
/// counted in [`FeedStatus::restarts`] and the feed starts over, fresh.
pub fn spawn(
    config: Config,
    sink: Arc<dyn ChangeSink>,
    settings: FeedSettings,
    start: FeedStart,
    fence: Option<Arc<Fence>>,
) -> (Arc<FeedStatus>, tokio::task::JoinHandle<()>) {
    let status = Arc::new(FeedStatus::new());
    let (watched, running) = (Arc::clone(&status), Arc::clone(&status));
    // Taken by the first run only: a run after a panic has lost its state.
    let start = Arc::new(Mutex::new(Some(start)));
    let handle = supervised(
        "the change feed",
        Duration::from_millis(50),
        move || {
            // Its state is lost: count the restart, and start over from a new position.
            watched.restarts.fetch_add(1, Ordering::Relaxed);
            watched.established.store(false, Ordering::Release);
            watched.set_down();
        },
        move || {
            let start = start.lock().ok().and_then(|mut s| s.take());
            follow_forever(
                config.clone(),
                Arc::clone(&sink),
                Arc::clone(&running),
                settings.clone(),
                start.unwrap_or(FeedStart::Fresh),
                fence.clone(),
            )
        },
    );
    (status, handle)
}

async fn follow_forever(
    config: Config,
    sink: Arc<dyn ChangeSink>,
    status: Arc<FeedStatus>,
    settings: FeedSettings,
    start: FeedStart,
    fence: Option<Arc<Fence>>,
) {
    let mut follower = Follower {
        high: None,
        pending: Vec::new(),
        pending_from: 0,
        last_complete_read: None,
        last_prune: None,
        fence,
    };
    if let FeedStart::Resume(position) = start {
        if let Some(at) = wait_for_position(position, &status).await {
            tracing::info!(
                after_seq = at.high,
                "change feed: resuming from a restored position"
            );
            follower.high = Some(at.high);
            follower.pending = sorted(at.pending);
            follower.pending_from = at.pending_from;
            // Whoever restored the position checked it is younger than half the retention.
            follower.last_complete_read = Some(Instant::now());
        }
    }
    let mut backoff = Duration::from_millis(50);
    let mut jitter = crate::dataset::rng::Rng::new(u64::from(std::process::id()));
    loop {
        let started = Instant::now();
        let err = match follower
            .follow(&config, sink.as_ref(), &status, &settings)
            .await
        {
            Ok(never) => match never {},
            Err(e) => e,
        };
        status.set_down();
        status.beat();
        // Released after `set_down`: a reader that sees the count sees that connection down.
        status.reconnects.fetch_add(1, Ordering::Release);
        if started.elapsed() > Duration::from_secs(10) {
            backoff = Duration::from_millis(50);
        }
        let wait = backoff.mul_f64(0.5 + jitter.unit());
        tracing::warn!(
            cause = %crate::logging::cause_chain(&err),
            retry_ms = wait.as_millis() as u64,
            "change feed: connection lost; reconnecting"
        );
        tokio::time::sleep(wait).await;
        backoff = (backoff * 2).min(settings.max_backoff);
    }
}

/// The position a restore hands over, beating meanwhile (a restore takes a while, and the
/// feed is not hung while it waits); None if the restore gave none (or gave up).
async fn wait_for_position(
    mut position: tokio::sync::oneshot::Receiver<Option<FeedPosition>>,
    status: &FeedStatus,
) -> Option<FeedPosition> {
    let mut beat = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            given = &mut position => return given.ok().flatten(),
            _ = beat.tick() => status.beat(),
        }
    }
}

/// The instant the feed's clocks count from (the first time one is read).
fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn since_epoch_ms() -> u64 {
    u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX)
}

struct Follower {
    /// Every log row numbered at most `high` has been applied, or was written by a
    /// transaction in `pending` or at or past `pending_from`. None until the first read.
    high: Option<i64>,
    /// Transaction ids that were running at the last complete read, sorted.
    pending: Vec<i64>,
    /// The last complete read's snapshot `xmax`: transactions with this id or a later one were
    /// not committed then.
    pending_from: i64,
    /// When the last complete catch-up began (everything committed before then has been
    /// read): pruning never deletes a row visible for less than the retention, so a feed that
    /// completes reads more often than that has read it.
    last_complete_read: Option<Instant>,
    last_prune: Option<Instant>,
    /// Raised to the primary's WAL position at every read of the log, before what it shows is
    /// applied, so that no refresh or fill reads a replica that lacks it (see
    /// [`super::fence`]).
    fence: Option<Arc<Fence>>,
}

/// One read, in one snapshot: the snapshot's running transactions and `xmax`, the pruning
/// record, the primary's WAL position (past the commit of every change the read shows), and
/// up to `$5` log rows past the cursor `$4`: those above `high` (`$1`), and those at or below
/// it written by a pending transaction (`$2`, or at or past `$3`).
const READ_LOG: &str = "
    SELECT ARRAY(SELECT x::text::int8 FROM pg_snapshot_xip(s) AS x),
           pg_snapshot_xmax(s)::text::int8, p.through,
           c.seq, c.kind, c.id, c.session,
           (extract(epoch FROM clock_timestamp() - c.at) * 1000)::int8, c.xid,
           pg_current_wal_insert_lsn(), c.detail
      FROM pg_current_snapshot() AS s
     CROSS JOIN change_log_pruned AS p
      LEFT JOIN LATERAL (
           SELECT * FROM (
               (SELECT seq, kind, id, session, at, xid, detail FROM change_log
                 WHERE seq > greatest($1::int8, $4::int8) ORDER BY seq LIMIT $5::int8)
               UNION
               (SELECT seq, kind, id, session, at, xid, detail FROM change_log
                 WHERE xid = ANY ($2::int8[]) AND seq > $4::int8 AND seq <= $1::int8 ORDER BY seq LIMIT $5::int8)
               UNION
               (SELECT seq, kind, id, session, at, xid, detail FROM change_log
                 WHERE xid >= $3::int8 AND seq > $4::int8 AND seq <= $1::int8 ORDER BY seq LIMIT $5::int8)
           ) AS u ORDER BY seq LIMIT $5::int8) AS c ON true";

/// Where a first read starts: the highest visible number (the pruned mark if the log is
/// empty), what the snapshot shows as not committed (not the sequence's position: it is not
/// transactional), and the primary's WAL position.
const READ_START: &str = "
    SELECT greatest((SELECT max(seq) FROM change_log), p.through),
           ARRAY(SELECT x::text::int8 FROM pg_snapshot_xip(s) AS x),
           pg_snapshot_xmax(s)::text::int8,
           pg_current_wal_insert_lsn()
      FROM pg_current_snapshot() AS s, change_log_pruned AS p";

impl Follower {
    async fn follow(
        &mut self,
        config: &Config,
        sink: &dyn ChangeSink,
        status: &FeedStatus,
        settings: &FeedSettings,
    ) -> Result<std::convert::Infallible, DbError> {
        let limit = settings.query_timeout;
        let config = connection_config(config, settings);
        let (client, mut connection) = timed(limit, async {
            config
                .connect(NoTls)
                .await
                .map_err(|e| DbError::Unavailable(e.to_string()))
        })
        .await?;
        // One stored wake-up however many notifications arrive: a burst becomes one read.
        let notified = Arc::new(tokio::sync::Notify::new());
        let closed = Arc::new(AtomicBool::new(false));
        let (wake, gone) = (Arc::clone(&notified), Arc::clone(&closed));
        let driver = tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(_)) => wake.notify_one(),
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            gone.store(true, Ordering::Release);
            wake.notify_one();
        });
        let _driver = AbortOnDrop(driver);
        timed(limit, async {
            client
                .batch_execute("LISTEN atelier_changes")
                .await
                .map_err(DbError::from_query)
        })
        .await?;
        // Prepared once: every instance reads the log after every burst of writes, and
        // parsing the read each time cost the database 0.17 ms (measured at full scale under
        // writes), three times what running it costs. It is still planned for each read's
        // parameters (0.3 ms; `plan_cache_mode` in `connection_config`): a generic plan,
        // which cannot see that the pending transactions are few, walks the log's whole
        // window for them.
        let read_log = timed(limit, async {
            client.prepare(READ_LOG).await.map_err(DbError::from_query)
        })
        .await?;
        tracing::info!(
            after_seq = self.high,
            "change feed: connected and listening"
        );

        // Listening before reading: nothing committed from here on can be missed.
        if self.high.is_none() {
            let asked = Instant::now();
            let row = timed(limit, async {
                client
                    .query_one(READ_START, &[])
                    .await
                    .map_err(DbError::from_query)
            })
            .await?;
            self.raise_fence(asked, row.get(3));
            self.high = Some(row.get::<_, Option<i64>>(0).unwrap_or(0));
            self.pending = sorted(row.get(1));
            self.pending_from = row.get(2);
            self.last_complete_read = Some(Instant::now());
            // Whatever was filled before now may predate changes this feed will never read:
            // start from an empty sink.
            status.reset(sink, "the feed established its position in the log");
            status.established.store(true, Ordering::Release);
        }
        self.catch_up(&client, &read_log, sink, status, settings)
            .await?;
        // A resumed feed has applied what it missed (or reset the sink if the log no longer
        // reaches back): it is established now.
        status.established.store(true, Ordering::Release);
        status.set_up();

        let mut poll = tokio::time::interval(settings.poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = notified.notified() => {
                    if closed.load(Ordering::Acquire) {
                        return Err(DbError::Unavailable("the change feed connection closed".into()));
                    }
                }
                _ = poll.tick() => self.prune_if_due(&client, settings).await?,
            }
            self.catch_up(&client, &read_log, sink, status, settings)
                .await?;
        }
    }

    /// Reads and applies every logged change above `high` and every row of the pending
    /// transactions, in batches, until a read returns less than a batch.
    async fn catch_up(
        &mut self,
        client: &Client,
        read_log: &Statement,
        sink: &dyn ChangeSink,
        status: &FeedStatus,
        settings: &FeedSettings,
    ) -> Result<(), DbError> {
        if status.panic_requested.swap(false, Ordering::AcqRel) {
            panic!("change feed: panic injected by a test");
        }
        if status.hang_requested.swap(false, Ordering::AcqRel) {
            std::future::pending::<()>().await;
        }
        let read = status.begin_read();
        let chain_began = Instant::now();
        // Half the retention, for the clocks of this host and the database's to disagree in.
        let mut away_too_long = self
            .last_complete_read
            .is_some_and(|t| t.elapsed() > settings.retention / 2);
        // What the first read of this catch-up shows as not committed: pending afterwards.
        let mut not_committed: Option<(Vec<i64>, i64)> = None;
        let mut after = 0i64;
        loop {
            let high = self.high.unwrap_or(0);
            let asked = Instant::now();
            let rows = timed(settings.query_timeout, async {
                client
                    .query(
                        read_log,
                        &[
                            &high,
                            &self.pending,
                            &self.pending_from,
                            &after,
                            &settings.batch_rows,
                        ],
                    )
                    .await
                    .map_err(DbError::from_query)
            })
            .await?;
            let Some(first) = rows.first() else {
                return Err(DbError::Unavailable(
                    "the change feed read no snapshot".into(),
                ));
            };
            if not_committed.is_none() {
                not_committed = Some((first.get(0), first.get(1)));
            }
            // Before anything the read shows is applied (or the sink reset).
            self.raise_fence(asked, first.get(9));
            let pruned_through: i64 = first.get(2);
            if pruned_through > high || away_too_long {
                // Rows this feed had not read may be gone: it cannot know what changed.
                status.reset(sink, "the log was pruned past this feed's position");
                self.high = Some(high.max(pruned_through));
                away_too_long = false;
            }
            let mut seen = 0;
            for row in &rows {
                let Some(seq) = row.get::<_, Option<i64>>(3) else {
                    continue; // the snapshot's row when the log has nothing to give
                };
                seen += 1;
                after = seq;
                match change_from_row(row.get(4), row.get(5), row.get(6), row.get(10)) {
                    Some(Change::All) => status.reset(sink, "a change to everything (a bulk load)"),
                    Some(change) => sink.apply_logged(&change, row.get(8)),
                    None => {
                        status.unknown_changes.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(
                            kind = %row.get::<_, String>(4),
                            seq,
                            "change feed: a change of a kind this build does not know"
                        );
                        status.reset(sink, "a change of an unknown kind");
                    }
                }
                self.high = Some(self.high.unwrap_or(0).max(seq));
                status
                    .lag_ms
                    .store(row.get::<_, i64>(7).max(0) as u64, Ordering::Relaxed);
                status.last_seq.fetch_max(seq, Ordering::Relaxed);
            }
            // A long catch-up is many batches: each one is the feed at work.
            status.beat();
            let full = seen == settings.batch_rows;
            status.catching_up.store(full, Ordering::Release);
            if !full {
                break;
            }
        }
        if let Some((running, xmax)) = not_committed {
            self.pending = sorted(running);
            self.pending_from = xmax;
        }
        status
            .pending_transactions
            .store(self.pending.len() as u64, Ordering::Relaxed);
        // What this catch-up vouches for is what had committed when it began.
        self.last_complete_read = Some(chain_began);
        if let Ok(mut position) = status.position.lock() {
            *position = Some(FeedPosition {
                high: self.high.unwrap_or(0),
                pending: self.pending.clone(),
                pending_from: self.pending_from,
            });
        }
        status.end_read(read);
        Ok(())
    }

    /// Raises the fence (if replicas are read) to `position`, read by a query sent at `asked`:
    /// every read of the log does, changes or not, so that the fence is never behind what
    /// this instance has vouched for (a first position, a reset, a resumed snapshot).
    fn raise_fence(&self, asked: Instant, position: PgLsn) {
        if let Some(fence) = &self.fence {
            fence.raise(u64::from(position), asked);
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
        timed(settings.query_timeout, prune(client, settings.retention)).await?;
        Ok(())
    }
}

/// How the feed connects to `database`: failures noticed within seconds (keepalives, TCP user
/// timeout, a connect limit), no JIT, every read of the log planned for its own parameters,
/// and a name that shows in `pg_stat_activity`.
pub fn connection_config(database: &Config, settings: &FeedSettings) -> Config {
    let mut config = database.clone();
    super::notice_failures(&mut config, settings.query_timeout);
    super::add_options(&mut config, "-c jit=off");
    // The log's read is prepared once; a generic plan of it walks the log's whole window for
    // the pending transactions, and PostgreSQL may switch to one after five reads.
    super::add_options(&mut config, "-c plan_cache_mode=force_custom_plan");
    config.application_name("atelier change feed");
    config
}

/// Prunes the log: records this run, deletes the rows whose writers had ended before a
/// previous run at least `retention` old (so every row deleted was visible for the whole
/// retention), forgets runs no longer needed, and records the highest sequence number
/// deleted. Returns the rows deleted.
pub async fn prune(client: &Client, retention: Duration) -> Result<u64, DbError> {
    // A function that runs as the log's owner (migration 5): the serving role may not write
    // the log itself.
    let pruned = client
        .query_one(
            "SELECT atelier_prune_change_log($1)",
            &[&retention.as_secs_f64()],
        )
        .await
        .map(|row| row.get::<_, i64>(0) as u64)
        .map_err(DbError::from_query)?;
    // Votes' request ids (migration 6) go with the log's rows, in a statement of their own: a
    // failure there must not stop the log's pruning.
    if let Err(e) = client
        .simple_query("SELECT atelier_forget_applied_requests()")
        .await
    {
        tracing::warn!(cause = %e, "could not forget old request ids");
    }
    Ok(pruned)
}

fn sorted(mut ids: Vec<i64>) -> Vec<i64> {
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Runs `f` within `limit`; past it the feed gives up on its connection.
async fn timed<T>(
    limit: Duration,
    f: impl std::future::Future<Output = Result<T, DbError>>,
) -> Result<T, DbError> {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| Err(DbError::Unavailable("a change feed query timed out".into())))
}

#[cfg(test)]
mod liveness_tests {
    use super::*;

    #[test]
    fn a_feed_that_has_done_nothing_for_too_long_is_not_alive() {
        let status = FeedStatus::new();
        let within = Duration::from_secs(30);
        assert!(status.is_alive(within));
        status.beat_ms.store(1_000, Ordering::Release);
        assert!(status.alive_at(30_999, within));
        assert!(!status.alive_at(31_000, within), "30 s without a beat");
        status.begin_read();
        assert!(status.is_alive(within), "a read is a beat");
    }
}

#[cfg(test)]
mod row_tests {
    use super::change_from_row;
    use crate::domain::Change;

    #[test]
    fn a_detail_narrows_its_kinds_change_and_one_not_understood_leaves_it_whole() {
        let row = |kind, detail| change_from_row(kind, Some(7), None, detail);
        let votes = |review| Some(Change::ReviewVotes { product: 7, review });
        assert_eq!(row("reviews", Some("votes")), votes(None));
        assert_eq!(row("reviews", Some("votes:31")), votes(Some(31)));
        for detail in [None, Some("votes:"), Some("votes:x"), Some("later")] {
            assert_eq!(
                row("reviews", detail),
                Some(Change::Reviews(7)),
                "{detail:?}"
            );
        }
        assert_eq!(
            row("questions", Some("answers:42")),
            Some(Change::QuestionAnswers {
                product: 7,
                question: 42
            })
        );
        for detail in [
            None,
            Some("answers:"),
            Some("answers:x"),
            Some("votes"),
            Some("later"),
        ] {
            assert_eq!(
                row("questions", detail),
                Some(Change::Questions(7)),
                "{detail:?}"
            );
        }
        assert_eq!(row("reviews", Some("answers:42")), Some(Change::Reviews(7)));
    }
}
