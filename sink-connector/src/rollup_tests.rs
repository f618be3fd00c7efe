use super::*;

fn check(
    ok: Option<bool>,
    status: Option<i16>,
    us: Option<i32>,
    kind: Option<&'static str>,
) -> Compact<'static> {
    Compact {
        ok,
        status_code: status,
        duration_us: us,
        error_kind: kind.map(Into::into),
        ..Compact::default()
    }
}

#[test]
fn every_duration_is_within_the_stated_error_of_its_bucket_value() {
    let mut us = 1i32;
    while us < i32::MAX / 2 {
        for v in [us, us + 1, us.saturating_mul(3) / 2] {
            let estimate = bucket_value(latency_bucket(v));
            let error = (estimate - f64::from(v)).abs() / f64::from(v);
            assert!(
                error <= MAX_RELATIVE_ERROR + 1e-12,
                "{v} µs → {estimate}: {error}"
            );
        }
        us = us.saturating_add(us / 4 + 1);
    }
    assert!((MAX_RELATIVE_ERROR - (2f64.powf(1.0 / 16.0) - 1.0)).abs() < 1e-15);
}

#[test]
fn buckets_grow_with_the_duration() {
    let mut last = latency_bucket(0);
    assert_eq!(last, 0);
    for us in 1..100_000 {
        let b = latency_bucket(us);
        assert!(b >= last);
        last = b;
    }
}

#[test]
fn levels_cut_time_into_utc_minutes_hours_and_days() {
    let t = UNIX_EPOCH + Duration::from_secs(1_764_264_123);
    let secs = |l: Level| l.bucket(t).duration_since(UNIX_EPOCH).unwrap().as_secs();
    assert_eq!(secs(Level::Minute), 1_764_264_120);
    assert_eq!(secs(Level::Hour), 1_764_262_800);
    assert_eq!(secs(Level::Day), 1_764_201_600);
    assert_eq!(
        Level::Day.bucket(UNIX_EPOCH - Duration::from_secs(5)),
        UNIX_EPOCH - Duration::from_secs(86_400),
        "before 1970: the day that holds it"
    );
}

#[test]
fn counts_split_successes_failures_by_kind_and_responses() {
    let mut c = Counts::default();
    c.add(&check(Some(true), Some(200), Some(1000), None), false);
    c.add(&check(Some(true), Some(200), Some(3000), None), false);
    c.add(
        &check(Some(false), Some(500), Some(2000), Some("status")),
        false,
    );
    c.add(
        &check(Some(false), None, Some(10_000_000), Some("timeout")),
        false,
    );
    c.add(&check(Some(false), None, None, Some("martian")), false);
    c.add(&check(None, None, None, None), false);
    assert_eq!((c.checks, c.ok, c.failed, c.responses), (6, 2, 3, 3));
    assert_eq!(c.duration_sum_us, 6000);
    assert_eq!(
        (c.duration_min_us, c.duration_max_us),
        (Some(1000), Some(3000))
    );
    assert_eq!(c.failures, BTreeMap::from([(0, 1), (4, 1), (6, 1)]));
    assert_eq!(c.latency.values().sum::<i64>(), 3);
}

#[test]
fn checks_in_maintenance_count_apart_from_ok_and_failed() {
    let mut c = Counts::default();
    c.add(&check(Some(true), Some(200), Some(1000), None), false);
    c.add(&check(Some(false), None, None, Some("timeout")), true);
    c.add(&check(Some(true), Some(200), Some(1000), None), true);
    c.add(&check(None, None, None, None), true);
    assert_eq!((c.checks, c.ok, c.failed, c.maintenance), (4, 1, 0, 2));
    assert!(
        c.failures.is_empty(),
        "no failure kind counted in maintenance"
    );
    assert_eq!(c.responses, 2, "latency counts every response");
}

#[test]
fn packed_counts_hold_key_and_count_in_one_int8() {
    assert_eq!(pack(&BTreeMap::new()), None);
    let packed = pack(&BTreeMap::from([(3, 7), (80, 1 << 31)])).unwrap();
    assert_eq!(packed, vec![(3 << 32) | 7, (80 << 32) | (1 << 31)]);
    assert_eq!(packed[1] >> 32, 80);
    assert_eq!(packed[1] & 0xffff_ffff, 1 << 31);
}

#[test]
fn a_check_adds_to_one_row_per_level() {
    let mut r = Rollups::default();
    let t = UNIX_EPOCH + Duration::from_secs(1_764_264_123);
    let levels = [Level::Minute, Level::Day];
    r.add(
        &levels,
        1,
        1,
        t,
        &check(Some(true), Some(200), Some(5), None),
        false,
    );
    r.add(
        &levels,
        1,
        1,
        t + Duration::from_secs(60),
        &check(Some(true), Some(200), Some(5), None),
        false,
    );
    r.add(
        &levels,
        2,
        1,
        t,
        &check(Some(true), Some(200), Some(5), None),
        false,
    );
    assert_eq!(r.level(Level::Minute).count(), 3);
    assert_eq!(r.level(Level::Hour).count(), 0);
    let days: Vec<_> = r
        .level(Level::Day)
        .map(|(k, c)| (k.site_id, c.checks))
        .collect();
    assert_eq!(days, vec![(1, 2), (2, 1)]);
}
