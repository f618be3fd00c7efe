//! The dead-letter topic (`[sink] dead_letter_topic`): each reject, once its
//! row is committed in `<table>_rejected`, produced with its original key and
//! value and headers saying where it came from and why it was refused (the
//! names Kafka Connect's `errors.deadletterqueue.*` uses), then marked
//! (`dead_lettered_at`). At least once: a crash between the produce and the
//! mark produces those again, with the same original position in their
//! headers to de-duplicate on.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rdkafka::message::{Header, OwnedHeaders};
use tokio_postgres::{Client, Row};

use crate::kafka::transitions::Publisher;
use crate::metrics as m;
use crate::postgres::error::db_message;
use crate::postgres::shared::Shared;
use crate::postgres::sql::connect;

/// How often rejects not produced yet are looked for.
const EVERY: Duration = Duration::from_secs(1);
/// The wait after a failed round.
const RETRY: Duration = Duration::from_secs(10);
/// At most this many rejects per produce.
const LIMIT: i64 = 500;
/// The most of a rejected value a dead letter carries: Kafka's default
/// message size limit is 1 MB, and the rejects table keeps up to 1 MiB.
const MAX_VALUE_BYTES: usize = 512 * 1024;

/// One reject, as the dead-letter topic gets it.
struct DeadLetter {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: OwnedHeaders,
    position: (String, i32, i64),
}

impl DeadLetter {
    /// The reject of a `<table>_rejected` row (see [`select`]).
    fn of(row: &Row) -> Self {
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
        Self {
            key: row.get(3),
            value,
            headers,
            position: (topic, partition, offset),
        }
    }
}

/// The dead-letter topic's own task, until shutdown: about every second the
/// rejects not produced yet, oldest first, are produced, then marked. On a
/// PostgreSQL connection of its own, so a produce that hangs never holds up
/// the batches; a failed round is logged and tried again [`RETRY`] later.
pub(crate) async fn dead_letters_until_shutdown(shared: Arc<Shared>, publisher: Publisher) {
    let stop = shared.shutdown.clone();
    let mut conn: Option<Client> = None;
    loop {
        let wait = match round(&shared, &publisher, &mut conn).await {
            Ok(()) => EVERY,
            Err(problem) => {
                conn = None;
                tracing::warn!(error = %problem, "producing rejected records to the dead-letter topic failed; trying again in {RETRY:?} (at least once: some may be produced twice)");
                RETRY
            }
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// The rejects not produced yet, oldest first (rows with an empty reason
/// only mark a position and are never produced).
fn select(rejected: &str) -> String {
    format!(
        "SELECT topic, \"partition\", \"offset\", key, raw, reason, detail,
                CASE WHEN raw_length > length(raw) THEN raw_length END, rejected_at
         FROM {rejected} WHERE dead_lettered_at IS NULL AND reason <> ''
         ORDER BY rejected_at, topic, \"partition\", \"offset\" LIMIT $1"
    )
}

/// One round: connects when needed, then produces and marks batches of at
/// most [`LIMIT`] until none is left, within `write_timeout`.
async fn round(shared: &Shared, p: &Publisher, conn: &mut Option<Client>) -> Result<(), String> {
    let limit = shared.cfg.write_timeout;
    let rejected = &shared.tables.rejected;
    let run = async {
        if conn.is_none() {
            let client = connect(&shared.target, &shared.tls)
                .await
                .map_err(|e| db_message(&e))?;
            *conn = Some(client);
        }
        let Some(client) = conn.as_ref() else {
            return Ok(());
        };
        let mark = format!(
            "UPDATE {rejected} AS r SET dead_lettered_at = now()
             FROM unnest($1::text[], $2::int4[], $3::int8[]) AS v(t, p, o)
             WHERE r.topic = v.t AND r.\"partition\" = v.p AND r.\"offset\" = v.o
               AND r.dead_lettered_at IS NULL"
        );
        loop {
            let rows = client
                .query(&select(rejected), &[&LIMIT])
                .await
                .map_err(|e| db_message(&e))?;
            if rows.is_empty() {
                return Ok::<(), String>(());
            }
            let letters: Vec<DeadLetter> = rows.iter().map(DeadLetter::of).collect();
            let messages: Vec<_> = letters
                .iter()
                .map(|l| (l.key.as_deref(), l.value.as_deref(), l.headers.clone()))
                .collect();
            p.send_with_headers(&messages, limit).await?;
            let topics: Vec<&str> = letters.iter().map(|l| l.position.0.as_str()).collect();
            let partitions: Vec<i32> = letters.iter().map(|l| l.position.1).collect();
            let offsets: Vec<i64> = letters.iter().map(|l| l.position.2).collect();
            client
                .execute(&mark, &[&topics, &partitions, &offsets])
                .await
                .map_err(|e| db_message(&e))?;
            metrics::counter!(m::RECORDS_DEAD_LETTERED).increment(letters.len() as u64);
            if (rows.len() as i64) < LIMIT {
                return Ok(());
            }
        }
    };
    match tokio::time::timeout(limit, run).await {
        Ok(r) => r,
        Err(_) => Err("took longer than write_timeout".to_owned()),
    }
}
