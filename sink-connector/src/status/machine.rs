//! One probe's view of one site: a state machine over its checks.
//!
//! - `failure_threshold` consecutive failures → `down` (from any state;
//!   while flapping, see below).
//! - `success_threshold` consecutive successes → `up` from `down` or
//!   `unknown` (`degraded` if the last of them was slow).
//! - `failure_threshold` consecutive slow successes → `degraded` from `up`;
//!   `success_threshold` consecutive fast successes → `up` from `degraded`.
//! - A new probe, and a probe back from silence, starts `unknown` with its
//!   counters at zero: it votes once a threshold is met (or once it is
//!   flapping).
//! - **Flapping**: the probe keeps its last outcomes (up to 64, a bitmask).
//!   It is flapping when its last `flap_window` checks (at least half of
//!   them seen) hold at least `flap_threshold` of failures *and* the
//!   outcome changed at least three times among them — a steady outage,
//!   or one outage between successes, is not flapping. A flapping probe that
//!   would say `up` or `unknown` says `degraded` (reason "flapping"), and
//!   one reaching `failure_threshold` says `degraded` too, until its
//!   failures run for half the window or make most of it (then `down`):
//!   the thresholds alone would let a site failing three checks of five go
//!   up and down on every cycle (an alert storm). A `degraded` probe stays
//!   flapping down to half of `flap_threshold` (hysteresis).
//! - A check not newer than the probe's last one (`checked_at` ≤ the last
//!   seen) is late: it moves nothing (the history still stores it).
//! - Silence counts from when the sink last heard from the probe
//!   ([`ProbeState::heard_at`]), not from the probe's clock: a probe whose
//!   clock is behind the others' or the sink's still votes.
//! - Checks inside a maintenance window count as usual (only the state
//!   shown is `maintenance`). Leaving the window
//!   ([`ProbeState::set_maintenance`]): a probe whose latest
//!   `success_threshold` checks succeeded is up; one still failing is `down`
//!   at once if it was down when the window began (the same outage, no
//!   detour through `unknown`), else `unknown` until `failure_threshold`
//!   failures after the window (work that overran gets its grace).
//! - A check dated ahead of the sink's clock by more than [`FUTURE_SKEW`] is
//!   taken as checked at the sink's clock ([`effective_time`]), so one bad
//!   clock cannot push a probe's or a site's time into the future.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::policy::Thresholds;
use super::transition::Position;
use super::State;

/// How far ahead of the sink's wall clock a record's `checked_at` may be and
/// still count at its own time (clock skew between the probes' hosts and the
/// sink's). Further ahead, the state machine takes it as checked at the
/// sink's clock; the history keeps its own `checked_at`.
pub const FUTURE_SKEW: TimeDelta = TimeDelta::seconds(2);

/// How much of its previous cadence a probe keeps at each check: a check
/// slower than the interval sets the cadence, which then fades by this
/// factor a check, so a site whose checks are only sometimes slow is not
/// taken for silent between them.
const CADENCE_MEMORY: f64 = 0.8;

/// The time the state machine takes a check at: its `checked_at`, or `now`
/// (the sink's wall clock) when that is more than [`FUTURE_SKEW`] ahead.
pub fn effective_time(checked_at: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
    if checked_at > now + FUTURE_SKEW {
        now
    } else {
        checked_at
    }
}

