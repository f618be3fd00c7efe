//! One check task: checks its site, records metrics, hands the record over,
//! and only then frees the site and the permit ([`InFlight`], a drop guard,
//! so a task that panics frees them too).

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use futures::FutureExt;
use tokio::sync::OwnedSemaphorePermit;

use super::{Shared, Site};
use crate::check;
use crate::record::{CheckError, ErrorKind, Record};
use crate::sites::SiteSpec;

/// Spawns the check of `site` planned for `planned`, holding `permit` until
/// its record is handed over. The task holds the site: a site removed by a
/// reload meanwhile still finishes its check and delivers its record.
pub(super) fn spawn_check(
    site: Arc<Site>,
    shared: Arc<Shared>,
    permit: OwnedSemaphorePermit,
    planned: Instant,
) {
    shared.started.fetch_add(1, Ordering::Relaxed);
    tokio::spawn(async move {
        let mut guard = InFlight::start(Arc::clone(&site), permit, shared.in_flight.clone());
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
            .check_finished(&record, site.gauges.as_ref().map(|g| (g, &*shared.series)));
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
pub(super) struct InFlight {
    site: Arc<Site>,
    counted: bool,
    gauge: ::metrics::Gauge,
    _permit: OwnedSemaphorePermit,
}

impl InFlight {
    /// Counts the check in the in-flight gauge.
    pub(super) fn start(
        site: Arc<Site>,
        permit: OwnedSemaphorePermit,
        gauge: ::metrics::Gauge,
    ) -> Self {
        gauge.increment(1.0);
        InFlight {
            site,
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
        self.site.running.store(false, Ordering::Release);
    }
}

/// Runs `check`; if it panics, returns a record of kind `http` for `site`
/// instead (and logs the panic as an error), so that the check still yields
/// its one record.
pub(super) async fn unless_panic(
    check: impl Future<Output = Record>,
    site: &SiteSpec,
    probe: &str,
) -> Record {
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
                site.interval.as_secs_f64(),
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
