//! Writing a batch whose records PostgreSQL may refuse: the refused ones go
//! to the rejects table with reason `database` and PostgreSQL's message, the
//! good ones around them are stored.
//!
//! A batch transaction (`write_tx`) that fails with an error that can lie in
//! a record ([`WriteError::is_record_refusal`]) starts a search:
//!
//! 1. a canary — one ordinary record of the sink's own, in a rolled-back
//!    probe: if PostgreSQL refuses it too, the schema is at fault (a column
//!    added `NOT NULL`, a revoked privilege, an exhausted sequence), not a
//!    record; nothing is rejected and the batch is retried;
//! 2. a bisection of the records not yet known good or refused, in
//!    rolled-back probe transactions: every record that fails on its own is
//!    refused;
//! 3. when none fails on its own (records that conflict only with each
//!    other), the shortest prefix of the batch that fails: its last record is
//!    refused — what writing the records one by one would do. When even the
//!    whole batch passes now, the refusal went away: the batch is retried.
//!
//! The search lives in a [`Search`] that outlives the attempt: the sets still
//! to probe, what each finished probe learnt, and the set whose probe was cut
//! off (it is halved before it is probed again). A search cut off by
//! `write_timeout` therefore resumes where it stopped and never repeats the
//! failing commit; as long as one record can be probed within
//! `write_timeout`, every attempt makes progress, and the time to write a
//! batch grows with the number of refused records, never without bound.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use crate::batch::{Msg, Outcome};
use crate::decode::{Decoded, Good, Reason, Rejected};
use crate::postgres::kept::truncate_str;
use crate::postgres::sql::Conn;
use crate::postgres::write::{write_tx, Mode, WriteError};

/// A record's Kafka position: topic, partition, offset.
type Position = (Arc<str>, i32, i64);

fn position(m: &Msg) -> Position {
    (m.topic.clone(), m.partition, m.offset)
}

/// What the search for refused records has learnt about the batch in hand,
/// kept across attempts to write it. One per writer; cleared once the batch
/// is committed (or handed to another writer).
#[derive(Debug, Default)]
pub struct Search {
    /// Records that failed on their own or in order, with PostgreSQL's message.
    refused: HashMap<Position, String>,
    /// Records that were written without error in a probe.
    cleared: HashSet<Position>,
    /// Sets still to probe, the next on top; empty when no search is under way.
    pending: Vec<Vec<Position>>,
    /// The set whose probe an attempt's end cut off: halved before it is
    /// probed again.
    probing: Option<Vec<Position>>,
    /// Why the search began.
    cause: Option<String>,
    /// Whether the canary passed since the search began.
    canary_passed: bool,
}

impl Search {
    /// Forgets everything (the batch was committed or given away).
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// Records refused so far.
    pub fn refused(&self) -> usize {
        self.refused.len()
    }

    fn under_way(&self) -> bool {
        !self.pending.is_empty() || self.probing.is_some()
    }

    fn refused_in(&self, msgs: &[Msg]) -> HashMap<usize, Rejected> {
        if self.refused.is_empty() {
            return HashMap::new();
        }
        msgs.iter()
            .enumerate()
            .filter_map(|(i, m)| {
                let detail = self.refused.get(&position(m))?;
                Some((
                    i,
                    Rejected {
                        reason: Reason::Database,
                        detail: detail.clone(),
                    },
                ))
            })
            .collect()
    }

    /// The good records neither refused nor cleared, in batch order.
    fn unknown(&self, msgs: &[Msg]) -> Vec<Position> {
        msgs.iter()
            .filter(|m| matches!(m.decoded, Decoded::Good(_)))
            .map(position)
            .filter(|p| !self.refused.contains_key(p) && !self.cleared.contains(p))
            .collect()
    }

    fn refuse(&mut self, p: Position, detail: String) {
        tracing::debug!(topic = %p.0, partition = p.1, offset = p.2, %detail, "record refused by PostgreSQL; rejecting it");
        self.refused.insert(p, detail);
    }
}

