//! The generated data set, written straight into a schema migrated by the
//! sink's own migrations (not through Kafka): sites, rollups at each level
//! with realistic latency histograms ([`rollups`], binary `COPY` of rows
//! computed here), and raw history of https-like checks (in SQL).
//!
//! Every partition is made first; then [`WORKERS`] connections take the
//! work one piece at a time: the history, or a partition's run of rollup
//! buckets for a share of the sites. The shares of one partition are next
//! to each other in the queue, so the connections write the same partition
//! together: the pages one partition's writes touch (a leaf of its primary
//! key per site: 80 MB at 10,000 sites for a minute partition) fit in the
//! stack's 128 MB of shared buffers; two partitions at once did not (at
//! full scale nearly every row's index insert read a page into them, and
//! each connection wrote ~21,000 rows/s instead of ~45,000–64,000). Each
//! site's rows go in time order and each share's rows too (every site's row
//! of one bucket, then the next bucket), as the sink writes them, so the
//! indexes grow as they do in use.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant, UNIX_EPOCH};

use anyhow::{Context, Result};
use tokio_postgres::Client;

use super::rollups::{self, Chunk};
use website_monitor_sink::migrate::Tables;
use website_monitor_sink::postgres::partitions::{Layout, Partitioned, Retention};
use website_monitor_sink::rollup::Level;
use website_monitor_tests::pg;

/// Connections writing at once (the bench machine has 2 cores; one
/// PostgreSQL backend each). `WM_BENCH_DATASET_WORKERS` overrides it.
const WORKERS: usize = 2;

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
async fn sites(client: &Client, tables: &Tables, size: &Size, now: i64) -> Result<i32> {
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

/// A piece of the generation, done on one connection.
#[derive(Debug)]
enum Job {
    /// The rollup rows of a run of buckets (one partition's).
    Rollups(Chunk),
    /// The raw history.
    History,
}

/// Generates the whole data set for the sites `1..=size.sites` up to `now`
/// (Unix seconds, a whole minute): the sites on `client`, then every rollup
/// and the history on [`WORKERS`] connections to `uri`. Returns the rows
/// written (rollups and history).
pub async fn all(
    uri: &str,
    client: &Client,
    tables: &Tables,
    size: &Size,
    now: i64,
) -> Result<u64> {
    let probe = sites(client, tables, size, now).await.context("sites")?;
    let layout = Layout::new(tables, Retention::default());
    let workers = std::env::var("WM_BENCH_DATASET_WORKERS")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(WORKERS);
    // The history first: the longest piece, and its pages few.
    let mut jobs = vec![Job::History];
    for level in [Level::Minute, Level::Hour, Level::Day] {
        let chunks = rollup_chunks(client, tables, &layout, size, level, now, workers as i64)
            .await
            .with_context(|| format!("{level:?} partitions"))?;
        jobs.extend(chunks.into_iter().map(Job::Rollups));
    }
    let jobs = Mutex::new(VecDeque::from(jobs));
    let done = futures::future::try_join_all(
        (0..workers).map(|_| worker(uri, tables, size, probe, now, &jobs)),
    )
    .await?;
    Ok(done.iter().sum())
}

/// Takes jobs until none is left, on a connection of its own; returns the
/// rows it wrote.
async fn worker(
    uri: &str,
    tables: &Tables,
    size: &Size,
    probe: i32,
    now: i64,
    jobs: &Mutex<VecDeque<Job>>,
) -> Result<u64> {
    let client = pg(uri).await;
    client.batch_execute("SET synchronous_commit = off").await?;
    let mut rows = 0;
    loop {
        let Some(job) = jobs.lock().expect("job queue").pop_front() else {
            return Ok(rows);
        };
        let started = Instant::now();
        let n = match &job {
            Job::Rollups(c) => {
                let seed = (c.from as u64) ^ (c.step as u64) << 48;
                rollups::copy(&client, c, probe, seed ^ c.first_site as u64).await
            }
            Job::History => history(&client, tables, size, probe, now).await,
        }
        .with_context(|| format!("{job:?}"))?;
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "dataset: {job:?}: {n} rows in {secs:.1} s ({:.0} rows/s)",
            n as f64 / secs
        );
        rows += n;
    }
}

/// The chunks of one rollup level's rows, each bucket of the last days (of
/// `size`) up to `now`, the current one included: per partition in time
/// order, its buckets for each of `shares` shares of the sites; makes the
/// partitions.
async fn rollup_chunks(
    client: &Client,
    tables: &Tables,
    layout: &Layout,
    size: &Size,
    level: Level,
    now: i64,
    shares: i64,
) -> Result<Vec<Chunk>> {
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
    // Partitions start at multiples of their span (a multiple of `step`).
    let span = table.span.as_secs() as i64;
    let mut chunks = Vec::new();
    let mut from = first;
    while from <= last {
        let to = ((from / span + 1) * span).min(last + step);
        let shares = shares.clamp(1, size.sites.max(1));
        for share in 0..shares {
            chunks.push(Chunk {
                table: table.table.clone(),
                from,
                to,
                step,
                first_site: 1 + size.sites * share / shares,
                last_site: size.sites * (share + 1) / shares,
            });
        }
        from = to;
    }
    Ok(chunks)
}

/// Raw history of `size.history_sites` sites checked every second over the
/// `size.history_secs` seconds before `now`: https checks on fresh
/// connections (every phase timed, TLS and certificate fields set), the
/// heaviest successful record the source writes. Returns the rows written.
async fn history(
    client: &Client,
    tables: &Tables,
    size: &Size,
    probe: i32,
    now: i64,
) -> Result<u64> {
    let layout = Layout::new(tables, Retention::default());
    let first = now - size.history_secs;
    partitions(client, tables, &layout.history, first, now).await?;
    // Every known field present but `error` (bit 6), `interval` (bit 15)
    // included; the days left are the ones the view derives (bit 16: not
    // stored), as the source writes them (schema version 2).
    let present: i32 = (0xffff & !(1 << 6)) | (1 << 16);
    let sql = format!(
        "INSERT INTO {t} (checked_at, insert_delay_ms, site_id, probe_id,
                          present, duration_us, dns_us, connect_us, tls_us, ttfb_us, transfer_us,
                          response_bytes, status_code, redirects, http_version, tls_version,
                          schema_version, ok, re_check, cert_not_after, ipv4, interval_ms)
         SELECT c, 40, s, $1::int4, $2::int4,
                d.dns + d.connect + d.tls + d.ttfb + d.transfer,
                d.dns, d.connect, d.tls, d.ttfb, d.transfer,
                30000 + (s * 37) % 20000, 200::int2, 0::int2,
                CASE WHEN s % 3 = 0 THEN 11 ELSE 20 END::int2, 13::int2,
                2::int2, true, false,
                to_timestamp($4) + make_interval(days => (20 + s::int4 % 70)),
                (167772160 + s)::int4, 1000
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
    let rows = client
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
    Ok(rows)
}

/// Seconds since the Unix epoch, rounded down to a whole minute.
pub fn now_minute() -> i64 {
    let secs = UNIX_EPOCH.elapsed().unwrap_or(Duration::ZERO).as_secs() as i64;
    secs - secs % 60
}
