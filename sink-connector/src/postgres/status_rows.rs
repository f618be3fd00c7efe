//! The rows of the status tables (migration 0009) and their SQL: loading
//! sites with every probe under lock, writing them back with their
//! transitions, and the ad-hoc maintenance windows.
//!
//! Lock order, the same in the batch transaction and in the sweep: the
//! status rows of the sites, by `site_id`, then the probe rows of those
//! sites, by `(site_id, probe_id)`. A probe row is only ever read or written
//! under its site's status row lock, so the probe rows add no lock cycle.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use tokio_postgres::{Client, GenericClient, Row, Statement, Transaction};

use crate::postgres::migrate::Tables;
use crate::status::{
    AdHocError, AdHocWindow, Policy, ProbeState, Site, SiteStatus, State, Transition,
};

/// At most this many ad-hoc windows are read at once (the first to end;
/// more than this is not a maintenance plan).
const MAX_WINDOWS: i64 = 10_000;

/// The statements' SQL, with quoted table names.
#[derive(Debug, Clone)]
pub(crate) struct StatusSql {
    insert_missing: String,
    lock_sites: String,
    lock_probes: String,
    save_sites: String,
    save_probes: String,
    add_transitions: String,
    windows: String,
    due: String,
    all_sites: String,
    site_states: String,
    /// Ids of the ad-hoc window rows found unusable and warned about, shared
    /// by every connection of the sink: one warning per row.
    bad_windows: Arc<Mutex<HashSet<i64>>>,
}

