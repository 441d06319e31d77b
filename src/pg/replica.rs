//! One streaming replica: a pool for the reads sent to it, and a watcher that keeps track of
//! how far it has replayed the primary's log and whether it answers.
//!
//! The watcher polls `pg_last_wal_replay_lsn()` once a second, and at once (a few
//! milliseconds apart) while a read waits for the replica to pass the fence. It holds a
//! connection of its own, and the replica counts as down from the moment that connection
//! ends: a standby restarting may come back behind where it was, so nothing is read from it
//! until the watcher has asked it again. For the same reason each connection of the
//! replica's pool must reach the very server the watcher last polled (the same postmaster
//! start time), or it is refused: a pool that reconnected to a restarted standby, or a name
//! that leads to several servers, does not read behind the watcher's back.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_postgres::types::PgLsn;
use tokio_postgres::{Config, NoTls};

use super::fence::Lsn;
use super::pool::{postmaster_started, Pool};
use crate::task::AbortOnDrop;

/// How often the watcher polls when no read is waiting.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// The least time between two polls while reads wait.
const BUSY_POLL: Duration = Duration::from_millis(2);

/// The pause before reconnecting after a connection was lost.
const RECONNECT: Duration = Duration::from_millis(100);

/// What one poll of a replica said, with what its connection learned once.
struct Standby<'a> {
    in_recovery: bool,
    replaying: Option<PgLsn>,
    /// Its postmaster's start time (microseconds since the epoch).
    started: i64,
    /// Its cluster's `system_identifier`.
    of_cluster: &'a str,
}

/// Why the watcher lost a connection (None: it closed), and how long it waits before the next.
struct Lost {
    why: Option<String>,
    pause: Duration,
}

impl Lost {
    fn because(why: String, pause: Duration) -> Lost {
        Lost {
            why: Some(why),
            pause,
        }
    }
}

/// A streaming replica and what is known of it.
pub struct Replica {
    /// Where it is, for logs and metrics (host, port, database; never a password).
    pub name: String,
    /// How the warm-up's scan connects to it.
    config: Config,
    pub(crate) pool: Pool,
    replayed: AtomicU64,
    /// When the server the watcher polls started (microseconds since the epoch): each pool
    /// connection must reach that same server, so that what the watcher saw holds for it.
    server_started: Arc<AtomicI64>,
    up: AtomicBool,
    /// Whether the watcher has tried it at least once (answered or not).
    tried: AtomicBool,
    /// Signalled after every poll and whenever the replica goes down.
    progress: Notify,
    /// Signalled by a read that waits for the replica to replay further.
    wanted: Notify,
    /// Reads it served.
    pub reads: AtomicU64,
    /// Warm-ups that scanned it.
    pub warmups: AtomicU64,
    /// Reads sent elsewhere because it was down, or lagged beyond the bound.
    pub skipped_down: AtomicU64,
    pub skipped_lagging: AtomicU64,
    /// Reads that failed on it and went to the primary instead.
    pub failures: AtomicU64,
}

impl Replica {
    /// A replica reached through `config`, with a pool like the primary's (`size`
    /// connections, `timeout` per query). Down until its watcher has heard from it.
    pub fn new(config: Config, size: usize, timeout: Duration) -> Replica {
        let server_started = Arc::new(AtomicI64::new(0));
        Replica {
            name: super::describe(&config),
            pool: Pool::new(config.clone(), size, timeout)
                .only_on_server(Arc::clone(&server_started)),
            server_started,
            config,
            replayed: AtomicU64::new(0),
            up: AtomicBool::new(false),
            tried: AtomicBool::new(false),
            progress: Notify::new(),
            wanted: Notify::new(),
            reads: AtomicU64::new(0),
            warmups: AtomicU64::new(0),
            skipped_down: AtomicU64::new(0),
            skipped_lagging: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }

    /// How the warm-up's scan connects to it.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether it answered the watcher's last poll (and its connection has not ended since).
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// How far it had replayed at the watcher's last poll.
    pub fn replayed(&self) -> Lsn {
        self.replayed.load(Ordering::Acquire)
    }

    /// Waits (at most `limit`) until the watcher has tried the replica once: a warm-up at
    /// start would otherwise find every replica not yet heard from.
    pub(crate) async fn first_try(&self, limit: Duration) {
        let _ = tokio::time::timeout(limit, async {
            loop {
                let progress = self.progress.notified();
                tokio::pin!(progress);
                progress.as_mut().enable();
                if self.tried.load(Ordering::Acquire) {
                    return;
                }
                progress.await;
            }
        })
        .await;
    }

    /// Counts it down until the watcher hears from it again (a read on it failed, or the
    /// watcher's connection ended).
    pub(crate) fn set_down(&self) {
        self.up.store(false, Ordering::Release);
        self.progress.notify_waiters();
    }

    /// Resolves at the watcher's next poll, or when the replica goes down.
    pub(crate) fn polled(&self) -> tokio::sync::futures::Notified<'_> {
        self.progress.notified()
    }

