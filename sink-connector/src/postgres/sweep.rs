//! Writer 0's sweep of the site status (between batches, in its own short
//! transaction): the sites whose probes fell silent or whose maintenance
//! windows began, ended, appeared, moved or went — see `status` for the
//! batch side and docs/status.md, "How it is written".

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use tokio_postgres::Transaction;

use crate::postgres::sql::Conn;
use crate::postgres::status::rules_of;
use crate::postgres::status_rows::{self as rows, Loaded, Save, StatusStatements};
use crate::status::{AdHocWindow, Policy, Site, Swept, Transition, FUTURE_SKEW};

/// The sweep at `now` over the locked sites `loaded` (with their urls):
/// silent probes, windows begun or ended. Writes back every site (its
/// clock and `wake_at` move even when nothing changed) and the transitions.
pub(crate) async fn sweep_sites(
    tx: &Transaction<'_>,
    st: &StatusStatements,
    policy: &Policy,
    adhoc: &[AdHocWindow],
    mut loaded: BTreeMap<i64, Loaded>,
    urls: &HashMap<i64, String>,
    now: SystemTime,
) -> Result<Vec<Transition>, tokio_postgres::Error> {
    let now = DateTime::<Utc>::from(now);
    let mut out = Vec::new();
    let mut wakes = HashMap::new();
    for (id, l) in loaded.iter_mut() {
        let Some(url) = urls.get(id) else { continue };
        let r = rules_of(policy, adhoc, *id, url);
        match l.site.sweep(now, r.thresholds, &r.windows) {
            Swept::Idle => bump(&mut l.site, now),
            Swept::Changed(t) => out.extend(t),
        }
        wakes.insert(*id, l.site.wake_at(r.thresholds, &r.windows));
    }
    let saves: Vec<Save<'_>> = loaded
        .values()
        .map(|l| Save {
            loaded: l,
            wake_at: wakes.get(&l.site.status.site_id).copied().flatten(),
            partition: None,
        })
        .collect();
    rows::save(tx, st, &saves).await?;
    rows::add_transitions(tx, st, &out).await?;
    Ok(out)
}

/// A site the sweep found nothing to do for is still evaluated at `now`:
/// its clock moves on, so `wake_at` (computed from it) moves past a window
/// boundary that changed nothing.
fn bump(site: &mut Site, now: DateTime<Utc>) {
    site.status.evaluated_at = site.status.evaluated_at.max(now);
}

/// At most this many due sites per sweep (the next sweep takes the rest).
const SWEEP_LIMIT: i64 = 1_000;

/// The version of an ad-hoc window row: its id and bounds (an operator who
/// moves a window's end makes a new version).
type Version = (i64, DateTime<Utc>, DateTime<Utc>);

/// What the sweeps have done with the ad-hoc windows (writer 0 keeps it
/// between sweeps). A window row the sweep has not seen before, one whose
/// bounds changed, one gone (deleted, or its end moved into the past), and
/// one with a boundary since the last sweep, all reach every site they
/// apply to that was not evaluated since — even past [`SWEEP_LIMIT`]: it is
/// marked done only when a sweep took every site due.
#[derive(Debug, Clone, Default)]
pub(crate) struct SweepCursor {
    /// Window boundaries up to here have reached every site (`None`: the
    /// first sweep looks back [`SweepCursor::LOOKBACK`]).
    until: Option<SystemTime>,
    /// Every open window version seen, and when it was first seen.
    seen: HashMap<Version, (AdHocWindow, SystemTime)>,
    /// The versions whose sites have all been swept since.
    done: HashSet<Version>,
    /// Versions gone since they were seen, with when that was noticed,
    /// whose sites are still to be swept.
    gone: HashMap<Version, (AdHocWindow, SystemTime)>,
}

impl SweepCursor {
    /// How far back the first sweep looks for window boundaries.
    const LOOKBACK: Duration = Duration::from_secs(3_600);

