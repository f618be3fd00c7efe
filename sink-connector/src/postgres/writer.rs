//! The PostgreSQL connections that write batches: `[sink] writers` of them,
//! each a [`Writer`] with its own connection, sharing the read-only [`Shared`].
//!
//! [`crate::pipeline`] splits every batch with [`crate::batch::split_by_partition`] and has
//! each writer write its part at the same time, so PostgreSQL runs up to
//! `writers` batch transactions on as many backends (cores). Each part is
//! an ordinary batch transaction of [`crate::postgres::write`]:
//!
//! - a partition is in exactly one part, so two writers never lock the same
//!   offsets row, and each part skips its own already-written records;
//! - a url in two parts (only when producers did not key by url) is upserted
//!   by both, each in url order, so the lock order is the same and they only
//!   wait on each other; a deadlock or serialization failure is retried like
//!   any failed write.
//!
//! Writer 0 is persistent: it retries its part with backoff on a fresh
//! connection until it commits. Another writer whose attempt fails hands its
//! part back, and writer 0 writes it after its own, so one working
//! connection is enough. PostgreSQL counts as ready while writer 0 is
//! connected and its last write succeeded (the others' failures only cost
//! parallelism). Each writer keeps the [`Search`] for refused records of the
//! part in hand across its attempts.
//!
//! Every attempt to connect or write is bounded by `write_timeout` (and, after
//! SIGTERM, by what is left of `shutdown_timeout`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use connector_common::retry::Backoff;

use crate::batch::{Msg, Outcome};
use crate::error::SinkError;
use crate::metrics as m;
use crate::postgres::error::{db_message, is_connection_error};
use crate::postgres::refuse::{write_batch, Search};
use crate::postgres::shared::{open, Shared};
use crate::postgres::sql::Conn;
use crate::postgres::status;
use crate::postgres::sweep;

/// Backoff between failed attempts: 100 ms doubling to 10 s, with jitter.
fn backoff() -> Backoff {
    Backoff::new(Duration::from_millis(100), Duration::from_secs(10))
}

/// What became of one part of a batch.
#[derive(Debug)]
pub enum Written {
    /// Committed.
    Done(Outcome),
    /// Left unwritten because `shutdown_timeout` passed (it is redelivered).
    Unwritten,
    /// A non-persistent writer failed once and handed the part back.
    GaveUp,
}

/// One PostgreSQL connection writing its part of each batch.
#[derive(Debug)]
pub struct Writer {
    shared: Arc<Shared>,
    /// Its number, from 0: its share of partitions; writer 0 alone reports
    /// to readiness.
    index: usize,
    conn: Option<Conn>,
    /// What the search for refused records learnt about the part in hand.
    search: Search,
    /// When writer 0 last made partitions ahead and dropped expired ones.
    maintained: Option<Instant>,
    /// When writer 0 last swept the site status.
    swept: Option<Instant>,
    /// When writer 0 last refreshed the per-site state gauge.
    gauged: Option<Instant>,
    /// What the sweeps have done with the ad-hoc windows.
    cursor: sweep::SweepCursor,
}

/// How often writer 0 sweeps the site status.
pub const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// How often writer 0 makes partitions ahead and applies retention.
const MAINTAIN_EVERY: Duration = Duration::from_secs(600);

/// The fewest records a part that outlasted `write_timeout` is cut down to
/// ([`Writer::write_until_done`]).
pub const MIN_PIECE: usize = 100;

/// Why a write attempt failed.
struct Failed {
    /// What went wrong, for the log and readiness.
    message: String,
    /// It ran out of `write_timeout`: a smaller piece may get through.
    timed_out: bool,
}

impl Writer {
    /// Writer number `index` (no I/O yet).
    pub fn new(shared: Arc<Shared>, index: usize) -> Self {
        Self {
            shared,
            index,
            conn: None,
            search: Search::default(),
            maintained: None,
            swept: None,
            gauged: None,
            cursor: sweep::SweepCursor::default(),
        }
    }

    /// Reports PostgreSQL fine (`None`) or not to readiness — writer 0
    /// only: readiness follows the one writer that must work.
    fn report(&self, problem: Option<String>) {
        if self.index == 0 {
            self.shared.readiness.set_postgres(problem);
        }
    }

