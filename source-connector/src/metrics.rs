//! The source's Prometheus metrics: names, and the one place that records them.
//!
//! Served on `/metrics` by `connector_common::telemetry`. Per-site gauges carry
//! a `url` label and are off with `per_site_metrics = false`.

use std::time::Duration;

use metrics::{counter, gauge, histogram};

use crate::record::Record;

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
/// Gauge per `url`: 1 when the last check was ok, else 0.
pub const SITE_UP: &str = "website_monitor_site_up";
/// Gauge per `url`: duration of the last check, seconds.
pub const SITE_DURATION_SECONDS: &str = "website_monitor_site_duration_seconds";
/// Gauge per `url`: days until the certificate of the last https check expires.
pub const SITE_CERT_DAYS_LEFT: &str = "website_monitor_site_cert_days_left";
/// Gauge: sites this instance checks (after sharding).
pub const SITES: &str = "website_monitor_sites";

/// Records a finished check.
pub fn check_finished(record: &Record, per_site: bool) {
    let (outcome, kind) = match &record.error {
        None => ("ok", "none"),
        Some(e) => ("fail", e.kind.as_str()),
    };
    counter!(CHECKS_TOTAL, "outcome" => outcome, "error_kind" => kind).increment(1);
    histogram!(CHECK_DURATION_SECONDS).record(record.duration);
    if per_site {
        let url = record.url.clone();
        gauge!(SITE_UP, "url" => url.clone()).set(if record.ok { 1.0 } else { 0.0 });
        gauge!(SITE_DURATION_SECONDS, "url" => url.clone()).set(record.duration);
        if let Some(days) = record.tls.as_ref().and_then(|t| t.cert_days_left) {
            gauge!(SITE_CERT_DAYS_LEFT, "url" => url).set(days as f64);
        }
    }
}

/// Records how late a check started.
pub fn lateness(late: Duration) {
    histogram!(SCHEDULE_LATENESS_SECONDS).record(late.as_secs_f64());
}

/// Records skipped ticks.
pub fn skipped(reason: &'static str, n: u64) {
    counter!(SKIPPED_TICKS_TOTAL, "reason" => reason).increment(n);
}

/// Moves the in-flight gauge.
pub fn in_flight(delta: f64) {
    gauge!(CHECKS_IN_FLIGHT).increment(delta);
}

/// Counts a delivered record.
pub fn produced() {
    counter!(RECORDS_PRODUCED_TOTAL).increment(1);
}

/// Counts an undeliverable record.
pub fn failed() {
    counter!(RECORDS_FAILED_TOTAL).increment(1);
}

/// Sets the number of sites.
pub fn sites(n: usize) {
    gauge!(SITES).set(n as f64);
}
