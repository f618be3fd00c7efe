//! A site's change of state, as a row of `<table>_transition` (and, later,
//! a message of the transitions topic), and the reason texts.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use super::machine::ProbeState;
use super::maintenance::Covering;
use super::policy::Thresholds;
use super::State;

/// A record's place in Kafka.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

/// One change of a site's state.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// The site (`<table>.id`).
    pub site_id: i64,
    /// The site's transition number: 1 for its first, then 2, 3, ...
    /// (kept in the site's status row, written in the same transaction).
    pub seq: i64,
    /// State before.
    pub from: State,
    /// State after.
    pub to: State,
    /// The `checked_at` of the record that caused it, or the sweep's time.
    pub at: DateTime<Utc>,
    /// Why, for people: e.g. "2 of 3 voting probes down (eu: 3 consecutive
    /// failures, timeout; us: 4 consecutive failures, connect)".
    pub reason: String,
    /// Every probe of the site and its state after the change.
    pub probes: BTreeMap<String, State>,
    /// The Kafka position of the record that caused it; `None` for a sweep.
    pub position: Option<Position>,
}

impl Transition {
    /// A stable id: the same transition gets the same id however often its
    /// batch is replayed, so a downstream stage can de-duplicate on it.
    pub fn id(&self) -> String {
        format!("{}-{}", self.site_id, self.seq)
    }

    /// The probes' views as a JSON object (`{"eu": "down", ...}`), for the
    /// `probes jsonb` column.
    pub fn probes_json(&self) -> serde_json::Value {
        self.probes
            .iter()
            .map(|(name, st)| (name.clone(), serde_json::Value::from(st.as_str())))
            .collect::<serde_json::Map<_, _>>()
            .into()
    }
}

/// The site's state from its probes and windows, and why.
pub(super) fn evaluate(
    probes: &BTreeMap<String, ProbeState>,
    t: &Thresholds,
    window: Option<&Covering>,
) -> (State, String) {
    if let Some(w) = window {
        let reason = format!(
            "maintenance: {} from {} until {}",
            w.name,
            w.from.format("%Y-%m-%d %H:%M:%S UTC"),
            w.to.format("%Y-%m-%d %H:%M:%S UTC")
        );
        return (State::Maintenance, reason);
    }
    let count = |s: State| probes.values().filter(|p| p.health == s).count();
    let (up, degraded, down) = (count(State::Up), count(State::Degraded), count(State::Down));
    let voting = up + degraded + down;
    if t.quorum(down, voting) {
        let why = format!("{down} of {voting} voting probes down{}", capped(t, voting));
        return (State::Down, with_details(why, probes, &[State::Down], t));
    }
    if t.quorum(down + degraded, voting) {
        let why = format!(
            "{} of {voting} voting probes degraded or down{}",
            down + degraded,
            capped(t, voting)
        );
        let states = [State::Degraded, State::Down];
        return (State::Degraded, with_details(why, probes, &states, t));
    }
    if up > 0 {
        let mut why = format!("{up} of {voting} voting probes up");
        if down + degraded > 0 {
            let _ = write!(
                why,
                "; {} degraded or down, below the quorum",
                down + degraded
            );
        }
        return (State::Up, why);
    }
    // With the quorum capped by the voting probes, voting probes none of
    // which is up always meet it: only a site without one is left.
    debug_assert_eq!(voting, 0);
    let why = if probes.is_empty() {
        "no probe has reported".to_owned()
    } else {
        format!(
            "no voting probe: {} unknown (silent for {} intervals, or thresholds not met yet)",
            probes.len(),
            t.unknown_after
        )
    };
    (State::Unknown, why)
}

/// The note that the quorum was capped: fewer voting probes than
/// `min_probes_down`.
fn capped(t: &Thresholds, voting: usize) -> String {
    if (voting as u64) < u64::from(t.min_probes_down) {
        format!(
            ", min_probes_down {} capped to the {voting} voting",
            t.min_probes_down
        )
    } else {
        String::new()
    }
}

/// `why` followed by each probe in one of `states` and its streak.
fn with_details(
    mut why: String,
    probes: &BTreeMap<String, ProbeState>,
    states: &[State],
    t: &Thresholds,
) -> String {
    let mut first = true;
    for (name, p) in probes.iter().filter(|(_, p)| states.contains(&p.health)) {
        why.push_str(if first { " (" } else { "; " });
        first = false;
        let name = if name.is_empty() { "(no probe)" } else { name };
        match p.health {
            State::Down if p.fails > 0 => {
                let _ = write!(why, "{name}: {} consecutive failures", p.fails);
                if let Some(e) = &p.last_error {
                    let _ = write!(why, ", {e}");
                }
            }
            State::Down => {
                let need = t.success_threshold;
                let _ = write!(
                    why,
                    "{name}: down, {} of {need} successes to recover",
                    p.oks
                );
            }
            _ if p.flapping => {
                let (failed, n) = p.recent_failures(t.flap_window);
                let _ = write!(
                    why,
                    "{name}: flapping, {failed} of the last {n} checks failed"
                );
            }
            _ if p.slows > 0 => {
                let limit = t
                    .degraded_after
                    .map(|d| humantime::format_duration(d).to_string())
                    .unwrap_or_default();
                let _ = write!(why, "{name}: {} responses slower than {limit}", p.slows);
            }
            _ => {
                let need = t.success_threshold;
                let _ = write!(
                    why,
                    "{name}: degraded, {} of {need} fast responses to recover",
                    p.fasts
                );
            }
        }
    }
    if !first {
        why.push(')');
    }
    why
}
