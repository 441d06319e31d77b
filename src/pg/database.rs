//! Where each read goes: to a streaming replica that has replayed every change this instance
//! has seen, or to the primary.
//!
//! Writes, the change feed (a standby cannot `LISTEN`), `/readyz`'s check, the anti-entropy
//! sweep (it judges bodies against the database itself) and a snapshot's record of the
//! database stay on the primary. Fills, refreshes, counts and warm-ups may go to a replica,
//! fenced (see [`super::fence`]): a replica that lacks a change seen is waited for until the
//! bound after the change was seen, then skipped; one that is down, lagging beyond the bound
//! or failing a read is skipped, and the primary serves. Without replicas every read goes to
//! the primary and none of this costs anything.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::types::PgLsn;
use tokio_postgres::Config;

use super::fence::{caught_up, Fence, Lsn, Standing};
use super::pool::Pool;
use super::replica::Replica;
use super::DbError;

/// Replicas to read from, and how far behind a change one may be.
#[derive(Debug, Clone)]
pub struct ReplicaSettings {
    pub replicas: Vec<Config>,
    /// How long a replica may lack a change seen before reads skip it.
    pub max_lag: Duration,
    /// How long the refreshes after this instance's own write wait for a replica to replay
    /// it before they read the primary (zero: no wait, a replica only if it has it already).
    pub write_wait: Duration,
}

impl Default for ReplicaSettings {
    fn default() -> Self {
        ReplicaSettings {
            replicas: Vec::new(),
            max_lag: Duration::from_secs(1),
            write_wait: Duration::from_millis(50),
        }
    }
}

/// Where a warm-up scans.
pub struct ScanSource {
    pub config: Config,
    /// The replica, if it is one, and the position its snapshot must have replayed: the scan
    /// checks it again on its own connection, which may reach a server the watcher did not
    /// see (a standby restarted since, behind where it was).
    pub replica: Option<(Arc<Replica>, Lsn)>,
}

impl ScanSource {
    /// How far a replica must have replayed for its scan to be current (None on the primary).
    pub fn replayed_to(&self) -> Option<Lsn> {
        self.replica.as_ref().map(|(_, fence)| *fence)
    }

    /// Counts how the scan went on the replica, if it was one; true if it failed there (the
    /// next warm-up goes to the primary).
    pub fn finished<T, E>(&self, scanned: &Result<T, E>) -> bool {
        let Some((replica, _)) = &self.replica else {
            return false;
        };
        let counter = match scanned {
            Ok(_) => &replica.warmups,
            Err(_) => &replica.failures,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        scanned.is_err()
    }
}

/// Where a read may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFrom {
    /// A replica that has every change seen (waiting for one up to the bound), else the
    /// primary.
    Fenced,
    /// As `Fenced`, waiting for a replica at most [`ReplicaSettings::write_wait`]: the
    /// refreshes that follow this instance's own write, whose answer waits for them.
    AfterOwnWrite,
    /// The primary.
    Primary,
}

/// One replica's counters, as `/metrics` reports them.
#[derive(Debug, Clone)]
pub struct ReplicaStats {
    pub name: String,
    pub up: bool,
    /// How far its replay is behind the last change this instance saw (0 when caught up).
    pub behind_bytes: u64,
    pub reads: u64,
    pub warmups: u64,
    pub skipped_down: u64,
    pub skipped_lagging: u64,
    pub failures: u64,
}

/// The primary's pool and the replicas.
pub struct Database {
    pub primary: Pool,
    replicas: Vec<Arc<Replica>>,
    fence: Arc<Fence>,
    write_wait: Duration,
    next: AtomicUsize,
    /// Reads sent to the primary because no replica could take them.
    pub primary_reads: AtomicU64,
}

impl Database {
    /// The primary alone.
    pub fn primary_only(primary: Pool) -> Database {
        Database::new(primary, &ReplicaSettings::default())
    }

    /// The primary and the replicas of `settings`, each with a pool the size of the
    /// primary's. Nothing is read from a replica until [`Self::watch_replicas`] has heard
    /// from it.
    pub fn new(primary: Pool, settings: &ReplicaSettings) -> Database {
        let replicas = settings
            .replicas
            .iter()
            .map(|config| {
                Arc::new(Replica::new(
                    config.clone(),
                    primary.size(),
                    primary.timeout(),
                ))
            })
            .collect();
        Database {
            primary,
            replicas,
            fence: Arc::new(Fence::new(settings.max_lag)),
            write_wait: settings.write_wait,
            next: AtomicUsize::new(0),
            primary_reads: AtomicU64::new(0),
        }
    }

