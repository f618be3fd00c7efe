//! Site status and incidents (issue 14): what each probe says about a site,
//! what the site is, and the transitions between site states — as plain
//! Rust, no I/O. The writer feeds it in
//! [`crate::postgres::status`] (see `docs/status.md`).
//!
//! # Flow
//!
//! ```text
//!  [sink.status] ──► policy::Policy (parsed once: regexes, zones)
//!                          │ for_url(url) → Thresholds
//!                          ▼
//!  batch records ──► Check ──► Site::apply ──► ProbeState::observe  (thresholds)
//!  (checked_at order)               │       ──► stale probes → unknown
//!                                   │       ──► Site::evaluate       (quorum, windows)
//!                                   ▼
//!                         Option<Transition> (site, from, to, at, reason, views, position)
//!
//!  sweep (writer 0, every few seconds) ──► Site::sweep(now) ──► Option<Transition>
//! ```
//!
//! The writer, inside its batch transaction, locks the status row of each
//! site of the batch and every probe row of those sites (site id order,
//! `FOR UPDATE`), builds a [`Site`] from them, feeds the batch's records in
//! `checked_at` order to [`Site::apply`], and writes back the site, its probes
//! and the transitions returned. Everything a step decides depends only on
//! the loaded rows, the record and the policy, so a replayed batch (after a
//! rollback or a kill -9) decides the same again, and its transitions carry the
//! same ids ([`Transition::id`]: site id and a per-site sequence number).
//!
//! - [`settings`]: the `[sink.status]` table as the file writes it.
//! - [`policy`]: thresholds per url (defaults and `[[sink.status.rules]]`).
//! - [`maintenance`]: recurring windows (weekdays, local start, zone) and
//!   ad-hoc ones (rows of `<table>_maintenance`).
//! - [`machine`]: one probe's state machine.
//! - [`site`]: a site's probes, the quorum, the site state, apply and sweep.
//! - [`transition`]: what a site transition carries, and its reason text.

pub mod machine;
pub mod maintenance;
pub mod policy;
pub mod settings;
pub mod site;
pub mod transition;

use std::fmt;
use std::str::FromStr;

pub use machine::{effective_time, Check, Observed, ProbeState, FUTURE_SKEW};
pub use maintenance::{AdHocError, AdHocWindow, Covering, RecurringWindow, Windows};
pub use policy::{Policy, PolicyError, Thresholds};
pub use site::{Site, SiteStatus, Swept};
pub use transition::{Position, Transition};

/// A state of a probe's view of a site, or of a site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    /// Responding within the thresholds.
    Up,
    /// Responding, but slower than `degraded_after`.
    Degraded,
    /// Failing (`failure_threshold` consecutive failures).
    Down,
    /// Nothing known: a new probe before its thresholds are met, a probe
    /// silent for `unknown_after` intervals, or a site without a voting probe.
    Unknown,
    /// A maintenance window covers the site.
    Maintenance,
}

impl State {
    /// Every state, in declaration order.
    pub const ALL: [State; 5] = [
        State::Up,
        State::Degraded,
        State::Down,
        State::Unknown,
        State::Maintenance,
    ];

    /// The name stored in the tables' `state` columns.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Up => "up",
            State::Degraded => "degraded",
            State::Down => "down",
            State::Unknown => "unknown",
            State::Maintenance => "maintenance",
        }
    }

    /// Whether a probe in this state votes on its site's state.
    pub fn votes(self) -> bool {
        matches!(self, State::Up | State::Degraded | State::Down)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state name that is none of the five.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a state (up, degraded, down, unknown, maintenance)")]
pub struct UnknownState(pub String);

impl FromStr for State {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        State::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_owned()))
    }
}

#[cfg(test)]
mod tests_flapping;
#[cfg(test)]
mod tests_machine;
#[cfg(test)]
mod tests_maintenance;
#[cfg(test)]
mod tests_site;
#[cfg(test)]
mod tests_timeline;
