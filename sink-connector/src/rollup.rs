//! Exact rollups: what a batch's checks add to each (site, probe, minute /
//! hour / day) row, computed here and added in the batch's transaction.
//!
//! A rollup row counts checks, successes and failures (by error kind) —
//! a check made while a maintenance window covered its site counts in
//! `maintenance` instead, so no uptime includes it — sums
//! the durations of the checks that got a response (whole microseconds, so
//! sums are exact in any order) and keeps a latency histogram with fixed
//! log-scale buckets: bucket `b` holds durations from 2^(b/8) to 2^((b+1)/8)
//! microseconds, so the bucket's geometric middle is within
//! [`MAX_RELATIVE_ERROR`] of every duration in it, and percentiles over any
//! range are sums of buckets. Histograms (and failure counts) are sparse
//! `int8[]`: each element is `key << 32 | count`, keys ascending.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::row::Compact;

/// How far a percentile read from the histogram can be from the true value:
/// 2^(1/16) − 1 (about 4.43 %).
pub const MAX_RELATIVE_ERROR: f64 = 0.044_273_782_427_413_84;

/// Histogram buckets per doubling of the duration.
pub const BUCKETS_PER_DOUBLING: f64 = 8.0;

/// The error kinds counted apart, with their codes in `failures`; any other
/// kind (and a failure without an error) counts as code 0, `other`.
pub const ERROR_KINDS: [(&str, i64); 8] = [
    ("dns", 1),
    ("connect", 2),
    ("tls", 3),
    ("timeout", 4),
    ("http", 5),
    ("status", 6),
    ("regex", 7),
    ("body", 8),
];

/// A rollup level: the width of its time buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// One row per minute.
    Minute,
    /// One row per hour.
    Hour,
    /// One row per UTC day.
    Day,
}

impl Level {
    /// Every level, finest first.
    pub const ALL: [Level; 3] = [Level::Minute, Level::Hour, Level::Day];

    /// The bucket width in seconds.
    pub fn seconds(self) -> u64 {
        match self {
            Level::Minute => 60,
            Level::Hour => 3600,
            Level::Day => 86_400,
        }
    }

    /// The name used in table names and configuration keys.
    pub fn name(self) -> &'static str {
        match self {
            Level::Minute => "minute",
            Level::Hour => "hour",
            Level::Day => "day",
        }
    }

    /// The start of the bucket holding `t` (times before 1970 go to 1970).
    pub fn bucket(self, t: SystemTime) -> SystemTime {
        floor_time(t, self.seconds())
    }
}

/// The histogram bucket of a duration in microseconds (below 1 µs counts as 1 µs).
pub fn latency_bucket(us: i32) -> i64 {
    let us = f64::from(us.max(1));
    (us.log2() * BUCKETS_PER_DOUBLING).floor() as i64
}

/// The start of the `span`-second interval (aligned to the Unix epoch, in
/// UTC) holding `t`, also before 1970.
pub fn floor_time(t: SystemTime, span: u64) -> SystemTime {
    let span = span.max(1) as i64;
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        // Before 1970: whole seconds towards the past.
        Err(e) => -(e.duration().as_secs_f64().ceil() as i64),
    };
    let start = secs.div_euclid(span) * span;
    if start >= 0 {
        UNIX_EPOCH + Duration::from_secs(start as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(start.unsigned_abs())
    }
}

/// The duration, in microseconds, that stands for bucket `b`: its geometric middle.
pub fn bucket_value(b: i64) -> f64 {
    ((b as f64 + 0.5) / BUCKETS_PER_DOUBLING).exp2()
}

/// The key of one rollup row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    /// The level (which table).
    pub level: Level,
    /// The site's id in the latest-state table.
    pub site_id: i64,
    /// The probe's id.
    pub probe_id: i32,
    /// The bucket's start.
    pub bucket: SystemTime,
}

/// What a batch adds to one rollup row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Checks.
    pub checks: i32,
    /// Checks with `ok: true`, outside maintenance.
    pub ok: i32,
    /// Checks with `ok: false`, outside maintenance.
    pub failed: i32,
    /// Checks with an `ok` made while a maintenance window covered their site.
    pub maintenance: i32,
    /// Checks that got a response (a `status_code`) and have a duration.
    pub responses: i32,
    /// Sum of those checks' durations, microseconds.
    pub duration_sum_us: i64,
    /// Shortest of those durations, microseconds.
    pub duration_min_us: Option<i32>,
    /// Longest of those durations, microseconds.
    pub duration_max_us: Option<i32>,
    /// Fewest certificate days left seen.
    pub cert_days_min: Option<i16>,
    /// Latency histogram: bucket → checks.
    pub latency: BTreeMap<i64, i64>,
    /// Failures by error kind code ([`ERROR_KINDS`]) → checks.
    pub failures: BTreeMap<i64, i64>,
}

impl Counts {
    /// Counts one check; `maintenance`: made while a window covered its site.
    pub fn add(&mut self, row: &Compact<'_>, maintenance: bool) {
        self.checks += 1;
        match row.ok {
            Some(_) if maintenance => self.maintenance += 1,
            Some(true) => self.ok += 1,
            Some(false) => {
                self.failed += 1;
                let kind = row.error_kind.as_deref().and_then(|k| {
                    ERROR_KINDS
                        .iter()
                        .find(|(name, _)| *name == k)
                        .map(|(_, c)| *c)
                });
                *self.failures.entry(kind.unwrap_or(0)).or_default() += 1;
            }
            None => {}
        }
        if let (Some(_), Some(us)) = (row.status_code, row.duration_us) {
            self.responses += 1;
            self.duration_sum_us += i64::from(us);
            self.duration_min_us = Some(self.duration_min_us.map_or(us, |m| m.min(us)));
            self.duration_max_us = Some(self.duration_max_us.map_or(us, |m| m.max(us)));
            *self.latency.entry(latency_bucket(us)).or_default() += 1;
        }
        if let Some(days) = row.cert_days_left {
            self.cert_days_min = Some(self.cert_days_min.map_or(days, |m| m.min(days)));
        }
    }
}

/// Packs a sparse count map as the `int8[]` the tables hold; `None` when empty.
pub fn pack(counts: &BTreeMap<i64, i64>) -> Option<Vec<i64>> {
    (!counts.is_empty()).then(|| counts.iter().map(|(k, n)| (k << 32) | n).collect())
}

/// The rollup rows a batch adds to, at `levels`.
#[derive(Debug, Default)]
pub struct Rollups {
    rows: BTreeMap<Key, Counts>,
}

impl Rollups {
    /// Adds a check of `site_id` by `probe_id` at `at` to every level in
    /// `levels`; `maintenance`: made while a window covered the site.
    pub fn add(
        &mut self,
        levels: &[Level],
        site_id: i64,
        probe_id: i32,
        at: SystemTime,
        row: &Compact<'_>,
        maintenance: bool,
    ) {
        for level in levels {
            let key = Key {
                level: *level,
                site_id,
                probe_id,
                bucket: level.bucket(at),
            };
            self.rows.entry(key).or_default().add(row, maintenance);
        }
    }

    /// The rows of one level, in key order (the order rows are locked in, so
    /// concurrent writers cannot deadlock on them).
    pub fn level(&self, level: Level) -> impl Iterator<Item = (&Key, &Counts)> {
        self.rows.iter().filter(move |(k, _)| k.level == level)
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

#[cfg(test)]
#[path = "rollup_tests.rs"]
mod tests;
