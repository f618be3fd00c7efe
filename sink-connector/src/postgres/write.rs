//! Writing one batch of records in one PostgreSQL transaction.
//!
//! Per batch, inside one transaction (`write_tx`):
//!
//! 1. lock the offsets-table rows of the batch's (topic, partition) pairs, in
//!    sorted order (`SELECT ... ORDER BY ... FOR UPDATE`; missing rows are
//!    created first, from the highest offset already stored, so the table can
//!    be rebuilt from history);
//! 2. drop records below `next_offset`: an earlier run, or another group member
//!    before a rebalance, already wrote them;
//! 3. upsert the newest record per url into the latest-state table, in one
//!    statement over arrays sorted by url (a fixed lock order, so two sinks
//!    cannot deadlock), under the ordering guard (an older `checked_at` never
//!    overwrites a newer one), and get the row id of every url — a url without
//!    a row afterwards (deleted concurrently, or skipped by a trigger) fails
//!    the batch, to be retried, rather than losing its history row;
//! 4. binary `COPY` the history rows (typed columns, the original JSON bytes as
//!    `jsonb`) and the rejects (a bounded prefix of their bytes); feed the
//!    checks to the site status model and write its rows and transitions
//!    ([`crate::postgres::status`], lock order there), then add the checks
//!    to the rollups, those the model found in a maintenance window apart;
//! 5. advance `next_offset`; COMMIT.
//!
//! Only after this returns does the caller store and commit Kafka offsets.
//! Repeats of a position within a batch, and finding the records PostgreSQL
//! refuses, are [`crate::postgres::refuse`]'s part: it calls `write_tx` with the
//! refused records and, to find them, in rolled-back probe mode.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio_postgres::{Statement, Transaction};

use crate::batch::{Msg, Outcome, Skipped};
use crate::decode::{Decoded, Good, Reason, Rejected};
use crate::postgres::error::{db_message, is_record_refusal};
use crate::postgres::history::{self, Check};
use crate::postgres::kept;
use crate::postgres::partitions::Layout;
use crate::postgres::sql::{Conn, RawJson, Statements};
use crate::postgres::status;

/// Why a batch was not written. Nothing was committed; retry it.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// PostgreSQL (or the connection to it) failed.
    #[error("{}", db_message(.0))]
    Db(#[from] tokio_postgres::Error),
    /// A url had no row in the latest-state table right after the upsert.
    #[error("url {url:?} has no row in the latest-state table right after the upsert (deleted concurrently, or skipped by a trigger)")]
    SiteMissing {
        /// The url.
        url: String,
    },
    /// PostgreSQL refused the batch, but no record fails on its own or in
    /// the batch's order (the refusal went away): retried.
    #[error("{0}; no record of the batch is refused on its own or in order, so nothing is rejected and the batch is retried")]
    NoCulprit(String),
}

impl WriteError {
    /// Whether the refusal may lie in a record (see [`is_record_refusal`]; a
    /// url left without its row also may: an operator's trigger skipping it).
    pub fn is_record_refusal(&self) -> bool {
        match self {
            WriteError::Db(e) => is_record_refusal(e),
            WriteError::SiteMissing { .. } => true,
            WriteError::NoCulprit(_) => false,
        }
    }
}

/// What a batch transaction does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Write everything and commit.
    Commit,
    /// Write only the good records of a subset that are not written yet, and
    /// roll back: used to find the record PostgreSQL refuses.
    Probe,
}

/// The time a record counts as checked at: its own `checked_at`, else its
/// Kafka timestamp, else the time the batch is written.
fn effective_time(m: &Msg, g: &Good, now: SystemTime) -> SystemTime {
    g.checked_at.or(m.timestamp).unwrap_or(now)
}

/// How far ahead of the sink's clock a record's time may be.
const MAX_AHEAD: Duration = Duration::from_secs(86_400);

