//! Step 4 of a batch: its checks as compact history rows ([`crate::row`]),
//! the probes they name, and what they add to the rollups
//! ([`crate::rollup`]) — all in the batch's transaction, so a record's
//! row and its counts are written together or not at all.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::time::SystemTime;

use futures::pin_mut;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;
use tokio_postgres::Transaction;

use crate::batch::Msg;
use crate::postgres::partitions::Layout;
use crate::postgres::sql::Statements;
use crate::rollup::{pack, Level, Rollups};
use crate::row::Compact;

/// A check to store: the Kafka partition it came from, its site, time and
/// columns.
pub(crate) struct Check<'m> {
    /// Its Kafka partition: the fleet rollups' shard.
    pub(crate) shard: i32,
    /// The site's row id.
    pub(crate) site_id: i64,
    /// The time it counts at.
    pub(crate) at: SystemTime,
    /// Its columns.
    pub(crate) row: Compact<'m>,
}

impl<'m> Check<'m> {
    /// The columns of `msg`'s record (a JSON object [`crate::decode`] has
    /// checked). Should the split fail all the same, the whole record is
    /// kept in `extra`, so nothing is lost.
    pub(crate) fn new(msg: &'m Msg, site_id: i64, at: SystemTime) -> Self {
        let text = msg
            .payload
            .as_deref()
            .and_then(|p| std::str::from_utf8(p).ok())
            .unwrap_or("{}");
        Self::of_text(text, msg.partition, site_id, at)
    }

    /// The columns of a record's JSON `text`.
    pub(crate) fn of_text(text: &'m str, shard: i32, site_id: i64, at: SystemTime) -> Self {
        let row = Compact::from_json(text).unwrap_or_else(|_| Compact {
            extra: Some(text.to_owned()),
            ..Compact::default()
        });
        Self {
            shard,
            site_id,
            at,
            row,
        }
    }
}

/// What [`write`] wrote.
pub(crate) struct Written {
    /// History rows.
    pub(crate) rows: u64,
    /// Checks past the history's retention (no row).
    pub(crate) past_retention: u64,
    /// The id of every probe name the checks give.
    pub(crate) probes: HashMap<String, i32>,
}

