//! The benchmark scenarios. Each returns its figures; each runs its baseline
//! in the same call.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::proc::{histogram_quantile, metric_sum, Connector, CpuSample};
use crate::report::Figure;
use website_monitor_tests::{create_topic, pg, producer, stack, unique, unique_ident, Stack};

const SOURCE_METRICS: &str = "127.0.0.1:19464";
const SINK_METRICS: &str = "127.0.0.1:19465";
const PRODUCED: &str = "website_monitor_records_produced_total";
const LATENESS: &str = "website_monitor_schedule_lateness_seconds";
const SKIPPED: &str = "website_monitor_skipped_ticks_total";

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

    fn n(&self, full: usize) -> usize {
        ((full as f64 * self.scale) as usize).max(1)
    }

    fn bin(&self, name: &str) -> PathBuf {
        self.root.join("target/release").join(name)
    }

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

fn sites_file(ctx: &Ctx, name: &str, count: usize) -> Result<PathBuf> {
    let mut text = String::with_capacity(count * 40);
    for i in 0..count {
        let _ = writeln!(text, "http://{}/s/{i}", ctx.http);
    }
    ctx.write(name, &text)
}

fn source_config(
    ctx: &Ctx,
    topic: &str,
    sites: &Path,
    interval: &str,
    concurrency: usize,
    keep_alive: bool,
) -> String {
    format!(
        "log_level = \"warn\"\n[kafka]\nbrokers = \"{brokers}\"\n[source]\ntopic = \"{topic}\"\nprobe = \"bench\"\ninterval = \"{interval}\"\ntimeout = \"5s\"\nconcurrency = {concurrency}\nkeep_alive = {keep_alive}\nper_site_metrics = false\nmetrics_address = \"{SOURCE_METRICS}\"\nsites_file = \"{sites}\"\n",
        brokers = ctx.stack.brokers,
        sites = sites.display(),
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
        SOURCE_METRICS,
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

/// Runs the source flat out (keep-alive, 8,000 sites at 100 ms) into a
/// throw-away topic for about 20 s before anything is measured: a broker that
/// has just started compiles its produce path (JIT) under the first load and
/// spent 2-3x its steady CPU per record in the first scenario of a clean-clone
/// run (0.011-0.014 against 0.004-0.005 CPU-s per 1,000 fresh checks), on the
/// cores the measured source needs. Reports the broker's CPU per 1,000 records
/// in the first and the last of three windows.
pub async fn warm_up_broker(ctx: &Ctx) -> Result<Vec<Figure>> {
    let topic = ctx.topic("bench-warm-up").await;
    let sites = sites_file(ctx, "throughput-sites.txt", ctx.n(8_000))?;
    let config = source_config(ctx, &topic, &sites, "100ms", 64, true);
    let c = start_source(ctx, "warm-up", &config, &[])?;
    let first = measure_window(&c, Duration::from_secs(2), Duration::from_secs(6))?;
    measure_window(&c, Duration::ZERO, Duration::from_secs(6))?;
    let last = measure_window(&c, Duration::ZERO, Duration::from_secs(6))?;
    c.stop()?;
    Ok(vec![
        Figure::plain(
            "warm_up.broker_cpu_s_per_1000_first",
            first.broker_cpu_per_1000,
            "cpu-s",
        ),
        Figure::plain(
            "warm_up.broker_cpu_s_per_1000_last",
            last.broker_cpu_per_1000,
            "cpu-s",
        ),
    ])
}

/// Source checks/s (acknowledged by Kafka) with fresh connections or keep-alive,
/// against ApacheBench on the same nginx in the same run.
pub async fn source_throughput(ctx: &Ctx, keep_alive: bool) -> Result<Vec<Figure>> {
    let label = if keep_alive { "keepalive" } else { "fresh" };
    let ab_requests = ctx.n(if keep_alive { 200_000 } else { 40_000 });
    let ab_run = ab(ctx, ab_requests, keep_alive)?;
    let topic = ctx.topic("bench-source").await;
    let sites = sites_file(ctx, "throughput-sites.txt", ctx.n(8_000))?;
    let config = source_config(ctx, &topic, &sites, "100ms", 64, keep_alive);
    let c = start_source(ctx, label, &config, &[])?;
    let w = measure_window(&c, Duration::from_secs(5), Duration::from_secs(15))?;
    let rss = c.peak_rss() as f64 / 1048576.0;
    c.stop()?;
    // ab again right after the window: the baseline of the source's rate is
    // the mean of the runs before and after, so a drift of the machine during
    // the window (ab's rate moved 14k-27k req/s between runs) hits both sides
    // alike. The diagnostics below run after it; the CPU baselines are ab's
    // first run.
    let ab_after = ab(ctx, ab_requests, keep_alive)?;
    let baseline = (ab_run.rate + ab_after.rate) / 2.0;
    // Diagnostics, same run: the same source writing JSON lines to /dev/null
    // instead of Kafka, a bare reqwest loop (no scheduler, no records) on a
    // work-stealing runtime (the calibration) and shaped like the
    // source's check threads, and the latter on hyper-util, reqwest's engine.
    let c = start_source(ctx, &format!("{label}-stdout"), &config, &["--stdout"])?;
    let no_kafka = measure_window(&c, Duration::from_secs(3), Duration::from_secs(10))?;
    c.stop()?;
    let requests = ctx.n(if keep_alive { 200_000 } else { 40_000 });
    let (bare, bare_cpu) = reqwest_loop(ctx, requests, keep_alive, Shape::WorkStealing).await?;
    let (per_core, per_core_cpu) = reqwest_loop(ctx, requests, keep_alive, Shape::PerCore).await?;
    let (hyper, hyper_cpu) = hyper_loop(ctx, requests, keep_alive).await?;
    let (baseline_name, target) = if keep_alive {
        ("ab -k -c 64, mean of before+after", "ratio >= 0.3")
    } else {
        ("ab -c 64 (fresh), mean of before+after", "ratio >= 0.7")
    };
    Ok(vec![
        Figure::against(
            &format!("source.{label}.checks_per_s"),
            w.rate,
            "checks/s",
            baseline,
            baseline_name,
            target,
        ),
        Figure::against(
            &format!("source.{label}.cpu_s_per_1000_checks"),
            w.cpu_per_1000,
            "cpu-s",
            ab_run.client_cpu_per_1000,
            "ab's own CPU per 1,000 requests",
            "diagnostic: the client's cost",
        ),
        Figure::against(
            &format!("source.{label}.nginx_cpu_s_per_1000_checks"),
            w.nginx_cpu_per_1000,
            "cpu-s",
            ab_run.nginx_cpu_per_1000,
            "nginx per 1,000 ab requests",
            "diagnostic: the server's cost",
        ),
        Figure::plain(&format!("source.{label}.ab_before"), ab_run.rate, "req/s"),
        Figure::plain(&format!("source.{label}.ab_after"), ab_after.rate, "req/s"),
        Figure::plain(&format!("source.{label}.peak_rss"), rss, "MiB"),
        // Where the machine's CPU went: with every core busy in both runs,
        // rates go inversely with the whole machine's CPU per item.
        Figure::plain(
            &format!("source.{label}.machine_busy"),
            w.machine_busy,
            "fraction",
        ),
        Figure::against(
            &format!("source.{label}.machine_cpu_s_per_1000_checks"),
            w.machine_cpu_per_1000,
            "cpu-s",
            ab_run.machine_cpu_per_1000,
            "ab + nginx per 1,000 requests",
            "diagnostic: all processes",
        ),
        Figure::plain(
            &format!("source.{label}.ab_machine_busy"),
            ab_run.machine_busy,
            "fraction",
        ),
        Figure::plain(
            &format!("source.{label}.broker_cpu_s_per_1000_checks"),
            w.broker_cpu_per_1000,
            "cpu-s",
        ),
        Figure::against(
            &format!("source.{label}.stdout_checks_per_s"),
            no_kafka.rate,
            "checks/s",
            baseline,
            baseline_name,
            "diagnostic: no Kafka",
        ),
        Figure::against(
            &format!("source.{label}.bare_reqwest_per_s"),
            bare,
            "req/s",
            baseline,
            baseline_name,
            "diagnostic: HTTP client alone",
        ),
        Figure::against(
            &format!("source.{label}.bare_reqwest_cpu_s_per_1000"),
            bare_cpu,
            "cpu-s",
            ab_run.client_cpu_per_1000,
            "ab's own CPU per 1,000 requests",
            "diagnostic: HTTP client alone",
        ),
        Figure::against(
            &format!("source.{label}.bare_reqwest_per_core_per_s"),
            per_core,
            "req/s",
            baseline,
            baseline_name,
            "diagnostic: HTTP client alone, shaped like the source",
        ),
        Figure::against(
            &format!("source.{label}.bare_reqwest_per_core_cpu_s_per_1000"),
            per_core_cpu,
            "cpu-s",
            ab_run.client_cpu_per_1000,
            "ab's own CPU per 1,000 requests",
            "diagnostic: HTTP client alone, shaped like the source",
        ),
        Figure::against(
            &format!("source.{label}.bare_hyper_per_core_per_s"),
            hyper,
            "req/s",
            baseline,
            baseline_name,
            "diagnostic: reqwest's engine alone",
        ),
        Figure::against(
            &format!("source.{label}.bare_hyper_per_core_cpu_s_per_1000"),
            hyper_cpu,
            "cpu-s",
            ab_run.client_cpu_per_1000,
            "ab's own CPU per 1,000 requests",
            "diagnostic: reqwest's engine alone",
        ),
    ])
}

/// How a bare loop runs its 64 tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// On the bench's own work-stealing runtime, one client: the issue's
    /// calibration ("a bare reqwest loop").
    WorkStealing,
    /// Like the source's check threads: one single-threaded runtime and one
    /// client per CPU core, each with its share of the tasks.
    PerCore,
}

/// 64 tasks calling `one` until `requests` calls are done, shaped as `shape`
/// (`make` gives each thread its `one`, with its own client); calls/s and
/// this process's CPU seconds per 1,000 calls.
async fn drive<M, F, Fut>(requests: usize, shape: Shape, make: M) -> Result<(f64, f64)>
where
    M: Fn() -> Result<F>,
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    const TASKS: usize = 64;
    fn tasks<F, Fut>(n: usize, one: F, left: &Arc<AtomicUsize>) -> Vec<tokio::task::JoinHandle<()>>
    where
        F: Fn() -> Fut + Clone + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        (0..n)
            .map(|_| {
                let (one, left) = (one.clone(), Arc::clone(left));
                tokio::spawn(async move {
                    while left
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                        .is_ok()
                    {
                        one().await;
                    }
                })
            })
            .collect()
    }
    let lanes = match shape {
        Shape::WorkStealing => 1,
        Shape::PerCore => std::thread::available_parallelism().map_or(1, usize::from),
    };
    // Every client first, so nothing runs when one cannot be made.
    let clients = (0..lanes).map(|_| make()).collect::<Result<Vec<_>>>()?;
    let left = Arc::new(AtomicUsize::new(requests));
    let started = Instant::now();
    let cpu0 = crate::proc::cpu_seconds(std::process::id());
    match shape {
        Shape::WorkStealing => {
            for one in clients {
                for t in tasks(TASKS, one, &left) {
                    t.await?;
                }
            }
        }
        Shape::PerCore => {
            let joins: Vec<_> = clients
                .into_iter()
                .enumerate()
                .map(|(i, one)| {
                    let left = Arc::clone(&left);
                    let n = TASKS / lanes + usize::from(i < TASKS % lanes);
                    std::thread::spawn(move || -> Result<()> {
                        // Made and dropped on its own thread, outside async code.
                        let rt = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()?;
                        rt.block_on(async move {
                            for t in tasks(n, one, &left) {
                                t.await?;
                            }
                            Ok(())
                        })
                    })
                })
                .collect();
            let joined = tokio::task::spawn_blocking(move || {
                joins
                    .into_iter()
                    .map(|t| {
                        t.join()
                            .map_err(|_| anyhow::anyhow!("a bare-loop thread panicked"))
                    })
                    .collect::<Vec<_>>()
            })
            .await?;
            for result in joined {
                result??;
            }
        }
    }
    let cpu = crate::proc::cpu_seconds(std::process::id()) - cpu0;
    Ok((
        requests as f64 / started.elapsed().as_secs_f64(),
        cpu / requests as f64 * 1000.0,
    ))
}

