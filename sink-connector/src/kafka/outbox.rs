//! Produce after commit (an outbox), for the sink's two optional topics:
//! rows the batch transaction committed (`<table>_transition`,
//! `<table>_rejected`) wait in their table unmarked; a task per topic
//! produces them and marks each one the brokers acknowledged.
//!
//! ```text
//! every second, on a PostgreSQL connection of its own:
//!   pg_try_advisory_lock(table)      one sink at a time drains a table (the others skip)
//!   loop { pending: ≤ 500, oldest first          (Outbox::pending)
//!          produce, wait for the acknowledgements (each batch within write_timeout)
//!          mark the acknowledged ones            (Outbox::mark) }
//!   backlog gauge: rows still unmarked
//! ```
//!
//! At least once: a crash, a timeout or a PostgreSQL error between a
//! produce and its mark produces those rows again, with the same ids (the
//! transitions) or original positions (the dead letters) to de-duplicate
//! on. A message that fails is tried again in a later round; the others of
//! its batch are marked.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use connector_common::kafka::KafkaConfig;
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_postgres::{Client, Statement};

use crate::error::SinkError;
use crate::metrics as m;
use crate::postgres::error::db_message;
use crate::postgres::shared::Shared;
use crate::postgres::sql::connect;

/// How often rows not produced yet are looked for.
const EVERY: Duration = Duration::from_secs(1);
/// The wait after a failed round.
const RETRY: Duration = Duration::from_secs(10);
/// At most this many rows per produce.
pub(crate) const LIMIT: i64 = 500;
/// The first key of the outbox's advisory lock (the second is the table's
/// oid): class 0x5715_0003 (migrations take 0x5715_0001, partition makers
/// 0x5715_0002).
const LOCK_CLASS: i32 = 0x5715_0003;

/// One message to produce, and what marks its row as produced.
pub(crate) struct Letter<M> {
    /// The message key.
    pub key: Option<Vec<u8>>,
    /// The message value.
    pub value: Option<Vec<u8>>,
    /// The message headers.
    pub headers: Option<OwnedHeaders>,
    /// Names the row, for [`Outbox::mark`].
    pub mark: M,
}

/// A table of committed rows to produce to a topic, through three
/// statements: the pending rows, the mark, the backlog count.
pub(crate) trait Outbox: Send + Sync + 'static {
    /// What names one row (its key).
    type Mark: Send + Sync;
    /// The `stream` label of the metrics and the name in the log.
    const STREAM: &'static str;
    /// The counter of rows produced and marked.
    const PRODUCED: &'static str;
    /// The table the rows wait in, quoted (the advisory lock's key).
    fn table(&self) -> &str;
    /// The SQL of the statements: at most `$1` rows not produced yet,
    /// oldest first; the mark (its parameters are [`Outbox::mark`]'s); the
    /// number of rows not produced yet.
    fn statements(&self) -> [&str; 3];
    /// The letter of one row of the first statement.
    fn letter(row: &tokio_postgres::Row) -> Letter<Self::Mark>;
    /// Marks these rows produced with the second statement.
    fn mark<'a>(
        &'a self,
        client: &'a Client,
        mark: &'a Statement,
        marks: Vec<&'a Self::Mark>,
    ) -> impl Future<Output = Result<(), tokio_postgres::Error>> + Send + 'a;
}

/// An idempotent producer to one topic.
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
    /// An idempotent producer (acks=all, order kept per key) to `topic`;
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

    /// Produces `letters` in order (per key) and waits for every
    /// acknowledgement: per letter, delivered or why not.
    async fn send<M>(&self, letters: &[Letter<M>], timeout: Duration) -> Vec<Result<(), String>> {
        let sends = letters.iter().map(|l| {
            let mut r: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic);
            if let Some(h) = &l.headers {
                r = r.headers(h.clone());
            }
            if let Some(k) = &l.key {
                r = r.key(k.as_slice());
            }
            if let Some(v) = &l.value {
                r = r.payload(v.as_slice());
            }
            self.producer.send(r, timeout)
        });
        futures::future::join_all(sends)
            .await
            .into_iter()
            .map(|res| {
                res.map(|_| ())
                    .map_err(|(e, _)| format!("producing to {}: {e}", self.topic))
            })
            .collect()
    }
}

/// The task's PostgreSQL connection, its statements, and whether it holds
/// the table's advisory lock (held until the connection closes).
struct Conn {
    client: Client,
    statements: [Statement; 3],
    locked: bool,
}

