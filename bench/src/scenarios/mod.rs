//! The benchmark scenarios. Each returns its figures; each runs its baseline
//! in the same call.
//!
//! This module holds what the scenarios share: the run's [`Ctx`], ApacheBench
//! runs, the source's config and start, the sink's start, and the measured
//! window of a running source. The scenarios, one room each:
//!
//! - [`source`]: the broker warm-up and the source's throughput against
//!   ApacheBench, with its diagnostics;
//! - [`bare`]: bare HTTP client loops (reqwest, hyper), the source
//!   throughput's calibration;
//! - [`scale`]: the source at 100,000 sites; [`million`]: at 1,000,000,
//!   with a reload of 1 % of them;
//! - [`sink`]: the sink's throughput against a raw `COPY`, keyed and
//!   keyless, and the bytes per stored check; [`records`]: the records and
//!   COPY baseline it shares with [`resume`]: a sink's resume after kill -9;
//! - [`dataset`](mod@dataset): a generated long-run data set (rollups and history, in SQL)
//!   and the SQL API's timings over it;
//! - [`e2e`]: source → Kafka → sink latency.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

use crate::proc::{metric_sum, Connector, CpuSample};
use website_monitor_tests::{create_topic, stack, unique, Stack};

mod bare;
mod dataset;
mod disk;
mod e2e;
mod million;
mod records;
mod resume;
mod scale;
mod sink;
mod source;

pub use dataset::dataset;
pub use e2e::end_to_end;
pub use million::source_million;
pub use records::Keys;
pub use resume::sink_resume;
pub use scale::source_scale;
pub use sink::sink_throughput;
pub use source::{source_throughput, warm_up_broker};

/// The source's telemetry address unless `WM_BENCH_SOURCE_METRICS` says
/// another (a second bench on the same machine).
const SOURCE_METRICS: &str = "127.0.0.1:19464";
const SINK_METRICS: &str = "127.0.0.1:19465";
const PRODUCED: &str = "website_monitor_records_produced_total";

/// What every scenario needs.
pub struct Ctx {
    /// The repository root.
    pub root: PathBuf,
    /// The local stack.
    pub stack: Stack,
    /// `host:port` of the nginx target.
    pub http: String,
    /// Scenario size factor (1.0 = full).
    pub scale: f64,
    /// Where configs and logs of this run go.
    pub work: PathBuf,
    /// Extra `[sink]` lines for experiments (`WM_BENCH_SINK_EXTRA`).
    pub sink_extra: String,
    /// The source's telemetry address (`WM_BENCH_SOURCE_METRICS`, default
    /// 127.0.0.1:19464).
    pub source_metrics: String,
    /// Topics this run made, deleted by [`Ctx::delete_topics`] at the end
    /// (a full run writes a few GB into them).
    topics: std::sync::Mutex<Vec<String>>,
}

impl Ctx {
    /// From the environment (see the crate doc).
    pub fn from_env() -> Result<Self> {
        let root = website_monitor_tests::repo_root();
        let http =
            std::env::var("WM_BENCH_HTTP").context("WM_BENCH_HTTP is not set; run `make bench`")?;
        let scale = std::env::var("WM_BENCH_SCALE")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1.0);
        let work = root.join("target/bench/run");
        std::fs::create_dir_all(&work)?;
        Ok(Self {
            stack: stack(),
            root,
            http,
            scale,
            work,
            sink_extra: std::env::var("WM_BENCH_SINK_EXTRA").unwrap_or_default(),
            source_metrics: std::env::var("WM_BENCH_SOURCE_METRICS")
                .unwrap_or_else(|_| SOURCE_METRICS.to_owned()),
            topics: std::sync::Mutex::default(),
        })
    }

    /// A new 4-partition topic named after `prefix`, deleted at the end of
    /// the run.
    async fn topic(&self, prefix: &str) -> String {
        let topic = unique(prefix);
        create_topic(&self.stack.brokers, &topic, 4).await;
        self.topics.lock().expect("topic list").push(topic.clone());
        topic
    }

    /// Deletes every topic this run made.
    pub async fn delete_topics(&self) -> Result<()> {
        let topics = std::mem::take(&mut *self.topics.lock().expect("topic list"));
        website_monitor_tests::delete_topics(&self.stack.brokers, &topics)
            .await
            .map_err(anyhow::Error::msg)
    }

    /// `full` shrunk by the scale factor, at least 1.
    fn n(&self, full: usize) -> usize {
        ((full as f64 * self.scale) as usize).max(1)
    }

    /// The release binary `name`.
    fn bin(&self, name: &str) -> PathBuf {
        self.root.join("target/release").join(name)
    }

    /// Writes `text` to `name` in the run's work directory; its path.
    fn write(&self, name: &str, text: &str) -> Result<PathBuf> {
        let p = self.work.join(name);
        std::fs::write(&p, text)?;
        Ok(p)
    }
}

/// What ApacheBench did: requests/s, and the machine's CPU meanwhile.
struct AbRun {
    rate: f64,
    /// Busy share of all cores during the run (0..1).
    machine_busy: f64,
    /// Busy CPU seconds of the whole machine per 1,000 requests.
    machine_cpu_per_1000: f64,
    /// CPU seconds of `ab` itself per 1,000 requests.
    client_cpu_per_1000: f64,
    /// CPU seconds of nginx per 1,000 requests.
    nginx_cpu_per_1000: f64,
}