/// What the state machine takes from one record.
#[derive(Debug, Clone, PartialEq)]
pub struct Check<'a> {
    /// The record's `probe` (`""` for a record without one).
    pub probe: &'a str,
    /// The record's `checked_at`.
    pub checked_at: DateTime<Utc>,
    /// The record's `ok` (the writer skips records without `ok` or `checked_at`).
    pub ok: bool,
    /// The record's `duration`, for `degraded_after`.
    pub duration: Option<Duration>,
    /// The record's `interval`, seconds as written (judged by
    /// [`Thresholds::interval_of`]); `None`: none given.
    pub interval: Option<f64>,
    /// The record's `error.kind`, for reasons.
    pub error_kind: Option<&'a str>,
    /// The record's Kafka position, named by the transition it causes.
    pub position: Option<Position>,
    /// When the sink read the record (its wall clock); `None`: the site's
    /// clock stands in.
    pub received_at: Option<DateTime<Utc>>,
    /// The `checked_at` as written, when it was ahead of the sink's clock
    /// beyond [`FUTURE_SKEW`] (then `checked_at` is the sink's clock): a
    /// repeat of it is late.
    pub written_ahead: Option<DateTime<Utc>>,
}

/// What [`ProbeState::observe`] did with a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// Not newer than the last check seen: nothing moved.
    Late,
    /// Counters moved; the probe's health is the same.
    Same,
    /// The probe's health changed.
    Changed {
        /// Health before.
        from: State,
        /// Health after.
        to: State,
    },
}

/// One row of `<table>_probe_state`.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeState {
    /// What the checks say: `up`, `degraded`, `down` or `unknown` (never
    /// `maintenance`: that is [`Self::in_maintenance`], and it comes back to
    /// this health when the window ends).
    pub health: State,
    /// A maintenance window covers the site now.
    pub in_maintenance: bool,
    /// When [`Self::state`] last changed.
    pub since: DateTime<Utc>,
    /// Consecutive failures.
    pub fails: u32,
    /// Consecutive successes (slow or not).
    pub oks: u32,
    /// Consecutive slow successes.
    pub slows: u32,
    /// Consecutive fast successes.
    pub fasts: u32,
    /// `checked_at` of the newest check seen (late ones do not count).
    pub last_checked_at: Option<DateTime<Utc>>,
    /// The probe's check interval, from its newest record (or the default),
    /// or that check's duration when longer ([`Thresholds::cadence_of`]).
    pub interval: Duration,
    /// `error.kind` of the newest failure while failing, for reasons.
    pub last_error: Option<String>,
    /// The latest outcomes, newest in bit 0: a 1 is a failure.
    pub recent: u64,
    /// How many outcomes `recent` holds (at most 64).
    pub recent_n: u32,
    /// When the probe was last heard from: when the sink read its newest
    /// check, or the site's clock then if later (at least that check's
    /// `checked_at`). Silence counts from here, so a probe whose clock lags
    /// the others' or the sink's is not taken for silent. `None` (rows from
    /// before migration 14): `last_checked_at`.
    pub heard_at: Option<DateTime<Utc>>,
    /// The probe said `down` when the current maintenance window began.
    pub down_before_window: bool,
    /// The probe was flapping at its last check (it stays flapping down to
    /// half of `flap_threshold`).
    pub flapping: bool,
    /// The newest `checked_at` as written of its checks dated ahead of the
    /// sink ([`Check::written_ahead`]): a check dated ahead and not after it
    /// is a repeat, late.
    pub ahead_written_at: Option<DateTime<Utc>>,
}

impl ProbeState {
    /// A probe never seen before, first seen at `at`: unknown.
    pub fn new(at: DateTime<Utc>, interval: Duration) -> ProbeState {
        ProbeState {
            health: State::Unknown,
            in_maintenance: false,
            since: at,
            fails: 0,
            oks: 0,
            slows: 0,
            fasts: 0,
            last_checked_at: None,
            interval,
            last_error: None,
            recent: 0,
            recent_n: 0,
            heard_at: None,
            down_before_window: false,
            flapping: false,
            ahead_written_at: None,
        }
    }

    /// Failures among the latest `n` outcomes, and how many outcomes that
    /// is (fewer while the probe has fewer).
    pub fn recent_failures(&self, n: u32) -> (u32, u32) {
        let n = n.min(self.recent_n).min(64);
        let mask = if n >= 64 { u64::MAX } else { (1u64 << n) - 1 };
        ((self.recent & mask).count_ones(), n)
    }

