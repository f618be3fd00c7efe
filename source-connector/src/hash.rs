//! A stable hash of a url, the same in every process and on every machine.
//!
//! Used for two things that must agree across restarts and across probes:
//! which shard a url belongs to ([`shard_of`]) and where in its interval a
//! site's first check falls ([`offset_in`]). std's `DefaultHasher` is seeded
//! at random per process, so it cannot be used here.

use std::time::Duration;

/// 64-bit FNV-1a of `bytes`.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET, |h, b| (h ^ u64::from(*b)).wrapping_mul(PRIME))
}

/// The splitmix64 finaliser: spreads every input bit over the output, so the
/// offset within an interval does not follow the shard number.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The shard (1-based, `1..=count`) that `url` belongs to when a list is split
/// into `count` shards.
pub fn shard_of(url: &str, count: u32) -> u32 {
    shard_of_hash(fnv1a(url.as_bytes()), count)
}

/// [`shard_of`] the url whose [`fnv1a`] is `hash`.
pub fn shard_of_hash(hash: u64, count: u32) -> u32 {
    let count = u64::from(count.max(1));
    // The remainder is below `count`, which came from a u32.
    (hash % count) as u32 + 1
}

/// Where in `interval` the first check of `url` falls: a stable value in
/// `[0, interval)`, spread evenly over many urls.
pub fn offset_in(url: &str, interval: Duration) -> Duration {
    let nanos = interval.as_nanos().min(u128::from(u64::MAX)) as u64;
    if nanos == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(mix(fnv1a(url.as_bytes())) % nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn offset_is_stable_and_inside_the_interval() {
        let i = Duration::from_secs(1);
        let a = offset_in("https://example.com/", i);
        assert_eq!(a, offset_in("https://example.com/", i));
        assert!(a < i);
        assert_eq!(offset_in("x", Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn offsets_spread_over_the_interval() {
        let i = Duration::from_secs(10);
        let mut buckets = [0u32; 10];
        for n in 0..10_000 {
            let o = offset_in(&format!("https://site-{n}.example/"), i);
            buckets[o.as_secs() as usize] += 1;
        }
        // 1,000 expected per second-wide bucket; a herd would put most in one.
        assert!(
            buckets.iter().all(|&b| (800..1200).contains(&b)),
            "{buckets:?}"
        );
    }

    #[test]
    fn shards_partition_a_list() {
        let urls: Vec<String> = (0..4000)
            .map(|n| format!("https://s{n}.example/"))
            .collect();
        let mut counts = [0u32; 4];
        for u in &urls {
            let s = shard_of(u, 4);
            assert!((1..=4).contains(&s));
            counts[(s - 1) as usize] += 1;
        }
        assert_eq!(counts.iter().sum::<u32>(), 4000);
        assert!(
            counts.iter().all(|&c| (850..1150).contains(&c)),
            "{counts:?}"
        );
        assert!(urls.iter().all(|u| shard_of(u, 1) == 1));
    }
}
