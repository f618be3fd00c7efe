//! Step 4b of a batch: the site status model ([`crate::status`]) fed with
//! the batch's checks, in the batch's transaction, after the history.
//!
//! 1. insert the missing status rows of the batch's sites; lock the status
//!    rows, then every probe row of those sites, in key order
//!    ([`crate::postgres::status_rows`]);
//! 2. feed the records with `ok` and `checked_at`, in
//!    `(checked_at, partition, offset)` order, to [`crate::status::Site::apply`];
//! 3. write back the sites (with `wake_at`, when the sweep must look again),
//!    their probes and the transitions.
//!
//! Everything is decided from the locked rows, the records and the policy,
//! and committed with the offsets: a replayed batch (after a rollback or a
//! kill -9) finds the rows as they were and decides the same, and a
//! committed one is skipped by the offsets table — a transition is written
//! once, never twice, never missed. The sweep between batches is
//! [`crate::postgres::sweep`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use tokio_postgres::Transaction;

use crate::batch::Msg;
use crate::decode::Good;
use crate::postgres::history::Check as Row;
use crate::postgres::status_rows::{self as rows, Loaded, Save, StatusStatements};
use crate::row::Compact;
use crate::status::{
    effective_time, AdHocWindow, Check, Policy, Position, Thresholds, Transition, Windows,
};

/// What the model takes from one record of the batch.
#[derive(Debug, Clone)]
pub(crate) struct Input<'a> {
    site_id: i64,
    url: &'a str,
    /// `None`: a record without a probe (probe id 0).
    probe: Option<&'a str>,
    checked_at: SystemTime,
    /// Dated ahead of the batch's wall clock beyond the skew: `checked_at`
    /// is that clock ([`effective_time`]).
    ahead: bool,
    /// Its `checked_at` as written.
    written: SystemTime,
    /// When the sink read it from Kafka.
    received_at: SystemTime,
    ok: bool,
    duration: Option<Duration>,
    interval: Option<f64>,
    error_kind: Option<&'a str>,
    position: Position,
    /// Its index in the batch's checks (for the rollups' maintenance count).
    index: usize,
}

impl<'a> Input<'a> {
    /// The input of a good record (`msg`'s) and its history row; `None` for
    /// a record without `ok` or `checked_at` (it says nothing about the
    /// site's state). A `checked_at` too far ahead of `now` (the batch's
    /// wall clock) counts at `now` ([`effective_time`]).
    pub(crate) fn of(
        msg: &Msg,
        g: &'a Good,
        row: &'a Row<'a>,
        now: SystemTime,
        index: usize,
    ) -> Option<Self> {
        let written = g.checked_at?;
        let checked_at = effective_time(written.into(), now.into()).into();
        Some(Self {
            site_id: row.site_id,
            url: &g.url,
            probe: row.row.probe.as_deref().filter(|p| !p.is_empty()),
            checked_at,
            ahead: checked_at != written,
            written,
            received_at: msg.received_at,
            ok: g.ok?,
            duration: g.duration.and_then(|d| Duration::try_from_secs_f64(d).ok()),
            interval: interval_of(&row.row),
            error_kind: row.row.error_kind.as_deref(),
            position: Position {
                partition: msg.partition,
                offset: msg.offset,
            },
            index,
        })
    }

    fn key(&self) -> (SystemTime, i32, i64) {
        (
            self.checked_at,
            self.position.partition,
            self.position.offset,
        )
    }
}

/// The record's `interval` (seconds), when the source wrote a number (the
/// policy judges it: [`Thresholds::interval_of`]): the history's typed
/// column (`interval_ms`, migration 13) when it took it, else `extra` (not
/// whole milliseconds, negative, too large).
fn interval_of(row: &Compact<'_>) -> Option<f64> {
    if let Some(ms) = row.interval_ms {
        return Some(f64::from(ms) / 1e3);
    }
    let extra = row
        .extra
        .as_deref()
        .filter(|e| e.contains("\"interval\""))?;
    let v: serde_json::Value = serde_json::from_str(extra).ok()?;
    v.get("interval")?.as_f64()
}

