//! The consume → batch → write → commit loop (the next batch is collected
//! while the previous one is written and committed).
//!
//! The consumer is in a group with `enable.auto.offset.store=false` and
//! `enable.auto.commit=false`: a batch's offsets are stored and committed
//! only after its PostgreSQL transaction has committed. A crash between the
//! two redelivers the batch, and the offsets table (see [`crate::write`])
//! drops the records already written, so nothing is stored twice.
//!
//! Rebalances: records of partitions revoked while a batch is being collected
//! are dropped from it (the rebalance happens inside `recv()`; librdkafka
//! re-fetches from the committed offset if the partition comes back), and a
//! batch never holds one Kafka position twice (see [`crate::write`]). A batch
//! already being written when its partitions move is written anyway (all or
//! nothing, one transaction); the new owner finds its records below
//! `next_offset` under the same row lock and skips them — or wrote them first,
//! and then this member skips them. Kafka's committed offset may briefly move
//! back by such a late commit; that only causes a harmless re-read.
//!
//! Every attempt to connect or write is bounded by `write_timeout` (and, after
//! SIGTERM, by what is left of `shutdown_timeout`); the Kafka commit and the
//! consumer's close are bounded too, so a dead peer can neither hang the sink
//! while `/readyz` says ready nor stop it from exiting.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use connector_common::KafkaConfig;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use tokio_postgres_rustls::MakeRustlsConnect;
use tokio_util::sync::CancellationToken;

use crate::collect::Collector;
use crate::config::SinkConfig;
use crate::db::PgTarget;
use crate::decode::Limits;
use crate::metrics as m;
use crate::metrics::Readiness;
use crate::migrate::{migrate, Tables};
use crate::write::{commit_positions, db_message, write_batch, Conn, Msg, Outcome, Skipped, Sql};
use crate::SinkError;

/// librdkafka callbacks: statistics (consumer lag, broker state), errors,
/// commit results and rebalances.
pub struct SinkContext {
    readiness: Readiness,
    last_commit: Arc<AtomicU64>,
    warn_limit: RateLimit,
    /// Partitions revoked since the batch being collected last looked.
    revoked: Mutex<Vec<(String, i32)>>,
    /// Each partition's end (high watermark), from the latest statistics.
    ends: Mutex<HashMap<(String, i32), i64>>,
}

impl SinkContext {
    /// Takes the partitions revoked since the last call.
    pub(crate) fn take_revoked(&self) -> Vec<(String, i32)> {
        std::mem::take(&mut *self.revoked.lock().expect("revoked lock"))
    }

    /// The partition's end as of the latest statistics, if known.
    fn end_of(&self, topic: &str, partition: i32) -> Option<i64> {
        self.ends
            .lock()
            .expect("ends lock")
            .get(&(topic.to_owned(), partition))
            .copied()
            .filter(|h| *h >= 0)
    }
}

/// Lets one warning through per 10 s; librdkafka repeats a down broker's
/// error on every poll.
#[derive(Debug, Default)]
struct RateLimit(std::sync::Mutex<Option<Instant>>);

impl RateLimit {
    fn allow(&self) -> bool {
        let mut last = self.0.lock().expect("rate limit lock");
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < Duration::from_secs(10)) {
            return false;
        }
        *last = Some(now);
        true
    }
}

impl ClientContext for SinkContext {
    fn stats(&self, stats: Statistics) {
        let mut ends = self.ends.lock().expect("ends lock");
        for (topic, t) in &stats.topics {
            for (p, part) in &t.partitions {
                if *p >= 0 && part.hi_offset >= 0 {
                    ends.insert((topic.clone(), *p), part.hi_offset);
                }
                if *p >= 0 && part.consumer_lag >= 0 {
                    metrics::gauge!(m::CONSUMER_LAG, "topic" => topic.clone(), "partition" => p.to_string())
                        .set(part.consumer_lag as f64);
                }
            }
        }
        drop(ends);
        let up = stats
            .brokers
            .values()
            .any(|b| b.state == "UP" && b.source != "internal" && b.source != "logical");
        self.readiness
            .set_kafka((!up).then(|| "Kafka: no broker connection is up".to_owned()));
    }

    fn error(&self, error: KafkaError, reason: &str) {
        metrics::counter!(m::KAFKA_ERRORS).increment(1);
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.readiness
                .set_kafka(Some(format!("Kafka: all brokers are down ({reason})")));
        }
        if self.warn_limit.allow() {
            tracing::warn!(error = %error, reason, "Kafka client error (repeats within 10 s are logged at debug level)");
        } else {
            tracing::debug!(error = %error, reason, "Kafka client error");
        }
    }
}

