//! The transitions topic (`[sink.status] transitions_topic`): every
//! committed site status transition, as JSON keyed by site id, produced
//! after commit from `<table>_transition` (the rows not yet marked
//! published), then marked. At least once: a crash between the produce and
//! the mark produces those transitions again, with the same `id`, which a
//! downstream stage de-duplicates on.

use std::time::Duration;

use connector_common::kafka::KafkaConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::error::SinkError;

/// A producer to the transitions topic.
pub struct Publisher {
    producer: FutureProducer,
    topic: String,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    /// An idempotent producer (acks=all, order kept per site) to `topic`;
    /// a message not delivered within `timeout` fails (and is produced
    /// again by a later round), so undeliverable messages never pile up.
    pub fn new(kafka: &KafkaConfig, topic: &str, timeout: Duration) -> Result<Self, SinkError> {
        let mut c = kafka.client_config();
        let ms = timeout.as_millis().clamp(1_000, 900_000);
        c.set("client.id", "website-monitor-sink-transitions")
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", ms.to_string());
        kafka.apply_options(&mut c);
        let producer = c.create().map_err(SinkError::Kafka)?;
        Ok(Self {
            producer,
            topic: topic.to_owned(),
        })
    }

    /// Produces `(key, value)` messages in order (per key) and waits for
    /// every acknowledgement; the first failure otherwise.
    pub async fn send(
        &self,
        messages: &[(String, Vec<u8>)],
        timeout: Duration,
    ) -> Result<(), String> {
        let sends = messages.iter().map(|(k, v)| {
            let r: FutureRecord<'_, str, [u8]> = FutureRecord::to(&self.topic)
                .key(k.as_str())
                .payload(v.as_slice());
            self.producer.send(r, timeout)
        });
        for res in futures::future::join_all(sends).await {
            res.map_err(|(e, _)| format!("producing to {}: {e}", self.topic))?;
        }
        Ok(())
    }
}
