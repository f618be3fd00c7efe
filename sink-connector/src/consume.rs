//! The consume → batch → write → commit loop (the next batch is collected
//! while the previous one is written and committed).
//!
//! The consumer is in a group with `enable.auto.offset.store=false` and
//! `enable.auto.commit=false`: a batch is split by partition over the
//! `writers` connections ([`crate::writer`]), and its offsets are stored and
//! committed only after every part's PostgreSQL transaction has committed. A
//! crash (or a shutdown that leaves a part unwritten) in between redelivers
//! the batch, and the offsets table (see [`crate::write`]) drops the records
//! already written, so nothing is stored twice.
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
//! Membership: dynamic by default; with `group_instance_id`, static
//! (KIP-345), so a sink restarted after a crash with the same id gets its
//! partitions back at once. A clean stop of a static member unsubscribes
//! before closing, which makes librdkafka send the LeaveGroup a static
//! member's close would not (`leave_static_group`). Fenced by a newer member
//! with the same id (a fatal librdkafka error), the loop stops, `/readyz`
//! says why, and [`Pipeline::run`] returns [`SinkError::KafkaFatal`].
//!
//! Every attempt to connect or write is bounded by `write_timeout` (and, after
//! SIGTERM, by what is left of `shutdown_timeout`, see [`crate::writer`]);
//! the Kafka commit, the watermark check and the consumer's close are bounded
//! too (after SIGTERM by what is left of the same budget), so a dead peer
//! can neither hang the sink while `/readyz` says ready nor stop it from
//! exiting.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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

use crate::batch::split_by_partition;
use crate::batch::{commit_positions, Msg, Outcome, Skipped};
use crate::collect::Collector;
use crate::config::SinkConfig;
use crate::db::PgTarget;
use crate::decode::Limits;
use crate::metrics as m;
use crate::metrics::Readiness;
use crate::writer::{Shared, Writer, Written};
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
    /// Why the brokers refuse us (credentials, TLS), until a broker is up.
    auth: Mutex<Option<String>>,
    /// Whether the latest statistics saw a broker connection up.
    any_up: AtomicBool,
    /// The fatal error librdkafka raised (for a sink: fenced by another
    /// member with the same `group_instance_id`); the consumer is unusable
    /// from then on and `/readyz` keeps saying why.
    fatal: Mutex<Option<String>>,
    /// Cancelled with `fatal`: wakes the loop waiting for records.
    dead: CancellationToken,
    /// What a fatal error is explained with (group and instance id).
    membership: Membership,
}

/// The group membership of this sink, for messages.
#[derive(Debug, Clone)]
struct Membership {
    group_id: String,
    instance_id: Option<String>,
}

impl Membership {
    /// What a fatal consumer error (`reason`, librdkafka's words) means here.
    fn explain_fatal(&self, code: Option<RDKafkaErrorCode>, reason: &str) -> String {
        let fenced = code == Some(RDKafkaErrorCode::FencedInstanceId)
            || reason.contains("fenced")
            || reason.contains("Fenced");
        match (&self.instance_id, fenced) {
            (Some(id), true) => format!(
                "Kafka: this sink was fenced: another sink joined consumer group \"{group}\" with the same group_instance_id \"{id}\" and took over its partitions ({reason}). Each running sink needs its own [sink] group_instance_id; this one stops",
                group = self.group_id
            ),
            _ => format!(
                "Kafka: the consumer hit a fatal error and cannot go on ({reason}); this sink stops"
            ),
        }
    }
}

impl SinkContext {
    /// Takes the partitions revoked since the last call.
    pub(crate) fn take_revoked(&self) -> Vec<(String, i32)> {
        std::mem::take(&mut *self.revoked.lock().expect("revoked lock"))
    }

    /// The fatal error raised so far, explained.
    pub(crate) fn fatal(&self) -> Option<String> {
        self.fatal.lock().expect("fatal lock").clone()
    }

