//! The `[sink.status]` table of `connector.toml`, as the file writes it; the
//! typed, compiled form is [`super::Policy`], built from it once at load.

use std::time::Duration;

use connector_common::config::Invalid;
use serde::{Deserialize, Serialize};

use super::policy::Policy;

/// Site status policy (`[sink.status]`): when a probe's view of a site
/// turns down, up, degraded or unknown, how many probes must agree before
/// the site is down, and when maintenance windows hold transitions back.
/// Read by every batch transaction and by writer 0's sweep; see
/// docs/status.md.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StatusConfig {
    /// Consecutive failed checks from one probe before that probe says the
    /// site is down. 1 to 1000.
    pub failure_threshold: u32,
    /// Consecutive successful checks from one probe before that probe says
    /// the site is up again (and, for a new or returning probe, before it
    /// votes at all). 1 to 1000.
    pub success_threshold: u32,
    /// A successful check slower than this counts as a success, but
    /// `failure_threshold` of them in a row make the probe say `degraded`
    /// (and `success_threshold` faster ones make it say `up` again). Unset:
    /// no degraded state. 1ms to 1 hour.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub degraded_after: Option<Duration>,
    /// A probe with no check for this many of the site's check intervals
    /// becomes `unknown` and stops voting (a probe that stopped is not a site
    /// that is down). 1 to 1000.
    pub unknown_after: u32,
    /// The check interval assumed for a record without an `interval` field
    /// (records of sources older than the status model). 100ms to 1 day.
    #[serde(with = "humantime_serde")]
    pub default_interval: Duration,
    /// A record's `interval` shorter than this counts as this long (an
    /// `interval` of 0 or less, or not a number, counts as missing:
    /// `default_interval`), so a wrong claim cannot make a probe silent
    /// between its checks. 100ms to 1 day, at most `max_interval`.
    #[serde(with = "humantime_serde")]
    pub min_interval: Duration,
    /// A record's `interval` longer than this counts as this long, so a
    /// wrong claim cannot hide a stopped probe for days (it is `unknown`
    /// after at most `unknown_after` × this). Raise it (in a rule) for
    /// sites checked less often. 100ms to 1 day.
    #[serde(with = "humantime_serde")]
    pub max_interval: Duration,
    /// A probe's last this many checks are judged for flapping (once half
    /// of them are seen): when at least `flap_threshold` of them failed and
    /// the outcome changed at least three times, a probe that would say
    /// `up` or `unknown` says `degraded`, reason "flapping" — so a site
    /// failing often, but never `failure_threshold` times in a row, is not
    /// shown as fine — and one reaching `failure_threshold` says `degraded`
    /// until its failures run for half the window (no up-down alert storm).
    /// 0 (no flapping) to 64.
    pub flap_window: u32,
    /// The share of failures among the last `flap_window` checks that makes
    /// a probe flapping. Greater than 0, at most 1.
    pub flap_threshold: f64,
    /// Probes that must say `down` before the site is down, capped by the
    /// probes voting for the site (`unknown` ones do not vote): a site with
    /// fewer voting probes is down when all of them say so. Above 1, the
    /// sink warns at start. 1 to 1000.
    pub min_probes_down: u32,
    /// Also required for down: at least this fraction of the voting probes
    /// say `down` (e.g. 0.5: half of them). Greater than 0, at most 1. Unset:
    /// only `min_probes_down` counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probes_down_fraction: Option<f64>,
    /// Overrides of the keys above for the sites whose url matches; the first
    /// matching rule wins.
    pub rules: Vec<StatusRuleConfig>,
    /// Recurring maintenance windows: during one, a site's state is
    /// `maintenance` and its checks cause no transition; leaving it, `down`
    /// takes `failure_threshold` failures after it.
    pub maintenance: Vec<MaintenanceConfig>,
    /// Kafka topic (on the `[kafka]` brokers) to produce every committed
    /// transition to, as JSON keyed by site id, a few seconds after its
    /// commit; at least once, each with a stable `id` to de-duplicate on.
    /// The topic must exist. Unset: no topic (the transitions table only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transitions_topic: Option<String>,
    /// Show every site's state in `/metrics`
    /// (`website_monitor_site_state{url, state}`: 1 for the state the site
    /// is in, 0 for the others), refreshed from the status table every 5
    /// seconds by writer 0, for the sites of the sink's own partitions.
    /// Off by default: one series per site and state, too many for very
    /// large site lists.
    pub per_site_gauge: bool,
}

impl Default for StatusConfig {
    /// The value of every key the file leaves out.
    fn default() -> Self {
        Self {
            failure_threshold: 3,
            success_threshold: 2,
            degraded_after: None,
            unknown_after: 3,
            default_interval: Duration::from_secs(60),
            min_interval: Duration::from_secs(1),
            max_interval: Duration::from_secs(3600),
            flap_window: 20,
            flap_threshold: 0.5,
            min_probes_down: 1,
            probes_down_fraction: None,
            rules: Vec::new(),
            maintenance: Vec::new(),
            transitions_topic: None,
            per_site_gauge: false,
        }
    }
}

