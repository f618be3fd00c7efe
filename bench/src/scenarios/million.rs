//! A million sites in one source (issue 15): 1,000,000 urls of the nginx
//! target in a 32 MB `sites_file`, every 120 s (8,333 checks/s),
//! `per_site_metrics = false`, keep-alive (this scenario measures the
//! scheduler and the memory at that size; the cost of a fresh connection is
//! the `source` scenario's), into Kafka. It reports, against the issue's
//! targets: the time to `/readyz`, the peak RSS, the checks/s over one full
//! interval, how late the checks started over that interval (p50/p90/p99
//! from the lateness histogram's change over the window, not since start),
//! and a reload that changes 1 % of the sites (1 % removed, as many added,
//! written to a new file renamed over the old one): the time `POST
//! /-/reload` takes, the source's part of it from reading the file to the
//! lanes having applied it (`read_s` + `apply_s` of its answer: reading and
//! checking the file, then the lanes' apply; the target is on their sum),
//! and over the next full interval the checks per site and
//! interval and the skipped ticks (a missed tick is skipped, a doubled one
//! is an extra check). Then a reload that changes a `[source]` default
//! (`timeout`), so every site: its time and the peak RSS after it (the
//! first peak figure is taken before it). Then, as a diagnostic, the same source with `--stdout`:
//! ready time, peak RSS and lateness over a shorter window.
//!
//! `WM_BENCH_SCALE` shrinks the number of sites and the interval alike, so
//! the check rate (the scheduler's load) stays the same. Every figure comes
//! with the machine's 1-minute load average: the dev machine is shared.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::{source_config, start_source, Ctx};
use crate::proc::{histogram_quantile_between, http_get, http_post, metric_sum, Connector};
use crate::report::Figure;

const LATENESS: &str = "website_monitor_schedule_lateness_seconds";
const SKIPPED: &str = "website_monitor_skipped_ticks_total";
const PRODUCED: &str = "website_monitor_records_produced_total";
const MIB: f64 = 1048576.0;

/// One run of the source on the million sites.
struct Run {
    ready: f64,
    rss_after_start: f64,
    checks_per_s: f64,
    lateness: [f64; 3],
    skipped: f64,
    load: f64,
}

/// The million-site scenario; see the module documentation.
pub async fn source_million(ctx: &Ctx) -> Result<Vec<Figure>> {
    let count = ctx.n(1_000_000);
    let interval = Duration::from_secs_f64((120.0 * ctx.scale).clamp(2.0, 120.0));
    let sites = ctx.work.join("million-sites.txt");
    std::fs::write(&sites, urls(ctx, count, |_| false))?;
    let topic = ctx.topic("bench-million").await;
    let config = source_config(ctx, &topic, &sites, &humantime_secs(interval), 1024, true);
    let (c, kafka) = start_and_measure(ctx, "million", &config, &[], interval)?;
    let expected = count as f64 / interval.as_secs_f64();

    // The reload: 1 % of the urls replaced by others, the file renamed over.
    let changed = count / 100;
    let next = ctx.work.join("million-sites.next");
    std::fs::write(&next, urls(ctx, count, |i| i % 100 == 0))?;
    std::fs::rename(&next, &sites)?;
    let before = c.scrape()?;
    let asked = Instant::now();
    let answer = http_post(&c.metrics, "/-/reload")?;
    let reload_s = asked.elapsed().as_secs_f64();
    let wanted = format!("added={changed} removed={changed}");
    if !answer.contains(&wanted) {
        bail!("the reload answered {answer:?}, not {wanted}");
    }
    std::thread::sleep(interval);
    let after = c.scrape()?;
    // Per interval: the window is the interval plus the reload's own time.
    let rounds = asked.elapsed().as_secs_f64() / interval.as_secs_f64();
    let produced = metric_sum(&after, PRODUCED) - metric_sum(&before, PRODUCED);
    let per_site = produced / count as f64 / rounds;
    let apply_s = seconds(&answer, "apply_s=");
    let read_s = seconds(&answer, "read_s=");
    let reload_skipped = metric_sum(&after, SKIPPED) - metric_sum(&before, SKIPPED);
    let reload_load = load_average();
    let peak = c.peak_rss() as f64 / MIB;

    // A `[source]` default changed (timeout 5 s -> 4 s): every site changes;
    // surveyed and applied a chunk at a time, beside the running sites.
    ctx.write(
        "source-million.toml",
        &config.replace("timeout = \"5s\"", "timeout = \"4s\""),
    )?;
    let asked = Instant::now();
    let answer = http_post(&c.metrics, "/-/reload")?;
    let defaults_s = asked.elapsed().as_secs_f64();
    let wanted = format!("changed={count} ");
    if !answer.contains(&wanted) || !answer.contains("how=survey") {
        bail!("the defaults reload answered {answer:?}, not {wanted} how=survey");
    }
    let defaults_read_apply = seconds(&answer, "read_s=") + seconds(&answer, "apply_s=");
    let defaults_peak = c.peak_rss() as f64 / MIB;
    let defaults_load = load_average();
    c.stop()?;

    let (c, stdout) = start_and_measure(
        ctx,
        "million-stdout",
        &config,
        &["--stdout"],
        interval.min(Duration::from_secs(30)),
    )?;
    let stdout_peak = c.peak_rss() as f64 / MIB;
    c.stop()?;

    let mut figures = vec![
        Figure::plain("million.sites", count as f64, "sites"),
        Figure::plain("million.interval", interval.as_secs_f64(), "s"),
    ];
    figures.extend(run_figures("million.kafka", &kafka, expected));
    figures.extend([
        Figure::plain("million.kafka.peak_rss", peak, "MiB").with_target("< 512 MiB"),
        Figure::plain("million.reload_1pct_s", reload_s, "s"),
        Figure::plain("million.reload_1pct_read_s", read_s, "s"),
        Figure::plain("million.reload_1pct_apply_s", apply_s, "s"),
        Figure::plain("million.reload_1pct_read_apply_s", read_s + apply_s, "s")
            .with_target("< 1 s"),
        Figure::plain("million.after_reload.checks_per_site", per_site, "checks")
            .with_target("1.00 (one interval)"),
        Figure::plain(
            "million.after_reload.skipped_ticks",
            reload_skipped,
            "ticks",
        )
        .with_target("0"),
        Figure::plain("million.after_reload.load_avg_1m", reload_load, "load"),
        Figure::plain("million.reload_defaults_s", defaults_s, "s"),
        Figure::plain(
            "million.reload_defaults_read_apply_s",
            defaults_read_apply,
            "s",
        ),
        Figure::plain("million.reload_defaults.peak_rss", defaults_peak, "MiB")
            .with_target("< 512 MiB"),
        Figure::plain("million.reload_defaults.load_avg_1m", defaults_load, "load"),
    ]);
    figures.extend(run_figures("million.stdout", &stdout, expected));
    figures.push(
        Figure::plain("million.stdout.peak_rss", stdout_peak, "MiB").with_target("< 512 MiB"),
    );
    Ok(figures)
}