    fn set_fatal(&self, code: Option<RDKafkaErrorCode>, reason: &str) {
        let mut fatal = self.fatal.lock().expect("fatal lock");
        if fatal.is_some() {
            return;
        }
        let problem = self.membership.explain_fatal(code, reason);
        tracing::error!("{problem}");
        self.readiness.set_kafka(Some(problem.clone()));
        *fatal = Some(problem);
        self.dead.cancel();
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
        self.any_up.store(up, Ordering::Relaxed);
        if self.fatal.lock().expect("fatal lock").is_some() {
            // The consumer is dead whatever the connections say.
            return;
        }
        let mut auth = self.auth.lock().expect("auth lock");
        if up {
            *auth = None;
        }
        self.readiness.set_kafka((!up).then(|| {
            auth.clone()
                .unwrap_or_else(|| "Kafka: no broker connection is up".to_owned())
        }));
    }

    fn error(&self, error: KafkaError, reason: &str) {
        metrics::counter!(m::KAFKA_ERRORS).increment(1);
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) {
            self.set_fatal(None, reason);
            return;
        }
        if let Some(problem) = connector_common::kafka::auth_problem(&error, reason) {
            // Retrying cannot fix refused credentials: say so on /readyz
            // (unless another broker connection works).
            if !self.any_up.load(Ordering::Relaxed) {
                self.readiness.set_kafka(Some(problem.clone()));
                *self.auth.lock().expect("auth lock") = Some(problem.clone());
            }
            if self.warn_limit.allow() {
                tracing::error!("{problem}");
            }
            return;
        }
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
    if let Some(id) = &cfg.group_instance_id {
        // Static membership: a restart with this id takes the partitions
        // back without waiting for session.timeout.ms (see `run` for the
        // clean shutdown).
        c.set("group.instance.id", id);
    }
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
            auth: Mutex::new(None),
            any_up: AtomicBool::new(false),
            fatal: Mutex::new(None),
            dead: CancellationToken::new(),
            membership: Membership {
                group_id: cfg.group_id.clone(),
                instance_id: cfg.group_instance_id.clone(),
            },
        })
        .map_err(SinkError::Kafka)?;
    consumer
        .subscribe(&[&cfg.topic])
        .map_err(SinkError::Kafka)?;
    Ok(consumer)
}

