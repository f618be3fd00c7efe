//! One probe's state machine: thresholds, degraded, late records, silence.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::machine::{effective_time, Check, Observed, ProbeState};
use super::policy::Thresholds;
use super::settings::StatusConfig;
use super::State;

pub(super) fn at(s: i64) -> DateTime<Utc> {
    // 2027-01-15 08:00:00 UTC, a Friday.
    DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
}

pub(super) fn thresholds() -> Thresholds {
    Thresholds::defaults_of(&StatusConfig::default())
}

pub(super) fn check(probe: &str, s: i64, ok: bool) -> Check<'_> {
    Check {
        probe,
        checked_at: at(s),
        ok,
        duration: Some(Duration::from_millis(100)),
        interval: Some(60.0),
        error_kind: (!ok).then_some("timeout"),
        position: None,
        received_at: None,
        written_ahead: None,
    }
}

/// Feeds `oks` (true: success) one a minute from `start`; the healths after each.
fn feed(p: &mut ProbeState, t: &Thresholds, start: i64, oks: &[bool]) -> Vec<State> {
    oks.iter()
        .enumerate()
        .map(|(i, ok)| {
            p.observe(&check("eu", start + 60 * i as i64, *ok), t);
            p.health
        })
        .collect()
}

#[test]
fn a_new_probe_is_unknown_until_a_threshold_is_met() {
    let t = thresholds();
    let mut p = ProbeState::new(at(0), t.default_interval);
    assert_eq!(
        feed(&mut p, &t, 0, &[true, true]),
        [State::Unknown, State::Up]
    );
    let mut p = ProbeState::new(at(0), t.default_interval);
    let got = feed(&mut p, &t, 0, &[false, false, false]);
    assert_eq!(got, [State::Unknown, State::Unknown, State::Down]);
    assert_eq!(p.since, at(120));
    assert_eq!(p.last_error.as_deref(), Some("timeout"));
}

#[test]
fn down_after_failure_threshold_and_up_after_success_threshold() {
    let t = thresholds();
    let mut p = ProbeState::new(at(0), t.default_interval);
    feed(&mut p, &t, 0, &[true, true]);
    let got = feed(&mut p, &t, 120, &[false, false, false, true, true]);
    use State::*;
    assert_eq!(got, [Up, Up, Down, Down, Up]);
    assert_eq!((p.fails, p.oks), (0, 2));
}

#[test]
fn flapping_never_meets_a_threshold() {
    // The thresholds alone (flapping judged apart: flap_window 0).
    let mut t = thresholds();
    t.flap_window = 0;
    let mut p = ProbeState::new(at(0), t.default_interval);
    feed(&mut p, &t, 0, &[true, true]);
    let flaps = [false, true, false, false, true, false, false, true, false];
    assert!(feed(&mut p, &t, 120, &flaps)
        .iter()
        .all(|s| *s == State::Up));
    // And once down, single successes do not bring it back.
    feed(&mut p, &t, 1000, &[false, false, false]);
    let got = feed(&mut p, &t, 2000, &[true, false, true, false, true]);
    assert!(got.iter().all(|s| *s == State::Down), "{got:?}");
}

#[test]
fn slow_successes_make_it_degraded_and_fast_ones_up_again() {
    let mut t = thresholds();
    t.degraded_after = Some(Duration::from_secs(1));
    let mut p = ProbeState::new(at(0), t.default_interval);
    feed(&mut p, &t, 0, &[true, true]);
    let slow = |s: i64| Check {
        duration: Some(Duration::from_millis(1500)),
        ..check("eu", s, true)
    };
    let mut got = Vec::new();
    for s in [200, 260, 320] {
        p.observe(&slow(s), &t);
        got.push(p.health);
    }
    assert_eq!(got, [State::Up, State::Up, State::Degraded]);
    // Exactly the threshold is not slower.
    let exact = Check {
        duration: Some(Duration::from_secs(1)),
        ..check("eu", 380, true)
    };
    p.observe(&exact, &t);
    assert_eq!(p.health, State::Degraded);
    p.observe(&check("eu", 440, true), &t);
    assert_eq!(p.health, State::Up);
    // A slow success counts as a success: it brings a down probe back, degraded.
    feed(&mut p, &t, 500, &[false, false, false]);
    p.observe(&slow(700), &t);
    p.observe(&slow(760), &t);
    assert_eq!(p.health, State::Degraded);
}

