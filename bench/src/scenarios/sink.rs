//! The sink scenarios: records/s from a filled topic into PostgreSQL against
//! a raw `COPY` of the same rows (the COPY baseline brackets the sink), and
//! the time a sink killed with -9 takes to store again with static against
//! dynamic group membership. Also the records they write and how a topic is
//! filled.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::{now_secs, start_sink, Ctx, SINK_METRICS};
use crate::proc::{metric_sum, CpuSample};
use crate::report::Figure;
use website_monitor_tests::{pg, producer, unique, unique_ident};

/// The sink's run in [`sink_throughput`]: from its start to its last row.
struct SinkRun {
    /// Seconds from the sink's start until every record was stored.
    elapsed: f64,
    /// The machine's CPU at the sink's start.
    cpu0: CpuSample,
    /// The machine's CPU once every record was stored.
    cpu1: CpuSample,
    /// Seconds spent inside batch transactions, summed over the writers.
    write_s: f64,
    /// Batch transactions, over the writers.
    batches: f64,
    /// The sink's own CPU seconds.
    cpu: f64,
    /// The sink's peak RSS, MiB.
    rss: f64,
}

/// The COPY baseline: the fastest of the rounds before the sink and of those
/// after it, and the slowest of all.
struct CopyBaseline {
    before: f64,
    after: f64,
    slowest: f64,
}

/// Sink records/s (history + latest + offsets after commit) against a raw COPY
/// of the same rows into a plain jsonb table, in the same run.
pub async fn sink_throughput(ctx: &Ctx) -> Result<Vec<Figure>> {
    let n = ctx.n(300_000);
    let urls = ctx.n(3_000);
    let t0 = now_secs();
    let records: Vec<String> = (0..n)
        .map(|i| record(i, urls, t0 + i as f64 / 1000.0))
        .collect();
    let avg_bytes = records.iter().map(String::len).sum::<usize>() as f64 / n as f64;

    // Baseline: COPY the same JSON into a plain table, twice before the sink
    // and twice right after it (a fresh table each time). The fastest of each
    // pair counts and the baseline is their mean: the ratio is against the
    // COPY at its best, and a drift of the machine while the sink runs (the
    // same code's CPU per record moved 25-60 % between runs here) hits both
    // sides alike, as with ab around the source's window.
    let client = pg(&ctx.stack.postgres_uri).await;
    let copy_text = copy_text(&records);
    let copies_before = copy_rates(&client, &copy_text, 2).await?;

    // Fill a topic, then time the sink from its start to the last row.
    let topic = ctx.topic("bench-sink").await;
    fill_topic(&producer(&ctx.stack.brokers), &topic, &records).await?;
    read_through(&ctx.stack.brokers, &topic, n).await?;
    let schema = unique_ident("bench_sink");
    let config = sink_config(ctx, &topic, &schema)?;
    client
        .batch_execute(&format!("CREATE SCHEMA \"{schema}\""))
        .await?;
    let run = run_sink(ctx, &client, &config, &schema, &topic, n).await?;
    let latest: i64 = client
        .query_one(&format!("SELECT count(*) FROM \"{schema}\".site"), &[])
        .await?
        .get(0);
    client
        .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .await?;
    let copies_after = copy_rates(&client, &copy_text, 2).await?;
    let copy = copy_baseline(&copies_before, &copies_after);
    Ok(sink_figures(n, avg_bytes, latest, &run, &copy))
}

/// `records` as the text of a `COPY ... FROM STDIN`: one per line, backslashes escaped.
fn copy_text(records: &[String]) -> bytes::Bytes {
    let mut text = String::with_capacity(records.len() * 300);
    for r in records {
        text.push_str(&r.replace('\\', "\\\\"));
        text.push('\n');
    }
    bytes::Bytes::from(text)
}