/// Starts the source on `config` and measures it; the running source.
fn start_and_measure(
    ctx: &Ctx,
    name: &str,
    config: &str,
    flags: &[&str],
    window: Duration,
) -> Result<(Connector, Run)> {
    let started = Instant::now();
    let c = start_source(ctx, name, config, flags)?;
    while http_get(&c.metrics, "/readyz").is_err() {
        if started.elapsed() > Duration::from_secs(120) {
            bail!("{name}: not ready within 120 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let ready = started.elapsed().as_secs_f64();
    let rss_after_start = c.rss() as f64 / MIB;
    // The first seconds are not the steady state (the lanes start, Kafka's
    // producer warms up): measured from 10 s on.
    std::thread::sleep(Duration::from_secs(10));
    let (before, t0) = (c.scrape()?, Instant::now());
    std::thread::sleep(window);
    let (after, dt) = (c.scrape()?, t0.elapsed().as_secs_f64());
    let q = |q| histogram_quantile_between(&before, &after, LATENESS, q).unwrap_or(f64::NAN);
    let run = Run {
        ready,
        rss_after_start,
        checks_per_s: (metric_sum(&after, PRODUCED) - metric_sum(&before, PRODUCED)) / dt,
        lateness: [q(0.5), q(0.9), q(0.99)],
        skipped: metric_sum(&after, SKIPPED) - metric_sum(&before, SKIPPED),
        load: load_average(),
    };
    Ok((c, run))
}

/// The figures of one run, named `prefix.*`; `expected` checks/s.
fn run_figures(prefix: &str, r: &Run, expected: f64) -> Vec<Figure> {
    let f = |name: &str, value, unit| Figure::plain(&format!("{prefix}.{name}"), value, unit);
    vec![
        f("ready", r.ready, "s").with_target("< 5 s"),
        f("rss_after_start", r.rss_after_start, "MiB"),
        Figure::against(
            &format!("{prefix}.checks_per_s"),
            r.checks_per_s,
            "checks/s",
            expected,
            "sites / interval",
            "ratio >= 0.99",
        ),
        f("lateness_p50", r.lateness[0] * 1000.0, "ms"),
        f("lateness_p90", r.lateness[1] * 1000.0, "ms"),
        f("lateness_p99", r.lateness[2] * 1000.0, "ms").with_target("< 100 ms"),
        f("skipped_ticks", r.skipped, "ticks").with_target("0"),
        f("load_avg_1m", r.load, "load"),
    ]
}

/// `count` urls of the target, one a line; those `moved` say `/r/` instead
/// of `/s/` (another site).
fn urls(ctx: &Ctx, count: usize, moved: impl Fn(usize) -> bool) -> String {
    let mut text = String::with_capacity(count * 40);
    for i in 0..count {
        let dir = if moved(i) { "r" } else { "s" };
        let _ = writeln!(text, "http://{}/{dir}/{i}", ctx.http);
    }
    text
}

/// `d` as a humantime duration in milliseconds.
fn humantime_secs(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// The number after `key` in the reload's answer (NaN when missing).
fn seconds(answer: &str, key: &str) -> f64 {
    answer
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// The machine's 1-minute load average.
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .context("/proc/loadavg")
        .unwrap_or(f64::NAN)
}
