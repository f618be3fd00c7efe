//! Waiting for a condition with a deadline that names what was awaited.

use std::time::{Duration, Instant};

/// How long a test waits for something that normally takes a second or two.
pub const WAIT: Duration = Duration::from_secs(60);

/// Polls `f` every 100 ms until it returns `Some`, or panics after `max` naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, max: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if start.elapsed() > max {
            panic!("timed out after {max:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
