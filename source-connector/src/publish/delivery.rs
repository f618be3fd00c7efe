//! The producer's librdkafka context: delivery reports counted, client
//! errors and logs through `tracing`, `/readyz` kept in step with the last
//! delivery, and whether Kafka is taking records (the backpressure signal).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use connector_common::retry::RateLimit;
use connector_common::telemetry::Health;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
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
    /// Paces librdkafka's client errors.
    error_limit: RateLimit,
    /// Why the brokers refused us (credentials, TLS), if they did.
    auth: Mutex<Option<String>>,
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
            error_limit: RateLimit::new(Duration::from_secs(10)),
            started: Instant::now(),
            auth: Mutex::new(None),
            refused: AtomicBool::new(false),
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
        self.auth.lock().expect("auth lock").clone()
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
