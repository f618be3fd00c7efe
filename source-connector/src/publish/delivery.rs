//! The producer's librdkafka context: delivery reports counted, client
//! errors and logs through `tracing` (classified and rate-limited as in the
//! sink, by [`connector_common::kafka::events`]), `/readyz` kept in step with
//! the last delivery, and whether Kafka is taking records (the backpressure
//! signal).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use connector_common::kafka::{forward_log, ClientEvents, KafkaEvent};
use connector_common::retry::RateLimit;
use connector_common::telemetry::Health;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::ProducerContext;

use super::counts::{Counts, DropReason};

/// A full queue is waited on only if a delivery report came within this
/// long: otherwise Kafka is not taking records and waiting would only stall
/// the checks.
pub const DRAINING_WINDOW: Duration = Duration::from_secs(1);

/// Producer context: counts delivery reports, logs through `tracing`, and
/// keeps `/readyz` in step with the last delivery.
pub struct DeliveryContext {
    counts: Arc<Counts>,
    health: Health,
    delivering: AtomicBool,
    log_limit: RateLimit,
    /// Client errors logged (rate-limited) and classified; why the brokers
    /// refused us, if they did (cleared by the next delivery).
    events: ClientEvents,
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
    /// A context counting into `counts` and reporting on `health`;
    /// `max_buffered` is `max_buffered_records`, for messages.
    pub fn new(counts: Arc<Counts>, health: Health, max_buffered: usize) -> Self {
        DeliveryContext {
            counts,
            health,
            delivering: AtomicBool::new(false),
            // A broker outage fails thousands of queued records: one line a
            // second (the counters keep every failure).
            log_limit: RateLimit::new(Duration::from_secs(1)),
            events: ClientEvents::new(),
            started: Instant::now(),
            last_report_ms: AtomicU64::new(u64::MAX),
            max_buffered,
        }
    }

    fn reported(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.last_report_ms.store(now, Ordering::Relaxed);
    }

    /// Whether a delivery report came within [`DRAINING_WINDOW`].
    pub fn draining(&self) -> bool {
        let last = self.last_report_ms.load(Ordering::Relaxed);
        last != u64::MAX
            && self.started.elapsed().as_millis() as u64
                <= last.saturating_add(DRAINING_WINDOW.as_millis() as u64)
    }

    /// Whether a line about an undelivered record may be logged now (at
    /// most one a second).
    pub fn may_log(&self) -> bool {
        self.log_limit.allow()
    }

    /// `max_buffered_records`.
    pub fn max_buffered(&self) -> usize {
        self.max_buffered
    }

    /// Why the brokers refused us (credentials, TLS), if they did.
    pub fn refusal(&self) -> Option<String> {
        self.events.refusal()
    }
}

impl ClientContext for DeliveryContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        forward_log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        match self.events.on_error(&error, reason) {
            // Retrying cannot fix refused credentials: say so on /readyz.
            KafkaEvent::Auth(problem) => self.health.set_not_ready(problem),
            KafkaEvent::AllBrokersDown => {
                // Records wait in the buffer; /readyz says so until one is
                // delivered again.
                self.delivering.store(false, Ordering::Relaxed);
                self.health.set_not_ready(format!(
                    "Kafka: all brokers are down; records wait in the producer buffer (at most max_buffered_records = {}, then dropped)",
                    self.max_buffered
                ));
            }
            // The idempotent producer's fatal error: every record fails from
            // now on, counted and logged as undelivered.
            KafkaEvent::Fatal => self.events.log_error(&error, reason),
            KafkaEvent::Other => {}
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
                let was_refused = self.events.clear_refusal();
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
