//! Time partitions of the history, rejects and rollup tables: made before a
//! batch's transaction for the times it holds, made a day ahead, and dropped
//! whole once past their table's retention.
//!
//! Both go through the SQL functions of migration 0006
//! (`<table>_make_partitions`, `<table>_drop_partitions`), so the naming and
//! bounds live in one place. Retention detaches the partitions past it
//! first (migration 0016: the parent is locked for a catalog change only),
//! then drops the detached tables one by one, each in its own transaction,
//! so deleting their files blocks no writer. Making a partition takes an ACCESS EXCLUSIVE
//! lock on its parent, so it never runs inside a batch transaction (writers
//! holding the parent would deadlock): each call is its own short
//! transaction with a lock timeout, and a timeout is an ordinary retried
//! error.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use tokio_postgres::{Client, GenericClient};

use crate::postgres::migrate::Tables;
use crate::rollup::Level;

/// How long making or dropping partitions may wait for the parent's lock.
const LOCK_TIMEOUT: &str = "10s";

/// At most this many retired tables are dropped per table and run (the
/// next run, 10 minutes later, drops the rest).
const MAX_DROPS_PER_RUN: usize = 100;

/// A partitioned table and the width of its partitions.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Partitioned {
    /// The table, schema-qualified and quoted.
    pub table: String,
    /// The width of each partition (whole hours; aligned to the Unix epoch).
    pub span: Duration,
    /// How long its rows are kept.
    pub retention: Duration,
}

impl Partitioned {
    /// The start of the partition holding `t`.
    pub fn start(&self, t: SystemTime) -> SystemTime {
        crate::rollup::floor_time(t, self.span.as_secs())
    }

    /// Whether a row for `t` may be written and not be dropped by the next
    /// retention run: `t` is within the retention, less a margin (an hour,
    /// or a quarter of a shorter retention), before `now`.
    pub fn keeps(&self, t: SystemTime, now: SystemTime) -> bool {
        let margin = (self.retention / 4).min(Duration::from_secs(3600));
        match now.checked_sub(self.retention.saturating_sub(margin)) {
            Some(cutoff) => t >= cutoff,
            None => true,
        }
    }
}

/// The sink's partitioned tables and their settings.
#[derive(Debug, Clone)]
pub struct Layout {
    /// History (`<table>_check`).
    pub history: Partitioned,
    /// Rejects (`<table>_rejected`).
    pub rejected: Partitioned,
    /// Rollups, by level.
    pub rollups: Vec<(Level, Partitioned)>,
    /// Every site's rollups together, by level (as wide and kept as long as
    /// [`Layout::rollups`] of the same level).
    pub fleet: Vec<(Level, Partitioned)>,
    /// `<table>_make_partitions`, quoted.
    make: String,
    /// `<table>_drop_partitions`, quoted.
    drop: String,
    /// With a dead-letter topic: the oldest reject not produced to it yet,
    /// which retention keeps (see [`Retention::hold_undelivered`]).
    oldest_undelivered: Option<String>,
}

/// Retention of each table (the `[sink]` keys of the same names).
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// History rows.
    pub history: Duration,
    /// Width of the history's partitions.
    pub history_partition: Duration,
    /// Rejects.
    pub rejects: Duration,
    /// Rollups per minute.
    pub minute: Duration,
    /// Rollups per hour.
    pub hour: Duration,
    /// Rollups per day.
    pub day: Duration,
    /// Rejects not produced to the dead-letter topic yet are kept past
    /// `rejects` (their partitions are not dropped) until they are.
    pub hold_undelivered: bool,
}

impl Default for Retention {
    /// The defaults of `[sink]`.
    fn default() -> Self {
        Self::of(&crate::config::SinkConfig::default())
    }
}

impl Retention {
    /// The retentions `cfg` sets.
    pub fn of(cfg: &crate::config::SinkConfig) -> Self {
        Self {
            history: cfg.history_retention,
            history_partition: cfg.history_partition,
            rejects: cfg.rejects_retention,
            minute: cfg.rollup_minute_retention,
            hour: cfg.rollup_hour_retention,
            day: cfg.rollup_day_retention,
            hold_undelivered: cfg.dead_letter_topic.is_some(),
        }
    }
}

