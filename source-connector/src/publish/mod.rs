//! Where records go: Kafka (the normal case) or stdout (`--stdout`).
//!
//! Kafka: an rdkafka `ThreadedProducer` with `enable.idempotence=true`,
//! `acks=all`, `compression.type=lz4` and `linger.ms=50` (any of them can be
//! overridden in `[kafka.options]`). A send only enqueues; delivery reports
//! come back on the producer's thread, where [`DeliveryContext`] counts them,
//! logs failures and drives readiness. Nothing awaits a send.
//!
//! Broker outages: records wait in librdkafka's queue, which [`Buffer`] bounds
//! (`max_buffered_records` → `queue.buffering.max.messages`, and 2 KiB a
//! record, at least 1 MiB → `queue.buffering.max.kbytes`; `delivery_timeout` →
//! `message.timeout.ms`), so memory is bounded too. When the queue is full
//! while Kafka is taking records (a delivery report came within
//! [`DRAINING_WINDOW`]) a send is retried with backoff for up to
//! [`ENQUEUE_TIMEOUT`] (less once shutdown passed `shutdown_timeout`): the
//! checks slow down rather than lose records. When it is full and Kafka takes
//! nothing (an outage longer than the buffer), the record is dropped at once,
//! so checks stay on schedule and the oldest records keep their place. Every
//! record not delivered is counted in `website_monitor_records_failed_total`
//! and, by [`DropReason`], in `website_monitor_records_dropped_total`, and
//! logged at most once a second.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use connector_common::retry::{Backoff, RateLimit};
use connector_common::telemetry::Health;
use connector_common::KafkaConfig;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, PurgeConfig, ThreadedProducer};
use std::io::Write;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::metrics;

/// How long a send may wait for room in a full producer queue while Kafka
/// is taking records.
pub const ENQUEUE_TIMEOUT: Duration = Duration::from_secs(10);

/// A full queue is waited on only if a delivery report came within this
/// long: otherwise Kafka is not taking records and waiting would only stall
/// the checks.
pub const DRAINING_WINDOW: Duration = Duration::from_secs(1);

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

/// Why a record was not delivered (label `reason` of
/// `website_monitor_records_dropped_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The producer buffer (`max_buffered_records`) was full and Kafka took
    /// nothing.
    BufferFull,
    /// The record waited `delivery_timeout` for Kafka.
    DeliveryTimeout,
    /// Still waiting at shutdown after `flush_timeout` (purged).
    Shutdown,
    /// Refused by the producer or the broker (too large, unknown topic, not
    /// authorized, ...).
    Error,
}

impl DropReason {
    const ALL: [DropReason; 4] = [
        DropReason::BufferFull,
        DropReason::DeliveryTimeout,
        DropReason::Shutdown,
        DropReason::Error,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::BufferFull => "buffer_full",
            DropReason::DeliveryTimeout => "delivery_timeout",
            DropReason::Shutdown => "shutdown",
            DropReason::Error => "error",
        }
    }

    /// The reason of a failed delivery report.
    pub fn of(e: &KafkaError) -> Self {
        match e.rdkafka_error_code() {
            Some(RDKafkaErrorCode::MessageTimedOut) => DropReason::DeliveryTimeout,
            Some(RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight) => {
                DropReason::Shutdown
            }
            Some(RDKafkaErrorCode::QueueFull) => DropReason::BufferFull,
            _ => DropReason::Error,
        }
    }
}

