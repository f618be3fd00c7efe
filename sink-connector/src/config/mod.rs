//! The `[sink]` section of `connector.toml`.

use std::time::Duration;

use connector_common::config::{Invalid, Validate};
use connector_common::limits::{check_duration, check_number, text_problem, topic_problem};
use connector_common::listen::ListenAddress;
use serde::{Deserialize, Serialize};

use crate::status::settings::StatusConfig;
use crate::uri::PostgresUri;

/// Where a new consumer group starts reading a partition that has no committed offset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartFrom {
    /// The oldest record still in the topic (Kafka `auto.offset.reset=earliest`).
    #[default]
    Earliest,
    /// Only records produced after the group first joins (`auto.offset.reset=latest`).
    Latest,
}

impl StartFrom {
    /// librdkafka's `auto.offset.reset` value.
    pub fn as_librdkafka(self) -> &'static str {
        match self {
            StartFrom::Earliest => "earliest",
            StartFrom::Latest => "latest",
        }
    }
}

/// The sink connector's settings (`[sink]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SinkConfig {
    /// Kafka topic to drain. Env: `kafka_topic`. May differ from the source's
    /// topic when other stages sit in between. One literal topic: a name
    /// starting with `^` (a librdkafka regex subscription) is refused.
    pub topic: String,
    /// Kafka consumer group. Sink instances sharing it split the partitions.
    /// 1 to 255 bytes, not blank, no control characters.
    pub group_id: String,
    /// Static group membership (librdkafka `group.instance.id`): a stable name
    /// for this sink instance within `group_id`, e.g. the pod name of a
    /// StatefulSet. A sink restarted after a crash with the same id takes its
    /// partitions back at once instead of after the dead member's
    /// `session.timeout.ms`. Unset: dynamic membership. Two live sinks with one
    /// id fence each other: the older one stops with an error (exit 1).
    /// Kafka's rule: 1 to 249 characters of `A-Z a-z 0-9 . _ -`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_instance_id: Option<String>,
    /// PostgreSQL connection string, URL (`postgres://user:pass@host:5432/db?sslmode=require`)
    /// or `key=value` form. Env: `postgres_uri`. `sslmode` may be `disable`,
    /// `prefer`, `require`, `verify-ca` or `verify-full`; `sslrootcert` names the
    /// CA file (PEM) that verifies the server (`system` for the public web roots).
    /// Its password is never printed (`--check-config` shows `********`).
    pub postgres_uri: PostgresUri,
    /// PostgreSQL schema holding the tables; created when missing. 1 to
    /// [`MAX_SCHEMA_NAME_BYTES`] bytes, without NUL, `{` or `}`; PostgreSQL's
    /// system schemas (`pg_*` and `information_schema`, in any letter case) are
    /// refused.
    pub schema: String,
    /// Latest-state table. History, rejects, Kafka positions and migrations take
    /// derived names: `<table>_check`, `<table>_rejected`, `<table>_kafka_offsets`,
    /// `<table>_migrations`. 1 to [`MAX_TABLE_NAME_BYTES`] bytes (so the
    /// derived names fit PostgreSQL's 63-byte identifiers), without NUL, `{` or
    /// `}`; any other name is allowed, as it is always quoted.
    pub table: String,
    /// Most records in one batch (split over the `writers`, one transaction
    /// each). While a batch is being written the next one keeps filling, past
    /// `batch_timeout`, up to this: a sink catching up on a backlog writes
    /// full batches, and each site's rollup and status rows once per batch.
    pub batch_size: usize,
    /// Most bytes (Kafka values and keys) collected into one batch; a batch
    /// always takes at least one record. The sink holds up to two batches
    /// (one being written, the next filling) and each record's decoded
    /// copies: with records of ~1 MB, about 3.5 times this per batch.
    pub batch_max_bytes: usize,
    /// Longest wait, after the first record of a batch, before the batch is
    /// written even if not full, when no batch is being written (humantime,
    /// e.g. `100ms`).
    #[serde(with = "humantime_serde")]
    pub batch_timeout: Duration,
    /// PostgreSQL connections that write each batch at once (1 to
    /// [`MAX_WRITERS`]). A batch is split by Kafka partition (a partition's
    /// records all in one part, partitions whose records share a url in one
    /// part — records without a key make the batch one part — and the parts
    /// dealt out evenly by size) and each part is written in its own
    /// transaction on its own connection, so PostgreSQL works on up to this
    /// many cores; the batch's Kafka offsets are committed once every part
    /// has committed. Each sink holds this many connections; more writers
    /// than the partitions a sink owns bring nothing.
    pub writers: usize,
    /// Where a new consumer group starts: `earliest` or `latest`.
    pub start_from: StartFrom,
    /// Records larger than this many bytes go to the rejects table.
    pub max_record_bytes: usize,
    /// Records whose `url` is longer than this many bytes go to the rejects
    /// table. The default (2048) stays below PostgreSQL's btree entry limit
    /// (about 2704 bytes), which the unique index on `url` would otherwise hit.
    pub max_url_bytes: usize,
    /// How long, after SIGTERM, the sink keeps trying to write the batch in hand
    /// before giving it up (it is then redelivered on the next start); the
    /// Kafka commit after it and leaving the group get only what is left.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Longest one attempt to write a batch (or to connect and migrate) may
    /// take before it is abandoned and retried on a fresh connection; after
    /// SIGTERM never longer than what is left of `shutdown_timeout`.
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    /// Address of the `/metrics`, `/healthz` and `/readyz` server (port 0 picks one).
    pub metrics_address: ListenAddress,
    /// How long history rows are kept: whole partitions older than this are
    /// dropped (never `DELETE`), and a record older than this gets no history
    /// row (it still counts in the rollups that cover its time). 1 hour to 100 years,
    /// and at least `history_partition`.
    #[serde(with = "humantime_serde")]
    pub history_retention: Duration,
    /// The time each history partition covers: whole hours, from 1 hour to 7
    /// days, aligned to the Unix epoch in UTC. Applies to partitions made
    /// from now on.
    #[serde(with = "humantime_serde")]
    pub history_partition: Duration,
    /// How long rejected records are kept (daily partitions). 1 hour to 100 years.
    #[serde(with = "humantime_serde")]
    pub rejects_retention: Duration,
    /// Kafka topic each rejected record is also produced to, once stored in
    /// the rejects table: its original key and value, with headers naming
    /// the original topic, partition and offset, the reason and the detail
    /// (Kafka Connect's `__connect.errors.*` names). At least once: a crash
    /// between the produce and its bookkeeping produces it again, and the
    /// headers tell the copies apart. The topic must exist. Unset: the
    /// rejects table only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_topic: Option<String>,
    /// How long the per-minute rollups are kept (daily partitions). 1 hour to 100 years.
    #[serde(with = "humantime_serde")]
    pub rollup_minute_retention: Duration,
    /// How long the per-hour rollups are kept (daily partitions). 1 hour to 100
    /// years, and at least `rollup_minute_retention`.
    #[serde(with = "humantime_serde")]
    pub rollup_hour_retention: Duration,
    /// How long the per-day rollups are kept (30-day partitions). 1 day to 100
    /// years, and at least `rollup_hour_retention`.
    #[serde(with = "humantime_serde")]
    pub rollup_day_retention: Duration,
    /// Site status policy: thresholds, quorum across probes, maintenance
    /// windows, the transitions topic (`[sink.status]`, see `docs/status.md`).
    pub status: StatusConfig,
}