/// Fails unless the target answers 200 (a stopped target would make a bare
/// loop "fast").
async fn target_answers(ctx: &Ctx) -> Result<()> {
    let status = website_monitor_tests::http_client_builder()
        .build()?
        .get(format!("http://{}/", ctx.http))
        .send()
        .await?
        .status();
    if status != reqwest::StatusCode::OK {
        bail!("the bench target at {} answered {status}", ctx.http);
    }
    Ok(())
}

/// A bare reqwest loop (64 tasks, nothing else): requests/s and CPU per 1,000.
/// Fresh connections (no idle pool, `Connection: close`, as the source does)
/// unless `keep_alive`. One client per thread.
async fn reqwest_loop(
    ctx: &Ctx,
    requests: usize,
    keep_alive: bool,
    shape: Shape,
) -> Result<(f64, f64)> {
    target_answers(ctx).await?;
    let url: reqwest::Url = format!("http://{}/", ctx.http).parse()?;
    drive(requests, shape, || {
        let mut builder = website_monitor_tests::http_client_builder();
        if !keep_alive {
            let mut close = reqwest::header::HeaderMap::new();
            close.insert(
                reqwest::header::CONNECTION,
                reqwest::header::HeaderValue::from_static("close"),
            );
            builder = builder.pool_max_idle_per_host(0).default_headers(close);
        }
        let (client, url) = (builder.build()?, url.clone());
        Ok(move || {
            let (client, url) = (client.clone(), url.clone());
            async move {
                if let Ok(r) = client.get(url).send().await {
                    let _ = r.bytes().await;
                }
            }
        })
    })
    .await
}