impl StatusSql {
    pub(crate) fn new(t: &Tables) -> Self {
        let status = t.function("_status");
        let probe_state = t.function("_probe_state");
        Self {
            insert_missing: format!(
                "INSERT INTO {status} (site_id, state, since, last_change, evaluated_at)
                 SELECT k.s, 'unknown', k.t, k.t, k.t
                 FROM unnest($1::int8[], $2::timestamptz[]) AS k(s, t)
                 ORDER BY k.s
                 ON CONFLICT (site_id) DO NOTHING"
            ),
            lock_sites: format!(
                "SELECT st.site_id, st.state, st.since, st.last_change, st.evaluated_at,
                        st.probes_up, st.probes_degraded, st.probes_down, st.probes_unknown, st.seq
                 FROM {status} st WHERE st.site_id = ANY($1::int8[])
                 ORDER BY st.site_id FOR UPDATE"
            ),
            lock_probes: format!(
                "SELECT ps.site_id, ps.probe_id, COALESCE(p.name, ''), ps.state, ps.health, ps.since,
                        ps.last_checked_at, ps.fails, ps.oks, ps.slows, ps.fasts, ps.interval_ms, ps.last_error,
                        ps.recent, ps.recent_n, ps.heard_at, ps.down_before_window,
                        ps.flapping, ps.ahead_written_at
                 FROM {probe_state} ps LEFT JOIN {probe} p ON p.id = ps.probe_id
                 WHERE ps.site_id = ANY($1::int8[])
                 ORDER BY ps.site_id, ps.probe_id FOR UPDATE OF ps",
                probe = t.probe
            ),
            save_sites: format!(
                "UPDATE {status} st SET state = v.state, since = v.since, last_change = v.lc,
                        evaluated_at = v.ev, wake_at = v.wake, probes_up = v.up,
                        probes_degraded = v.dg, probes_down = v.dn, probes_unknown = v.uk, seq = v.seq,
                        \"partition\" = COALESCE(v.pa, st.\"partition\")
                 FROM unnest($1::int8[], $2::text[], $3::timestamptz[], $4::timestamptz[],
                             $5::timestamptz[], $6::timestamptz[], $7::int4[], $8::int4[],
                             $9::int4[], $10::int4[], $11::int8[], $12::int4[])
                      AS v(id, state, since, lc, ev, wake, up, dg, dn, uk, seq, pa)
                 WHERE st.site_id = v.id"
            ),
            save_probes: format!(
                "INSERT INTO {probe_state} AS ps (site_id, probe_id, state, health, since,
                        last_checked_at, fails, oks, slows, fasts, interval_ms, last_error,
                        recent, recent_n, heard_at, down_before_window, flapping, ahead_written_at)
                 SELECT * FROM unnest($1::int8[], $2::int4[], $3::text[], $4::text[],
                        $5::timestamptz[], $6::timestamptz[], $7::int4[], $8::int4[], $9::int4[],
                        $10::int4[], $11::int4[], $12::text[], $13::int8[], $14::int2[],
                        $15::timestamptz[], $16::bool[], $17::bool[], $18::timestamptz[])
                 ON CONFLICT (site_id, probe_id) DO UPDATE SET
                        state = excluded.state, health = excluded.health, since = excluded.since,
                        last_checked_at = excluded.last_checked_at, fails = excluded.fails,
                        oks = excluded.oks, slows = excluded.slows, fasts = excluded.fasts,
                        interval_ms = excluded.interval_ms, last_error = excluded.last_error,
                        recent = excluded.recent, recent_n = excluded.recent_n,
                        heard_at = excluded.heard_at, down_before_window = excluded.down_before_window,
                        flapping = excluded.flapping, ahead_written_at = excluded.ahead_written_at"
            ),
            add_transitions: format!(
                "INSERT INTO {tr} (site_id, seq, from_state, to_state, at, reason, probes, \"partition\", \"offset\")
                 SELECT v.s, v.q, v.f, v.t, v.a, v.r, v.p::jsonb, v.pa, v.o
                 FROM unnest($1::int8[], $2::int8[], $3::text[], $4::text[], $5::timestamptz[],
                             $6::text[], $7::text[], $8::int4[], $9::int8[])
                      AS v(s, q, f, t, a, r, p, pa, o)",
                tr = t.function("_transition")
            ),
            windows: format!(
                "SELECT id, site_id, url_pattern, starts_at, ends_at, reason FROM {m}
                 WHERE ends_at > $1 ORDER BY ends_at LIMIT {MAX_WINDOWS}",
                m = t.function("_maintenance")
            ),
            due: format!(
                "SELECT st.site_id, s.url FROM {status} st JOIN {site} s ON s.id = st.site_id
                 WHERE (st.wake_at <= $1 OR st.site_id = ANY($2::int8[]))
                   AND st.\"partition\" = ANY($4::int4[]) AND NOT s.url = ANY($5::text[])
                 ORDER BY st.site_id LIMIT $3 FOR UPDATE OF st SKIP LOCKED",
                site = t.site
            ),
            all_sites: format!(
                "SELECT st.site_id, s.url, st.evaluated_at, st.state = 'maintenance'
                 FROM {status} st JOIN {site} s ON s.id = st.site_id
                 WHERE st.\"partition\" = ANY($1::int4[])",
                site = t.site
            ),
            site_states: format!(
                "SELECT s.url, st.state FROM {status} st JOIN {site} s ON s.id = st.site_id
                 WHERE st.\"partition\" = ANY($1::int4[])",
                site = t.site
            ),
            bad_windows: Arc::default(),
        }
    }
}

/// The status statements, prepared on one connection.
#[derive(Debug)]
pub(crate) struct StatusStatements {
    insert_missing: Statement,
    lock_sites: Statement,
    lock_probes: Statement,
    save_sites: Statement,
    save_probes: Statement,
    add_transitions: Statement,
    windows: Statement,
    pub(crate) due: Statement,
    pub(crate) all_sites: Statement,
    /// The url and state of the sites of some partitions (the per-site gauge).
    pub(crate) site_states: Statement,
    /// The `[sink.status]` policy.
    pub(crate) policy: Arc<Policy>,
    /// Ids of the ad-hoc window rows found unusable and warned about.
    bad_windows: Arc<Mutex<HashSet<i64>>>,
}

