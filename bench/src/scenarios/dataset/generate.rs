//! The generated data set, written in SQL (not through Kafka) into a schema
//! migrated by the sink's own migrations: sites, rollups at each level with
//! realistic latency histograms, and raw history of https-like checks.
//!
//! Rows go in time order (every site's row of one bucket, then the next
//! bucket), as the sink writes them, so the indexes grow as they do in use.

use std::time::{Duration, UNIX_EPOCH};

use anyhow::Result;
use tokio_postgres::Client;

use website_monitor_sink::migrate::Tables;
use website_monitor_sink::postgres::partitions::{Layout, Partitioned, Retention};
use website_monitor_sink::rollup::Level;

/// How big the data set is.
#[derive(Debug, Clone, Copy)]
pub struct Size {
    /// Sites with rollups.
    pub sites: i64,
    /// Days of day-level rollups.
    pub day_days: i64,
    /// Days of hour-level rollups.
    pub hour_days: i64,
    /// Days of minute-level rollups.
    pub minute_days: i64,
    /// Sites with raw history, checked every second.
    pub history_sites: i64,
    /// Seconds of raw history.
    pub history_secs: i64,
}

/// Checks per minute of each site with rollups (one check a minute).
const CHECKS_PER_MINUTE: i64 = 1;

/// Relative weights of the 12 latency buckets around a site's usual latency
/// (a roughly log-normal shape; each count jittered by ±30 %).
const WEIGHTS: [f64; 12] = [
    0.01, 0.03, 0.07, 0.12, 0.17, 0.19, 0.17, 0.12, 0.07, 0.03, 0.015, 0.005,
];

/// A site's lowest usual latency bucket: bucket 88 is 2 ms, 128 is 65 ms.
const BASE: &str = "88 + (s * 7919) % 40";

/// The histogram of a row of `n` checks, `f` of which failed, as two SQL
/// expressions over the row's `base` and `f`: the columns `c1..c12` to
/// compute first (one count per bucket), then `lat` (bucket << 32 | count,
/// zero counts left out) and `responses` (the counts' sum). Plain
/// expressions, no subquery per row: a row costs a few microseconds.
fn histogram(n: i64) -> (String, String, String) {
    if n == 1 {
        // One check: one bucket, or none when it failed.
        return (
            String::new(),
            "CASE WHEN f = 0 THEN ARRAY[((base + floor((random() + random()) * 6))::int8 << 32) | 1] END"
                .to_owned(),
            "(1 - f)::int4".to_owned(),
        );
    }
    let counts = WEIGHTS
        .iter()
        .enumerate()
        .map(|(i, w)| format!(", round(({n} - f) * {w} * (0.7 + 0.6 * random()))::int8 AS c{i}"))
        .collect::<String>();
    let elements = (0..WEIGHTS.len())
        .map(|i| format!("CASE WHEN c{i} > 0 THEN ((base + {i})::int8 << 32) | c{i} END"))
        .collect::<Vec<_>>()
        .join(", ");
    let sum = (0..WEIGHTS.len())
        .map(|i| format!("c{i}"))
        .collect::<Vec<_>>()
        .join(" + ");
    (
        counts,
        format!("array_remove(ARRAY[{elements}], NULL)"),
        format!("({sum})::int4"),
    )
}

/// Makes the partitions of `table` covering [from, to) (Unix seconds).
async fn partitions(
    client: &Client,
    tables: &Tables,
    table: &Partitioned,
    from: i64,
    to: i64,
) -> Result<()> {
    let sql = format!(
        "SELECT {}($1::text::regclass, to_timestamp($2), to_timestamp($3), make_interval(secs => $4))",
        tables.function("_make_partitions")
    );
    let (from, to) = (from as f64, (to - 1) as f64);
    client
        .execute(&sql, &[&table.table, &from, &to, &table.span.as_secs_f64()])
        .await?;
    Ok(())
}

/// The sites `1..=size.sites` (ids as numbers), each with a latest state,
/// and the probe `bench`; returns the probe's id.
pub async fn sites(client: &Client, tables: &Tables, size: &Size, now: i64) -> Result<i32> {
    client
        .execute(
            &format!(
                "INSERT INTO {} (id, url, data, checked_at, updated_at)
                 SELECT s, format('https://site-%s.example.com/', s),
                        jsonb_build_object('url', format('https://site-%s.example.com/', s),
                                           'checked_at', $2::float8, 'ok', true, 'status_code', 200,
                                           'duration', 0.05, 'probe', 'bench'),
                        to_timestamp($2), to_timestamp($2)
                 FROM generate_series(1, $1::int8) s",
                tables.site
            ),
            &[&size.sites, &(now as f64)],
        )
        .await?;
    Ok(client
        .query_one(
            &format!(
                "INSERT INTO {} (name) VALUES ('bench') RETURNING id",
                tables.probe
            ),
            &[],
        )
        .await?
        .get(0))
}

