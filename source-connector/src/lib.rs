//! The source connector of website-monitor: checks websites on a schedule and
//! writes one JSON record per check — failures included — into a Kafka topic.
//!
//! The flow, one way:
//!
//! ```text
//! connector.toml ─▶ config ─▶ sites ─▶ lanes ─▶ schedule ─▶ check ─▶ record ─▶ publish ─▶ Kafka
//!  (+ sites_file)   typed,    resolved,  threads,  ticks,      one HTTP   the       (or stdout)
//!                   checked   sharded    clients   permits     request    contract
//! ```
//!
//! Imports run one way, with no circle: `reload` → `lanes` → `schedule` → `check` →
//! `sites` → `config`; `reload` → `discovery` → `check` (its TLS roots),
//! `sites`, `hash`, `metrics`; `schedule` → `publish` → `metrics` → `record`;
//! `check` → `record`; `sites` and `schedule` → `hash`; only this file
//! imports `limits`. Inside a folder module the files import each other one
//! way too (each folder's doc lists them in order).
//!
//! Layout, one role per module:
//! - [`config`]: the `[source]` section read into typed, validated values
//!   (a url is a [`config::SiteUrl`], a regex a compiled [`config::Pattern`],
//!   a method a [`config::Method`]), every problem named by its key;
//! - [`sites`]: from the section to the sites of this instance (`sites_file`,
//!   defaults applied, `shard`), using those values as they are;
//! - [`hash`]: the stable url hash behind shards and first-check offsets;
//! - [`lanes`]: the check threads, each with its share of the sites, of
//!   `concurrency`, its own scheduler, runtime and HTTP clients;
//! - [`schedule`]: per-site intervals, skipped ticks, the concurrency cap;
//! - [`check`]: one HTTP check with reqwest — phase timings, redirects, body
//!   cap, TLS facts, error kinds — producing a [`record::Record`];
//! - [`record`]: the record, the contract with the sink;
//! - [`publish`]: the Kafka producer (or stdout), delivery accounting and
//!   backpressure;
//! - [`metrics`]: metric names and their recording;
//! - [`discovery`]: sites from outside the configuration — a compacted
//!   Kafka topic (split between instances by a consumer group) and
//!   Prometheus http_sd — combined with the configuration's;
//! - [`reload`]: SIGHUP, `POST /-/reload` and `reload_watch`: the
//!   configuration read again, checked, and its sites applied as a
//!   difference to the running lanes;
//! - [`limits`]: the open-file limit;
//! - [`preflight`]: `--check-live`, reaching Kafka and the topic.
//!
//! [`start`] wires them: it resolves the sites, deals them over the check
//! threads (each builds one HTTP client per distinct TLS/keep-alive setting),
//! serves `/metrics`, `/healthz` and `/readyz`, creates the producer and
//! starts the threads' schedulers; it also raises the
//! open-file limit ([`limits`]). On `shutdown` it stops scheduling, lets the
//! checks in flight finish for at most `shutdown_timeout`, then cuts those
//! still running short (each still yields its record, of kind `timeout`,
//! "cancelled at shutdown"), flushes the producer (bounded by
//! `flush_timeout`), logs
//! `source stopped checks_finished=N delivered=N failed=N skipped_ticks=N`
//! and returns the same counts as a [`RunSummary`].

pub mod check;
pub mod config;
pub mod discovery;
pub mod hash;
pub mod lanes;
pub mod limits;
pub mod metrics;
pub mod preflight;
pub mod publish;
pub mod record;
pub mod reload;
pub mod schedule;
pub mod sites;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use connector_common::config::{ConfigError, Loaded};
use connector_common::telemetry::{self, Health, TelemetryError};
use tokio_util::sync::{CancellationToken, DropGuard};

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

