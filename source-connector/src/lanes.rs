//! The check threads ("lanes"): where the checks run.
//!
//! The sites are dealt round-robin over `threads` lanes (default: one per
//! CPU core). Each lane is an OS thread with its own single-threaded tokio
//! runtime, its own share of the sites and of `concurrency`, its own
//! scheduler ([`schedule::run`]) and its own HTTP clients; so a check, its
//! connection and the connection's background task stay on one thread from
//! start to end. On tokio's work-stealing runtime they hopped between cores:
//! a bare reqwest loop did 1.3–1.6× the requests per second on two
//! single-threaded runtimes than on one work-stealing runtime, at 0.6–0.8 of
//! the CPU per request (docs/benchmarks.md, session 4).
//!
//! What the lanes share is thread-safe and cheap to share: the publisher, the
//! metric handles, the counters, the shutdown and abort tokens. A lane ends
//! when its scheduler has stopped (shutdown, or one round with `--once`) and
//! every check it started has handed its record over; [`Lanes::finished`]
//! waits for all of them.

use std::io;
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::check::{self, SetupError};
use crate::schedule::{self, Shared, Site};
use crate::sites::SiteSpec;

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

/// The number of CPU cores this process may use (1 when unknown).
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Running lanes.
pub struct Lanes {
    /// Each lane's `concurrency` permits and how many it has.
    permits: Vec<(Arc<Semaphore>, u32)>,
    /// One permit per lane that has ended.
    ended: Arc<Semaphore>,
}

/// Adds its lane's permit to `ended` when the lane's thread ends, even by a
/// panic.
struct EndGuard(Arc<Semaphore>);

impl Drop for EndGuard {
    fn drop(&mut self) {
        self.0.add_permits(1);
    }
}

/// Lanes set up but not started: sites dealt, clients built, runtimes made.
pub struct Prepared {
    lanes: Vec<(Arc<[Site]>, tokio::runtime::Runtime, u32)>,
}

impl Prepared {
    /// Deals `specs` over the lanes ([`shares`]) and builds each lane's HTTP
    /// clients and runtime; everything that can fail, before any thread runs.
    pub fn new(
        specs: Vec<SiteSpec>,
        threads: usize,
        concurrency: usize,
    ) -> Result<Self, LaneError> {
        let shares = shares(threads, concurrency, specs.len());
        let mut dealt: Vec<Vec<SiteSpec>> = shares
            .iter()
            .map(|_| Vec::with_capacity(specs.len() / shares.len() + 1))
            .collect();
        for (i, spec) in specs.into_iter().enumerate() {
            dealt[i % shares.len()].push(spec);
        }
        let mut lanes = Vec::with_capacity(shares.len());
        for (specs, share) in dealt.into_iter().zip(&shares) {
            let clients = check::build_clients(&specs)?;
            let sites: Arc<[Site]> = specs
                .into_iter()
                .map(|spec| {
                    let client = clients[&spec.client].clone();
                    Site::new(spec, client)
                })
                .collect();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(LaneError::Thread)?;
            // Validated to 1..=MAX_CONCURRENCY, so it fits.
            let size = u32::try_from(*share).unwrap_or(u32::MAX);
            lanes.push((sites, runtime, size));
        }
        Ok(Prepared { lanes })
    }

    /// How many lanes will run.
    pub fn count(&self) -> usize {
        self.lanes.len()
    }

    /// Starts each lane's thread, scheduling until `shutdown` (or checking
    /// every site once with `once`). If a thread cannot be started, the lanes
    /// already started stop with `shutdown`.
    pub fn start(
        self,
        shared: &Arc<Shared>,
        once: bool,
        shutdown: &CancellationToken,
    ) -> Result<Lanes, LaneError> {
        let ended = Arc::new(Semaphore::new(0));
        let mut permits = Vec::with_capacity(self.lanes.len());
        for (i, (sites, runtime, size)) in self.lanes.into_iter().enumerate() {
            let lane_permits = Arc::new(Semaphore::new(size as usize));
            permits.push((Arc::clone(&lane_permits), size));
            let (shared, shutdown) = (Arc::clone(shared), shutdown.clone());
            let guard = EndGuard(Arc::clone(&ended));
            std::thread::Builder::new()
                .name(format!("check-{i}"))
                .spawn(move || {
                    let _guard = guard;
                    runtime.block_on(async move {
                        let all = Arc::clone(&lane_permits);
                        if once {
                            schedule::run_once(sites, shared, all, shutdown).await;
                        } else {
                            schedule::run(sites, shared, all, shutdown).await;
                        }
                        // Every permit back: no check of this lane runs any more.
                        let _all = lane_permits.acquire_many(size).await;
                    });
                })
                .map_err(LaneError::Thread)?;
        }
        Ok(Lanes { permits, ended })
    }
}

impl Lanes {
    /// How many lanes run.
    pub fn count(&self) -> usize {
        self.permits.len()
    }

    /// How many checks run now, across the lanes.
    pub fn running(&self) -> usize {
        self.permits
            .iter()
            .map(|(p, size)| (*size as usize).saturating_sub(p.available_permits()))
            .sum()
    }

    /// Waits until every lane has ended: its scheduler stopped and each check
    /// it started handed its record over. Cancel-safe; may be called again.
    pub async fn finished(&self) {
        let all = u32::try_from(self.permits.len()).unwrap_or(u32::MAX);
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
