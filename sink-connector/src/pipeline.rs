//! The consume → batch → write → commit loop (the next batch is collected
//! while the previous one is written and committed).
//!
//! The consumer is in a group with `enable.auto.offset.store=false` and
//! `enable.auto.commit=false`: a batch is split by partition over the
//! `writers` connections ([`crate::postgres::writer`]), and its offsets are stored and
//! committed only after every part's PostgreSQL transaction has committed. A
//! crash (or a shutdown that leaves a part unwritten) in between redelivers
//! the batch, and the offsets table (see [`crate::postgres::write`]) drops the records
//! already written, so nothing is stored twice.
//!
//! Rebalances: records of partitions revoked while a batch is being collected
//! are dropped from it (the rebalance happens inside `recv()`; librdkafka
//! re-fetches from the committed offset if the partition comes back), and a
//! batch never holds one Kafka position twice (see [`crate::postgres::write`]). A batch
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
//! SIGTERM, by what is left of `shutdown_timeout`, see [`crate::postgres::writer`]);
//! the Kafka commit, the watermark check and the consumer's close are bounded
//! too (after SIGTERM by what is left of the same budget), so a dead peer
//! can neither hang the sink while `/readyz` says ready nor stop it from
//! exiting.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::Consumer;
use tokio_postgres_rustls::MakeRustlsConnect;
use tokio_util::sync::CancellationToken;

use crate::batch::split_by_partition;
use crate::batch::{commit_positions, Msg, Outcome, Skipped};
use crate::collect::Collector;
use crate::config::SinkConfig;
use crate::decode::{Decoded, Limits};
use crate::error::SinkError;
use crate::kafka::commit::{commit, COMMIT_TIMEOUT};
use crate::kafka::consumer::{assigned, caught_up, fatal_error, leave_static_group, SinkConsumer};
use crate::kafka::dead_letter::DeadLetters;
use crate::kafka::outbox::{drain_until_shutdown, Publisher};
use crate::kafka::transitions::Transitions;
use crate::metrics::{self as m, SiteStates};
use crate::postgres::shared::Shared;
use crate::postgres::writer::{Writer, Written};
use crate::readiness::Readiness;
use crate::uri::PgTarget;

/// Longest wait for a partition's watermarks from the broker.
const WATERMARK_TIMEOUT: Duration = Duration::from_secs(5);
/// How often writer 0 sweeps the site status (silent probes, maintenance
/// windows), between batches and when idle.
const SWEEP_EVERY: Duration = crate::postgres::writer::SWEEP_EVERY;
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
    /// The producers of the transitions and dead-letter topics, each run on
    /// a task of its own.
    publishers: Publishers,
}

/// What the pipeline reports to the telemetry endpoints.
#[derive(Debug, Clone)]
pub struct Reports {
    /// What `/readyz` says.
    pub readiness: Readiness,
    /// The per-site state gauge `/metrics` renders (`per_site_gauge`).
    pub site_states: Arc<SiteStates>,
    /// When offsets were last committed (epoch seconds; the commit age).
    pub last_commit: Arc<AtomicU64>,
}

/// The topics the sink produces to besides its tables, each when set.
#[derive(Debug, Default)]
pub struct Publishers {
    /// `[sink.status] transitions_topic`.
    pub transitions: Option<Publisher>,
    /// `[sink] dead_letter_topic`.
    pub dead_letters: Option<Publisher>,
}