#[test]
fn no_degraded_state_without_degraded_after() {
    let t = thresholds();
    let mut p = ProbeState::new(at(0), t.default_interval);
    for s in 0..10 {
        let c = Check {
            duration: Some(Duration::from_secs(30)),
            ..check("eu", s * 60, true)
        };
        p.observe(&c, &t);
    }
    assert_eq!(p.health, State::Up);
}

#[test]
fn late_and_repeated_records_move_nothing() {
    let t = thresholds();
    let mut p = ProbeState::new(at(0), t.default_interval);
    feed(&mut p, &t, 0, &[true, true, false, false]);
    let before = p.clone();
    assert_eq!(p.observe(&check("eu", 100, false), &t), Observed::Late);
    assert_eq!(p.observe(&check("eu", 180, false), &t), Observed::Late);
    assert_eq!(p, before);
    assert_eq!(
        p.observe(&check("eu", 181, false), &t),
        Observed::Changed {
            from: State::Up,
            to: State::Down
        }
    );
}

#[test]
fn leaving_a_window_needs_the_thresholds_except_for_an_outage_that_ran_through_it() {
    let t = thresholds();
    let mut p = ProbeState::new(at(0), t.default_interval);
    feed(&mut p, &t, 0, &[true, true, false, false, false]);
    assert_eq!(p.health, State::Down);
    // Down, then recovered during the window (success_threshold met): up.
    p.set_maintenance(true, at(290), &t);
    feed(&mut p, &t, 300, &[true, true]);
    assert_eq!((p.state(), p.health), (State::Maintenance, State::Up));
    p.set_maintenance(false, at(430), &t);
    assert_eq!((p.state(), p.since), (State::Up, at(430)));
    // (A fresh probe each time: several outages in a row would be flapping.)
    p = ProbeState::new(at(0), t.default_interval);
    // Down, one lucky success at the window's end: unknown (review 2,
    // finding 9), up at the second success.
    feed(&mut p, &t, 500, &[false, false, false]);
    p.set_maintenance(true, at(690), &t);
    p.observe(&check("eu", 700, true), &t);
    p.set_maintenance(false, at(710), &t);
    assert_eq!(p.state(), State::Unknown);
    feed(&mut p, &t, 720, &[true]);
    assert_eq!(p.state(), State::Up);
    p = ProbeState::new(at(0), t.default_interval);
    // Down before the window and failing all through it: still down when
    // it ends, at once (review 2, finding 8: no detour through unknown).
    feed(&mut p, &t, 800, &[false, false, false]);
    p.set_maintenance(true, at(990), &t);
    feed(&mut p, &t, 1000, &[false, false]);
    p.set_maintenance(false, at(1200), &t);
    assert_eq!((p.state(), p.since), (State::Down, at(1200)));
    p = ProbeState::new(at(0), t.default_interval);
    // Up before the window, failing through it: unknown after it, with no
    // failure counted, down after failure_threshold failures after it.
    feed(&mut p, &t, 1300, &[true, true]);
    p.set_maintenance(true, at(1490), &t);
    feed(&mut p, &t, 1500, &[false, false, false]);
    p.set_maintenance(false, at(1700), &t);
    assert_eq!((p.state(), p.fails), (State::Unknown, 0));
    feed(&mut p, &t, 1720, &[false, false]);
    assert_eq!(p.state(), State::Unknown);
    feed(&mut p, &t, 1900, &[false]);
    assert_eq!(p.state(), State::Down);
    p = ProbeState::new(at(0), t.default_interval);
    // Up before, two failures in the window, one after: not three after.
    feed(&mut p, &t, 2000, &[true, true]);
    p.set_maintenance(true, at(2110), &t);
    feed(&mut p, &t, 2120, &[false, false]);
    p.set_maintenance(false, at(2300), &t);
    feed(&mut p, &t, 2310, &[false]);
    assert_eq!(p.state(), State::Up);
}

