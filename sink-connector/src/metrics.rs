//! The sink's metrics: every name, and its help text.
//!
//! Every name starts with `website_monitor_` and is listed, with its labels,
//! under "Sink" in docs/metrics.md.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use connector_common::telemetry::escape_label;
use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

use crate::status::State;

/// Records read from Kafka (counter).
pub const RECORDS_CONSUMED: &str = "website_monitor_records_consumed_total";
/// Rows written, by `table` (`site`, `site_check`, `site_rejected` — the configured names) (counter).
pub const ROWS_WRITTEN: &str = "website_monitor_rows_written_total";
/// Records rejected, by `reason` (counter).
pub const RECORDS_REJECTED: &str = "website_monitor_records_rejected_total";
/// Records skipped because an earlier run or another group member already wrote them (counter).
pub const RECORDS_DUPLICATE: &str = "website_monitor_records_duplicate_total";
/// Records skipped as already written while the stored `next_offset` is above
/// the partition's end (topic re-created or offsets reset), by `topic` and
/// `partition` (counter).
pub const RECORDS_POSITION_AHEAD: &str = "website_monitor_records_position_ahead_total";
/// Records per written batch (histogram).
pub const BATCH_SIZE: &str = "website_monitor_batch_size";
/// Seconds to write one batch transaction, from BEGIN to COMMIT — one per
/// writer with records in the batch (histogram).
pub const BATCH_WRITE_SECONDS: &str = "website_monitor_batch_write_seconds";
/// Failed database operations (connect, migrate, batch write) (counter).
pub const DB_ERRORS: &str = "website_monitor_db_errors_total";
/// Batch writes retried after a failure (counter).
pub const DB_RETRIES: &str = "website_monitor_db_retries_total";
/// Records behind the partition's end, by `topic` and `partition`, from librdkafka statistics (gauge).
pub const CONSUMER_LAG: &str = "website_monitor_consumer_lag";
/// Unix time of the last successful Kafka offset commit (gauge).
pub const LAST_COMMIT_TIMESTAMP: &str = "website_monitor_last_commit_timestamp_seconds";
/// Seconds since the last successful Kafka offset commit, refreshed every second (gauge).
pub const LAST_COMMIT_AGE: &str = "website_monitor_last_commit_age_seconds";
/// Kafka consumer errors (counter).
pub const KAFKA_ERRORS: &str = "website_monitor_kafka_errors_total";
/// Good records older than `history_retention`, stored only in the rollups
/// that still cover their time (counter).
pub const RECORDS_PAST_RETENTION: &str = "website_monitor_records_past_retention_total";
/// Partitions dropped past their table's retention (counter).
pub const PARTITIONS_DROPPED: &str = "website_monitor_partitions_dropped_total";