/// The producer could not be created.
#[derive(Debug, thiserror::Error)]
#[error("cannot create the Kafka producer: {0}; check [kafka] and [kafka.options]")]
pub struct PublishError(#[source] KafkaError);

/// Delivered and failed records so far.
pub struct Counts {
    delivered: AtomicU64,
    failed: AtomicU64,
    /// Failed records by [`DropReason`], in the order of [`DropReason::ALL`].
    dropped: [AtomicU64; 4],
    produced_total: ::metrics::Counter,
    failed_total: ::metrics::Counter,
    dropped_total: [::metrics::Counter; 4],
}

impl Default for Counts {
    fn default() -> Self {
        Counts::new()
    }
}

impl Counts {
    /// Zero counts; registers the metric handles once.
    pub fn new() -> Self {
        Counts {
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            dropped: Default::default(),
            produced_total: metrics::produced(),
            failed_total: metrics::failed(),
            dropped_total: DropReason::ALL.map(|r| metrics::dropped(r.as_str())),
        }
    }

    fn delivered(&self) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
        self.produced_total.increment(1);
    }

    fn failed(&self, reason: DropReason) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.failed_total.increment(1);
        let i = DropReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or_default();
        self.dropped[i].fetch_add(1, Ordering::Relaxed);
        self.dropped_total[i].increment(1);
    }

    /// Failed records by reason, for a log line: `buffer_full=3 delivery_timeout=0 …`.
    pub fn dropped_summary(&self) -> String {
        DropReason::ALL
            .iter()
            .zip(&self.dropped)
            .map(|(r, n)| format!("{}={}", r.as_str(), n.load(Ordering::Relaxed)))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// `(delivered, failed)`.
    pub fn get(&self) -> (u64, u64) {
        (
            self.delivered.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// Producer context: counts delivery reports, logs through `tracing`, and
/// keeps `/readyz` in step with the last delivery.
pub struct DeliveryContext {
    counts: Arc<Counts>,
    health: Health,
    delivering: AtomicBool,
    log_limit: RateLimit,
    /// Paces librdkafka's client errors.
    error_limit: RateLimit,
    /// Why the brokers refused us (credentials, TLS), if they did.
    auth: std::sync::Mutex<Option<String>>,
    /// Whether `auth` holds a reason: read on every delivery, so the
    /// mutex is only taken once the brokers refused us.
    refused: AtomicBool,
    /// When the context was made: the clock of `last_report_ms`.
    started: Instant,
    /// When the last delivery report came (ms since `started`), or
    /// `u64::MAX` before the first: a full queue is worth waiting on only
    /// while Kafka takes records.
    last_report_ms: AtomicU64,
    /// `max_buffered_records`, for messages.
    max_buffered: usize,
}

impl DeliveryContext {
    fn reported(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.last_report_ms.store(now, Ordering::Relaxed);
    }

    /// Whether a delivery report came within [`DRAINING_WINDOW`].
    fn draining(&self) -> bool {
        let last = self.last_report_ms.load(Ordering::Relaxed);
        last != u64::MAX
            && self.started.elapsed().as_millis() as u64
                <= last.saturating_add(DRAINING_WINDOW.as_millis() as u64)
    }
}

impl ClientContext for DeliveryContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", facility = fac, "{message}")
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "librdkafka", facility = fac, "{message}")
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", facility = fac, "{message}")
            }
            RDKafkaLogLevel::Debug => {
                tracing::debug!(target: "librdkafka", facility = fac, "{message}")
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if let Some(problem) = connector_common::kafka::auth_problem(&error, reason) {
            // Retrying cannot fix refused credentials: say so on /readyz.
            self.health.set_not_ready(problem.clone());
            *self.auth.lock().expect("auth lock") = Some(problem.clone());
            self.refused.store(true, Ordering::Relaxed);
            if self.log_limit.allow() {
                tracing::error!("{problem}");
            }
            return;
        }
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            // Records wait in the buffer; /readyz says so until one is
            // delivered again.
            self.delivering.store(false, Ordering::Relaxed);
            self.health.set_not_ready(format!(
                "Kafka: all brokers are down; records wait in the producer buffer (at most max_buffered_records = {}, then dropped)",
                self.max_buffered
            ));
        }
        // librdkafka repeats a down broker's error many times a second.
        if self.error_limit.allow() {
            tracing::warn!(error = %error, "Kafka client error: {reason} (repeats are not logged for 10 s)");
        }
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        self.reported();
        match result {
            Ok(_) => {
                self.counts.delivered();
                let was_refused = self.refused.load(Ordering::Relaxed)
                    && self.refused.swap(false, Ordering::Relaxed);
                if was_refused {
                    self.auth.lock().expect("auth lock").take();
                }
                if !self.delivering.swap(true, Ordering::Relaxed) || was_refused {
                    self.health.set_ready();
                }
            }
            Err((e, message)) => {
                let reason = DropReason::of(e);
                self.counts.failed(reason);
                if self.log_limit.allow() {
                    let key = message
                        .key()
                        .map(String::from_utf8_lossy)
                        .unwrap_or_default();
                    let (_, failed) = self.counts.get();
                    tracing::warn!(error = %e, reason = reason.as_str(), url = %key, failed_so_far = failed, dropped_so_far = %self.counts.dropped_summary(), "record not delivered to Kafka (logged at most once a second)");
                }
                if self.delivering.swap(false, Ordering::Relaxed) {
                    self.health
                        .set_not_ready(format!("last delivery to Kafka failed: {e}"));
                }
            }
        }
    }
}

