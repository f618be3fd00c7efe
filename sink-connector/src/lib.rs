//! `website-monitor-sink`: drains website-check records from a Kafka topic into
//! PostgreSQL — the latest state per url, the full history, and the records
//! that cannot be stored — committing Kafka offsets only after the rows are
//! committed.
//!
//! # Floor plan
//!
//! A record's way through the sink, and who does what on it:
//!
//! ```text
//!  Kafka ──► kafka::consumer ──► collect ──► batch ──► pipeline ──► postgres::writer ──► PostgreSQL
//!                                  │                      │          (write, refuse)
//!                               decode                    └──► kafka::commit ──► Kafka
//!                               (jsonb)
//! ```
//!
//! - [`pipeline`]: the loop — collect a batch, split it over the writers,
//!   commit its offsets once every part is written, and meanwhile collect
//!   the next one.
//! - [`kafka`]: the group consumer and its librdkafka context, leaving the
//!   group ([`kafka::consumer`]); committing offsets ([`kafka::commit`]).
//! - [`collect`]: cutting the record stream into batches (size, bytes, age).
//! - [`decode`]: record bytes → typed columns, or a reject reason; [`jsonb`]:
//!   what PostgreSQL's `jsonb` would refuse, found before it is sent.
//! - [`batch`]: the batch (records, outcome, Kafka positions to commit) and
//!   its split by partition over the writers.
//! - [`postgres`]: everything that talks to PostgreSQL — the writers, the
//!   batch transaction and its exactly-once offsets table, the search for
//!   refused records, SQL, migrations, error classification.
//! - [`uri`]: `postgres_uri` parsed once at load, TLS as libpq's `sslmode`
//!   means it; [`config`]: the `[sink]` section of `connector.toml`.
//! - [`status`]: site status and incidents (issue 14) — the probe and site
//!   state machines, the policy of `[sink.status]`, maintenance windows and
//!   transitions; pure (no I/O), fed by `postgres::status`.
//! - [`readiness`]: what `/readyz` says; [`metrics`]: metric names;
//!   [`error`]: why the sink stopped.
//!
//! Imports run one way: this file (the composition root) and [`pipeline`]
//! use everything; [`collect`] → [`kafka`]; [`kafka`] and [`postgres`] →
//! [`config`], [`readiness`], [`metrics`], [`error`], [`batch`], [`decode`];
//! [`config`] and [`error`] → [`uri`]; [`config`] → [`status`] (its
//! `[sink.status]` table), which imports nothing of the sink; [`batch`] →
//! [`decode`] → [`jsonb`]. Nothing imports [`pipeline`] or this file.
//!
//! Binaries call [`run`]; tests call [`start`] to learn the bound metrics
//! address and stop the sink with the shutdown token.

pub mod batch;
pub mod collect;
pub mod config;
pub mod decode;
pub mod error;
pub mod jsonb;
pub mod kafka;
pub mod metrics;
pub mod pipeline;
pub mod postgres;
pub mod preflight;
pub mod readiness;
pub mod rollup;
pub mod row;
pub mod status;
pub mod uri;

// The paths these modules had before they moved under `postgres`, which
// the integration tests use.
pub use postgres::{migrate, refuse, sql};

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

    // The recorder first: the descriptions and zeros below go to it.
    telemetry::install_recorder();
    metrics::describe();
    metrics::register_zeros(&cfg);
    let health = Health::new();
    // Writer 0 is the one that must work (it writes what the others cannot),
    // so readiness follows its connection.
    let readiness = readiness::Readiness::new(health.clone());
    // The telemetry server outlives `shutdown` until the sink has finished.
    let telemetry_stop = CancellationToken::new();
    let site_states = Arc::new(metrics::SiteStates::default());
    let server = serve_telemetry(&cfg, health, &site_states, &telemetry_stop).await?;

    let last_commit = Arc::new(AtomicU64::new(0));
    let made =
        kafka::consumer::consumer(&config.kafka, &cfg, readiness.clone(), last_commit.clone())
            .and_then(|c| Ok((c, publishers(&config.kafka, &cfg)?)));
    let (consumer, publishers) = match made {
        Ok(made) => made,
        Err(e) => {
            telemetry_stop.cancel();
            return Err(e);
        }
    };
    tokio::spawn(kafka::commit::commit_age_ticker(
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
    let pipeline = pipeline::Pipeline::new(
        cfg,
        target,
        tls,
        pipeline::Reports {
            readiness,
            site_states,
            last_commit,
        },
        shutdown,
        publishers,
    );
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

/// Serves `/metrics` (the registry, then the per-site state gauge of
/// `site_states`), `/healthz` and `/readyz` on `metrics_address` until `stop`.
async fn serve_telemetry(
    cfg: &SinkConfig,
    health: Health,
    site_states: &Arc<metrics::SiteStates>,
    stop: &CancellationToken,
) -> Result<telemetry::TelemetryServer, SinkError> {
    let states = Arc::clone(site_states);
    let hooks = telemetry::Hooks {
        reload: None,
        metrics: Some(Arc::new(move |out: &mut String| states.render(out))),
    };
    let server = telemetry::serve_with_hooks(
        &cfg.metrics_address,
        telemetry::install_recorder(),
        health,
        hooks,
        stop.clone(),
    )
    .await?;
    Ok(server)
}

/// The producers of the topics set in `cfg` besides the tables: the
/// transitions topic and the dead-letter topic.
fn publishers(
    kafka_cfg: &connector_common::kafka::KafkaConfig,
    cfg: &SinkConfig,
) -> Result<pipeline::Publishers, SinkError> {
    let make = |topic: &Option<String>| {
        topic
            .as_deref()
            .map(|t| kafka::outbox::Publisher::new(kafka_cfg, t, cfg.write_timeout))
            .transpose()
    };
    Ok(pipeline::Publishers {
        transitions: make(&cfg.status.transitions_topic)?,
        dead_letters: make(&cfg.dead_letter_topic)?,
    })
}

/// Runs the sink until `shutdown` fires and the batch in hand is written
/// (bounded by `shutdown_timeout`).
pub async fn run(config: Loaded<SinkConfig>, shutdown: CancellationToken) -> Result<(), SinkError> {
    start(config, shutdown).await?.wait().await
}
