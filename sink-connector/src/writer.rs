//! The PostgreSQL connections that write batches: `[sink] writers` of them,
//! each a [`Writer`] with its own connection, sharing the read-only [`Shared`].
//!
//! [`crate::consume`] splits every batch with [`split_by_partition`] and has
//! each writer write its part at the same time, so PostgreSQL runs up to
//! `writers` batch transactions on as many backends (cores). Each part is
//! an ordinary batch transaction of [`crate::write`]:
//!
//! - a partition is in exactly one part, so two writers never lock the same
//!   offsets row, and each part skips its own already-written records;
//! - a url in two parts (only when producers did not key by url) is upserted
//!   by both, each in url order, so the lock order is the same and they only
//!   wait on each other; a deadlock or serialization failure would still be
//!   retried like any failed write (by that writer, for its part only).
//!
//! A writer whose connection fails retries its own part with backoff on a
//! fresh connection; the others are not disturbed. PostgreSQL counts as ready
//! only while every writer is connected and its last write succeeded.
//!
//! Every attempt to connect or write is bounded by `write_timeout` (and, after
//! SIGTERM, by what is left of `shutdown_timeout`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio_postgres_rustls::MakeRustlsConnect;
use tokio_util::sync::CancellationToken;

use crate::config::SinkConfig;
use crate::db::PgTarget;
use crate::metrics as m;
use crate::metrics::Readiness;
use crate::migrate::{migrate, Tables};
use crate::refuse::{write_batch, Search};
use crate::write::{db_message, Conn, Msg, Outcome, Sql};
use crate::SinkError;

/// Backoff between failed attempts: 100 ms doubling to 10 s.
#[derive(Debug)]
struct Backoff(Duration);

impl Backoff {
    const MIN: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(10);
    fn new() -> Self {
        Self(Self::MIN)
    }
    fn next(&mut self) -> Duration {
        let d = self.0;
        self.0 = (self.0 * 2).min(Self::MAX);
        d
    }
}

/// What is left of `shutdown_timeout` once shutdown has begun (one budget
/// for all writers).
#[derive(Debug, Clone)]
struct Budget {
    shutdown: CancellationToken,
    timeout: Duration,
    at: Arc<OnceLock<tokio::time::Instant>>,
}

impl Budget {
    /// When the budget ends, once shutdown has fired. The clock starts at the
    /// signal ([`Budget::start_clock_on_shutdown`]); failing that, the first
    /// time it is asked.
    fn end(&self) -> Option<tokio::time::Instant> {
        self.shutdown.is_cancelled().then(|| {
            *self
                .at
                .get_or_init(|| tokio::time::Instant::now() + self.timeout)
        })
    }

    fn passed(&self) -> bool {
        self.end()
            .is_some_and(|at| tokio::time::Instant::now() >= at)
    }

    /// `limit`, cut to what is left of the budget after shutdown.
    fn limit(&self, limit: Duration) -> Duration {
        match self.end() {
            Some(at) => limit.min(at.saturating_duration_since(tokio::time::Instant::now())),
            None => limit,
        }
    }

    /// Starts the clock the moment shutdown fires.
    async fn start_clock_on_shutdown(self) {
        self.shutdown.cancelled().await;
        self.end();
    }

    /// Resolves when shutdown has fired and the budget is spent.
    async fn ended(self) {
        self.shutdown.cancelled().await;
        if let Some(at) = self.end() {
            tokio::time::sleep_until(at).await;
        }
    }
}

/// What every writer reads, made once at start.
pub struct Shared {
    /// The `[sink]` settings.
    pub cfg: SinkConfig,
    /// The quoted table names.
    pub tables: Tables,
    sql: Sql,
    target: PgTarget,
    tls: MakeRustlsConnect,
    readiness: Readiness,
    /// Fires on SIGTERM.
    pub shutdown: CancellationToken,
    budget: Budget,
    /// Set after the first successful connect of any writer: from then on a
    /// migration or prepare error is retried (an operator may be mid-change),
    /// not fatal.
    started: AtomicBool,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("target", &self.target.describe())
            .field("tables", &self.tables)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Builds the shared state (no I/O).
    pub fn new(
        cfg: SinkConfig,
        target: PgTarget,
        tls: MakeRustlsConnect,
        readiness: Readiness,
        shutdown: CancellationToken,
    ) -> Self {
        let tables = Tables::new(&cfg.schema, &cfg.table);
        let sql = Sql::new(&tables);
        let budget = Budget {
            shutdown: shutdown.clone(),
            timeout: cfg.shutdown_timeout,
            at: Arc::new(OnceLock::new()),
        };
        Self {
            cfg,
            tables,
            sql,
            target,
            tls,
            readiness,
            shutdown,
            budget,
            started: AtomicBool::new(false),
        }
    }
}