impl Layout {
    /// The layout of `tables` with `retention`.
    pub fn new(tables: &Tables, retention: Retention) -> Self {
        let day = Duration::from_secs(86_400);
        let part = |table: &str, span, retention| Partitioned {
            table: table.to_owned(),
            span,
            retention,
        };
        Self {
            history: part(
                &tables.check,
                retention.history_partition,
                retention.history,
            ),
            rejected: part(&tables.rejected, day, retention.rejects),
            rollups: vec![
                (
                    Level::Minute,
                    part(&tables.per_minute, day, retention.minute),
                ),
                (Level::Hour, part(&tables.per_hour, day, retention.hour)),
                (Level::Day, part(&tables.per_day, 30 * day, retention.day)),
            ],
            fleet: vec![
                (
                    Level::Minute,
                    part(&tables.fleet_per_minute, day, retention.minute),
                ),
                (
                    Level::Hour,
                    part(&tables.fleet_per_hour, day, retention.hour),
                ),
                (
                    Level::Day,
                    part(&tables.fleet_per_day, 30 * day, retention.day),
                ),
            ],
            make: tables.function("_make_partitions"),
            drop: tables.function("_drop_partitions"),
            oldest_undelivered: retention.hold_undelivered.then(|| {
                format!(
                    "SELECT min(rejected_at) FROM {} WHERE dead_lettered_at IS NULL AND reason <> ''",
                    tables.rejected
                )
            }),
        }
    }

    /// The rollup levels whose retention still covers `t`.
    pub fn levels_keeping(&self, t: SystemTime, now: SystemTime) -> Vec<Level> {
        self.rollups
            .iter()
            .filter(|(_, p)| p.keeps(t, now))
            .map(|(l, _)| *l)
            .collect()
    }

    /// The partition of `table` each time in `times` needs.
    pub fn needs(
        table: &Partitioned,
        times: impl IntoIterator<Item = SystemTime>,
    ) -> BTreeSet<(&Partitioned, SystemTime)> {
        times.into_iter().map(|t| (table, table.start(t))).collect()
    }

