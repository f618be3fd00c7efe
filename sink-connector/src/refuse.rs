//! Writing a batch whose records PostgreSQL may refuse: the refused ones go
//! to the rejects table with reason `database` and PostgreSQL's message, the
//! good ones around them are stored.
//!
//! A batch transaction (`write_tx`) that fails with a refusal that can lie
//! in a record ([`crate::postgres_error::is_record_refusal`]: data exceptions, constraint
//! violations, program limits such as jsonb's stack depth, errors raised by
//! an operator's trigger) is followed by a search: the records not yet
//! known good or refused are bisected with rolled-back probe transactions,
//! and every record that fails on its own is refused. What each finished
//! probe learns is kept in a [`Search`] that outlives the attempt, so a
//! search cut off by `write_timeout` (or a dropped connection) resumes where
//! it stopped instead of starting again: the time to write a batch grows
//! with the number of refused records, never without bound.
//!
//! When no record fails on its own (records that conflict only with each
//! other, or a refusal that came and went), nothing is rejected: the error is
//! returned, the batch retried, and what was cleared is forgotten so the next
//! search probes everything again.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::batch::{Msg, Outcome};
use crate::decode::{Decoded, Reason, Rejected};
use crate::sql::Conn;
use crate::write::{write_tx, Mode, WriteError};

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
    /// Records that failed on their own, with PostgreSQL's message.
    refused: HashMap<Position, String>,
    /// Records that were written without error in a probe.
    cleared: HashSet<Position>,
}

impl Search {
    /// Forgets everything (the batch was committed or given away).
    pub fn clear(&mut self) {
        self.refused.clear();
        self.cleared.clear();
    }

    /// Records refused so far.
    pub fn refused(&self) -> usize {
        self.refused.len()
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
    loop {
        let refused = search.refused_in(msgs);
        let err = match write_tx(conn, msgs, &refused, Mode::Commit, None).await {
            Ok(o) => return Ok(o),
            Err(e) if e.is_record_refusal() => e,
            Err(e) => return Err(e),
        };
        let candidates: Vec<usize> = msgs
            .iter()
            .enumerate()
            .filter(|(_, m)| matches!(m.decoded, Decoded::Good(_)))
            .filter(|(_, m)| {
                let p = position(m);
                !search.refused.contains_key(&p) && !search.cleared.contains(&p)
            })
            .map(|(i, _)| i)
            .collect();
        tracing::warn!(error = %err, candidates = candidates.len(), refused = search.refused.len(), "PostgreSQL refused a record of the batch; looking for it");
        let before = search.refused.len();
        find_refused(conn, msgs, candidates, search).await?;
        if search.refused.len() == before {
            // No record fails on its own: rejecting good records would lose
            // them, so retry the batch, and probe everything again then.
            tracing::warn!(error = %err, "no single record of the batch is refused on its own; the batch will be retried");
            search.cleared.clear();
            return Err(err);
        }
    }
}

/// Bisects `candidates` with rolled-back probes (which skip what is already
/// written, as a commit would), recording in `search` each record that fails
/// on its own and each set that passes, as soon as its probe ends.
async fn find_refused(
    conn: &mut Conn,
    msgs: &[Msg],
    candidates: Vec<usize>,
    search: &mut Search,
) -> Result<(), WriteError> {
    let mut stack = vec![candidates];
    let none = HashMap::new();
    while let Some(set) = stack.pop() {
        if set.is_empty() {
            continue;
        }
        match write_tx(conn, msgs, &none, Mode::Probe, Some(&set)).await {
            Ok(_) => search
                .cleared
                .extend(set.iter().map(|&i| position(&msgs[i]))),
            Err(e) if e.is_record_refusal() => {
                if let [i] = set[..] {
                    let m = &msgs[i];
                    let detail = e.to_string();
                    tracing::warn!(topic = %m.topic, partition = m.partition, offset = m.offset, %detail, "record refused by PostgreSQL; rejecting it");
                    search.refused.insert(position(m), detail);
                } else {
                    let (a, b) = set.split_at(set.len() / 2);
                    stack.push(b.to_vec());
                    stack.push(a.to_vec());
                }
            }
            Err(e) => return Err(e),
        }
    }
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