impl Shared {
    /// `limit`, cut to what is left of `shutdown_timeout` once shutdown has
    /// begun: for the steps after a write (the Kafka commit, the watermark
    /// check, leaving the group), so stopping stays within the budget.
    pub(crate) fn limit(&self, limit: Duration) -> Duration {
        self.budget.limit(limit)
    }

    /// Resolves once shutdown has fired, after starting the
    /// `shutdown_timeout` clock at that moment (not at the first step that
    /// asks for its limit, which may come a batch later). Run it in its own task.
    /// Resolves when shutdown has fired and `shutdown_timeout` is spent: race
    /// a wait against it so a wait already running at the signal is cut too.
    pub(crate) fn ended(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.budget.clone().ended()
    }

    pub(crate) fn start_clock_on_shutdown(
        &self,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.budget.clone().start_clock_on_shutdown()
    }
}

/// Whether a PostgreSQL error is about the connection (retry) rather than the
/// SQL: no SQLSTATE (I/O), or class 08 (connection), 57P (operator
/// intervention, e.g. a restart), 53 (insufficient resources, e.g. too many
/// connections) or 40 (transaction rollback: serialization failure, deadlock).
fn is_connection_error(e: &tokio_postgres::Error) -> bool {
    match e.code() {
        None => true,
        Some(c) => {
            let c = c.code();
            c.starts_with("08")
                || c.starts_with("57P")
                || c.starts_with("53")
                || c.starts_with("40")
        }
    }
}

/// Connects, bounds abandoned transactions on the server side, migrates and
/// prepares. `Ok(Err(message))` is worth retrying; a migration PostgreSQL
/// refuses is fatal unless `started`.
async fn open(shared: &Shared, started: bool) -> Result<Result<Conn, String>, SinkError> {
    let mut client = match shared.target.connect(&shared.tls).await {
        Ok(c) => c,
        Err(e) => return Ok(Err(format!("unreachable: {}", db_message(&e)))),
    };
    // A transaction whose client vanished half-way (a half-open connection)
    // would keep its row locks until the server notices; let the server end
    // it once the client would have given up anyway.
    let ms = shared
        .cfg
        .write_timeout
        .as_millis()
        .clamp(1_000, i32::MAX as u128);
    if let Err(e) = client
        .batch_execute(&format!("SET idle_in_transaction_session_timeout = {ms}"))
        .await
    {
        if is_connection_error(&e) {
            return Ok(Err(db_message(&e)));
        }
        tracing::warn!(error = %db_message(&e), "cannot set idle_in_transaction_session_timeout; continuing without it");
    }
    // Every writer runs this; it is idempotent, and the first to get the
    // advisory lock applies what is missing.
    match migrate(&mut client, &shared.tables).await {
        Ok(applied) if !applied.versions.is_empty() => {
            tracing::info!(versions = ?applied.versions, "migrations applied");
        }
        Ok(_) => {}
        Err(e) if is_connection_error(&e) || started => {
            return Ok(Err(format!("migrating: {}", db_message(&e))))
        }
        Err(e) => return Err(SinkError::Migrate(db_message(&e))),
    }
    match Conn::prepare(client, &shared.sql).await {
        Ok(c) => Ok(Ok(c)),
        Err(e) if is_connection_error(&e) || started => {
            Ok(Err(format!("preparing statements: {}", db_message(&e))))
        }
        Err(e) => Err(SinkError::Migrate(db_message(&e))),
    }
}