impl Default for SinkConfig {
    /// The value of every key the file leaves out.
    fn default() -> Self {
        Self {
            topic: "site-status".to_owned(),
            group_id: "website-monitor-sink".to_owned(),
            group_instance_id: None,
            postgres_uri: "postgres://postgres@127.0.0.1:5432/website_monitor"
                .parse()
                .expect("the default postgres_uri parses"),
            schema: "public".to_owned(),
            table: "site".to_owned(),
            batch_size: 50_000,
            batch_max_bytes: 64 * 1024 * 1024,
            batch_timeout: Duration::from_millis(100),
            writers: 2,
            start_from: StartFrom::default(),
            max_record_bytes: 1024 * 1024,
            max_url_bytes: 2048,
            shutdown_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            metrics_address: "127.0.0.1:9465"
                .parse()
                .expect("the default metrics_address parses"),
            history_retention: DAY * 7,
            history_partition: DAY,
            rejects_retention: DAY * 30,
            dead_letter_topic: None,
            rollup_minute_retention: DAY * 2,
            rollup_hour_retention: DAY * 35,
            rollup_day_retention: DAY * 400,
            status: StatusConfig::default(),
        }
    }
}

/// One day.
const DAY: Duration = Duration::from_secs(86_400);

/// Longest retention of any table: 100 years.
pub const MAX_RETENTION: Duration = Duration::from_secs(100 * 365 * 86_400);