    fn problem(&self, e: &str) -> String {
        format!("PostgreSQL at {}: {e}", self.shared.target.describe())
    }

    /// One bounded connect attempt. `Ok(Err(message))` is worth retrying.
    pub async fn connect(&mut self) -> Result<Result<(), String>, SinkError> {
        let shared = &*self.shared;
        let limit = shared.budget.limit(shared.cfg.write_timeout);
        let ended = shared.budget.clone().ended();
        let attempt = open(shared, shared.started.load(Ordering::Acquire));
        let result = tokio::select! {
            r = tokio::time::timeout(limit, attempt) => match r {
                Ok(r) => r?,
                Err(_) => Err(format!("connecting and migrating took longer than {} (write_timeout)", humantime::format_duration(limit))),
            },
            () = ended => Err("shutdown_timeout passed while connecting".to_owned()),
        };
        match result {
            Ok(conn) => {
                self.conn = Some(conn);
                shared.started.store(true, Ordering::Release);
                tracing::info!(target = %shared.target.describe(), writer = self.index, "connected to PostgreSQL");
                Ok(Ok(()))
            }
            Err(m) => Ok(Err(m)),
        }
    }

    /// Connects at start, retrying until it works or shutdown. `false` on shutdown.
    pub async fn connect_until_ready(&mut self) -> Result<bool, SinkError> {
        let mut backoff = backoff();
        let shutdown = self.shared.shutdown.clone();
        loop {
            let attempt = tokio::select! {
                r = self.connect() => r?,
                _ = shutdown.cancelled() => return Ok(false),
            };
            match attempt {
                Ok(()) => {
                    self.report(None);
                    return Ok(true);
                }
                Err(e) => {
                    metrics::counter!(m::DB_ERRORS).increment(1);
                    let msg = self.problem(&e);
                    tracing::warn!(writer = self.index, "{msg}; retrying");
                    self.report(Some(msg));
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(false),
                _ = tokio::time::sleep(backoff.next_wait()) => {}
            }
        }
    }

    /// Writes `batch`, retrying failures with backoff until it commits — or,
    /// unless `persistent`, giving up after the first failed attempt (the
    /// caller hands the part to a persistent writer). Each attempt is bounded
    /// by `write_timeout`; after an attempt that ran out of it, the rest of
    /// the part is written in pieces of half the records (each piece its own
    /// transaction, its partitions' positions advanced with it; down to
    /// [`MIN_PIECE`]), so a part too large for `write_timeout` still gets
    /// through.
    pub async fn write_until_done(
        &mut self,
        batch: &[Msg],
        persistent: bool,
    ) -> Result<Written, SinkError> {
        let mut backoff = backoff();
        let shared = Arc::clone(&self.shared);
        let (mut done, mut piece, mut outcome) = (0, batch.len(), Outcome::default());
        loop {
            if shared.budget.passed() {
                tracing::warn!(
                    writer = self.index,
                    records = batch.len() - done,
                    "shutdown_timeout passed; leaving the batch unwritten (it will be redelivered)"
                );
                return Ok(Written::Unwritten);
            }
            let part = &batch[done..batch.len().min(done + piece)];
            let attempt = if self.conn.is_some() {
                self.attempt(part).await
            } else {
                match self.connect().await? {
                    Ok(()) => continue,
                    Err(message) => Err(Failed {
                        message,
                        timed_out: false,
                    }),
                }
            };
            match attempt {
                Ok(o) => {
                    self.report(None);
                    outcome.merge(o);
                    done += part.len();
                    if done == batch.len() {
                        return Ok(Written::Done(outcome));
                    }
                    continue;
                }
                Err(e) if !persistent => {
                    // Not counted against readiness: another writer takes
                    // the part, so records still flow.
                    metrics::counter!(m::DB_ERRORS).increment(1);
                    tracing::warn!(
                        writer = self.index,
                        records = batch.len(),
                        "part not written: {}; writer 0 writes it instead",
                        self.problem(&e.message)
                    );
                    self.conn = None;
                    self.search.clear();
                    return Ok(Written::GaveUp);
                }
                Err(e) => {
                    if e.timed_out && part.len() > MIN_PIECE {
                        piece = (part.len() / 2).max(MIN_PIECE);
                        self.search.clear();
                    }
                    self.failed(&e.message, part.len());
                }
            }
            self.pause(backoff.next_wait()).await;
        }
    }

    /// One write of `batch` on the open connection, bounded by
    /// `write_timeout` and by what is left of `shutdown_timeout`.
    /// `Err` is worth retrying.
    async fn attempt(&mut self, batch: &[Msg]) -> Result<Outcome, Failed> {
        self.maintain().await;
        let shared = &*self.shared;
        let conn = self.conn.as_mut().expect("attempt needs a connection");
        let started = Instant::now();
        let limit = shared.budget.limit(shared.cfg.write_timeout);
        let ended = shared.budget.clone().ended();
        let failed = |message: String, timed_out| Err(Failed { message, timed_out });
        tokio::select! {
            r = tokio::time::timeout(limit, write_batch(conn, batch, &mut self.search)) => match r {
                Ok(Ok(o)) => {
                    metrics::histogram!(m::BATCH_WRITE_SECONDS)
                        .record(started.elapsed().as_secs_f64());
                    Ok(o)
                }
                Ok(Err(e)) => failed(e.to_string(), false),
                Err(_) => failed(
                    format!(
                        "the write of {} records took longer than {} (write_timeout); abandoning the connection; it is tried again in pieces of half as many records, down to {MIN_PIECE} (if this repeats, raise write_timeout or lower batch_size)",
                        batch.len(),
                        humantime::format_duration(limit)
                    ),
                    true,
                ),
            },
            () = ended => failed("shutdown_timeout passed during the write".to_owned(), false),
        }
    }

    /// Writer 0, at most every `MAINTAIN_EVERY` (10 minutes; before a batch, and between
    /// batches when the topic is idle): makes today's and
    /// tomorrow's partitions and drops those past retention. A failure (a
    /// lock not granted in time) is logged and tried again next time.
    pub async fn maintain(&mut self) {
        if self.index != 0
            || self
                .maintained
                .is_some_and(|t| t.elapsed() < MAINTAIN_EVERY)
        {
            return;
        }
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        self.maintained = Some(Instant::now());
        let limit = self.shared.budget.limit(self.shared.cfg.write_timeout);
        let layout = conn.layout.clone();
        let run = layout.maintain(&mut conn.client, std::time::SystemTime::now());
        match tokio::time::timeout(limit, run).await {
            Ok(Ok((made, dropped))) => {
                tracing::debug!(
                    made,
                    dropped,
                    "partitions made ahead and dropped past retention"
                );
                metrics::counter!(m::PARTITIONS_DROPPED).increment(dropped.max(0) as u64);
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %db_message(&e), "partition maintenance failed; trying again in 10 minutes")
            }
            Err(_) => tracing::warn!(
                "partition maintenance took longer than write_timeout; trying again in 10 minutes"
            ),
        }
    }