/// One `[[sink.status.rules]]` entry: the keys of `[sink.status]` it gives
/// replace the defaults for the sites whose url matches `urls`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusRuleConfig {
    /// Regular expression (Rust `regex` syntax) searched in a site's url;
    /// anchor it (`^https://shop\.`) to match from the start. At most 64 KiB.
    pub urls: String,
    /// As `[sink.status]` `failure_threshold`, for the matching sites.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<u32>,
    /// As `[sink.status]` `success_threshold`, for the matching sites.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_threshold: Option<u32>,
    /// As `[sink.status]` `degraded_after`, for the matching sites.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub degraded_after: Option<Duration>,
    /// As `[sink.status]` `unknown_after`, for the matching sites.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unknown_after: Option<u32>,
    /// As `[sink.status]` `default_interval`, for the matching sites.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub default_interval: Option<Duration>,
    /// As `[sink.status]` `min_interval`, for the matching sites.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub min_interval: Option<Duration>,
    /// As `[sink.status]` `max_interval`, for the matching sites.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_interval: Option<Duration>,
    /// As `[sink.status]` `flap_window`, for the matching sites.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flap_window: Option<u32>,
    /// As `[sink.status]` `flap_threshold`, for the matching sites.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flap_threshold: Option<f64>,
    /// As `[sink.status]` `min_probes_down`, for the matching sites.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_probes_down: Option<u32>,
    /// As `[sink.status]` `probes_down_fraction`, for the matching sites.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probes_down_fraction: Option<f64>,
}

/// A day of the week, as `weekdays` writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DayOfWeek {
    /// Monday.
    Mon,
    /// Tuesday.
    Tue,
    /// Wednesday.
    Wed,
    /// Thursday.
    Thu,
    /// Friday.
    Fri,
    /// Saturday.
    Sat,
    /// Sunday.
    Sun,
}

impl DayOfWeek {
    /// The same day as chrono names it.
    pub fn to_chrono(self) -> chrono::Weekday {
        match self {
            DayOfWeek::Mon => chrono::Weekday::Mon,
            DayOfWeek::Tue => chrono::Weekday::Tue,
            DayOfWeek::Wed => chrono::Weekday::Wed,
            DayOfWeek::Thu => chrono::Weekday::Thu,
            DayOfWeek::Fri => chrono::Weekday::Fri,
            DayOfWeek::Sat => chrono::Weekday::Sat,
            DayOfWeek::Sun => chrono::Weekday::Sun,
        }
    }
}

/// One `[[sink.status.maintenance]]` entry: a window that recurs on the
/// given weekdays at a local time of a time zone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceConfig {
    /// A name shown in the transitions' reasons. Optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Regular expression (Rust `regex` syntax) searched in a site's url: the
    /// sites the window covers. At most 64 KiB.
    pub urls: String,
    /// The days (`"mon"` to `"sun"`, in the time zone) on which the window
    /// starts; empty or left out: every day.
    #[serde(default)]
    pub weekdays: Vec<DayOfWeek>,
    /// Local start time, `"HH:MM"` (24-hour clock) in `timezone`. On the day
    /// clocks go forward, a start inside the skipped hour is moved forward by
    /// the gap (02:30 becomes 03:30 in Europe/Berlin); on the day they go back,
    /// a start in the repeated hour is its first occurrence.
    pub start: String,
    /// How long the window lasts, as elapsed time (humantime, e.g. `"30m"`);
    /// more than zero, at most 7 days.
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    /// IANA time zone name of `start` and `weekdays`, e.g. `"Europe/Berlin"`;
    /// default `"UTC"`.
    #[serde(default = "default_timezone")]
    pub timezone: String,
}

fn default_timezone() -> String {
    "UTC".to_owned()
}

impl StatusConfig {
    /// Every problem of the table, each under its dotted key (`prefix` is
    /// the table's own, e.g. `sink.status`).
    pub fn validate(&self, prefix: &str) -> Vec<Invalid> {
        let mut out: Vec<Invalid> = match Policy::from_config(self) {
            Ok(_) => Vec::new(),
            Err(problems) => problems
                .into_iter()
                .map(|p| Invalid::new(format!("{prefix}.{}", p.key), p.message))
                .collect(),
        };
        if let Some(t) = &self.transitions_topic {
            if let Err(why) = check_topic_name(t) {
                out.push(Invalid::new(format!("{prefix}.transitions_topic"), why));
            }
        }
        out
    }
}

/// Kafka's rule for a topic name: 1 to 249 characters of `a-z A-Z 0-9 . _ -`,
/// not `.` or `..`; what is wrong and what to do otherwise.
pub fn check_topic_name(t: &str) -> Result<(), String> {
    let bad: String = t
        .chars()
        .filter(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        .collect();
    let why = if t.is_empty() {
        "is empty".to_owned()
    } else if t.chars().count() > 249 {
        format!(
            "is {} characters long; Kafka allows at most 249",
            t.chars().count()
        )
    } else if t == "." || t == ".." {
        format!("`{t}` is not a topic name Kafka accepts")
    } else if !bad.is_empty() {
        format!("has characters Kafka refuses in a topic name ({bad:?})")
    } else {
        return Ok(());
    };
    Err(format!(
        "{why}: give one topic name of 1 to 249 characters from `a-z A-Z 0-9 . _ -` (e.g. \"site-status-transitions\"), or leave it out for no topic"
    ))
}
