//! The source's Prometheus metrics: names, and the one place that records them.
//!
//! Served on `/metrics` by `connector_common::telemetry`. Per-site gauges carry
//! a `url` label and are off with `per_site_metrics = false`; the source
//! keeps and renders them itself ([`sites`]), so a reload can remove them.

mod sites;

pub use sites::{SiteGauges, SiteSeries};

use std::time::Duration;

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};

use crate::record::{ErrorKind, Record};

/// Counter: finished checks, labels `outcome` (`ok` / `fail`) and `error_kind`
/// (`none`, `dns`, `connect`, `tls`, `timeout`, `http`, `status`, `regex`, `body`).
pub const CHECKS_TOTAL: &str = "website_monitor_checks_total";
/// Histogram: wall time of a check, seconds.
pub const CHECK_DURATION_SECONDS: &str = "website_monitor_check_duration_seconds";
/// Histogram: actual start of a check minus its planned start, seconds.
pub const SCHEDULE_LATENESS_SECONDS: &str = "website_monitor_schedule_lateness_seconds";
/// Counter: ticks not run, label `reason`: `in_flight` (the site's previous
/// check still ran) or `behind` (the scheduler was more than an interval late).
pub const SKIPPED_TICKS_TOTAL: &str = "website_monitor_skipped_ticks_total";
/// Gauge: checks running now.
pub const CHECKS_IN_FLIGHT: &str = "website_monitor_checks_in_flight";
/// Counter: records the output acknowledged (Kafka, or stdout written).
pub const RECORDS_PRODUCED_TOTAL: &str = "website_monitor_records_produced_total";
/// Counter: records that could not be delivered.
pub const RECORDS_FAILED_TOTAL: &str = "website_monitor_records_failed_total";
/// Counter: the same records by label `reason`: `buffer_full` (the producer
/// buffer, `max_buffered_records`, was full while Kafka took nothing),
/// `delivery_timeout` (waited `delivery_timeout`), `shutdown` (still waiting
/// after `flush_timeout`), `error` (refused).
pub const RECORDS_DROPPED_TOTAL: &str = "website_monitor_records_dropped_total";
/// Gauge per `url`: 1 when the last check was ok, else 0.
pub const SITE_UP: &str = "website_monitor_site_up";
/// Gauge per `url`: duration of the last check, seconds.
pub const SITE_DURATION_SECONDS: &str = "website_monitor_site_duration_seconds";
/// Gauge per `url`: days until the certificate of the last https check expires.
pub const SITE_CERT_DAYS_LEFT: &str = "website_monitor_site_cert_days_left";
/// Gauge: sites this instance checks (after sharding).
pub const SITES: &str = "website_monitor_sites";
/// Gauge: 1 when the last reload of the configuration was applied (or none
/// was tried since start), 0 when it was refused.
pub const CONFIG_RELOAD_SUCCESS: &str = "website_monitor_config_reload_success";
/// Gauge: when the configuration running now was applied (start or the last
/// successful reload), Unix seconds.
pub const CONFIG_RELOAD_LAST_SUCCESS_TIMESTAMP_SECONDS: &str =
    "website_monitor_config_reload_last_success_timestamp_seconds";
/// Counter: reloads tried, label `result`: `success` or `failure`.
pub const CONFIG_RELOADS_TOTAL: &str = "website_monitor_config_reloads_total";
/// Counter: sites a reload changed, label `change`: `added`, `removed`,
/// `changed`.
pub const CONFIG_RELOAD_SITES_TOTAL: &str = "website_monitor_config_reload_sites_total";
/// Gauge: sites a source of sites from outside gives this instance, label
/// `source`: `topic` (`sites_topic`, its assigned partitions with
/// `sites_group`) or `http_sd`; before a url defined in the configuration
/// takes precedence, after `shard`.
pub const DISCOVERED_SITES: &str = "website_monitor_discovered_sites";
/// Counter: site definitions from outside that could not be used (bad key,
/// not JSON, a bad setting), each counted when it is new or its problem
/// changed, label `source`: `topic` or `http_sd`.
pub const DISCOVERED_SITE_ERRORS_TOTAL: &str = "website_monitor_discovered_site_errors_total";
/// Gauge: site definitions from outside refused now (not checked), label
/// `source`: `topic` or `http_sd`.
pub const DISCOVERED_SITES_REFUSED: &str = "website_monitor_discovered_sites_refused";
/// Gauge: partitions of `sites_topic` this instance reads (all of them,
/// or its share of them with `sites_group`).
pub const SITES_TOPIC_PARTITIONS: &str = "website_monitor_sites_topic_partitions";
/// Gauge: 1 when the brokers said at the last look (every 30 s) that
/// `sites_topic` exists and can be read, else 0.
pub const SITES_TOPIC_READABLE: &str = "website_monitor_sites_topic_readable";
/// Counter: errors reading `sites_topic` (a deleted topic, no right to read it).
pub const SITES_TOPIC_READ_ERRORS_TOTAL: &str = "website_monitor_sites_topic_read_errors_total";
/// Counter: rebalances of `sites_group` seen by this instance, label
/// `change`: `assigned` or `revoked`.
pub const SITES_TOPIC_REBALANCES_TOTAL: &str = "website_monitor_sites_topic_rebalances_total";
/// Counter: fetches of `http_sd_url`, label `result`: `success` or
/// `failure` (HTTP error, timeout, not http_sd JSON; the last good list
/// keeps running).
pub const HTTP_SD_REFRESHES_TOTAL: &str = "website_monitor_http_sd_refreshes_total";
/// Gauge: when `http_sd_url` last gave a list, Unix seconds (0: never).
pub const HTTP_SD_LAST_SUCCESS_TIMESTAMP_SECONDS: &str =
    "website_monitor_http_sd_last_success_timestamp_seconds";