/// Sends records to a Kafka topic.
pub struct KafkaPublisher {
    producer: Arc<ThreadedProducer<DeliveryContext>>,
    topic: String,
    counts: Arc<Counts>,
    stop_waiting: CancellationToken,
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
        let context = DeliveryContext {
            counts: Arc::clone(&counts),
            health: health.clone(),
            delivering: AtomicBool::new(false),
            // A broker outage fails thousands of queued records: one line a
            // second (the counters keep every failure).
            log_limit: RateLimit::new(Duration::from_secs(1)),
            error_limit: RateLimit::new(Duration::from_secs(10)),
            started: Instant::now(),
            auth: std::sync::Mutex::new(None),
            refused: AtomicBool::new(false),
            last_report_ms: AtomicU64::new(u64::MAX),
            max_buffered: buffer.max_records,
        };
        let producer: ThreadedProducer<DeliveryContext> =
            config.create_with_context(context).map_err(PublishError)?;
        let producer = Arc::new(producer);
        let probe = Arc::clone(&producer);
        let (brokers, topic_name) = (kafka.brokers.clone(), topic.to_owned());
        tokio::task::spawn_blocking(move || {
            match probe
                .client()
                .fetch_metadata(Some(&topic_name), Duration::from_secs(10))
            {
                Ok(m) => match m.topics().first().and_then(|t| t.error()) {
                    None => health.set_ready(),
                    Some(e) => {
                        let e = RDKafkaErrorCode::from(e);
                        tracing::warn!(topic = %topic_name, error = %e, "the topic is not usable yet; create it (or let the brokers auto-create it)");
                        health.set_not_ready(format!("topic {topic_name}: {e}"));
                    }
                },
                Err(e) => {
                    let refused = probe.context().auth.lock().expect("auth lock").clone();
                    if let Some(problem) = refused {
                        health.set_not_ready(problem);
                    } else {
                        tracing::warn!(error = %e, brokers = %brokers, "Kafka does not answer yet; checks go on and records wait in the producer queue");
                        health.set_not_ready(format!("Kafka at {brokers} does not answer: {e}"));
                    }
                }
            }
        });
        Ok(KafkaPublisher {
            producer,
            topic: topic.to_owned(),
            counts,
            stop_waiting: CancellationToken::new(),
        })
    }

    async fn send(&self, key: &str, payload: &[u8], timestamp_ms: i64) {
        let deadline = Instant::now() + ENQUEUE_TIMEOUT;
        let mut backoff = Backoff::new(Duration::from_millis(5), Duration::from_millis(200));
        loop {
            let record = BaseRecord::to(&self.topic)
                .key(key)
                .payload(payload)
                .timestamp(timestamp_ms);
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
                    if ctx.log_limit.allow() {
                        let (_, failed) = self.counts.get();
                        if reason == DropReason::BufferFull {
                            tracing::warn!(url = %key, failed_so_far = failed, dropped_so_far = %self.counts.dropped_summary(), "record dropped: the producer buffer is full (max_buffered_records = {}) and Kafka is not taking records (logged at most once a second)", ctx.max_buffered);
                        } else {
                            tracing::warn!(error = %e, reason = reason.as_str(), url = %key, failed_so_far = failed, dropped_so_far = %self.counts.dropped_summary(), "record not sent to Kafka (logged at most once a second)");
                        }
                    }
                    return;
                }
            }
        }
    }

    async fn finish(&self, timeout: Duration) {
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
    }
}

/// How long the stdout writer waits for more records before a write.
const STDOUT_LINGER: Duration = Duration::from_millis(2);

/// Writes records as JSON lines to stdout (`--stdout`).
///
/// A dedicated thread owns a locked, buffered stdout and writes whatever the
/// bounded channel holds; once the channel is empty it waits
/// a moment (2 ms) for more and then flushes: no blocking-pool hop and no
/// system call per record.
pub struct StdoutPublisher {
    tx: Mutex<Option<mpsc::Sender<Vec<u8>>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    counts: Arc<Counts>,
}

