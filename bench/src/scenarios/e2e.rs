//! End to end: source → Kafka → sink at 5,000 checks/s, the latency of each
//! row (insert time − `checked_at`) measured in the database, with a
//! per-second table of it written beside the run's logs.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;

use super::{measure_window, now_secs, sites_file, source_config, start_sink, Ctx, SINK_METRICS};
use crate::proc::Connector;
use crate::report::Figure;
use website_monitor_tests::{pg, unique, unique_ident};

/// Source → Kafka → sink at 5,000 checks/s: p50/p99 of (row insert time − checked_at),
/// measured in the database.
pub async fn end_to_end(ctx: &Ctx) -> Result<Vec<Figure>> {
    let topic = ctx.topic("bench-e2e").await;
    let sites = sites_file(ctx, "e2e-sites.txt", ctx.n(5_000))?;
    let schema = unique_ident("bench_e2e");
    let client = pg(&ctx.stack.postgres_uri).await;
    client
        .batch_execute(&format!("CREATE SCHEMA \"{schema}\""))
        .await?;
    let config = e2e_config(ctx, &topic, &sites, &schema)?;
    let sink = start_sink(ctx, &config, &ctx.work.join("e2e-sink.log"))?;
    let source = Connector::start(
        &ctx.bin("website-monitor-source"),
        &config,
        &ctx.source_metrics,
        &ctx.work.join("e2e-source.log"),
    )?;
    let warm = now_secs() + 10.0;
    let w = measure_window(&source, Duration::from_secs(10), Duration::from_secs(30))?;
    let until = now_secs() - 2.0;
    let (source_rss, sink_rss) = (source.peak_rss(), sink.peak_rss());
    source.stop()?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    sink.stop()?;
    let (p50, p99, rows) = latency(&client, &schema, warm, until).await?;
    write_per_second(ctx, &client, &schema, warm).await?;
    client
        .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .await?;
    Ok(vec![
        Figure::plain("e2e.checks_per_s", w.rate, "checks/s").with_target("5000 offered"),
        Figure::plain("e2e.rows_measured", rows as f64, "rows"),
        Figure::plain("e2e.latency_p50", p50.unwrap_or(f64::NAN) * 1000.0, "ms"),
        Figure::plain("e2e.latency_p99", p99.unwrap_or(f64::NAN) * 1000.0, "ms")
            .with_target("< 500 ms"),
        Figure::plain("e2e.source_peak_rss", source_rss as f64 / 1048576.0, "MiB"),
        Figure::plain("e2e.sink_peak_rss", sink_rss as f64 / 1048576.0, "MiB"),
    ])
}

/// Writes `e2e.toml`, one file for both connectors: the source's config and a
/// `[sink]` reading `topic` into `schema`.
fn e2e_config(ctx: &Ctx, topic: &str, sites: &Path, schema: &str) -> Result<PathBuf> {
    let mut text = source_config(ctx, topic, sites, "1s", 1024, true);
    let _ = write!(
        text,
        "[sink]\ntopic = \"{topic}\"\ngroup_id = \"{}\"\npostgres_uri = \"{}\"\nschema = \"{schema}\"\nmetrics_address = \"{SINK_METRICS}\"\n{}\n",
        unique("bench-e2e-group"),
        ctx.stack.postgres_uri,
        ctx.sink_extra,
    );
    ctx.write("e2e.toml", &text)
}

/// A history row's latency in seconds: when the sink wrote it less when the
/// source checked (`insert_delay_ms`, clock time per row, in ms).
const LAG: &str = "insert_delay_ms / 1e3::float8";

/// p50 and p99 of the latency (s) of the rows checked between `warm` and
/// `until` (Unix seconds), and how many rows that is.
async fn latency(
    client: &tokio_postgres::Client,
    schema: &str,
    warm: f64,
    until: f64,
) -> Result<(Option<f64>, Option<f64>, i64)> {
    let row = client
        .query_one(
            &format!(
                "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY lag), percentile_cont(0.99) WITHIN GROUP (ORDER BY lag), count(*) \
                 FROM (SELECT {LAG} AS lag FROM \"{schema}\".site_check \
                       WHERE checked_at BETWEEN to_timestamp($1) AND to_timestamp($2)) s"
            ),
            &[&warm, &until],
        )
        .await?;
    Ok((row.get(0), row.get(1), row.get(2)))
}

/// Writes `e2e-latency-per-second.txt`: per second of `checked_at` since the
/// source's start (`warm` − 10 s), for reading a tail: rows, p50, p99, max.
async fn write_per_second(
    ctx: &Ctx,
    client: &tokio_postgres::Client,
    schema: &str,
    warm: f64,
) -> Result<()> {
    let per_second = client
        .query(
            &format!(
                "SELECT floor(c)::int8 - floor($1::float8)::int8, count(*), \
                        percentile_cont(0.5) WITHIN GROUP (ORDER BY lag), percentile_cont(0.99) WITHIN GROUP (ORDER BY lag), max(lag) \
                 FROM (SELECT extract(epoch FROM checked_at)::float8 AS c, {LAG} AS lag \
                       FROM \"{schema}\".site_check) s GROUP BY 1 ORDER BY 1"
            ),
            &[&(warm - 10.0)],
        )
        .await?;
    let mut table = String::from("second_since_source_start rows p50_ms p99_ms max_ms\n");
    for r in per_second {
        let (s, n, a, b, m): (i64, i64, f64, f64, f64) =
            (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
        let _ = writeln!(
            table,
            "{s} {n} {:.0} {:.0} {:.0}",
            a * 1e3,
            b * 1e3,
            m * 1e3
        );
    }
    ctx.write("e2e-latency-per-second.txt", &table)?;
    Ok(())
}