/// `msgs` without repeats of a Kafka position (the first is kept), or `None`
/// when there are none.
fn dedupe(msgs: &[Msg]) -> Option<Vec<Msg>> {
    let mut seen = HashSet::with_capacity(msgs.len());
    if msgs
        .iter()
        .all(|m| seen.insert((&*m.topic, m.partition, m.offset)))
    {
        return None;
    }
    seen.clear();
    Some(
        msgs.iter()
            .filter(|m| seen.insert((&*m.topic, m.partition, m.offset)))
            .cloned()
            .collect(),
    )
}

/// Writes `msgs` in one transaction. Records PostgreSQL refuses on their own
/// are found (continuing the `search` an earlier attempt left) and rejected;
/// any other error — including a refusal no single record explains — is
/// returned for the caller to retry (nothing was committed then).
pub async fn write_batch(
    conn: &mut Conn,
    msgs: &[Msg],
    search: &mut Search,
) -> Result<Outcome, WriteError> {
    let deduped = dedupe(msgs);
    let repeated = deduped.as_ref().map_or(0, |d| msgs.len() - d.len()) as u64;
    if repeated > 0 {
        tracing::info!(
            records = repeated,
            "dropped repeats of a Kafka position within one batch (a rebalance re-fetched them)"
        );
    }
    let msgs = deduped.as_deref().unwrap_or(msgs);
    let mut out = write_refusing(conn, msgs, search).await?;
    search.clear();
    out.duplicates += repeated;
    Ok(out)
}

async fn write_refusing(
    conn: &mut Conn,
    msgs: &[Msg],
    search: &mut Search,
) -> Result<Outcome, WriteError> {
    let index: HashMap<Position, usize> = msgs
        .iter()
        .enumerate()
        .map(|(i, m)| (position(m), i))
        .collect();
    loop {
        if !search.under_way() {
            let refused = search.refused_in(msgs);
            let err = match write_tx(conn, msgs, &refused, Mode::Commit, None).await {
                Ok(o) => return Ok(o),
                Err(e) if e.is_record_refusal() => e,
                Err(e) => return Err(e),
            };
            let unknown = search.unknown(msgs);
            tracing::warn!(error = %err, records = unknown.len(), refused = search.refused.len(), "PostgreSQL refused a record of the batch; looking for it");
            search.cause = Some(err.to_string());
            search.canary_passed = false;
            search.pending.push(unknown);
        }
        if !search.canary_passed {
            canary(conn, msgs).await?;
            search.canary_passed = true;
        }
        if let Some(cut) = search.probing.take() {
            push_halves(&mut search.pending, cut);
        }
        let before = search.refused.len();
        bisect(conn, msgs, &index, search).await?;
        if search.refused.len() == before {
            in_order(conn, msgs, search).await?;
        }
        let found = search.refused.len() - before;
        if let Some(detail) = search.refused.values().next() {
            tracing::warn!(records = found, refused = search.refused.len(), example = %truncate_str(detail, 512), "records refused by PostgreSQL; rejecting them (reason `database`)");
        }
    }
}

/// Writes one ordinary record of the sink's own in a rolled-back probe: an
/// error there lies in the schema or the session, not in the batch's records.
async fn canary(conn: &mut Conn, msgs: &[Msg]) -> Result<(), WriteError> {
    let Some(first) = msgs.first() else {
        return Ok(());
    };
    let payload =
        br#"{"url":"website-monitor:canary","ok":true,"status_code":200,"duration":0.001}"#;
    let canary = Msg {
        topic: first.topic.clone(),
        partition: first.partition,
        offset: i64::MAX,
        key: None,
        timestamp: Some(SystemTime::now()),
        received_at: SystemTime::now(),
        payload: Some(payload.to_vec()),
        decoded: Decoded::Good(Good {
            url: "website-monitor:canary".to_owned(),
            checked_at: Some(SystemTime::now()),
            ok: Some(true),
            status_code: Some(200),
            duration: Some(0.001),
        }),
    };
    match write_tx(conn, &[canary], &HashMap::new(), Mode::Probe, None).await {
        Ok(_) => Ok(()),
        Err(e) => {
            tracing::warn!(error = %e, "PostgreSQL refuses an ordinary record too: the schema or the session is at fault, not a record; nothing is rejected, the batch will be retried");
            Err(e)
        }
    }
}

fn push_halves(pending: &mut Vec<Vec<Position>>, mut set: Vec<Position>) {
    if set.len() > 1 {
        let b = set.split_off(set.len() / 2);
        pending.push(b);
    }
    pending.push(set);
}