    /// Asks the watcher to poll now (a read waits for the replica to replay further).
    pub(crate) fn want_poll(&self) {
        self.wanted.notify_one();
    }

    /// Watches the replica for ever: connects, polls, and reconnects when the connection ends.
    /// `cluster` is the primary's `system_identifier`, once known: until then, and for a
    /// standby of another cluster, the replica stays down.
    pub async fn watch(self: Arc<Self>, timeout: Duration, cluster: Arc<OnceLock<String>>) {
        let mut config = self.config.clone();
        super::notice_failures(&mut config, timeout);
        config.application_name("atelier replica watcher");
        let mut warned = false;
        loop {
            let lost = self.follow(&config, timeout, &cluster, &mut warned).await;
            match &lost.why {
                Some(why) => self.note_trouble(&mut warned, why),
                None => self.set_down(),
            }
            // Not at once: a server that drops each connection must not be hammered.
            tokio::time::sleep(lost.pause).await;
        }
    }

    /// Connects, and polls until the connection is lost.
    async fn follow(
        self: &Arc<Self>,
        config: &Config,
        timeout: Duration,
        cluster: &OnceLock<String>,
        warned: &mut bool,
    ) -> Lost {
        let (client, connection) = match tokio::time::timeout(timeout, config.connect(NoTls)).await
        {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => return Lost::because(e.to_string(), IDLE_POLL),
            Err(_) => return Lost::because("timed out connecting".into(), Duration::ZERO),
        };
        let replica = Arc::clone(self);
        let _driver = AbortOnDrop(tokio::spawn(async move {
            let _ = connection.await;
            // Whatever it said last may not hold for the server that answers next.
            replica.set_down();
        }));
        // What cannot change while this connection lasts: asked once.
        let identity = tokio::time::timeout(
            timeout,
            client.query_one(
                concat!(
                    "SELECT ",
                    postmaster_started!(),
                    ", (SELECT system_identifier::text FROM pg_control_system())"
                ),
                &[],
            ),
        )
        .await;
        let (started, of_cluster): (i64, String) = match identity {
            Ok(Ok(row)) => (row.get(0), row.get(1)),
            Ok(Err(e)) => return Lost::because(e.to_string(), RECONNECT),
            Err(_) => return Lost::because("timed out polling".into(), RECONNECT),
        };
        loop {
            let polled = tokio::time::timeout(
                timeout,
                client.query_one("SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()", &[]),
            )
            .await;
            match polled {
                Ok(Ok(row)) => {
                    let standby = Standby {
                        in_recovery: row.get(0),
                        replaying: row.get(1),
                        started,
                        of_cluster: &of_cluster,
                    };
                    self.heard(standby, cluster.get(), warned);
                }
                Ok(Err(e)) => return Lost::because(e.to_string(), RECONNECT),
                Err(_) => return Lost::because("timed out polling".into(), RECONNECT),
            }
            if client.is_closed() {
                return Lost {
                    why: None,
                    pause: RECONNECT,
                };
            }
            tokio::select! {
                () = self.wanted.notified() => tokio::time::sleep(BUSY_POLL).await,
                () = tokio::time::sleep(IDLE_POLL) => {}
            }
        }
    }

    /// Takes in what a poll said: up, with how far it has replayed, only as a standby in
    /// recovery of the primary's own cluster (`primary`, once the primary has said it).
    fn heard(&self, standby: Standby<'_>, primary: Option<&String>, warned: &mut bool) {
        match (primary, standby.in_recovery, standby.replaying) {
            (None, ..) => self.set_down(),
            (Some(primary), ..) if primary != standby.of_cluster => {
                self.note_trouble(warned, "it is not a standby of DATABASE_URL's cluster");
            }
            (Some(_), true, Some(lsn)) => {
                // The server first: a pool connection checks it before it trusts what is
                // stored next.
                self.server_started
                    .store(standby.started, Ordering::Release);
                self.replayed.store(u64::from(lsn), Ordering::Release);
                self.tried.store(true, Ordering::Release);
                if !self.up.swap(true, Ordering::AcqRel) {
                    tracing::info!(replica = %self.name, "replica: reading from it");
                    *warned = false;
                }
                self.progress.notify_waiters();
            }
            // Promoted, or a server that never was a standby: its data no longer follows the
            // primary's log.
            _ => self.note_trouble(warned, "it is not a standby in recovery"),
        }
    }

    /// Counts the replica down, saying why once per spell of trouble.
    fn note_trouble(&self, warned: &mut bool, why: &str) {
        self.tried.store(true, Ordering::Release);
        self.set_down();
        if !*warned {
            *warned = true;
            tracing::warn!(replica = %self.name, why, "replica: skipped; reading from the primary");
        }
    }
}
