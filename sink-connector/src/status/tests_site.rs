//! Sites: quorum across probes, silence, maintenance, degraded, late
//! records, transitions and their ids.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

use super::maintenance::{AdHocWindow, RecurringWindow, Windows};
use super::policy::Thresholds;
use super::settings::DayOfWeek;
use super::site::{Site, Swept};
use super::tests_machine::{at, check, thresholds};
use super::tests_maintenance::window;
use super::transition::{Position, Transition};
use super::{Check, State};

/// A site fed through [`Site::apply`], its transitions collected.
pub(super) struct Run<'w> {
    pub(super) site: Site,
    pub(super) t: Thresholds,
    pub(super) windows: Windows<'w>,
    pub(super) seen: Vec<Transition>,
    pub(super) offset: i64,
}

impl<'w> Run<'w> {
    pub(super) fn new(t: Thresholds, windows: Windows<'w>) -> Self {
        Run {
            site: Site::new(42, at(0)),
            t,
            windows,
            seen: Vec::new(),
            offset: 0,
        }
    }

    /// One check of `probe` at `s` seconds, with a Kafka position.
    pub(super) fn check(&mut self, probe: &str, s: i64, ok: bool) -> Option<Transition> {
        self.feed(Check {
            checked_at: at(0) + chrono::TimeDelta::seconds(s),
            ..check(probe, 0, ok)
        })
    }

    pub(super) fn feed(&mut self, mut c: Check<'_>) -> Option<Transition> {
        self.offset += 1;
        c.position = Some(Position {
            partition: 0,
            offset: self.offset,
        });
        let got = self.site.apply(&c, &self.t, &self.windows);
        self.seen.extend(got.clone());
        got
    }

    /// Every probe in `probes` checks once a minute for `minutes` minutes
    /// from `from` seconds; `ok(probe, minute)` says whether it succeeds.
    pub(super) fn minutes(
        &mut self,
        probes: &[&str],
        from: i64,
        minutes: i64,
        ok: impl Fn(&str, i64) -> bool,
    ) {
        for m in 0..minutes {
            for (i, p) in probes.iter().enumerate() {
                self.check(p, from + m * 60 + i as i64, ok(p, m));
            }
        }
    }

    pub(super) fn sweep(&mut self, s: i64) -> Swept {
        let got = self.site.sweep(at(s), &self.t, &self.windows);
        if let Swept::Changed(Some(tr)) = &got {
            self.seen.push(tr.clone());
        }
        got
    }

    pub(super) fn moves(&self) -> Vec<(State, State)> {
        self.seen.iter().map(|t| (t.from, t.to)).collect()
    }
}

use State::{Degraded, Down, Maintenance, Unknown, Up};

#[test]
fn a_flapping_site_is_held_back_by_the_thresholds_but_shown_degraded() {
    let mut r = Run::new(thresholds(), Windows::default());
    r.check("eu", 0, true);
    r.check("eu", 60, true);
    assert_eq!(r.moves(), [(Unknown, Up)]);
    // Never three failures in a row, but two of every three: no down, and
    // degraded once half the window (10 checks) holds half of them failed
    // (review finding 7).
    r.minutes(&["eu"], 120, 60, |_, m| m % 3 == 2);
    assert_eq!(r.moves(), [(Unknown, Up), (Up, Degraded)]);
    assert!(
        r.seen[1]
            .reason
            .contains("eu: flapping, 6 of the last 10 checks failed"),
        "{}",
        r.seen[1].reason
    );
    // Flapping holds three failures in a row at degraded; ten are down.
    r.minutes(&["eu"], 4000, 3, |_, _| false);
    assert_eq!(r.site.status.state, Degraded);
    r.minutes(&["eu"], 4180, 7, |_, _| false);
    assert_eq!(r.moves(), [(Unknown, Up), (Up, Degraded), (Degraded, Down)]);
    // Down, then single successes between pairs of failures: stays down.
    r.minutes(&["eu"], 5000, 30, |_, m| m % 3 == 0);
    assert_eq!(r.moves(), [(Unknown, Up), (Up, Degraded), (Degraded, Down)]);
    assert_eq!(r.site.status.state, Down);
    // One failure in three is no flapping (below half).
    let mut q = Run::new(thresholds(), Windows::default());
    q.minutes(&["eu"], 0, 60, |_, m| m % 3 != 2);
    assert_eq!(q.moves(), [(Unknown, Up)]);
}

