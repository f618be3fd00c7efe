//! The source at scale: 100,000 sites at a 60 s interval — how late the
//! scheduler fires, how many ticks it skips, how much memory it holds.

use std::time::Duration;

use anyhow::Result;

use super::{measure_window, sites_file, source_config, start_source, Ctx};
use crate::proc::{histogram_quantile, metric_sum};
use crate::report::Figure;

const LATENESS: &str = "website_monitor_schedule_lateness_seconds";
const SKIPPED: &str = "website_monitor_skipped_ticks_total";

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