impl ConsumerContext for SinkContext {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                tracing::info!(partitions = ?parts, "partitions assigned");
            }
            Rebalance::Revoke(tpl) => {
                let parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                tracing::info!(partitions = ?parts, "partitions revoked");
                self.revoked.lock().expect("revoked lock").extend(
                    tpl.elements()
                        .iter()
                        .map(|e| (e.topic().to_owned(), e.partition())),
                );
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => mark_committed(&self.last_commit),
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => {
                tracing::warn!(error = %e, offsets = offsets.count(), "Kafka offset commit failed; the records are already in PostgreSQL and will be skipped if redelivered")
            }
        }
    }
}

/// The consumer type of the sink.
pub type SinkConsumer = StreamConsumer<SinkContext>;

/// Creates the group consumer and subscribes to the topic.
pub fn consumer(
    kafka: &KafkaConfig,
    cfg: &SinkConfig,
    readiness: Readiness,
    last_commit: Arc<AtomicU64>,
) -> Result<SinkConsumer, SinkError> {
    let mut c = kafka.client_config();
    c.set("group.id", &cfg.group_id)
        .set("client.id", "website-monitor-sink")
        .set("enable.auto.offset.store", "false")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", cfg.start_from.as_librdkafka())
        .set("statistics.interval.ms", "1000");
    kafka.apply_options(&mut c);
    let consumer: SinkConsumer = c
        .create_with_context(SinkContext {
            readiness,
            last_commit,
            warn_limit: RateLimit::default(),
            revoked: Mutex::new(Vec::new()),
            ends: Mutex::new(HashMap::new()),
        })
        .map_err(SinkError::Kafka)?;
    consumer
        .subscribe(&[&cfg.topic])
        .map_err(SinkError::Kafka)?;
    Ok(consumer)
}

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

/// Longest wait for one synchronous Kafka offset commit.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the consumer to leave the group at shutdown.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// What is left of `shutdown_timeout` once shutdown has begun.
#[derive(Debug, Clone)]
struct Budget {
    shutdown: CancellationToken,
    timeout: Duration,
    at: Arc<OnceLock<tokio::time::Instant>>,
}

impl Budget {
    /// When the budget ends; starts counting the first time it is asked
    /// after shutdown fired.
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

    /// Resolves when shutdown has fired and the budget is spent.
    async fn ended(self) {
        self.shutdown.cancelled().await;
        if let Some(at) = self.end() {
            tokio::time::sleep_until(at).await;
        }
    }
}

/// Everything the loop needs, made once at start.
pub struct Pipeline {
    cfg: SinkConfig,
    tables: Tables,
    sql: Sql,
    target: PgTarget,
    tls: MakeRustlsConnect,
    readiness: Readiness,
    shutdown: CancellationToken,
    budget: Budget,
    conn: Option<Conn>,
    limits: Limits,
    last_commit: Arc<AtomicU64>,
    /// Set after the first successful connect: from then on a migration or
    /// prepare error is retried (an operator may be mid-change), not fatal.
    started: bool,
    committing: Arc<AtomicBool>,
}

/// Whether a PostgreSQL error is about the connection (retry) rather than the SQL.
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
async fn open(
    target: &PgTarget,
    tls: &MakeRustlsConnect,
    tables: &Tables,
    sql: &Sql,
    write_timeout: Duration,
    started: bool,
) -> Result<Result<Conn, String>, SinkError> {
    let mut client = match target.connect(tls).await {
        Ok(c) => c,
        Err(e) => return Ok(Err(format!("unreachable: {}", db_message(&e)))),
    };
    // A transaction whose client vanished half-way (a half-open connection)
    // would keep its row locks until the server notices; let the server end
    // it once the client would have given up anyway.
    let ms = write_timeout.as_millis().clamp(1_000, i32::MAX as u128);
    if let Err(e) = client
        .batch_execute(&format!("SET idle_in_transaction_session_timeout = {ms}"))
        .await
    {
        if is_connection_error(&e) {
            return Ok(Err(db_message(&e)));
        }
        tracing::warn!(error = %db_message(&e), "cannot set idle_in_transaction_session_timeout; continuing without it");
    }
    match migrate(&mut client, tables).await {
        Ok(applied) if !applied.versions.is_empty() => {
            tracing::info!(versions = ?applied.versions, "migrations applied");
        }
        Ok(_) => {}
        Err(e) if is_connection_error(&e) || started => {
            return Ok(Err(format!("migrating: {}", db_message(&e))))
        }
        Err(e) => return Err(SinkError::Migrate(db_message(&e))),
    }
    match Conn::prepare(client, sql).await {
        Ok(c) => Ok(Ok(c)),
        Err(e) if is_connection_error(&e) || started => {
            Ok(Err(format!("preparing statements: {}", db_message(&e))))
        }
        Err(e) => Err(SinkError::Migrate(db_message(&e))),
    }
}

