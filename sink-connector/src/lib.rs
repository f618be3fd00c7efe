//! `website-monitor-sink`: drains website-check records from a Kafka topic into
//! PostgreSQL — the latest state per url, the full history, and the records
//! that cannot be stored — committing Kafka offsets only after the rows are
//! committed.
//!
//! Layout, in the order a record passes through:
//! - [`config`]: the `[sink]` section of `connector.toml`.
//! - [`pipeline`]: the loop: collect a batch, split it over the writers,
//!   commit its offsets once every part is written, and meanwhile collect
//!   the next one; [`kafka`]: the group consumer and its librdkafka context,
//!   leaving the group, committing offsets.
//! - [`collect`]: cutting the record stream into batches (size, bytes, age).
//! - [`decode`]: record bytes → typed columns, or a reject reason; [`jsonb`]:
//!   what PostgreSQL's `jsonb` would refuse, found before it is sent.
//! - [`batch`]: the batch (records, outcome, Kafka positions to commit) and
//!   its split by partition over the writers.
//! - [`writer`]: the `writers` PostgreSQL connections, each writing its
//!   part of a batch at the same time as the others; connecting, migrating,
//!   bounded attempts and retries.
//! - [`refuse`]: writing a part whose records PostgreSQL may refuse: the
//!   search for them, kept across attempts.
//! - [`write`](mod@write): one transaction per part; exactly-once through a
//!   per-partition offsets table locked in the same transaction.
//! - [`sql`]: the statements of that transaction, prepared per connection.
//! - [`db`]: connecting to PostgreSQL, TLS as libpq's `sslmode` means it;
//!   [`migrate`]: table names (always quoted) and versioned migrations under
//!   an advisory lock; [`postgres_error`]: what an error means (retry,
//!   reconnect, or look for a refused record).
//! - [`metrics`]: metric names and readiness; [`error`]: why the sink stopped.
//!
//! Binaries call [`run`]; tests call [`start`] to learn the bound metrics
//! address and stop the sink with the shutdown token.

pub mod batch;
pub mod collect;
pub mod config;
pub mod db;
pub mod decode;
pub mod error;
pub mod jsonb;
pub mod kafka;
pub mod metrics;
pub mod migrate;
pub mod pipeline;
pub mod readiness;
pub mod postgres_error;
pub mod refuse;
pub mod sql;
pub mod write;
pub mod writer;

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use connector_common::telemetry::{self, Health};
use connector_common::Loaded;
use tokio_util::sync::CancellationToken;

pub use config::SinkConfig;
pub use error::SinkError;

/// A sink running in the background.
#[derive(Debug)]
pub struct Running {
    /// The address `/metrics`, `/healthz` and `/readyz` are served on.
    pub metrics_addr: SocketAddr,
    task: tokio::task::JoinHandle<Result<(), SinkError>>,
}

impl Running {
    /// Waits for the sink to stop (after `shutdown` fires, or on a fatal error).
    pub async fn wait(self) -> Result<(), SinkError> {
        self.task
            .await
            .map_err(|e| SinkError::Task(e.to_string()))?
    }
}

/// Starts the sink: serves telemetry on `metrics_address`, then (in the
/// background) connects to PostgreSQL, applies migrations, and consumes until
/// `shutdown` fires. Errors returned here are immediate (bad TLS files, a
/// port in use, an unusable Kafka configuration).
pub async fn start(
    config: Loaded<SinkConfig>,
    shutdown: CancellationToken,
) -> Result<Running, SinkError> {
    let cfg = config.section;
    let target = cfg.postgres_uri.target().clone();
    let tls = target.tls()?;

    let handle = telemetry::install_recorder();
    metrics::describe();
    let health = Health::new();
    // Writer 0 is the one that must work (it writes what the others cannot),
    // so readiness follows its connection.
    let readiness = readiness::Readiness::new(health.clone());
    // The telemetry server outlives `shutdown` until the sink has finished.
    let telemetry_stop = CancellationToken::new();
    let server =
        telemetry::serve(&cfg.metrics_address, handle, health, telemetry_stop.clone()).await?;

    let last_commit = Arc::new(AtomicU64::new(0));
    let consumer =
        match kafka::consumer(&config.kafka, &cfg, readiness.clone(), last_commit.clone()) {
            Ok(c) => c,
            Err(e) => {
                telemetry_stop.cancel();
                return Err(e);
            }
        };
    tokio::spawn(kafka::commit_age_ticker(
        last_commit.clone(),
        telemetry_stop.clone(),
    ));

    tracing::info!(
        topic = %cfg.topic,
        group = %cfg.group_id,
        group_instance_id = cfg.group_instance_id.as_deref().unwrap_or("(dynamic membership)"),
        table = %cfg.table,
        schema = %cfg.schema,
        postgres = %target.describe(),
        writers = cfg.writers,
        "sink starting"
    );
    let pipeline = pipeline::Pipeline::new(cfg, target, tls, readiness, shutdown, last_commit);
    let task = tokio::spawn(async move {
        let result = async {
            let mut pipeline = pipeline;
            if !pipeline.connect_until_ready().await? {
                return Ok(());
            }
            pipeline.run(consumer).await
        }
        .await;
        telemetry_stop.cancel();
        result
    });
    Ok(Running {
        metrics_addr: server.local_addr,
        task,
    })
}

/// Runs the sink until `shutdown` fires and the batch in hand is written
/// (bounded by `shutdown_timeout`).
pub async fn run(config: Loaded<SinkConfig>, shutdown: CancellationToken) -> Result<(), SinkError> {
    start(config, shutdown).await?.wait().await
}