/// The indices (of `only`, else of all `msgs`) of good records.
fn good_indices<'m>(
    msgs: &'m [Msg],
    only: Option<&'m [usize]>,
) -> impl Iterator<Item = (usize, &'m Good)> + 'm {
    let all: Box<dyn Iterator<Item = usize>> = match only {
        Some(set) => Box::new(set.iter().copied()),
        None => Box::new(0..msgs.len()),
    };
    all.filter_map(|i| match &msgs[i].decoded {
        Decoded::Good(g) => Some((i, g)),
        Decoded::Rejected(_) => None,
    })
}

/// The good records more than [`MAX_AHEAD`] ahead of `now`, as rejects.
fn in_future(msgs: &[Msg], only: Option<&[usize]>, now: SystemTime) -> Vec<(usize, Rejected)> {
    good_indices(msgs, only)
        .filter_map(|(i, g)| {
            let at = effective_time(&msgs[i], g, now);
            let ahead = at.duration_since(now).ok().filter(|d| *d > MAX_AHEAD)?;
            Some((
                i,
                Rejected {
                    reason: Reason::InFuture,
                    detail: format!(
                        "checked_at is {} ahead of the sink's clock (at most 1 day is stored); fix the clock of the probe that wrote it",
                        humantime::format_duration(Duration::from_secs(ahead.as_secs()))
                    ),
                },
            ))
        })
        .collect()
}

/// Step 0: makes the partitions the batch's records need (history, each
/// rollup level that keeps their time, and today's rejects).
async fn make_partitions(
    conn: &mut Conn,
    msgs: &[Msg],
    only: Option<&[usize]>,
    now: SystemTime,
) -> Result<(), WriteError> {
    let Conn {
        client,
        layout,
        partitions_known,
        ..
    } = conn;
    let mut needs = Layout::needs(&layout.rejected, [now]);
    for (i, g) in good_indices(msgs, only) {
        let at = effective_time(&msgs[i], g, now);
        if at.duration_since(now).is_ok_and(|d| d > MAX_AHEAD) {
            continue;
        }
        if layout.history.keeps(at, now) {
            needs.extend(Layout::needs(&layout.history, [at]));
        }
        for (_, table) in layout.rollup_tables().filter(|(_, p)| p.keeps(at, now)) {
            needs.extend(Layout::needs(table, [at]));
        }
    }
    needs.retain(|(table, start)| !partitions_known.contains(&(table.table.clone(), *start)));
    layout.make(client, &needs).await?;
    partitions_known.extend(
        needs
            .iter()
            .map(|(table, start)| (table.table.clone(), *start)),
    );
    Ok(())
}

/// The last offset of each (topic, partition) in `msgs`, sorted.
type Last<'a> = BTreeMap<(&'a str, i32), i64>;

fn last_offsets(msgs: &[Msg]) -> Last<'_> {
    let mut last = Last::new();
    for m in msgs {
        let e = last.entry((&*m.topic, m.partition)).or_insert(m.offset);
        *e = (*e).max(m.offset);
    }
    last
}

/// One batch transaction over `msgs` (or only the records `only` lists):
/// the steps of the module doc. `refused` holds the records PostgreSQL was
/// found to refuse, by index in `msgs`; they are written as rejects. A probe
/// writes only the good records and rolls back.
pub(crate) async fn write_tx(
    conn: &mut Conn,
    msgs: &[Msg],
    refused: &HashMap<usize, Rejected>,
    mode: Mode,
    only: Option<&[usize]>,
) -> Result<Outcome, WriteError> {
    let now = SystemTime::now();
    let started = Instant::now();
    // 0. Before the transaction: it must not take the parents' exclusive lock.
    make_partitions(conn, msgs, only, now).await?;
    let future = in_future(msgs, only, now);
    let refused = match future.is_empty() {
        true => Cow::Borrowed(refused),
        false => Cow::Owned(
            refused
                .iter()
                .map(|(i, r)| (*i, r.clone()))
                .chain(future)
                .collect(),
        ),
    };
    let refused = refused.as_ref();
    let st = &conn.statements;
    let layout = &conn.layout;
    let tx = conn.client.transaction().await?;
    let mut out = Outcome::default();

    // 1–2. In probes too, so the search never blames a record for being there.
    let last = last_offsets(msgs);
    let keep = skip_written(
        &tx,
        st,
        msgs,
        only,
        &last,
        (mode == Mode::Commit).then_some(&mut out),
    )
    .await?;
    let (goods, rejects) = sort_out(msgs, &keep, refused, mode);

    // 3–4.
    if !goods.is_empty() {
        let ids = upsert_latest(&tx, st, msgs, &goods, now, &mut out).await?;
        let checks: Vec<Check<'_>> = goods
            .iter()
            .map(|&(i, g)| {
                let at = effective_time(&msgs[i], g, now);
                Check::new(&msgs[i], ids[g.url.as_str()], at)
            })
            .collect();
        let written = history::write(&tx, st, layout, &checks, now).await?;
        (out.check_rows, out.past_retention) = (written.rows, written.past_retention);
        // 4b. The site status, in commits only (a probe rolls back anyway);
        // it says which checks fell in maintenance, for the rollups.
        let mut maintenance = HashSet::new();
        if mode == Mode::Commit {
            let b = status::Batch::new(msgs, &goods, &checks, &written.probes, now);
            let s = status::write_batch(&tx, &st.status, &b).await?;
            (out.transitions, out.status_late) = (s.transitions, s.late);
            maintenance = s.maintenance;
        }
        // 4c. The rollups.
        history::add_rollups(&tx, st, layout, &checks, &written, &maintenance, now).await?;
    }
    if mode == Mode::Probe {
        tx.rollback().await?;
        return Ok(out);
    }
    kept::copy_rejects(&tx, &st.copy_rejected, msgs, &rejects, &mut out).await?;

    // 5.
    let (ts, ps, ns): (Vec<&str>, Vec<i32>, Vec<i64>) = last
        .iter()
        .map(|(&(t, p), o)| (t, p, o.saturating_add(1)))
        .collect();
    tx.execute(&st.update_offsets, &[&ts, &ps, &ns]).await?;
    tx.commit().await?;
    tracing::debug!(
        records = msgs.len(),
        site_rows = out.site_rows,
        check_rows = out.check_rows,
        duplicates = out.duplicates,
        elapsed = ?started.elapsed(),
        "batch committed"
    );
    Ok(out)
}

