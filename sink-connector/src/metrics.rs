//! Metric names and readiness.
//!
//! Every name starts with `website_monitor_` and is listed, with its labels,
//! under "Metrics" in the sink's part of README.md.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use connector_common::telemetry::Health;
use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

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

/// Registers help texts for every metric.
pub fn describe() {
    describe_counter!(RECORDS_CONSUMED, "Records read from Kafka.");
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
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Readiness from two sides: PostgreSQL (each of the `writers` connections)
/// and Kafka. `/readyz` is 200 only when every connection and Kafka are fine,
/// and otherwise names what is wrong.
#[derive(Debug, Clone)]
pub struct Readiness {
    health: Health,
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct State {
    /// One entry per PostgreSQL connection: fine (`None`) or the problem.
    db: Vec<Option<String>>,
    kafka: Option<String>,
}

impl Readiness {
    /// Not ready until Kafka and each of `connections` PostgreSQL
    /// connections report in.
    pub fn new(health: Health, connections: usize) -> Self {
        let r = Self {
            health,
            state: Arc::new(Mutex::new(State {
                db: vec![Some("PostgreSQL: not connected yet".to_owned()); connections.max(1)],
                kafka: Some("Kafka: no broker reached yet".to_owned()),
            })),
        };
        r.publish();
        r
    }

    /// PostgreSQL connection number `connection` (from 0) is fine (`None`)
    /// or not (the reason).
    pub fn set_db(&self, connection: usize, problem: Option<String>) {
        {
            let mut s = self.state.lock().expect("readiness lock");
            if connection >= s.db.len() {
                s.db.resize(connection + 1, None);
            }
            s.db[connection] = problem;
        }
        self.publish();
    }

    /// Kafka is fine (`None`) or not (the reason).
    pub fn set_kafka(&self, problem: Option<String>) {
        self.state.lock().expect("readiness lock").kafka = problem;
        self.publish();
    }

    fn publish(&self) {
        let s = self.state.lock().expect("readiness lock");
        let mut failing = s.db.iter().flatten();
        let db = failing.next().map(|first| match failing.count() {
            0 if s.db.len() == 1 => first.clone(),
            0 => format!("{first} (1 of {} connections)", s.db.len()),
            more => format!("{first} ({} of {} connections)", more + 1, s.db.len()),
        });
        match (db, &s.kafka) {
            (None, None) => self.health.set_ready(),
            (Some(a), None) => self.health.set_not_ready(a),
            (None, Some(a)) => self.health.set_not_ready(a.clone()),
            (Some(a), Some(b)) => self.health.set_not_ready(format!("{a}; {b}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_connection_and_kafka_are() {
        let health = Health::new();
        let r = Readiness::new(health.clone(), 2);
        let reason = || health.not_ready_reason();
        r.set_kafka(None);
        assert_eq!(
            reason().as_deref(),
            Some("PostgreSQL: not connected yet (2 of 2 connections)")
        );
        r.set_db(0, None);
        assert_eq!(
            reason().as_deref(),
            Some("PostgreSQL: not connected yet (1 of 2 connections)"),
            "connection 1 has not reported yet"
        );
        r.set_db(1, None);
        assert_eq!(reason(), None);
        r.set_db(1, Some("PostgreSQL at h: down".to_owned()));
        r.set_db(0, None);
        assert!(reason().is_some(), "one failing connection is enough");
        r.set_db(1, None);
        r.set_kafka(Some("Kafka: down".to_owned()));
        assert_eq!(reason().as_deref(), Some("Kafka: down"));
        let single = Readiness::new(Health::new(), 1);
        single.set_kafka(None);
        assert_eq!(
            single.health.not_ready_reason().as_deref(),
            Some("PostgreSQL: not connected yet"),
            "one connection: the message as it always was"
        );
    }
}