/// Site status transitions committed, by `to` (the state entered: `up`,
/// `degraded`, `down`, `unknown`, `maintenance`) (counter).
pub const STATUS_TRANSITIONS: &str = "website_monitor_status_transitions_total";
/// Site status transitions produced to `[sink.status] transitions_topic`
/// (counter; at least once, so a replay may count one twice).
pub const STATUS_TRANSITIONS_PUBLISHED: &str = "website_monitor_status_transitions_published_total";
/// Rejected records produced to `[sink] dead_letter_topic` (counter; at
/// least once, so a crash may count one twice).
pub const RECORDS_DEAD_LETTERED: &str = "website_monitor_records_dead_lettered_total";
/// Rounds of producing committed rows to a topic that failed, by `stream`
/// (`transitions`, `dead_letters`) (counter); the round is tried again 10 s
/// later.
pub const PUBLISH_FAILURES: &str = "website_monitor_publish_failures_total";
/// Committed rows not produced to their topic yet, by `stream` (gauge,
/// counted after every round, failed or not, up to 100,000).
pub const PUBLISH_BACKLOG: &str = "website_monitor_publish_backlog";
/// The age in seconds of the oldest committed row not produced to its
/// topic yet, by `stream` (gauge, 0 when none waits; measured after every
/// round, and growing from the last measure while PostgreSQL cannot be
/// asked).
pub const PUBLISH_OLDEST_AGE: &str = "website_monitor_publish_oldest_age_seconds";
/// Rows given up by `stream` (counter): messages Kafka can never take
/// (too large, an invalid record), logged and marked as if produced.
pub const PUBLISH_GIVEN_UP: &str = "website_monitor_publish_given_up_total";
/// Records the site status model ignored as late for their probe (counter):
/// not newer than the probe's newest check. Records of one url spread over
/// several partitions (keyless input) show up here; see docs/status.md.
pub const STATUS_RECORDS_LATE: &str = "website_monitor_status_records_late_total";
/// Ad-hoc maintenance windows (rows of `<table>_maintenance`) found unusable
/// and ignored, once per row (counter).
pub const STATUS_BAD_WINDOWS: &str = "website_monitor_status_bad_windows_total";
/// Each site's state, by `url` and `state`: 1 for the state it is in, 0
/// for the others (gauge; only with `[sink.status] per_site_gauge`; kept in
/// [`SiteStates`], not the registry).
pub const SITE_STATE: &str = "website_monitor_site_state";
/// Sweeps of the site status (writer 0) that failed (counter).
pub const STATUS_SWEEP_ERRORS: &str = "website_monitor_status_sweep_errors_total";

/// Registers help texts for every metric.
pub fn describe() {
    describe_counter!(RECORDS_CONSUMED, "Records read from Kafka.");
    describe_counter!(
        STATUS_TRANSITIONS,
        "Site status transitions committed, by the state entered."
    );
    describe_counter!(
        RECORDS_DEAD_LETTERED,
        "Rejected records produced to the dead-letter topic (at least once)."
    );
    describe_counter!(
        STATUS_TRANSITIONS_PUBLISHED,
        "Site status transitions produced to the transitions topic (at least once)."
    );
    describe_counter!(
        STATUS_RECORDS_LATE,
        "Records the site status model ignored as late for their probe (out of order; keyless input spread over partitions)."
    );
    describe_counter!(
        STATUS_BAD_WINDOWS,
        "Ad-hoc maintenance windows ignored as unusable (a url_pattern that is not a regex), once per row."
    );
    describe_counter!(
        STATUS_SWEEP_ERRORS,
        "Sweeps of the site status (silent probes, maintenance windows) that failed."
    );
    describe_counter!(
        PARTITIONS_DROPPED,
        "Time partitions of history, rejects and rollups dropped past their retention."
    );
    describe_counter!(
        RECORDS_PAST_RETENTION,
        "Records older than history_retention: counted in the rollups that still cover their time, no history row."
    );
    describe_counter!(
        ROWS_WRITTEN,
        Unit::Count,
        "Rows written to PostgreSQL, by table."
    );
    describe_counter!(
        RECORDS_REJECTED,
        "Records stored in the rejects table, by reason."
    );
    describe_counter!(
        RECORDS_DUPLICATE,
        "Records skipped because they were already written (replay after a crash or rebalance)."
    );
    describe_counter!(
        RECORDS_POSITION_AHEAD,
        "Records skipped as already written although the stored position is above the partition's end (topic re-created or offsets reset): they are not stored."
    );
    describe_histogram!(BATCH_SIZE, Unit::Count, "Records per written batch.");
    describe_histogram!(
        BATCH_WRITE_SECONDS,
        Unit::Seconds,
        "Time to write one batch transaction (one per writer with records in the batch)."
    );
    describe_counter!(DB_ERRORS, "Failed PostgreSQL operations.");
    describe_counter!(
        DB_RETRIES,
        "Batch writes retried after a PostgreSQL failure."
    );
    describe_gauge!(
        CONSUMER_LAG,
        "Records between the committed offset and the end of the partition."
    );
    describe_gauge!(
        LAST_COMMIT_TIMESTAMP,
        Unit::Seconds,
        "Unix time of the last Kafka offset commit."
    );
    describe_gauge!(
        LAST_COMMIT_AGE,
        Unit::Seconds,
        "Seconds since the last Kafka offset commit."
    );
    describe_counter!(KAFKA_ERRORS, "Errors reported by the Kafka consumer.");
    describe_counter!(
        PUBLISH_FAILURES,
        "Failed rounds of producing committed rows to the transitions or dead-letter topic."
    );
    describe_gauge!(
        PUBLISH_BACKLOG,
        "Committed rows not produced to the transitions or dead-letter topic yet (counted up to 100000)."
    );
    describe_gauge!(
        PUBLISH_OLDEST_AGE,
        "Age in seconds of the oldest committed row not produced to its topic yet (0: none)."
    );
    describe_counter!(
        PUBLISH_GIVEN_UP,
        "Rows Kafka can never take (too large, invalid), given up and marked as produced."
    );
}

