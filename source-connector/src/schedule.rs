//! When each site is checked.
//!
//! Each check thread ([`crate::lanes`]) runs one scheduler task over its
//! share of the sites: a min-heap of `(next due instant, site index)` — 24
//! bytes a site, so 100,000 sites cost a few MiB and one timer per thread,
//! not 100,000 sleeping tasks. Each site runs on its own interval; its first
//! check is offset by a stable hash of its url across the interval
//! ([`crate::hash::offset_in`]), so sites do not all fire at once.
//!
//! When a site is due:
//! - if its previous check still runs, the tick is skipped and counted
//!   (`reason="in_flight"`): never two checks of one site at once;
//! - if the scheduler fell more than an interval behind (a paused process, an
//!   overloaded machine), the missed ticks are skipped and counted
//!   (`reason="behind"`) instead of being run in a burst;
//! - otherwise the scheduler takes a permit of its thread's share of
//!   `concurrency` (waiting while that share is used up) and spawns the
//!   check; so at most `concurrency` check tasks exist at any time, across
//!   the threads. Lateness (actual start
//!   minus planned start) is recorded when the check starts.
//!
//! A check task checks, records metrics, hands the record to the publisher,
//! and only then frees the site and the permit. The caller knows every check
//! is done once it holds all the permits again. Freeing is a drop guard, so a
//! check task that panics still frees its site (which would otherwise never be
//! checked again), its permit and the in-flight gauge; a panic inside the
//! check itself is caught and reported as a record of kind `http` (and logged
//! as an error): every started check yields one record. On shutdown
//! [`Shared::abort`] cuts the checks still running short (`shutdown_timeout`).

use std::any::Any;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::FutureExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::check;
use crate::hash::offset_in;
use crate::metrics;
use crate::publish::Publisher;
use crate::record::{CheckError, ErrorKind, Record};
use crate::sites::SiteSpec;

/// A site ready to be checked: its settings, its client, and whether a check
/// of it runs now.
pub struct Site {
    /// The resolved settings.
    pub spec: SiteSpec,
    /// The client for its [`crate::sites::ClientKey`] (shared with other sites).
    pub client: reqwest::Client,
    /// Its per-url gauges (used only with `per_site_metrics`).
    pub gauges: metrics::SiteGauges,
    running: AtomicBool,
}

impl Site {
    /// A site that is not running.
    pub fn new(spec: SiteSpec, client: reqwest::Client) -> Self {
        Site {
            spec,
            client,
            gauges: metrics::SiteGauges::default(),
            running: AtomicBool::new(false),
        }
    }

    /// Whether a check of this site runs now.
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::Acquire)
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
    /// The metric handles of a check, registered once.
    pub metrics: metrics::CheckHandles,
    /// The [`metrics::CHECKS_IN_FLIGHT`] gauge, registered once.
    pub in_flight: ::metrics::Gauge,
    /// Checks started.
    pub started: AtomicU64,
    /// Checks finished and handed to the publisher.
    pub finished: AtomicU64,
    /// Ticks skipped, for any reason.
    pub skipped: AtomicU64,
    /// Fired when `shutdown_timeout` has passed: the checks still running stop
    /// and report `timeout` "cancelled at shutdown".
    pub abort: CancellationToken,
}

