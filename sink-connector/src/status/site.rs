//! A site: its status row, its probes, and the two ways it moves — a
//! record ([`Site::apply`]) and the sweep ([`Site::sweep`]).
//!
//! The site's clock: every step evaluates the site at `max(the step's time,
//! the site's evaluated_at)`, so a record that is late for the site (but new
//! for its probe) moves its probe's counters without taking the site back in
//! time (out of a maintenance window it has entered, say).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::machine::{Check, Observed, ProbeState};
use super::maintenance::Windows;
use super::policy::Thresholds;
use super::transition::{evaluate, Position, Transition};
use super::State;

/// One row of `<table>_status`.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteStatus {
    /// The site (`<table>.id`).
    pub site_id: i64,
    /// The site's state.
    pub state: State,
    /// When it entered that state (the first record's time for a new site).
    pub since: DateTime<Utc>,
    /// When the site's state or a probe's state (so the counts below) last changed.
    pub last_change: DateTime<Utc>,
    /// The site's clock: the latest time it was evaluated at.
    pub evaluated_at: DateTime<Utc>,
    /// Voting probes saying up.
    pub probes_up: u32,
    /// Voting probes saying degraded.
    pub probes_degraded: u32,
    /// Voting probes saying down.
    pub probes_down: u32,
    /// Probes not voting (unknown).
    pub probes_unknown: u32,
    /// The number of the site's latest transition (0: none yet).
    pub seq: i64,
}

/// What a sweep did.
#[derive(Debug, Clone, PartialEq)]
pub enum Swept {
    /// Nothing was due: the site is unchanged (nothing to write back).
    Idle,
    /// Probes went silent or a window began or ended: write the site back,
    /// and the transition if there is one.
    Changed(Option<Transition>),
}

/// A site with all its probes (the writer loads every probe row of the
/// site, not only the probes of the batch: they all vote).
#[derive(Debug, Clone, PartialEq)]
pub struct Site {
    /// The status row.
    pub status: SiteStatus,
    /// The probe rows, by probe name (`""` for records without a probe).
    pub probes: BTreeMap<String, ProbeState>,
    /// Records [`Site::apply`] found late for their probe (not stored; for
    /// the metrics).
    pub late: u64,
}

impl Site {
    /// A site without a status row yet, first seen at `at`: unknown, no probes.
    pub fn new(site_id: i64, at: DateTime<Utc>) -> Site {
        Site {
            status: SiteStatus {
                site_id,
                state: State::Unknown,
                since: at,
                last_change: at,
                evaluated_at: at,
                probes_up: 0,
                probes_degraded: 0,
                probes_down: 0,
                probes_unknown: 0,
                seq: 0,
            },
            probes: BTreeMap::new(),
            late: 0,
        }
    }

    /// Feeds one record of the site (records in `checked_at` order); the
    /// site's transition, if the record caused one. `windows`: the site's
    /// maintenance windows.
    pub fn apply(
        &mut self,
        check: &Check<'_>,
        t: &Thresholds,
        windows: &Windows<'_>,
    ) -> Option<Transition> {
        let late = self
            .probes
            .get(check.probe)
            .is_some_and(|p| p.is_late(check));
        if late {
            self.late += 1;
            return None;
        }
        let clock = check.checked_at.max(self.status.evaluated_at);
        // A window begun or ended by this time takes effect before the
        // record counts: a failure after a window counts after it.
        let covered = windows.covering(clock).is_some();
        let mut moved = false;
        for p in self.probes.values_mut() {
            moved |= p.in_maintenance != covered;
            p.set_maintenance(covered, clock, t);
        }
        let probe = self
            .probes
            .entry(check.probe.to_owned())
            .or_insert_with(|| ProbeState::new(check.checked_at, t.default_interval));
        let observed = probe.observe(check, t);
        // Heard when the sink read it (or on the site's clock, if later),
        // whatever the probe's own clock says.
        probe.heard_at = Some(check.received_at.map_or(clock, |r| r.max(clock)));
        moved |= matches!(observed, Observed::Changed { .. });
        self.settle(clock, t, windows, check.position, moved)
    }

    /// The periodic sweep at `now`: probes silent too long become unknown,
    /// windows that began or ended take effect, and the site is evaluated
    /// again. [`Swept::Idle`] (nothing touched) when nothing was due.
    pub fn sweep(&mut self, now: DateTime<Utc>, t: &Thresholds, windows: &Windows<'_>) -> Swept {
        // A clock pushed ahead (rows of an older sink) is not followed
        // further than the skew a record may have.
        let ahead = now + super::machine::FUTURE_SKEW;
        let clock = now.max(self.status.evaluated_at.min(ahead));
        let silent = self
            .probes
            .values()
            .any(|p| p.silent_at(t).is_some_and(|at| at <= clock));
        let covered = windows.covering(clock).is_some();
        if !silent && covered == (self.status.state == State::Maintenance) {
            return Swept::Idle;
        }
        Swept::Changed(self.settle(clock, t, windows, None, false))
    }

    /// When a sweep must look at the site again if no record comes: the
    /// first probe to fall silent, or the next start or end of a window.
    /// The writer stores it (`wake_at`) so the sweep selects only due sites.
    pub fn wake_at(&self, t: &Thresholds, windows: &Windows<'_>) -> Option<DateTime<Utc>> {
        let silent = self.probes.values().filter_map(|p| p.silent_at(t)).min();
        let window = windows.next_boundary(self.status.evaluated_at);
        silent.into_iter().chain(window).min()
    }

    /// Evaluates the site at `clock`: silent probes, windows, quorum; the
    /// transition if its state changed (caused by the record at `position`).
    /// `moved`: a probe's health has just changed.
    fn settle(
        &mut self,
        clock: DateTime<Utc>,
        t: &Thresholds,
        windows: &Windows<'_>,
        position: Option<Position>,
        moved: bool,
    ) -> Option<Transition> {
        self.status.evaluated_at = clock;
        let window = windows.covering(clock);
        let before: Vec<State> = self.probes.values().map(ProbeState::state).collect();
        for p in self.probes.values_mut() {
            if let Some(at) = p.silent_at(t).filter(|at| *at <= clock) {
                p.go_silent(at);
            }
            p.set_maintenance(window.is_some(), clock, t);
        }
        let after: Vec<State> = self.probes.values().map(ProbeState::state).collect();
        self.count_probes();
        let (to, reason) = evaluate(&self.probes, t, window.as_ref());
        if moved || before != after {
            self.status.last_change = clock;
        }
        if to == self.status.state {
            return None;
        }
        let from = self.status.state;
        self.status.seq += 1;
        self.status.state = to;
        self.status.since = clock;
        self.status.last_change = clock;
        Some(Transition {
            site_id: self.status.site_id,
            seq: self.status.seq,
            from,
            to,
            at: clock,
            reason,
            probes: self.views(),
            position,
        })
    }

    /// Every probe's shown state.
    pub fn views(&self) -> BTreeMap<String, State> {
        self.probes
            .iter()
            .map(|(name, p)| (name.clone(), p.state()))
            .collect()
    }

    fn count_probes(&mut self) {
        let count = |s: State| self.probes.values().filter(|p| p.health == s).count() as u32;
        self.status.probes_up = count(State::Up);
        self.status.probes_degraded = count(State::Degraded);
        self.status.probes_down = count(State::Down);
        self.status.probes_unknown = count(State::Unknown);
    }
}