/// The same loop on hyper-util's client, the HTTP/1 engine under reqwest,
/// shaped like the source: what reqwest's own layers cost.
async fn hyper_loop(ctx: &Ctx, requests: usize, keep_alive: bool) -> Result<(f64, f64)> {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::client::legacy::Client;
    target_answers(ctx).await?;
    let uri: hyper::Uri = format!("http://{}/", ctx.http).parse()?;
    drive(requests, Shape::PerCore, || {
        let mut builder = Client::builder(hyper_util::rt::TokioExecutor::new());
        if !keep_alive {
            builder.pool_max_idle_per_host(0);
        }
        // TCP_NODELAY, as reqwest sets it.
        let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
        connector.set_nodelay(true);
        let client: Client<_, Empty<bytes::Bytes>> = builder.build(connector);
        let uri = uri.clone();
        Ok(move || {
            let (client, uri) = (client.clone(), uri.clone());
            async move {
                let mut request = hyper::Request::get(uri);
                if !keep_alive {
                    request = request.header(hyper::header::CONNECTION, "close");
                }
                let Ok(request) = request.body(Empty::new()) else {
                    return;
                };
                if let Ok(r) = client.request(request).await {
                    let _ = r.into_body().collect().await;
                }
            }
        })
    })
    .await
}