impl Shared {
    /// Checks started and not yet handed over (or lost to a panic).
    pub fn running(&self) -> u64 {
        let finished = self.finished.load(Ordering::Relaxed);
        self.started
            .load(Ordering::Relaxed)
            .saturating_sub(finished)
    }
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
        while let Some(mut top) = heap.peek_mut() {
            let Reverse((due, idx)) = *top;
            if due > now {
                break;
            }
            let site = &sites[idx];
            let (next, missed) = next_tick(due, site.spec.interval, now);
            // Replace the top in place: one sift down instead of a pop and a push.
            *top = Reverse((next, idx));
            drop(top);
            if missed > 0 {
                skip(&shared, false, missed);
            }
            if site.running.swap(true, Ordering::AcqRel) {
                skip(&shared, true, 1);
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

fn skip(shared: &Shared, in_flight: bool, n: u64) {
    shared.skipped.fetch_add(n, Ordering::Relaxed);
    shared.metrics.skipped(in_flight, n);
    let reason = if in_flight { "in_flight" } else { "behind" };
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
    shared.started.fetch_add(1, Ordering::Relaxed);
    tokio::spawn(async move {
        let mut guard = InFlight::start(Arc::clone(&sites), idx, permit, shared.in_flight.clone());
        let site = &sites[idx];
        shared
            .metrics
            .lateness(Instant::now().saturating_duration_since(planned));
        // Boxed: the check's state (reqwest's futures included) is large, and
        // a spawned future is copied by value through tokio's spawn path;
        // boxed, only a pointer is (memmove was ~10 % of a keep-alive profile).
        let record = unless_panic(
            Box::pin(check::check_until(
                &site.spec,
                &site.client,
                &shared.probe,
                &shared.abort,
            )),
            &site.spec,
            &shared.probe,
        )
        .await;
        guard.check_done();
        shared
            .metrics
            .check_finished(&record, shared.per_site_metrics.then_some(&site.gauges));
        let timestamp_ms = (record.checked_at * 1000.0) as i64;
        shared
            .publisher
            .send(&record.url, record.to_json(), timestamp_ms)
            .await;
        shared.finished.fetch_add(1, Ordering::Relaxed);
        drop(guard);
    });
}

/// A check in flight: on drop — normal end or panic — frees its site, moves
/// the in-flight gauge back (unless [`InFlight::check_done`] did) and frees
/// its `concurrency` permit, in that order.
struct InFlight {
    sites: Arc<[Site]>,
    idx: usize,
    counted: bool,
    gauge: ::metrics::Gauge,
    _permit: OwnedSemaphorePermit,
}

impl InFlight {
    fn start(
        sites: Arc<[Site]>,
        idx: usize,
        permit: OwnedSemaphorePermit,
        gauge: ::metrics::Gauge,
    ) -> Self {
        gauge.increment(1.0);
        InFlight {
            sites,
            idx,
            counted: true,
            gauge,
            _permit: permit,
        }
    }

    /// The check itself is over (its record is being handed over).
    fn check_done(&mut self) {
        if std::mem::take(&mut self.counted) {
            self.gauge.decrement(1.0);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.check_done();
        self.sites[self.idx].running.store(false, Ordering::Release);
    }
}

/// Runs `check`; if it panics, returns a record of kind `http` for `site`
/// instead (and logs the panic as an error), so that the check still yields
/// its one record.
async fn unless_panic(check: impl Future<Output = Record>, site: &SiteSpec, probe: &str) -> Record {
    let checked_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let start = Instant::now();
    match AssertUnwindSafe(check).catch_unwind().await {
        Ok(record) => record,
        Err(panic) => {
            let what = panic_message(panic.as_ref());
            tracing::error!(url = %site.url, panic = %what, "a check panicked; recorded as an error of kind http");
            Record::failure(
                site.url.to_string(),
                checked_at,
                start.elapsed().as_secs_f64(),
                CheckError {
                    kind: ErrorKind::Http,
                    message: format!("the check failed unexpectedly (internal error: {what}); this is a bug of the checker, not of the site"),
                },
                probe.to_owned(),
            )
        }
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&'static str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sites(n: usize) -> Arc<[Site]> {
        let key = crate::sites::ClientKey {
            keep_alive: false,
            tls_ca: None,
            tls_verify: true,
        };
        let base = crate::check::tls::TlsBase::load().unwrap();
        let client = crate::check::build_client(&key, &base).unwrap();
        (0..n)
            .map(|i| {
                let spec = SiteSpec {
                    url: format!("http://s{i}.example/").parse().unwrap(),
                    interval: Duration::from_secs(1),
                    timeout: Duration::from_secs(1),
                    method: reqwest::Method::GET,
                    headers: Arc::default(),
                    body: None,
                    regex: None,
                    expected_status: None,
                    follow_redirects: true,
                    max_redirects: 5,
                    max_body_bytes: 1024,
                    client: key.clone(),
                };
                Site::new(spec, client.clone())
            })
            .collect()
    }

    #[tokio::test]
    async fn a_panicking_check_task_frees_its_site_and_its_permit() {
        let sites = sites(2);
        let permits = Arc::new(Semaphore::new(2));
        sites[1].running.store(true, Ordering::Release);
        let permit = Arc::clone(&permits).acquire_owned().await.unwrap();
        let task = tokio::spawn({
            let sites = Arc::clone(&sites);
            async move {
                let _guard = InFlight::start(sites, 1, permit, ::metrics::Gauge::noop());
                panic!("a bug in a check");
            }
        });
        assert!(task.await.unwrap_err().is_panic());
        assert!(!sites[1].is_running(), "the site is checked again");
        assert_eq!(permits.available_permits(), 2, "the permit is back");
    }

    #[tokio::test]
    async fn a_panic_in_a_check_is_a_record_of_kind_http() {
        let sites = sites(1);
        let spec = &sites[0].spec;
        let r = unless_panic(async { panic!("boom at {}", 42) }, spec, "p").await;
        let e = r.error.as_ref().unwrap();
        assert_eq!(e.kind, ErrorKind::Http);
        assert!(e.message.contains("boom at 42"), "{e:?}");
        assert_eq!(
            (r.url.as_str(), r.probe.as_str(), r.ok),
            ("http://s0.example/", "p", false)
        );
        let fine = Record::failure(r.url.clone(), 1.0, 0.0, e.clone(), "p".into());
        let same = unless_panic(async { fine.clone() }, spec, "p").await;
        assert_eq!(same, fine);
    }

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