/// Longest wait for a partition's watermarks from the broker.
const WATERMARK_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for one synchronous Kafka offset commit.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the consumer to leave the group at shutdown.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything the loop needs, made once at start.
pub struct Pipeline {
    shared: Arc<Shared>,
    /// One per `[sink] writers`; each writes one part of every batch (see
    /// [`crate::batch::split_by_partition`]).
    writers: Vec<Writer>,
    limits: Limits,
    last_commit: Arc<AtomicU64>,
    committing: Arc<AtomicBool>,
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
        let limits = Limits {
            max_record_bytes: cfg.max_record_bytes,
            max_url_bytes: cfg.max_url_bytes,
        };
        let n = cfg.writers.max(1);
        let shared = Arc::new(Shared::new(cfg, target, tls, readiness, shutdown));
        let writers = (0..n)
            .map(|i| Writer::new(Arc::clone(&shared), i))
            .collect();
        Self {
            shared,
            writers,
            limits,
            last_commit,
            committing: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Connects at start: writer 0 retries until it works (or shutdown:
    /// `false`), alone, so a migration PostgreSQL refuses stops the sink; the
    /// others then try once, at once. A writer that cannot connect (say
    /// `max_connections` is reached) retries at its next part, and until
    /// then writer 0 writes its parts: one connection is enough to run.
    pub async fn connect_until_ready(&mut self) -> Result<bool, SinkError> {
        let Some((first, rest)) = self.writers.split_first_mut() else {
            return Ok(true);
        };
        if !first.connect_until_ready().await? {
            return Ok(false);
        }
        let rest = futures::future::join_all(rest.iter_mut().map(Writer::connect)).await;
        for (i, connected) in rest.into_iter().enumerate() {
            if let Err(e) = connected? {
                tracing::warn!(
                    writer = i + 1,
                    "cannot connect yet: {e}; writer 0 writes its parts until it can"
                );
            }
        }
        Ok(true)
    }

    /// Runs until shutdown: consume, write, commit — and, while a batch is
    /// written and committed, collect the next one.
    pub async fn run(mut self, consumer: SinkConsumer) -> Result<(), SinkError> {
        let consumer = Arc::new(consumer);
        tokio::spawn(self.shared.start_clock_on_shutdown());
        let cfg = &self.shared.cfg;
        // Collecting stops at shutdown, and when the consumer dies (fenced).
        let stop = self.shared.shutdown.child_token();
        let dead = consumer.context().dead.clone();
        let stop_on_death = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = dead.cancelled() => stop_on_death.cancel(),
                () = stop_on_death.cancelled() => {}
            }
        });
        let collector = Collector {
            batch_size: cfg.batch_size,
            batch_max_bytes: cfg.batch_max_bytes,
            batch_timeout: cfg.batch_timeout,
            limits: self.limits,
            shutdown: stop,
        };
        let mut pending = Vec::new();
        let mut fatal = None;
        loop {
            if let Some(problem) = fatal_error(&consumer) {
                // Fenced (or another fatal error): the consumer is dead and
                // the partitions are someone else's. What was collected is
                // left uncommitted; the new owner reads it again.
                fatal = Some(problem);
                break;
            }
            if pending.is_empty() {
                if collector.shutdown.is_cancelled() {
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
            let (written, next) = tokio::join!(self.write_and_commit(&consumer, batch), next);
            if written?.is_none() || collector.shutdown.is_cancelled() {
                // A batch collected while SIGTERM came is left unwritten and
                // uncommitted (it is redelivered): stopping stays within
                // one write of shutdown_timeout.
                break;
            }
            pending = next;
        }
        let fatal = fatal.or_else(|| fatal_error(&consumer));
        // Leaving the group blocks (librdkafka's close), so off the runtime,
        // and bounded: a dead coordinator must not keep the sink from exiting.
        let limit = self.shared.limit(CLOSE_TIMEOUT);
        if fatal.is_none() && self.shared.cfg.group_instance_id.is_some() {
            leave_static_group(&consumer, limit).await;
        }
        let closing = tokio::task::spawn_blocking(move || drop(consumer));
        match tokio::time::timeout(limit, closing).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "closing the Kafka consumer failed"),
            Err(_) => tracing::warn!(
                "leaving the consumer group did not finish within {limit:?} (what was left of shutdown_timeout, at most {CLOSE_TIMEOUT:?}); stopping anyway (the group notices after session.timeout.ms)"
            ),
        }
        if let Some(problem) = fatal {
            return Err(SinkError::KafkaFatal(problem));
        }
        tracing::info!("sink stopped");
        Ok(())
    }

    /// Writes `batch` — split by partition, each part on its own writer, all
    /// at once, each retried until it commits — then commits the offsets of
    /// the whole batch to Kafka. `None` when shutdown left a part unwritten:
    /// then nothing is committed to Kafka, and the parts already in
    /// PostgreSQL are skipped by the offsets table when redelivered.
    async fn write_and_commit(
        &mut self,
        consumer: &Arc<SinkConsumer>,
        batch: Vec<Msg>,
    ) -> Result<Option<()>, SinkError> {
        let positions = commit_positions(&batch);
        let parts = split_by_partition(batch, self.writers.len());
        // Writer 0 retries until its part commits; the others try once and
        // hand a part they cannot write back, for writer 0 to write after.
        let writes =
            self.writers
                .iter_mut()
                .zip(&parts)
                .enumerate()
                .filter(|(_, (_, part))| !part.is_empty())
                .map(|(i, (writer, part))| async move {
                    (i, writer.write_until_done(part, i == 0).await)
                });
        let mut outcome = Outcome::default();
        let mut complete = true;
        let mut handed_back = Vec::new();
        for (i, written) in futures::future::join_all(writes).await {
            match written? {
                Written::Done(o) => outcome.merge(o),
                Written::Unwritten => complete = false,
                Written::GaveUp => handed_back.push(i),
            }
        }
        for i in handed_back {
            match self.writers[0].write_until_done(&parts[i], true).await? {
                Written::Done(o) => outcome.merge(o),
                Written::Unwritten | Written::GaveUp => complete = false,
            }
        }
        // What did commit is counted either way.
        self.record(&outcome);
        if !complete {
            return Ok(None);
        }
        self.check_positions(consumer, &outcome.skipped).await;
        let limit = self.shared.limit(COMMIT_TIMEOUT);
        commit(
            self.shared.ended(),
            consumer,
            positions,
            &self.last_commit,
            &self.committing,
            limit,
        )
        .await;
        Ok(Some(()))
    }

    fn record(&self, o: &Outcome) {
        let t = &self.shared.cfg.table;
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
            // Within what is left of shutdown_timeout once shutdown began;
            // with nothing left, no alarm from the cache alone.
            let limit = self.shared.limit(WATERMARK_TIMEOUT);
            if limit.is_zero() {
                return;
            }
            let fetch = tokio::time::timeout(
                limit,
                tokio::task::spawn_blocking(move || c.fetch_watermarks(&topic, partition, limit)),
            );
            let fetched = tokio::select! {
                f = fetch => f.ok(),
                () = self.shared.ended() => return,
            };
            let high = match fetched {
                Some(Ok(Ok((_, high)))) => high,
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
                check = self.shared.tables.check,
                rejected = self.shared.tables.rejected,
                offsets = self.shared.tables.offsets,
                group = self.shared.cfg.group_id,
            );
        }
    }
}