#[test]
fn three_probes_one_failing_is_no_down_two_failing_is_one_down() {
    let mut t = thresholds();
    t.min_probes_down = 2;
    let mut r = Run::new(t, Windows::default());
    let probes = ["ap", "eu", "us"];
    r.minutes(&probes, 0, 2, |_, _| true);
    assert_eq!(r.moves(), [(Unknown, Up)]);
    // eu fails for ten minutes: eu says down, the site stays up. (Blocks
    // follow each other: a gap over 3 intervals would make probes silent.)
    r.minutes(&probes, 120, 10, |p, _| p != "eu");
    assert_eq!(r.site.probes["eu"].health, Down);
    assert_eq!((r.site.status.state, r.site.status.probes_down), (Up, 1));
    assert_eq!(r.moves().len(), 1);
    // us fails too: down at us's third failure, exactly once.
    r.minutes(&probes, 720, 10, |p, _| p == "ap");
    assert_eq!(r.moves(), [(Unknown, Up), (Up, Down)]);
    let down = &r.seen[1];
    assert_eq!(down.at, at(720 + 2 * 60 + 2));
    assert_eq!(
        down.reason,
        "2 of 3 voting probes down (eu: 13 consecutive failures, timeout; us: 3 consecutive failures, timeout)"
    );
    assert_eq!(down.probes["ap"], Up);
    assert_eq!(down.probes["us"], Down);
    // Recovery: one transition back, at eu's second success (us alone
    // down is below the quorum); none when us recovers.
    r.minutes(&probes, 1320, 5, |_, _| true);
    assert_eq!(r.moves(), [(Unknown, Up), (Up, Down), (Down, Up)]);
    assert_eq!(r.seen[2].at, at(1320 + 60 + 1));
    assert_eq!(r.site.status.probes_up, 3);
}

#[test]
fn a_fraction_of_the_voting_probes_may_be_required() {
    let mut t = thresholds();
    t.probes_down_fraction = Some(0.5);
    let mut r = Run::new(t, Windows::default());
    let probes = ["a", "b", "c", "d"];
    r.minutes(&probes, 0, 2, |_, _| true);
    r.minutes(&probes, 120, 5, |p, _| p != "a");
    assert_eq!(r.site.status.state, Up, "1 of 4 is below half");
    r.minutes(&probes, 420, 5, |p, _| p == "c" || p == "d");
    assert_eq!(r.site.status.state, Down, "2 of 4 is half");
    assert_eq!(r.moves(), [(Unknown, Up), (Up, Down)]);
}

#[test]
fn a_silent_probe_becomes_unknown_not_down_and_does_not_vote() {
    let mut t = thresholds();
    t.min_probes_down = 2;
    let mut r = Run::new(t, Windows::default());
    let probes = ["ap", "eu", "us"];
    r.minutes(&probes, 0, 2, |_, _| true);
    // us stops after 62 s; ap and eu go on. Silent after 3 × 60 s: at
    // 242 s, noticed by the next record of another probe.
    r.minutes(&["ap", "eu"], 120, 5, |_, _| true);
    assert_eq!(r.site.probes["us"].health, Unknown);
    assert_eq!(r.site.probes["us"].since, at(62 + 180));
    assert_eq!(r.site.status.state, Up);
    assert_eq!(
        (r.site.status.probes_up, r.site.status.probes_unknown),
        (2, 1)
    );
    assert_eq!(
        r.moves(),
        [(Unknown, Up)],
        "no transition for a silent probe"
    );
    // The two voting probes fail: down, from 2 of 2 voting probes.
    r.minutes(&["ap", "eu"], 420, 3, |_, _| false);
    assert_eq!(r.moves(), [(Unknown, Up), (Up, Down)]);
    assert!(
        r.seen[1].reason.starts_with("2 of 2 voting probes down"),
        "{}",
        r.seen[1].reason
    );
    assert_eq!(r.seen[1].probes["us"], Unknown);
}

