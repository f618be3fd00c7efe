//! Cutting the record stream into batches.
//!
//! A [`Collector`] owns nothing but its limits, so the loop in
//! [`crate::pipeline`] can collect the next batch while the previous one is
//! being written and committed: a batch's `batch_timeout` starts when its
//! first record arrives, not when the previous write ends, and a busy sink
//! writes back to back (measured in `make bench`: docs/benchmarks-history.md,
//! "End to end: keep-alive, `batch_timeout` 100 ms, overlapped batches").
//! While the previous batch is still being written the next one stays open
//! past `batch_timeout`, up to `batch_size` and `batch_max_bytes`: its
//! records would wait for the writers anyway, and a sink catching up on a
//! backlog writes full batches, each site's rows once per batch.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::message::{BorrowedMessage, Message};
use tokio_util::sync::CancellationToken;

use crate::batch::Msg;
use crate::decode::{decode, kafka_time, Limits};
use crate::kafka::consumer::{kafka_error, SinkConsumer};

/// When a batch is complete: whichever of the three limits comes first.
#[derive(Debug, Clone)]
pub struct Collector {
    /// Most records per batch (`batch_size`).
    pub batch_size: usize,
    /// Most payload + key bytes per batch (`batch_max_bytes`).
    pub batch_max_bytes: usize,
    /// Longest a batch's first record waits (`batch_timeout`).
    pub batch_timeout: Duration,
    /// Record limits applied while decoding.
    pub limits: Limits,
    /// Ends a collection early (SIGTERM).
    pub shutdown: CancellationToken,
    /// Longest wait for a first record: then the collection is empty, so the
    /// loop can do its idle work (writer 0's status sweep). `None`: wait on.
    /// Only the wait for the first record is cut (a pending `recv` holds no
    /// record), never a batch being filled.
    pub idle_wait: Option<Duration>,
}

impl Collector {
    /// Collects the next batch: waits for a first record (or shutdown), then
    /// takes more until `batch_size` records, `batch_max_bytes` bytes or
    /// `batch_timeout` — and, when `writing` is given, not before it is
    /// cancelled (the previous batch's write is over). Records of partitions
    /// revoked meanwhile are dropped. Empty after a consumer error, at
    /// shutdown, or after `idle_wait` without a record.
    pub async fn collect(
        &self,
        consumer: &SinkConsumer,
        writing: Option<&CancellationToken>,
    ) -> Vec<Msg> {
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        let mut topic = None;
        let idle = async {
            match self.idle_wait {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        let first = tokio::select! {
            _ = self.shutdown.cancelled() => return batch,
            () = idle => return batch,
            r = consumer.recv() => r,
        };
        match first {
            Ok(msg) => {
                consumer.context().take_revoked();
                let m = self.to_msg(&msg, &mut topic);
                bytes += m.size();
                batch.push(m);
            }
            Err(e) => {
                kafka_error(&e);
                tokio::time::sleep(Duration::from_millis(100)).await;
                return batch;
            }
        }
        let deadline = tokio::time::Instant::now() + self.batch_timeout;
        let (mut timed_out, mut written) = (false, writing.is_none());
        let write_over = async {
            if let Some(w) = writing {
                w.cancelled().await;
            }
        };
        tokio::pin!(write_over);
        while batch.len() < self.batch_size && bytes < self.batch_max_bytes {
            tokio::select! {
                biased;
                r = consumer.recv() => match r {
                    Ok(msg) => {
                        let revoked = consumer.context().take_revoked();
                        if !revoked.is_empty() {
                            let before = batch.len();
                            batch.retain(|m: &Msg| {
                                !revoked.iter().any(|(t, p)| **t == *m.topic && *p == m.partition)
                            });
                            bytes = batch.iter().map(Msg::size).sum();
                            tracing::debug!(dropped = before - batch.len(), "dropped buffered records of revoked partitions");
                        }
                        let m = self.to_msg(&msg, &mut topic);
                        bytes += m.size();
                        batch.push(m);
                        if batch.len() % 256 == 0 {
                            // With a backlog recv() is always ready: let the
                            // write running beside this collection progress.
                            tokio::task::yield_now().await;
                        }
                    }
                    Err(e) => { kafka_error(&e); break; }
                },
                _ = tokio::time::sleep_until(deadline), if !timed_out => {
                    timed_out = true;
                    if written { break }
                }
                () = &mut write_over, if !written => {
                    written = true;
                    if timed_out { break }
                }
                _ = self.shutdown.cancelled() => break,
            }
        }
        batch
    }

    fn to_msg(&self, msg: &BorrowedMessage<'_>, topic: &mut Option<Arc<str>>) -> Msg {
        let payload = msg.payload();
        let decoded = decode(payload, self.limits);
        let topic = match topic {
            Some(t) if **t == *msg.topic() => t.clone(),
            _ => topic.insert(Arc::from(msg.topic())).clone(),
        };
        Msg {
            topic,
            partition: msg.partition(),
            offset: msg.offset(),
            key: msg.key().map(<[u8]>::to_vec),
            timestamp: msg.timestamp().to_millis().and_then(kafka_time),
            received_at: std::time::SystemTime::now(),
            payload: payload.map(<[u8]>::to_vec),
            decoded,
        }
    }
}
