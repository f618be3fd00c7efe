//! The source connector of website-monitor: checks websites on a schedule and
//! writes one JSON record per check — failures included — into a Kafka topic.
//!
//! Layout, one role per module:
//! - [`config`]: the `[source]` section (defaults, per-site overrides, validation);
//! - [`sites`]: from the section to the sites of this instance (`sites_file`,
//!   defaults applied, `shard`);
//! - [`hash`]: the stable url hash behind shards and first-check offsets;
//! - [`check`]: one HTTP check with reqwest — phase timings, redirects, body
//!   cap, TLS facts, error kinds — producing a [`record::Record`];
//! - [`record`]: the record, the contract with the sink (DESIGN §3);
//! - [`schedule`]: per-site intervals, skipped ticks, the concurrency cap;
//! - [`publish`]: the Kafka producer (or stdout) and delivery accounting;
//! - [`metrics`]: metric names and their recording.
//!
//! [`start`] wires them: it resolves the sites, builds one HTTP client per
//! distinct TLS/keep-alive setting, serves `/metrics`, `/healthz` and
//! `/readyz`, creates the producer and starts the scheduler; it also raises the
//! open-file limit ([`limits`]). On `shutdown` it stops scheduling, lets the
//! checks in flight finish for at most `shutdown_timeout`, then cuts those
//! still running short (each still yields its record, of kind `timeout`,
//! "cancelled at shutdown"), flushes the producer (bounded by
//! `flush_timeout`), logs
//! `source stopped checks_finished=N delivered=N failed=N skipped_ticks=N`
//! and returns the same counts as a [`RunSummary`].

pub mod check;
pub mod config;
pub mod hash;
pub mod limits;
pub mod metrics;
pub mod publish;
pub mod record;
pub mod schedule;
pub mod sites;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use connector_common::config::{ConfigError, Loaded};
use connector_common::telemetry::{self, Health, TelemetryError};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

pub use config::SourceConfig;

/// After `shutdown_timeout` the checks still running are cancelled; they stop
/// at once, but their tasks still hand a record over, for at most this long.
const CANCEL_GRACE: Duration = Duration::from_secs(5);

/// How to run.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Check every site once, deliver, and return (`--once`).
    pub once: bool,
    /// Write JSON lines to stdout instead of Kafka (`--stdout`).
    pub stdout: bool,
}

/// Counts of a finished run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// Checks that finished and were handed to the output.
    pub checks_finished: u64,
    /// Records acknowledged by Kafka (or written to stdout).
    pub delivered: u64,
    /// Records that could not be delivered.
    pub failed: u64,
    /// Ticks skipped (a site's check still running, or the scheduler behind).
    pub skipped_ticks: u64,
}

