//! The source scenarios: the broker's warm-up, and the source's checks/s with
//! fresh connections or keep-alive against ApacheBench on the same nginx,
//! with the diagnostics run after it (the source writing to /dev/null, bare
//! HTTP client loops from [`super::bare`]).

use std::time::Duration;

use anyhow::Result;

use super::bare::{hyper_loop, reqwest_loop, Shape};
use super::{ab, measure_window, sites_file, source_config, start_source, AbRun, Ctx, Window};
use crate::report::Figure;

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

/// What one source-throughput run measured, named in the order it was measured.
struct SourceRun {
    /// ApacheBench before the source's window; also the CPU baselines.
    ab_before: AbRun,
    /// ApacheBench right after the source's window.
    ab_after: AbRun,
    /// The source into Kafka.
    window: Window,
    /// The source's peak RSS, MiB.
    rss: f64,
    /// The same source writing JSON lines to /dev/null.
    no_kafka: Window,
    /// Bare reqwest loop on a work-stealing runtime: (req/s, CPU-s per 1,000).
    bare: (f64, f64),
    /// Bare reqwest loop shaped like the source: (req/s, CPU-s per 1,000).
    per_core: (f64, f64),
    /// Bare hyper-util loop shaped like the source: (req/s, CPU-s per 1,000).
    hyper: (f64, f64),
}

/// Source checks/s (acknowledged by Kafka) with fresh connections or keep-alive,
/// against ApacheBench on the same nginx in the same run.
pub async fn source_throughput(ctx: &Ctx, keep_alive: bool) -> Result<Vec<Figure>> {
    let label = if keep_alive { "keepalive" } else { "fresh" };
    let run = measure_source(ctx, label, keep_alive).await?;
    let baseline = (run.ab_before.rate + run.ab_after.rate) / 2.0;
    let (baseline_name, target) = if keep_alive {
        ("ab -k -c 64, mean of before+after", "ratio >= 0.3")
    } else {
        ("ab -c 64 (fresh), mean of before+after", "ratio >= 0.7")
    };
    let mut figures = source_figures(label, &run, baseline, baseline_name, target);
    figures.extend(diagnostic_figures(label, &run, baseline, baseline_name));
    Ok(figures)
}

/// ab, the source's window, ab again, then the diagnostics, in that order.
async fn measure_source(ctx: &Ctx, label: &str, keep_alive: bool) -> Result<SourceRun> {
    let ab_requests = ctx.n(if keep_alive { 200_000 } else { 40_000 });
    let ab_before = ab(ctx, ab_requests, keep_alive)?;
    let topic = ctx.topic("bench-source").await;
    let sites = sites_file(ctx, "throughput-sites.txt", ctx.n(8_000))?;
    let config = source_config(ctx, &topic, &sites, "100ms", 64, keep_alive);
    let c = start_source(ctx, label, &config, &[])?;
    let window = measure_window(&c, Duration::from_secs(5), Duration::from_secs(15))?;
    let rss = c.peak_rss() as f64 / 1048576.0;
    c.stop()?;
    // ab again right after the window: the baseline of the source's rate is
    // the mean of the runs before and after, so a drift of the machine during
    // the window (ab's rate moved 14k-27k req/s between runs) hits both sides
    // alike. The diagnostics below run after it; the CPU baselines are ab's
    // first run.
    let ab_after = ab(ctx, ab_requests, keep_alive)?;
    // Diagnostics, same run: the same source writing JSON lines to /dev/null
    // instead of Kafka, a bare reqwest loop (no scheduler, no records) on a
    // work-stealing runtime (the calibration) and shaped like the
    // source's check threads, and the latter on hyper-util, reqwest's engine.
    let c = start_source(ctx, &format!("{label}-stdout"), &config, &["--stdout"])?;
    let no_kafka = measure_window(&c, Duration::from_secs(3), Duration::from_secs(10))?;
    c.stop()?;
    let requests = ctx.n(if keep_alive { 200_000 } else { 40_000 });
    let bare = reqwest_loop(ctx, requests, keep_alive, Shape::WorkStealing).await?;
    let per_core = reqwest_loop(ctx, requests, keep_alive, Shape::PerCore).await?;
    let hyper = hyper_loop(ctx, requests, keep_alive).await?;
    Ok(SourceRun {
        ab_before,
        ab_after,
        window,
        rss,
        no_kafka,
        bare,
        per_core,
        hyper,
    })
}

/// The source's own figures: rate, CPU, memory, and where the machine's CPU went.
fn source_figures(
    label: &str,
    run: &SourceRun,
    baseline: f64,
    baseline_name: &str,
    target: &str,
) -> Vec<Figure> {
    let (w, ab_run) = (&run.window, &run.ab_before);
    vec![
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
        Figure::plain(
            &format!("source.{label}.ab_after"),
            run.ab_after.rate,
            "req/s",
        ),
        Figure::plain(&format!("source.{label}.peak_rss"), run.rss, "MiB"),
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
    ]
}

/// The diagnostics' figures: the source without Kafka, the bare client loops.
fn diagnostic_figures(
    label: &str,
    run: &SourceRun,
    baseline: f64,
    baseline_name: &str,
) -> Vec<Figure> {
    let client_cpu = run.ab_before.client_cpu_per_1000;
    let (bare, bare_cpu) = run.bare;
    let (per_core, per_core_cpu) = run.per_core;
    let (hyper, hyper_cpu) = run.hyper;
    vec![
        Figure::against(
            &format!("source.{label}.stdout_checks_per_s"),
            run.no_kafka.rate,
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
            client_cpu,
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
            client_cpu,
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
            client_cpu,
            "ab's own CPU per 1,000 requests",
            "diagnostic: reqwest's engine alone",
        ),
    ]
}