#[test]
fn a_check_dated_ahead_of_the_sink_beyond_the_skew_counts_at_the_sink_clock() {
    let now = at(1000);
    assert_eq!(effective_time(at(1001), now), at(1001), "within the skew");
    assert_eq!(effective_time(at(1002), now), at(1002));
    assert_eq!(effective_time(at(1003), now), now);
    assert_eq!(effective_time(at(87_000), now), now);
    assert_eq!(effective_time(at(10), now), at(10));
}

#[test]
fn silence_follows_the_records_interval() {
    let t = thresholds();
    let mut p = ProbeState::new(at(0), t.default_interval);
    let c = Check {
        interval: Some(10.0),
        ..check("eu", 0, true)
    };
    p.observe(&c, &t);
    // Unknown probes have no silence deadline.
    assert_eq!(p.silent_at(&t), None);
    p.observe(
        &Check {
            checked_at: at(10),
            ..c.clone()
        },
        &t,
    );
    assert_eq!(p.silent_at(&t), Some(at(40)));
    // Without an interval: default_interval (60s); a silly one is clamped.
    p.observe(
        &Check {
            interval: None,
            ..check("eu", 20, true)
        },
        &t,
    );
    assert_eq!(p.silent_at(&t), Some(at(200)));
    // A shorter interval is taken as the longer one fades (a check slower
    // than its interval is remembered for a few checks), down to
    // min_interval for a silly one.
    let tiny = |s| Check {
        interval: Some(1e-9),
        ..check("eu", s, true)
    };
    p.observe(&tiny(30), &t);
    assert_eq!(p.interval, Duration::from_secs(48), "60 s × 0.8");
    for s in 31..60 {
        p.observe(&tiny(s), &t);
    }
    assert_eq!(p.interval, Duration::from_secs(1), "min_interval");
}

#[test]
fn an_absurd_interval_neither_silences_a_probe_nor_hides_one_for_days() {
    let t = thresholds();
    let judged = |claim: Option<f64>| t.interval_of(claim);
    assert_eq!(judged(None), t.default_interval);
    for absurd in [0.0, -1.0, -1e300, f64::NAN, f64::NEG_INFINITY] {
        assert_eq!(judged(Some(absurd)), t.default_interval, "{absurd}");
    }
    assert_eq!(judged(Some(1e-9)), t.min_interval);
    for huge in [1e9, 1e300, f64::INFINITY] {
        let i = judged(Some(huge));
        assert!(i <= t.max_interval, "{huge}: {i:?}");
    }
    assert_eq!(judged(Some(1e300)), t.max_interval);
    assert_eq!(judged(Some(30.0)), Duration::from_secs(30));
    // Silent at most unknown_after × max_interval after its last check.
    assert_eq!(
        t.silence(judged(Some(1e300))),
        Duration::from_secs(3 * 3600)
    );
}

#[test]
fn a_probe_back_from_silence_starts_over() {
    let t = thresholds();
    let mut p = ProbeState::new(at(0), t.default_interval);
    feed(&mut p, &t, 0, &[true, true, false]);
    p.go_silent(at(1000));
    assert_eq!(
        (p.health, p.fails, p.oks, p.since),
        (State::Unknown, 0, 0, at(1000))
    );
    assert_eq!(
        feed(&mut p, &t, 2000, &[true, true]),
        [State::Unknown, State::Up]
    );
}

#[test]
fn state_names_round_trip() {
    for s in State::ALL {
        assert_eq!(s.as_str().parse::<State>(), Ok(s));
    }
    assert!("Up".parse::<State>().is_err());
    assert_eq!(
        State::ALL.map(State::votes),
        [true, true, true, false, false]
    );
}

#[test]
fn the_first_matching_rule_wins() {
    use super::policy::Policy;
    use super::settings::StatusRuleConfig;
    let cfg = StatusConfig {
        rules: vec![
            StatusRuleConfig {
                urls: "^https://shop\\.".into(),
                failure_threshold: Some(5),
                ..Default::default()
            },
            StatusRuleConfig {
                urls: "shop".into(),
                failure_threshold: Some(7),
                success_threshold: Some(4),
                ..Default::default()
            },
        ],
        ..StatusConfig::default()
    };
    let p = Policy::from_config(&cfg).unwrap();
    let t = p.for_url("https://shop.example/");
    assert_eq!((t.failure_threshold, t.success_threshold), (5, 2));
    assert_eq!(p.for_url("http://myshop/").failure_threshold, 7);
    assert_eq!(p.for_url("https://www.example/"), &thresholds());
}

