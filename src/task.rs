//! Background tasks that outlive neither their owner nor a panic: a handle that aborts its
//! task when dropped, and a supervisor that starts a task again whenever it panics; and a
//! time limit that costs nothing when the work is done at once.

use std::future::Future;
use std::time::Duration;

/// `work`'s output, or `Err` once it has taken `limit`. Work done at its first poll (a cache
/// hit) makes no timer at all: `tokio::time::timeout` reads the clock and clones the runtime's
/// handle (a count the workers share) even for work that is ready at once. Otherwise the limit
/// counts from the end of that first poll.
pub async fn within<F: Future>(
    limit: Duration,
    work: F,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    use futures_util::FutureExt;
    let mut work = std::pin::pin!(work);
    if let Some(done) = work.as_mut().now_or_never() {
        return Ok(done);
    }
    tokio::time::timeout(limit, work).await
}

/// A task handle that aborts the task when dropped, so a task's helpers end with it.
pub struct AbortOnDrop<T>(pub tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs the task `start` makes, and whenever it panics logs it, calls `on_panic`, waits
/// `pause` and starts it again, until it returns or the returned handle is aborted (which
/// aborts the running task too).
pub fn supervised<F, Fut>(
    name: &'static str,
    pause: Duration,
    on_panic: impl Fn() + Send + 'static,
    start: F,
) -> tokio::task::JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            let mut run = AbortOnDrop(tokio::spawn(start()));
            match (&mut run.0).await {
                Err(e) if e.is_panic() => {
                    tracing::error!(task = name, "panicked; starting it again");
                    on_panic();
                    tokio::time::sleep(pause).await;
                }
                _ => return,
            }
        }
    })
}
