//! A batch of consumed records: the record as the sink holds it, what writing
//! a batch achieved, how a batch splits over the writers, and the Kafka
//! positions to commit once it is written.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use crate::decode::Decoded;

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
    /// When the sink read it from Kafka (its wall clock): the site status
    /// counts a probe's silence from here, not from the probe's own clock.
    pub received_at: SystemTime,
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
    /// Good records older than `history_retention`: counted in the rollup
    /// levels whose retention still covers their time, no history row.
    pub past_retention: u64,
    /// Rejects written, by reason.
    pub rejected: HashMap<&'static str, u64>,
    /// Records skipped as already written, or repeated within the batch.
    pub duplicates: u64,
    /// The partitions where records were skipped as already written, with
    /// the stored `next_offset` (a value above the partition's end means the
    /// topic was re-created or its offsets reset).
    pub skipped: Vec<Skipped>,
    /// Site status transitions written, by the state entered.
    pub transitions: HashMap<&'static str, u64>,
    /// Records the site status model ignored as late for their probe (not
    /// newer than its newest check: out of order, e.g. keyless records read
    /// from several partitions).
    pub status_late: u64,
}

impl Outcome {
    /// Adds what another part, or another piece of the same part, of the
    /// batch wrote (records are never in two of them; a url in two pieces
    /// counts in `site_rows` of each).
    pub fn merge(&mut self, other: Outcome) {
        self.site_rows += other.site_rows;
        self.check_rows += other.check_rows;
        self.past_retention += other.past_retention;
        for (reason, n) in other.rejected {
            *self.rejected.entry(reason).or_default() += n;
        }
        self.duplicates += other.duplicates;
        self.skipped.extend(other.skipped);
        for (to, n) in other.transitions {
            *self.transitions.entry(to).or_default() += n;
        }
        self.status_late += other.status_late;
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
    last.into_iter()
        .map(|((t, p), o)| (t, p, o.saturating_add(1)))
        .collect()
}

/// `batch` split into at most `n` parts, each keeping the batch's order; all
/// records of one (topic, partition) land in one part, so the parts never
/// touch the same offsets row, and partitions whose records share a url land
/// in one part too, so two parts never wait on each other's rows of one site
/// (records without a key spread every url over every partition: then the
/// whole batch is one part, written once per site instead of once per writer
/// and site, one writer after the other). The groups are dealt out by size,
/// largest first, each to the part with the fewest records so far: a sink
/// that owns, say, partitions 0, 2 and 4 still uses two writers (a fixed
/// `partition % n` would put them all on one). Safe because a batch's parts
/// are all committed before the next batch is split. Some parts may be empty.
pub fn split_by_partition(batch: Vec<Msg>, n: usize) -> Vec<Vec<Msg>> {
    if n <= 1 {
        return vec![batch];
    }
    let mut sizes: HashMap<(Arc<str>, i32), usize> = HashMap::new();
    for m in &batch {
        *sizes.entry((m.topic.clone(), m.partition)).or_default() += 1;
    }
    let groups = PartitionGroups::of(&batch);
    let mut group_sizes: HashMap<(Arc<str>, i32), usize> = HashMap::new();
    for (key, size) in &sizes {
        *group_sizes.entry(groups.root(key.clone())).or_default() += size;
    }
    let mut by_size: Vec<((Arc<str>, i32), usize)> = group_sizes.into_iter().collect();
    // Largest first; ties in (topic, partition) order, so the split is deterministic.
    by_size.sort_by(|(ka, a), (kb, b)| b.cmp(a).then_with(|| ka.cmp(kb)));
    let mut load = vec![0usize; n];
    let mut part_of_group: HashMap<(Arc<str>, i32), usize> = HashMap::new();
    for (key, size) in by_size {
        let (i, _) = load
            .iter()
            .enumerate()
            .min_by_key(|(i, l)| (**l, *i))
            .unwrap_or((0, &0));
        load[i] += size;
        part_of_group.insert(key, i);
    }
    let part_of: HashMap<(Arc<str>, i32), usize> = sizes
        .into_keys()
        .map(|key| {
            let i = part_of_group.get(&groups.root(key.clone())).copied();
            (key, i.unwrap_or(0))
        })
        .collect();
    let mut parts: Vec<Vec<Msg>> = load.iter().map(|l| Vec::with_capacity(*l)).collect();
    for msg in batch {
        let i = part_of
            .get(&(msg.topic.clone(), msg.partition))
            .copied()
            .unwrap_or(0);
        parts[i].push(msg);
    }
    parts
}

/// The partitions of a batch joined when their good records share a url
/// (union-find; each group named by its smallest partition).
struct PartitionGroups {
    parent: HashMap<(Arc<str>, i32), (Arc<str>, i32)>,
}

impl PartitionGroups {
    fn of(batch: &[Msg]) -> Self {
        let mut groups = Self {
            parent: HashMap::new(),
        };
        let mut first_seen: HashMap<&str, (Arc<str>, i32)> = HashMap::new();
        for m in batch {
            let Decoded::Good(g) = &m.decoded else {
                continue;
            };
            let here = (m.topic.clone(), m.partition);
            match first_seen.get(g.url.as_str()) {
                Some(there) if *there != here => groups.join(there.clone(), here),
                Some(_) => {}
                None => {
                    first_seen.insert(&g.url, here);
                }
            }
        }
        groups
    }

