//! Committing a written batch's offsets to Kafka, and the age of the last
//! commit as a metric.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::metrics as m;

use super::consumer::{mark_committed, SinkConsumer};

/// Longest wait for one synchronous Kafka offset commit.
pub(crate) const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Stores and commits `positions` — the next offset per partition of a batch
/// that is in PostgreSQL ([`crate::batch::commit_positions`]).
///
/// The commit is synchronous (on a blocking thread) so its result is known:
/// the StreamConsumer does not deliver asynchronous commit results. One
/// round trip per batch, awaited at most `limit` ([`COMMIT_TIMEOUT`], less
/// once shutdown has begun); while a commit is
/// still outstanding the next batch's is skipped (a later one covers it, and
/// a redelivery is skipped by the offsets table).
pub(crate) async fn commit(
    ended: impl std::future::Future<Output = ()>,
    consumer: &Arc<SinkConsumer>,
    positions: Vec<(Arc<str>, i32, i64)>,
    last_commit: &AtomicU64,
    committing: &Arc<AtomicBool>,
    limit: Duration,
) {
    let mut tpl = TopicPartitionList::new();
    for (topic, p, next) in positions {
        if let Err(e) = tpl.add_partition_offset(&topic, p, Offset::Offset(next)) {
            tracing::warn!(error = %e, "cannot build the offset list");
            return;
        }
    }
    if let Err(e) = consumer.store_offsets(&tpl) {
        // Partitions revoked meanwhile: their new owner skips what we wrote.
        tracing::debug!(error = %e, "storing offsets failed");
    }
    if committing.swap(true, Ordering::AcqRel) {
        tracing::debug!("the previous Kafka commit is still outstanding; skipping this one");
        return;
    }
    let c = Arc::clone(consumer);
    let flag = Arc::clone(committing);
    let task = tokio::task::spawn_blocking(move || {
        let r = c.commit(&tpl, CommitMode::Sync);
        flag.store(false, Ordering::Release);
        r
    });
    let waited = tokio::select! {
        r = tokio::time::timeout(limit, task) => r.ok(),
        () = ended => None,
    };
    match waited {
        Some(Ok(Ok(()))) => mark_committed(last_commit),
        Some(Ok(Err(e))) => tracing::warn!(
            error = %e,
            "Kafka offset commit failed; the records are in PostgreSQL and will be skipped if redelivered"
        ),
        Some(Err(e)) => tracing::warn!(error = %e, "Kafka offset commit task failed"),
        None => tracing::warn!(
            "Kafka offset commit did not answer within {limit:?} (at most {COMMIT_TIMEOUT:?}, less what shutdown_timeout left); continuing without waiting (the records are in PostgreSQL and will be skipped if redelivered)"
        ),
    }
}

/// Keeps `website_monitor_last_commit_age_seconds` current until `stop`.
pub async fn commit_age_ticker(last_commit: Arc<AtomicU64>, stop: CancellationToken) {
    let started = m::unix_now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {
                let last = f64::from_bits(last_commit.load(Ordering::Relaxed));
                let since = if last > 0.0 { last } else { started };
                metrics::gauge!(m::LAST_COMMIT_AGE).set((m::unix_now() - since).max(0.0));
            }
        }
    }
}