/// One site's policy: its thresholds and windows (its url matched once).
pub(crate) struct Rules<'p> {
    pub(crate) thresholds: &'p Thresholds,
    pub(crate) windows: Windows<'p>,
}

pub(crate) fn rules_of<'p>(
    policy: &'p Policy,
    adhoc: &'p [AdHocWindow],
    id: i64,
    url: &str,
) -> Rules<'p> {
    Rules {
        thresholds: policy.for_url(url),
        windows: Windows::for_site(policy.recurring(), adhoc, id, url),
    }
}

/// What step 4b takes from the batch transaction.
pub(crate) struct Batch<'b> {
    /// The batch's records.
    pub(crate) msgs: &'b [Msg],
    /// The good records to store, with their index in `msgs`.
    pub(crate) goods: &'b [(usize, &'b Good)],
    /// Their history rows, in the same order.
    pub(crate) rows: &'b [Row<'b>],
    /// The id of every probe name of the batch.
    pub(crate) probe_ids: &'b HashMap<String, i32>,
    /// The batch's wall clock.
    pub(crate) now: SystemTime,
}

impl<'b> Batch<'b> {
    /// The step's view of the batch transaction.
    pub(crate) fn new(
        msgs: &'b [Msg],
        goods: &'b [(usize, &'b Good)],
        rows: &'b [Row<'b>],
        probe_ids: &'b HashMap<String, i32>,
        now: SystemTime,
    ) -> Self {
        Self {
            msgs,
            goods,
            rows,
            probe_ids,
            now,
        }
    }
}

/// What step 4b did.
pub(crate) struct Written {
    /// The transitions made, by the state entered.
    pub(crate) transitions: HashMap<&'static str, u64>,
    /// The records found late for their probe.
    pub(crate) late: u64,
    /// The indices (in the batch's rows) of the checks made while a
    /// maintenance window covered their site: the rollups count them apart.
    pub(crate) maintenance: HashSet<usize>,
}

/// Step 4b of a batch: its good records fed to the model and its rows
/// written.
pub(crate) async fn write_batch(
    tx: &Transaction<'_>,
    st: &StatusStatements,
    b: &Batch<'_>,
) -> Result<Written, tokio_postgres::Error> {
    let inputs = b
        .goods
        .iter()
        .zip(b.rows)
        .enumerate()
        .filter_map(|(n, (&(i, g), c))| Input::of(&b.msgs[i], g, c, b.now, n))
        .collect();
    let out = write(tx, st, &st.policy, inputs, b.probe_ids).await?;
    Ok(Written {
        transitions: count(&out.made),
        late: out.late,
        maintenance: out.maintenance,
    })
}

/// What [`write`] did.
pub(crate) struct Outcome {
    /// The transitions made.
    pub(crate) made: Vec<Transition>,
    /// The records late for their probe.
    pub(crate) late: u64,
    /// The inputs' `index` of the checks made during a maintenance window.
    pub(crate) maintenance: HashSet<usize>,
}