    /// What `/metrics` reports of each replica, in the order given.
    pub fn replica_stats(&self) -> Vec<ReplicaStats> {
        let fence = self.fence.high();
        self.replicas
            .iter()
            .map(|r| ReplicaStats {
                name: r.name.clone(),
                up: r.is_up(),
                behind_bytes: match r.replayed() {
                    replayed if caught_up(replayed, fence) => 0,
                    replayed => fence - replayed,
                },
                reads: r.reads.load(Ordering::Relaxed),
                warmups: r.warmups.load(Ordering::Relaxed),
                skipped_down: r.skipped_down.load(Ordering::Relaxed),
                skipped_lagging: r.skipped_lagging.load(Ordering::Relaxed),
                failures: r.failures.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// The fence the change feed raises as it reads the log; None without replicas.
    pub fn feed_fence(&self) -> Option<Arc<Fence>> {
        (!self.replicas.is_empty()).then(|| Arc::clone(&self.fence))
    }

    /// The per-query time limit.
    pub fn timeout(&self) -> Duration {
        self.primary.timeout()
    }

    /// Starts a watcher per replica (see [`super::replica`]); they run until aborted.
    ///
    /// A replica is read only once the primary has said which cluster it is
    /// (`system_identifier`) and the replica is a standby of that same cluster.
    pub fn watch_replicas(&self) -> Vec<tokio::task::JoinHandle<()>> {
        if self.replicas.is_empty() {
            return Vec::new();
        }
        let limit = self.primary.timeout();
        let cluster = Arc::new(std::sync::OnceLock::new());
        let mut tasks: Vec<_> = self
            .replicas
            .iter()
            .map(|replica| tokio::spawn(Arc::clone(replica).watch(limit, Arc::clone(&cluster))))
            .collect();
        let primary = self.primary.config().clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let asked = async {
                    let client = super::connect(&primary).await?;
                    let row = client
                        .query_one(
                            "SELECT system_identifier::text FROM pg_control_system()",
                            &[],
                        )
                        .await
                        .map_err(DbError::from_query)?;
                    Ok::<String, DbError>(row.get(0))
                };
                if let Ok(Ok(identifier)) = tokio::time::timeout(limit * 2, asked).await {
                    let _ = cluster.set(identifier);
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }));
        tasks
    }

    /// Runs the read `f` on a replica that has every change seen so far (waiting for one up to
    /// the bound), or on the primary. A read that fails on a replica is run on the primary.
    pub async fn read<'a, T, F, Fut>(&'a self, f: F) -> Result<T, DbError>
    where
        F: Fn(&'a Pool) -> Fut,
        Fut: std::future::Future<Output = Result<T, DbError>>,
    {
        self.read_from(ReadFrom::Fenced, f).await
    }

    /// Runs the read `f` where `from` says.
    pub async fn read_from<'a, T, F, Fut>(&'a self, from: ReadFrom, f: F) -> Result<T, DbError>
    where
        F: Fn(&'a Pool) -> Fut,
        Fut: std::future::Future<Output = Result<T, DbError>>,
    {
        let wait = match from {
            _ if self.replicas.is_empty() => return f(&self.primary).await,
            ReadFrom::Primary => return f(&self.primary).await,
            ReadFrom::Fenced => None,
            ReadFrom::AfterOwnWrite => Some(self.write_wait),
        };
        if let Some(replica) = self.choose(wait).await {
            match f(&replica.pool).await {
                Ok(value) => {
                    replica.reads.fetch_add(1, Ordering::Relaxed);
                    return Ok(value);
                }
                Err(e) => {
                    let failures = replica.failures.fetch_add(1, Ordering::Relaxed);
                    if e.is_unavailable() {
                        replica.set_down();
                    }
                    // The first, then one in a thousand: a replica that answers its watcher
                    // but fails reads (the wrong database?) must show in the log, not flood it.
                    if failures % 1000 == 0 {
                        tracing::warn!(
                            replica = %replica.name,
                            failures = failures + 1,
                            cause = %crate::logging::cause_chain(&e),
                            "replica: a read failed; reading from the primary"
                        );
                    }
                }
            }
        }
        self.primary_reads.fetch_add(1, Ordering::Relaxed);
        f(&self.primary).await
    }

    /// Raises the fence to where the primary is now: after this instance's own write commits
    /// (the feed brings it only later), and before a warm-up. Does nothing without replicas.
    /// Should the primary not answer, no replica counts as current until a later query has
    /// raised the fence ([`Fence::blind`]).
    pub async fn fence_now(&self) -> Result<(), DbError> {
        if self.replicas.is_empty() {
            return Ok(());
        }
        let asked = Instant::now();
        let lsn: Result<PgLsn, DbError> = self
            .primary
            .run(|c| async move {
                c.client
                    .query_one("SELECT pg_current_wal_insert_lsn()", &[])
                    .await
                    .map(|row| row.get(0))
            })
            .await;
        match lsn {
            Ok(lsn) => {
                self.fence.raise(u64::from(lsn), asked);
                Ok(())
            }
            Err(e) => {
                self.fence.blind();
                Err(e)
            }
        }
    }

    /// How long a read through [`Self::read`] may take: a wait for a replica, a read there and
    /// one on the primary, each a wait for a connection and a query. What a request waiting
    /// for another's fill waits at most.
    pub fn read_limit(&self) -> Duration {
        if self.replicas.is_empty() {
            self.timeout()
        } else {
            self.fence.max_lag() + self.timeout() * 4
        }
    }

    /// Where a warm-up scans: a replica that has every change seen before it began (the
    /// fence raised to the primary's position now), or the primary (`primary`, which may be
    /// a configuration of the scan's own). With `avoid_replicas` (a scan from a replica just
    /// failed), the primary.
    pub async fn scan_source(&self, primary: &Config, avoid_replicas: bool) -> ScanSource {
        let on_primary = || ScanSource {
            config: primary.clone(),
            replica: None,
        };
        if self.replicas.is_empty() || avoid_replicas || self.fence_now().await.is_err() {
            return on_primary();
        }
        for replica in &self.replicas {
            replica.first_try(self.timeout()).await;
        }
        let fence = self.fence.high();
        match self.choose(None).await {
            Some(replica) => {
                tracing::info!(replica = %replica.name, "warm-up: scanning a replica");
                ScanSource {
                    config: replica.config().clone(),
                    replica: Some((Arc::clone(replica), fence)),
                }
            }
            None => on_primary(),
        }
    }

    /// A replica that has every change seen so far: one that has now, else the first of those
    /// behind by less than the bound to catch up (waiting at most `wait`, if given). Counts
    /// the replicas skipped.
    async fn choose(&self, wait: Option<Duration>) -> Option<&Arc<Replica>> {
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        let mut behind = Vec::new();
        for i in 0..self.replicas.len() {
            let replica = &self.replicas[(first + i) % self.replicas.len()];
            if !replica.is_up() {
                replica.skipped_down.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            match self.fence.standing(replica.replayed()) {
                Standing::CaughtUp => return Some(replica),
                Standing::Lagging => {
                    replica.skipped_lagging.fetch_add(1, Ordering::Relaxed);
                }
                Standing::Behind { .. } => behind.push(replica),
            }
        }
        if behind.is_empty() {
            return None;
        }
        self.first_to_catch_up(behind, wait.map(|w| Instant::now() + w))
            .await
    }

    /// Waits for the first of `behind` to reach the fence, each until its deadline (and
    /// `cap`), asking their watchers to poll meanwhile; None if none does. Counts those that go
    /// down or pass their deadline.
    async fn first_to_catch_up<'r>(
        &self,
        mut behind: Vec<&'r Arc<Replica>>,
        cap: Option<Instant>,
    ) -> Option<&'r Arc<Replica>> {
        loop {
            // Listening before looking: a poll that lands in between is not missed.
            let mut polled: Vec<_> = behind.iter().map(|r| Box::pin(r.polled())).collect();
            for wake in &mut polled {
                wake.as_mut().enable();
            }
            let now = Instant::now();
            let mut next_deadline: Option<Instant> = None;
            let mut still = Vec::with_capacity(behind.len());
            for replica in behind {
                if !replica.is_up() {
                    replica.skipped_down.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let lag_deadline = match self.fence.standing(replica.replayed()) {
                    Standing::CaughtUp => return Some(replica),
                    Standing::Lagging => now,
                    Standing::Behind { deadline, .. } => deadline,
                };
                if lag_deadline <= now {
                    replica.skipped_lagging.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                // A writer's shorter wait running out is not the replica lagging.
                let deadline = cap.map_or(lag_deadline, |cap| cap.min(lag_deadline));
                if deadline > now {
                    next_deadline = Some(next_deadline.map_or(deadline, |d| d.min(deadline)));
                    replica.want_poll();
                    still.push(replica);
                }
            }
            let next_deadline = next_deadline?;
            behind = still;
            tokio::select! {
                _ = futures_util::future::select_all(polled) => {}
                () = tokio::time::sleep_until(tokio::time::Instant::from_std(next_deadline)) => {}
            }
        }
    }
}