impl StatusStatements {
    pub(crate) async fn prepare(
        client: &Client,
        sql: &StatusSql,
        policy: Arc<Policy>,
    ) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            insert_missing: client.prepare(&sql.insert_missing).await?,
            lock_sites: client.prepare(&sql.lock_sites).await?,
            lock_probes: client.prepare(&sql.lock_probes).await?,
            save_sites: client.prepare(&sql.save_sites).await?,
            save_probes: client.prepare(&sql.save_probes).await?,
            add_transitions: client.prepare(&sql.add_transitions).await?,
            windows: client.prepare(&sql.windows).await?,
            due: client.prepare(&sql.due).await?,
            all_sites: client.prepare(&sql.all_sites).await?,
            site_states: client.prepare(&sql.site_states).await?,
            policy,
            bad_windows: Arc::clone(&sql.bad_windows),
        })
    }
}

fn utc(t: SystemTime) -> DateTime<Utc> {
    DateTime::<Utc>::from(t)
}

fn sys(t: DateTime<Utc>) -> SystemTime {
    SystemTime::from(t)
}

fn state_of(text: &str) -> State {
    text.parse().unwrap_or(State::Unknown)
}

fn count(n: i32) -> u32 {
    u32::try_from(n).unwrap_or(0)
}

/// A loaded site and the probe ids of its probes (by name).
pub(crate) struct Loaded {
    pub(crate) site: Site,
    pub(crate) probe_ids: HashMap<String, i32>,
}

/// Inserts the missing status rows of `first` (site id → the time it is
/// first seen; sorted), then locks the status rows of those sites and every
/// probe row of theirs, in key order, and builds them.
pub(crate) async fn lock(
    tx: &Transaction<'_>,
    st: &StatusStatements,
    first: &BTreeMap<i64, SystemTime>,
) -> Result<BTreeMap<i64, Loaded>, tokio_postgres::Error> {
    let ids: Vec<i64> = first.keys().copied().collect();
    let times: Vec<SystemTime> = first.values().copied().collect();
    tx.execute(&st.insert_missing, &[&ids, &times]).await?;
    load(tx, st, &ids).await
}

/// Locks and builds the sites `ids` (sorted) that have a status row.
pub(crate) async fn load(
    tx: &impl GenericClient,
    st: &StatusStatements,
    ids: &[i64],
) -> Result<BTreeMap<i64, Loaded>, tokio_postgres::Error> {
    let mut out = BTreeMap::new();
    for r in tx.query(&st.lock_sites, &[&ids]).await? {
        let status = SiteStatus {
            site_id: r.get(0),
            state: state_of(r.get(1)),
            since: utc(r.get(2)),
            last_change: utc(r.get(3)),
            evaluated_at: utc(r.get(4)),
            probes_up: count(r.get(5)),
            probes_degraded: count(r.get(6)),
            probes_down: count(r.get(7)),
            probes_unknown: count(r.get(8)),
            seq: r.get(9),
        };
        let site = Site {
            status,
            probes: BTreeMap::new(),
            late: 0,
        };
        out.insert(
            site.status.site_id,
            Loaded {
                site,
                probe_ids: HashMap::new(),
            },
        );
    }
    for r in tx.query(&st.lock_probes, &[&ids]).await? {
        let Some(l) = out.get_mut(&r.get::<_, i64>(0)) else {
            continue;
        };
        let name: String = r.get(2);
        l.probe_ids.insert(name.clone(), r.get(1));
        l.site.probes.insert(name, probe_of(&r));
    }
    Ok(out)
}

fn probe_of(r: &Row) -> ProbeState {
    let state = state_of(r.get(3));
    ProbeState {
        health: match state_of(r.get(4)) {
            State::Maintenance => State::Unknown,
            h => h,
        },
        in_maintenance: state == State::Maintenance,
        since: utc(r.get(5)),
        last_checked_at: r.get::<_, Option<SystemTime>>(6).map(utc),
        fails: count(r.get(7)),
        oks: count(r.get(8)),
        slows: count(r.get(9)),
        fasts: count(r.get(10)),
        interval: Duration::from_millis(u64::try_from(r.get::<_, i32>(11)).unwrap_or(60_000)),
        last_error: r.get(12),
        // The bits as stored (int8 is signed).
        recent: r.get::<_, i64>(13) as u64,
        recent_n: u32::try_from(r.get::<_, i16>(14)).unwrap_or(0).min(64),
        heard_at: r.get::<_, Option<SystemTime>>(15).map(utc),
        down_before_window: r.get(16),
        flapping: r.get(17),
        ahead_written_at: r.get::<_, Option<SystemTime>>(18).map(utc),
    }
}

