//! The Kafka output: the producer's settings, the start-up metadata probe,
//! sends with backpressure, and the flush at the end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use connector_common::retry::Backoff;
use connector_common::telemetry::Health;
use connector_common::KafkaConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, PurgeConfig, ThreadedProducer};
use tokio_util::sync::CancellationToken;

use super::counts::{Counts, DropReason};
use super::delivery::DeliveryContext;

/// How long a send may wait for room in a full producer queue while Kafka
/// is taking records.
pub const ENQUEUE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the start-up probe waits, in all, for the brokers to answer for
/// the topic before it says they do not.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one metadata request of the probe waits: between two, the probe
/// sees whether the output has closed, so it never holds an exit up for
/// longer than this.
const PROBE_SLICE: Duration = Duration::from_millis(250);

/// Bytes of `queue.buffering.max.kbytes` per buffered record: about four
/// times a typical record, so the count is the limit that binds.
pub const BUFFER_BYTES_PER_RECORD: u64 = 2048;

/// The least `queue.buffering.max.kbytes`: a record larger than the whole
/// byte budget could never be queued, whatever the count.
pub const MIN_BUFFER_KBYTES: u64 = 1024;

/// How much the producer holds while Kafka does not take records.
#[derive(Debug, Clone, Copy)]
pub struct Buffer {
    /// `max_buffered_records`.
    pub max_records: usize,
    /// `delivery_timeout`.
    pub delivery_timeout: Duration,
}

impl Default for Buffer {
    fn default() -> Self {
        Buffer {
            max_records: 100_000,
            delivery_timeout: Duration::from_secs(300),
        }
    }
}

impl Buffer {
    /// The librdkafka properties this buffer stands for.
    pub fn properties(&self) -> [(&'static str, String); 3] {
        let kbytes = (self.max_records as u64)
            .saturating_mul(BUFFER_BYTES_PER_RECORD)
            .div_ceil(1024)
            .clamp(MIN_BUFFER_KBYTES, i32::MAX as u64);
        [
            (
                "queue.buffering.max.messages",
                self.max_records.min(i32::MAX as usize).to_string(),
            ),
            ("queue.buffering.max.kbytes", kbytes.to_string()),
            (
                "message.timeout.ms",
                self.delivery_timeout
                    .as_millis()
                    .clamp(1, i32::MAX as u128)
                    .to_string(),
            ),
        ]
    }
}

/// The producer could not be created.
#[derive(Debug, thiserror::Error)]
#[error("cannot create the Kafka producer: {0}; check [kafka] and [kafka.options]")]
pub struct PublishError(#[source] KafkaError);

/// Sends records to a Kafka topic.
pub struct KafkaPublisher {
    producer: Arc<ThreadedProducer<DeliveryContext>>,
    topic: String,
    counts: Arc<Counts>,
    stop_waiting: CancellationToken,
    /// Cancelled once the output has closed (flushed, or dropped): the
    /// probe stops.
    closing: CancellationToken,
}

impl KafkaPublisher {
    /// Creates the producer (it connects in the background) and, in the
    /// background too, checks that the brokers answer for `topic`.
    pub fn new(
        kafka: &KafkaConfig,
        topic: &str,
        buffer: Buffer,
        health: Health,
    ) -> Result<Self, PublishError> {
        let mut config = kafka.client_config();
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", "lz4")
            .set("linger.ms", "50");
        for (k, v) in buffer.properties() {
            config.set(k, v);
        }
        kafka.apply_options(&mut config);
        let counts = Arc::new(Counts::new());
        let context = DeliveryContext::new(Arc::clone(&counts), health.clone(), buffer.max_records);
        let producer: ThreadedProducer<DeliveryContext> =
            config.create_with_context(context).map_err(PublishError)?;
        let producer = Arc::new(producer);
        let closing = CancellationToken::new();
        let probe = Probe {
            producer: Arc::clone(&producer),
            brokers: kafka.brokers.clone(),
            topic: topic.to_owned(),
            health,
            closing: closing.clone(),
        };
        tokio::task::spawn_blocking(move || probe.run());
        Ok(KafkaPublisher {
            producer,
            topic: topic.to_owned(),
            counts,
            stop_waiting: CancellationToken::new(),
            closing,
        })
    }

    /// Delivered and failed records so far.
    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    /// Makes sends stop waiting for room in a full queue.
    pub fn stop_waiting(&self) {
        self.stop_waiting.cancel();
    }

    /// Queues one record (with `record_headers`); waits for room in a full queue only while Kafka
    /// is taking records (at most [`ENQUEUE_TIMEOUT`]), else counts it failed.
    pub async fn send(&self, key: &str, payload: &[u8], timestamp_ms: i64) {
        let deadline = Instant::now() + ENQUEUE_TIMEOUT;
        let mut backoff = Backoff::new(Duration::from_millis(5), Duration::from_millis(200));
        loop {
            let record = BaseRecord::to(&self.topic)
                .key(key)
                .payload(payload)
                .timestamp(timestamp_ms)
                .headers(record_headers());
            match self.producer.send(record) {
                Ok(()) => return,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _))
                    if Instant::now() < deadline
                        && !self.stop_waiting.is_cancelled()
                        && self.producer.context().draining() =>
                {
                    tokio::select! {
                        () = tokio::time::sleep(backoff.next_wait()) => {}
                        () = self.stop_waiting.cancelled() => {}
                    }
                }
                Err((e, _)) => {
                    let reason = DropReason::of(&e);
                    self.counts.failed(reason);
                    let ctx = self.producer.context();
                    if ctx.may_log() {
                        let (_, failed) = self.counts.get();
                        if reason == DropReason::BufferFull {
                            tracing::warn!(url = %key, failed_so_far = failed, dropped_so_far = %self.counts.dropped_summary(), "record dropped: the producer buffer is full (max_buffered_records = {}) and Kafka is not taking records (logged at most once a second)", ctx.max_buffered());
                        } else {
                            tracing::warn!(error = %e, reason = reason.as_str(), url = %key, failed_so_far = failed, dropped_so_far = %self.counts.dropped_summary(), "record not sent to Kafka (logged at most once a second)");
                        }
                    }
                    return;
                }
            }
        }
    }