#[test]
fn quorum_counts_and_shares() {
    let mut t = thresholds();
    assert!(!t.quorum(0, 3));
    assert!(t.quorum(1, 3));
    t.min_probes_down = 2;
    assert!(t.quorum(1, 1), "capped by the voting probes");
    assert!(!t.quorum(1, 2));
    t.probes_down_fraction = Some(0.75);
    assert!(!t.quorum(2, 3));
    assert!(t.quorum(3, 4));
}

#[test]
fn fail_fail_ok_repeated_makes_an_up_probe_degraded_for_flapping_and_steady_successes_bring_it_back(
) {
    let t = thresholds();
    assert_eq!((t.flap_window, t.flap_threshold), (20, 0.5));
    let mut p = ProbeState::new(at(0), t.default_interval);
    feed(&mut p, &t, 0, &[true, true]);
    assert_eq!(p.health, State::Up);
    // fail-fail-ok: never three failures in a row, 2 of 3 failed.
    let flaps: Vec<bool> = (0..30).map(|i| i % 3 == 2).collect();
    let got = feed(&mut p, &t, 120, &flaps);
    assert_eq!(
        got[..7],
        [State::Up; 7],
        "not judged before 10 (half the window)"
    );
    assert_eq!(got.last(), Some(&State::Degraded));
    assert!(p.flapping(&t));
    assert_eq!(p.recent_failures(20), (13, 20));
    // Steady successes: back to up once fewer than half of the last 20 failed.
    let got = feed(&mut p, &t, 5000, &[true; 20]);
    assert_eq!(got[0], State::Degraded);
    assert_eq!(got.last(), Some(&State::Up));
    // Off: flap_window 0.
    let mut off = thresholds();
    off.flap_window = 0;
    let mut q = ProbeState::new(at(0), off.default_interval);
    feed(&mut q, &off, 0, &[true, true]);
    assert!(feed(&mut q, &off, 120, &flaps)
        .iter()
        .all(|s| *s == State::Up));
}

#[test]
fn a_new_probe_that_flaps_is_degraded_not_unknown() {
    // Review 2, finding 5: fail, fail, ok meets neither threshold.
    let t = thresholds();
    let mut p = ProbeState::new(at(0), t.default_interval);
    let flaps: Vec<bool> = (0..60).map(|i| i % 3 == 2).collect();
    let got = feed(&mut p, &t, 0, &flaps);
    assert_eq!(got[..9], [State::Unknown; 9]);
    assert_eq!(got.last(), Some(&State::Degraded));
}

#[test]
fn flapping_through_the_failure_threshold_is_held_at_degraded_until_a_long_streak() {
    // Review 2, finding 6: ok, ok, then (fail x3, ok x2) x6 went up and
    // down on every cycle (13 transitions).
    let t = thresholds();
    let mut p = ProbeState::new(at(0), t.default_interval);
    let mut outcomes = vec![true, true];
    for _ in 0..6 {
        outcomes.extend([false, false, false, true, true]);
    }
    let got = feed(&mut p, &t, 0, &outcomes);
    let mut changes: Vec<State> = got.clone();
    changes.dedup();
    use State::*;
    assert_eq!(changes, [Unknown, Up, Down, Up, Degraded], "{got:?}");
    // A real outage while flapping: down once the streak is half the
    // window, or (here first, at the ninth) the failures most of it.
    let got = feed(&mut p, &t, 5000, &[false; 10]);
    assert_eq!(got[..8], [Degraded; 8]);
    assert_eq!(got[8..], [Down; 2]);
    // Recovered: degraded while the window still holds the flapping, up
    // once it holds one outage between successes only.
    let got = feed(&mut p, &t, 9000, &[true; 12]);
    assert_eq!(got[..2], [Down, Degraded]);
    assert_eq!(got.last(), Some(&Up));
}