/// Longest `history_partition`.
pub const MAX_HISTORY_PARTITION: Duration = Duration::from_secs(7 * 86_400);

/// Longest `table` name, so every derived name (`<table>_kafka_offsets`, index
/// names) stays within PostgreSQL's 63-byte identifier limit.
pub const MAX_TABLE_NAME_BYTES: usize = 40;

/// Longest `schema` name: PostgreSQL's identifier limit.
pub const MAX_SCHEMA_NAME_BYTES: usize = 63;

/// Most `writers` (PostgreSQL connections per sink).
pub const MAX_WRITERS: usize = 64;

/// Most `batch_size`.
pub const MAX_BATCH_SIZE: usize = 1_000_000;

/// Most `batch_max_bytes`: 1 GiB.
pub const MAX_BATCH_BYTES: usize = 1024 * 1024 * 1024;

/// Most `max_record_bytes`: 100 MiB.
pub const MAX_RECORD_BYTES: usize = 100 * 1024 * 1024;

/// Most `max_url_bytes`: PostgreSQL's btree entry limit (about 2704 bytes)
/// caps what the unique index on `url` can hold.
pub const MAX_URL_BYTES: usize = 2700;

/// Longest `batch_timeout`.
pub const MAX_BATCH_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// Longest `shutdown_timeout` and `write_timeout`.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60 * 60);

fn check_identifier(out: &mut Vec<Invalid>, key: String, value: &str, max: usize) {
    if value.is_empty() {
        out.push(Invalid::new(key, "must not be empty"));
    } else if value.len() > max {
        out.push(Invalid::new(
            key,
            format!(
                "`{value}` is {} bytes; at most {max} are allowed",
                value.len()
            ),
        ));
    } else if value.contains('\0') {
        out.push(Invalid::new(key, "must not contain a NUL character"));
    } else if value.contains(['{', '}']) {
        out.push(Invalid::new(
            key,
            format!("`{value}` contains `{{` or `}}`, which the sink does not allow in table and schema names"),
        ));
    }
}

/// Kafka's rule for a `group.instance.id` (the same as for a topic name):
/// 1 to 249 of `[A-Za-z0-9._-]`.
fn check_group_instance_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 249 {
        return Err(format!(
            "must be 1 to 249 characters (it is {}); leave it out for dynamic membership",
            id.len()
        ));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "`{id}` contains {c:?}; Kafka allows only ASCII letters, digits, `.`, `_` and `-`"
        ));
    }
    Ok(())
}

impl Validate for SinkConfig {
    fn validate(&self, prefix: &str) -> Vec<Invalid> {
        let mut out = Vec::new();
        let key = |k: &str| format!("{prefix}.{k}");
        self.check_kafka_names(&mut out, &key);
        self.check_table_names(&mut out, &key);
        self.check_sizes(&mut out, &key);
        self.check_timeouts(&mut out, &key);
        self.check_record_limits(&mut out, &key);
        self.check_storage(&mut out, &key);
        out.extend(self.status.validate(&key("status")));
        out
    }
}

