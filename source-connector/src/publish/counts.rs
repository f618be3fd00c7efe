//! Delivery accounting shared by both outputs: delivered and failed records,
//! and why each failed ([`DropReason`]), in counters and metrics.

use std::sync::atomic::{AtomicU64, Ordering};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::metrics;

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

    /// Counts one record delivered (acknowledged, or written).
    pub(super) fn delivered(&self) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
        self.produced_total.increment(1);
    }

    /// Counts one record not delivered, and why.
    pub(super) fn failed(&self, reason: DropReason) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
