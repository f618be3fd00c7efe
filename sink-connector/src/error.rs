//! Why the sink stopped with an error (configuration problems are caught
//! earlier, by the loader).

use crate::uri;
use connector_common::telemetry::TelemetryError;

/// Why the sink stopped with an error (configuration problems are caught
/// earlier, by the loader).
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// TLS to PostgreSQL cannot be set up (e.g. the `sslrootcert` file).
    #[error("sink.postgres_uri: {0}")]
    Tls(#[from] uri::TlsError),
    /// The metrics server cannot listen.
    #[error(transparent)]
    Telemetry(#[from] TelemetryError),
    /// The Kafka consumer cannot be created or subscribed.
    #[error("Kafka consumer: {0}; check [kafka] and sink.topic")]
    Kafka(rdkafka::error::KafkaError),
    /// The Kafka consumer raised a fatal error and cannot go on: fenced by
    /// another sink with the same `group_instance_id` (the message says so).
    #[error("{0}")]
    KafkaFatal(String),
    /// PostgreSQL refused a schema migration.
    #[error("migrating the sink's tables failed: {0}; check that the PostgreSQL user may create tables in sink.schema, and that existing tables of the same names are the sink's own")]
    Migrate(String),
    /// The sink's role may not move the rows of the history table of
    /// migrations 0001–0005 (`<table>_check_legacy`) into the new tables.
    #[error("converting the old history table {table} into the partitioned history needs the rights of its owner: {message}; start one sink once with the postgres_uri of the role that owns the sink's tables (it moves the rows and drops the old table), then go back to the least-privileged role")]
    Upgrade {
        /// The old table, qualified.
        table: String,
        /// PostgreSQL's message.
        message: String,
    },
    /// The sink's task panicked or was aborted.
    #[error("the sink task ended abnormally: {0}")]
    Task(String),
}
