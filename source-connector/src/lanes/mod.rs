//! The check threads ("lanes"): where the checks run.
//!
//! The sites are dealt round-robin over `threads` lanes (default: one per
//! CPU core). Each lane is an OS thread with its own single-threaded tokio
//! runtime, its own share of the sites and of `concurrency`, its own
//! scheduler ([`schedule::run`]) and its own HTTP clients; so a check, its
//! connection and the connection's background task stay on one thread from
//! start to end. On tokio's work-stealing runtime they hopped between cores:
//! on the 2-core dev machine a bare reqwest loop (64 tasks) did 1.2–1.7× the
//! requests per second on two single-threaded runtimes than on one
//! work-stealing runtime, at 0.6–0.8 of the CPU per request, and the source
//! itself gained 34–55 % checks/s (docs/benchmarks-history.md, "Session 4:
//! check threads").
//!
//! What the lanes share is thread-safe and cheap to share: the publisher, the
//! metric handles, the counters, the shutdown and abort tokens. A lane ends
//! when its scheduler has stopped (shutdown, or one round with `--once`) and
//! every check it started has handed its record over; [`Lanes::finished`]
//! waits for all of them.
//!
//! A reload reaches the running lanes through a [`Commander`]: each lane
//! claims the urls of the new list it runs now (they stay on that lane,
//! with their schedule and client), the new urls go to the lanes with the
//! fewest sites ([`place`]), and each lane applies its share
//! ([`schedule::Command`]). The number of lanes stays what it was at start.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::runtime::Runtime;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::check::{self, Clients, SetupError};
use crate::config::MAX_THREADS;
use crate::schedule::{self, Shared, Site};
use crate::sites::SiteSpec;

mod commander;

pub use commander::{place, Commander, LanesGone};

/// Lanes that cannot be started.
#[derive(Debug, thiserror::Error)]
pub enum LaneError {
    /// An HTTP client could not be built.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// The operating system refused a thread or a runtime.
    #[error(
        "cannot start the check threads: {0}; lower source.threads or raise the process limits"
    )]
    Thread(#[source] io::Error),
}

/// How many lanes to run and each one's share of `concurrency`: `threads`
/// lanes, but no more than `concurrency` or `sites` (at least one); the
/// shares add up to `concurrency` exactly and differ by at most one.
pub fn shares(threads: usize, concurrency: usize, sites: usize) -> Vec<usize> {
    let lanes = threads.min(concurrency).min(sites).max(1);
    (0..lanes)
        .map(|i| concurrency / lanes + usize::from(i < concurrency % lanes))
        .collect()
}

/// The number of CPU cores this process may use (1 when unknown), at most
/// [`MAX_THREADS`].
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(MAX_THREADS)
}

/// The shares for `source.threads` (`None`: [`default_threads`]); see
/// [`shares`].
fn plan(threads: Option<usize>, concurrency: usize, sites: usize) -> Vec<usize> {
    shares(threads.unwrap_or_else(default_threads), concurrency, sites)
}

/// How many check threads run for `source.threads` (`None`: the default),
/// given `concurrency` and the number of sites.
pub fn count(threads: Option<usize>, concurrency: usize, sites: usize) -> usize {
    plan(threads, concurrency, sites).len()
}

/// Running lanes.
pub struct Lanes {
    count: usize,
    /// One permit per lane that has ended.
    ended: Arc<Semaphore>,
    /// A lane's thread panicked.
    crashed: Arc<AtomicBool>,
    /// What tells the lanes' schedulers about a reload.
    commander: Commander,
}

/// When its lane's thread ends, even by a panic: adds the lane's permit to
/// `ended`; after a panic also marks the lanes crashed and cancels `stop`, so
/// the other lanes stop scheduling and the source stops with an error.
struct EndGuard {
    ended: Arc<Semaphore>,
    crashed: Arc<AtomicBool>,
    stop: CancellationToken,
}

impl Drop for EndGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            tracing::error!("a check thread panicked; the source stops (a bug: please report it with the log above)");
            self.crashed.store(true, Ordering::Release);
            self.stop.cancel();
        }
        self.ended.add_permits(1);
    }
}

/// A lane's runtime that may be dropped anywhere: a tokio runtime dropped
/// inside another runtime's task (a failed start) would panic, so it is shut
/// down in the background instead.
struct LaneRuntime(Option<Runtime>);

impl Drop for LaneRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// One lane, set up.
struct Lane {
    sites: Vec<Arc<Site>>,
    clients: Clients,
    runtime: LaneRuntime,
    /// Its share of `concurrency`.
    size: u32,
}

