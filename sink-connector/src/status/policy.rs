//! The status policy, parsed once from `[sink.status]`: thresholds per url
//! (defaults and rules, regexes compiled) and the recurring maintenance
//! windows (zones resolved).

use std::time::Duration;

use regex::Regex;

use super::maintenance::RecurringWindow;
use super::settings::{StatusConfig, StatusRuleConfig};

/// Smallest and largest threshold (`failure_threshold`, `success_threshold`,
/// `unknown_after`, `min_probes_down`).
pub const THRESHOLD_RANGE: (u32, u32) = (1, 1000);

/// Shortest and longest `default_interval` (the source's bounds on `interval`).
pub const INTERVAL_RANGE: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(86_400));

/// Shortest and longest `degraded_after`.
pub const DEGRADED_RANGE: (Duration, Duration) =
    (Duration::from_millis(1), Duration::from_secs(3600));

/// Longest regex (`urls`) accepted, in bytes.
pub const MAX_PATTERN_BYTES: usize = 64 * 1024;

/// A problem with one key of `[sink.status]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct PolicyError {
    /// The key, relative to `[sink.status]` (`rules[0].urls`).
    pub key: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl PolicyError {
    /// A problem with `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// The thresholds that apply to one site.
#[derive(Debug, Clone, PartialEq)]
pub struct Thresholds {
    /// Consecutive failures before a probe says down.
    pub failure_threshold: u32,
    /// Consecutive successes before a probe says up (again).
    pub success_threshold: u32,
    /// A success slower than this is slow; `None`: no degraded state.
    pub degraded_after: Option<Duration>,
    /// Intervals of silence before a probe is unknown.
    pub unknown_after: u32,
    /// The interval assumed for a record without one.
    pub default_interval: Duration,
    /// A record's interval is taken as at least this.
    pub min_interval: Duration,
    /// A record's interval is taken as at most this.
    pub max_interval: Duration,
    /// Outcomes a probe is judged flapping over (0: never).
    pub flap_window: u32,
    /// Share of failures among them that makes a probe flapping.
    pub flap_threshold: f64,
    /// Down probes needed for a down (or degraded) site.
    pub min_probes_down: u32,
    /// Fraction of the voting probes also needed; `None`: not required.
    pub probes_down_fraction: Option<f64>,
}

impl Thresholds {
    /// The `[sink.status]` keys themselves (no rule applied).
    pub fn defaults_of(cfg: &StatusConfig) -> Thresholds {
        Thresholds {
            failure_threshold: cfg.failure_threshold,
            success_threshold: cfg.success_threshold,
            degraded_after: cfg.degraded_after,
            unknown_after: cfg.unknown_after,
            default_interval: cfg.default_interval,
            min_interval: cfg.min_interval,
            max_interval: cfg.max_interval,
            flap_window: cfg.flap_window,
            flap_threshold: cfg.flap_threshold,
            min_probes_down: cfg.min_probes_down,
            probes_down_fraction: cfg.probes_down_fraction,
        }
    }

    /// Whether `unhappy` probes out of `voting` meet the quorum:
    /// `min_probes_down` capped by the voting probes (a site seen by one
    /// probe, or whose other probes are silent, can still be down), and
    /// `probes_down_fraction` of them.
    pub fn quorum(&self, unhappy: usize, voting: usize) -> bool {
        let need = u64::from(self.min_probes_down).min(voting as u64);
        let enough = unhappy > 0 && unhappy as u64 >= need;
        let share = self
            .probes_down_fraction
            .is_none_or(|f| unhappy as f64 >= f * voting as f64);
        enough && share
    }

    /// The interval a probe is judged by: the record's `interval` (seconds)
    /// within `min_interval`..=`max_interval`; `default_interval` for a
    /// record without one, or with 0, a negative value or not a number.
    pub fn interval_of(&self, claimed: Option<f64>) -> Duration {
        match claimed.filter(|s| s.is_finite() && *s > 0.0) {
            None => self.default_interval,
            Some(s) => Duration::try_from_secs_f64(s)
                .unwrap_or(self.max_interval)
                .clamp(self.min_interval, self.min_interval.max(self.max_interval)),
        }
    }

    /// The interval a probe is judged by after a check that took `took`:
    /// [`Self::interval_of`] the record's `interval`, or the check's
    /// duration when longer (at most `max_interval`) — the source never runs
    /// two checks of a site at once, so a site whose checks time out after
    /// 5 s reports every 5 s or so whatever its interval, and is not silent.
    pub fn cadence_of(&self, claimed: Option<f64>, took: Option<Duration>) -> Duration {
        let took = took.unwrap_or_default().min(self.max_interval);
        self.interval_of(claimed).max(took)
    }

    /// How long a probe checked every `interval` may stay silent before it
    /// is unknown.
    pub fn silence(&self, interval: Duration) -> Duration {
        interval.saturating_mul(self.unknown_after)
    }
}

/// The whole policy: defaults, rules in file order, recurring windows.
#[derive(Debug, Clone)]
pub struct Policy {
    defaults: Thresholds,
    rules: Vec<(Regex, Thresholds)>,
    recurring: Vec<RecurringWindow>,
    per_site_gauge: bool,
}

impl Policy {
    /// Parses `[sink.status]`: every problem found, each under its key.
    pub fn from_config(cfg: &StatusConfig) -> Result<Policy, Vec<PolicyError>> {
        let mut out = Vec::new();
        let defaults = Thresholds::defaults_of(cfg);
        check_thresholds(&defaults, "", &mut out);
        // A rule's own values are checked over known-good defaults, so a bad
        // default is reported once, under its own key.
        let good = Thresholds::defaults_of(&StatusConfig::default());
        let mut rules = Vec::new();
        for (i, rule) in cfg.rules.iter().enumerate() {
            let prefix = format!("rules[{i}].");
            check_thresholds(&merge(&good, rule), &prefix, &mut out);
            let merged = merge(&defaults, rule);
            if let Some(re) = compile(&rule.urls, &format!("{prefix}urls"), &mut out) {
                rules.push((re, merged));
            }
        }
        let mut recurring = Vec::new();
        for (i, w) in cfg.maintenance.iter().enumerate() {
            match RecurringWindow::from_config(w, i) {
                Ok(w) => recurring.push(w),
                Err(mut e) => out.append(&mut e),
            }
        }
        if out.is_empty() {
            Ok(Policy {
                defaults,
                rules,
                recurring,
                per_site_gauge: cfg.per_site_gauge,
            })
        } else {
            Err(out)
        }
    }

    /// Whether `/metrics` shows every site's state (`per_site_gauge`).
    pub fn per_site_gauge(&self) -> bool {
        self.per_site_gauge
    }

    /// The thresholds for the site at `url`: the first matching rule's, or
    /// the defaults. Look it up once per site and batch (a regex search per rule).
    pub fn for_url(&self, url: &str) -> &Thresholds {
        self.rules
            .iter()
            .find(|(re, _)| re.is_match(url))
            .map_or(&self.defaults, |(_, t)| t)
    }

    /// What an operator should know about this policy, for the log at start:
    /// `min_probes_down` above 1 (default or a rule's) is capped by the
    /// probes voting for a site, so a site seen by fewer probes is judged by
    /// those it has (one probe's word when only one votes).
    pub fn warnings(&self) -> Vec<String> {
        let rules = self
            .rules
            .iter()
            .enumerate()
            .map(|(i, (_, t))| (format!("rules[{i}]."), t));
        std::iter::once((String::new(), &self.defaults))
            .chain(rules)
            .filter(|(_, t)| t.min_probes_down > 1)
            .map(|(prefix, t)| {
                format!(
                    "[sink.status] {prefix}min_probes_down = {n}: a site is down when {n} of its voting probes say so, or all of them when fewer than {n} vote (a site checked from one location, or whose other probes are silent, is down on one probe's word); see docs/status.md",
                    n = t.min_probes_down
                )
            })
            .collect()
    }

    /// The recurring maintenance windows, in file order.
    pub fn recurring(&self) -> &[RecurringWindow] {
        &self.recurring
    }
}

/// The defaults with the keys `rule` gives replaced.
fn merge(d: &Thresholds, rule: &StatusRuleConfig) -> Thresholds {
    Thresholds {
        failure_threshold: rule.failure_threshold.unwrap_or(d.failure_threshold),
        success_threshold: rule.success_threshold.unwrap_or(d.success_threshold),
        degraded_after: rule.degraded_after.or(d.degraded_after),
        unknown_after: rule.unknown_after.unwrap_or(d.unknown_after),
        default_interval: rule.default_interval.unwrap_or(d.default_interval),
        min_interval: rule.min_interval.unwrap_or(d.min_interval),
        max_interval: rule.max_interval.unwrap_or(d.max_interval),
        flap_window: rule.flap_window.unwrap_or(d.flap_window),
        flap_threshold: rule.flap_threshold.unwrap_or(d.flap_threshold),
        min_probes_down: rule.min_probes_down.unwrap_or(d.min_probes_down),
        probes_down_fraction: rule.probes_down_fraction.or(d.probes_down_fraction),
    }
}

/// Compiles `pattern` (the value of `key`), or notes why not.
pub(super) fn compile(pattern: &str, key: &str, out: &mut Vec<PolicyError>) -> Option<Regex> {
    if pattern.len() > MAX_PATTERN_BYTES {
        out.push(PolicyError::new(
            key,
            format!(
                "is {} bytes; at most {MAX_PATTERN_BYTES} are allowed",
                pattern.len()
            ),
        ));
        return None;
    }
    match Regex::new(pattern) {
        Ok(re) => Some(re),
        Err(e) => {
            out.push(PolicyError::new(
                key,
                format!("is not a regular expression ({e}); write one in Rust `regex` syntax, e.g. \"^https://shop\\\\.example\\\\.com/\""),
            ));
            None
        }
    }
}

/// Range checks of one set of thresholds; `prefix` is `""` or `rules[i].`.
fn check_thresholds(t: &Thresholds, prefix: &str, out: &mut Vec<PolicyError>) {
    let (lo, hi) = THRESHOLD_RANGE;
    for (name, value) in [
        ("failure_threshold", t.failure_threshold),
        ("success_threshold", t.success_threshold),
        ("unknown_after", t.unknown_after),
        ("min_probes_down", t.min_probes_down),
    ] {
        if !(lo..=hi).contains(&value) {
            out.push(PolicyError::new(
                format!("{prefix}{name}"),
                format!("{value} is out of range; give {lo} to {hi}"),
            ));
        }
    }
    let show = |d: Duration| humantime::format_duration(d).to_string();
    if let Some(d) = t.degraded_after {
        let (lo, hi) = DEGRADED_RANGE;
        if !(lo..=hi).contains(&d) {
            out.push(PolicyError::new(
                format!("{prefix}degraded_after"),
                format!("{} is out of range; give {} to {} (e.g. \"2s\"), or leave it out for no degraded state", show(d), show(lo), show(hi)),
            ));
        }
    }
    let (lo, hi) = INTERVAL_RANGE;
    for (name, d, example) in [
        ("default_interval", t.default_interval, "60s"),
        ("min_interval", t.min_interval, "1s"),
        ("max_interval", t.max_interval, "1h"),
    ] {
        if !(lo..=hi).contains(&d) {
            out.push(PolicyError::new(
                format!("{prefix}{name}"),
                format!(
                    "{} is out of range; give {} to {} (e.g. \"{example}\")",
                    show(d),
                    show(lo),
                    show(hi)
                ),
            ));
        }
    }
    if t.min_interval > t.max_interval {
        out.push(PolicyError::new(
            format!("{prefix}min_interval"),
            format!(
                "{} is above max_interval ({}); give at most that",
                show(t.min_interval),
                show(t.max_interval)
            ),
        ));
    }
    if t.flap_window > 64 {
        out.push(PolicyError::new(
            format!("{prefix}flap_window"),
            format!(
                "{} is out of range; give 0 (no flapping) to 64 checks (e.g. 20)",
                t.flap_window
            ),
        ));
    }
    if !(t.flap_threshold > 0.0 && t.flap_threshold <= 1.0) {
        out.push(PolicyError::new(
            format!("{prefix}flap_threshold"),
            format!("{} is out of range; give a share of failures greater than 0 and at most 1 (e.g. 0.5)", t.flap_threshold),
        ));
    }
    if let Some(f) = t.probes_down_fraction {
        if !(f > 0.0 && f <= 1.0) {
            out.push(PolicyError::new(
                format!("{prefix}probes_down_fraction"),
                format!("{f} is out of range; give a fraction greater than 0 and at most 1 (e.g. 0.5 for half the voting probes), or leave it out"),
            ));
        }
    }
}
