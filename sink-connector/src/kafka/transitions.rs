//! The transitions topic (`[sink.status] transitions_topic`): every
//! committed site status transition, as JSON keyed by site id, produced
//! after commit from `<table>_transition` (the rows not yet marked
//! published), then marked. At least once: a crash between the produce and
//! the mark produces those transitions again, with the same `id`, which a
//! downstream stage de-duplicates on.

use std::sync::Arc;
use std::time::Duration;

use connector_common::kafka::KafkaConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_postgres::Client;

use crate::error::SinkError;
use crate::metrics as m;
use crate::postgres::error::db_message;
use crate::postgres::shared::Shared;
use crate::postgres::sql::connect;
use crate::postgres::status_rows::{self, StatusStatements};

/// A message with headers: key, value (each optional) and headers.
pub type Headed<'a> = (
    Option<&'a [u8]>,
    Option<&'a [u8]>,
    rdkafka::message::OwnedHeaders,
);

/// A producer to the transitions topic (and the dead-letter topic).
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
        c.set("client.id", format!("website-monitor-sink-{topic}"))
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

    /// Produces `(key, value, headers)` messages in order and waits for
    /// every acknowledgement; the first failure otherwise.
    pub async fn send_with_headers(
        &self,
        messages: &[Headed<'_>],
        timeout: Duration,
    ) -> Result<(), String> {
        let sends = messages.iter().map(|(k, v, h)| {
            let mut r: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&self.topic).headers(h.clone());
            if let Some(k) = k {
                r = r.key(*k);
            }
            if let Some(v) = v {
                r = r.payload(*v);
            }
            self.producer.send(r, timeout)
        });
        for res in futures::future::join_all(sends).await {
            res.map_err(|(e, _)| format!("producing to {}: {e}", self.topic))?;
        }
        Ok(())
    }
}

/// How often the committed transitions not produced yet are looked for.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);
/// The wait after a failed round.
const PUBLISH_RETRY: Duration = Duration::from_secs(10);
/// At most this many transitions per round.
const PUBLISH_LIMIT: i64 = 500;

/// The transitions topic's own task, until shutdown: about every second,
/// the committed transitions not produced yet, oldest per site first, are
/// produced, then marked (at least once: a failure or a crash in between
/// produces them again, same ids). On a PostgreSQL connection of its own,
/// so a produce that hangs (topic missing, brokers not acknowledging) never
/// holds up the batches; a failed round is logged and tried again
/// [`PUBLISH_RETRY`] later on a fresh connection.
pub(crate) async fn publish_until_shutdown(shared: Arc<Shared>, publisher: Publisher) {
    let stop = shared.shutdown.clone();
    let mut conn: Option<(Client, StatusStatements)> = None;
    loop {
        let wait = match round(&shared, &publisher, &mut conn).await {
            Ok(()) => PUBLISH_EVERY,
            Err(problem) => {
                conn = None;
                tracing::warn!(error = %problem, "producing site status transitions failed; trying again in {PUBLISH_RETRY:?} (at least once: some may be produced twice)");
                PUBLISH_RETRY
            }
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// One round: connects when needed, then produces and marks batches of at
/// most [`PUBLISH_LIMIT`] until none is left, within `write_timeout`.
async fn round(
    shared: &Shared,
    p: &Publisher,
    conn: &mut Option<(Client, StatusStatements)>,
) -> Result<(), String> {
    let limit = shared.cfg.write_timeout;
    let run = async {
        if conn.is_none() {
            let client = connect(&shared.target, &shared.tls)
                .await
                .map_err(|e| db_message(&e))?;
            let policy = Arc::clone(&shared.sql.policy);
            let st = StatusStatements::prepare(&client, &shared.sql.status, policy)
                .await
                .map_err(|e| db_message(&e))?;
            *conn = Some((client, st));
        }
        let Some((client, st)) = conn.as_ref() else {
            return Ok(());
        };
        loop {
            let got = status_rows::unpublished(client, st, PUBLISH_LIMIT)
                .await
                .map_err(|e| db_message(&e))?;
            let (msgs, keys): (Vec<_>, Vec<_>) =
                got.into_iter().map(|(k, v, key)| ((k, v), key)).unzip();
            if msgs.is_empty() {
                return Ok::<(), String>(());
            }
            p.send(&msgs, limit).await?;
            status_rows::mark_published(client, st, &keys)
                .await
                .map_err(|e| db_message(&e))?;
            metrics::counter!(m::STATUS_TRANSITIONS_PUBLISHED).increment(keys.len() as u64);
            if (keys.len() as i64) < PUBLISH_LIMIT {
                return Ok(());
            }
        }
    };
    match tokio::time::timeout(limit, run).await {
        Ok(r) => r,
        Err(_) => Err("took longer than write_timeout".to_owned()),
    }
}