impl Pipeline {
    /// Prepares the loop (no I/O yet).
    pub fn new(
        cfg: SinkConfig,
        target: PgTarget,
        tls: MakeRustlsConnect,
        readiness: Readiness,
        shutdown: CancellationToken,
        last_commit: Arc<AtomicU64>,
    ) -> Self {
        let tables = Tables::new(&cfg.schema, &cfg.table);
        let sql = Sql::new(&tables);
        let limits = Limits {
            max_record_bytes: cfg.max_record_bytes,
            max_url_bytes: cfg.max_url_bytes,
        };
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
            conn: None,
            limits,
            last_commit,
            started: false,
            committing: Arc::new(AtomicBool::new(false)),
        }
    }

    /// One bounded connect attempt. `Ok(Err(message))` is worth retrying.
    async fn connect(&mut self) -> Result<Result<(), String>, SinkError> {
        let limit = self.budget.limit(self.cfg.write_timeout);
        let ended = self.budget.clone().ended();
        let attempt = open(
            &self.target,
            &self.tls,
            &self.tables,
            &self.sql,
            self.cfg.write_timeout,
            self.started,
        );
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
                self.started = true;
                tracing::info!(target = %self.target.describe(), "connected to PostgreSQL");
                Ok(Ok(()))
            }
            Err(m) => Ok(Err(m)),
        }
    }

    /// Connects at start, retrying until it works or shutdown. `false` on shutdown.
    pub async fn connect_until_ready(&mut self) -> Result<bool, SinkError> {
        let mut backoff = Backoff::new();
        let shutdown = self.shutdown.clone();
        loop {
            let attempt = tokio::select! {
                r = self.connect() => r?,
                _ = shutdown.cancelled() => return Ok(false),
            };
            match attempt {
                Ok(()) => {
                    self.readiness.set_db(None);
                    return Ok(true);
                }
                Err(e) => {
                    metrics::counter!(m::DB_ERRORS).increment(1);
                    let msg = format!("PostgreSQL at {}: {e}", self.target.describe());
                    tracing::warn!("{msg}; retrying");
                    self.readiness.set_db(Some(msg));
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(false),
                _ = tokio::time::sleep(backoff.next()) => {}
            }
        }
    }

    /// Writes `batch`, retrying failures with backoff until it commits. Each
    /// attempt is bounded by `write_timeout`. Returns `None` when shutdown
    /// came and `shutdown_timeout` passed first (nothing was committed; the
    /// batch will be redelivered).
    async fn write_until_done(&mut self, batch: &[Msg]) -> Result<Option<Outcome>, SinkError> {
        let mut backoff = Backoff::new();
        loop {
            if self.budget.passed() {
                tracing::warn!(
                    records = batch.len(),
                    "shutdown_timeout passed; leaving the batch unwritten (it will be redelivered)"
                );
                return Ok(None);
            }
            let attempt = match self.conn.as_mut() {
                Some(conn) => {
                    let started = Instant::now();
                    let limit = self.budget.limit(self.cfg.write_timeout);
                    let ended = self.budget.clone().ended();
                    tokio::select! {
                        r = tokio::time::timeout(limit, write_batch(conn, batch)) => match r {
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
                    self.readiness.set_db(None);
                    return Ok(Some(o));
                }
                Err(e) => {
                    metrics::counter!(m::DB_ERRORS).increment(1);
                    metrics::counter!(m::DB_RETRIES).increment(1);
                    let msg = format!("PostgreSQL at {}: {e}", self.target.describe());
                    tracing::warn!(records = batch.len(), "batch not written: {msg}; retrying");
                    self.readiness.set_db(Some(msg));
                    // Start from a fresh connection: the old one may be dead or
                    // half-way through a failed transaction.
                    self.conn = None;
                }
            }
            let wait = backoff.next();
            let ended = self.budget.clone().ended();
            let shutting_down = self.shutdown.is_cancelled();
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                () = ended => {}
                _ = self.shutdown.cancelled(), if !shutting_down => {}
            }
        }
    }

    /// Runs until shutdown: consume, write, commit — and, while a batch is
    /// written and committed, collect the next one.
    pub async fn run(mut self, consumer: SinkConsumer) -> Result<(), SinkError> {
        let consumer = Arc::new(consumer);
        let collector = Collector {
            batch_size: self.cfg.batch_size,
            batch_max_bytes: self.cfg.batch_max_bytes,
            batch_timeout: self.cfg.batch_timeout,
            limits: self.limits,
            shutdown: self.shutdown.clone(),
        };
        let mut pending = Vec::new();
        loop {
            if pending.is_empty() {
                if self.shutdown.is_cancelled() {
                    break;
                }
                pending = collector.collect(&consumer).await;
                continue;
            }
            let batch = std::mem::take(&mut pending);
            metrics::counter!(m::RECORDS_CONSUMED).increment(batch.len() as u64);
            metrics::histogram!(m::BATCH_SIZE).record(batch.len() as f64);
            // After SIGTERM, finish what was collected but take nothing new.
            let next = async {
                if collector.shutdown.is_cancelled() {
                    Vec::new()
                } else {
                    collector.collect(&consumer).await
                }
            };
            let (written, next) = tokio::join!(self.write_and_commit(&consumer, &batch), next);
            pending = next;
            if written?.is_none() {
                break;
            }
        }
        // Leaving the group blocks (librdkafka's close), so off the runtime,
        // and bounded: a dead coordinator must not keep the sink from exiting.
        let closing = tokio::task::spawn_blocking(move || drop(consumer));
        match tokio::time::timeout(CLOSE_TIMEOUT, closing).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "closing the Kafka consumer failed"),
            Err(_) => tracing::warn!(
                "leaving the consumer group did not finish within {CLOSE_TIMEOUT:?}; stopping anyway (the group notices after session.timeout.ms)"
            ),
        }
        tracing::info!("sink stopped");
        Ok(())
    }

    /// Writes `batch` (retrying until it commits), then commits its offsets
    /// to Kafka. `None` when shutdown left it unwritten.
    async fn write_and_commit(
        &mut self,
        consumer: &Arc<SinkConsumer>,
        batch: &[Msg],
    ) -> Result<Option<()>, SinkError> {
        let Some(outcome) = self.write_until_done(batch).await? else {
            return Ok(None);
        };
        self.record(&outcome);
        self.check_positions(consumer, &outcome.skipped).await;
        commit(consumer, batch, &self.last_commit, &self.committing).await;
        Ok(Some(()))
    }

    fn record(&self, o: &Outcome) {
        let t = &self.cfg.table;
        metrics::counter!(m::ROWS_WRITTEN, "table" => t.clone()).increment(o.site_rows);
        metrics::counter!(m::ROWS_WRITTEN, "table" => format!("{t}_check")).increment(o.check_rows);
        let rejected: u64 = o.rejected.values().sum();
        metrics::counter!(m::ROWS_WRITTEN, "table" => format!("{t}_rejected")).increment(rejected);
        let mut by_reason: HashMap<&str, u64> = HashMap::new();
        for (r, n) in &o.rejected {
            *by_reason.entry(r).or_default() += n;
        }
        for (r, n) in by_reason {
            metrics::counter!(m::RECORDS_REJECTED, "reason" => r.to_owned()).increment(n);
        }
        if o.duplicates > 0 {
            metrics::counter!(m::RECORDS_DUPLICATE).increment(o.duplicates);
            tracing::info!(
                records = o.duplicates,
                "skipped records already written (replay after a restart or rebalance)"
            );
        }
    }

    /// Records skipped as already written are normal after a crash or a
    /// rebalance — unless the stored `next_offset` is above the partition's
    /// end: then the topic was re-created (or its offsets reset) and new
    /// records are being skipped. That is logged as an error with the SQL
    /// that fixes it, and counted.
    async fn check_positions(&self, consumer: &Arc<SinkConsumer>, skipped: &[Skipped]) {
        for s in skipped {
            // The cached high watermark first (no network); confirm with the
            // broker before raising the alarm.
            let cached = consumer.context().end_of(&s.topic, s.partition);
            if cached.is_some_and(|high| s.next_offset <= high) {
                continue;
            }
            let c = Arc::clone(consumer);
            let (topic, partition) = (s.topic.clone(), s.partition);
            let fetched = tokio::time::timeout(
                Duration::from_secs(6),
                tokio::task::spawn_blocking(move || {
                    c.fetch_watermarks(&topic, partition, Duration::from_secs(5))
                }),
            )
            .await;
            let high = match fetched {
                Ok(Ok(Ok((_, high)))) => high,
                _ => match cached {
                    Some(high) => high,
                    None => continue,
                },
            };
            if s.next_offset <= high {
                continue;
            }
            metrics::counter!(m::RECORDS_POSITION_AHEAD, "topic" => s.topic.to_string(), "partition" => s.partition.to_string())
                .increment(s.records);
            let lit = s.topic.replace('\'', "''");
            tracing::error!(
                topic = %s.topic,
                partition = s.partition,
                stored_next_offset = s.next_offset,
                partition_end = high,
                records = s.records,
                "the stored position of {topic}/{partition} ({next}) is above the partition's end ({high}): the topic was re-created or its offsets reset, and its records are being SKIPPED as already written. Stop the sinks, move the old positions aside and clear them: \
                 UPDATE {check} SET topic = topic || ' (old)' WHERE topic = '{lit}'; UPDATE {rejected} SET topic = topic || ' (old)' WHERE topic = '{lit}'; DELETE FROM {offsets} WHERE topic = '{lit}'; \
                 then reset the consumer group to the earliest offsets (kafka-consumer-groups --reset-offsets --to-earliest --group {group} --topic {topic} --execute) and start the sinks again",
                topic = s.topic,
                partition = s.partition,
                next = s.next_offset,
                check = self.tables.check,
                rejected = self.tables.rejected,
                offsets = self.tables.offsets,
                group = self.cfg.group_id,
            );
        }
    }
}

