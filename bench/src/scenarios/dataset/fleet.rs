//! The fleet rollups of the data set (every site together, per shard) and
//! the time of the fleet's 30-day figures from them.
//!
//! The sink writes a fleet row per (Kafka partition, probe, bucket) in the
//! same transaction as the per-site rows; here they are computed in SQL from
//! the generated per-site rows, as if the sites' records had come over
//! [`SHARDS`] partitions (site `s` on partition `s % SHARDS`), by the
//! function migration 8 fills the fleet tables of an upgrade with.

use anyhow::Result;
use tokio_postgres::Client;

use super::queries::median_ms;
use crate::report::Figure;
use website_monitor_sink::migrate::Tables;

/// Kafka partitions the data set's records are taken to have come over.
const SHARDS: i32 = 4;

/// Fills each fleet level from the same level's per-site rows with the
/// sink's own `<table>_fleet_fill` (migration 8), site `s` in shard
/// `s % SHARDS`.
pub async fn generate(client: &Client, tables: &Tables) -> Result<()> {
    let fill = tables.function("_fleet_fill");
    for (site, fleet, span) in [
        (&tables.per_day, &tables.fleet_per_day, "30 days"),
        (&tables.per_hour, &tables.fleet_per_hour, "1 day"),
        (&tables.per_minute, &tables.fleet_per_minute, "1 day"),
    ] {
        client
            .execute(
                &format!(
                    "SELECT {fill}($1::text::regclass, $2::text::regclass, $3::text::interval, $4)"
                ),
                &[site, fleet, &span, &SHARDS],
            )
            .await?;
    }
    Ok(())
}

/// The fleet's 30-day uptime and percentiles together (`<table>_fleet`), as
/// [`super::queries::timings`] times the per-site API.
pub async fn timings(client: &Client, tables: &Tables, now: i64) -> Result<Vec<Figure>> {
    let (from, to) = ((now - 30 * 86_400) as f64, now as f64);
    let sql = format!(
        "SELECT uptime, p95_ms FROM {}(to_timestamp($1), to_timestamp($2))",
        tables.function("_fleet")
    );
    let ms = median_ms(client, &sql, &[&from, &to]).await?;
    Ok(vec![Figure::plain(
        "dataset.all_sites.fleet_uptime_p95_30d",
        ms,
        "ms",
    )
    .with_target("< 1 s")])
}