/// `batch` split into at most `n` parts, each keeping the batch's order; all
/// records of one (topic, partition) land in one part, so the parts never
/// touch the same offsets row. Partitions are dealt out by size, largest
/// first, each to the part with the fewest records so far: a sink that owns,
/// say, partitions 0, 2 and 4 still uses two writers (a fixed
/// `partition % n` would put them all on one). Safe because a batch's parts
/// are all committed before the next batch is split. Some parts may be empty.
pub fn split_by_partition(batch: Vec<Msg>, n: usize) -> Vec<Vec<Msg>> {
    if n <= 1 {
        return vec![batch];
    }
    let mut sizes: HashMap<(Arc<str>, i32), usize> = HashMap::new();
    for m in &batch {
        *sizes.entry((m.topic.clone(), m.partition)).or_default() += 1;
    }
    let mut by_size: Vec<((Arc<str>, i32), usize)> = sizes.into_iter().collect();
    // Largest first; ties in (topic, partition) order, so the split is deterministic.
    by_size.sort_by(|(ka, a), (kb, b)| b.cmp(a).then_with(|| ka.cmp(kb)));
    let mut load = vec![0usize; n];
    let mut part_of: HashMap<(Arc<str>, i32), usize> = HashMap::new();
    for (key, size) in by_size {
        let (i, _) = load
            .iter()
            .enumerate()
            .min_by_key(|(i, l)| (**l, *i))
            .unwrap_or((0, &0));
        load[i] += size;
        part_of.insert(key, i);
    }
    let mut parts: Vec<Vec<Msg>> = load.iter().map(|l| Vec::with_capacity(*l)).collect();
    for msg in batch {
        let i = part_of
            .get(&(msg.topic.clone(), msg.partition))
            .copied()
            .unwrap_or(0);
        parts[i].push(msg);
    }
    parts
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
    /// Its number, from 0: its readiness slot and its share of partitions.
    index: usize,
    conn: Option<Conn>,
    /// What the search for refused records learnt about the part in hand.
    search: Search,
}