    /// Whether writer 0's sweep is due ([`SWEEP_EVERY`] since the last).
    pub fn sweep_due(&self) -> bool {
        self.index == 0
            && !self.shared.shutdown.is_cancelled()
            && self.swept.is_none_or(|t| t.elapsed() >= SWEEP_EVERY)
    }

    /// Writer 0, at most every [`SWEEP_EVERY`], between batches: the site
    /// status sweep (probes silent too long, maintenance windows begun or
    /// ended; see `sweep::sweep`) over the sites of `partitions` (those
    /// the sink has caught up on) but those of `pending` (urls of the
    /// records collected and not written yet: their records settle them),
    /// in its own short transaction, at the wall clock. A failure is logged
    /// and counted, and tried again next time; at shutdown the sweep is
    /// left (its connection dropped, its transaction rolled back).
    pub async fn sweep(&mut self, partitions: &[i32], pending: &[&str]) {
        if !self.sweep_due() {
            return;
        }
        if partitions.is_empty() {
            tracing::debug!("site status sweep skipped: no partition assigned and caught up");
            return;
        }
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        self.swept = Some(Instant::now());
        let now = SystemTime::now();
        let limit = self.shared.budget.limit(self.shared.cfg.write_timeout);
        let shutdown = self.shared.shutdown.clone();
        let swept = sweep::sweep(conn, now, &mut self.cursor, partitions, pending);
        let result = tokio::select! {
            r = tokio::time::timeout(limit, swept) => r,
            () = shutdown.cancelled() => {
                // The sweep can wait for a later run; stopping cannot.
                self.conn = None;
                tracing::info!("site status sweep left unfinished at shutdown (rolled back)");
                return;
            }
        };
        let problem = match result {
            Ok(Ok((made, complete))) => {
                if !complete {
                    // More sites due than one sweep takes: the next goes on at once.
                    self.swept = None;
                }
                for t in &made {
                    tracing::info!(site_id = t.site_id, id = %t.id(), from = %t.from, to = %t.to, reason = %t.reason, "site status changed (sweep)");
                }
                for (to, n) in status::count(&made) {
                    metrics::counter!(m::STATUS_TRANSITIONS, "to" => to).increment(n);
                }
                return;
            }
            Ok(Err(e)) => {
                if is_connection_error(&e) {
                    self.conn = None;
                }
                db_message(&e)
            }
            Err(_) => {
                self.conn = None;
                "took longer than write_timeout; abandoning the connection".to_owned()
            }
        };
        metrics::counter!(m::STATUS_SWEEP_ERRORS).increment(1);
        tracing::warn!(error = %problem, "site status sweep failed; trying again in {SWEEP_EVERY:?}");
    }