/// A site to write back: its rows, when the sweep must look at it again,
/// and the partition of its newest record (`None`: unchanged).
pub(crate) struct Save<'a> {
    pub(crate) loaded: &'a Loaded,
    pub(crate) wake_at: Option<DateTime<Utc>>,
    pub(crate) partition: Option<i32>,
}

/// Writes back the status rows of `sites` (sorted by site id) and every
/// probe row of theirs.
pub(crate) async fn save(
    tx: &Transaction<'_>,
    st: &StatusStatements,
    sites: &[Save<'_>],
) -> Result<(), tokio_postgres::Error> {
    let s: Vec<&SiteStatus> = sites.iter().map(|x| &x.loaded.site.status).collect();
    let ids: Vec<i64> = s.iter().map(|x| x.site_id).collect();
    let states: Vec<&str> = s.iter().map(|x| x.state.as_str()).collect();
    let since: Vec<SystemTime> = s.iter().map(|x| sys(x.since)).collect();
    let lc: Vec<SystemTime> = s.iter().map(|x| sys(x.last_change)).collect();
    let ev: Vec<SystemTime> = s.iter().map(|x| sys(x.evaluated_at)).collect();
    let wake: Vec<Option<SystemTime>> = sites.iter().map(|x| x.wake_at.map(sys)).collect();
    let n = |f: fn(&SiteStatus) -> u32| -> Vec<i32> {
        s.iter()
            .map(|x| i32::try_from(f(x)).unwrap_or(i32::MAX))
            .collect()
    };
    let (up, dg) = (n(|x| x.probes_up), n(|x| x.probes_degraded));
    let (dn, uk) = (n(|x| x.probes_down), n(|x| x.probes_unknown));
    let seq: Vec<i64> = s.iter().map(|x| x.seq).collect();
    let pa: Vec<Option<i32>> = sites.iter().map(|x| x.partition).collect();
    tx.execute(
        &st.save_sites,
        &[
            &ids, &states, &since, &lc, &ev, &wake, &up, &dg, &dn, &uk, &seq, &pa,
        ],
    )
    .await?;
    save_probes(tx, st, sites).await
}

async fn save_probes(
    tx: &Transaction<'_>,
    st: &StatusStatements,
    sites: &[Save<'_>],
) -> Result<(), tokio_postgres::Error> {
    let mut rows: Vec<(i64, i32, &ProbeState)> = Vec::new();
    for x in sites {
        let l = x.loaded;
        for (name, p) in &l.site.probes {
            if let Some(&id) = l.probe_ids.get(name) {
                rows.push((l.site.status.site_id, id, p));
            }
        }
    }
    if rows.is_empty() {
        return Ok(());
    }
    rows.sort_by_key(|r| (r.0, r.1));
    let sites: Vec<i64> = rows.iter().map(|r| r.0).collect();
    let probes: Vec<i32> = rows.iter().map(|r| r.1).collect();
    let state: Vec<&str> = rows.iter().map(|r| r.2.state().as_str()).collect();
    let health: Vec<&str> = rows.iter().map(|r| r.2.health.as_str()).collect();
    let since: Vec<SystemTime> = rows.iter().map(|r| sys(r.2.since)).collect();
    let last: Vec<Option<SystemTime>> = rows.iter().map(|r| r.2.last_checked_at.map(sys)).collect();
    let n = |f: fn(&ProbeState) -> u32| -> Vec<i32> {
        rows.iter()
            .map(|r| i32::try_from(f(r.2)).unwrap_or(i32::MAX))
            .collect()
    };
    let (fails, oks, slows, fasts) = (n(|p| p.fails), n(|p| p.oks), n(|p| p.slows), n(|p| p.fasts));
    let interval: Vec<i32> = rows
        .iter()
        .map(|r| i32::try_from(r.2.interval.as_millis()).unwrap_or(i32::MAX))
        .collect();
    let errors: Vec<Option<&str>> = rows.iter().map(|r| r.2.last_error.as_deref()).collect();
    let recent: Vec<i64> = rows.iter().map(|r| r.2.recent as i64).collect();
    let recent_n: Vec<i16> = rows.iter().map(|r| r.2.recent_n.min(64) as i16).collect();
    let heard: Vec<Option<SystemTime>> = rows.iter().map(|r| r.2.heard_at.map(sys)).collect();
    let held: Vec<bool> = rows.iter().map(|r| r.2.down_before_window).collect();
    let flapping: Vec<bool> = rows.iter().map(|r| r.2.flapping).collect();
    let ahead: Vec<Option<SystemTime>> =
        rows.iter().map(|r| r.2.ahead_written_at.map(sys)).collect();
    tx.execute(
        &st.save_probes,
        &[
            &sites, &probes, &state, &health, &since, &last, &fails, &oks, &slows, &fasts,
            &interval, &errors, &recent, &recent_n, &heard, &held, &flapping, &ahead,
        ],
    )
    .await?;
    Ok(())
}

/// Inserts `transitions` (their ids are the sites' sequence numbers, written
/// in the same transaction: a replay makes the same rows, never a second).
pub(crate) async fn add_transitions(
    tx: &Transaction<'_>,
    st: &StatusStatements,
    transitions: &[Transition],
) -> Result<(), tokio_postgres::Error> {
    if transitions.is_empty() {
        return Ok(());
    }
    let t = transitions;
    let sites: Vec<i64> = t.iter().map(|x| x.site_id).collect();
    let seqs: Vec<i64> = t.iter().map(|x| x.seq).collect();
    let from: Vec<&str> = t.iter().map(|x| x.from.as_str()).collect();
    let to: Vec<&str> = t.iter().map(|x| x.to.as_str()).collect();
    let at: Vec<SystemTime> = t.iter().map(|x| sys(x.at)).collect();
    let reasons: Vec<&str> = t.iter().map(|x| x.reason.as_str()).collect();
    let probes: Vec<String> = t.iter().map(|x| x.probes_json().to_string()).collect();
    let parts: Vec<Option<i32>> = t.iter().map(|x| x.position.map(|p| p.partition)).collect();
    let offsets: Vec<Option<i64>> = t.iter().map(|x| x.position.map(|p| p.offset)).collect();
    tx.execute(
        &st.add_transitions,
        &[
            &sites, &seqs, &from, &to, &at, &reasons, &probes, &parts, &offsets,
        ],
    )
    .await?;
    Ok(())
}

/// The ad-hoc windows (rows of `<table>_maintenance`) not ended by `after`;
/// a row that cannot be used is logged and skipped.
pub(crate) async fn windows(
    tx: &impl GenericClient,
    st: &StatusStatements,
    after: SystemTime,
) -> Result<Vec<AdHocWindow>, tokio_postgres::Error> {
    let rows = tx.query(&st.windows, &[&after]).await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let made = AdHocWindow::new(
            r.get(0),
            r.get(1),
            r.get(2),
            utc(r.get(3)),
            utc(r.get(4)),
            r.get(5),
        );
        match made {
            Ok(w) => out.push(w),
            Err(e) => bad_window(&st.bad_windows, r.get(0), &e),
        }
    }
    Ok(out)
}

/// A window row found unusable: warned about and counted once per row id
/// (per sink process), not at every batch.
fn bad_window(seen: &Mutex<HashSet<i64>>, id: i64, e: &AdHocError) {
    if seen.lock().expect("bad windows lock").insert(id) {
        metrics::counter!(crate::metrics::STATUS_BAD_WINDOWS).increment(1);
        tracing::warn!("{e}; the window is ignored (said once per row: fix or delete the row)");
    }
}
