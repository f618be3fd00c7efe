//! The data set's rollup rows, computed in Rust and written by binary `COPY`
//! (as the sink writes its history): a row per site per bucket, every site's
//! row of one bucket before the next bucket, with a realistic latency
//! histogram around the site's usual latency and a failure now and then.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use futures::pin_mut;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Client;

/// Checks per minute of each site with rollups (one check a minute).
const CHECKS_PER_MINUTE: i64 = 1;

/// Relative weights of the 12 latency buckets around a site's usual latency
/// (a roughly log-normal shape; each count jittered by ±30 %).
const WEIGHTS: [f64; 12] = [
    0.01, 0.03, 0.07, 0.12, 0.17, 0.19, 0.17, 0.12, 0.07, 0.03, 0.015, 0.005,
];

/// The error kind code of a timeout in `failures` (see the sink's
/// `error_kind`).
const TIMEOUT: i64 = 4;

/// The rollup columns, in the order [`COLUMN_TYPES`] gives their types.
const COLUMNS: &str = "site_id, probe_id, bucket, checks, ok, failed, responses, \
    duration_min_us, duration_max_us, duration_sum_us, cert_days_min, latency, failures";

/// The types of [`COLUMNS`].
const COLUMN_TYPES: [Type; 13] = [
    Type::INT8,
    Type::INT4,
    Type::TIMESTAMPTZ,
    Type::INT4,
    Type::INT4,
    Type::INT4,
    Type::INT4,
    Type::INT4,
    Type::INT4,
    Type::INT8,
    Type::INT2,
    Type::INT8_ARRAY,
    Type::INT8_ARRAY,
];

/// A run of buckets of one rollup table, `[from, to)` in Unix seconds,
/// `step` seconds apart, of the sites `first_site..=last_site`.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// The rollup table (its partitioned parent).
    pub table: String,
    /// The first bucket (Unix seconds).
    pub from: i64,
    /// The end of the run (Unix seconds, excluded).
    pub to: i64,
    /// Seconds per bucket.
    pub step: i64,
    /// The first site.
    pub first_site: i64,
    /// The last site.
    pub last_site: i64,
}

/// A site's lowest usual latency bucket: bucket 88 is 2 ms, 128 is 65 ms.
fn base(site: i64) -> i64 {
    88 + (site * 7919) % 40
}

/// `2^(bucket / 8)` microseconds rounded as PostgreSQL casts a float to an
/// integer (half to even).
fn micros(bucket: f64) -> f64 {
    2f64.powf(bucket / 8.0).round_ties_even()
}

/// The counts of one rollup row.
#[derive(Debug, Default)]
struct Row {
    /// Checks that failed (timeouts: no response).
    failed: i32,
    /// Checks with a response.
    responses: i32,
    /// The latency histogram: `bucket << 32 | count`, zero counts left out.
    latency: Vec<i64>,
}

/// Draws the rows of a level whose rows hold `n` checks each.
struct Rows {
    /// The random numbers.
    rng: fastrand::Rng,
    /// Checks per row.
    n: i64,
    /// The chance that a row has failures.
    fail_p: f64,
    /// The row drawn last (its buffer is reused).
    row: Row,
}

impl Rows {
    /// Rows of `n` checks each, from the random numbers of `seed`.
    fn new(n: i64, seed: u64) -> Self {
        Self {
            rng: fastrand::Rng::with_seed(seed),
            n,
            // A row fails some checks now and then.
            fail_p: if n > 1 { 0.05 } else { 0.002 },
            row: Row::default(),
        }
    }

