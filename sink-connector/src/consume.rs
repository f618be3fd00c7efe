//! The consume → batch → write → commit loop.
//!
//! The consumer is in a group with `enable.auto.offset.store=false` and
//! `enable.auto.commit=false`: a batch's offsets are stored and committed
//! only after its PostgreSQL transaction has committed. A crash between the
//! two redelivers the batch, and the offsets table (see [`crate::write`])
//! drops the records already written, so nothing is stored twice.
//!
//! Rebalances: when partitions move to another group member while this one
//! still holds a batch of them, the batch is written anyway (it is all or
//! nothing, one transaction); the new owner, having read the same records,
//! finds them below `next_offset` under the same row lock and skips them — or
//! wrote them first, and then this member skips them. Kafka's committed offset
//! may briefly move back by such a late commit; that only causes a harmless
//! re-read.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use connector_common::KafkaConfig;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use tokio_postgres_rustls::MakeRustlsConnect;
use tokio_util::sync::CancellationToken;

use crate::config::SinkConfig;
use crate::db::{is_data_error, PgTarget};
use crate::decode::{decode, Limits};
use crate::metrics as m;
use crate::metrics::Readiness;
use crate::migrate::{migrate, Tables};
use crate::write::{commit_positions, db_message, write_batch, Conn, Msg, Outcome, Sql};
use crate::SinkError;

/// librdkafka callbacks: statistics (consumer lag, broker state), errors,
/// commit results and rebalances.
pub struct SinkContext {
    readiness: Readiness,
    last_commit: Arc<AtomicU64>,
    warn_limit: RateLimit,
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
        for (topic, t) in &stats.topics {
            for (p, part) in &t.partitions {
                if *p >= 0 && part.consumer_lag >= 0 {
                    metrics::gauge!(m::CONSUMER_LAG, "topic" => topic.clone(), "partition" => p.to_string())
                        .set(part.consumer_lag as f64);
                }
            }
        }
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

/// Everything the loop needs, made once at start.
pub struct Pipeline {
    cfg: SinkConfig,
    tables: Tables,
    sql: Sql,
    target: PgTarget,
    tls: MakeRustlsConnect,
    readiness: Readiness,
    shutdown: CancellationToken,
    conn: Option<Conn>,
    limits: Limits,
    last_commit: Arc<AtomicU64>,
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
        Self {
            cfg,
            tables,
            sql,
            target,
            tls,
            readiness,
            shutdown,
            conn: None,
            limits,
            last_commit,
        }
    }