impl SinkConfig {
    /// `topic`, `group_id` and `group_instance_id`: names Kafka accepts.
    fn check_kafka_names(&self, out: &mut Vec<Invalid>, key: &dyn Fn(&str) -> String) {
        if self.topic.trim().is_empty() {
            out.push(Invalid::new(
                key("topic"),
                "must not be empty; name the Kafka topic to drain",
            ));
        } else if self.topic.starts_with('^') {
            out.push(Invalid::new(
                key("topic"),
                format!("`{}` starts with `^`, which librdkafka reads as a regular expression over topic names; the sink drains one literal topic (run one sink per topic)", self.topic),
            ));
        } else if let Some(problem) = topic_problem(&self.topic) {
            out.push(Invalid::new(key("topic"), problem));
        }
        if self.group_id.trim().is_empty() {
            out.push(Invalid::new(
                key("group_id"),
                "must not be empty; name the Kafka consumer group",
            ));
        } else if let Some(problem) = text_problem(&self.group_id, 255) {
            out.push(Invalid::new(key("group_id"), problem));
        }
        if let Some(id) = &self.group_instance_id {
            if let Err(why) = check_group_instance_id(id) {
                out.push(Invalid::new(key("group_instance_id"), why));
            }
        }
    }

    /// `schema` and `table`: names the sink can quote and derive from, and
    /// no PostgreSQL system schema.
    fn check_table_names(&self, out: &mut Vec<Invalid>, key: &dyn Fn(&str) -> String) {
        check_identifier(out, key("schema"), &self.schema, MAX_SCHEMA_NAME_BYTES);
        let lower = self.schema.to_ascii_lowercase();
        if lower.starts_with("pg_") || lower == "information_schema" {
            out.push(Invalid::new(
                key("schema"),
                format!(
                    "`{}` is a PostgreSQL system schema; give a schema of your own (default \"public\")",
                    self.schema.escape_debug()
                ),
            ));
        }
        check_identifier(out, key("table"), &self.table, MAX_TABLE_NAME_BYTES);
    }

    /// Batch sizes and the number of writers within bounds.
    fn check_sizes(&self, out: &mut Vec<Invalid>, key: &dyn Fn(&str) -> String) {
        check_number(
            out,
            key("batch_size"),
            self.batch_size,
            1,
            MAX_BATCH_SIZE,
            "records",
        );
        check_number(
            out,
            key("batch_max_bytes"),
            self.batch_max_bytes,
            1,
            MAX_BATCH_BYTES,
            "bytes (1 GiB)",
        );
        if !(1..=MAX_WRITERS).contains(&self.writers) {
            out.push(Invalid::new(
                key("writers"),
                format!(
                    "{} is out of range: give 1 to {MAX_WRITERS} PostgreSQL connections to write each batch with (default 2; 1 writes every batch on one connection)",
                    self.writers
                ),
            ));
        }
    }

    /// `write_timeout`, `shutdown_timeout` and `batch_timeout` within bounds.
    fn check_timeouts(&self, out: &mut Vec<Invalid>, key: &dyn Fn(&str) -> String) {
        let ms = Duration::from_millis;
        // Connecting, migrating and writing a batch take more than a few
        // milliseconds: below a second nothing would ever succeed.
        let write_min = Duration::from_secs(1);
        check_duration(
            out,
            key("write_timeout"),
            self.write_timeout,
            write_min,
            MAX_TIMEOUT,
            "30s",
        );
        check_duration(
            out,
            key("shutdown_timeout"),
            self.shutdown_timeout,
            ms(1),
            MAX_TIMEOUT,
            "30s",
        );
        check_duration(
            out,
            key("batch_timeout"),
            self.batch_timeout,
            ms(1),
            MAX_BATCH_TIMEOUT,
            "100ms",
        );
    }

    /// `max_record_bytes` and `max_url_bytes` within bounds.
    fn check_record_limits(&self, out: &mut Vec<Invalid>, key: &dyn Fn(&str) -> String) {
        check_number(
            out,
            key("max_record_bytes"),
            self.max_record_bytes,
            1,
            MAX_RECORD_BYTES,
            "bytes (100 MiB)",
        );
        check_number(
            out,
            key("max_url_bytes"),
            self.max_url_bytes,
            1,
            MAX_URL_BYTES,
            "bytes (PostgreSQL's index entry limit)",
        );
    }
}

mod storage;
#[cfg(test)]
mod tests;
