//! Writing one batch of records in one PostgreSQL transaction.
//!
//! Per batch, inside one transaction:
//!
//! 0. (before the transaction) drop repeats of one Kafka position within the
//!    batch, keeping the first: a rebalance inside `recv()` can hand the same
//!    record over twice;
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
//!    `jsonb`) and the rejects;
//! 5. advance `next_offset`; COMMIT.
//!
//! Only after this returns does the caller store and commit Kafka offsets.
//! Finding the records PostgreSQL refuses, and writing them as rejects, is
//! [`crate::refuse`]'s part: it calls [`write_tx`] with the refused records
//! and, to find them, in rolled-back probe mode.

use std::collections::{BTreeMap, HashMap};
use std::error::Error as StdError;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::{BufMut, BytesMut};
use futures::pin_mut;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use tokio_postgres::{Client, Statement, Transaction};

use crate::db::is_record_refusal;
use crate::decode::{Decoded, Good, Rejected};
use crate::migrate::Tables;

/// One consumed Kafka record and what decoding made of it.
#[derive(Debug, Clone)]
pub struct Msg {
    /// Topic (the record's own, from Kafka).
    pub topic: Arc<str>,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Kafka key.
    pub key: Option<Vec<u8>>,
    /// Kafka timestamp.
    pub timestamp: Option<SystemTime>,
    /// Raw value.
    pub payload: Option<Vec<u8>>,
    /// Decoded value.
    pub decoded: Decoded,
}

impl Msg {
    /// Bytes held (value and key), for `batch_max_bytes`.
    pub fn size(&self) -> usize {
        self.payload.as_ref().map_or(0, Vec::len) + self.key.as_ref().map_or(0, Vec::len)
    }
}

/// What a committed batch wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Latest-state rows inserted or updated.
    pub site_rows: u64,
    /// History rows written.
    pub check_rows: u64,
    /// Rejects written, by reason.
    pub rejected: HashMap<&'static str, u64>,
    /// Records skipped as already written, or repeated within the batch.
    pub duplicates: u64,
    /// The partitions where records were skipped as already written, with
    /// the stored `next_offset` (a value above the partition's end means the
    /// topic was re-created or its offsets reset).
    pub skipped: Vec<Skipped>,
}

impl Outcome {
    /// Adds what another part of the same batch wrote (the parts hold
    /// disjoint partitions, so nothing is counted twice).
    pub fn merge(&mut self, other: Outcome) {
        self.site_rows += other.site_rows;
        self.check_rows += other.check_rows;
        for (reason, n) in other.rejected {
            *self.rejected.entry(reason).or_default() += n;
        }
        self.duplicates += other.duplicates;
        self.skipped.extend(other.skipped);
    }
}

/// Records of one partition skipped because they were below `next_offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Topic.
    pub topic: Arc<str>,
    /// Partition.
    pub partition: i32,
    /// The `next_offset` stored in the offsets table.
    pub next_offset: i64,
    /// How many records of the batch were skipped.
    pub records: u64,
}

/// Why a batch was not written. Nothing was committed; retry it.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// PostgreSQL (or the connection to it) failed.
    #[error("{}", db_message(.0))]
    Db(#[from] tokio_postgres::Error),
    /// A url had no row in the latest-state table right after the upsert.
    #[error("url {url:?} has no row in the latest-state table right after the upsert (deleted concurrently, or skipped by a trigger); retrying the batch")]
    SiteMissing {
        /// The url.
        url: String,
    },
}

impl WriteError {
    /// Whether PostgreSQL's refusal may lie in a record (see [`is_record_refusal`]).
    pub fn is_record_refusal(&self) -> bool {
        matches!(self, WriteError::Db(e) if is_record_refusal(e))
    }
}

/// A `jsonb`/`json` parameter from JSON text already validated in Rust:
/// sent as-is, never re-serialised.
#[derive(Debug)]
struct RawJson<'a>(&'a [u8]);