/// Why the source could not start.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The configuration cannot be used (binaries exit with code 2).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An HTTP client could not be built.
    #[error(transparent)]
    Setup(#[from] check::SetupError),
    /// The Kafka producer could not be created.
    #[error(transparent)]
    Kafka(#[from] publish::PublishError),
    /// The telemetry server could not start.
    #[error(transparent)]
    Telemetry(#[from] TelemetryError),
    /// The run task panicked.
    #[error("the source stopped unexpectedly: {0}")]
    Crashed(String),
}

/// A started source.
pub struct Running {
    /// Where `/metrics`, `/healthz` and `/readyz` are served (`None` only in
    /// `--once` mode when the address was taken).
    pub metrics_address: Option<SocketAddr>,
    task: tokio::task::JoinHandle<RunSummary>,
}

impl Running {
    /// Waits until the source has stopped (after `shutdown`, or after one
    /// round with `once`).
    pub async fn wait(self) -> Result<RunSummary, SourceError> {
        self.task
            .await
            .map_err(|e| SourceError::Crashed(e.to_string()))
    }
}

/// Starts the source; see the crate documentation.
pub async fn start(
    config: Loaded<SourceConfig>,
    opts: RunOptions,
    shutdown: CancellationToken,
) -> Result<Running, SourceError> {
    let source = &config.section;
    let specs = sites::resolve(&config)?;
    let clients = check::build_clients(&specs)?;
    let sites: Arc<[schedule::Site]> = specs
        .into_iter()
        .map(|spec| {
            let client = clients[&spec.client].clone();
            schedule::Site::new(spec, client)
        })
        .collect();
    drop(clients);

    let health = Health::new();
    let telemetry_stop = CancellationToken::new();
    let served = telemetry::serve(
        &source.metrics_address,
        telemetry::install_recorder(),
        health.clone(),
        telemetry_stop.clone(),
    )
    .await;
    let metrics_address = match served {
        Ok(server) => Some(server.local_addr),
        Err(e) if opts.once => {
            tracing::warn!(error = %e, "no /metrics for this run");
            None
        }
        Err(e) => return Err(e.into()),
    };

    let publisher = Arc::new(if opts.stdout {
        publish::Publisher::Stdout(publish::StdoutPublisher::new(&health))
    } else {
        publish::Publisher::Kafka(publish::KafkaPublisher::new(
            &config.kafka,
            &source.topic,
            health.clone(),
        )?)
    });
    metrics::sites(sites.len());
    tracing::info!(
        sites = sites.len(),
        shard = %source.shard.map(|s| s.to_string()).unwrap_or_else(|| "all".into()),
        topic = %source.topic,
        probe = %source.probe,
        output = if opts.stdout { "stdout" } else { "kafka" },
        "source started"
    );
    if sites.is_empty() {
        tracing::warn!("no site falls in this shard; nothing to check");
    }
    let open_files = limits::raise_open_files();
    if let Some(warning) =
        limits::open_files_warning(source.concurrency.min(sites.len()), open_files)
    {
        tracing::warn!("{warning}");
    }

    let shared = Arc::new(schedule::Shared {
        publisher: Arc::clone(&publisher),
        probe: source.probe.clone(),
        per_site_metrics: source.per_site_metrics,
        metrics: metrics::CheckHandles::register(),
        in_flight: metrics::in_flight(),
        finished: Default::default(),
        skipped: Default::default(),
        abort: CancellationToken::new(),
    });
    // Validated to 1..=MAX_CONCURRENCY, so it fits.
    let concurrency = u32::try_from(source.concurrency).unwrap_or(u32::MAX);
    let permits = Arc::new(Semaphore::new(concurrency as usize));
    let flush_timeout = source.flush_timeout;
    let shutdown_timeout = source.shutdown_timeout;
    let task = tokio::spawn(async move {
        let stopping = shutdown.clone();
        if opts.once {
            schedule::run_once(sites, Arc::clone(&shared), Arc::clone(&permits), shutdown).await;
        } else {
            schedule::run(sites, Arc::clone(&shared), Arc::clone(&permits), shutdown).await;
        }
        health.set_not_ready("shutting down");
        // Every permit back means no check is running any more.
        let all = permits.acquire_many(concurrency);
        tokio::pin!(all);
        let deadline = async {
            stopping.cancelled().await;
            tokio::time::sleep(shutdown_timeout).await;
        };
        let drained = tokio::select! {
            _ = &mut all => true,
            () = deadline => false,
        };
        if !drained {
            let running = (concurrency as usize).saturating_sub(permits.available_permits());
            tracing::warn!(
                checks_running = running,
                "shutdown_timeout ({}) passed: cancelling the checks still running (each is recorded as a timeout, \"{}\")",
                humantime::format_duration(shutdown_timeout),
                check::CANCELLED_AT_SHUTDOWN
            );
            shared.abort.cancel();
            publisher.stop_waiting();
            if tokio::time::timeout(CANCEL_GRACE, &mut all).await.is_err() {
                tracing::warn!("some cancelled checks did not hand their record over in time; stopping without them");
            }
        }
        publisher.finish(flush_timeout).await;
        let (delivered, failed) = publisher.counts();
        let summary = RunSummary {
            checks_finished: shared.finished.load(Ordering::Relaxed),
            delivered,
            failed,
            skipped_ticks: shared.skipped.load(Ordering::Relaxed),
        };
        tracing::info!(
            "source stopped checks_finished={} delivered={} failed={} skipped_ticks={}",
            summary.checks_finished,
            summary.delivered,
            summary.failed,
            summary.skipped_ticks
        );
        telemetry_stop.cancel();
        summary
    });
    Ok(Running {
        metrics_address,
        task,
    })
}

/// Runs the source until `shutdown` (or one round with `opts.once`).
pub async fn run(
    config: Loaded<SourceConfig>,
    opts: RunOptions,
    shutdown: CancellationToken,
) -> Result<RunSummary, SourceError> {
    start(config, opts, shutdown).await?.wait().await
}