impl Writer {
    /// Writer number `index` (no I/O yet).
    pub fn new(shared: Arc<Shared>, index: usize) -> Self {
        Self {
            shared,
            index,
            conn: None,
            search: Search::default(),
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
        let mut backoff = Backoff::new();
        let shutdown = self.shared.shutdown.clone();
        loop {
            let attempt = tokio::select! {
                r = self.connect() => r?,
                _ = shutdown.cancelled() => return Ok(false),
            };
            match attempt {
                Ok(()) => {
                    self.shared.readiness.set_db(self.index, None);
                    return Ok(true);
                }
                Err(e) => {
                    metrics::counter!(m::DB_ERRORS).increment(1);
                    let msg = self.problem(&e);
                    tracing::warn!(writer = self.index, "{msg}; retrying");
                    self.shared.readiness.set_db(self.index, Some(msg));
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(false),
                _ = tokio::time::sleep(backoff.next()) => {}
            }
        }
    }

    /// Writes `batch`, retrying failures with backoff until it commits — or,
    /// unless `persistent`, giving up after the first failed attempt (the
    /// caller hands the part to a persistent writer). Each attempt is bounded
    /// by `write_timeout`.
    pub async fn write_until_done(
        &mut self,
        batch: &[Msg],
        persistent: bool,
    ) -> Result<Written, SinkError> {
        let mut backoff = Backoff::new();
        let shared = Arc::clone(&self.shared);
        loop {
            if shared.budget.passed() {
                tracing::warn!(
                    writer = self.index,
                    records = batch.len(),
                    "shutdown_timeout passed; leaving the batch unwritten (it will be redelivered)"
                );
                return Ok(Written::Unwritten);
            }
            let attempt = match self.conn.as_mut() {
                Some(conn) => {
                    let started = Instant::now();
                    let limit = shared.budget.limit(shared.cfg.write_timeout);
                    let ended = shared.budget.clone().ended();
                    tokio::select! {
                        r = tokio::time::timeout(limit, write_batch(conn, batch, &mut self.search)) => match r {
                            Ok(Ok(o)) => {
                                metrics::histogram!(m::BATCH_WRITE_SECONDS)
                                    .record(started.elapsed().as_secs_f64());
                                Ok(o)
                            }
                            Ok(Err(e)) => Err(e.to_string()),
                            Err(_) => Err(format!(
                                "the write took longer than {} (write_timeout); abandoning the connection",
                                humantime::format_duration(limit)
                            )),
                        },
                        () = ended => Err("shutdown_timeout passed during the write".to_owned()),
                    }
                }
                None => match self.connect().await? {
                    Ok(()) => continue,
                    Err(e) => Err(e),
                },
            };
            match attempt {
                Ok(o) => {
                    shared.readiness.set_db(self.index, None);
                    return Ok(Written::Done(o));
                }
                Err(e) if !persistent => {
                    // Not counted against readiness: another writer takes
                    // the part, so records still flow.
                    metrics::counter!(m::DB_ERRORS).increment(1);
                    tracing::warn!(
                        writer = self.index,
                        records = batch.len(),
                        "part not written: {}; writer 0 writes it instead",
                        self.problem(&e)
                    );
                    self.conn = None;
                    self.search.clear();
                    return Ok(Written::GaveUp);
                }
                Err(e) => {
                    metrics::counter!(m::DB_ERRORS).increment(1);
                    metrics::counter!(m::DB_RETRIES).increment(1);
                    let msg = self.problem(&e);
                    tracing::warn!(
                        writer = self.index,
                        records = batch.len(),
                        "batch not written: {msg}; retrying"
                    );
                    shared.readiness.set_db(self.index, Some(msg));
                    // Start from a fresh connection: the old one may be dead or
                    // half-way through a failed transaction.
                    self.conn = None;
                }
            }
            let wait = backoff.next();
            let ended = shared.budget.clone().ended();
            let shutting_down = shared.shutdown.is_cancelled();
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                () = ended => {}
                _ = shared.shutdown.cancelled(), if !shutting_down => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::write::tests::msg;

    #[tokio::test]
    async fn after_shutdown_every_limit_is_cut_to_what_is_left_of_shutdown_timeout_counted_from_the_signal(
    ) {
        let shutdown = CancellationToken::new();
        let budget = Budget {
            shutdown: shutdown.clone(),
            timeout: Duration::from_millis(400),
            at: Arc::new(OnceLock::new()),
        };
        let ten = Duration::from_secs(10);
        assert_eq!(budget.limit(ten), ten, "no cut before shutdown");
        tokio::spawn(budget.clone().start_clock_on_shutdown());
        shutdown.cancel();
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Asked for the first time 200 ms after the signal: about 200 ms are
        // left (a clock started by this first ask would leave 400 ms).
        let left = budget.limit(ten);
        assert!(left < Duration::from_millis(300), "{left:?} left");
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(budget.limit(ten), Duration::ZERO);
        assert!(budget.passed());
    }

    fn positions(part: &[Msg]) -> Vec<(i32, i64)> {
        part.iter().map(|m| (m.partition, m.offset)).collect()
    }

    #[test]
    fn a_batch_splits_by_partition_keeping_its_order() {
        let batch = vec![
            msg(0, 10),
            msg(5, 1),
            msg(2, 7),
            msg(4, 3),
            msg(0, 11),
            msg(3, 2),
            msg(2, 8),
        ];
        let parts = split_by_partition(batch.clone(), 3);
        assert_eq!(parts.len(), 3);
        // Largest partitions first, each to the least loaded part.
        assert_eq!(positions(&parts[0]), [(0, 10), (5, 1), (0, 11)]);
        assert_eq!(positions(&parts[1]), [(2, 7), (2, 8)]);
        assert_eq!(positions(&parts[2]), [(4, 3), (3, 2)]);
        let one = split_by_partition(batch.clone(), 1);
        assert_eq!(one.len(), 1);
        assert_eq!(positions(&one[0]), positions(&batch));
        let many = split_by_partition(batch, 64);
        assert_eq!(many.iter().filter(|p| !p.is_empty()).count(), 5);
    }

    #[test]
    fn partitions_with_the_same_remainder_still_spread_over_the_writers() {
        // A sink owning partitions 0, 2 and 4 of a topic, with two writers.
        let batch = vec![
            msg(0, 1),
            msg(2, 1),
            msg(4, 1),
            msg(0, 2),
            msg(2, 2),
            msg(4, 2),
        ];
        let parts = split_by_partition(batch, 2);
        let sizes: Vec<usize> = parts.iter().map(Vec::len).collect();
        assert_eq!(
            sizes,
            [4, 2],
            "{:?}",
            parts.iter().map(|p| positions(p)).collect::<Vec<_>>()
        );
    }
}
