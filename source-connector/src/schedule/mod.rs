//! When each site is checked.
//!
//! Each check thread ([`crate::lanes`]) runs one scheduler task over its
//! share of the sites: a min-heap of `(next due instant, slot, generation)`
//! — 24 bytes a site, so 100,000 sites cost a few MiB and one timer per thread,
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
//!
//! A reload ([`crate::reload`]) reaches the scheduler as [`Command`]s
//! between two ticks: the sites live in slots (`slots`) that it can add,
//! change and empty; [`diff`] says which, by url. Unchanged sites keep their
//! slot, their place in the heap and their client; a removed site's check in
//! flight still delivers its record; an added site starts at the first tick
//! of its stable grid ([`diff::first_due`]); a changed site takes its new
//! settings at its next tick.
//!
//! Layout: `diff` (what a reload changes), `slots` (the sites, by slot),
//! `task` (one check task), this file (the scheduler).

mod changes;
mod command;
pub mod diff;
mod slots;
mod task;

use std::cmp::Reverse;
use std::collections::binary_heap::PeekMut;
use std::collections::{BinaryHeap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::check::Clients;
use crate::hash::offset_in;
use crate::metrics;
use crate::publish::Publisher;
use crate::sites::SiteSpec;
use slots::Slots;

pub use command::{Applied, Command};

/// A site ready to be checked: its settings, its client, and whether a check
/// of it runs now.
pub struct Site {
    /// The resolved settings.
    pub spec: SiteSpec,
    /// The client for its [`crate::sites::ClientKey`] (shared with other sites).
    pub client: reqwest::Client,
    /// Its per-url gauges (only with `per_site_metrics`).
    pub gauges: Option<metrics::SiteGauges>,
    running: AtomicBool,
}

impl Site {
    /// A site that is not running; with its own per-url gauges when
    /// `per_site_metrics`.
    pub fn new(spec: SiteSpec, client: reqwest::Client, per_site_metrics: bool) -> Self {
        let gauges = per_site_metrics.then(|| metrics::SiteGauges::new(spec.url.as_str()));
        Self::with_gauges(spec, client, gauges)
    }

    /// A site that is not running, showing its values in `gauges`.
    fn with_gauges(
        spec: SiteSpec,
        client: reqwest::Client,
        gauges: Option<metrics::SiteGauges>,
    ) -> Self {
        Site {
            spec,
            client,
            gauges,
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
    /// The per-url gauges on `/metrics` (`per_site_metrics`).
    pub series: Arc<metrics::SiteSeries>,
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

/// The due times of a lane's sites: `(due, slot, generation)`, earliest first.
type Heap = BinaryHeap<Reverse<(Instant, u32, u32)>>;

/// One lane's scheduler: its slots, their due times, its clients.
struct Scheduler {
    slots: Slots,
    heap: Heap,
    clients: Clients,
    /// When the lane started: every site's grid counts from here.
    origin: Instant,
}

/// Checks every site on its interval until `shutdown`, applying the reloads
/// `commands` bring; returns as soon as `shutdown` fires (checks already
/// started go on).
pub async fn run(
    sites: Vec<Arc<Site>>,
    clients: Clients,
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
    shutdown: CancellationToken,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let origin = Instant::now();
    let heap: Heap = sites
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let due = origin + offset_in(s.spec.url.as_str(), s.spec.interval);
            Reverse((due, u32::try_from(i).unwrap_or(u32::MAX), 0))
        })
        .collect();
    let mut s = Scheduler {
        slots: Slots::new(sites),
        heap,
        clients,
        origin,
    };
    let mut open = true;
    loop {
        let due = s.heap.peek().map(|Reverse((due, _, _))| *due);
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            command = commands.recv(), if open => {
                match command {
                    Some(c) => s.command(c, &shared),
                    None => open = false,
                }
                continue;
            }
            _ = tokio::time::sleep_until(due.unwrap_or(origin).into()), if due.is_some() => {}
        }
        let serve = open.then_some(&mut commands);
        if !s.run_due(&shared, &permits, &shutdown, serve).await {
            return;
        }
    }
}

impl Scheduler {
    /// Starts the checks that are due; `false` at `shutdown`. A reload's
    /// commands that come meanwhile are answered between two checks: a
    /// lane that is behind (or waits for `concurrency`) does not hold a
    /// reload back until it has caught up.
    async fn run_due(
        &mut self,
        shared: &Arc<Shared>,
        permits: &Arc<Semaphore>,
        shutdown: &CancellationToken,
        mut commands: Option<&mut mpsc::UnboundedReceiver<Command>>,
    ) -> bool {
        let now = Instant::now();
        loop {
            if let Some(commands) = commands.as_deref_mut() {
                while let Ok(c) = commands.try_recv() {
                    self.command(c, shared);
                }
            }
            let Some(mut top) = self.heap.peek_mut() else {
                break;
            };
            let Reverse((due, slot, generation)) = *top;
            if due > now {
                break;
            }
            let Some(site) = self.slots.get(slot, generation).cloned() else {
                // Removed by a reload.
                PeekMut::pop(top);
                continue;
            };
            let (next, missed) = next_tick(due, site.spec.interval, now);
            // Replace the top in place: one sift down instead of a pop and a push.
            *top = Reverse((next, slot, generation));
            drop(top);
            if missed > 0 {
                skip(shared, false, missed);
            }
            if self.slots.previous_running(slot) || site.running.swap(true, Ordering::AcqRel) {
                skip(shared, true, 1);
                continue;
            }
            let Some(permit) = acquire(permits, shutdown).await else {
                site.running.store(false, Ordering::Release);
                return false;
            };
            task::spawn_check(site, Arc::clone(shared), permit, due);
        }
        true
    }

    /// Answers a reload's command.
    fn command(&mut self, command: Command, shared: &Shared) {
        match command {
            Command::Claim { wanted, reply } => {
                // The urls it runs, and those removed whose check still runs
                // (added again, they wait here for that check).
                self.slots.prune_retired();
                let here: HashSet<&str> = (self.slots.retired())
                    .chain(self.slots.iter().map(|(_, _, s)| s.spec.url.as_str()))
                    .collect();
                let mine = (0..wanted.len())
                    .filter(|&i| here.contains(wanted[i].url.as_str()))
                    .filter_map(|i| u32::try_from(i).ok())
                    .collect();
                let _ = reply.send(mine);
            }
            Command::Apply {
                wanted,
                mine,
                reply,
            } => {
                let applied = self.apply(&wanted, &mine, Instant::now(), shared);
                let _ = reply.send(applied);
            }
            Command::ClaimChanges { changes, reply } => {
                let _ = reply.send(self.claim_changes(&changes));
            }
            Command::ApplyChanges {
                changes,
                mine,
                reply,
            } => {
                let applied = self.apply_changes(&changes, &mine, Instant::now(), shared);
                let _ = reply.send(applied);
            }
        }
    }

    /// Runs exactly `mine` of `wanted` from `now` on; see [`Command::Apply`].
    fn apply(
        &mut self,
        wanted: &[SiteSpec],
        mine: &[u32],
        now: Instant,
        shared: &Shared,
    ) -> Applied {
        let plan = diff::plan(
            self.slots.iter().map(|(slot, _, s)| (slot, &s.spec)),
            mine.iter().map(|&i| (i as usize, &wanted[i as usize])),
        );
        self.carry_out(plan, wanted, now, shared)
    }

    /// Does what `plan` says, with the new settings in `wanted`.
    fn carry_out(
        &mut self,
        plan: diff::Plan,
        wanted: &[SiteSpec],
        now: Instant,
        shared: &Shared,
    ) -> Applied {
        let mut out = Applied {
            removed: plan.removed.len(),
            unchanged: plan.unchanged,
            ..Applied::default()
        };
        for slot in plan.removed {
            let gauges = self.slots.remove(slot).and_then(|s| s.gauges.clone());
            if let Some(gauges) = gauges {
                shared.series.remove(&gauges);
            }
        }
        for (slot, i) in plan.changed {
            let spec = &wanted[i];
            // Same url, same series: the new settings show in the old gauges.
            let Some(old) = self.slots.site(slot).map(Arc::clone) else {
                continue;
            };
            match self.site(spec, Some(old.gauges.clone()), shared) {
                Ok(site) => {
                    // The next tick stays, unless the new grid has one sooner
                    // (a shorter interval applies now, not a long tick later).
                    let next_old = self.grid(&old.spec, now);
                    let next_new = self.grid(spec, now);
                    let sooner = next_new < next_old;
                    let generation = self.slots.replace(slot, site, sooner);
                    if sooner {
                        self.heap.push(Reverse((next_new, slot, generation)));
                    }
                    out.changed += 1;
                }
                Err(e) => out.failed.push((spec.url.to_string(), e)),
            }
        }
        for i in plan.added {
            let spec = &wanted[i];
            match self.site(spec, None, shared) {
                Ok(site) => {
                    let due = self.grid(spec, now);
                    let (slot, generation) = self.slots.insert(site);
                    self.heap.push(Reverse((due, slot, generation)));
                    out.added += 1;
                }
                Err(e) => out.failed.push((spec.url.to_string(), e)),
            }
        }
        out.running = self.slots.count();
        out
    }

    /// The first tick at or after `now` of `spec`'s stable grid.
    fn grid(&self, spec: &SiteSpec, now: Instant) -> Instant {
        let offset = offset_in(spec.url.as_str(), spec.interval);
        diff::first_due(self.origin, offset, spec.interval, now)
    }

    /// A site for `spec`, with the lane's client for its settings, showing
    /// its values in `gauges` when given (else in its own).
    fn site(
        &mut self,
        spec: &SiteSpec,
        gauges: Option<Option<metrics::SiteGauges>>,
        shared: &Shared,
    ) -> Result<Arc<Site>, String> {
        let client = self.clients.get(&spec.client).map_err(|e| e.to_string())?;
        Ok(Arc::new(match gauges {
            Some(gauges) => Site::with_gauges(spec.clone(), client, gauges),
            None => Site::new(spec.clone(), client, shared.per_site_metrics),
        }))
    }
}

/// Checks every site once, as fast as `concurrency` allows; returns when the
/// last check has started (or at `shutdown`).
pub async fn run_once(
    sites: Vec<Arc<Site>>,
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
    shutdown: CancellationToken,
) {
    let planned = Instant::now();
    for site in sites {
        site.running.store(true, Ordering::Release);
        let Some(permit) = acquire(&permits, &shutdown).await else {
            site.running.store(false, Ordering::Release);
            return;
        };
        task::spawn_check(site, Arc::clone(&shared), permit, planned);
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

#[cfg(test)]
mod tests;