/// Runs ApacheBench against the target.
fn ab(ctx: &Ctx, requests: usize, keep_alive: bool) -> Result<AbRun> {
    let mut cmd = Command::new("ab");
    cmd.args(["-q", "-n", &requests.to_string(), "-c", "64"]);
    if keep_alive {
        cmd.arg("-k");
    }
    let before = CpuSample::now();
    let children0 = crate::proc::waited_children_cpu_seconds();
    let out = cmd
        .arg(format!("http://{}/", ctx.http))
        .output()
        .context("running ab")?;
    let after = CpuSample::now();
    let ab_cpu = crate::proc::waited_children_cpu_seconds() - children0;
    let text = String::from_utf8_lossy(&out.stdout);
    let rate: f64 = text
        .lines()
        .find(|l| l.starts_with("Requests per second:"))
        .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        .with_context(|| format!("ab printed no rate: {text}"))?;
    Ok(AbRun {
        rate,
        machine_busy: after.busy_since(&before),
        machine_cpu_per_1000: after.busy_seconds_since(&before) / requests as f64 * 1000.0,
        client_cpu_per_1000: ab_cpu / requests as f64 * 1000.0,
        nginx_cpu_per_1000: after.used_by(&before, "nginx") / requests as f64 * 1000.0,
    })
}

/// A sites file `name` of `count` distinct paths on the target.
fn sites_file(ctx: &Ctx, name: &str, count: usize) -> Result<PathBuf> {
    let mut text = String::with_capacity(count * 40);
    for i in 0..count {
        let _ = writeln!(text, "http://{}/s/{i}", ctx.http);
    }
    ctx.write(name, &text)
}

/// The source's config (TOML) for one scenario.
fn source_config(
    ctx: &Ctx,
    topic: &str,
    sites: &Path,
    interval: &str,
    concurrency: usize,
    keep_alive: bool,
) -> String {
    format!(
        "log_level = \"warn\"\n[kafka]\nbrokers = \"{brokers}\"\n[source]\ntopic = \"{topic}\"\nprobe = \"bench\"\ninterval = \"{interval}\"\ntimeout = \"5s\"\nconcurrency = {concurrency}\nkeep_alive = {keep_alive}\nper_site_metrics = false\nmetrics_address = \"{metrics}\"\nsites_file = \"{sites}\"\n",
        brokers = ctx.stack.brokers,
        sites = sites.display(),
        metrics = ctx.source_metrics,
    )
}

/// Writes `config` to `source-{name}.toml` and starts the release source on
/// it with `flags`, logging to `source-{name}.log`.
fn start_source(ctx: &Ctx, name: &str, config: &str, flags: &[&str]) -> Result<Connector> {
    let path = ctx.write(&format!("source-{name}.toml"), config)?;
    Connector::start_with(
        &ctx.bin("website-monitor-source"),
        &path,
        flags,
        &ctx.source_metrics,
        &ctx.work.join(format!("source-{name}.log")),
    )
}

/// Acknowledged records/s and CPU per 1,000 checks over a steady window.
struct Window {
    rate: f64,
    cpu_per_1000: f64,
    /// Busy share of all cores during the window (0..1).
    machine_busy: f64,
    /// Busy CPU seconds of the whole machine per 1,000 checks.
    machine_cpu_per_1000: f64,
    /// CPU seconds of the Kafka broker (the only `java` process) per 1,000 checks.
    broker_cpu_per_1000: f64,
    /// CPU seconds of nginx per 1,000 checks.
    nginx_cpu_per_1000: f64,
}

/// Waits `warmup`, then measures the source `c` over `window`; fails when
/// nothing was acknowledged.
fn measure_window(c: &Connector, warmup: Duration, window: Duration) -> Result<Window> {
    std::thread::sleep(warmup);
    let (p0, cpu0, m0, t0) = (
        metric_sum(&c.scrape()?, PRODUCED),
        c.cpu_seconds(),
        CpuSample::now(),
        Instant::now(),
    );
    std::thread::sleep(window);
    let (p1, cpu1, m1, dt) = (
        metric_sum(&c.scrape()?, PRODUCED),
        c.cpu_seconds(),
        CpuSample::now(),
        t0.elapsed(),
    );
    let checks = p1 - p0;
    if checks <= 0.0 {
        bail!("no records were acknowledged during the window");
    }
    let per_1000 = |cpu: f64| cpu / checks * 1000.0;
    Ok(Window {
        rate: checks / dt.as_secs_f64(),
        cpu_per_1000: per_1000(cpu1 - cpu0),
        machine_busy: m1.busy_since(&m0),
        machine_cpu_per_1000: per_1000(m1.busy_seconds_since(&m0)),
        broker_cpu_per_1000: per_1000(m1.used_by(&m0, "java")),
        nginx_cpu_per_1000: per_1000(m1.used_by(&m0, "nginx")),
    })
}

/// Starts the release sink on `config`, logging to `log`.
fn start_sink(ctx: &Ctx, config: &Path, log: &Path) -> Result<Connector> {
    Connector::start(&ctx.bin("website-monitor-sink"), config, SINK_METRICS, log)
}

/// Seconds since the Unix epoch, as the records' `checked_at`.
fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}