/// The fastest COPY before and after the sink, and the slowest of all.
fn copy_baseline(before: &[f64], after: &[f64]) -> CopyBaseline {
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

/// Writes `sink.toml` for [`sink_throughput`]: `topic` into `schema`, with
/// the experiment's extra lines.
fn sink_config(ctx: &Ctx, topic: &str, schema: &str) -> Result<PathBuf> {
    ctx.write(
        "sink.toml",
        &format!(
            "log_level = \"warn\"\n[kafka]\nbrokers = \"{}\"\n[sink]\ntopic = \"{topic}\"\ngroup_id = \"{}\"\npostgres_uri = \"{}\"\nschema = \"{schema}\"\nmetrics_address = \"{SINK_METRICS}\"\n{}\n",
            ctx.stack.brokers,
            unique("bench-group"),
            ctx.stack.postgres_uri,
            ctx.sink_extra,
        ),
    )
}

/// The query of the records the sink stored from `topic`: a sum of
/// `next_offset` in `schema`'s offsets table.
fn stored_sql(schema: &str) -> String {
    format!(
        "SELECT coalesce(sum(next_offset), 0)::int8 FROM \"{schema}\".site_kafka_offsets WHERE topic = $1"
    )
}

/// Starts the sink on `config` and stops it once all `n` records of `topic`
/// are stored in `schema`; what it took.
async fn run_sink(
    ctx: &Ctx,
    client: &tokio_postgres::Client,
    config: &Path,
    schema: &str,
    topic: &str,
    n: usize,
) -> Result<SinkRun> {
    let started = Instant::now();
    let cpu0 = CpuSample::now();
    let c = start_sink(ctx, config, &ctx.work.join("sink.log"))?;
    // Stored records, read from the sink's offsets table (a few rows, updated
    // in each batch's transaction): cheap to poll, unlike a count(*) over the
    // growing history table, which cost PostgreSQL ~9 s of CPU in one run.
    let stored_sql = stored_sql(schema);
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let done = match client.query_one(&stored_sql, &[&topic]).await {
            Ok(row) => row.get::<_, i64>(0) as usize >= n,
            Err(_) => false, // tables not created yet
        };
        if done {
            break;
        }
        if Instant::now() > deadline {
            bail!("the sink did not store {n} records within 600 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu1 = CpuSample::now();
    // Where the time went: inside batch transactions, or elsewhere (start-up,
    // fetching, offset commits).
    let text = c.scrape()?;
    let run = SinkRun {
        elapsed,
        cpu0,
        cpu1,
        write_s: metric_sum(&text, "website_monitor_batch_write_seconds_sum"),
        batches: metric_sum(&text, "website_monitor_batch_write_seconds_count"),
        cpu: c.cpu_seconds(),
        rss: c.peak_rss() as f64 / 1048576.0,
    };
    c.stop()?;
    Ok(run)
}

/// The figures of [`sink_throughput`].
fn sink_figures(
    n: usize,
    avg_bytes: f64,
    latest: i64,
    run: &SinkRun,
    copy: &CopyBaseline,
) -> Vec<Figure> {
    let rate = n as f64 / run.elapsed;
    let copy_rate = (copy.before + copy.after) / 2.0;
    vec![
        Figure::plain("sink.records", n as f64, "records"),
        Figure::plain("sink.avg_record_bytes", avg_bytes, "bytes"),
        Figure::against(
            "sink.records_per_s",
            rate,
            "records/s",
            copy_rate,
            "raw COPY (jsonb): mean of the fastest of 2 before and of 2 after",
            "ratio >= 0.5",
        ),
        Figure::plain("sink.copy_before", copy.before, "rows/s"),
        Figure::plain("sink.copy_after", copy.after, "rows/s"),
        Figure::plain("sink.copy_slowest_of_4", copy.slowest, "rows/s"),
        Figure::plain("sink.latest_rows", latest as f64, "rows"),
        // Both per writer: each part of a batch is one writer's transaction.
        Figure::plain("sink.writer_transactions", run.batches, "transactions"),
        Figure::plain(
            "sink.writers_busy_on_average",
            run.write_s / run.elapsed,
            "writers",
        ),
        Figure::plain(
            "sink.cpu_s_per_1000_records",
            run.cpu / n as f64 * 1000.0,
            "cpu-s",
        ),
        Figure::plain("sink.peak_rss", run.rss, "MiB"),
        Figure::plain(
            "sink.machine_busy",
            run.cpu1.busy_since(&run.cpu0),
            "fraction",
        ),
        Figure::plain(
            "sink.postgres_cpu_s_per_1000_records",
            run.cpu1.used_by(&run.cpu0, "postgres") / n as f64 * 1000.0,
            "cpu-s",
        ),
    ]
}

/// A sink killed with -9 and started again in the same group: seconds from
/// the new process's start to its first stored record, with static
/// membership (`group_instance_id`, the same id again) against the baseline
/// of dynamic membership, where the dead member's partitions wait for its
/// session timeout (librdkafka default 45 s).
pub async fn sink_resume(ctx: &Ctx) -> Result<Vec<Figure>> {
    let client = pg(&ctx.stack.postgres_uri).await;
    let p = producer(&ctx.stack.brokers);
    let n = ctx.n(20_000).max(2_000);
    let mut took = Vec::new();
    for with_id in [true, false] {
        took.push(resume_once(ctx, &client, &p, n, with_id).await?);
    }
    Ok(vec![Figure::against(
        "sink.resume_after_kill9_s",
        took[0],
        "s",
        took[1],
        "dynamic membership (no group_instance_id)",
        "< 5 s",
    )])
}

/// One round of [`sink_resume`] on a fresh topic and schema, with a
/// `group_instance_id` or without: half the `n` records in, a sink started
/// and killed with -9 once it stored some, the other half in, a sink started
/// again; seconds from its start to its first stored record.
async fn resume_once(
    ctx: &Ctx,
    client: &tokio_postgres::Client,
    p: &FutureProducer,
    n: usize,
    with_id: bool,
) -> Result<f64> {
    let topic = ctx.topic("bench-resume").await;
    let schema = unique_ident("bench_resume");
    client
        .batch_execute(&format!("CREATE SCHEMA \"{schema}\""))
        .await?;
    let t0 = now_secs();
    let records: Vec<String> = (0..n)
        .map(|i| record(i, 100, t0 + i as f64 / 1000.0))
        .collect();
    let config = resume_config(ctx, &topic, &schema, with_id)?;
    let log = ctx.work.join("sink-resume.log");
    let stored_sql = stored_sql(&schema);
    let (first, rest) = records.split_at(n / 2);
    fill_topic(p, &topic, first).await?;
    let crashed = start_sink(ctx, &config, &log)?;
    wait_stored(client, &stored_sql, &topic, 0, 120, "sink", &log).await?;
    crashed.kill9()?;
    fill_topic(p, &topic, rest).await?;
    let at_kill = stored_records(client, &stored_sql, &topic).await;
    let started = Instant::now();
    let again = start_sink(ctx, &config, &log)?;
    wait_stored(
        client,
        &stored_sql,
        &topic,
        at_kill,
        180,
        "restarted sink",
        &log,
    )
    .await?;
    let took = started.elapsed().as_secs_f64();
    again.stop()?;
    client
        .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .await?;
    Ok(took)
}

/// Writes `sink-resume.toml` for [`resume_once`]: small batches, and a fresh
/// `group_instance_id` when `with_id`.
fn resume_config(ctx: &Ctx, topic: &str, schema: &str, with_id: bool) -> Result<PathBuf> {
    let id = if with_id {
        format!("group_instance_id = \"{}\"\n", unique("bench-sink"))
    } else {
        String::new()
    };
    ctx.write(
        "sink-resume.toml",
        &format!(
            "log_level = \"warn\"\n[kafka]\nbrokers = \"{}\"\n[sink]\ntopic = \"{topic}\"\ngroup_id = \"{}\"\npostgres_uri = \"{}\"\nschema = \"{schema}\"\nbatch_size = 500\nmetrics_address = \"{SINK_METRICS}\"\n{id}",
            ctx.stack.brokers,
            unique("bench-group"),
            ctx.stack.postgres_uri,
        ),
    )
}

/// Polls every 20 ms until more than `above` records of `topic` are stored;
/// fails after `secs` seconds, naming `who` and its `log`.
async fn wait_stored(
    client: &tokio_postgres::Client,
    sql: &str,
    topic: &str,
    above: i64,
    secs: u64,
    who: &str,
    log: &Path,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while stored_records(client, sql, topic).await <= above {
        if Instant::now() > deadline {
            bail!(
                "the {who} stored nothing within {secs} s; see {}",
                log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// What `sql` (a sum of `next_offset` for `topic`) says is stored; 0 before the tables exist.
async fn stored_records(client: &tokio_postgres::Client, sql: &str, topic: &str) -> i64 {
    client
        .query_one(sql, &[&topic])
        .await
        .map_or(0, |r| r.get::<_, i64>(0))
}

/// Rows/s of `rounds` text COPYs of `text` into a fresh
/// `(id bigserial, data jsonb)` table each (dropped afterwards).
async fn copy_rates(
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
async fn read_through(brokers: &str, topic: &str, n: usize) -> Result<()> {
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

/// Produces `records` to `topic`, keyed by their url, 10,000 in flight at most.
async fn fill_topic(p: &FutureProducer, topic: &str, records: &[String]) -> Result<()> {
    for chunk in records.chunks(10_000) {
        let sends = chunk.iter().map(|r| {
            let url = r
                .split("\"url\":\"")
                .nth(1)
                .and_then(|s| s.split('"').next())
                .unwrap_or("");
            p.send(
                FutureRecord::to(topic).key(url).payload(r.as_str()),
                Duration::from_secs(60),
            )
        });
        for res in futures::future::join_all(sends).await {
            res.map_err(|(e, _)| anyhow::anyhow!("filling {topic}: {e}"))?;
        }
    }
    Ok(())
}

/// A source-schema record of about 280 bytes.
fn record(i: usize, urls: usize, t: f64) -> String {
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