    /// The windows to take to their sites now, each with the time since
    /// which a site evaluated has been through it; and `current` recorded.
    fn crossed(
        &mut self,
        current: &[AdHocWindow],
        now: SystemTime,
    ) -> Vec<(AdHocWindow, SystemTime)> {
        let until = self
            .until
            .unwrap_or_else(|| now.checked_sub(Self::LOOKBACK).unwrap_or(now));
        let version = |w: &AdHocWindow| (w.id, w.from, w.to);
        let live: HashSet<Version> = current.iter().map(version).collect();
        for (v, seen) in std::mem::take(&mut self.seen) {
            if live.contains(&v) {
                self.seen.insert(v, seen);
            } else {
                self.gone.entry(v).or_insert((seen.0, now));
            }
        }
        let mut out: Vec<(AdHocWindow, SystemTime)> = Vec::new();
        for w in current {
            let first = self.seen.entry(version(w)).or_insert((w.clone(), now)).1;
            let boundary = [w.from, w.to]
                .iter()
                .map(|b| SystemTime::from(*b))
                .filter(|b| until < *b && *b <= now)
                .max();
            if !self.done.contains(&version(w)) {
                out.push((w.clone(), boundary.map_or(first, |b| b.max(first))));
            } else if let Some(b) = boundary {
                out.push((w.clone(), b));
            }
        }
        out.extend(self.gone.values().cloned());
        out
    }

    /// A sweep took every site due: everything seen is done.
    fn complete(&mut self, now: SystemTime) {
        self.until = Some(now.max(self.until.unwrap_or(now)));
        self.done = self.seen.keys().copied().collect();
        self.gone.clear();
    }
}

/// Writer 0's sweep, in its own short transaction at `now`: the sites due
/// (`wake_at <= now`) and those of the ad-hoc windows `cursor` says are new
/// to them ([`SweepCursor`]), among the sites whose newest record came from
/// one of `partitions` (those the sink has caught up on: silence is judged
/// only where the data is complete), except the sites of `pending` (sorted
/// urls with records collected but not written yet: those records settle
/// them). Due sites locked by a batch are skipped (`SKIP LOCKED`): the batch
/// evaluates them, or the next sweep does. The transitions made, and
/// whether the sweep took every site due (else the next should follow at
/// once).
pub(crate) async fn sweep(
    conn: &mut Conn,
    now: SystemTime,
    cursor: &mut SweepCursor,
    partitions: &[i32],
    pending: &[&str],
) -> Result<(Vec<Transition>, bool), tokio_postgres::Error> {
    let st = &conn.statements.status;
    let policy = Arc::clone(&st.policy);
    let tx = conn.client.transaction().await?;
    let since = cursor
        .until
        .unwrap_or_else(|| now.checked_sub(SweepCursor::LOOKBACK).unwrap_or(now));
    let adhoc = rows::windows(&tx, st, since).await?;
    let mut next = cursor.clone();
    let crossed = next.crossed(&adhoc, now);
    let mut extra: Vec<i64> = Vec::new();
    // The first sweep of this sink also looks at every site in maintenance:
    // its window may have gone while no sink ran.
    let first = cursor.until.is_none();
    if !crossed.is_empty() || first {
        // A site evaluated since (on its clock, which may run up to the
        // skew ahead) has been through the window.
        let skew = FUTURE_SKEW.to_std().unwrap_or_default();
        for r in tx.query(&st.all_sites, &[&partitions]).await? {
            let (id, url, evaluated): (i64, &str, SystemTime) = (r.get(0), r.get(1), r.get(2));
            let in_maintenance: bool = r.get(3);
            let due = (first && in_maintenance)
                || crossed
                    .iter()
                    .any(|(w, since)| w.applies(id, url) && evaluated < *since + skew);
            if due && pending.binary_search(&url).is_err() {
                extra.push(id);
            }
        }
    }
    let due = tx
        .query(
            &st.due,
            &[&now, &extra, &SWEEP_LIMIT, &partitions, &pending],
        )
        .await?;
    let complete = (due.len() as i64) < SWEEP_LIMIT;
    if complete {
        next.complete(now);
    }
    let out = if due.is_empty() {
        Vec::new()
    } else {
        let urls: HashMap<i64, String> = due.iter().map(|r| (r.get(0), r.get(1))).collect();
        let ids: Vec<i64> = due.iter().map(|r| r.get(0)).collect();
        let loaded = rows::load(&tx, st, &ids).await?;
        sweep_sites(&tx, st, &policy, &adhoc, loaded, &urls, now).await?
    };
    tx.commit().await?;
    *cursor = next;
    Ok((out, complete))
}