/// Steps 1–2: locks the partitions' positions and returns the indices (of
/// `only`, else of all `msgs`) not written yet; counts the others in `out`.
async fn skip_written(
    tx: &Transaction<'_>,
    st: &Statements,
    msgs: &[Msg],
    only: Option<&[usize]>,
    last: &Last<'_>,
    out: Option<&mut Outcome>,
) -> Result<Vec<usize>, WriteError> {
    let mut keep: Vec<usize> = match only {
        Some(set) => set.to_vec(),
        None => (0..msgs.len()).collect(),
    };
    let keys: Vec<(&str, i32)> = last.keys().copied().collect();
    let next = lock_offsets(tx, &st.select_offsets, &st.init_offsets, &keys).await?;
    let mut skipped: BTreeMap<(&str, i32), u64> = BTreeMap::new();
    keep.retain(|&i| {
        let m = &msgs[i];
        let fresh = m.offset >= next.get(&(&*m.topic, m.partition)).copied().unwrap_or(0);
        if !fresh {
            *skipped.entry((&*m.topic, m.partition)).or_default() += 1;
        }
        fresh
    });
    if let Some(out) = out {
        out.duplicates = (msgs.len() - keep.len()) as u64;
        out.skipped = skipped
            .into_iter()
            .map(|((t, p), records)| Skipped {
                topic: msgs
                    .iter()
                    .find(|m| &*m.topic == t)
                    .map(|m| m.topic.clone())
                    .unwrap_or_else(|| Arc::from(t)),
                partition: p,
                next_offset: next.get(&(t, p)).copied().unwrap_or(0),
                records,
            })
            .collect();
    }
    Ok(keep)
}

/// The records to write as checks and as rejects (a probe writes no rejects).
#[allow(clippy::type_complexity)]
fn sort_out<'m>(
    msgs: &'m [Msg],
    keep: &[usize],
    refused: &'m HashMap<usize, Rejected>,
    mode: Mode,
) -> (Vec<(usize, &'m Good)>, Vec<(usize, &'m Rejected)>) {
    let mut goods = Vec::with_capacity(keep.len());
    let mut rejects = Vec::new();
    for &i in keep {
        if let Some(r) = refused.get(&i) {
            rejects.push((i, r));
            continue;
        }
        match &msgs[i].decoded {
            Decoded::Good(g) => goods.push((i, g)),
            Decoded::Rejected(r) if mode == Mode::Commit => rejects.push((i, r)),
            Decoded::Rejected(_) => {}
        }
    }
    (goods, rejects)
}