    /// The group `key` belongs to.
    fn root(&self, mut key: (Arc<str>, i32)) -> (Arc<str>, i32) {
        while let Some(up) = self.parent.get(&key) {
            key = up.clone();
        }
        key
    }

    fn join(&mut self, a: (Arc<str>, i32), b: (Arc<str>, i32)) {
        let (a, b) = (self.root(a), self.root(b));
        if a != b {
            let (low, high) = if a < b { (a, b) } else { (b, a) };
            self.parent.insert(high, low);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::decode::{Reason, Rejected};
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
            received_at: UNIX_EPOCH + Duration::from_secs(6),
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
            past_retention: 4,
            rejected: HashMap::from([("empty", 1)]),
            duplicates: 3,
            skipped: vec![skipped(0)],
            transitions: HashMap::from([("down", 1)]),
            status_late: 1,
        };
        a.merge(Outcome {
            site_rows: 10,
            check_rows: 20,
            past_retention: 40,
            rejected: HashMap::from([("empty", 2), ("not_json", 5)]),
            duplicates: 30,
            skipped: vec![skipped(1)],
            transitions: HashMap::from([("down", 2), ("up", 1)]),
            status_late: 2,
        });
        assert_eq!(
            a,
            Outcome {
                site_rows: 11,
                check_rows: 22,
                past_retention: 44,
                rejected: HashMap::from([("empty", 3), ("not_json", 5)]),
                duplicates: 33,
                skipped: vec![skipped(0), skipped(1)],
                transitions: HashMap::from([("down", 3), ("up", 1)]),
                status_late: 3,
            }
        );
    }

    fn positions(part: &[Msg]) -> Vec<(i32, i64)> {
        part.iter().map(|m| (m.partition, m.offset)).collect()
    }

    #[test]
    fn a_batch_splits_by_partition_keeping_its_order() {
        let batch = vec![
            msg(0, 10),
            msg(5, 1),
            msg(2, 7),
            msg(4, 3),
            msg(0, 11),
            msg(3, 2),
            msg(2, 8),
        ];
        let parts = split_by_partition(batch.clone(), 3);
        assert_eq!(parts.len(), 3);
        // Largest partitions first, each to the least loaded part.
        assert_eq!(positions(&parts[0]), [(0, 10), (5, 1), (0, 11)]);
        assert_eq!(positions(&parts[1]), [(2, 7), (2, 8)]);
        assert_eq!(positions(&parts[2]), [(4, 3), (3, 2)]);
        let one = split_by_partition(batch.clone(), 1);
        assert_eq!(one.len(), 1);
        assert_eq!(positions(&one[0]), positions(&batch));
        let many = split_by_partition(batch, 64);
        assert_eq!(many.iter().filter(|p| !p.is_empty()).count(), 5);
    }

    /// A good record of `url` at `partition`/`offset`.
    fn good_msg(partition: i32, offset: i64, url: &str) -> Msg {
        let payload = format!(r#"{{"url":"{url}"}}"#).into_bytes();
        let limits = crate::decode::Limits {
            max_record_bytes: 1 << 20,
            max_url_bytes: 4096,
        };
        Msg {
            decoded: crate::decode::decode(Some(&payload), limits),
            payload: Some(payload),
            ..msg(partition, offset)
        }
    }

    #[test]
    fn partitions_whose_records_share_a_url_go_to_one_writer() {
        // Partitions 0 and 2 share url a (a keyless record landed in 2); 1
        // and 3 have urls of their own; the reject in 3 links nothing.
        let batch = vec![
            good_msg(0, 1, "a"),
            good_msg(1, 1, "b"),
            good_msg(2, 1, "a"),
            good_msg(3, 1, "c"),
            msg(3, 2),
            good_msg(0, 2, "d"),
        ];
        assert!(matches!(batch[0].decoded, Decoded::Good(_)));
        let parts = split_by_partition(batch, 2);
        assert_eq!(positions(&parts[0]), [(0, 1), (2, 1), (0, 2)]);
        assert_eq!(positions(&parts[1]), [(1, 1), (3, 1), (3, 2)]);
    }

    #[test]
    fn a_batch_whose_urls_span_every_partition_is_one_part_in_its_order() {
        // Records without a key: every url in every partition.
        let batch: Vec<Msg> = (0..12)
            .map(|i| good_msg(i % 4, i64::from(i / 4), ["x", "y", "z"][(i % 3) as usize]))
            .collect();
        let parts = split_by_partition(batch.clone(), 2);
        assert_eq!(positions(&parts[0]), positions(&batch));
        assert!(parts[1].is_empty());
    }

    #[test]
    fn partitions_with_the_same_remainder_still_spread_over_the_writers() {
        // A sink owning partitions 0, 2 and 4 of a topic, with two writers.
        let batch = vec![
            msg(0, 1),
            msg(2, 1),
            msg(4, 1),
            msg(0, 2),
            msg(2, 2),
            msg(4, 2),
        ];
        let parts = split_by_partition(batch, 2);
        let sizes: Vec<usize> = parts.iter().map(Vec::len).collect();
        assert_eq!(
            sizes,
            [4, 2],
            "{:?}",
            parts.iter().map(|p| positions(p)).collect::<Vec<_>>()
        );
    }
}
