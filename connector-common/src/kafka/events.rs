//! What both connectors' librdkafka contexts do with the client's errors and
//! log lines: classify and log an error once (rate-limited), remember why the
//! brokers refused us, forward log lines to `tracing`. Each context keeps
//! only its own reaction (readiness, counters).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use super::auth_problem;
use crate::retry::RateLimit;

/// What a librdkafka client error means for the connector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KafkaEvent {
    /// The brokers refused who we are (SASL credentials, TLS handshake):
    /// retrying cannot fix it. Holds the operator-facing explanation (see
    /// [`auth_problem`]), already logged.
    Auth(String),
    /// No broker is reachable; librdkafka keeps retrying. Already logged.
    AllBrokersDown,
    /// The client is unusable from now on. Not logged: the caller says what
    /// it means (or logs it with [`ClientEvents::log_error`]).
    Fatal,
    /// Any other client error, already logged.
    Other,
}

/// The shared half of a librdkafka `ClientContext::error`: one rate limit for
/// the log (librdkafka repeats a down broker's error many times a second)
/// and the last refusal of the brokers.
#[derive(Debug)]
pub struct ClientEvents {
    /// Paces the client's error lines: one per 10 s, repeats at debug level.
    limit: RateLimit,
    /// Why the brokers refused us (credentials, TLS), if they did.
    auth: Mutex<Option<String>>,
    /// Whether `auth` holds a reason: read on hot paths, so the mutex is
    /// only taken once the brokers refused us.
    refused: AtomicBool,
}

impl Default for ClientEvents {
    fn default() -> Self {
        Self::new()
    }
}

impl ClientEvents {
    /// Errors logged at most once per 10 s (repeats at debug level), no
    /// refusal yet.
    pub fn new() -> Self {
        Self {
            limit: RateLimit::new(Duration::from_secs(10)),
            auth: Mutex::new(None),
            refused: AtomicBool::new(false),
        }
    }

    /// Classifies a client error, logs it (rate-limited; a fatal error is
    /// left to the caller) and remembers a refusal of the brokers.
    pub fn on_error(&self, error: &KafkaError, reason: &str) -> KafkaEvent {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) {
            return KafkaEvent::Fatal;
        }
        if let Some(problem) = auth_problem(error, reason) {
            *self.auth.lock().unwrap_or_else(|e| e.into_inner()) = Some(problem.clone());
            self.refused.store(true, Ordering::Relaxed);
            if self.limit.allow() {
                tracing::error!("{problem}");
            } else {
                tracing::debug!("{problem}");
            }
            return KafkaEvent::Auth(problem);
        }
        self.log_error(error, reason);
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            KafkaEvent::AllBrokersDown
        } else {
            KafkaEvent::Other
        }
    }

    /// Logs a client error: a warning at most once per 10 s, repeats at
    /// debug level.
    pub fn log_error(&self, error: &KafkaError, reason: &str) {
        if self.limit.allow() {
            tracing::warn!(error = %error, reason, "Kafka client error (repeats within 10 s are logged at debug level)");
        } else {
            tracing::debug!(error = %error, reason, "Kafka client error");
        }
    }

    /// Why the brokers last refused us (credentials, TLS), if they did and
    /// it was not cleared since.
    pub fn refusal(&self) -> Option<String> {
        if !self.refused.load(Ordering::Relaxed) {
            return None;
        }
        self.auth.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Forgets the refusal (the brokers took us after all); whether there
    /// was one. Cheap while there is none.
    pub fn clear_refusal(&self) -> bool {
        if !(self.refused.load(Ordering::Relaxed) && self.refused.swap(false, Ordering::Relaxed)) {
            return false;
        }
        self.auth.lock().unwrap_or_else(|e| e.into_inner()).take();
        true
    }
}

/// A librdkafka log line through `tracing` (target `librdkafka`, the
/// facility as a field), at the matching level.
pub fn forward_log(level: RDKafkaLogLevel, fac: &str, message: &str) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_classified_and_a_refusal_is_remembered_until_cleared() {
        let events = ClientEvents::new();
        let down = KafkaError::Global(RDKafkaErrorCode::AllBrokersDown);
        assert_eq!(
            events.on_error(&down, "1/1 brokers are down"),
            KafkaEvent::AllBrokersDown
        );
        let fatal = KafkaError::Global(RDKafkaErrorCode::Fatal);
        assert_eq!(events.on_error(&fatal, "fenced"), KafkaEvent::Fatal);
        let other = KafkaError::Global(RDKafkaErrorCode::BrokerTransportFailure);
        assert_eq!(
            events.on_error(&other, "Connect to ipv4#127.0.0.1:9 failed"),
            KafkaEvent::Other
        );
        assert_eq!(events.refusal(), None);
        assert!(!events.clear_refusal());

        let refused = KafkaError::Global(RDKafkaErrorCode::Authentication);
        let KafkaEvent::Auth(problem) = events.on_error(&refused, "SASL authentication error: x")
        else {
            panic!("a SASL refusal is an auth problem");
        };
        assert!(problem.contains("sasl_password"), "{problem}");
        assert_eq!(events.refusal(), Some(problem));
        assert!(events.clear_refusal());
        assert_eq!(events.refusal(), None);
        assert!(!events.clear_refusal());
    }
}