    /// Connects, migrates and prepares. Connection failures are `Ok(Err)` to
    /// retry; a migration PostgreSQL refuses is fatal.
    async fn connect(&mut self) -> Result<Result<(), tokio_postgres::Error>, SinkError> {
        let mut client = match self.target.connect(&self.tls).await {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        match migrate(&mut client, &self.tables).await {
            Ok(applied) if !applied.versions.is_empty() => {
                tracing::info!(versions = ?applied.versions, "migrations applied");
            }
            Ok(_) => {}
            Err(e) if is_connection_error(&e) => return Ok(Err(e)),
            Err(e) => return Err(SinkError::Migrate(db_message(&e))),
        }
        match Conn::prepare(client, &self.sql).await {
            Ok(c) => {
                self.conn = Some(c);
                tracing::info!(target = %self.target.describe(), "connected to PostgreSQL");
                Ok(Ok(()))
            }
            Err(e) if is_connection_error(&e) => Ok(Err(e)),
            Err(e) => Err(SinkError::Migrate(db_message(&e))),
        }
    }

    /// Connects at start, retrying until it works or shutdown. `false` on shutdown.
    pub async fn connect_until_ready(&mut self) -> Result<bool, SinkError> {
        let mut backoff = Backoff::new();
        loop {
            match self.connect().await? {
                Ok(()) => {
                    self.readiness.set_db(None);
                    return Ok(true);
                }
                Err(e) => {
                    metrics::counter!(m::DB_ERRORS).increment(1);
                    let msg = format!(
                        "PostgreSQL at {} unreachable: {}",
                        self.target.describe(),
                        db_message(&e)
                    );
                    tracing::warn!("{msg}; retrying");
                    self.readiness.set_db(Some(msg));
                }
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return Ok(false),
                _ = tokio::time::sleep(backoff.next()) => {}
            }
        }
    }

    /// Writes `batch`, retrying failures with backoff until it commits.
    /// Returns `None` when shutdown came and `shutdown_timeout` passed first
    /// (nothing was committed; the batch will be redelivered).
    async fn write_until_done(&mut self, batch: &[Msg]) -> Result<Option<Outcome>, SinkError> {
        let mut backoff = Backoff::new();
        let mut give_up_at: Option<Instant> = None;
        loop {
            if self.shutdown.is_cancelled() && give_up_at.is_none() {
                give_up_at = Some(Instant::now() + self.cfg.shutdown_timeout);
            }
            let attempt = match self.conn.as_mut() {
                Some(conn) => {
                    let started = Instant::now();
                    match write_batch(conn, &self.cfg.topic, batch).await {
                        Ok(o) => {
                            metrics::histogram!(m::BATCH_WRITE_SECONDS)
                                .record(started.elapsed().as_secs_f64());
                            Ok(o)
                        }
                        Err(e) => Err(e),
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
                    debug_assert!(!is_data_error(&e) || self.conn.is_some());
                    metrics::counter!(m::DB_ERRORS).increment(1);
                    metrics::counter!(m::DB_RETRIES).increment(1);
                    let msg = format!(
                        "PostgreSQL at {}: {}",
                        self.target.describe(),
                        db_message(&e)
                    );
                    tracing::warn!(records = batch.len(), "batch not written: {msg}; retrying");
                    self.readiness.set_db(Some(msg));
                    // Start from a fresh connection: the old one may be dead or
                    // half-way through a failed transaction.
                    self.conn = None;
                }
            }
            let wait = backoff.next();
            match give_up_at {
                Some(at) => {
                    let now = Instant::now();
                    if now >= at {
                        tracing::warn!(records = batch.len(), "shutdown_timeout passed; leaving the batch unwritten (it will be redelivered)");
                        return Ok(None);
                    }
                    tokio::time::sleep(wait.min(at - now)).await;
                }
                None => {
                    tokio::select! {
                        _ = self.shutdown.cancelled() => {}
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }

    fn to_msg(&self, msg: &BorrowedMessage<'_>) -> Msg {
        let payload = msg.payload();
        let decoded = decode(payload, self.limits);
        Msg {
            partition: msg.partition(),
            offset: msg.offset(),
            key: msg.key().map(<[u8]>::to_vec),
            timestamp: msg
                .timestamp()
                .to_millis()
                .filter(|ms| *ms >= 0)
                .map(|ms| UNIX_EPOCH + Duration::from_millis(ms as u64)),
            payload: payload.map(<[u8]>::to_vec),
            decoded,
        }
    }

    /// Collects the next batch: waits for a first record (or shutdown), then
    /// takes more until `batch_size` or `batch_timeout`.
    async fn collect(&self, consumer: &SinkConsumer) -> Vec<Msg> {
        let mut batch = Vec::new();
        let first = tokio::select! {
            _ = self.shutdown.cancelled() => return batch,
            r = consumer.recv() => r,
        };
        match first {
            Ok(msg) => batch.push(self.to_msg(&msg)),
            Err(e) => {
                kafka_error(&e);
                tokio::time::sleep(Duration::from_millis(100)).await;
                return batch;
            }
        }
        let deadline = tokio::time::Instant::now() + self.cfg.batch_timeout;
        while batch.len() < self.cfg.batch_size {
            tokio::select! {
                biased;
                r = consumer.recv() => match r {
                    Ok(msg) => batch.push(self.to_msg(&msg)),
                    Err(e) => { kafka_error(&e); break; }
                },
                _ = tokio::time::sleep_until(deadline) => break,
                _ = self.shutdown.cancelled() => break,
            }
        }
        batch
    }

    /// Runs until shutdown: consume, write, commit.
    pub async fn run(mut self, consumer: SinkConsumer) -> Result<(), SinkError> {
        let consumer = Arc::new(consumer);
        while !self.shutdown.is_cancelled() {
            let batch = self.collect(&consumer).await;
            if batch.is_empty() {
                continue;
            }
            metrics::counter!(m::RECORDS_CONSUMED).increment(batch.len() as u64);
            metrics::histogram!(m::BATCH_SIZE).record(batch.len() as f64);
            let Some(outcome) = self.write_until_done(&batch).await? else {
                break;
            };
            self.record(&outcome);
            commit(&consumer, &self.cfg.topic, &batch, &self.last_commit).await;
        }
        // Leaving the group blocks (librdkafka's close), so off the runtime.
        let closed = tokio::task::spawn_blocking(move || drop(consumer)).await;
        if let Err(e) = closed {
            tracing::warn!(error = %e, "closing the Kafka consumer failed");
        }
        tracing::info!("sink stopped");
        Ok(())
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
}

/// A consumer error from `recv`; the client context has already logged it
/// (rate-limited), so only count it here.
fn kafka_error(e: &KafkaError) {
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
/// round trip per batch.
async fn commit(consumer: &Arc<SinkConsumer>, topic: &str, batch: &[Msg], last_commit: &AtomicU64) {
    let mut tpl = TopicPartitionList::new();
    for (p, next) in commit_positions(batch) {
        if let Err(e) = tpl.add_partition_offset(topic, p, Offset::Offset(next)) {
            tracing::warn!(error = %e, "cannot build the offset list");
            return;
        }
    }
    if let Err(e) = consumer.store_offsets(&tpl) {
        // Partitions revoked meanwhile: their new owner skips what we wrote.
        tracing::debug!(error = %e, "storing offsets failed");
    }
    let c = Arc::clone(consumer);
    match tokio::task::spawn_blocking(move || c.commit(&tpl, CommitMode::Sync)).await {
        Ok(Ok(())) => mark_committed(last_commit),
        Ok(Err(e)) => tracing::warn!(
            error = %e,
            "Kafka offset commit failed; the records are in PostgreSQL and will be skipped if redelivered"
        ),
        Err(e) => tracing::warn!(error = %e, "Kafka offset commit task failed"),
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