/// 100,000 sites at a 60 s interval: lateness, skipped ticks, memory, rate.
pub async fn source_scale(ctx: &Ctx) -> Result<Vec<Figure>> {
    let topic = ctx.topic("bench-scale").await;
    let count = ctx.n(100_000);
    let sites = sites_file(ctx, "scale-sites.txt", count)?;
    let config = source_config(ctx, &topic, &sites, "60s", 1024, false);
    let c = start_source(ctx, "scale", &config, &[])?;
    let run = Duration::from_secs((120.0 * ctx.scale.max(0.2)) as u64);
    let w = measure_window(&c, Duration::from_secs(10), run)?;
    let text = c.scrape()?;
    let p50 = histogram_quantile(&text, LATENESS, 0.5).unwrap_or(f64::NAN);
    let p99 = histogram_quantile(&text, LATENESS, 0.99).unwrap_or(f64::NAN);
    let skipped = metric_sum(&text, SKIPPED);
    let rss = c.peak_rss() as f64 / 1048576.0;
    c.stop()?;
    Ok(vec![
        Figure::plain("scale.sites", count as f64, "sites"),
        Figure::plain("scale.checks_per_s", w.rate, "checks/s"),
        Figure::plain("scale.lateness_p50", p50 * 1000.0, "ms"),
        Figure::plain("scale.lateness_p99", p99 * 1000.0, "ms").with_target("< 100 ms"),
        Figure::plain("scale.skipped_ticks", skipped, "ticks"),
        Figure::plain("scale.peak_rss", rss, "MiB").with_target("< 256 MiB"),
    ])
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

/// A source-schema record of about 280 bytes.
fn record(i: usize, urls: usize, t: f64) -> String {
    let ok = i % 17 != 0;
    serde_json::json!({
        "url": format!("https://site-{}.example.com/", i % urls),
        "checked_at": t,
        "status_code": if ok { 200 } else { 503 },
        "duration": 0.0123 + (i % 100) as f64 / 1000.0,
        "re_check": ok,
        "ok": ok,
        "error": if ok { serde_json::Value::Null } else { serde_json::json!({"kind": "status", "message": "unexpected status 503"}) },
        "timings": {"dns": 0.0004, "connect": 0.0011, "tls": null, "ttfb": 0.0081, "transfer": 0.0002},
        "http_version": "HTTP/1.1",
        "response_bytes": 1256,
        "redirects": 0,
        "ip": "127.0.0.1",
        "tls": null,
        "probe": "bench",
        "schema_version": 1
    })
    .to_string()
}

/// Sink records/s (history + latest + offsets after commit) against a raw COPY
/// of the same rows into a plain jsonb table, in the same run.
pub async fn sink_throughput(ctx: &Ctx) -> Result<Vec<Figure>> {
    let n = ctx.n(300_000);
    let urls = ctx.n(3_000);
    let t0 = now_secs();
    let records: Vec<String> = (0..n)
        .map(|i| record(i, urls, t0 + i as f64 / 1000.0))
        .collect();
    let avg_bytes = records.iter().map(String::len).sum::<usize>() as f64 / n as f64;

    // Baseline: COPY the same JSON into a plain table, twice before the sink
    // and twice right after it (a fresh table each time). The fastest of each
    // pair counts and the baseline is their mean: the ratio is against the
    // COPY at its best, and a drift of the machine while the sink runs (the
    // same code's CPU per record moved 25-60 % between runs here) hits both
    // sides alike, as with ab around the source's window.
    let client = pg(&ctx.stack.postgres_uri).await;
    let mut text = String::with_capacity(n * 300);
    for r in &records {
        text.push_str(&r.replace('\\', "\\\\"));
        text.push('\n');
    }
    let copy_text = bytes_of(text);
    let mut copies = copy_rates(&client, &copy_text, 2).await?;

    // Fill a topic, then time the sink from its start to the last row.
    let topic = ctx.topic("bench-sink").await;
    fill_topic(&producer(&ctx.stack.brokers), &topic, &records).await?;
    read_through(&ctx.stack.brokers, &topic, n).await?;
    let schema = unique_ident("bench_sink");
    let config = ctx.write(
        "sink.toml",
        &format!(
            "log_level = \"warn\"\n[kafka]\nbrokers = \"{}\"\n[sink]\ntopic = \"{topic}\"\ngroup_id = \"{}\"\npostgres_uri = \"{}\"\nschema = \"{schema}\"\nmetrics_address = \"{SINK_METRICS}\"\n{}\n",
            ctx.stack.brokers,
            unique("bench-group"),
            ctx.stack.postgres_uri,
            ctx.sink_extra,
        ),
    )?;
    client
        .batch_execute(&format!("CREATE SCHEMA \"{schema}\""))
        .await?;
    let started = Instant::now();
    let cpu0 = CpuSample::now();
    let c = Connector::start(
        &ctx.bin("website-monitor-sink"),
        &config,
        SINK_METRICS,
        &ctx.work.join("sink.log"),
    )?;
    // Stored records, read from the sink's offsets table (a few rows, updated
    // in each batch's transaction): cheap to poll, unlike a count(*) over the
    // growing history table, which cost PostgreSQL ~9 s of CPU in one run.
    let stored_sql = format!(
        "SELECT coalesce(sum(next_offset), 0)::int8 FROM \"{schema}\".site_kafka_offsets WHERE topic = $1"
    );
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let done = match client.query_one(&stored_sql, &[&topic]).await {
            Ok(row) => row.get::<_, i64>(0) as usize >= n,
            Err(_) => false, // tables not created yet
        };
        if done {
            break;
        }
        if Instant::now() > deadline {
            bail!("the sink did not store {n} records within 600 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu1 = CpuSample::now();
    let rate = n as f64 / elapsed;
    // Where the time went: inside batch transactions, or elsewhere (start-up,
    // fetching, offset commits).
    let text = c.scrape()?;
    let write_s = metric_sum(&text, "website_monitor_batch_write_seconds_sum");
    let batches = metric_sum(&text, "website_monitor_batch_write_seconds_count");
    let cpu = c.cpu_seconds();
    let rss = c.peak_rss() as f64 / 1048576.0;
    c.stop()?;
    let latest: i64 = client
        .query_one(&format!("SELECT count(*) FROM \"{schema}\".site"), &[])
        .await?
        .get(0);
    client
        .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .await?;
    let before = copies.iter().copied().fold(0.0, f64::max);
    let after_rates = copy_rates(&client, &copy_text, 2).await?;
    let after = after_rates.iter().copied().fold(0.0, f64::max);
    copies.extend(after_rates);
    let copy_rate = (before + after) / 2.0;
    let copy_slowest = copies.iter().copied().fold(f64::INFINITY, f64::min);
    Ok(vec![
        Figure::plain("sink.records", n as f64, "records"),
        Figure::plain("sink.avg_record_bytes", avg_bytes, "bytes"),
        Figure::against(
            "sink.records_per_s",
            rate,
            "records/s",
            copy_rate,
            "raw COPY (jsonb): mean of the fastest of 2 before and of 2 after",
            "ratio >= 0.5",
        ),
        Figure::plain("sink.copy_before", before, "rows/s"),
        Figure::plain("sink.copy_after", after, "rows/s"),
        Figure::plain("sink.copy_slowest_of_4", copy_slowest, "rows/s"),
        Figure::plain("sink.latest_rows", latest as f64, "rows"),
        // Both per writer: each part of a batch is one writer's transaction.
        Figure::plain("sink.writer_transactions", batches, "transactions"),
        Figure::plain("sink.writers_busy_on_average", write_s / elapsed, "writers"),
        Figure::plain(
            "sink.cpu_s_per_1000_records",
            cpu / n as f64 * 1000.0,
            "cpu-s",
        ),
        Figure::plain("sink.peak_rss", rss, "MiB"),
        Figure::plain("sink.machine_busy", cpu1.busy_since(&cpu0), "fraction"),
        Figure::plain(
            "sink.postgres_cpu_s_per_1000_records",
            cpu1.used_by(&cpu0, "postgres") / n as f64 * 1000.0,
            "cpu-s",
        ),
    ])
}

/// A sink killed with -9 and started again in the same group: seconds from
/// the new process's start to its first stored record, with static
/// membership (`group_instance_id`, the same id again) against the baseline
/// of dynamic membership, where the dead member's partitions wait for its
/// session timeout (librdkafka default 45 s).
pub async fn sink_resume(ctx: &Ctx) -> Result<Vec<Figure>> {
    let client = pg(&ctx.stack.postgres_uri).await;
    let p = producer(&ctx.stack.brokers);
    let n = ctx.n(20_000).max(2_000);
    let mut took = Vec::new();
    for with_id in [true, false] {
        let topic = ctx.topic("bench-resume").await;
        let schema = unique_ident("bench_resume");
        client
            .batch_execute(&format!("CREATE SCHEMA \"{schema}\""))
            .await?;
        let t0 = now_secs();
        let records: Vec<String> = (0..n)
            .map(|i| record(i, 100, t0 + i as f64 / 1000.0))
            .collect();
        let id = if with_id {
            format!("group_instance_id = \"{}\"\n", unique("bench-sink"))
        } else {
            String::new()
        };
        let config = ctx.write(
            "sink-resume.toml",
            &format!(
                "log_level = \"warn\"\n[kafka]\nbrokers = \"{}\"\n[sink]\ntopic = \"{topic}\"\ngroup_id = \"{}\"\npostgres_uri = \"{}\"\nschema = \"{schema}\"\nbatch_size = 500\nmetrics_address = \"{SINK_METRICS}\"\n{id}",
                ctx.stack.brokers,
                unique("bench-group"),
                ctx.stack.postgres_uri,
            ),
        )?;
        let log = ctx.work.join("sink-resume.log");
        let stored_sql = format!(
            "SELECT coalesce(sum(next_offset), 0)::int8 FROM \"{schema}\".site_kafka_offsets WHERE topic = $1"
        );
        let stored = || stored_records(&client, &stored_sql, &topic);
        let (first, rest) = records.split_at(n / 2);
        fill_topic(&p, &topic, first).await?;
        let crashed = Connector::start(
            &ctx.bin("website-monitor-sink"),
            &config,
            SINK_METRICS,
            &log,
        )?;
        let deadline = Instant::now() + Duration::from_secs(120);
        while stored().await == 0 {
            if Instant::now() > deadline {
                bail!(
                    "the sink stored nothing within 120 s; see {}",
                    log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        crashed.kill9()?;
        fill_topic(&p, &topic, rest).await?;
        let at_kill = stored().await;
        let started = Instant::now();
        let again = Connector::start(
            &ctx.bin("website-monitor-sink"),
            &config,
            SINK_METRICS,
            &log,
        )?;
        let deadline = Instant::now() + Duration::from_secs(180);
        while stored().await <= at_kill {
            if Instant::now() > deadline {
                bail!(
                    "the restarted sink stored nothing within 180 s; see {}",
                    log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        took.push(started.elapsed().as_secs_f64());
        again.stop()?;
        client
            .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
            .await?;
    }
    Ok(vec![Figure::against(
        "sink.resume_after_kill9_s",
        took[0],
        "s",
        took[1],
        "dynamic membership (no group_instance_id)",
        "< 5 s",
    )])
}

/// What `sql` (a sum of `next_offset` for `topic`) says is stored; 0 before the tables exist.
async fn stored_records(client: &tokio_postgres::Client, sql: &str, topic: &str) -> i64 {
    client
        .query_one(sql, &[&topic])
        .await
        .map_or(0, |r| r.get::<_, i64>(0))
}

fn bytes_of(text: String) -> bytes::Bytes {
    bytes::Bytes::from(text)
}

/// Rows/s of `rounds` text COPYs of `text` into a fresh
/// `(id bigserial, data jsonb)` table each (dropped afterwards).
async fn copy_rates(
    client: &tokio_postgres::Client,
    text: &bytes::Bytes,
    rounds: usize,
) -> Result<Vec<f64>> {
    use futures::SinkExt;
    let mut rates = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let table = unique_ident("bench_copy");
        client
            .batch_execute(&format!(
                "CREATE TABLE \"{table}\" (id bigserial primary key, data jsonb)"
            ))
            .await?;
        let started = Instant::now();
        let sink = client
            .copy_in(&format!("COPY \"{table}\" (data) FROM STDIN"))
            .await?;
        futures::pin_mut!(sink);
        sink.send(text.clone()).await?;
        let copied = sink.finish().await?;
        rates.push(copied as f64 / started.elapsed().as_secs_f64());
        client
            .batch_execute(&format!("DROP TABLE \"{table}\""))
            .await?;
    }
    Ok(rates)
}

/// Reads `topic` once from the start, `n` records, and drops them: the
/// broker's fetch path is then warm, as a long-running broker's is. In the
/// first sink run after `make up` without it, the sink's 2 writers were
/// inside a transaction 1.39 of the time on average with the machine 79 %
/// busy — waiting for fetches; with it, 1.69 with the machine 89 % busy.
async fn read_through(brokers: &str, topic: &str, n: usize) -> Result<()> {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    let c: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("bench-warm-up"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    c.subscribe(&[topic])?;
    for _ in 0..n {
        tokio::time::timeout(Duration::from_secs(30), c.recv())
            .await
            .context("warming the broker up: the topic did not give its records back")??;
    }
    Ok(())
}

async fn fill_topic(p: &FutureProducer, topic: &str, records: &[String]) -> Result<()> {
    for chunk in records.chunks(10_000) {
        let sends = chunk.iter().map(|r| {
            let url = r
                .split("\"url\":\"")
                .nth(1)
                .and_then(|s| s.split('"').next())
                .unwrap_or("");
            p.send(
                FutureRecord::to(topic).key(url).payload(r.as_str()),
                Duration::from_secs(60),
            )
        });
        for res in futures::future::join_all(sends).await {
            res.map_err(|(e, _)| anyhow::anyhow!("filling {topic}: {e}"))?;
        }
    }
    Ok(())
}

/// Source → Kafka → sink at 5,000 checks/s: p50/p99 of (row insert time − checked_at),
/// measured in the database.
pub async fn end_to_end(ctx: &Ctx) -> Result<Vec<Figure>> {
    let topic = ctx.topic("bench-e2e").await;
    let sites = sites_file(ctx, "e2e-sites.txt", ctx.n(5_000))?;
    let schema = unique_ident("bench_e2e");
    let client = pg(&ctx.stack.postgres_uri).await;
    client
        .batch_execute(&format!("CREATE SCHEMA \"{schema}\""))
        .await?;
    let mut text = source_config(ctx, &topic, &sites, "1s", 1024, true);
    let _ = write!(
        text,
        "[sink]\ntopic = \"{topic}\"\ngroup_id = \"{}\"\npostgres_uri = \"{}\"\nschema = \"{schema}\"\nmetrics_address = \"{SINK_METRICS}\"\n{}\n",
        unique("bench-e2e-group"),
        ctx.stack.postgres_uri,
        ctx.sink_extra,
    );
    let config = ctx.write("e2e.toml", &text)?;
    let sink = Connector::start(
        &ctx.bin("website-monitor-sink"),
        &config,
        SINK_METRICS,
        &ctx.work.join("e2e-sink.log"),
    )?;
    let source = Connector::start(
        &ctx.bin("website-monitor-source"),
        &config,
        SOURCE_METRICS,
        &ctx.work.join("e2e-source.log"),
    )?;
    let warm = now_secs() + 10.0;
    let w = measure_window(&source, Duration::from_secs(10), Duration::from_secs(30))?;
    let until = now_secs() - 2.0;
    let (source_rss, sink_rss) = (source.peak_rss(), sink.peak_rss());
    source.stop()?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    sink.stop()?;
    let row = client
        .query_one(
            &format!(
                "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY lag), percentile_cont(0.99) WITHIN GROUP (ORDER BY lag), count(*) \
                 FROM (SELECT extract(epoch FROM inserted_at)::float8 - (data->>'checked_at')::float8 AS lag \
                       FROM \"{schema}\".site_check WHERE (data->>'checked_at')::float8 BETWEEN $1 AND $2) s"
            ),
            &[&warm, &until],
        )
        .await?;
    let (p50, p99, rows): (Option<f64>, Option<f64>, i64) = (row.get(0), row.get(1), row.get(2));
    // Per second of `checked_at`, for reading a tail: rows, p50, p99, max.
    let per_second = client
        .query(
            &format!(
                "SELECT floor(c)::int8 - floor($1::float8)::int8, count(*), \
                        percentile_cont(0.5) WITHIN GROUP (ORDER BY lag), percentile_cont(0.99) WITHIN GROUP (ORDER BY lag), max(lag) \
                 FROM (SELECT (data->>'checked_at')::float8 AS c, extract(epoch FROM inserted_at)::float8 - (data->>'checked_at')::float8 AS lag \
                       FROM \"{schema}\".site_check) s GROUP BY 1 ORDER BY 1"
            ),
            &[&(warm - 10.0)],
        )
        .await?;
    let mut table = String::from("second_since_source_start rows p50_ms p99_ms max_ms\n");
    for r in per_second {
        let (s, n, a, b, m): (i64, i64, f64, f64, f64) =
            (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
        let _ = writeln!(
            table,
            "{s} {n} {:.0} {:.0} {:.0}",
            a * 1e3,
            b * 1e3,
            m * 1e3
        );
    }
    ctx.write("e2e-latency-per-second.txt", &table)?;
    client
        .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .await?;
    Ok(vec![
        Figure::plain("e2e.checks_per_s", w.rate, "checks/s").with_target("5000 offered"),
        Figure::plain("e2e.rows_measured", rows as f64, "rows"),
        Figure::plain("e2e.latency_p50", p50.unwrap_or(f64::NAN) * 1000.0, "ms"),
        Figure::plain("e2e.latency_p99", p99.unwrap_or(f64::NAN) * 1000.0, "ms")
            .with_target("< 500 ms"),
        Figure::plain("e2e.source_peak_rss", source_rss as f64 / 1048576.0, "MiB"),
        Figure::plain("e2e.sink_peak_rss", sink_rss as f64 / 1048576.0, "MiB"),
    ])
}