    /// Whether the probe is flapping: among its last `flap_window` checks
    /// (at least half of them seen), at least `flap_threshold` failed and
    /// the outcome changed at least three times (more than one outage). A
    /// probe flapping at its last check stays flapping down to half the
    /// threshold (hysteresis: a share of failures hovering around the
    /// threshold does not flip it at every check).
    pub fn flapping(&self, t: &Thresholds) -> bool {
        if t.flap_window == 0 {
            return false;
        }
        let (failed, n) = self.recent_failures(t.flap_window);
        if n < t.flap_window.div_ceil(2).max(3) {
            return false;
        }
        let mask = if n >= 64 { u64::MAX } else { (1u64 << n) - 1 };
        let x = self.recent & mask;
        let changes = ((x ^ (x >> 1)) & (mask >> 1)).count_ones();
        let threshold = if self.flapping {
            t.flap_threshold / 2.0
        } else {
            t.flap_threshold
        };
        changes >= 3 && f64::from(failed) >= threshold * f64::from(n)
    }

    /// The share of failures among the last `flap_window` checks seen.
    fn failure_share(&self, t: &Thresholds) -> f64 {
        let (failed, n) = self.recent_failures(t.flap_window);
        if n == 0 {
            0.0
        } else {
            f64::from(failed) / f64::from(n)
        }
    }

    /// The state shown: `maintenance` while a window covers the site, else
    /// the health.
    pub fn state(&self) -> State {
        if self.in_maintenance {
            State::Maintenance
        } else {
            self.health
        }
    }

    /// Feeds one check (inside a maintenance window too: the checks count,
    /// only the state shown is `maintenance`).
    pub fn observe(&mut self, check: &Check<'_>, t: &Thresholds) -> Observed {
        if self.is_late(check) {
            return Observed::Late;
        }
        let cadence = t.cadence_of(check.interval, check.duration);
        self.interval = match self.last_checked_at {
            None => cadence,
            // A slow check is remembered for a few more, fading: the next
            // one may be slow again.
            Some(_) => cadence.max(self.interval.mul_f64(CADENCE_MEMORY)),
        };
        self.last_checked_at = Some(check.checked_at);
        if check.written_ahead.is_some() {
            self.ahead_written_at = check.written_ahead;
        }
        let slow = self.count(check, t);
        let flapping = self.flapping(t);
        let next = self.next_health(slow, flapping, t);
        self.flapping = flapping;
        if next == self.health {
            return Observed::Same;
        }
        let from = self.health;
        self.health = next;
        if !self.in_maintenance {
            self.since = check.checked_at;
        }
        Observed::Changed { from, to: next }
    }

    /// Moves the counters for `check`; whether it was a slow success.
    fn count(&mut self, check: &Check<'_>, t: &Thresholds) -> bool {
        self.recent = (self.recent << 1) | u64::from(!check.ok);
        self.recent_n = (self.recent_n + 1).min(64);
        if !check.ok {
            self.fails = self.fails.saturating_add(1);
            (self.oks, self.slows, self.fasts) = (0, 0, 0);
            self.last_error = Some(check.error_kind.unwrap_or("failed").to_owned());
            return false;
        }
        let slow = t
            .degraded_after
            .is_some_and(|d| check.duration.is_some_and(|took| took > d));
        self.fails = 0;
        self.last_error = None;
        self.oks = self.oks.saturating_add(1);
        if slow {
            self.slows = self.slows.saturating_add(1);
            self.fasts = 0;
        } else {
            self.fasts = self.fasts.saturating_add(1);
            self.slows = 0;
        }
        slow
    }