/// Why the source could not start, or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The configuration cannot be used (binaries exit with code 2).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An HTTP client or a check thread could not be set up.
    #[error(transparent)]
    Lanes(#[from] lanes::LaneError),
    /// The Kafka producer could not be created.
    #[error(transparent)]
    Kafka(#[from] publish::PublishError),
    /// The sites topic's consumer or the http_sd client could not be made.
    #[error(transparent)]
    Discovery(#[from] discovery::DiscoveryError),
    /// The telemetry server could not start.
    #[error(transparent)]
    Telemetry(#[from] TelemetryError),
    /// The run task or a check thread panicked.
    #[error("the source stopped unexpectedly: {0}")]
    Crashed(String),
}

/// A started source.
pub struct Running {
    /// Where `/metrics`, `/healthz` and `/readyz` are served (`None` only in
    /// `--once` mode when the address was taken).
    pub metrics_address: Option<SocketAddr>,
    /// Asks for a reload (`None` with `--once`).
    reload: Option<reload::ReloadHandle>,
    task: tokio::task::JoinHandle<Result<RunSummary, SourceError>>,
    /// Stops the check threads if this is dropped without a shutdown.
    _lanes: DropGuard,
}

impl Running {
    /// What reloads the configuration of this source (`None` with
    /// `--once`); the binary sends SIGHUP here.
    pub fn reload_handle(&self) -> Option<reload::ReloadHandle> {
        self.reload.clone()
    }

    /// Waits until the source has stopped (after `shutdown`, or after one
    /// round with `once`).
    pub async fn wait(self) -> Result<RunSummary, SourceError> {
        self.task
            .await
            .map_err(|e| SourceError::Crashed(e.to_string()))?
    }
}

/// Starts the source; see the crate documentation.
pub async fn start(
    config: Loaded<SourceConfig>,
    opts: RunOptions,
    shutdown: CancellationToken,
) -> Result<Running, SourceError> {
    let source = &config.section;
    let (specs, index) = sites::resolve_indexed(&config)?;
    let health = Health::new();
    let telemetry_stop = CancellationToken::new();
    // Stops the telemetry server if start-up fails past this point.
    let telemetry_guard = telemetry_stop.clone().drop_guard();
    // Requests wait in the channel until the reloader runs, once the lanes do.
    let (reload_handle, reload_requests) = reload::channel();
    let series = Arc::new(metrics::SiteSeries::default());
    let hooks = telemetry::Hooks {
        reload: (!opts.once).then(|| http_reload(&reload_handle)),
        metrics: Some(site_series(&series)),
    };
    let served = telemetry::serve_with_hooks(
        &source.metrics_address,
        telemetry::install_recorder(),
        health.clone(),
        hooks,
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

    // The lanes' own stop: shutdown, a crashed lane, a failed start, or
    // `Running` dropped.
    let stop = shutdown.child_token();
    let stop_if_failed = stop.clone().drop_guard();
    let (specs, outside) = outside_sites(&config, specs, &health, &stop).await?;
    let site_count = specs.len();
    // With sites from outside, the number of check threads does not
    // depend on how many sites there are at start.
    let at_least = if outside.is_some() { usize::MAX } else { 0 };
    let prepared = lanes::Prepared::new(
        specs,
        source.threads,
        source.concurrency,
        source.per_site_metrics,
        at_least,
    )?;
    let publisher = Arc::new(publisher(&config, opts, &health)?);
    metrics::sites(site_count);
    let shared = shared(source, &publisher, series);
    let open_files = limits::raise_open_files();
    if let Some(warning) =
        limits::open_files_warning(source.concurrency.min(site_count), open_files)
    {
        tracing::warn!("{warning}");
    }
    let lanes = prepared.start(&shared, opts.once, &stop)?;
    telemetry_guard.disarm();
    stop_if_failed.disarm();
    log_started(source, site_count, lanes.count(), opts);
    let ending = Ending {
        shared,
        publisher,
        health,
        telemetry_stop,
        flush_timeout: source.flush_timeout,
        shutdown_timeout: source.shutdown_timeout,
        lanes,
    };
    let reload = (!opts.once).then(|| {
        let (catalog, updates) = outside.unzip();
        let reloader = reload::Reloader {
            current: config,
            lanes: ending.lanes.commander(),
            env: connector_common::config::process_env,
            index: index.filter(|_| catalog.is_none()).map(Arc::new),
            catalog,
            updates,
        };
        start_reloader(reloader, reload_handle, reload_requests, &stop)
    });
    let task = tokio::spawn(ending.run(stop.clone()));
    Ok(Running {
        metrics_address,
        reload,
        task,
        _lanes: stop.drop_guard(),
    })
}

/// The sites of the configuration and, when `[source]` names a sites topic
/// or an http_sd url, theirs: the sources are started and read until each
/// has its first list (not ready meanwhile); the catalog and the updates
/// that follow go to the reloader.
async fn outside_sites(
    config: &Loaded<SourceConfig>,
    specs: Vec<sites::SiteSpec>,
    health: &Health,
    stop: &CancellationToken,
) -> Result<(Vec<sites::SiteSpec>, Option<(discovery::Catalog, Updates)>), SourceError> {
    let Some(mut found) = discovery::Discovery::start(config, stop)? else {
        return Ok((specs, None));
    };
    let source = &config.section;
    let mut waiting = Vec::new();
    if let Some(topic) = &source.sites_topic {
        waiting.push(format!("reading sites_topic {topic} to its end"));
    }
    if source.http_sd_url.is_some() {
        waiting.push("fetching http_sd_url".to_owned());
    }
    health.set_not_ready(waiting.join("; "));
    let mut catalog = discovery::Catalog::new(specs);
    found.initial(&mut catalog, config, stop).await;
    let all = catalog.combined(source);
    Ok((all, Some((catalog, found.updates))))
}

/// What the sources of sites send after their first list.
type Updates = tokio::sync::mpsc::Receiver<discovery::Update>;

/// Runs `reloader` until `stop`; the handle that asks it to reload.
fn start_reloader(
    reloader: reload::Reloader,
    handle: reload::ReloadHandle,
    requests: reload::Requests,
    stop: &CancellationToken,
) -> reload::ReloadHandle {
    tokio::spawn(reloader.run(requests, stop.clone()));
    handle
}

/// What `POST /-/reload` runs: a reload through `handle`, its counts or why
/// it was refused as the response.
fn http_reload(handle: &reload::ReloadHandle) -> telemetry::ReloadHook {
    let handle = handle.clone();
    Arc::new(move || {
        let handle = handle.clone();
        Box::pin(async move {
            let a = handle.reload(reload::Trigger::Http).await?;
            Ok(format!(
                "reloaded: added={} removed={} changed={} unchanged={} failed={} sites={} read_s={:.3} apply_s={:.3} how={}",
                a.added,
                a.removed,
                a.changed,
                a.unchanged,
                a.failed.len(),
                a.running,
                a.read.as_secs_f64(),
                a.apply.as_secs_f64(),
                a.how,
            ))
        })
    })
}

/// What `/metrics` adds to the registry's series: the per-url gauges.
fn site_series(series: &Arc<metrics::SiteSeries>) -> telemetry::ExtraMetrics {
    let series = Arc::clone(series);
    Arc::new(move |out: &mut String| series.render(out))
}

/// What every check task of `source` shares, writing to `publisher`, its
/// per-url gauges in `series`.
fn shared(
    source: &SourceConfig,
    publisher: &Arc<publish::Publisher>,
    series: Arc<metrics::SiteSeries>,
) -> Arc<schedule::Shared> {
    Arc::new(schedule::Shared {
        publisher: Arc::clone(publisher),
        probe: source.probe.clone(),
        per_site_metrics: source.per_site_metrics,
        series,
        metrics: metrics::CheckHandles::register(),
        in_flight: metrics::in_flight(),
        started: Default::default(),
        finished: Default::default(),
        skipped: Default::default(),
        abort: CancellationToken::new(),
    })
}

/// The output `opts` asks for: stdout, or a Kafka producer for the topic.
fn publisher(
    config: &Loaded<SourceConfig>,
    opts: RunOptions,
    health: &Health,
) -> Result<publish::Publisher, SourceError> {
    if opts.stdout {
        return Ok(publish::Publisher::Stdout(publish::StdoutPublisher::new(
            health,
        )));
    }
    let source = &config.section;
    let kafka = publish::KafkaPublisher::new(
        &config.kafka,
        &source.topic,
        publish::Buffer {
            max_records: source.max_buffered_records,
            delivery_timeout: source.delivery_timeout,
        },
        health.clone(),
    )?;
    Ok(publish::Publisher::Kafka(kafka))
}

/// Logs `source started` with what this instance does.
fn log_started(source: &SourceConfig, site_count: usize, threads: usize, opts: RunOptions) {
    tracing::info!(
        sites = site_count,
        threads,
        shard = %source.shard.map(|s| s.to_string()).unwrap_or_else(|| "all".into()),
        topic = %source.topic,
        probe = %source.probe,
        output = if opts.stdout { "stdout" } else { "kafka" },
        "source started"
    );
    if site_count == 0 && source.sites_topic.is_none() && source.http_sd_url.is_none() {
        tracing::warn!("no site falls in this shard; nothing to check");
    }
}

/// What a started source needs to stop: its check threads, their shared
/// state, the output, readiness and the telemetry server.
struct Ending {
    lanes: lanes::Lanes,
    shared: Arc<schedule::Shared>,
    publisher: Arc<publish::Publisher>,
    health: Health,
    telemetry_stop: CancellationToken,
    flush_timeout: Duration,
    shutdown_timeout: Duration,
}

impl Ending {
    /// Waits for `stop` (or, with `once`, for the lanes to end by
    /// themselves once every site was checked), then stops: see the crate
    /// documentation.
    async fn run(self, stop: CancellationToken) -> Result<RunSummary, SourceError> {
        let done = tokio::select! {
            () = stop.cancelled() => false,
            () = self.lanes.finished() => true,
        };
        self.health.set_not_ready(if self.lanes.crashed() {
            "a check thread crashed"
        } else {
            "shutting down"
        });
        if !done {
            self.let_checks_finish().await;
        }
        self.publisher.finish(self.flush_timeout).await;
        let (delivered, failed) = self.publisher.counts();
        let summary = RunSummary {
            checks_finished: self.shared.finished.load(Ordering::Relaxed),
            delivered,
            failed,
            skipped_ticks: self.shared.skipped.load(Ordering::Relaxed),
        };
        tracing::info!(
            "source stopped checks_finished={} delivered={} failed={} skipped_ticks={}",
            summary.checks_finished,
            summary.delivered,
            summary.failed,
            summary.skipped_ticks
        );
        self.telemetry_stop.cancel();
        if self.lanes.crashed() {
            return Err(SourceError::Crashed(
                "a check thread panicked (see the error logged before)".into(),
            ));
        }
        Ok(summary)
    }

    /// Lets the checks in flight finish for at most `shutdown_timeout`, then
    /// cancels those still running and waits [`CANCEL_GRACE`] for their
    /// records.
    async fn let_checks_finish(&self) {
        let finished = tokio::select! {
            () = self.lanes.finished() => true,
            () = tokio::time::sleep(self.shutdown_timeout) => false,
        };
        if finished {
            return;
        }
        tracing::warn!(
            checks_running = self.shared.running(),
            "shutdown_timeout ({}) passed: cancelling the checks still running (each is recorded as a timeout, \"{}\")",
            humantime::format_duration(self.shutdown_timeout),
            check::CANCELLED_AT_SHUTDOWN
        );
        self.shared.abort.cancel();
        self.publisher.stop_waiting();
        if tokio::time::timeout(CANCEL_GRACE, self.lanes.finished())
            .await
            .is_err()
        {
            tracing::warn!("some cancelled checks did not hand their record over in time; stopping without them");
        }
    }
}

/// Runs the source until `shutdown` (or one round with `opts.once`).
pub async fn run(
    config: Loaded<SourceConfig>,
    opts: RunOptions,
    shutdown: CancellationToken,
) -> Result<RunSummary, SourceError> {
    start(config, opts, shutdown).await?.wait().await
}