#[test]
fn recent_outcomes_keep_at_most_64_and_silence_forgets_them() {
    let t = thresholds();
    let mut p = ProbeState::new(at(0), t.default_interval);
    let alternating: Vec<bool> = (0..70).map(|i| i % 2 == 0).collect();
    feed(&mut p, &t, 0, &alternating);
    assert_eq!((p.recent_n, p.recent_failures(64)), (64, (32, 64)));
    assert_eq!(p.recent_failures(3), (2, 3), "newest first: fail, ok, fail");
    p.go_silent(at(10_000));
    assert_eq!((p.recent, p.recent_n), (0, 0));
}

#[test]
fn a_probe_whose_checks_outlast_its_interval_is_judged_by_their_duration() {
    // Review 3, finding 1: interval 1 s, every check times out after 5 s, so
    // records come 5 s apart; silence after 3 × 1 s flipped it to unknown
    // between every two of them.
    let t = thresholds();
    let mut p = ProbeState::new(at(0), t.default_interval);
    for s in [0, 5, 10, 15] {
        let c = Check {
            interval: Some(1.0),
            duration: Some(Duration::from_secs(5)),
            ..check("eu", s, false)
        };
        p.observe(&c, &t);
        assert_eq!(t.silence(p.interval), Duration::from_secs(15));
    }
    assert_eq!(p.silent_at(&t), Some(at(30)), "15 s after the last, not 3");
    assert_eq!(
        (p.health, p.interval),
        (State::Down, Duration::from_secs(5))
    );
    // Fast checks again: the slow one is remembered, fading, so one slow
    // check in five keeps the silence above the next slow check (review 4,
    // finding 1: every 5th check hanging flipped the site to unknown).
    let fast = |s| Check {
        interval: Some(1.0),
        ..check("eu", s, true)
    };
    let mut seen = Vec::new();
    for s in 20..24 {
        p.observe(&fast(s), &t);
        seen.push(p.interval.as_millis());
    }
    assert_eq!(seen, [4000, 3200, 2560, 2048]);
    assert!(t.silence(p.interval) > Duration::from_secs(5));
    for s in 24..40 {
        p.observe(&fast(s), &t);
    }
    assert_eq!(p.interval, Duration::from_secs(1));
}

#[test]
fn flapping_has_hysteresis_and_a_mostly_failing_probe_still_goes_down() {
    // Review 3, finding 3: F o o F F F o o F o o (45 % failures) made 55
    // transitions in 115 checks (the share crossing 0.5 both ways).
    let t = thresholds();
    let mut p = ProbeState::new(at(0), t.default_interval);
    let cycle = [
        false, true, true, false, false, false, true, true, false, true, true,
    ];
    let outcomes: Vec<bool> = cycle.iter().copied().cycle().take(115).collect();
    let got = feed(&mut p, &t, 0, &outcomes);
    let mut changes = got.clone();
    changes.dedup();
    assert!(changes.len() <= 5, "{changes:?}");
    assert_eq!(got.last(), Some(&State::Degraded));
    // Nine failures in ten while flapping: down, not held at degraded.
    let nine: Vec<bool> = (0..30).map(|i| i % 10 == 9).collect();
    let got = feed(&mut p, &t, 10_000, &nine);
    assert_eq!(got.last(), Some(&State::Down), "{got:?}");
}

#[test]
fn a_slow_degraded_probe_is_not_taken_for_flapping_and_goes_down_at_the_threshold() {
    // Review 4, finding 2: the lower flapping threshold applied to any
    // degraded probe, so a slow one with scattered failures needed 10
    // failures in a row for down.
    let mut t = thresholds();
    t.degraded_after = Some(Duration::from_secs(1));
    let mut p = ProbeState::new(at(0), t.default_interval);
    let slow = |s, ok| Check {
        duration: Some(Duration::from_secs(2)),
        ..check("eu", s, ok)
    };
    for (i, ok) in [true, true, true, false, true, true, false, true, true, true]
        .into_iter()
        .enumerate()
    {
        p.observe(&slow(i as i64 * 60, ok), &t);
    }
    assert_eq!((p.health, p.flapping), (State::Degraded, false));
    for i in 10..13 {
        p.observe(&slow(i * 60, false), &t);
    }
    assert_eq!(p.health, State::Down, "at the third failure");
}