    /// Whether `check` is late: not newer than the probe's newest, or a
    /// repeat of a check dated ahead.
    pub fn is_late(&self, check: &Check<'_>) -> bool {
        let repeat = check
            .written_ahead
            .zip(self.ahead_written_at)
            .is_some_and(|(written, last)| written <= last);
        repeat
            || self
                .last_checked_at
                .is_some_and(|last| check.checked_at <= last)
    }

    /// The health the counters call for; `slow`: the newest check was a
    /// slow success; `flapping`: the probe is flapping with it.
    fn next_health(&self, slow: bool, flapping: bool, t: &Thresholds) -> State {
        let recovered = if slow { State::Degraded } else { State::Up };
        let streak = self.fails >= t.failure_threshold;
        // Flapping holds a failing streak at `degraded` until it runs for
        // half the window, or failures are most of the window (midway from
        // the threshold to all): the damping of an up-down-up-down storm,
        // which a site failing nine checks in ten is not.
        let held = streak
            && flapping
            && self.health != State::Down
            && self.fails < t.flap_window.div_ceil(2)
            && self.failure_share(t) < (1.0 + t.flap_threshold) / 2.0;
        let next = match self.health {
            _ if held => State::Degraded,
            _ if streak => State::Down,
            State::Down | State::Unknown if self.oks >= t.success_threshold => recovered,
            State::Unknown if flapping => State::Degraded,
            State::Up if self.slows >= t.failure_threshold => State::Degraded,
            State::Up if flapping => State::Degraded,
            State::Degraded if self.fasts >= t.success_threshold => State::Up,
            h => h,
        };
        // Flapping holds an `up` at `degraded` until the failures thin out.
        if next == State::Up && flapping {
            State::Degraded
        } else {
            next
        }
    }

    /// When the probe becomes unknown if no check comes; `None` when it
    /// already is.
    pub fn silent_at(&self, t: &Thresholds) -> Option<DateTime<Utc>> {
        if self.health == State::Unknown {
            return None;
        }
        let last = self.heard_at.max(self.last_checked_at)?;
        let silence = TimeDelta::from_std(t.silence(self.interval)).unwrap_or(TimeDelta::MAX);
        Some(
            last.checked_add_signed(silence)
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
        )
    }

    /// Silent since `at`: unknown, counters at zero (it votes again once a
    /// threshold is met).
    pub fn go_silent(&mut self, at: DateTime<Utc>) {
        self.health = State::Unknown;
        (self.fails, self.oks, self.slows, self.fasts) = (0, 0, 0, 0);
        (self.recent, self.recent_n, self.flapping) = (0, 0, false);
        self.last_error = None;
        if !self.in_maintenance {
            self.since = at;
        }
    }

    /// Enters or leaves maintenance at `at`. Leaving, the failures counted
    /// during the window are forgotten, except for a probe that was `down`
    /// when the window began and whose latest check still fails: it stays
    /// `down` (the same outage). Otherwise a probe saying `down` is up again
    /// (degraded if slow) when its latest `success_threshold` checks
    /// succeeded, else unknown until its thresholds are met — so a site
    /// that recovered during the window does not leave it to `down`, one
    /// lucky check is not a recovery, and work that overran gets
    /// `failure_threshold` checks of grace.
    pub fn set_maintenance(&mut self, on: bool, at: DateTime<Utc>, t: &Thresholds) {
        if self.in_maintenance == on {
            return;
        }
        self.in_maintenance = on;
        self.since = at;
        if on {
            self.down_before_window = self.health == State::Down;
            return;
        }
        let still_down = std::mem::take(&mut self.down_before_window) && self.oks == 0;
        if self.health == State::Down && still_down {
            return;
        }
        // Failures during the window do not make it flapping after it.
        (self.recent, self.recent_n, self.flapping) = (0, 0, false);
        if self.health == State::Down {
            self.health = match (self.oks >= t.success_threshold, self.slows) {
                (false, _) => State::Unknown,
                (true, 0) => State::Up,
                (true, _) => State::Degraded,
            };
        }
        self.fails = 0;
    }
}