/// Writes the history rows of `checks` that its table's retention keeps
/// (the rollups are [`add_rollups`], once the status step has said which
/// checks fell in maintenance).
pub(crate) async fn write(
    tx: &Transaction<'_>,
    st: &Statements,
    layout: &Layout,
    checks: &[Check<'_>],
    now: SystemTime,
) -> Result<Written, tokio_postgres::Error> {
    let probes = probe_ids(tx, st, checks).await?;
    let probe_of = |c: &Check<'_>| c.row.probe.as_deref().and_then(|p| probes.get(p).copied());
    let rows = copy(tx, st, layout, checks, &probe_of, now).await?;
    Ok(Written {
        rows,
        past_retention: checks.len() as u64 - rows,
        probes,
    })
}

/// Adds every check of `checks` into the rollup levels that still cover
/// its time, per site and for the fleet; the checks whose index is in
/// `maintenance` count as made during a maintenance window.
pub(crate) async fn add_rollups(
    tx: &Transaction<'_>,
    st: &Statements,
    layout: &Layout,
    checks: &[Check<'_>],
    written: &Written,
    maintenance: &HashSet<usize>,
    now: SystemTime,
) -> Result<(), tokio_postgres::Error> {
    let (mut rollups, mut fleet) = (Rollups::default(), Rollups::default());
    for (i, c) in checks.iter().enumerate() {
        let levels = layout.levels_keeping(c.at, now);
        let probe = c
            .row
            .probe
            .as_deref()
            .and_then(|p| written.probes.get(p).copied())
            .unwrap_or(0);
        let m = maintenance.contains(&i);
        rollups.add(&levels, c.site_id, probe, c.at, &c.row, m);
        fleet.add(&levels, i64::from(c.shard), probe, c.at, &c.row, m);
    }
    for (i, level) in Level::ALL.iter().enumerate() {
        add_level(tx, &st.add_rollups[i], &rollups, *level).await?;
        add_level(tx, &st.add_fleet[i], &fleet, *level).await?;
    }
    Ok(())
}

/// The id of every probe `checks` name, adding the names not seen before.
async fn probe_ids(
    tx: &Transaction<'_>,
    st: &Statements,
    checks: &[Check<'_>],
) -> Result<HashMap<String, i32>, tokio_postgres::Error> {
    let names: BTreeSet<&str> = checks
        .iter()
        .filter_map(|c| c.row.probe.as_deref())
        .collect();
    if names.is_empty() {
        return Ok(HashMap::new());
    }
    let names: Vec<&str> = names.into_iter().collect();
    let read = |rows: Vec<tokio_postgres::Row>| -> HashMap<String, i32> {
        rows.iter().map(|r| (r.get(1), r.get(0))).collect()
    };
    let mut ids = read(tx.query(&st.probe_ids, &[&names]).await?);
    if ids.len() < names.len() {
        // Only names not seen before: ON CONFLICT would burn an id per name per batch.
        let missing: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| !ids.contains_key(*n))
            .collect();
        tx.execute(&st.add_probes, &[&missing]).await?;
        ids = read(tx.query(&st.probe_ids, &[&names]).await?);
    }
    Ok(ids)
}

/// The types of the history columns, in the order the COPY writes them
/// (`sql::HISTORY_COLUMNS`).
const HISTORY_TYPES: [Type; 27] = [
    Type::TIMESTAMPTZ,
    Type::INT8,
    Type::INT4,
    Type::INT4,
    Type::INT4,
    Type::INT4,
    Type::INT4,
    Type::INT4,
    Type::INT4,
    Type::INT4,
    Type::INT4,
    Type::INT2,
    Type::INT2,
    Type::INT2,
    Type::INT2,
    Type::INT2,
    Type::INT2,
    Type::BOOL,
    Type::BOOL,
    Type::TIMESTAMPTZ,
    Type::INET,
    Type::TEXT,
    Type::TEXT,
    Type::JSONB,
    Type::INT4,
    Type::INT4,
    Type::INT4,
];

/// Binary COPY of the history rows the retention keeps; returns how many.
async fn copy(
    tx: &Transaction<'_>,
    st: &Statements,
    layout: &Layout,
    checks: &[Check<'_>],
    probe_of: &(dyn Fn(&Check<'_>) -> Option<i32> + Sync),
    now: SystemTime,
) -> Result<u64, tokio_postgres::Error> {
    let sink = tx.copy_in(&st.copy_check).await?;
    let writer = BinaryCopyInWriter::new(sink, &HISTORY_TYPES);
    pin_mut!(writer);
    for c in checks.iter().filter(|c| layout.history.keeps(c.at, now)) {
        let r = &c.row;
        let [dns, connect, tls, ttfb, transfer] = r.timings_us;
        let not_after = r
            .cert_not_after
            .map(|s| SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(s as u64));
        let (present, cert_days_left) = r.stored_cert_days(c.at);
        let (ipv4, ip) = match r.ip {
            Some(IpAddr::V4(v4)) => (Some(u32::from(v4) as i32), None),
            other => (None, other),
        };
        let extra = r
            .extra
            .as_deref()
            .map(|e| crate::postgres::sql::RawJson(e.as_bytes()));
        writer
            .as_mut()
            .write(&[
                &c.at,
                &c.site_id,
                &probe_of(c),
                &present,
                &r.duration_us,
                &dns,
                &connect,
                &tls,
                &ttfb,
                &transfer,
                &r.response_bytes,
                &r.status_code,
                &r.redirects,
                &r.http_version,
                &r.tls_version,
                &cert_days_left,
                &r.schema_version,
                &r.ok,
                &r.re_check,
                &not_after,
                &ip,
                &r.error_kind.as_deref(),
                &r.error_message.as_deref(),
                &extra,
                &insert_delay_ms(c.at, SystemTime::now()),
                &ipv4,
                &r.interval_ms,
            ])
            .await?;
    }
    writer.finish().await
}

/// Milliseconds from a check to its row's write, when within an `int4`
/// (about 24 days either way); the view gives `inserted_at` back from it.
fn insert_delay_ms(at: SystemTime, written: SystemTime) -> Option<i32> {
    let ms = match written.duration_since(at) {
        Ok(d) => i64::try_from(d.as_millis()).ok(),
        Err(e) => i64::try_from(e.duration().as_millis()).ok().map(|ms| -ms),
    };
    ms.and_then(|ms| i32::try_from(ms).ok())
}

/// Adds the rollup counts of `level` in one statement.
async fn add_level(
    tx: &Transaction<'_>,
    statement: &tokio_postgres::Statement,
    rollups: &Rollups,
    level: Level,
) -> Result<(), tokio_postgres::Error> {
    let mut a = RollupArrays::default();
    for (key, counts) in rollups.level(level) {
        a.site.push(key.site_id);
        a.probe.push(key.probe_id);
        a.bucket.push(key.bucket);
        a.checks.push(counts.checks);
        a.ok.push(counts.ok);
        a.failed.push(counts.failed);
        a.maintenance.push(counts.maintenance);
        a.responses.push(counts.responses);
        a.min.push(counts.duration_min_us);
        a.max.push(counts.duration_max_us);
        a.sum.push(counts.duration_sum_us);
        a.cert.push(counts.cert_days_min);
        slice(
            &mut a.latency,
            &mut a.latency_lo,
            &mut a.latency_hi,
            pack(&counts.latency),
        );
        slice(
            &mut a.failures,
            &mut a.failures_lo,
            &mut a.failures_hi,
            pack(&counts.failures),
        );
    }
    if a.site.is_empty() {
        return Ok(());
    }
    tx.execute(
        statement,
        &[
            &a.site,
            &a.probe,
            &a.bucket,
            &a.checks,
            &a.ok,
            &a.failed,
            &a.responses,
            &a.min,
            &a.max,
            &a.sum,
            &a.cert,
            &a.latency,
            &a.failures,
            &a.latency_lo,
            &a.latency_hi,
            &a.failures_lo,
            &a.failures_hi,
            &a.maintenance,
        ],
    )
    .await?;
    Ok(())
}

/// Appends `packed` to `flat`, recording its bounds (empty when `None`).
fn slice(flat: &mut Vec<i64>, lo: &mut Vec<i32>, hi: &mut Vec<i32>, packed: Option<Vec<i64>>) {
    lo.push(flat.len() as i32);
    flat.extend(packed.unwrap_or_default());
    hi.push(flat.len() as i32);
}

/// The parameters of one rollup statement, one array per column.
#[derive(Default)]
struct RollupArrays {
    site: Vec<i64>,
    probe: Vec<i32>,
    bucket: Vec<SystemTime>,
    checks: Vec<i32>,
    ok: Vec<i32>,
    failed: Vec<i32>,
    responses: Vec<i32>,
    min: Vec<Option<i32>>,
    max: Vec<Option<i32>>,
    sum: Vec<i64>,
    cert: Vec<Option<i16>>,
    latency: Vec<i64>,
    latency_lo: Vec<i32>,
    latency_hi: Vec<i32>,
    failures: Vec<i64>,
    failures_lo: Vec<i32>,
    failures_hi: Vec<i32>,
    maintenance: Vec<i32>,
}