/// Every error kind, in the order of [`CheckHandles::fail`].
const ERROR_KINDS: [ErrorKind; 8] = [
    ErrorKind::Dns,
    ErrorKind::Connect,
    ErrorKind::Tls,
    ErrorKind::Timeout,
    ErrorKind::Http,
    ErrorKind::Status,
    ErrorKind::Regex,
    ErrorKind::Body,
];

/// The handles every check touches, registered once (at start, after the
/// recorder is installed), so a check builds no metric key, hashes no labels
/// and looks nothing up in the registry.
#[derive(Clone)]
pub struct CheckHandles {
    ok: Counter,
    fail: [Counter; ERROR_KINDS.len()],
    duration: Histogram,
    lateness: Histogram,
    skipped_behind: Counter,
    skipped_in_flight: Counter,
}

impl CheckHandles {
    /// Registers the handles in the current recorder.
    pub fn register() -> Self {
        CheckHandles {
            ok: counter!(CHECKS_TOTAL, "outcome" => "ok", "error_kind" => "none"),
            fail: ERROR_KINDS
                .map(|k| counter!(CHECKS_TOTAL, "outcome" => "fail", "error_kind" => k.as_str())),
            duration: histogram!(CHECK_DURATION_SECONDS),
            lateness: histogram!(SCHEDULE_LATENESS_SECONDS),
            skipped_behind: counter!(SKIPPED_TICKS_TOTAL, "reason" => "behind"),
            skipped_in_flight: counter!(SKIPPED_TICKS_TOTAL, "reason" => "in_flight"),
        }
    }

    /// Records a finished check in the global metrics, and in the site's own
    /// gauges when `site` is given (`per_site_metrics`).
    pub fn check_finished(&self, record: &Record, site: Option<(&SiteGauges, &SiteSeries)>) {
        match &record.error {
            None => &self.ok,
            Some(e) => {
                &self.fail[ERROR_KINDS
                    .iter()
                    .position(|k| *k == e.kind)
                    .unwrap_or_default()]
            }
        }
        .increment(1);
        self.duration.record(record.duration);
        if let Some((gauges, series)) = site {
            gauges.record(record, series);
        }
    }

    /// Records how late a check started.
    pub fn lateness(&self, late: Duration) {
        self.lateness.record(late.as_secs_f64());
    }

    /// Counts `n` skipped ticks: `in_flight` (the site's previous check still
    /// runs) when `in_flight`, `behind` otherwise.
    pub fn skipped(&self, in_flight: bool, n: u64) {
        if in_flight {
            &self.skipped_in_flight
        } else {
            &self.skipped_behind
        }
        .increment(n);
    }
}

/// The [`CHECKS_IN_FLIGHT`] handle (register once, move per check).
pub fn in_flight() -> Gauge {
    gauge!(CHECKS_IN_FLIGHT)
}

/// The [`RECORDS_PRODUCED_TOTAL`] handle (register once, increment per record).
pub fn produced() -> Counter {
    counter!(RECORDS_PRODUCED_TOTAL)
}

/// The [`RECORDS_DROPPED_TOTAL`] handle of one `reason` (register once).
pub fn dropped(reason: &'static str) -> Counter {
    counter!(RECORDS_DROPPED_TOTAL, "reason" => reason)
}