    /// Makes every partition in `needs` that does not exist yet, each in its
    /// own short transaction with a lock timeout (so it holds one table's
    /// lock at a time and cannot deadlock with a batch holding several);
    /// returns how many were made.
    pub async fn make(
        &self,
        client: &mut Client,
        needs: &BTreeSet<(&Partitioned, SystemTime)>,
    ) -> Result<i64, tokio_postgres::Error> {
        let mut made = 0;
        for need in needs {
            let tx = client.transaction().await?;
            tx.batch_execute(&format!("SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
                .await?;
            made += self.make_in(&tx, &BTreeSet::from([*need])).await?;
            tx.commit().await?;
        }
        Ok(made)
    }

    /// Like [`Layout::make`], in the caller's transaction (one that holds no
    /// lock another writer waits for, such as the upgrade's).
    pub async fn make_in(
        &self,
        client: &impl GenericClient,
        needs: &BTreeSet<(&Partitioned, SystemTime)>,
    ) -> Result<i64, tokio_postgres::Error> {
        let sql = format!(
            "SELECT {}($1::text::regclass, $2, $2, make_interval(secs => $3))",
            self.make
        );
        let statement = client.prepare(&sql).await?;
        let mut made = 0i64;
        for (table, start) in needs {
            let secs = table.span.as_secs_f64();
            let n: i32 = client
                .query_one(&statement, &[&table.table, start, &secs])
                .await?
                .get(0);
            made += i64::from(n);
        }
        Ok(made)
    }

    /// Makes the partitions of every table for today and tomorrow, and drops
    /// those past retention; returns (made, dropped).
    pub async fn maintain(
        &self,
        client: &mut Client,
        now: SystemTime,
    ) -> Result<(i64, i64), tokio_postgres::Error> {
        let tomorrow = now + Duration::from_secs(86_400);
        let tables = self.tables();
        let mut needs = BTreeSet::new();
        for table in &tables {
            needs.extend(Self::needs(table, [now, tomorrow]));
        }
        let made = self.make(client, &needs).await?;
        let mut dropped = 0i64;
        for table in tables {
            // One table's failure (a lock wait, a view on a partition) does
            // not stop the others' retention.
            match self.retain(client, table, now).await {
                Ok(n) => dropped += n,
                Err(e) => tracing::warn!(
                    table = %table.table,
                    error = %crate::postgres::error::db_message(&e),
                    "retention of this table failed; the other tables go on, this one is tried again in 10 minutes"
                ),
            }
        }
        Ok((made, dropped))
    }

    /// Retention of one table: detaches its partitions past retention, then
    /// drops the retired tables one a transaction (the parent not locked).
    /// Returns how many partitions it detached.
    async fn retain(
        &self,
        client: &mut Client,
        table: &Partitioned,
        now: SystemTime,
    ) -> Result<i64, tokio_postgres::Error> {
        let Some(mut before) = now.checked_sub(table.retention) else {
            return Ok(0);
        };
        if *table == self.rejected {
            before = self.hold_undelivered(client, before).await?;
        }
        let detached = self.retire(client, table, Some(before)).await?;
        for _ in 0..MAX_DROPS_PER_RUN {
            if self.retire(client, table, None).await? == 0 {
                break;
            }
        }
        Ok(i64::from(detached))
    }

    /// One call of `<table>_drop_partitions` in its own transaction: with
    /// `Some(before)`, detaches the partitions of `table` past `before`
    /// (marked retired; the parent is locked for a catalog change only);
    /// with `None`, drops one table retired earlier. Returns how many.
    async fn retire(
        &self,
        client: &mut Client,
        table: &Partitioned,
        before: Option<SystemTime>,
    ) -> Result<i32, tokio_postgres::Error> {
        let sql = match before {
            Some(_) => format!("SELECT {}($1::text::regclass, $2)", self.drop),
            None => format!("SELECT {}($1::text::regclass, '-infinity')", self.drop),
        };
        let tx = client.transaction().await?;
        tx.batch_execute(&format!("SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
            .await?;
        let n: i32 = match &before {
            Some(before) => tx.query_one(&sql, &[&table.table, before]).await?,
            None => tx.query_one(&sql, &[&table.table]).await?,
        }
        .get(0);
        tx.commit().await?;
        Ok(n)
    }

    /// `before`, or the oldest reject not produced to the dead-letter topic
    /// yet when that is older (logged: its partition and the newer ones
    /// outlive `rejects_retention` until it is produced).
    async fn hold_undelivered(
        &self,
        client: &Client,
        before: SystemTime,
    ) -> Result<SystemTime, tokio_postgres::Error> {
        let Some(sql) = &self.oldest_undelivered else {
            return Ok(before);
        };
        let oldest: Option<SystemTime> = client.query_one(sql, &[]).await?.get(0);
        match oldest {
            Some(t) if t < before => {
                tracing::warn!(
                    oldest = %humantime::format_rfc3339_seconds(t),
                    "rejects not produced to the dead-letter topic yet are kept past rejects_retention \
                     until they are (see website_monitor_publish_backlog{{stream=\"dead_letters\"}})"
                );
                Ok(t)
            }
            _ => Ok(before),
        }
    }

    /// The rollup tables, per site and of the fleet, with their levels.
    pub fn rollup_tables(&self) -> impl Iterator<Item = &(Level, Partitioned)> {
        self.rollups.iter().chain(&self.fleet)
    }

    fn tables(&self) -> Vec<&Partitioned> {
        let mut out = vec![&self.history, &self.rejected];
        out.extend(self.rollup_tables().map(|(_, p)| p));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn table(span_h: u64, retention_h: u64) -> Partitioned {
        Partitioned {
            table: "t".into(),
            span: Duration::from_secs(span_h * 3600),
            retention: Duration::from_secs(retention_h * 3600),
        }
    }

    #[test]
    fn partitions_start_on_epoch_aligned_spans() {
        let t = UNIX_EPOCH + Duration::from_secs(1_764_264_123);
        let start = |p: &Partitioned| p.start(t).duration_since(UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(start(&table(24, 1)), 1_764_201_600);
        assert_eq!(start(&table(1, 1)), 1_764_262_800);
    }

    #[test]
    fn a_row_is_kept_only_when_the_next_retention_run_would_not_drop_it() {
        let now = UNIX_EPOCH + Duration::from_secs(10 * 86_400);
        let p = table(24, 48);
        assert!(p.keeps(now, now));
        assert!(p.keeps(now - Duration::from_secs(46 * 3600), now));
        assert!(!p.keeps(now - Duration::from_secs(48 * 3600), now));
    }

    #[test]
    fn the_shortest_retention_still_keeps_recent_rows() {
        let now = UNIX_EPOCH + Duration::from_secs(10 * 86_400);
        let p = table(1, 1);
        assert!(p.keeps(now - Duration::from_secs(5), now));
        assert!(p.keeps(now - Duration::from_secs(44 * 60), now));
        assert!(!p.keeps(now - Duration::from_secs(46 * 60), now));
    }

    #[test]
    fn a_time_before_1970_starts_its_own_partition() {
        let p = table(24, 1);
        let t = UNIX_EPOCH - Duration::from_secs(86_400 * 3650 + 5);
        assert_eq!(
            p.start(t),
            UNIX_EPOCH - Duration::from_secs(86_400 * 3651),
            "the start at or before the time, on a day boundary"
        );
    }

    #[test]
    fn one_need_per_partition_not_per_record() {
        let p = table(24, 48);
        let t = UNIX_EPOCH + Duration::from_secs(1_764_264_123);
        let needs = Layout::needs(
            &p,
            [
                t,
                t + Duration::from_secs(60),
                t + Duration::from_secs(86_400),
            ],
        );
        assert_eq!(needs.len(), 2);
    }
}