/// Probes the sets of `search.pending` (halving each that fails), recording
/// each record that fails on its own and each set that passes as soon as its
/// probe ends.
async fn bisect(
    conn: &mut Conn,
    msgs: &[Msg],
    index: &HashMap<Position, usize>,
    search: &mut Search,
) -> Result<(), WriteError> {
    let none = HashMap::new();
    while let Some(set) = search.pending.pop() {
        let only: Vec<usize> = set.iter().filter_map(|p| index.get(p).copied()).collect();
        if only.is_empty() {
            continue;
        }
        search.probing = Some(set);
        let result = write_tx(conn, msgs, &none, Mode::Probe, Some(&only)).await;
        let set = search.probing.take().unwrap_or_default();
        match result {
            Ok(_) => search.cleared.extend(set),
            Err(e) if e.is_record_refusal() => match <[Position; 1]>::try_from(set) {
                Ok([p]) => search.refuse(p, e.to_string()),
                Err(set) => push_halves(&mut search.pending, set),
            },
            Err(e) => {
                search.pending.push(set);
                return Err(e);
            }
        }
    }
    Ok(())
}

/// No record fails on its own: finds the shortest prefix of the unrefused
/// good records that fails, and refuses its last record. When the whole lot
/// passes now, the refusal went away: [`WriteError::NoCulprit`].
async fn in_order(conn: &mut Conn, msgs: &[Msg], search: &mut Search) -> Result<(), WriteError> {
    let positions: HashSet<Position> = msgs
        .iter()
        .filter(|m| matches!(m.decoded, Decoded::Good(_)))
        .map(position)
        .filter(|p| !search.refused.contains_key(p))
        .collect();
    let order: Vec<usize> = (0..msgs.len())
        .filter(|&i| positions.contains(&position(&msgs[i])))
        .collect();
    let none = HashMap::new();
    // The shortest failing prefix: `lo` passes (0 always does), `hi` fails.
    let (mut lo, mut hi) = (0, order.len());
    let mut detail = match write_tx(conn, msgs, &none, Mode::Probe, Some(&order)).await {
        Ok(_) => {
            search.cleared.clear();
            let cause = search.cause.take().unwrap_or_default();
            return Err(WriteError::NoCulprit(cause));
        }
        Err(e) if e.is_record_refusal() => e.to_string(),
        Err(e) => return Err(e),
    };
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        match write_tx(conn, msgs, &none, Mode::Probe, Some(&order[..mid])).await {
            Ok(_) => lo = mid,
            Err(e) if e.is_record_refusal() => {
                hi = mid;
                detail = e.to_string();
            }
            Err(e) => return Err(e),
        }
    }
    let last = position(&msgs[order[hi - 1]]);
    search.refuse(
        last,
        format!("{detail} (refused together with the records before it in the batch)"),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::tests::msg;

    #[test]
    fn what_a_search_learnt_is_found_again_by_position() {
        let mut search = Search::default();
        search
            .refused
            .insert(position(&msg(1, 7)), "PostgreSQL 22P02: bad".into());
        let batch = [msg(0, 7), msg(1, 6), msg(1, 7)];
        let refused = search.refused_in(&batch);
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[&2].reason, Reason::Database);
        assert_eq!(refused[&2].detail, "PostgreSQL 22P02: bad");
        search.clear();
        assert!(search.refused_in(&batch).is_empty());
    }

    #[test]
    fn repeats_of_a_position_are_dropped_keeping_the_first() {
        assert!(dedupe(&[msg(0, 1), msg(1, 1), msg(0, 2)]).is_none());
        let mut first = msg(0, 1);
        first.key = Some(b"first".to_vec());
        let mut other_topic = msg(0, 1);
        other_topic.topic = Arc::from("u");
        let d = dedupe(&[first, msg(0, 2), msg(0, 1), other_topic, msg(0, 2)]).unwrap();
        let got: Vec<(&str, i32, i64)> = d
            .iter()
            .map(|m| (&*m.topic, m.partition, m.offset))
            .collect();
        assert_eq!(got, [("t", 0, 1), ("t", 0, 2), ("u", 0, 1)]);
        assert_eq!(d[0].key.as_deref(), Some(&b"first"[..]));
    }
}
