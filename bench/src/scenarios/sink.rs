//! The sink's throughput: records/s from a filled topic into PostgreSQL
//! against a raw `COPY` of the same JSON (the COPY baseline brackets the
//! sink), with records keyed by url or without a key, and the bytes each
//! stored check takes on disk.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use super::disk;
use super::records::{
    copy_baseline, copy_rates, copy_text, fill_topic, read_through, record, stored_sql,
    CopyBaseline, Keys,
};
use super::{now_secs, start_sink, Ctx, SINK_METRICS};
use crate::proc::{metric_sum, CpuSample};
use crate::report::Figure;
use website_monitor_sink::migrate::Tables;
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

/// What the sink left in its schema, read before the schema is dropped.
struct Stored {
    /// Rows of the latest-state table.
    latest: i64,
    /// The history's partitions on disk.
    history: disk::Disk,
}

/// Sink records/s (history + rollups + latest + offsets after commit) against
/// a raw COPY of the same rows into a plain jsonb table, in the same run,
/// with the topic filled as `keys` says; and the history's bytes per row.
/// Figures are named `sink.*` (keyed by url) or `sink_keyless.*`.
pub async fn sink_throughput(ctx: &Ctx, keys: Keys) -> Result<Vec<Figure>> {
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
    fill_topic(&producer(&ctx.stack.brokers), &topic, &records, keys).await?;
    read_through(&ctx.stack.brokers, &topic, n).await?;
    let schema = unique_ident("bench_sink");
    let config = sink_config(ctx, &topic, &schema)?;
    client
        .batch_execute(&format!("CREATE SCHEMA \"{schema}\""))
        .await?;
    let run = run_sink(ctx, &client, &config, &schema, &topic, n).await?;
    let tables = Tables::new(&schema, "site");
    let stored = Stored {
        latest: client
            .query_one(&format!("SELECT count(*) FROM {}", tables.site), &[])
            .await?
            .get(0),
        history: disk::partitions(&client, &tables.check).await?,
    };
    client
        .batch_execute(&format!("DROP SCHEMA {} CASCADE", tables.schema))
        .await?;
    let copies_after = copy_rates(&client, &copy_text, 2).await?;
    let copy = copy_baseline(&copies_before, &copies_after);
    let prefix = match keys {
        Keys::Url => "sink",
        Keys::None => "sink_keyless",
    };
    Ok(sink_figures(prefix, n, avg_bytes, &stored, &run, &copy))
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

/// The figures of [`sink_throughput`], named `{prefix}.*`.
fn sink_figures(
    prefix: &str,
    n: usize,
    avg_bytes: f64,
    stored: &Stored,
    run: &SinkRun,
    copy: &CopyBaseline,
) -> Vec<Figure> {
    let name = |what: &str| format!("{prefix}.{what}");
    let rate = n as f64 / run.elapsed;
    let copy_rate = (copy.before + copy.after) / 2.0;
    let per_1000 = |cpu: f64| cpu / n as f64 * 1000.0;
    let mut figures = vec![
        Figure::plain(&name("records"), n as f64, "records"),
        Figure::plain(&name("avg_record_bytes"), avg_bytes, "bytes"),
        Figure::against(
            &name("records_per_s"),
            rate,
            "records/s",
            copy_rate,
            "raw COPY (jsonb): mean of the fastest of 2 before and of 2 after",
            "ratio >= 0.5",
        ),
        Figure::plain(&name("copy_before"), copy.before, "rows/s"),
        Figure::plain(&name("copy_after"), copy.after, "rows/s"),
        Figure::plain(&name("copy_slowest_of_4"), copy.slowest, "rows/s"),
        Figure::plain(&name("latest_rows"), stored.latest as f64, "rows"),
        // Both per writer: each part of a batch is one writer's transaction.
        Figure::plain(&name("writer_transactions"), run.batches, "transactions"),
        Figure::plain(
            &name("writers_busy_on_average"),
            run.write_s / run.elapsed,
            "writers",
        ),
        Figure::plain(&name("cpu_s_per_1000_records"), per_1000(run.cpu), "cpu-s"),
        Figure::plain(&name("peak_rss"), run.rss, "MiB"),
        Figure::plain(
            &name("machine_busy"),
            run.cpu1.busy_since(&run.cpu0),
            "fraction",
        ),
        Figure::plain(
            &name("postgres_cpu_s_per_1000_records"),
            per_1000(run.cpu1.used_by(&run.cpu0, "postgres")),
            "cpu-s",
        ),
    ];
    figures.extend(stored.history.history_figures(prefix, "<= 128 B"));
    figures
}