    /// Waits at most `timeout` for Kafka to acknowledge what was queued;
    /// purges the rest (counted failed). Then stops the probe.
    pub async fn finish(&self, timeout: Duration) {
        let producer = Arc::clone(&self.producer);
        let flushed = tokio::task::spawn_blocking(move || {
            let result = producer.flush(timeout);
            if result.is_err() {
                // Whatever is left is reported failed by the purge.
                producer.purge(PurgeConfig::default().queue().inflight());
                let _ = producer.flush(Duration::from_millis(500));
            }
            result
        })
        .await;
        match flushed {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "Kafka did not acknowledge every record in time; the rest were counted failed")
            }
            Err(e) => tracing::warn!(error = %e, "flush task failed"),
        }
        self.closing.cancel();
    }
}

impl Drop for KafkaPublisher {
    fn drop(&mut self) {
        self.closing.cancel();
    }
}

/// The start-up check that the brokers answer for the topic: `/readyz` says
/// what is wrong before the first delivery report would.
struct Probe {
    producer: Arc<ThreadedProducer<DeliveryContext>>,
    brokers: String,
    topic: String,
    health: Health,
    closing: CancellationToken,
}

impl Probe {
    /// Asks for the topic's metadata for up to [`PROBE_TIMEOUT`], in slices
    /// of [`PROBE_SLICE`]; says nothing once the output has closed (the
    /// source has stopped). Blocking: run it off the runtime.
    fn run(self) {
        let deadline = Instant::now() + PROBE_TIMEOUT;
        let answer = loop {
            let asked = Instant::now();
            let answer = self
                .producer
                .client()
                .fetch_metadata(Some(&self.topic), PROBE_SLICE);
            if self.closing.is_cancelled() {
                return;
            }
            if answer.is_ok() || Instant::now() >= deadline {
                break answer;
            }
            // An error that came at once (not a timeout): do not spin.
            std::thread::sleep(PROBE_SLICE.saturating_sub(asked.elapsed()));
        };
        let (topic, health) = (&self.topic, &self.health);
        match answer {
            Ok(m) => match m.topics().first().and_then(|t| t.error()) {
                None => health.set_ready(),
                Some(e) => {
                    let e = RDKafkaErrorCode::from(e);
                    tracing::warn!(topic = %topic, error = %e, "the topic is not usable yet; create it (or let the brokers auto-create it)");
                    health.set_not_ready(format!("topic {topic}: {e}"));
                }
            },
            Err(e) => {
                if let Some(problem) = self.producer.context().refusal() {
                    health.set_not_ready(problem);
                } else {
                    let brokers = &self.brokers;
                    tracing::warn!(error = %e, brokers = %brokers, "Kafka does not answer yet; checks go on and records wait in the producer queue");
                    health.set_not_ready(format!("Kafka at {brokers} does not answer: {e}"));
                }
            }
        }
    }
}