/// A consumer error from `recv`; the client context has already logged it
/// (rate-limited), so only count it here.
pub(crate) fn kafka_error(e: &KafkaError) {
    metrics::counter!(m::KAFKA_ERRORS).increment(1);
    tracing::debug!(error = %e, "Kafka consumer error");
}

fn mark_committed(last_commit: &AtomicU64) {
    let now = m::unix_now();
    last_commit.store(now.to_bits(), Ordering::Relaxed);
    metrics::gauge!(m::LAST_COMMIT_TIMESTAMP).set(now);
}

/// Stores and commits the offsets after `batch` (the batch is in PostgreSQL).
///
/// The commit is synchronous (on a blocking thread) so its result is known:
/// the StreamConsumer does not deliver asynchronous commit results. One
/// round trip per batch, bounded by [`COMMIT_TIMEOUT`]; while a commit is
/// still outstanding the next batch's is skipped (a later one covers it, and
/// a redelivery is skipped by the offsets table).
async fn commit(
    consumer: &Arc<SinkConsumer>,
    batch: &[Msg],
    last_commit: &AtomicU64,
    committing: &Arc<AtomicBool>,
) {
    let mut tpl = TopicPartitionList::new();
    for (topic, p, next) in commit_positions(batch) {
        if let Err(e) = tpl.add_partition_offset(&topic, p, Offset::Offset(next)) {
            tracing::warn!(error = %e, "cannot build the offset list");
            return;
        }
    }
    if let Err(e) = consumer.store_offsets(&tpl) {
        // Partitions revoked meanwhile: their new owner skips what we wrote.
        tracing::debug!(error = %e, "storing offsets failed");
    }
    if committing.swap(true, Ordering::AcqRel) {
        tracing::debug!("the previous Kafka commit is still outstanding; skipping this one");
        return;
    }
    let c = Arc::clone(consumer);
    let flag = Arc::clone(committing);
    let task = tokio::task::spawn_blocking(move || {
        let r = c.commit(&tpl, CommitMode::Sync);
        flag.store(false, Ordering::Release);
        r
    });
    match tokio::time::timeout(COMMIT_TIMEOUT, task).await {
        Ok(Ok(Ok(()))) => mark_committed(last_commit),
        Ok(Ok(Err(e))) => tracing::warn!(
            error = %e,
            "Kafka offset commit failed; the records are in PostgreSQL and will be skipped if redelivered"
        ),
        Ok(Err(e)) => tracing::warn!(error = %e, "Kafka offset commit task failed"),
        Err(_) => tracing::warn!(
            "Kafka offset commit did not answer within {COMMIT_TIMEOUT:?}; continuing (the records are in PostgreSQL and will be skipped if redelivered)"
        ),
    }
}

/// Keeps `website_monitor_last_commit_age_seconds` current until `stop`.
pub async fn commit_age_ticker(last_commit: Arc<AtomicU64>, stop: CancellationToken) {
    let started = m::unix_now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {
                let last = f64::from_bits(last_commit.load(Ordering::Relaxed));
                let since = if last > 0.0 { last } else { started };
                metrics::gauge!(m::LAST_COMMIT_AGE).set((m::unix_now() - since).max(0.0));
            }
        }
    }
}