impl Pipeline {
    /// Prepares the loop (no I/O yet).
    pub fn new(
        cfg: SinkConfig,
        target: PgTarget,
        tls: MakeRustlsConnect,
        reports: Reports,
        shutdown: CancellationToken,
        publishers: Publishers,
    ) -> Self {
        let limits = Limits {
            max_record_bytes: cfg.max_record_bytes,
            max_url_bytes: cfg.max_url_bytes,
        };
        let n = cfg.writers.max(1);
        let Reports {
            readiness,
            site_states,
            last_commit,
        } = reports;
        let shared = Arc::new(Shared::new(
            cfg,
            target,
            tls,
            readiness,
            site_states,
            shutdown,
        ));
        let writers = (0..n)
            .map(|i| Writer::new(Arc::clone(&shared), i))
            .collect();
        Self {
            shared,
            writers,
            limits,
            last_commit,
            committing: Arc::new(AtomicBool::new(false)),
            publishers,
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
        let publishing = self.spawn_publishers();
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
            idle_wait: Some(SWEEP_EVERY),
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
                self.between_batches(&consumer, &[], false).await;
                pending = collector.collect(&consumer, None).await;
                continue;
            }
            let batch = std::mem::take(&mut pending);
            metrics::counter!(m::RECORDS_CONSUMED).increment(batch.len() as u64);
            metrics::histogram!(m::BATCH_SIZE).record(batch.len() as f64);
            // After SIGTERM, finish what was collected but take nothing new.
            // The next batch stays open while this one is written.
            let writing = CancellationToken::new();
            let next = async {
                if collector.shutdown.is_cancelled() {
                    Vec::new()
                } else {
                    collector.collect(&consumer, Some(&writing)).await
                }
            };
            let write = async {
                let written = self.write_and_commit(&consumer, batch).await;
                writing.cancel();
                written
            };
            let (written, next) = tokio::join!(write, next);
            if written?.is_none() || collector.shutdown.is_cancelled() {
                // A batch collected while SIGTERM came is left unwritten and
                // uncommitted (it is redelivered): stopping stays within
                // one write of shutdown_timeout.
                break;
            }
            pending = next;
            let full = pending.len() >= collector.batch_size;
            self.between_batches(&consumer, &pending, full).await;
        }
        for task in publishing {
            // They stop at shutdown between rounds; a round in flight is cut
            // (what it produced is produced again next time: at least once).
            task.abort();
        }
        self.close(consumer, fatal).await
    }

    /// Leaves the group (with static membership, when not fenced) and
    /// closes the consumer, within what is left of `shutdown_timeout`; the
    /// fatal Kafka error that ended the loop, if one did.
    async fn close(
        &self,
        consumer: Arc<SinkConsumer>,
        fatal: Option<String>,
    ) -> Result<(), SinkError> {
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

    /// Starts the transitions and dead-letter topics' tasks, each when set.
    fn spawn_publishers(&mut self) -> Vec<tokio::task::JoinHandle<()>> {
        let shared = &self.shared;
        let transitions = self.publishers.transitions.take().map(|p| {
            let outbox = Transitions::new(&shared.tables);
            tokio::spawn(drain_until_shutdown(Arc::clone(shared), outbox, p))
        });
        let dead_letters = self.publishers.dead_letters.take().map(|p| {
            let outbox = DeadLetters::new(&shared.tables);
            tokio::spawn(drain_until_shutdown(Arc::clone(shared), outbox, p))
        });
        transitions.into_iter().chain(dead_letters).collect()
    }

    /// Writer 0's work between batches (and when idle): partition
    /// maintenance when due, the per-site state gauge (if asked for), and the
    /// site status sweep, over the partitions this sink has caught up on
    /// only ([`caught_up`]) — a probe whose records are still queued would
    /// look silent — at the wall clock, leaving out the sites with records
    /// in `next` (collected, not written yet: they settle those sites, at
    /// their own time). Not while `next` is full (a backlog).
    async fn between_batches(&mut self, consumer: &SinkConsumer, next: &[Msg], full: bool) {
        // Partitions ahead and retention run even while no record comes.
        self.writers[0].maintain().await;
        self.writers[0]
            .refresh_site_gauge(&assigned(consumer))
            .await;
        if full || !self.writers[0].sweep_due() {
            return;
        }
        let partitions = caught_up(consumer);
        let mut pending: Vec<&str> = next
            .iter()
            .filter_map(|m| match &m.decoded {
                Decoded::Good(g) => Some(g.url.as_str()),
                Decoded::Rejected(_) => None,
            })
            .collect();
        pending.sort_unstable();
        pending.dedup();
        self.writers[0].sweep(&partitions, &pending).await;
    }

    fn record(&self, o: &Outcome) {
        let t = &self.shared.cfg.table;
        metrics::counter!(m::ROWS_WRITTEN, "table" => t.clone()).increment(o.site_rows);
        metrics::counter!(m::ROWS_WRITTEN, "table" => format!("{t}_check")).increment(o.check_rows);
        let rejected: u64 = o.rejected.values().sum();
        metrics::counter!(m::ROWS_WRITTEN, "table" => format!("{t}_rejected")).increment(rejected);
        metrics::counter!(m::RECORDS_PAST_RETENTION).increment(o.past_retention);
        let mut by_reason: HashMap<&str, u64> = HashMap::new();
        for (r, n) in &o.rejected {
            *by_reason.entry(r).or_default() += n;
        }
        for (r, n) in by_reason {
            metrics::counter!(m::RECORDS_REJECTED, "reason" => r.to_owned()).increment(n);
        }
        for (to, n) in &o.transitions {
            metrics::counter!(m::STATUS_TRANSITIONS, "to" => *to).increment(*n);
        }
        metrics::counter!(m::STATUS_RECORDS_LATE).increment(o.status_late);
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
                 UPDATE {rejected} SET topic = topic || ' (old)' WHERE topic = '{lit}'; DELETE FROM {offsets} WHERE topic = '{lit}'; \
                 then reset the consumer group to the earliest offsets (kafka-consumer-groups --reset-offsets --to-earliest --group {group} --topic {topic} --execute) and start the sinks again",
                topic = s.topic,
                partition = s.partition,
                next = s.next_offset,
                rejected = self.shared.tables.rejected,
                offsets = self.shared.tables.offsets,
                group = self.shared.cfg.group_id,
            );
        }
    }
}