/// Lanes set up but not started: sites dealt, clients built, runtimes made.
pub struct Prepared {
    lanes: Vec<Lane>,
}

impl Prepared {
    /// Deals `specs` over the lanes for `threads` (`source.threads`; see
    /// [`shares`], counting at least `at_least` sites: sites from outside
    /// may come later) and builds each lane's HTTP
    /// clients and runtime; everything that can fail, before any thread runs.
    pub fn new(
        specs: Vec<SiteSpec>,
        threads: Option<usize>,
        concurrency: usize,
        per_site_metrics: bool,
        at_least: usize,
    ) -> Result<Self, LaneError> {
        let shares = plan(threads, concurrency, specs.len().max(at_least));
        // TLS's one-time work (the system's roots, seeding the random number
        // generator), once for every lane's clients and before any check.
        let tls = check::tls::TlsBase::load()?;
        let sites = deal(
            specs,
            shares.len(),
            |lane, spec| {
                let client = lane.get(&spec.client)?;
                Ok(Arc::new(Site::new(spec, client, per_site_metrics)))
            },
            || Clients::for_sites(&[], &tls),
        )?;
        let mut lanes = Vec::with_capacity(shares.len());
        for ((sites, clients), share) in sites.into_iter().zip(&shares) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(LaneError::Thread)?;
            lanes.push(Lane {
                sites,
                clients,
                runtime: LaneRuntime(Some(runtime)),
                // Validated to 1..=MAX_CONCURRENCY, so it fits.
                size: u32::try_from(*share).unwrap_or(u32::MAX),
            });
        }
        Ok(Prepared { lanes })
    }

    /// Starts each lane's thread, scheduling until `stop` (or checking every
    /// site once with `once`). The threads start scheduling only once all of
    /// them exist: if one cannot be started, the others end without having
    /// checked anything, and `stop` is cancelled.
    pub fn start(
        self,
        shared: &Arc<Shared>,
        once: bool,
        stop: &CancellationToken,
    ) -> Result<Lanes, LaneError> {
        let count = self.lanes.len();
        let ended = Arc::new(Semaphore::new(0));
        let crashed = Arc::new(AtomicBool::new(false));
        // One "go" per lane, sent once every thread exists; a thread whose
        // sender is dropped unsent ends without scheduling.
        let mut go = Vec::with_capacity(count);
        let mut commands = Vec::with_capacity(count);
        for (i, lane) in self.lanes.into_iter().enumerate() {
            let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
            go.push(go_tx);
            let (command_tx, command_rx) = mpsc::unbounded_channel();
            commands.push(command_tx);
            let (shared, lane_stop) = (Arc::clone(shared), stop.clone());
            let guard = EndGuard {
                ended: Arc::clone(&ended),
                crashed: Arc::clone(&crashed),
                stop: stop.clone(),
            };
            let spawned = std::thread::Builder::new()
                .name(format!("check-{i}"))
                .spawn(move || {
                    let _guard = guard;
                    let Lane {
                        sites,
                        clients,
                        runtime,
                        size,
                    } = lane;
                    // `None` only once dropped; here it is always there.
                    let (Some(rt), Ok(())) = (runtime.0.as_ref(), go_rx.recv()) else {
                        return;
                    };
                    rt.block_on(async move {
                        let permits = Arc::new(Semaphore::new(size as usize));
                        let all = Arc::clone(&permits);
                        if once {
                            schedule::run_once(sites, shared, all, lane_stop).await;
                        } else {
                            let commands = command_rx;
                            schedule::run(sites, clients, shared, all, lane_stop, commands).await;
                        }
                        // Every permit back: no check of this lane runs any more.
                        let _all = permits.acquire_many(size).await;
                    });
                });
            if let Err(e) = spawned {
                stop.cancel();
                // `go` is dropped unsent: the threads started end at once.
                return Err(LaneError::Thread(e));
            }
        }
        for g in go {
            // A thread that is gone already panicked; its guard reports it.
            let _ = g.send(());
        }
        Ok(Lanes {
            count,
            ended,
            crashed,
            commander: Commander { lanes: commands },
        })
    }
}

