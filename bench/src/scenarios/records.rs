//! What the sink scenarios share: the records they write, how a topic is
//! filled with them (keyed by url or without a key), the raw `COPY` baseline
//! of the same JSON, and how many records a sink has stored.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rdkafka::producer::{FutureProducer, FutureRecord};

use website_monitor_tests::{unique, unique_ident};

/// How records are keyed when a topic is filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    /// Keyed by url: one url stays on one partition (what the source does).
    Url,
    /// No key: the producer spreads each url over the partitions, so several
    /// writers upsert the same latest-state and rollup rows.
    None,
}

/// The COPY baseline: the fastest of the rounds before the sink and of those
/// after it, and the slowest of all.
pub struct CopyBaseline {
    /// Rows/s of the fastest round before the sink.
    pub before: f64,
    /// Rows/s of the fastest round after the sink.
    pub after: f64,
    /// Rows/s of the slowest round.
    pub slowest: f64,
}

/// `records` as the text of a `COPY ... FROM STDIN`: one per line, backslashes escaped.
pub fn copy_text(records: &[String]) -> bytes::Bytes {
    let mut text = String::with_capacity(records.len() * 300);
    for r in records {
        text.push_str(&r.replace('\\', "\\\\"));
        text.push('\n');
    }
    bytes::Bytes::from(text)
}

/// The fastest COPY before and after the sink, and the slowest of all.
pub fn copy_baseline(before: &[f64], after: &[f64]) -> CopyBaseline {
    CopyBaseline {
        before: before.iter().copied().fold(0.0, f64::max),
        after: after.iter().copied().fold(0.0, f64::max),
        slowest: before
            .iter()
            .chain(after)
            .copied()
            .fold(f64::INFINITY, f64::min),
    }
}

/// The query of the records the sink stored from `topic`: a sum of
/// `next_offset` in `schema`'s offsets table.
pub fn stored_sql(schema: &str) -> String {
    format!(
        "SELECT coalesce(sum(next_offset), 0)::int8 FROM \"{schema}\".site_kafka_offsets WHERE topic = $1"
    )
}

/// What `sql` (a sum of `next_offset` for `topic`) says is stored; 0 before the tables exist.
pub async fn stored_records(client: &tokio_postgres::Client, sql: &str, topic: &str) -> i64 {
    client
        .query_one(sql, &[&topic])
        .await
        .map_or(0, |r| r.get::<_, i64>(0))
}

/// Rows/s of `rounds` text COPYs of `text` into a fresh
/// `(id bigserial, data jsonb)` table each (dropped afterwards).
pub async fn copy_rates(
    client: &tokio_postgres::Client,
    text: &bytes::Bytes,
    rounds: usize,
) -> Result<Vec<f64>> {
    use futures::SinkExt;
    let mut rates = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let table = unique_ident("bench_copy");
        client
            .batch_execute(&format!(
                "CREATE TABLE \"{table}\" (id bigserial primary key, data jsonb)"
            ))
            .await?;
        let started = Instant::now();
        let sink = client
            .copy_in(&format!("COPY \"{table}\" (data) FROM STDIN"))
            .await?;
        futures::pin_mut!(sink);
        sink.send(text.clone()).await?;
        let copied = sink.finish().await?;
        rates.push(copied as f64 / started.elapsed().as_secs_f64());
        client
            .batch_execute(&format!("DROP TABLE \"{table}\""))
            .await?;
    }
    Ok(rates)
}

/// Reads `topic` once from the start, `n` records, and drops them: the
/// broker's fetch path is then warm, as a long-running broker's is. In the
/// first sink run after `make up` without it, the sink's 2 writers were
/// inside a transaction 1.39 of the time on average with the machine 79 %
/// busy — waiting for fetches; with it, 1.69 with the machine 89 % busy.
pub async fn read_through(brokers: &str, topic: &str, n: usize) -> Result<()> {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    let c: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("bench-warm-up"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    c.subscribe(&[topic])?;
    for _ in 0..n {
        tokio::time::timeout(Duration::from_secs(30), c.recv())
            .await
            .context("warming the broker up: the topic did not give its records back")??;
    }
    Ok(())
}

/// Produces `records` to `topic`, keyed as `keys` says, 10,000 in flight at most.
pub async fn fill_topic(
    p: &FutureProducer,
    topic: &str,
    records: &[String],
    keys: Keys,
) -> Result<()> {
    for chunk in records.chunks(10_000) {
        let sends = chunk.iter().map(|r| {
            let record = FutureRecord::to(topic).payload(r.as_str());
            let record = match keys {
                Keys::Url => record.key(
                    r.split("\"url\":\"")
                        .nth(1)
                        .and_then(|s| s.split('"').next())
                        .unwrap_or(""),
                ),
                Keys::None => record,
            };
            p.send(record, Duration::from_secs(60))
        });
        for res in futures::future::join_all(sends).await {
            res.map_err(|(e, _)| anyhow::anyhow!("filling {topic}: {e}"))?;
        }
    }
    Ok(())
}

/// A source-schema record of about 280 bytes.
pub fn record(i: usize, urls: usize, t: f64) -> String {
    let ok = i % 17 != 0;
    serde_json::json!({
        "url": format!("https://site-{}.example.com/", i % urls),
        "checked_at": t,
        "status_code": if ok { 200 } else { 503 },
        "duration": 0.0123 + (i % 100) as f64 / 1000.0,
        "re_check": ok,
        "ok": ok,
        "error": if ok { serde_json::Value::Null } else { serde_json::json!({"kind": "status", "message": "unexpected status 503"}) },
        "timings": {"dns": 0.0004, "connect": 0.0011, "tls": null, "ttfb": 0.0081, "transfer": 0.0002},
        "http_version": "HTTP/1.1",
        "response_bytes": 1256,
        "redirects": 0,
        "ip": "127.0.0.1",
        "tls": null,
        "probe": "bench",
        "schema_version": 1
    })
    .to_string()
}