impl StdoutPublisher {
    /// Starts the writer thread.
    pub fn new(health: &Health) -> Self {
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(1024);
        let counts = Arc::new(Counts::new());
        let c = Arc::clone(&counts);
        let writer = std::thread::Builder::new()
            .name("stdout-writer".into())
            .spawn(move || {
                let stdout = std::io::stdout();
                let mut out = std::io::BufWriter::with_capacity(64 * 1024, stdout.lock());
                let write = |out: &mut std::io::BufWriter<_>, line: Vec<u8>| match out
                    .write_all(&line)
                    .and_then(|()| out.write_all(b"\n"))
                {
                    Ok(()) => c.delivered(),
                    Err(e) => {
                        c.failed(DropReason::Error);
                        tracing::warn!(error = %e, "cannot write to stdout");
                    }
                };
                let mut dirty = false;
                loop {
                    match rx.try_recv() {
                        Ok(line) => {
                            write(&mut out, line);
                            dirty = true;
                        }
                        Err(mpsc::error::TryRecvError::Empty) if dirty => {
                            // Let a few more records come before the write
                            // system call; a record waits at most this long.
                            std::thread::sleep(STDOUT_LINGER);
                            if rx.is_empty() {
                                let _ = out.flush();
                                dirty = false;
                            }
                        }
                        Err(mpsc::error::TryRecvError::Empty) => match rx.blocking_recv() {
                            Some(line) => {
                                write(&mut out, line);
                                dirty = true;
                            }
                            None => break,
                        },
                        Err(mpsc::error::TryRecvError::Disconnected) => break,
                    }
                }
                let _ = out.flush();
            })
            .expect("cannot start the stdout writer thread");
        health.set_ready();
        StdoutPublisher {
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
            counts,
        }
    }

    async fn send(&self, payload: Vec<u8>) {
        let tx = self.tx.lock().expect("stdout lock").clone();
        let sent = match tx {
            Some(tx) => tx.send(payload).await.is_ok(),
            None => false,
        };
        if !sent {
            self.counts.failed(DropReason::Error);
        }
    }

    async fn finish(&self) {
        drop(self.tx.lock().expect("stdout lock").take());
        let writer = self.writer.lock().expect("stdout lock").take();
        if let Some(w) = writer {
            let _ = tokio::task::spawn_blocking(move || w.join()).await;
        }
    }
}

/// The output of a running source.
pub enum Publisher {
    /// Kafka.
    Kafka(KafkaPublisher),
    /// JSON lines on stdout.
    Stdout(StdoutPublisher),
}

impl Publisher {
    /// Hands one record over; returns once it is queued (never waits for the
    /// acknowledgement). Failures are counted, never returned.
    pub async fn send(&self, key: &str, payload: Vec<u8>, timestamp_ms: i64) {
        match self {
            Publisher::Kafka(k) => k.send(key, &payload, timestamp_ms).await,
            Publisher::Stdout(s) => s.send(payload).await,
        }
    }

    /// Makes sends stop waiting for room in a full producer queue (shutdown
    /// past `shutdown_timeout`): a record that still finds no room is counted
    /// failed at once.
    pub fn stop_waiting(&self) {
        if let Publisher::Kafka(k) = self {
            k.stop_waiting.cancel();
        }
    }

    /// Waits (at most `timeout` for Kafka) until every record handed over is
    /// acknowledged or counted failed.
    pub async fn finish(&self, timeout: Duration) {
        match self {
            Publisher::Kafka(k) => k.finish(timeout).await,
            Publisher::Stdout(s) => s.finish().await,
        }
    }

    /// `(delivered, failed)` so far.
    pub fn counts(&self) -> (u64, u64) {
        match self {
            Publisher::Kafka(k) => k.counts.get(),
            Publisher::Stdout(s) => s.counts.get(),
        }
    }
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

    #[test]
    fn delivery_errors_map_onto_reasons() {
        let e = |c| KafkaError::MessageProduction(c);
        assert_eq!(
            DropReason::of(&e(RDKafkaErrorCode::MessageTimedOut)),
            DropReason::DeliveryTimeout
        );
        assert_eq!(
            DropReason::of(&e(RDKafkaErrorCode::PurgeQueue)),
            DropReason::Shutdown
        );
        assert_eq!(
            DropReason::of(&e(RDKafkaErrorCode::QueueFull)),
            DropReason::BufferFull
        );
        assert_eq!(
            DropReason::of(&e(RDKafkaErrorCode::MessageSizeTooLarge)),
            DropReason::Error
        );
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