/// Deals `specs` round-robin over `lanes` lanes, each made into a site by
/// `make` with its lane's clients (from `clients`). The list is consumed from
/// its end and its memory given back as it shrinks, so the specs and the
/// sites made of them are not both held in full (a million sites at start).
fn deal<T>(
    mut specs: Vec<SiteSpec>,
    lanes: usize,
    mut make: impl FnMut(&mut Clients, SiteSpec) -> Result<T, SetupError>,
    clients: impl Fn() -> Result<Clients, SetupError>,
) -> Result<Vec<(Vec<T>, Clients)>, SetupError> {
    let per_lane = specs.len() / lanes + 1;
    let mut out = Vec::with_capacity(lanes);
    for _ in 0..lanes {
        out.push((Vec::with_capacity(per_lane), clients()?));
    }
    while let Some(spec) = specs.pop() {
        let (sites, clients) = &mut out[specs.len() % lanes];
        sites.push(make(clients, spec)?);
        if specs.capacity() > 4096 && specs.len() < specs.capacity() / 4 {
            specs.shrink_to_fit();
        }
    }
    for (sites, _) in &mut out {
        sites.reverse();
    }
    Ok(out)
}

impl Lanes {
    /// How many lanes run.
    pub fn count(&self) -> usize {
        self.count
    }

    /// What tells the lanes about a reload (its commands go nowhere with
    /// `--once`).
    pub fn commander(&self) -> Commander {
        self.commander.clone()
    }

    /// Whether a lane's thread panicked (its sites are no longer checked).
    pub fn crashed(&self) -> bool {
        self.crashed.load(Ordering::Acquire)
    }

    /// Waits until every lane has ended: its scheduler stopped and each check
    /// it started handed its record over. Cancel-safe; may be called again.
    pub async fn finished(&self) {
        let all = u32::try_from(self.count).unwrap_or(u32::MAX);
        if let Ok(p) = self.ended.acquire_many(all).await {
            // Leave them for the next caller.
            drop(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lane_that_panics_ends_marks_the_lanes_crashed_and_stops_the_others() {
        let (ended, crashed, stop) = (
            Arc::new(Semaphore::new(0)),
            Arc::new(AtomicBool::new(false)),
            CancellationToken::new(),
        );
        let guard = |ended: &Arc<Semaphore>| EndGuard {
            ended: Arc::clone(ended),
            crashed: Arc::clone(&crashed),
            stop: stop.clone(),
        };
        // A lane that ends normally: ended, nothing else.
        std::thread::spawn({
            let g = guard(&ended);
            move || drop(g)
        })
        .join()
        .unwrap();
        assert_eq!(ended.available_permits(), 1);
        assert!(!crashed.load(Ordering::Acquire) && !stop.is_cancelled());
        // A lane that panics: ended too, and the crash is seen.
        let panicked = std::thread::spawn({
            let g = guard(&ended);
            move || {
                let _g = g;
                panic!("a bug in a scheduler");
            }
        })
        .join();
        assert!(panicked.is_err());
        assert_eq!(ended.available_permits(), 2);
        assert!(crashed.load(Ordering::Acquire) && stop.is_cancelled());
    }

    #[test]
    fn new_sites_go_to_the_lanes_with_the_fewest_and_claims_stay() {
        // Lane 0 runs sites 0 and 3, lane 1 site 2; 1, 4 and 5 are new.
        let placed = place(vec![vec![0, 3], vec![2]], &[0, 0], 6);
        assert_eq!(placed, vec![vec![0, 3, 4], vec![2, 1, 5]]);
        // A site claimed twice stays with the first lane.
        assert_eq!(
            place(vec![vec![0], vec![0]], &[0, 0], 1),
            vec![vec![0], vec![]]
        );
        assert!(place(vec![], &[], 3).is_empty());
        // Counting the sites the lanes run besides: lane 1 has fewer.
        assert_eq!(
            place(vec![vec![], vec![]], &[5, 3], 3),
            vec![vec![2], vec![0, 1]]
        );
    }

    #[test]
    fn shares_split_concurrency_exactly_over_at_most_threads_lanes() {
        assert_eq!(shares(2, 64, 8_000), vec![32, 32]);
        assert_eq!(shares(3, 64, 8_000), vec![22, 21, 21]);
        assert_eq!(shares(4, 1024, 100_000).iter().sum::<usize>(), 1024);
        // No lane without a check slot, none without a site, at least one.
        assert_eq!(shares(8, 3, 100), vec![1, 1, 1]);
        assert_eq!(shares(8, 1024, 2), vec![512, 512]);
        assert_eq!(shares(8, 1024, 0), vec![1024]);
        assert_eq!(shares(1, 1, 1), vec![1]);
    }
}
