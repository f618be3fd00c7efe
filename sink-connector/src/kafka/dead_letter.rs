//! The dead-letter topic (`[sink] dead_letter_topic`): each reject, once its
//! row is committed in `<table>_rejected`, produced with its original key and
//! value and headers saying where it came from and why it was refused (the
//! names Kafka Connect's `errors.deadletterqueue.*` uses), then marked
//! (`dead_lettered_at`) — an outbox (`super::outbox`). At least once: a crash, a timeout
//! or a PostgreSQL error between the produce and the mark produces those
//! again, with the same original position in their headers to de-duplicate
//! on.

use std::time::SystemTime;

use rdkafka::message::{Header, OwnedHeaders};
use tokio_postgres::{Client, Row, Statement};

use crate::kafka::outbox::{Letter, Outbox};
use crate::metrics as m;
use crate::migrate::Tables;

/// The most of a rejected value a dead letter carries: Kafka's default
/// message size limit is 1 MB, and the rejects table keeps up to 1 MiB.
const MAX_VALUE_BYTES: usize = 512 * 1024;

/// A reject's original position: topic, partition, offset.
type Position = (String, i32, i64);

/// The reject of a `<table>_rejected` row (see [`DeadLetters::new`]), as
/// the dead-letter topic gets it.
fn letter(row: &Row) -> Letter<Position> {
    let (topic, partition, offset): (String, i32, i64) = (row.get(0), row.get(1), row.get(2));
    let reason: String = row.get(5);
    let detail: Option<String> = row.get(6);
    let raw_length: Option<i64> = row.get(7);
    let rejected_at: SystemTime = row.get(8);
    let at_ms = rejected_at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut fields = vec![
        ("__connect.errors.topic", topic.clone()),
        ("__connect.errors.partition", partition.to_string()),
        ("__connect.errors.offset", offset.to_string()),
        (
            "__connect.errors.connector.name",
            "website-monitor-sink".to_owned(),
        ),
        (
            "__connect.errors.exception.message",
            detail.clone().unwrap_or_else(|| reason.clone()),
        ),
        ("website-monitor.reason", reason),
        ("website-monitor.rejected-at-ms", at_ms.to_string()),
    ];
    if let Some(d) = detail {
        fields.push(("website-monitor.detail", d));
    }
    let mut value: Option<Vec<u8>> = row.get(4);
    let stored = value.as_ref().map_or(0, Vec::len) as i64;
    if let Some(v) = value.as_mut().filter(|v| v.len() > MAX_VALUE_BYTES) {
        v.truncate(MAX_VALUE_BYTES);
    }
    let sent = value.as_ref().map_or(0, Vec::len) as i64;
    if let Some(n) = raw_length.or((sent < stored).then_some(stored)) {
        // The value carried is the record's first bytes only.
        fields.push(("website-monitor.raw-length", n.to_string()));
    }
    let headers = fields.iter().fold(
        OwnedHeaders::new_with_capacity(fields.len()),
        |h, (k, v)| {
            h.insert(Header {
                key: k,
                value: Some(v.as_str()),
            })
        },
    );
    Letter {
        key: row.get(3),
        value,
        headers: Some(headers),
        mark: (topic, partition, offset),
    }
}

/// The rejects table as an outbox.
pub(crate) struct DeadLetters {
    table: String,
    pending: String,
    mark: String,
    backlog: String,
}

impl DeadLetters {
    /// The statements over `tables`' rejects table. Rows with an empty
    /// reason only mark a position and are never produced.
    pub(crate) fn new(tables: &Tables) -> Self {
        let rejected = &tables.rejected;
        Self {
            pending: format!(
                "SELECT topic, \"partition\", \"offset\", key, raw, reason, detail,
                        CASE WHEN raw_length > length(raw) THEN raw_length END, rejected_at
                 FROM {rejected} WHERE dead_lettered_at IS NULL AND reason <> ''
                 ORDER BY rejected_at, topic, \"partition\", \"offset\" LIMIT $1"
            ),
            mark: format!(
                "UPDATE {rejected} AS r SET dead_lettered_at = now()
                 FROM unnest($1::text[], $2::int4[], $3::int8[]) AS v(t, p, o)
                 WHERE r.topic = v.t AND r.\"partition\" = v.p AND r.\"offset\" = v.o
                   AND r.dead_lettered_at IS NULL"
            ),
            backlog: format!(
                "SELECT count(*) FROM {rejected} WHERE dead_lettered_at IS NULL AND reason <> ''"
            ),
            table: rejected.clone(),
        }
    }
}

impl Outbox for DeadLetters {
    type Mark = Position;
    const STREAM: &'static str = "dead_letters";
    const PRODUCED: &'static str = m::RECORDS_DEAD_LETTERED;

    fn table(&self) -> &str {
        &self.table
    }

    fn statements(&self) -> [&str; 3] {
        [&self.pending, &self.mark, &self.backlog]
    }

    fn letter(row: &Row) -> Letter<Position> {
        letter(row)
    }

    async fn mark(
        &self,
        client: &Client,
        mark: &Statement,
        marks: Vec<&Position>,
    ) -> Result<(), tokio_postgres::Error> {
        let topics: Vec<&str> = marks.iter().map(|p| p.0.as_str()).collect();
        let partitions: Vec<i32> = marks.iter().map(|p| p.1).collect();
        let offsets: Vec<i64> = marks.iter().map(|p| p.2).collect();
        client
            .execute(mark, &[&topics, &partitions, &offsets])
            .await?;
        Ok(())
    }
}