    /// Writer 0, with `[sink.status] per_site_gauge`, at most every
    /// [`SWEEP_EVERY`]: the `website_monitor_site_state` gauge (1 for its
    /// state, 0 for the others) of the sites whose newest record came from
    /// one of `partitions` (this sink's), replaced whole: a deleted site, or
    /// one another sink now holds, drops out. A failure is logged; the
    /// last values stay.
    pub async fn refresh_site_gauge(&mut self, partitions: &[i32]) {
        if self.index != 0 || self.gauged.is_some_and(|t| t.elapsed() < SWEEP_EVERY) {
            return;
        }
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let st = &conn.statements.status;
        if !st.policy.per_site_gauge() {
            return;
        }
        self.gauged = Some(Instant::now());
        let limit = self.shared.budget.limit(self.shared.cfg.write_timeout);
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&partitions];
        match tokio::time::timeout(limit, conn.client.query(&st.site_states, &params)).await {
            Ok(Ok(rows)) => {
                let sites: Vec<(String, String)> =
                    rows.iter().map(|r| (r.get(0), r.get(1))).collect();
                self.shared
                    .site_states
                    .set(sites.iter().map(|(url, state)| {
                        (
                            url.as_str(),
                            state.parse().unwrap_or(crate::status::State::Unknown),
                        )
                    }));
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %db_message(&e), "per-site state gauge not refreshed")
            }
            Err(_) => {
                tracing::warn!("per-site state gauge not refreshed: took longer than write_timeout")
            }
        }
    }

    /// A persistent writer's failed attempt: counted, logged, reported to
    /// readiness, and the connection dropped — the next attempt starts on a
    /// fresh one (the old one may be dead or half-way through a failed
    /// transaction).
    fn failed(&mut self, e: &str, records: usize) {
        metrics::counter!(m::DB_ERRORS).increment(1);
        metrics::counter!(m::DB_RETRIES).increment(1);
        let msg = self.problem(e);
        tracing::warn!(
            writer = self.index,
            records,
            "batch not written: {msg}; retrying"
        );
        self.report(Some(msg));
        self.conn = None;
    }

    /// Waits `wait` before the next attempt, less when `shutdown_timeout`
    /// ends first or shutdown begins during the wait.
    async fn pause(&self, wait: Duration) {
        let shared = &*self.shared;
        let ended = shared.budget.clone().ended();
        let shutting_down = shared.shutdown.is_cancelled();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            () = ended => {}
            _ = shared.shutdown.cancelled(), if !shutting_down => {}
        }
    }
}
