//! The SQL API's times over the generated data set: each query's median of
//! [`RUNS`] runs after an untimed one, measured at the client (round trip and
//! the rows' transfer included), and retention dropping a day's partition.

use std::time::Instant;

use anyhow::Result;
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

use super::generate::Size;
use crate::report::Figure;
use website_monitor_sink::migrate::Tables;

/// Timed runs of each query.
const RUNS: usize = 5;

/// Seconds in the queries' window: 30 days.
const WINDOW: i64 = 30 * 86_400;

/// The prototype's plan for the p95 of every site, the baseline of the
/// API's: window functions straight over the unnested histogram elements.
const PROTOTYPE_P95: &str = "
    SELECT site_id, power(2, (min(k) FILTER (WHERE below >= 0.95 * total) + 0.5) / 8.0) / 1000
    FROM (SELECT site_id, e >> 32 AS k,
                 sum(e & 4294967295) OVER (PARTITION BY site_id ORDER BY e >> 32) AS below,
                 sum(e & 4294967295) OVER (PARTITION BY site_id) AS total
          FROM {rollup}(NULL, NULL, to_timestamp($1), to_timestamp($2)) r, unnest(r.latency) AS e) x
    GROUP BY site_id";

/// Median milliseconds of [`RUNS`] runs of `sql`, after one untimed run.
pub(super) async fn median_ms(
    client: &Client,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<f64> {
    let statement = client.prepare(sql).await?;
    client.query(&statement, params).await?;
    let mut ms = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let started = Instant::now();
        client.query(&statement, params).await?;
        ms.push(started.elapsed().as_secs_f64() * 1e3);
    }
    Ok(median(&mut ms))
}

/// The median of `values` (sorts them).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The 30-day queries (the window ends at `now`): uptime and p95 of one
/// site, of every site together and of each site, and the status page.
pub async fn timings(
    client: &Client,
    tables: &Tables,
    size: &Size,
    now: i64,
) -> Result<Vec<Figure>> {
    let f = |suffix: &str| tables.function(suffix);
    let url = format!("https://site-{}.example.com/", size.sites / 2 + 1);
    let (from, to) = ((now - WINDOW) as f64, now as f64);
    let range = "to_timestamp($2), to_timestamp($3)";
    let one: [&(dyn ToSql + Sync); 3] = [&url, &from, &to];
    let all: [&(dyn ToSql + Sync); 2] = [&from, &to];
    let mut figures = Vec::new();
    let mut push = |name: &str, ms: f64, target: &str| {
        figures.push(Figure::plain(&format!("dataset.{name}"), ms, "ms").with_target(target));
    };
    let one_uptime = format!("SELECT * FROM {}($1, {range})", f("_uptime"));
    push(
        "one_site.uptime_30d",
        median_ms(client, &one_uptime, &one).await?,
        "< 10 ms",
    );
    let one_p95 = format!("SELECT p95_ms FROM {}($1, {range})", f("_latency"));
    push(
        "one_site.p95_30d",
        median_ms(client, &one_p95, &one).await?,
        "< 10 ms",
    );
    let range = "to_timestamp($1), to_timestamp($2)";
    let uptime_together = format!(
        "SELECT sum(ok)::float8 / nullif(sum(ok) + sum(failed), 0) FROM {}(NULL, {range})",
        f("_uptime")
    );
    push(
        "all_sites.uptime_30d_together",
        median_ms(client, &uptime_together, &all).await?,
        "< 1 s",
    );
    let uptime_each = format!("SELECT * FROM {}(NULL, {range})", f("_uptime"));
    push(
        "all_sites.uptime_30d_per_site",
        median_ms(client, &uptime_each, &all).await?,
        "< 1 s",
    );
    let p95_together = format!(
        "SELECT p95_ms FROM {}(NULL, {range}, NULL, false)",
        f("_latency")
    );
    push(
        "all_sites.p95_30d_together",
        median_ms(client, &p95_together, &all).await?,
        "< 1 s",
    );
    let summary = format!("SELECT * FROM {}({range})", f("_summary"));
    push(
        "all_sites.summary_30d",
        median_ms(client, &summary, &all).await?,
        "< 1 s",
    );
    let p95_each = format!("SELECT url, p95_ms FROM {}(NULL, {range})", f("_latency"));
    let p95_each = median_ms(client, &p95_each, &all).await?;
    let prototype = PROTOTYPE_P95.replace("{rollup}", &f("_rollup"));
    let prototype = median_ms(client, &prototype, &all).await?;
    figures.push(Figure::against(
        "dataset.all_sites.p95_30d_per_site",
        p95_each,
        "ms",
        prototype,
        "prototype plan: windows over unnested elements",
        "< 1 s",
    ));
    Ok(figures)
}

/// Retention of the oldest day's partition of the minute rollups, of the
/// history and of the hour rollups (three days), as the sink does it
/// (migration 0016): one call of `<table>_drop_partitions` that detaches
/// it (the parent, so every writer, waits on this one), then one that drops
/// the detached table (its files deleted; no writer waits). The median and
/// slowest detach, and the slowest detach plus drop.
pub async fn retention(client: &Client, tables: &Tables) -> Result<Vec<Figure>> {
    let drop = format!(
        "SELECT {}($1::text::regclass, $2)",
        tables.function("_drop_partitions")
    );
    // The upper bound of the oldest partition: dropping "before" it drops one.
    let oldest = "SELECT min(substring(pg_get_expr(c.relpartbound, c.oid) FROM 'TO \\(''([^'']+)''\\)')::timestamptz)
                  FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                  WHERE i.inhparent = $1::text::regclass";
    let files = format!(
        "SELECT {}($1::text::regclass, '-infinity')",
        tables.function("_drop_partitions")
    );
    let (mut detach_ms, mut total_ms) = (Vec::new(), Vec::new());
    for table in [
        &tables.per_minute,
        &tables.check,
        &tables.per_hour,
        &tables.per_hour,
        &tables.per_hour,
    ] {
        let before: std::time::SystemTime = client.query_one(oldest, &[table]).await?.get(0);
        let started = Instant::now();
        let detached: i32 = client.query_one(&drop, &[table, &before]).await?.get(0);
        detach_ms.push(started.elapsed().as_secs_f64() * 1e3);
        anyhow::ensure!(
            detached == 1,
            "detached {detached} partitions of {table}, not 1"
        );
        let dropped: i32 = client.query_one(&files, &[table]).await?.get(0);
        total_ms.push(started.elapsed().as_secs_f64() * 1e3);
        anyhow::ensure!(
            dropped == 1,
            "dropped {dropped} retired tables of {table}, not 1"
        );
    }
    let slowest = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    Ok(vec![
        Figure::plain(
            "dataset.retention.detach_median",
            median(&mut detach_ms.clone()),
            "ms",
        )
        .with_target("< 1 s"),
        Figure::plain(
            "dataset.retention.detach_slowest",
            slowest(&detach_ms),
            "ms",
        )
        .with_target("< 1 s"),
        Figure::plain(
            "dataset.retention.drop_day_median",
            median(&mut total_ms.clone()),
            "ms",
        ),
        Figure::plain(
            "dataset.retention.drop_day_slowest",
            slowest(&total_ms),
            "ms",
        ),
    ])
}