/// The headers every record carries: `content-type: application/json` and
/// `schema-version` (the record's `schema_version`, see
/// `schema/record.schema.json`), so a stage can route or refuse a record
/// without parsing it.
pub fn record_headers() -> OwnedHeaders {
    OwnedHeaders::new_with_capacity(2)
        .insert(Header {
            key: "content-type",
            value: Some("application/json"),
        })
        .insert(Header {
            key: "schema-version",
            value: Some(crate::record::SCHEMA_VERSION_TEXT),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_buffer_maps_onto_librdkafkas_queue_and_timeout() {
        let b = Buffer {
            max_records: 1_000,
            delivery_timeout: Duration::from_secs(90),
        };
        let props = b.properties();
        assert_eq!(
            props.map(|(k, v)| format!("{k}={v}")),
            [
                "queue.buffering.max.messages=1000",
                "queue.buffering.max.kbytes=2000",
                "message.timeout.ms=90000",
            ]
        );
        let small = Buffer {
            max_records: 10,
            ..b
        };
        assert_eq!(
            small.properties()[1].1,
            MIN_BUFFER_KBYTES.to_string(),
            "a byte budget that holds any record"
        );
        let huge = Buffer {
            max_records: usize::MAX,
            delivery_timeout: Duration::MAX,
        };
        for (k, v) in huge.properties() {
            assert!(
                v.parse::<i64>()
                    .is_ok_and(|n| (1..=i64::from(i32::MAX)).contains(&n)),
                "{k}={v} is within librdkafka's range"
            );
        }
    }

    /// No broker answers: the buffer fills, and every record past it is
    /// dropped at once (no 10 s wait per record: Kafka takes nothing) and
    /// counted by reason.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn past_the_buffer_records_are_dropped_at_once_and_counted() {
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let kafka = KafkaConfig {
            brokers: dead.local_addr().unwrap().to_string(),
            ..KafkaConfig::default()
        };
        drop(dead);
        let buffer = Buffer {
            max_records: 10,
            delivery_timeout: Duration::from_secs(60),
        };
        let p = KafkaPublisher::new(&kafka, "t", buffer, Health::new()).unwrap();
        let started = Instant::now();
        for i in 0..50 {
            p.send(&format!("http://s{i}/"), b"{}", 0).await;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "a full buffer with no broker drops at once ({:?})",
            started.elapsed()
        );
        assert_eq!(p.counts.get(), (0, 40), "40 of 50 dropped, 10 buffered");
        assert_eq!(
            p.counts.dropped_summary(),
            "buffer_full=40 delivery_timeout=0 shutdown=0 error=0"
        );
        p.finish(Duration::from_millis(100)).await;
        assert_eq!(p.counts.get(), (0, 50), "the buffered 10 purged at the end");
        assert_eq!(
            p.counts.dropped_summary(),
            "buffer_full=40 delivery_timeout=0 shutdown=10 error=0"
        );
    }
}