/// The [`RECORDS_FAILED_TOTAL`] handle (register once, increment per record).
pub fn failed() -> Counter {
    counter!(RECORDS_FAILED_TOTAL)
}

/// Sets the number of sites.
pub fn sites(n: usize) {
    gauge!(SITES).set(n as f64);
}

/// Sets the number of sites `source` (`topic`, `http_sd`) gives.
pub fn discovered_sites(source: &'static str, n: usize) {
    gauge!(DISCOVERED_SITES, "source" => source).set(n as f64);
}

/// Counts `n` site definitions of `source` that could not be used.
pub fn discovered_site_errors(source: &'static str, n: u64) {
    counter!(DISCOVERED_SITE_ERRORS_TOTAL, "source" => source).increment(n);
}

/// Sets the number of definitions of `source` refused now.
pub fn discovered_sites_refused(source: &'static str, n: usize) {
    gauge!(DISCOVERED_SITES_REFUSED, "source" => source).set(n as f64);
}

/// Sets the number of `sites_topic` partitions read.
pub fn sites_topic_partitions(n: usize) {
    gauge!(SITES_TOPIC_PARTITIONS).set(n as f64);
}

/// Sets whether the brokers said at the last look that `sites_topic` can be read.
pub fn sites_topic_readable(ok: bool) {
    gauge!(SITES_TOPIC_READABLE).set(if ok { 1.0 } else { 0.0 });
}

/// Counts an error reading `sites_topic`.
pub fn sites_topic_read_error() {
    counter!(SITES_TOPIC_READ_ERRORS_TOTAL).increment(1);
}

/// Counts a rebalance of `sites_group`: `change` is `assigned` or `revoked`.
pub fn sites_topic_rebalance(change: &'static str) {
    counter!(SITES_TOPIC_REBALANCES_TOTAL, "change" => change).increment(1);
}

/// Shows both results of the fetches of `http_sd_url` from the start, at 0.
pub fn http_sd_started() {
    for result in ["success", "failure"] {
        counter!(HTTP_SD_REFRESHES_TOTAL, "result" => result).increment(0);
    }
}

/// Counts a fetch of `http_sd_url`; a success also sets the time of the last one.
pub fn http_sd_refresh(ok: bool) {
    let result = if ok { "success" } else { "failure" };
    counter!(HTTP_SD_REFRESHES_TOTAL, "result" => result).increment(1);
    if ok {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        gauge!(HTTP_SD_LAST_SUCCESS_TIMESTAMP_SECONDS).set(now.as_secs_f64());
    }
}

/// The reload metrics, registered once (at start: both results show 0
/// until a reload is tried).
pub struct ReloadHandles {
    success: Gauge,
    last_success: Gauge,
    succeeded: Counter,
    failed: Counter,
    added: Counter,
    removed: Counter,
    changed: Counter,
}

impl ReloadHandles {
    /// Registers the handles; the configuration of the start counts as
    /// applied now.
    pub fn register() -> Self {
        let handles = ReloadHandles {
            success: gauge!(CONFIG_RELOAD_SUCCESS),
            last_success: gauge!(CONFIG_RELOAD_LAST_SUCCESS_TIMESTAMP_SECONDS),
            succeeded: counter!(CONFIG_RELOADS_TOTAL, "result" => "success"),
            failed: counter!(CONFIG_RELOADS_TOTAL, "result" => "failure"),
            added: counter!(CONFIG_RELOAD_SITES_TOTAL, "change" => "added"),
            removed: counter!(CONFIG_RELOAD_SITES_TOTAL, "change" => "removed"),
            changed: counter!(CONFIG_RELOAD_SITES_TOTAL, "change" => "changed"),
        };
        for c in [
            &handles.succeeded,
            &handles.failed,
            &handles.added,
            &handles.removed,
            &handles.changed,
        ] {
            c.increment(0);
        }
        handles.applied();
        handles
    }

    /// A configuration was applied now.
    fn applied(&self) {
        self.success.set(1.0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        self.last_success.set(now.as_secs_f64());
    }

    /// A reload was applied: `added`, `removed` and `changed` sites.
    pub fn success(&self, added: usize, removed: usize, changed: usize) {
        self.applied();
        self.succeeded.increment(1);
        self.added.increment(added as u64);
        self.removed.increment(removed as u64);
        self.changed.increment(changed as u64);
    }

    /// A reload was refused.
    pub fn failure(&self) {
        self.success.set(0.0);
        self.failed.increment(1);
    }
}