#[test]
fn a_site_whose_only_probe_stops_is_unknown_after_a_sweep() {
    let mut r = Run::new(thresholds(), Windows::default());
    r.minutes(&["eu"], 0, 3, |_, _| true);
    assert_eq!(r.sweep(200), Swept::Idle);
    assert_eq!(r.site.wake_at(&r.t, &r.windows), Some(at(120 + 180)));
    let Swept::Changed(Some(tr)) = r.sweep(301) else {
        panic!("the sweep at 301 s finds eu silent")
    };
    assert_eq!(
        (tr.from, tr.to, tr.at, tr.position),
        (Up, Unknown, at(301), None)
    );
    assert!(tr.reason.starts_with("no voting probe"), "{}", tr.reason);
    assert_eq!(r.sweep(400), Swept::Idle);
    // Back: unknown until success_threshold checks.
    r.check("eu", 500, true);
    assert_eq!(r.site.status.state, Unknown);
    r.check("eu", 560, true);
    assert_eq!(r.moves(), [(Unknown, Up), (Up, Unknown), (Unknown, Up)]);
}

#[test]
fn a_maintenance_window_on_a_dst_day_holds_transitions_back() {
    // Sundays 02:30 Europe/Berlin for 1 hour; on 2026-03-29 02:30 does not
    // exist, so the window is 03:30-04:30 CEST = 01:30-02:30 UTC.
    let cfg = window(&[DayOfWeek::Sun], "02:30", 60, "Europe/Berlin");
    let recurring = [RecurringWindow::from_config(&cfg, 0).unwrap()];
    let windows = Windows::for_site(&recurring, &[], 42, "https://shop.example/");
    let start = Utc.with_ymd_and_hms(2026, 3, 29, 1, 0, 0).unwrap();
    let s = |t: DateTime<Utc>| (t - at(0)).num_seconds();
    let mut t = thresholds();
    t.unknown_after = 100;
    let mut r = Run::new(t, windows);
    r.site = Site::new(42, start);
    r.minutes(&["eu", "us"], s(start), 2, |_, _| true);
    assert_eq!(r.moves(), [(Unknown, Up)]);
    // 01:29 UTC: no window yet. The sweep at 01:30:05 enters it.
    assert_eq!(r.sweep(s(start) + 29 * 60), Swept::Idle);
    r.sweep(s(start) + 30 * 60 + 5);
    assert_eq!(r.moves(), [(Unknown, Up), (Up, Maintenance)]);
    assert!(r.seen[1].reason.contains("nightly"), "{}", r.seen[1].reason);
    assert_eq!(r.site.probes["eu"].state(), Maintenance);
    // Both probes fail all through the window: no transition (the checks
    // count, the state shown is maintenance).
    r.minutes(&["eu", "us"], s(start) + 31 * 60, 58, |_, _| false);
    assert_eq!(r.moves().len(), 2);
    assert_eq!(r.site.probes["eu"].fails, 58);
    // 02:30 UTC: the window ends at eu's next record. Both probes' latest
    // checks failed in the window: neither is down (that takes
    // failure_threshold failures after the window), both are unknown until
    // their thresholds are met; two successes each: up.
    r.minutes(&["eu", "us"], s(start) + 90 * 60, 2, |_, _| true);
    assert_eq!(
        r.moves(),
        [
            (Unknown, Up),
            (Up, Maintenance),
            (Maintenance, Unknown),
            (Unknown, Up)
        ]
    );
    assert_eq!(r.seen[2].at, at(s(start) + 90 * 60));
    assert_eq!(r.seen[3].at, at(s(start) + 91 * 60));
    assert_eq!(r.seen[3].position.unwrap().offset, r.offset - 1);
    // After it, failures count again.
    r.minutes(&["eu", "us"], s(start) + 100 * 60, 3, |_, _| false);
    assert_eq!(r.moves().last(), Some(&(Up, Down)));
}

#[test]
fn a_site_that_recovered_during_a_window_leaves_it_up_and_one_still_failing_down() {
    // The review's repro: down, a window opened to fix it, every check in
    // it succeeds: maintenance → up, no false down.
    let (from, to) = (at(400), at(500));
    let adhoc = [AdHocWindow::new(1, Some(42), None, from, to, Some("fixing it".into())).unwrap()];
    let mut r = Run::new(
        thresholds(),
        Windows::for_site(&[], &adhoc, 42, "https://x/"),
    );
    r.minutes(&["p1"], 0, 2, |_, _| true);
    r.minutes(&["p1"], 120, 4, |_, _| false);
    for s in (401..=560).step_by(10) {
        r.check("p1", s, true);
    }
    assert_eq!(
        r.moves(),
        [
            (Unknown, Up),
            (Up, Down),
            (Down, Maintenance),
            (Maintenance, Up)
        ]
    );
    assert!(
        r.seen[2]
            .reason
            .ends_with("from 2027-01-15 08:06:40 UTC until 2027-01-15 08:08:20 UTC"),
        "to the second: {}",
        r.seen[2].reason
    );
    // Failing all through a second window and after it: unknown when it
    // ends, down after failure_threshold failures after it.
    let adhoc = [AdHocWindow::new(2, Some(42), None, at(1000), at(1100), None).unwrap()];
    r.windows = Windows::for_site(&[], &adhoc, 42, "https://x/");
    for s in (990..=1130).step_by(10) {
        r.check("p1", s, false);
    }
    assert_eq!(
        r.moves()[4..],
        [(Up, Maintenance), (Maintenance, Unknown), (Unknown, Down)]
    );
}

