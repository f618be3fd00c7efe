//! A probe's flapping: judged over its latest outcomes, from `unknown`
//! too, held at `degraded` through a failing streak, with hysteresis.

use std::time::Duration;

use super::machine::{Check, ProbeState};
use super::tests_machine::{at, check, feed, thresholds};
use super::State;

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
