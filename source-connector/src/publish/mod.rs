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
//!
//! At start the Kafka output asks the brokers for the topic's metadata in
//! the background (for up to [`PROBE_TIMEOUT`]), so `/readyz` says what is
//! wrong before a delivery report would; the probe stops once the output has
//! flushed, so it never holds a `--once` run or a shutdown up.
//!
//! Layout (each file imports only the ones listed before it):
//! - `counts`: [`Counts`] and [`DropReason`], shared by both outputs;
//! - `delivery`: [`DeliveryContext`], the producer's librdkafka context;
//! - `kafka`: [`KafkaPublisher`] — settings ([`Buffer`]), the probe, sends
//!   with backpressure, the flush;
//! - `stdout`: [`StdoutPublisher`];
//! - this file: [`Publisher`], the one the source holds.

mod counts;
mod delivery;
mod kafka;
mod stdout;

use std::time::Duration;

pub use counts::{Counts, DropReason};
pub use delivery::{DeliveryContext, DRAINING_WINDOW};
pub use kafka::{
    Buffer, KafkaPublisher, PublishError, BUFFER_BYTES_PER_RECORD, ENQUEUE_TIMEOUT,
    MIN_BUFFER_KBYTES, PROBE_TIMEOUT,
};
pub use stdout::StdoutPublisher;

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
            k.stop_waiting();
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
            Publisher::Kafka(k) => k.counts().get(),
            Publisher::Stdout(s) => s.counts().get(),
        }
    }
}