#[test]
fn the_quorum_is_capped_by_the_voting_probes() {
    let mut t = thresholds();
    t.min_probes_down = 2;
    let mut r = Run::new(t, Windows::default());
    // One probe only: it decides.
    r.minutes(&["solo"], 0, 2, |_, _| true);
    r.minutes(&["solo"], 120, 3, |_, _| false);
    assert_eq!(r.moves(), [(Unknown, Up), (Up, Down)]);
    assert!(
        r.seen[1].reason.starts_with(
            "1 of 1 voting probes down, min_probes_down 2 capped to the 1 voting (solo: 3"
        ),
        "{}",
        r.seen[1].reason
    );
    // A second probe votes up: 1 of 2 is below min_probes_down 2 again.
    r.minutes(&["solo", "two"], 300, 2, |p, _| p == "two");
    assert_eq!(r.site.status.state, Up);
}

#[test]
fn a_record_late_for_the_site_does_not_take_it_out_of_maintenance() {
    let (from, to) = (at(300), at(900));
    let adhoc = [AdHocWindow::new(1, Some(42), None, from, to, Some("deploy".into())).unwrap()];
    let mut r = Run::new(
        thresholds(),
        Windows::for_site(&[], &adhoc, 42, "https://x/"),
    );
    r.minutes(&["eu", "us"], 0, 2, |_, _| true);
    r.check("eu", 310, true);
    assert_eq!(r.site.status.state, Maintenance);
    // us's record from before the window arrives now: it counts for us (a
    // failure outside the window) but the site's clock stays at 310 s.
    r.check("us", 290, false);
    assert_eq!(r.site.probes["us"].fails, 1);
    assert_eq!(r.site.status.state, Maintenance);
    assert_eq!(r.moves(), [(Unknown, Up), (Up, Maintenance)]);
    assert!(r.seen[1].reason.contains("deploy"));
}

#[test]
fn degraded_when_the_quorum_of_probes_is_slow_or_down() {
    let mut t = thresholds();
    t.degraded_after = Some(Duration::from_secs(2));
    let mut r = Run::new(t, Windows::default());
    r.minutes(&["eu", "us"], 0, 2, |_, _| true);
    let slow = |probe: &'static str, s: i64| Check {
        duration: Some(Duration::from_secs(3)),
        checked_at: at(s),
        ..check(probe, 0, true)
    };
    for m in 0..3 {
        r.feed(slow("eu", 200 + m * 60));
        r.check("us", 201 + m * 60, true);
    }
    assert_eq!(r.moves(), [(Unknown, Up), (Up, Degraded)]);
    assert_eq!(
        r.seen[1].reason,
        "1 of 2 voting probes degraded or down (eu: 3 responses slower than 2s)"
    );
    r.minutes(&["eu", "us"], 400, 2, |_, _| true);
    assert_eq!(r.moves(), [(Unknown, Up), (Up, Degraded), (Degraded, Up)]);
}

#[test]
fn late_records_move_no_state() {
    let mut r = Run::new(thresholds(), Windows::default());
    r.minutes(&["eu"], 0, 5, |_, _| true);
    let before = r.site.clone();
    for s in [0, 60, 100, 240] {
        assert_eq!(r.check("eu", s, false), None);
    }
    assert_eq!(r.site.late, 4, "counted, for the metrics");
    r.site.late = 0;
    assert_eq!(r.site, before);
    assert_eq!(r.moves(), [(Unknown, Up)]);
}

