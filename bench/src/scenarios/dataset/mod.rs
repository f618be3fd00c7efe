//! A generated long-run data set and the SQL API's times over it: 10,000
//! sites with 90 days of day rollups, 14 days of hour rollups and 2 days of
//! minute rollups, and a day of raw history of 100 sites checked every
//! second, written on two connections ([`generate`]) into a fresh schema
//! migrated by the sink's own migrations. Reports how fast it was written,
//! the disk it takes, the median time of the
//! API's queries (30-day uptime and p95 of one site, of all sites together
//! and per site, the status page) and of dropping one day's partition. The
//! schema is dropped at the end, also when the scenario fails, unless
//! `WM_BENCH_KEEP_DATASET=1` (to look at the plans; drop it by hand).

mod fleet;
mod generate;
mod queries;
mod rollups;

use std::time::Instant;

use anyhow::{Context, Result};
use futures::FutureExt;
use tokio_postgres::Client;

use super::{disk, Ctx};
use crate::report::Figure;
use generate::Size;
use website_monitor_sink::migrate::{migrate, Tables};
use website_monitor_tests::{pg, unique_ident};

/// The data set scenario (see the module doc); `WM_BENCH_SCALE` shrinks the
/// number of sites, the history's sites and its length.
pub async fn dataset(ctx: &Ctx) -> Result<Vec<Figure>> {
    let size = Size {
        sites: ctx.n(10_000) as i64,
        day_days: 90,
        hour_days: 14,
        minute_days: 2,
        history_sites: ctx.n(100) as i64,
        history_secs: ctx.n(86_400) as i64,
    };
    let mut client = pg(&ctx.stack.postgres_uri).await;
    let schema = unique_ident("bench_dataset");
    let tables = Tables::new(&schema, "site");
    let uri = &ctx.stack.postgres_uri;
    let result = std::panic::AssertUnwindSafe(measure(uri, &mut client, &tables, &size))
        .catch_unwind()
        .await;
    if std::env::var("WM_BENCH_KEEP_DATASET").is_ok_and(|v| v == "1") {
        eprintln!("dataset: kept in schema {}", tables.schema);
        return result.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    }
    let drop = format!("DROP SCHEMA IF EXISTS {} CASCADE", tables.schema);
    if let Err(e) = client.batch_execute(&drop).await {
        // The connection may be gone (a restarted server): a new one.
        let dropped = pg(uri).await.batch_execute(&drop).await;
        if let Err(again) = dropped {
            eprintln!("warning: {} is left: {e}; {again}", tables.schema);
        }
    }
    result.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Migrates, generates, measures; the caller drops the schema.
async fn measure(
    uri: &str,
    client: &mut Client,
    tables: &Tables,
    size: &Size,
) -> Result<Vec<Figure>> {
    migrate(client, tables).await.context("migrating")?;
    // An empty schema's old history, renamed by migration 0006; the sink
    // drops it at its start.
    client
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS {}",
            tables.function("_check_legacy")
        ))
        .await?;
    let now = generate::now_minute();
    let started = Instant::now();
    let rows = generate::all(uri, client, tables, size, now).await?;
    // Every site together, per shard: what the sink writes beside each row.
    fleet::generate(client, tables)
        .await
        .context("fleet rollups")?;
    let generated = started.elapsed().as_secs_f64();
    // What autovacuum does to insert-only tables before long: visibility
    // maps (index-only scans) and the planner's statistics.
    let started = Instant::now();
    client
        .batch_execute(&format!(
            "VACUUM (ANALYZE) {}, {}, {}, {}, {}, {}, {}, {}",
            tables.site,
            tables.per_day,
            tables.per_hour,
            tables.per_minute,
            tables.fleet_per_day,
            tables.fleet_per_hour,
            tables.fleet_per_minute,
            tables.check
        ))
        .await?;
    let mut figures = vec![
        Figure::plain("dataset.sites", size.sites as f64, "sites"),
        Figure::plain("dataset.generate_s", generated, "s"),
        Figure::plain(
            "dataset.generate_rows_per_s",
            rows as f64 / generated,
            "rows/s",
        ),
        Figure::plain(
            "dataset.vacuum_analyze_s",
            started.elapsed().as_secs_f64(),
            "s",
        ),
    ];
    figures.extend(disk_figures(client, tables).await?);
    figures.extend(
        queries::timings(client, tables, size, now)
            .await
            .context("queries")?,
    );
    figures.extend(fleet::timings(client, tables, now).await?);
    figures.extend(queries::retention(client, tables).await?);
    Ok(figures)
}

/// The disk the data set takes: each rollup level and the history (heap and
/// indexes of their partitions), the latest-state table, and the total.
async fn disk_figures(client: &Client, tables: &Tables) -> Result<Vec<Figure>> {
    let mb = |bytes: i64| bytes as f64 / 1048576.0;
    let mut figures = Vec::new();
    let mut total = 0;
    for (name, table) in [
        ("per_day", &tables.per_day),
        ("per_hour", &tables.per_hour),
        ("per_minute", &tables.per_minute),
    ] {
        let d = disk::partitions(client, table).await?;
        total += d.total();
        figures.push(Figure::plain(
            &format!("dataset.{name}.rows"),
            d.rows as f64,
            "rows",
        ));
        figures.push(Figure::plain(
            &format!("dataset.{name}.disk"),
            mb(d.total()),
            "MiB",
        ));
        figures.push(Figure::plain(
            &format!("dataset.{name}.bytes_per_row"),
            d.total() as f64 / d.rows.max(1) as f64,
            "B/row",
        ));
    }
    let history = disk::partitions(client, &tables.check).await?;
    total += history.total();
    figures.push(Figure::plain(
        "dataset.history.disk",
        mb(history.total()),
        "MiB",
    ));
    figures.extend(history.history_figures("dataset.https", "<= 128 B"));
    let site: i64 = client
        .query_one(
            "SELECT pg_total_relation_size($1::text::regclass)",
            &[&tables.site],
        )
        .await?
        .get(0);
    total += site;
    figures.push(Figure::plain("dataset.disk", mb(total), "MiB"));
    Ok(figures)
}