/// Step 3: the newest record per url, upserted in one statement, sorted by url
/// so concurrent sinks lock rows in the same order; returns every url's row id.
async fn upsert_latest(
    tx: &Transaction<'_>,
    st: &Statements,
    msgs: &[Msg],
    goods: &[(usize, &Good)],
    now: SystemTime,
    out: &mut Outcome,
) -> Result<HashMap<String, i64>, WriteError> {
    let mut newest: BTreeMap<&str, (SystemTime, usize)> = BTreeMap::new();
    for &(i, g) in goods {
        let t = effective_time(&msgs[i], g, now);
        match newest.get_mut(g.url.as_str()) {
            Some(cur) if t < cur.0 => {}
            Some(cur) => *cur = (t, i),
            None => {
                newest.insert(g.url.as_str(), (t, i));
            }
        }
    }
    let mut urls = Vec::with_capacity(newest.len());
    let mut datas = Vec::with_capacity(newest.len());
    let mut times = Vec::with_capacity(newest.len());
    for (url, (t, i)) in &newest {
        urls.push(*url);
        datas.push(RawJson(msgs[*i].payload.as_deref().unwrap_or(b"null")));
        times.push(*t);
    }
    let rows = tx.query(&st.upsert_site, &[&urls, &datas, &times]).await?;
    let mut ids: HashMap<String, i64> = HashMap::with_capacity(rows.len());
    for r in rows {
        if r.get::<_, bool>(2) {
            out.site_rows += 1;
        }
        ids.insert(r.get(1), r.get(0));
    }
    if ids.len() < urls.len() {
        // A row the guard skipped that a concurrent transaction committed
        // after this statement's snapshot: read it with a fresh one.
        let missing: Vec<&str> = urls
            .iter()
            .copied()
            .filter(|u| !ids.contains_key(*u))
            .collect();
        for r in tx.query(&st.site_ids, &[&missing]).await? {
            ids.insert(r.get(1), r.get(0));
        }
    }
    // Every history row needs its site row; a url still without one
    // fails the batch (retried) instead of silently losing the row.
    if let Some(url) = urls.iter().find(|u| !ids.contains_key(**u)) {
        return Err(WriteError::SiteMissing {
            url: (*url).to_owned(),
        });
    }
    Ok(ids)
}

/// Locks (creating when missing) the offsets rows of `keys` (sorted), in
/// order; returns each one's next offset to write.
async fn lock_offsets<'k>(
    tx: &Transaction<'_>,
    select: &Statement,
    init: &Statement,
    keys: &[(&'k str, i32)],
) -> Result<HashMap<(&'k str, i32), i64>, tokio_postgres::Error> {
    let read = |rows: Vec<tokio_postgres::Row>| -> HashMap<(&'k str, i32), i64> {
        let mut out = HashMap::with_capacity(rows.len());
        for r in rows {
            let (t, p): (&str, i32) = (r.get(0), r.get(1));
            if let Some(k) = keys.iter().find(|k| k.0 == t && k.1 == p) {
                out.insert(*k, r.get(2));
            }
        }
        out
    };
    let topics: Vec<&str> = keys.iter().map(|k| k.0).collect();
    let partitions: Vec<i32> = keys.iter().map(|k| k.1).collect();
    let next = read(tx.query(select, &[&topics, &partitions]).await?);
    if next.len() == keys.len() {
        return Ok(next);
    }
    let (mt, mp): (Vec<&str>, Vec<i32>) = keys
        .iter()
        .filter(|k| !next.contains_key(*k))
        .map(|k| (k.0, k.1))
        .unzip();
    tx.execute(init, &[&mt, &mp]).await?;
    Ok(read(tx.query(select, &[&topics, &partitions]).await?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::tests::msg;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn effective_time_prefers_record_then_kafka() {
        let m = msg(0, 0);
        let now = UNIX_EPOCH + Duration::from_secs(100);
        let mut g = Good {
            url: "u".into(),
            checked_at: Some(UNIX_EPOCH + Duration::from_secs(1)),
            ok: None,
            status_code: None,
            duration: None,
        };
        assert_eq!(
            effective_time(&m, &g, now),
            UNIX_EPOCH + Duration::from_secs(1)
        );
        g.checked_at = None;
        assert_eq!(
            effective_time(&m, &g, now),
            UNIX_EPOCH + Duration::from_secs(5)
        );
        let mut m2 = m.clone();
        m2.timestamp = None;
        assert_eq!(effective_time(&m2, &g, now), now);
    }
}