/// Feeds `inputs` to the model and writes the result. `probe_ids`: the id
/// of every probe name of the batch.
pub(crate) async fn write(
    tx: &Transaction<'_>,
    st: &StatusStatements,
    policy: &Policy,
    mut inputs: Vec<Input<'_>>,
    probe_ids: &HashMap<String, i32>,
) -> Result<Outcome, tokio_postgres::Error> {
    let mut maintenance = HashSet::new();
    if inputs.is_empty() {
        return Ok(Outcome {
            made: Vec::new(),
            late: 0,
            maintenance,
        });
    }
    inputs.sort_by_key(Input::key);
    let mut first: BTreeMap<i64, SystemTime> = BTreeMap::new();
    let mut urls: HashMap<i64, &str> = HashMap::new();
    // The partition of each site's newest record: the sweep looks only at
    // sites of partitions its sink has caught up on.
    let mut partition: HashMap<i64, i32> = HashMap::new();
    for i in &inputs {
        first.entry(i.site_id).or_insert(i.checked_at);
        urls.entry(i.site_id).or_insert(i.url);
        partition.insert(i.site_id, i.position.partition);
    }
    let mut sites = rows::lock(tx, st, &first).await?;
    let earliest = inputs[0].checked_at;
    let adhoc = rows::windows(tx, st, earliest).await?;
    let rules: HashMap<i64, Rules<'_>> = urls
        .iter()
        .map(|(&id, url)| (id, rules_of(policy, &adhoc, id, url)))
        .collect();
    let mut out = Vec::new();
    for i in &inputs {
        let (Some(l), Some(r)) = (sites.get_mut(&i.site_id), rules.get(&i.site_id)) else {
            continue;
        };
        // At its own time, late or not: "checks during maintenance".
        if r.windows
            .covering(DateTime::<Utc>::from(i.checked_at))
            .is_some()
        {
            maintenance.insert(i.index);
        }
        if let Some(t) = apply(l, i, r, probe_ids) {
            out.push(t);
        }
    }
    let saves: Vec<Save<'_>> = sites
        .values()
        .map(|l| {
            let r = &rules[&l.site.status.site_id];
            Save {
                loaded: l,
                wake_at: l.site.wake_at(r.thresholds, &r.windows),
                partition: partition.get(&l.site.status.site_id).copied(),
            }
        })
        .collect();
    rows::save(tx, st, &saves).await?;
    rows::add_transitions(tx, st, &out).await?;
    let late = sites.values().map(|l| l.site.late).sum();
    Ok(Outcome {
        made: out,
        late,
        maintenance,
    })
}

/// Transitions by the state entered, for the metrics.
pub(crate) fn count(made: &[Transition]) -> HashMap<&'static str, u64> {
    let mut out = HashMap::new();
    for t in made {
        *out.entry(t.to.as_str()).or_default() += 1;
    }
    out
}

/// One record into its site; its transition, if it caused one.
fn apply(
    l: &mut Loaded,
    i: &Input<'_>,
    r: &Rules<'_>,
    probe_ids: &HashMap<String, i32>,
) -> Option<Transition> {
    let name = i.probe.unwrap_or("");
    let id = match i.probe {
        None => 0,
        Some(p) => match probe_ids.get(p) {
            Some(&id) => id,
            None => {
                tracing::warn!(
                    probe = p,
                    "a probe without an id; its record is left out of the site status"
                );
                return None;
            }
        },
    };
    l.probe_ids.entry(name.to_owned()).or_insert(id);
    let mut checked_at = DateTime::<Utc>::from(i.checked_at);
    if i.ahead {
        // Checks dated ahead all count at the batch's clock: one after the
        // other (in Kafka order), not as repeats of one.
        let last = l.site.probes.get(name).and_then(|p| p.last_checked_at);
        if let Some(last) = last {
            checked_at = checked_at.max(last + chrono::TimeDelta::microseconds(1));
        }
    }
    let check = Check {
        probe: name,
        checked_at,
        ok: i.ok,
        duration: i.duration,
        interval: i.interval,
        error_kind: i.error_kind,
        position: Some(i.position),
        received_at: Some(DateTime::<Utc>::from(i.received_at)),
        written_ahead: i.ahead.then(|| DateTime::<Utc>::from(i.written)),
    };
    l.site.apply(&check, r.thresholds, &r.windows)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The interval of a record as the history row holds it: the typed
    /// column (migration 13) or, when it did not take it, `extra`.
    fn of(record: &str) -> Option<f64> {
        interval_of(&Compact::from_json(record).expect("a record"))
    }

    #[test]
    fn interval_is_read_from_the_typed_column_or_from_extra_when_there() {
        assert_eq!(of(r#"{"url":"u"}"#), None);
        assert_eq!(of(r#"{"url":"u","x":1}"#), None);
        assert_eq!(of(r#"{"url":"u","interval":30}"#), Some(30.0));
        assert_eq!(of(r#"{"url":"u","interval":0.3}"#), Some(0.3));
        assert_eq!(of(r#"{"url":"u","interval":1e-4}"#), Some(1e-4));
        assert_eq!(of(r#"{"url":"u","interval":-5}"#), Some(-5.0));
        assert_eq!(of(r#"{"url":"u","interval":"30s"}"#), None);
    }
}
