//! The fleet rollups of the data set (every site together, per shard) and
//! the time of the fleet's 30-day figures from them.
//!
//! The sink writes a fleet row per (Kafka partition, probe, bucket) in the
//! same transaction as the per-site rows; here they are computed in SQL from
//! the generated per-site rows, as if the sites' records had come over
//! [`SHARDS`] partitions (site `s` on partition `s % SHARDS`).

use anyhow::Result;
use tokio_postgres::Client;

use super::queries::median_ms;
use crate::report::Figure;
use website_monitor_sink::migrate::Tables;

/// Kafka partitions the data set's records are taken to have come over.
const SHARDS: i64 = 4;

/// Fills each fleet level from the same level's per-site rows (the
/// partitions exist: they were made with the per-site ones' times).
pub async fn generate(client: &Client, tables: &Tables) -> Result<()> {
    let make = tables.function("_make_partitions");
    for (site, fleet, span) in [
        (&tables.per_day, &tables.fleet_per_day, "30 days"),
        (&tables.per_hour, &tables.fleet_per_hour, "1 day"),
        (&tables.per_minute, &tables.fleet_per_minute, "1 day"),
    ] {
        client
            .execute(
                &format!(
                    "SELECT {make}($1::text::regclass, min(bucket), max(bucket), '{span}') FROM {site}"
                ),
                &[fleet],
            )
            .await?;
        client.batch_execute(&fill(site, fleet)).await?;
    }
    Ok(())
}

/// The statement that fills `fleet` from `site`: counts summed, histograms
/// merged per bucket key, per (shard, probe, bucket); one pass over each.
fn fill(site: &str, fleet: &str) -> String {
    let merged = |column: &str| {
        format!(
            "SELECT shard, probe_id, bucket, array_agg((k << 32) | n ORDER BY k) AS a
             FROM (SELECT (site_id % {SHARDS})::int4 AS shard, probe_id, bucket, e >> 32 AS k,
                          sum(e & 4294967295)::int8 AS n
                   FROM {site}, unnest({column}) e GROUP BY 1, 2, 3, 4) AS x
             GROUP BY 1, 2, 3"
        )
    };
    format!(
        "INSERT INTO {fleet} (shard, probe_id, bucket, checks, ok, failed, responses,
                              duration_min_us, duration_max_us, duration_sum_us, cert_days_min,
                              latency, failures)
         WITH g AS (
             SELECT (site_id % {SHARDS})::int4 AS shard, probe_id, bucket,
                    sum(checks)::int4 AS checks, sum(ok)::int4 AS ok, sum(failed)::int4 AS failed,
                    sum(responses)::int4 AS responses, min(duration_min_us) AS mn,
                    max(duration_max_us) AS mx, sum(duration_sum_us)::int8 AS sm,
                    min(cert_days_min) AS cd
             FROM {site} GROUP BY 1, 2, 3
         ), l AS ({latency}), f AS ({failures})
         SELECT g.shard, g.probe_id, g.bucket, g.checks, g.ok, g.failed, g.responses,
                g.mn, g.mx, g.sm, g.cd, l.a, f.a
         FROM g LEFT JOIN l USING (shard, probe_id, bucket) LEFT JOIN f USING (shard, probe_id, bucket)",
        latency = merged("latency"),
        failures = merged("failures"),
    )
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