/// A static member's close does not leave the group (KIP-345): its
/// partitions would wait `session.timeout.ms` for it to come back.
/// Unsubscribing first makes librdkafka send the LeaveGroup once the
/// partitions are revoked (served here, within `limit`), so a clean stop hands
/// them over at once, as with dynamic membership; a crash does not, and a
/// restart with the same `group_instance_id` takes them back at once.
async fn leave_static_group(consumer: &SinkConsumer, limit: Duration) {
    consumer.unsubscribe();
    let deadline = tokio::time::Instant::now() + limit;
    // The revocation is an event on the consumer's queue: poll to serve it.
    loop {
        let _ = tokio::time::timeout(Duration::from_millis(50), consumer.recv()).await;
        let revoked = consumer.assignment().is_ok_and(|a| a.count() == 0);
        if revoked || tokio::time::Instant::now() >= deadline {
            break;
        }
    }
    // librdkafka sends the LeaveGroup after the unassignment completes, on
    // its own thread; once close() starts, a static member no longer would.
    tokio::time::sleep(Duration::from_millis(200).min(limit)).await;
    tracing::info!("left the consumer group (static member, clean stop)");
}

/// The consumer's fatal error, explained, if librdkafka raised one (read from
/// the client as well as from the error callback, whichever came first).
fn fatal_error(consumer: &SinkConsumer) -> Option<String> {
    let ctx = consumer.context();
    if let Some(problem) = ctx.fatal() {
        return Some(problem);
    }
    let (code, reason) = consumer.client().fatal_error()?;
    ctx.set_fatal(Some(code), &reason);
    ctx.fatal()
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

/// Stores and commits `positions` — the next offset per partition of a batch
/// that is in PostgreSQL ([`commit_positions`]).
///
/// The commit is synchronous (on a blocking thread) so its result is known:
/// the StreamConsumer does not deliver asynchronous commit results. One
/// round trip per batch, awaited at most `limit` ([`COMMIT_TIMEOUT`], less
/// once shutdown has begun); while a commit is
/// still outstanding the next batch's is skipped (a later one covers it, and
/// a redelivery is skipped by the offsets table).
async fn commit(
    ended: impl std::future::Future<Output = ()>,
    consumer: &Arc<SinkConsumer>,
    positions: Vec<(Arc<str>, i32, i64)>,
    last_commit: &AtomicU64,
    committing: &Arc<AtomicBool>,
    limit: Duration,
) {
    let mut tpl = TopicPartitionList::new();
    for (topic, p, next) in positions {
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
    let waited = tokio::select! {
        r = tokio::time::timeout(limit, task) => r.ok(),
        () = ended => None,
    };
    match waited {
        Some(Ok(Ok(()))) => mark_committed(last_commit),
        Some(Ok(Err(e))) => tracing::warn!(
            error = %e,
            "Kafka offset commit failed; the records are in PostgreSQL and will be skipped if redelivered"
        ),
        Some(Err(e)) => tracing::warn!(error = %e, "Kafka offset commit task failed"),
        None => tracing::warn!(
            "Kafka offset commit did not answer within {limit:?} (at most {COMMIT_TIMEOUT:?}, less what shutdown_timeout left); continuing without waiting (the records are in PostgreSQL and will be skipped if redelivered)"
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