/// The outbox's task, until shutdown: a round about every second (see the
/// module doc); a failed round is logged, counted and tried again [`RETRY`]
/// later on a fresh connection (which gives up the lock).
pub(crate) async fn drain_until_shutdown<O: Outbox>(
    shared: Arc<Shared>,
    outbox: O,
    publisher: Publisher,
) {
    let stop = shared.shutdown.clone();
    let mut conn: Option<Conn> = None;
    loop {
        let wait = match round(&shared, &outbox, &publisher, &mut conn).await {
            Ok(()) => EVERY,
            Err(problem) => {
                conn = None;
                metrics::counter!(m::PUBLISH_FAILURES, "stream" => O::STREAM).increment(1);
                tracing::warn!(stream = O::STREAM, topic = %publisher.topic, error = %problem,
                    "producing committed rows to their topic failed; trying again in {RETRY:?} (at least once: some may be produced twice)");
                RETRY
            }
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// One round: connects and takes the lock when needed, then produces and
/// marks batches of at most [`LIMIT`] until none is left (each batch within
/// `write_timeout`), then sets the backlog gauge.
async fn round<O: Outbox>(
    shared: &Shared,
    outbox: &O,
    p: &Publisher,
    conn: &mut Option<Conn>,
) -> Result<(), String> {
    let limit = shared.cfg.write_timeout;
    let within = |what: &'static str| move |_| format!("{what} took longer than write_timeout");
    if conn.is_none() {
        let connecting = async {
            let client = connect(&shared.target, &shared.tls).await?;
            let [pending, mark, backlog] = outbox.statements();
            let statements = [
                client.prepare(pending).await?,
                client.prepare(mark).await?,
                client.prepare(backlog).await?,
            ];
            Ok::<_, tokio_postgres::Error>(Conn {
                client,
                statements,
                locked: false,
            })
        };
        let fresh = tokio::time::timeout(limit, connecting)
            .await
            .map_err(within("connecting"))?;
        *conn = Some(fresh.map_err(|e| db_message(&e))?);
    }
    let Some(c) = conn.as_mut() else {
        return Ok(());
    };
    if !c.locked {
        let lock = "SELECT pg_try_advisory_lock($1, $2::text::regclass::oid::int4)";
        let table = outbox.table();
        let taken = tokio::time::timeout(limit, c.client.query_one(lock, &[&LOCK_CLASS, &table]))
            .await
            .map_err(within("taking the lock"))?;
        c.locked = taken.map_err(|e| db_message(&e))?.get(0);
    }
    if c.locked {
        while tokio::time::timeout(limit, batch(outbox, p, c, limit))
            .await
            .map_err(within("a batch"))??
        {}
    }
    let backlog = tokio::time::timeout(limit, c.client.query_one(&c.statements[2], &[]))
        .await
        .map_err(within("counting the backlog"))?
        .map_err(|e| db_message(&e))?;
    let backlog: i64 = backlog.get(0);
    metrics::gauge!(m::PUBLISH_BACKLOG, "stream" => O::STREAM).set(backlog as f64);
    Ok(())
}

/// One batch: pending rows produced, the acknowledged ones marked; whether
/// a full batch was done (more may wait).
async fn batch<O: Outbox>(
    outbox: &O,
    p: &Publisher,
    c: &Conn,
    timeout: Duration,
) -> Result<bool, String> {
    let rows = c
        .client
        .query(&c.statements[0], &[&LIMIT])
        .await
        .map_err(|e| db_message(&e))?;
    let letters: Vec<Letter<O::Mark>> = rows.iter().map(O::letter).collect();
    if letters.is_empty() {
        return Ok(false);
    }
    let results = p.send(&letters, timeout).await;
    let mut first_error = None;
    let mut done = Vec::with_capacity(letters.len());
    for (letter, result) in letters.iter().zip(results) {
        match result {
            Ok(()) => done.push(&letter.mark),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let produced = done.len() as u64;
    if !done.is_empty() {
        outbox
            .mark(&c.client, &c.statements[1], done)
            .await
            .map_err(|e| db_message(&e))?;
        metrics::counter!(O::PRODUCED).increment(produced);
    }
    match first_error {
        Some(e) => Err(format!(
            "{e} ({} of {} in the batch failed; the others are marked)",
            letters.len() as u64 - produced,
            letters.len()
        )),
        None => Ok(letters.len() as i64 >= LIMIT),
    }
}
