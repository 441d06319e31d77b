//! An instance's life as systemd sees it: `STATUS=` while it gets ready and `READY=1` once
//! `/readyz` would answer 200, `WATCHDOG=1` pings while the runtime and the change feed are
//! alive, and `STOPPING=1` when it begins to drain (see [`super::Running::drain`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::App;
use crate::notify::Notifier;

/// Tells systemd how the instance is getting ready, once a second, until it is: then
/// `READY=1`. Returns when it has said so.
pub async fn report_readiness(app: Arc<App>, notifier: Arc<Notifier>) {
    loop {
        match app.unready_reason().await {
            None => {
                notifier.notify("READY=1\nSTATUS=serving");
                tracing::info!("ready");
                return;
            }
            Some("warming up the catalog") => {
                let done = app.warmup.products_done.load(Ordering::Relaxed);
                let total = app.warmup.products_total.load(Ordering::Relaxed);
                notifier.notify(&format!(
                    "STATUS=warming up the catalog: {done} of {total} products"
                ));
            }
            Some(reason) => notifier.notify(&format!("STATUS={reason}")),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// How long the change feed may go without doing anything (a read, a connection attempt)
/// before the instance counts as hung: three times the longest it waits between them with
/// the given settings.
pub fn feed_liveness(feed: &crate::pg::feed::FeedSettings) -> Duration {
    3 * (feed.query_timeout + feed.max_backoff + feed.poll_interval)
}

/// Pings systemd's watchdog every `interval` while the instance is alive: this task runs
/// (so the runtime does), and the change feed's task has done something lately. A hung feed
/// stops the pings, and systemd restarts the instance after `WatchdogSec=`. (A database that
/// is down does not: the feed keeps trying to connect.)
pub async fn ping_watchdog(app: Arc<App>, notifier: Arc<Notifier>, interval: Duration) {
    let liveness = feed_liveness(&app.settings.feed);
    loop {
        let feed_alive = app.feed_status().is_none_or(|feed| feed.is_alive(liveness));
        if feed_alive {
            notifier.notify("WATCHDOG=1");
        } else {
            tracing::error!(
                quiet_for_ms = app
                    .feed_status()
                    .map_or(0, |f| f.since_last_beat().as_millis() as u64),
                "the change feed has done nothing for too long: no watchdog ping"
            );
        }
        tokio::time::sleep(interval).await;
    }
}