/// One rollup level's rows for every site: each bucket of the last `days`
/// days up to `now` (Unix seconds, a whole minute), the current one included.
pub async fn rollups(
    client: &Client,
    tables: &Tables,
    size: &Size,
    probe: i32,
    level: Level,
    now: i64,
) -> Result<()> {
    let layout = Layout::new(tables, Retention::default());
    let (_, table) = layout
        .rollups
        .iter()
        .find(|(l, _)| *l == level)
        .expect("every level has a table");
    let (step, days) = match level {
        Level::Minute => (60, size.minute_days),
        Level::Hour => (3_600, size.hour_days),
        Level::Day => (86_400, size.day_days),
    };
    let last = now - now % step;
    let first = last - (days * 86_400 / step - 1) * step;
    partitions(client, tables, table, first, last + step).await?;
    let n = step / 60 * CHECKS_PER_MINUTE;
    let (counts, lat, responses) = histogram(n);
    // A row fails some checks now and then (timeouts: no response).
    let fail_p = if n > 1 { 0.05 } else { 0.002 };
    // OFFSET 0 keeps each level a subquery: each random() is drawn once.
    let sql = format!(
        "INSERT INTO {t} (site_id, probe_id, bucket, checks, ok, failed, responses,
                          duration_min_us, duration_max_us, duration_sum_us, cert_days_min,
                          latency, failures)
         SELECT s, $1::int4, b, responses + f, responses, f, responses,
                CASE WHEN responses > 0 THEN power(2, base / 8.0)::int4 END,
                CASE WHEN responses > 0 THEN power(2, (base + 12) / 8.0)::int4 END,
                (responses * power(2, (base + 6) / 8.0))::int8, (20 + s % 70)::int2,
                lat, CASE WHEN f > 0 THEN ARRAY[(4::int8 << 32) | f] END
         FROM (SELECT *, {lat} AS lat, {responses} AS responses
               FROM (SELECT * {counts}
                     FROM (SELECT b, s, {BASE} AS base,
                                  CASE WHEN random() < {fail_p}
                                       THEN 1 + floor(random() * {n} * 0.02)::int4 ELSE 0 END AS f
                           FROM generate_series(to_timestamp($2), to_timestamp($3),
                                                make_interval(secs => $4)) b
                           CROSS JOIN LATERAL generate_series(1, $5::int8 + 0 * extract(epoch FROM b)::int8) s
                           OFFSET 0) g
                     OFFSET 0) c
               OFFSET 0) h",
        t = table.table,
    );
    client
        .execute(
            &sql,
            &[
                &probe,
                &(first as f64),
                &(last as f64),
                &(step as f64),
                &size.sites,
            ],
        )
        .await?;
    Ok(())
}

/// Raw history of `size.history_sites` sites checked every second over the
/// `size.history_secs` seconds before `now`: https checks on fresh
/// connections (every phase timed, TLS and certificate fields set), the
/// heaviest successful record the source writes.
pub async fn history(
    client: &Client,
    tables: &Tables,
    size: &Size,
    probe: i32,
    now: i64,
) -> Result<()> {
    let layout = Layout::new(tables, Retention::default());
    let first = now - size.history_secs;
    partitions(client, tables, &layout.history, first, now).await?;
    // Every known field present but `error` (bit 6).
    let present: i32 = 0x7fff & !(1 << 6);
    let sql = format!(
        "INSERT INTO {t} (checked_at, inserted_at, site_id, \"offset\", \"partition\", probe_id,
                          present, duration_us, dns_us, connect_us, tls_us, ttfb_us, transfer_us,
                          response_bytes, status_code, redirects, http_version, tls_version,
                          cert_days_left, schema_version, ok, re_check, cert_not_after, ip)
         SELECT c, c + interval '40 ms', s, t * $3 + s, (s % 4)::int4, $1::int4, $2::int4,
                d.dns + d.connect + d.tls + d.ttfb + d.transfer,
                d.dns, d.connect, d.tls, d.ttfb, d.transfer,
                30000 + (s * 37) % 20000, 200::int2, 0::int2,
                CASE WHEN s % 3 = 0 THEN 11 ELSE 20 END::int2, 13::int2,
                (20 + s % 70)::int2, 1::int2, true, false,
                to_timestamp($4) + make_interval(days => (20 + s::int4 % 70)),
                ('10.' || s / 65536 % 256 || '.' || s / 256 % 256 || '.' || s % 256)::inet
         FROM generate_series(0, $5::int8 - 1) t
         CROSS JOIN LATERAL generate_series(1, $3::int8 + 0 * t) s
         CROSS JOIN LATERAL (SELECT to_timestamp($6::float8 + t) AS c,
                                    (800 + random() * 1500)::int4 AS dns,
                                    (1500 + random() * 3000)::int4 AS connect,
                                    (4000 + random() * 6000)::int4 AS tls,
                                    (8000 + random() * 40000 + s * 0)::int4 AS ttfb,
                                    (200 + random() * 2000)::int4 AS transfer) d",
        t = tables.check,
    );
    client
        .execute(
            &sql,
            &[
                &probe,
                &present,
                &size.history_sites,
                &(now as f64),
                &size.history_secs,
                &(first as f64),
            ],
        )
        .await?;
    Ok(())
}

/// Seconds since the Unix epoch, rounded down to a whole minute.
pub fn now_minute() -> i64 {
    let secs = UNIX_EPOCH.elapsed().unwrap_or(Duration::ZERO).as_secs() as i64;
    secs - secs % 60
}
