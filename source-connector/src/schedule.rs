//! When each site is checked.
//!
//! One scheduler task holds a min-heap of `(next due instant, site index)` —
//! 24 bytes a site, so 100,000 sites cost a few MiB and one timer, not
//! 100,000 sleeping tasks. Each site runs on its own interval; its first
//! check is offset by a stable hash of its url across the interval
//! ([`crate::hash::offset_in`]), so sites do not all fire at once.
//!
//! When a site is due:
//! - if its previous check still runs, the tick is skipped and counted
//!   (`reason="in_flight"`): never two checks of one site at once;
//! - if the scheduler fell more than an interval behind (a paused process, an
//!   overloaded machine), the missed ticks are skipped and counted
//!   (`reason="behind"`) instead of being run in a burst;
//! - otherwise the scheduler takes a permit of the global `concurrency`
//!   semaphore (waiting while the cap is reached) and spawns the check; so at
//!   most `concurrency` check tasks exist at any time. Lateness (actual start
//!   minus planned start) is recorded when the check starts.
//!
//! A check task checks, records metrics, hands the record to the publisher,
//! and only then frees the site and the permit. The caller knows every check
//! is done once it holds all the permits again.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::check;
use crate::hash::offset_in;
use crate::metrics;
use crate::publish::Publisher;
use crate::sites::SiteSpec;

/// A site ready to be checked: its settings, its client, and whether a check
/// of it runs now.
pub struct Site {
    /// The resolved settings.
    pub spec: SiteSpec,
    /// The client for its [`crate::sites::ClientKey`] (shared with other sites).
    pub client: reqwest::Client,
    running: AtomicBool,
}

impl Site {
    /// A site that is not running.
    pub fn new(spec: SiteSpec, client: reqwest::Client) -> Self {
        Site {
            spec,
            client,
            running: AtomicBool::new(false),
        }
    }
}

/// What every check task shares.
pub struct Shared {
    /// Where records go.
    pub publisher: Arc<Publisher>,
    /// `source.probe`.
    pub probe: String,
    /// `source.per_site_metrics`.
    pub per_site_metrics: bool,
    /// Checks finished and handed to the publisher.
    pub finished: AtomicU64,
    /// Ticks skipped, for any reason.
    pub skipped: AtomicU64,
}

/// Checks every site on its interval until `shutdown`; returns as soon as it
/// fires (checks already started go on).
pub async fn run(
    sites: Arc<[Site]>,
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
    shutdown: CancellationToken,
) {
    let origin = Instant::now();
    let mut heap: BinaryHeap<Reverse<(Instant, usize)>> = sites
        .iter()
        .enumerate()
        .map(|(i, s)| Reverse((origin + offset_in(s.spec.url.as_str(), s.spec.interval), i)))
        .collect();
    while let Some(&Reverse((due, _))) = heap.peek() {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep_until(due.into()) => {}
        }
        let now = Instant::now();
        while let Some(&Reverse((due, idx))) = heap.peek() {
            if due > now {
                break;
            }
            heap.pop();
            let site = &sites[idx];
            let (next, missed) = next_tick(due, site.spec.interval, now);
            heap.push(Reverse((next, idx)));
            if missed > 0 {
                skip(&shared, "behind", missed);
            }
            if site.running.swap(true, Ordering::AcqRel) {
                skip(&shared, "in_flight", 1);
                continue;
            }
            let Some(permit) = acquire(&permits, &shutdown).await else {
                site.running.store(false, Ordering::Release);
                return;
            };
            spawn_check(Arc::clone(&sites), idx, Arc::clone(&shared), permit, due);
        }
    }
    // No sites at all: nothing to do but wait.
    shutdown.cancelled().await;
}

/// Checks every site once, as fast as `concurrency` allows; returns when the
/// last check has started (or at `shutdown`).
pub async fn run_once(
    sites: Arc<[Site]>,
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
    shutdown: CancellationToken,
) {
    let planned = Instant::now();
    for idx in 0..sites.len() {
        sites[idx].running.store(true, Ordering::Release);
        let Some(permit) = acquire(&permits, &shutdown).await else {
            sites[idx].running.store(false, Ordering::Release);
            return;
        };
        spawn_check(
            Arc::clone(&sites),
            idx,
            Arc::clone(&shared),
            permit,
            planned,
        );
    }
}

/// The tick after `due` that is still ahead of `now`, and how many ticks in
/// between were missed.
pub fn next_tick(due: Instant, interval: Duration, now: Instant) -> (Instant, u64) {
    let next = due + interval;
    if next > now {
        return (next, 0);
    }
    let behind = now.duration_since(due).as_nanos();
    let missed = (behind / interval.as_nanos().max(1)) as u64;
    let next = due + interval * u32::try_from(missed + 1).unwrap_or(u32::MAX);
    (next, missed)
}

fn skip(shared: &Shared, reason: &'static str, n: u64) {
    shared.skipped.fetch_add(n, Ordering::Relaxed);
    metrics::skipped(reason, n);
    tracing::debug!(reason, n, "skipped ticks");
}

async fn acquire(
    permits: &Arc<Semaphore>,
    shutdown: &CancellationToken,
) -> Option<OwnedSemaphorePermit> {
    tokio::select! {
        biased;
        _ = shutdown.cancelled() => None,
        p = Arc::clone(permits).acquire_owned() => p.ok(),
    }
}

fn spawn_check(
    sites: Arc<[Site]>,
    idx: usize,
    shared: Arc<Shared>,
    permit: OwnedSemaphorePermit,
    planned: Instant,
) {
    tokio::spawn(async move {
        let site = &sites[idx];
        metrics::lateness(Instant::now().saturating_duration_since(planned));
        metrics::in_flight(1.0);
        let record = check::check(&site.spec, &site.client, &shared.probe).await;
        metrics::in_flight(-1.0);
        metrics::check_finished(&record, shared.per_site_metrics);
        let timestamp_ms = (record.checked_at * 1000.0) as i64;
        shared
            .publisher
            .send(&record.url, record.to_json(), timestamp_ms)
            .await;
        shared.finished.fetch_add(1, Ordering::Relaxed);
        site.running.store(false, Ordering::Release);
        drop(permit);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_tick_on_time_and_behind() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        assert_eq!(next_tick(t0, s, t0), (t0 + s, 0));
        assert_eq!(
            next_tick(t0, s, t0 + Duration::from_millis(999)),
            (t0 + s, 0)
        );
        // 2.5 intervals late: the ticks at +1 s and +2 s are missed, the next is +3 s.
        assert_eq!(
            next_tick(t0, s, t0 + Duration::from_millis(2500)),
            (t0 + 3 * s, 2)
        );
        assert_eq!(next_tick(t0, s, t0 + s), (t0 + 2 * s, 1));
    }
}