    /// Draws the row of the site whose lowest usual bucket is `base`.
    fn draw(&mut self, base: i64) -> &Row {
        let rng = &mut self.rng;
        let n = self.n;
        let failed = if rng.f64() < self.fail_p {
            1 + (rng.f64() * n as f64 * 0.02).floor() as i64
        } else {
            0
        };
        let row = &mut self.row;
        row.latency.clear();
        row.failed = failed as i32;
        if n == 1 {
            // One check: one bucket, or none when it failed.
            if failed == 0 {
                let k = base + ((rng.f64() + rng.f64()) * 6.0).floor() as i64;
                row.latency.push(k << 32 | 1);
            }
            row.responses = 1 - failed as i32;
            return row;
        }
        let mut sum = 0;
        for (i, w) in WEIGHTS.iter().enumerate() {
            let c = ((n - failed) as f64 * w * (0.7 + 0.6 * rng.f64())).round() as i64;
            if c > 0 {
                row.latency.push((base + i as i64) << 32 | c);
                sum += c;
            }
        }
        row.responses = sum as i32;
        row
    }
}

/// Writes the row of each of `chunk`'s sites of each of its buckets, bucket
/// after bucket, by one binary `COPY`; returns the rows written. `seed`
/// picks the random numbers.
pub async fn copy(client: &Client, chunk: &Chunk, probe: i32, seed: u64) -> Result<u64> {
    let sql = format!(
        "COPY {} ({COLUMNS}) FROM STDIN (FORMAT binary)",
        chunk.table
    );
    let writer = BinaryCopyInWriter::new(client.copy_in(&sql).await?, &COLUMN_TYPES);
    pin_mut!(writer);
    let mut rows = Rows::new(chunk.step / 60 * CHECKS_PER_MINUTE, seed);
    for bucket in (chunk.from..chunk.to).step_by(chunk.step as usize) {
        let at = UNIX_EPOCH + Duration::from_secs(bucket as u64);
        for site in chunk.first_site..=chunk.last_site {
            let base = base(site);
            let row = rows.draw(base);
            write(writer.as_mut(), site, probe, at, base, row).await?;
        }
    }
    Ok(writer.finish().await?)
}

/// Writes one row: `row`'s counts of `site` at `at`.
async fn write(
    writer: std::pin::Pin<&mut BinaryCopyInWriter>,
    site: i64,
    probe: i32,
    at: SystemTime,
    base: i64,
    row: &Row,
) -> Result<()> {
    let answered = row.responses > 0;
    let min = answered.then(|| micros(base as f64) as i32);
    let max = answered.then(|| micros((base + 12) as f64) as i32);
    let sum = (f64::from(row.responses) * 2f64.powf((base + 6) as f64 / 8.0)).round_ties_even();
    let cert = (20 + site % 70) as i16;
    let latency = (!row.latency.is_empty()).then_some(&row.latency[..]);
    let failures = [TIMEOUT << 32 | i64::from(row.failed)];
    let failures = (row.failed > 0).then_some(&failures[..]);
    let values: [&(dyn ToSql + Sync); 13] = [
        &site,
        &probe,
        &at,
        &(row.responses + row.failed),
        &row.responses,
        &row.failed,
        &row.responses,
        &min,
        &max,
        &(sum as i64),
        &cert,
        &latency,
        &failures,
    ];
    writer.write(&values).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_check_rows_have_one_bucket_or_fail() {
        let mut rows = Rows::new(1, 7);
        for _ in 0..10_000 {
            let row = rows.draw(100);
            assert_eq!(row.responses + row.failed, 1);
            assert_eq!(row.latency.len(), row.responses as usize);
            for e in &row.latency {
                assert!((100..112).contains(&(e >> 32)) && e & 0xffff_ffff == 1);
            }
        }
    }

    #[test]
    fn hour_rows_count_every_check_in_about_twelve_buckets() {
        let mut rows = Rows::new(60, 7);
        let mut failing = 0;
        for _ in 0..10_000 {
            let row = rows.draw(90);
            let counted: i64 = row.latency.iter().map(|e| e & 0xffff_ffff).sum();
            assert_eq!(counted, i64::from(row.responses));
            assert!((9..=12).contains(&row.latency.len()), "{:?}", row.latency);
            // 60 × the weights' sum (0.995), jittered: σ ≈ 3.8.
            assert!((35..=85).contains(&(row.responses + row.failed)));
            failing += i32::from(row.failed > 0);
        }
        assert!(
            (300..700).contains(&failing),
            "{failing} rows with failures"
        );
    }
}