/// Shows every reject reason's counter, and the produce failures of each
/// topic `cfg` has the sink produce to, at 0 from the start: a rule on a
/// counter's `increase` only sees increments after a first sample.
pub fn register_zeros(cfg: &crate::config::SinkConfig) {
    for reason in crate::decode::Reason::ALL {
        metrics::counter!(RECORDS_REJECTED, "reason" => reason.as_str()).increment(0);
    }
    let streams = [
        (&cfg.status.transitions_topic, "transitions"),
        (&cfg.dead_letter_topic, "dead_letters"),
    ];
    for (_, stream) in streams.into_iter().filter(|(topic, _)| topic.is_some()) {
        metrics::counter!(PUBLISH_FAILURES, "stream" => stream).increment(0);
        metrics::counter!(PUBLISH_GIVEN_UP, "stream" => stream).increment(0);
    }
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The per-site state gauge ([`SITE_STATE`]) as `/metrics` text, kept by the
/// sink (the `metrics` registry cannot remove a series) and replaced whole
/// at each refresh: a deleted site, or one whose records now go to another
/// sink's partitions, drops out.
#[derive(Debug, Default)]
pub struct SiteStates {
    text: Mutex<String>,
}

impl SiteStates {
    /// Replaces the series with `sites` (url, state).
    pub fn set<'a>(&self, sites: impl IntoIterator<Item = (&'a str, State)>) {
        let mut text = String::new();
        for (url, state) in sites {
            let url = escape_label(url);
            for s in State::ALL {
                let on = u8::from(s == state);
                let _ = writeln!(
                    text,
                    "{SITE_STATE}{{url=\"{url}\",state=\"{}\"}} {on}",
                    s.as_str()
                );
            }
        }
        if !text.is_empty() {
            text.insert_str(
                0,
                &format!(
                    "# HELP {SITE_STATE} Each site's state (1 for the state it is in, 0 for the others); with [sink.status] per_site_gauge.\n# TYPE {SITE_STATE} gauge\n"
                ),
            );
            text.push('\n');
        }
        *self.text.lock().unwrap_or_else(|e| e.into_inner()) = text;
    }

    /// Appends the series to `out` (the `/metrics` hook).
    pub fn render(&self, out: &mut String) {
        out.push_str(&self.text.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_states_are_replaced_whole_so_a_gone_site_drops_out() {
        let states = SiteStates::default();
        states.set([("http://a/", State::Down), ("http://b\"/", State::Up)]);
        let mut out = String::new();
        states.render(&mut out);
        assert!(out.contains("website_monitor_site_state{url=\"http://a/\",state=\"down\"} 1\n"));
        assert!(out.contains("website_monitor_site_state{url=\"http://a/\",state=\"up\"} 0\n"));
        assert!(out.contains("website_monitor_site_state{url=\"http://b\\\"/\",state=\"up\"} 1\n"));
        assert_eq!(out.matches("# TYPE").count(), 1);
        states.set([("http://b\"/", State::Up)]);
        let mut out = String::new();
        states.render(&mut out);
        assert!(!out.contains("http://a/"), "{out}");
        states.set([]);
        let mut out = String::new();
        states.render(&mut out);
        assert_eq!(out, "");
    }
}
