//! The group consumer and its librdkafka context (statistics → lag, errors →
//! readiness, rebalances, fatal errors; the classification and logging of
//! errors and log lines shared with the source, from
//! [`connector_common::kafka::events`]), and leaving the group.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use connector_common::kafka::{forward_log, ClientEvents, KafkaEvent};
use connector_common::KafkaConfig;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::config::SinkConfig;
use crate::error::SinkError;
use crate::metrics as m;
use crate::readiness::Readiness;

/// librdkafka callbacks: statistics (consumer lag, broker state), errors,
/// commit results and rebalances.
pub struct SinkContext {
    readiness: Readiness,
    last_commit: Arc<AtomicU64>,
    /// Client errors logged (rate-limited) and classified; why the brokers
    /// refuse us (credentials, TLS), until a broker is up.
    events: ClientEvents,
    /// Partitions revoked since the batch being collected last looked.
    revoked: Mutex<Vec<(String, i32)>>,
    /// Each partition's end (high watermark) and committed offset, from the
    /// latest statistics since the partition was (last) assigned.
    ends: Mutex<HashMap<(String, i32), Ends>>,
    /// Whether the latest statistics saw a broker connection up.
    any_up: AtomicBool,
    /// The fatal error librdkafka raised (for a sink: fenced by another
    /// member with the same `group_instance_id`); the consumer is unusable
    /// from then on and `/readyz` keeps saying why.
    fatal: Mutex<Option<String>>,
    /// Cancelled with `fatal`: wakes the loop waiting for records.
    pub(crate) dead: CancellationToken,
    /// What a fatal error is explained with (group and instance id).
    membership: Membership,
}

/// A partition's offsets in the latest statistics.
#[derive(Debug, Clone, Copy)]
struct Ends {
    /// The high watermark.
    hi: i64,
    /// The group's committed offset (negative: none known).
    committed: i64,
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
    pub(crate) fn end_of(&self, topic: &str, partition: i32) -> Option<i64> {
        self.ends
            .lock()
            .expect("ends lock")
            .get(&(topic.to_owned(), partition))
            .map(|e| e.hi)
            .filter(|h| *h >= 0)
    }
}

impl ClientContext for SinkContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        forward_log(level, fac, message);
    }

    fn stats(&self, stats: Statistics) {
        let mut ends = self.ends.lock().expect("ends lock");
        for (topic, t) in &stats.topics {
            for (p, part) in &t.partitions {
                if *p >= 0 && part.hi_offset >= 0 {
                    let e = Ends {
                        hi: part.hi_offset,
                        committed: part.committed_offset,
                    };
                    ends.insert((topic.clone(), *p), e);
                }
                if *p >= 0 && part.consumer_lag >= 0 {
                    // A partition this sink no longer owns waits on its new
                    // owner, not here: 0, or a healthy sink left with nothing
                    // would show its old lag forever (and page SinkStalled).
                    let lag = if part.desired { part.consumer_lag } else { 0 };
                    metrics::gauge!(m::CONSUMER_LAG, "topic" => topic.clone(), "partition" => p.to_string())
                        .set(lag as f64);
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
        if up {
            self.events.clear_refusal();
        }
        self.readiness.set_kafka((!up).then(|| {
            self.events
                .refusal()
                .unwrap_or_else(|| "Kafka: no broker connection is up".to_owned())
        }));
    }

    fn error(&self, error: KafkaError, reason: &str) {
        metrics::counter!(m::KAFKA_ERRORS).increment(1);
        match self.events.on_error(&error, reason) {
            KafkaEvent::Fatal => self.set_fatal(None, reason),
            KafkaEvent::Auth(problem) => {
                // Retrying cannot fix refused credentials: say so on /readyz
                // (unless another broker connection works).
                if self.any_up.load(Ordering::Relaxed) {
                    self.events.clear_refusal();
                } else {
                    self.readiness.set_kafka(Some(problem));
                }
            }
            KafkaEvent::AllBrokersDown => self
                .readiness
                .set_kafka(Some(format!("Kafka: all brokers are down ({reason})"))),
            KafkaEvent::Other => {}
        }
    }
}

impl ConsumerContext for SinkContext {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                tracing::info!(partitions = ?parts, "partitions assigned");
                // Their ends are known again from the next statistics on.
                let mut ends = self.ends.lock().expect("ends lock");
                for e in tpl.elements() {
                    ends.remove(&(e.topic().to_owned(), e.partition()));
                }
            }
            Rebalance::Revoke(tpl) => {
                let parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                tracing::info!(partitions = ?parts, "partitions revoked");
                for e in tpl.elements() {
                    // Their lag is the new owner's to report.
                    metrics::gauge!(m::CONSUMER_LAG, "topic" => e.topic().to_owned(), "partition" => e.partition().to_string())
                        .set(0.0);
                }
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
            events: ClientEvents::new(),
            revoked: Mutex::new(Vec::new()),
            ends: Mutex::new(HashMap::new()),
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

/// A static member's close does not leave the group (KIP-345): its
/// partitions would wait `session.timeout.ms` for it to come back.
/// Unsubscribing first makes librdkafka send the LeaveGroup once the
/// partitions are revoked (served here, within `limit`), so a clean stop hands
/// them over at once, as with dynamic membership; a crash does not, and a
/// restart with the same `group_instance_id` takes them back at once.
pub(crate) async fn leave_static_group(consumer: &SinkConsumer, limit: Duration) {
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

/// The partitions assigned to this sink now (none when the assignment
/// cannot be read).
pub(crate) fn assigned(consumer: &SinkConsumer) -> Vec<i32> {
    consumer
        .assignment()
        .map(|a| a.elements().iter().map(|e| e.partition()).collect())
        .unwrap_or_default()
}

/// The partitions assigned to this member that it has caught up on: every
/// record up to the partition's end (as of the latest statistics, at most a
/// second old, taken after the assignment) has been handed to the sink — or,
/// before any record came since the assignment, the group's committed offset
/// is the end. None while no partition is assigned (say, waiting for a dead
/// member's session to time out after a restart), nor for one whose backlog
/// is still queued: the site status sweep judges silence with the wall
/// clock, so only where no record is still waiting.
pub(crate) fn caught_up(consumer: &SinkConsumer) -> Vec<i32> {
    let Ok(assigned) = consumer.assignment() else {
        return Vec::new();
    };
    let positions = consumer.position().ok();
    let ends = consumer.context().ends.lock().expect("ends lock");
    assigned
        .elements()
        .iter()
        .filter_map(|e| {
            let end = ends.get(&(e.topic().to_owned(), e.partition()))?;
            let position = positions
                .as_ref()
                .and_then(|p| p.find_partition(e.topic(), e.partition()))
                .and_then(|p| match p.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                })
                .unwrap_or(-1);
            (position.max(end.committed) >= end.hi).then_some(e.partition())
        })
        .collect()
}

/// The consumer's fatal error, explained, if librdkafka raised one (read from
/// the client as well as from the error callback, whichever came first).
pub(crate) fn fatal_error(consumer: &SinkConsumer) -> Option<String> {
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

/// Records a successful commit: for the commit-age metric and its gauge.
pub(crate) fn mark_committed(last_commit: &AtomicU64) {
    let now = m::unix_now();
    last_commit.store(now.to_bits(), Ordering::Relaxed);
    metrics::gauge!(m::LAST_COMMIT_TIMESTAMP).set(now);
}
