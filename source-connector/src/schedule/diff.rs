//! What a reload changes in one lane: the sites it runs against the sites it
//! is given, keyed by url ([`plan`]), and where a site added by a reload
//! is first due ([`first_due`]).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::sites::SiteSpec;

/// The difference between the sites a lane runs and the ones it is given.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Slots whose url is not given any more.
    pub removed: Vec<u32>,
    /// Slots whose url is given with other settings, and the index of the
    /// new settings.
    pub changed: Vec<(u32, usize)>,
    /// Indices of the given sites the lane does not run yet.
    pub added: Vec<usize>,
    /// Sites given exactly as they run.
    pub unchanged: usize,
}

/// Compares `current` (slot, settings) with `wanted` (index, settings), by
/// url; see [`Plan`]. Each url is given at most once (the configuration
/// refuses a url listed twice).
pub fn plan<'a>(
    current: impl Iterator<Item = (u32, &'a SiteSpec)>,
    wanted: impl Iterator<Item = (usize, &'a SiteSpec)>,
) -> Plan {
    let mut running: HashMap<&str, (u32, &SiteSpec)> = current
        .map(|(slot, spec)| (spec.url.as_str(), (slot, spec)))
        .collect();
    let mut out = Plan::default();
    for (i, spec) in wanted {
        match running.remove(spec.url.as_str()) {
            Some((_, now)) if now.same_settings(spec) => out.unchanged += 1,
            Some((slot, _)) => out.changed.push((slot, i)),
            None => out.added.push(i),
        }
    }
    out.removed = running.into_values().map(|(slot, _)| slot).collect();
    out.removed.sort_unstable();
    out
}

/// The first due time, at or after `now`, on the grid a site would have had
/// from the lane's start: `origin + offset + k × interval`. A site added by a
/// reload starts there, as it would have after a restart at `origin`.
pub fn first_due(origin: Instant, offset: Duration, interval: Duration, now: Instant) -> Instant {
    let first = origin + offset;
    if first >= now || interval.is_zero() {
        return first;
    }
    let behind = now.duration_since(first).as_nanos();
    let step = interval.as_nanos();
    let k = behind.div_ceil(step);
    let nanos = u64::try_from(k.saturating_mul(step)).unwrap_or(u64::MAX);
    first + Duration::from_nanos(nanos)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn spec(url: &str, interval_ms: u64) -> SiteSpec {
        SiteSpec::for_test(
            url,
            Duration::from_millis(interval_ms),
            Duration::from_secs(1),
        )
    }

    #[test]
    fn a_plan_keeps_changes_adds_and_removes_by_url() {
        let now = [
            spec("http://a.example/", 1000),
            spec("http://b.example/", 1000),
            spec("http://c.example/", 1000),
        ];
        let mut c = spec("http://c.example/", 500);
        c.max_redirects = 1;
        let given = [
            spec("http://d.example/", 1000),
            c,
            spec("http://a.example/", 1000),
        ];
        let p = plan(
            now.iter().enumerate().map(|(i, s)| (i as u32 + 10, s)),
            given.iter().enumerate(),
        );
        assert_eq!(
            p,
            Plan {
                removed: vec![11],
                changed: vec![(12, 1)],
                added: vec![0],
                unchanged: 1,
            }
        );
    }

    #[test]
    fn every_setting_counts_as_a_change() {
        let a = spec("http://a.example/", 1000);
        let changes: [fn(&mut SiteSpec); 5] = [
            |s| s.timeout = Duration::from_secs(2),
            |s| s.method = reqwest::Method::HEAD,
            |s| s.expected_status = Some(Arc::from(&[200][..])),
            |s| s.client.keep_alive = true,
            |s| s.regex = Some(Arc::new(regex::Regex::new("x").unwrap())),
        ];
        for change in changes {
            let mut b = a.clone();
            change(&mut b);
            let p = plan([(0, &a)].into_iter(), [(0, &b)].into_iter());
            assert_eq!(p.changed, vec![(0, 0)], "{b:?}");
        }
        let same = plan([(0, &a)].into_iter(), [(0, &a.clone())].into_iter());
        assert_eq!((same.unchanged, same.changed.len()), (1, 0));
    }

    #[test]
    fn nothing_given_removes_all_and_nothing_running_adds_all() {
        let s = [
            spec("http://a.example/", 1000),
            spec("http://b.example/", 1000),
        ];
        let gone = plan(
            s.iter().enumerate().map(|(i, s)| (i as u32, s)),
            [].into_iter(),
        );
        assert_eq!(gone.removed, vec![0, 1]);
        let new = plan([].into_iter(), s.iter().enumerate());
        assert_eq!(new.added, vec![0, 1]);
    }

    #[test]
    fn an_added_site_starts_on_its_grid_at_or_after_now() {
        let t0 = Instant::now();
        let (ms, s) = (Duration::from_millis, Duration::from_secs(1));
        // Its first tick is still ahead: that one.
        assert_eq!(first_due(t0, ms(300), s, t0 + ms(100)), t0 + ms(300));
        // Past: the next tick of the grid 0.3 s + k s.
        assert_eq!(first_due(t0, ms(300), s, t0 + ms(2500)), t0 + ms(3300));
        // Exactly on a tick: that tick.
        assert_eq!(first_due(t0, ms(300), s, t0 + ms(1300)), t0 + ms(1300));
    }
}