impl ToSql for RawJson<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        if *ty == Type::JSONB {
            out.put_u8(1);
        }
        out.put_slice(self.0);
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        matches!(*ty, Type::JSON | Type::JSONB)
    }

    to_sql_checked!();
}

/// The SQL of the batch transaction, with quoted table names filled in.
#[derive(Debug, Clone)]
pub struct Sql {
    select_offsets: String,
    init_offsets: String,
    upsert_site: String,
    site_ids: String,
    copy_check: String,
    copy_rejected: String,
    update_offsets: String,
}

impl Sql {
    /// Builds every statement for `tables`.
    pub fn new(t: &Tables) -> Self {
        Self {
            select_offsets: format!(
                "SELECT o.topic, o.\"partition\", o.next_offset
                 FROM {o} o JOIN unnest($1::text[], $2::int4[]) AS k(t, p)
                      ON o.topic = k.t AND o.\"partition\" = k.p
                 ORDER BY o.topic, o.\"partition\"
                 FOR UPDATE OF o",
                o = t.offsets
            ),
            init_offsets: format!(
                "INSERT INTO {o} (topic, \"partition\", next_offset)
                 SELECT k.t, k.p, GREATEST(
                     COALESCE((SELECT max(c.\"offset\") + 1 FROM {c} c WHERE c.topic = k.t AND c.\"partition\" = k.p), 0),
                     COALESCE((SELECT max(r.\"offset\") + 1 FROM {r} r WHERE r.topic = k.t AND r.\"partition\" = k.p), 0))
                 FROM unnest($1::text[], $2::int4[]) AS k(t, p)
                 ORDER BY k.t, k.p
                 ON CONFLICT DO NOTHING",
                o = t.offsets,
                c = t.check,
                r = t.rejected
            ),
            upsert_site: format!(
                "WITH up AS (
                     INSERT INTO {s} AS s (url, data, checked_at, updated_at)
                     SELECT u, d, c, now() FROM unnest($1::text[], $2::jsonb[], $3::timestamptz[]) AS t(u, d, c)
                     ON CONFLICT (url) DO UPDATE
                         SET data = excluded.data, checked_at = excluded.checked_at, updated_at = excluded.updated_at
                         WHERE s.checked_at IS NULL OR excluded.checked_at >= s.checked_at
                     RETURNING s.id, s.url)
                 SELECT id::int8, url, true FROM up
                 UNION ALL
                 SELECT id::int8, url, false FROM {s} WHERE url = ANY($1) AND url NOT IN (SELECT url FROM up)",
                s = t.site
            ),
            site_ids: format!("SELECT id::int8, url FROM {s} WHERE url = ANY($1)", s = t.site),
            copy_check: format!(
                "COPY {c} (site_id, checked_at, ok, status_code, duration, data, topic, \"partition\", \"offset\") FROM STDIN (FORMAT binary)",
                c = t.check
            ),
            copy_rejected: format!(
                "COPY {r} (topic, \"partition\", \"offset\", key, raw, raw_length, raw_sha256, reason, detail, kafka_timestamp) FROM STDIN (FORMAT binary)",
                r = t.rejected
            ),
            update_offsets: format!(
                "UPDATE {o} AS o SET next_offset = GREATEST(o.next_offset, v.n), updated_at = now()
                 FROM unnest($1::text[], $2::int4[], $3::int8[]) AS v(t, p, n)
                 WHERE o.topic = v.t AND o.\"partition\" = v.p",
                o = t.offsets
            ),
        }
    }
}

/// A connection with the batch statements prepared on it.
pub struct Conn {
    /// The client.
    pub client: Client,
    select_offsets: Statement,
    init_offsets: Statement,
    upsert_site: Statement,
    site_ids: Statement,
    copy_check: Statement,
    copy_rejected: Statement,
    update_offsets: Statement,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").finish_non_exhaustive()
    }
}

impl Conn {
    /// Prepares every statement of `sql` on `client`.
    pub async fn prepare(client: Client, sql: &Sql) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            select_offsets: client.prepare(&sql.select_offsets).await?,
            init_offsets: client.prepare(&sql.init_offsets).await?,
            upsert_site: client.prepare(&sql.upsert_site).await?,
            site_ids: client.prepare(&sql.site_ids).await?,
            copy_check: client.prepare(&sql.copy_check).await?,
            copy_rejected: client.prepare(&sql.copy_rejected).await?,
            update_offsets: client.prepare(&sql.update_offsets).await?,
            client,
        })
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

/// Most bytes of a rejected record's value (and key) kept in the rejects
/// table: one huge record cannot fill the disk. `raw_length` and
/// `raw_sha256` still describe the whole value.
pub const MAX_KEPT_BYTES: usize = 1 << 20;

/// Most bytes of a reject's `detail` (PostgreSQL's message can quote the value).
pub const MAX_DETAIL_BYTES: usize = 4096;

/// What the rejects table keeps of a record's value.
struct Kept<'a> {
    raw: Option<&'a [u8]>,
    length: Option<i64>,
    sha256: Option<[u8; 32]>,
}

impl<'a> Kept<'a> {
    fn of(payload: Option<&'a [u8]>) -> Self {
        use sha2::Digest;
        Self {
            raw: payload.map(|p| prefix(p, MAX_KEPT_BYTES)),
            length: payload.map(|p| i64::try_from(p.len()).unwrap_or(i64::MAX)),
            sha256: payload.map(|p| sha2::Sha256::digest(p).into()),
        }
    }
}

fn prefix(bytes: &[u8], max: usize) -> &[u8] {
    &bytes[..bytes.len().min(max)]
}

/// `s` cut to at most `max` bytes at a character boundary.
fn truncate_str(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// PostgreSQL's message, code and detail, for the rejects table.
pub fn db_message(e: &tokio_postgres::Error) -> String {
    let text = match e.as_db_error() {
        Some(d) => {
            let mut s = format!("PostgreSQL {}: {}", d.code().code(), d.message());
            if let Some(detail) = d.detail() {
                s.push_str(" (");
                s.push_str(detail);
                s.push(')');
            }
            s
        }
        None => {
            let mut s = e.to_string();
            let mut source = StdError::source(e);
            while let Some(inner) = source {
                s.push_str(": ");
                s.push_str(&inner.to_string());
                source = inner.source();
            }
            s
        }
    };
    text.replace('\0', "")
}

/// The time a record counts as checked at: its own `checked_at`, else its
/// Kafka timestamp, else the time the batch is written.
fn effective_time(m: &Msg, g: &Good, now: SystemTime) -> SystemTime {
    g.checked_at.or(m.timestamp).unwrap_or(now)
}

/// One batch transaction over `msgs` (or only the records `only` lists):
/// the steps of the module doc. `refused` holds the records PostgreSQL was
/// found to refuse, by index in `msgs`; they are written as rejects.
pub(crate) async fn write_tx(
    conn: &mut Conn,
    msgs: &[Msg],
    refused: &HashMap<usize, Rejected>,
    mode: Mode,
    only: Option<&[usize]>,
) -> Result<Outcome, WriteError> {
    let now = SystemTime::now();
    let started = Instant::now();
    let Conn {
        client,
        select_offsets,
        init_offsets,
        upsert_site,
        site_ids,
        copy_check,
        copy_rejected,
        update_offsets,
    } = conn;
    let tx = client.transaction().await?;
    let mut out = Outcome::default();

    // 1–2. Lock the partitions' positions and drop what is already written
    // (in probes too, so the bisection never blames a record for being there).
    let mut keep: Vec<usize> = match only {
        Some(set) => set.to_vec(),
        None => (0..msgs.len()).collect(),
    };
    let mut last: BTreeMap<(&str, i32), i64> = BTreeMap::new();
    for m in msgs {
        let e = last.entry((&*m.topic, m.partition)).or_insert(m.offset);
        *e = (*e).max(m.offset);
    }
    let keys: Vec<(&str, i32)> = last.keys().copied().collect();
    let next = lock_offsets(&tx, select_offsets, init_offsets, &keys).await?;
    let mut skipped: BTreeMap<(&str, i32), u64> = BTreeMap::new();
    keep.retain(|&i| {
        let m = &msgs[i];
        let fresh = m.offset >= next.get(&(&*m.topic, m.partition)).copied().unwrap_or(0);
        if !fresh {
            *skipped.entry((&*m.topic, m.partition)).or_default() += 1;
        }
        fresh
    });
    if mode == Mode::Commit {
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

    // Split into good rows and rejects.
    let mut goods: Vec<(usize, &Good)> = Vec::with_capacity(keep.len());
    let mut rejects: Vec<(usize, &Rejected)> = Vec::new();
    for &i in &keep {
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

    // 3. Newest record per url, upserted in one statement, sorted by url so
    // concurrent sinks lock rows in the same order.
    if !goods.is_empty() {
        let mut newest: BTreeMap<&str, (SystemTime, usize)> = BTreeMap::new();
        for &(i, g) in &goods {
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
        let rows = tx.query(&*upsert_site, &[&urls, &datas, &times]).await?;
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
            for r in tx.query(&*site_ids, &[&missing]).await? {
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

        // 4. History rows, binary COPY with typed columns.
        let sink = tx.copy_in(&*copy_check).await?;
        let writer = BinaryCopyInWriter::new(
            sink,
            &[
                Type::INT8,
                Type::TIMESTAMPTZ,
                Type::BOOL,
                Type::INT4,
                Type::FLOAT8,
                Type::JSONB,
                Type::TEXT,
                Type::INT4,
                Type::INT8,
            ],
        );
        pin_mut!(writer);
        for &(i, g) in &goods {
            let m = &msgs[i];
            let site_id = ids[g.url.as_str()];
            let t = effective_time(m, g, now);
            let data = RawJson(m.payload.as_deref().unwrap_or(b"null"));
            let topic: &str = &m.topic;
            writer
                .as_mut()
                .write(&[
                    &site_id,
                    &t,
                    &g.ok,
                    &g.status_code,
                    &g.duration,
                    &data,
                    &topic,
                    &m.partition,
                    &m.offset,
                ])
                .await?;
        }
        out.check_rows = writer.finish().await?;
    }

    if mode == Mode::Probe {
        tx.rollback().await?;
        return Ok(out);
    }

    // Rejects, binary COPY.
    if !rejects.is_empty() {
        let sink = tx.copy_in(&*copy_rejected).await?;
        let writer = BinaryCopyInWriter::new(
            sink,
            &[
                Type::TEXT,
                Type::INT4,
                Type::INT8,
                Type::BYTEA,
                Type::BYTEA,
                Type::INT8,
                Type::BYTEA,
                Type::TEXT,
                Type::TEXT,
                Type::TIMESTAMPTZ,
            ],
        );
        pin_mut!(writer);
        for &(i, r) in &rejects {
            let m = &msgs[i];
            let reason = r.reason.as_str();
            let topic: &str = &m.topic;
            let payload = m.payload.as_deref();
            let kept = Kept::of(payload);
            writer
                .as_mut()
                .write(&[
                    &topic,
                    &m.partition,
                    &m.offset,
                    &m.key.as_deref().map(|k| prefix(k, MAX_KEPT_BYTES)),
                    &kept.raw,
                    &kept.length,
                    &kept.sha256.as_ref().map(|h| &h[..]),
                    &reason,
                    &truncate_str(&r.detail, MAX_DETAIL_BYTES),
                    &m.timestamp,
                ])
                .await?;
            *out.rejected.entry(reason).or_default() += 1;
        }
        writer.finish().await?;
    }

    // 5. Advance the positions, commit.
    let mut ts = Vec::with_capacity(last.len());
    let mut ps = Vec::with_capacity(last.len());
    let mut ns = Vec::with_capacity(last.len());
    for ((t, p), o) in &last {
        ts.push(*t);
        ps.push(*p);
        ns.push(o + 1);
    }
    tx.execute(&*update_offsets, &[&ts, &ps, &ns]).await?;
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

/// Next offsets to commit to Kafka for a written batch: the highest offset per
/// (topic, partition), plus one, sorted.
pub fn commit_positions(msgs: &[Msg]) -> Vec<(Arc<str>, i32, i64)> {
    let mut last: BTreeMap<(Arc<str>, i32), i64> = BTreeMap::new();
    for m in msgs {
        let e = last
            .entry((m.topic.clone(), m.partition))
            .or_insert(m.offset);
        *e = (*e).max(m.offset);
    }
    last.into_iter().map(|((t, p), o)| (t, p, o + 1)).collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::decode::Reason;
    use std::time::{Duration, UNIX_EPOCH};

    /// A rejected (empty) record of topic `t` at `partition`/`offset`, for
    /// tests of batching and positions.
    pub(crate) fn msg(partition: i32, offset: i64) -> Msg {
        Msg {
            topic: Arc::from("t"),
            partition,
            offset,
            key: None,
            timestamp: Some(UNIX_EPOCH + Duration::from_secs(5)),
            payload: None,
            decoded: Decoded::Rejected(Rejected {
                reason: Reason::Empty,
                detail: String::new(),
            }),
        }
    }

    #[test]
    fn commit_positions_are_last_plus_one_per_partition() {
        let mut other = msg(0, 1);
        other.topic = Arc::from("a");
        let msgs = vec![msg(0, 5), msg(1, 2), msg(0, 7), msg(1, 3), other];
        let t: Arc<str> = Arc::from("t");
        assert_eq!(
            commit_positions(&msgs),
            vec![(Arc::from("a"), 0, 2), (t.clone(), 0, 8), (t, 1, 4)]
        );
    }

    #[test]
    fn outcomes_of_the_parts_of_a_batch_add_up() {
        let skipped = |p: i32| Skipped {
            topic: Arc::from("t"),
            partition: p,
            next_offset: 9,
            records: 1,
        };
        let mut a = Outcome {
            site_rows: 1,
            check_rows: 2,
            rejected: HashMap::from([("empty", 1)]),
            duplicates: 3,
            skipped: vec![skipped(0)],
        };
        a.merge(Outcome {
            site_rows: 10,
            check_rows: 20,
            rejected: HashMap::from([("empty", 2), ("not_json", 5)]),
            duplicates: 30,
            skipped: vec![skipped(1)],
        });
        assert_eq!(
            a,
            Outcome {
                site_rows: 11,
                check_rows: 22,
                rejected: HashMap::from([("empty", 3), ("not_json", 5)]),
                duplicates: 33,
                skipped: vec![skipped(0), skipped(1)],
            }
        );
    }

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

    #[test]
    fn rejects_keep_a_bounded_prefix_with_the_whole_length_and_hash() {
        let big = vec![b'x'; MAX_KEPT_BYTES + 10];
        let kept = Kept::of(Some(&big));
        assert_eq!(kept.raw.map(<[u8]>::len), Some(MAX_KEPT_BYTES));
        assert_eq!(kept.length, Some(big.len() as i64));
        assert_eq!(kept.sha256.map(|h| h[0]), Some(0x54));
        let none = Kept::of(None);
        assert!(none.raw.is_none() && none.length.is_none() && none.sha256.is_none());
        assert_eq!(truncate_str("aé", 2), "a");
        assert_eq!(truncate_str("abc", 9), "abc");
    }

    #[test]
    fn sql_quotes_every_table() {
        let s = Sql::new(&Tables::new("sch", "t\"x"));
        assert!(s.copy_check.contains("\"sch\".\"t\"\"x_check\""));
        assert!(s.upsert_site.contains("\"sch\".\"t\"\"x\""));
    }
}