#[test]
fn transition_ids_are_stable_across_a_replay() {
    let mut r = Run::new(thresholds(), Windows::default());
    r.minutes(&["eu", "us"], 0, 2, |_, _| true);
    let saved = r.site.clone();
    let offset = r.offset;
    let batch = |r: &mut Run<'_>| {
        r.minutes(&["eu", "us"], 200, 4, |_, _| false);
        r.minutes(&["eu", "us"], 440, 3, |_, _| true);
    };
    batch(&mut r);
    let first: Vec<Transition> = r.seen[1..].to_vec();
    // The batch's transaction rolled back: the same rows, the same records.
    r.site = saved;
    r.offset = offset;
    r.seen.clear();
    batch(&mut r);
    assert_eq!(r.seen, first);
    let ids: Vec<String> = first.iter().map(Transition::id).collect();
    assert_eq!(ids, ["42-2", "42-3"]);
    assert_eq!(r.site.status.seq, 3);
    assert_eq!(
        first[0].probes_json(),
        serde_json::json!({"eu": "down", "us": "up"})
    );
}

#[test]
fn the_status_row_counts_probes_and_dates_changes() {
    let mut r = Run::new(thresholds(), Windows::default());
    r.minutes(&["eu", "us"], 0, 2, |_, _| true);
    let st = &r.site.status;
    assert_eq!((st.state, st.since, st.seq), (Up, at(60), 1));
    assert_eq!((st.probes_up, st.probes_down, st.probes_unknown), (2, 0, 0));
    r.minutes(&["eu", "us"], 200, 3, |p, _| p == "us");
    let st = &r.site.status;
    assert_eq!((st.state, st.since), (Down, at(320)));
    assert_eq!(st.last_change, at(320));
    r.minutes(&["eu", "us"], 400, 3, |p, _| p == "us");
    assert_eq!(r.site.status.last_change, at(320), "nothing changed since");
    assert_eq!(r.site.status.evaluated_at, at(521));
}

#[test]
fn a_probe_whose_clock_lags_the_others_still_votes() {
    // Review 2, finding 3: p2's checks are dated 10 minutes behind p1's
    // (more than unknown_after intervals); it used to be silenced at every
    // p1 check and never vote.
    let mut r = Run::new(thresholds(), Windows::default());
    r.minutes(&["p1"], 1000, 2, |_, _| true);
    for m in 0..5 {
        r.check("p1", 1120 + m * 60, true);
        r.check("p2", 1120 + m * 60 - 600, false);
    }
    assert_eq!(r.site.probes["p2"].health, Down);
    assert_eq!(r.moves(), [(Unknown, Up), (Up, Down)]);
}

#[test]
fn a_site_down_through_a_window_is_down_when_it_ends_without_an_unknown() {
    // Review 2, finding 8: down→maintenance→unknown→down alerted twice for
    // one outage.
    let adhoc = [AdHocWindow::new(1, Some(42), None, at(300), at(600), None).unwrap()];
    let mut r = Run::new(
        thresholds(),
        Windows::for_site(&[], &adhoc, 42, "https://x/"),
    );
    r.minutes(&["p1"], 0, 2, |_, _| true);
    r.minutes(&["p1"], 120, 10, |_, _| false);
    assert_eq!(
        r.moves(),
        [
            (Unknown, Up),
            (Up, Down),
            (Down, Maintenance),
            (Maintenance, Down)
        ]
    );
    assert_eq!(r.seen[3].at, at(600));
}

#[test]
fn a_probe_whose_clock_lags_the_sinks_is_not_silent_at_every_sweep() {
    // Review 3, finding 2: checks dated 10 s behind the sink's clock, one a
    // second, silent after 3 s: each sweep (at the sink's clock) found the
    // probe silent since its last check's own time.
    let mut r = Run::new(thresholds(), Windows::default());
    for s in 0..30 {
        r.feed(Check {
            interval: Some(1.0),
            received_at: Some(at(s + 10)),
            ..check("p1", s, true)
        });
        if s % 5 == 4 {
            r.sweep(s + 10 + 1);
        }
    }
    assert_eq!(r.moves(), [(Unknown, Up)]);
    // And once it stops, it is silent 3 s after it was last heard from.
    r.sweep(29 + 10 + 2);
    assert_eq!(r.moves(), [(Unknown, Up)]);
    r.sweep(29 + 10 + 4);
    assert_eq!(r.moves(), [(Unknown, Up), (Up, Unknown)]);
}
