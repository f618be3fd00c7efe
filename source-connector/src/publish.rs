//! Where records go: Kafka (the normal case) or stdout (`--stdout`).
//!
//! Kafka: an rdkafka `ThreadedProducer` with `enable.idempotence=true`,
//! `acks=all`, `compression.type=lz4` and `linger.ms=50` (any of them can be
//! overridden in `[kafka.options]`). A send only enqueues; delivery reports
//! come back on the producer's thread, where [`DeliveryContext`] counts them,
//! logs failures and drives readiness. Nothing awaits a send. When the queue is
//! full a send is retried with backoff for up to [`ENQUEUE_TIMEOUT`] (less
//! once shutdown passed `shutdown_timeout`), then counted as failed. librdkafka's queue is bounded
//! (`queue.buffering.max.messages`), so memory is too.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// How long a send may wait for room in a full producer queue.
pub const ENQUEUE_TIMEOUT: Duration = Duration::from_secs(10);

/// The producer could not be created.
#[derive(Debug, thiserror::Error)]
#[error("cannot create the Kafka producer: {0}; check [kafka] and [kafka.options]")]
pub struct PublishError(#[source] KafkaError);

/// Delivered and failed records so far.
pub struct Counts {
    delivered: AtomicU64,
    failed: AtomicU64,
    produced_total: ::metrics::Counter,
    failed_total: ::metrics::Counter,
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
            produced_total: metrics::produced(),
            failed_total: metrics::failed(),
        }
    }

    fn delivered(&self) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
        self.produced_total.increment(1);
    }

    fn failed(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.failed_total.increment(1);
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
    log_limit: OncePerSecond,
    /// Why the brokers refused us (credentials, TLS), if they did.
    auth: std::sync::Mutex<Option<String>>,
    /// Whether `auth` holds a reason: read on every delivery, so the
    /// mutex is only taken once the brokers refused us.
    refused: AtomicBool,
}

/// Lets one log line a second through, so a broker outage that fails
/// thousands of queued records does not flood the log (the counters keep
/// every failure).
#[derive(Debug)]
struct OncePerSecond {
    start: Instant,
    last: AtomicU64,
}

impl OncePerSecond {
    fn new() -> Self {
        OncePerSecond {
            start: Instant::now(),
            last: AtomicU64::new(u64::MAX),
        }
    }

    fn allow(&self) -> bool {
        let now = self.start.elapsed().as_secs();
        self.last.swap(now, Ordering::Relaxed) != now
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
        tracing::warn!(error = %error, "Kafka client error: {reason}");
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
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
                self.counts.failed();
                if self.log_limit.allow() {
                    let key = message
                        .key()
                        .map(String::from_utf8_lossy)
                        .unwrap_or_default();
                    let (_, failed) = self.counts.get();
                    tracing::warn!(error = %e, url = %key, failed_so_far = failed, "record not delivered to Kafka (logged at most once a second)");
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
    pub fn new(kafka: &KafkaConfig, topic: &str, health: Health) -> Result<Self, PublishError> {
        let mut config = kafka.client_config();
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", "lz4")
            .set("linger.ms", "50");
        kafka.apply_options(&mut config);
        let counts = Arc::new(Counts::new());
        let context = DeliveryContext {
            counts: Arc::clone(&counts),
            health: health.clone(),
            delivering: AtomicBool::new(false),
            log_limit: OncePerSecond::new(),
            auth: std::sync::Mutex::new(None),
            refused: AtomicBool::new(false),
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
        let mut backoff = Duration::from_millis(5);
        loop {
            let record = BaseRecord::to(&self.topic)
                .key(key)
                .payload(payload)
                .timestamp(timestamp_ms);
            match self.producer.send(record) {
                Ok(()) => return,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _))
                    if Instant::now() < deadline && !self.stop_waiting.is_cancelled() =>
                {
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = self.stop_waiting.cancelled() => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_millis(200));
                }
                Err((e, _)) => {
                    self.counts.failed();
                    tracing::warn!(error = %e, url = %key, "record not sent to Kafka");
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
                        c.failed();
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
            self.counts.failed();
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
