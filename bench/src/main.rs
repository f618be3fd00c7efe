//! `make bench`: the website-monitor connectors measured against baselines run
//! in the same process, on the same machine, at the same time — so the ratios
//! hold when the machine's speed drifts. Benchmarks report; they never fail on
//! a time.
//!
//! Scenarios ([`scenarios`]): source throughput with fresh connections and with
//! keep-alive (baseline: ApacheBench on the same nginx), source at 100,000 sites
//! (lateness, memory) and at 1,000,000 (with a reload of 1 %), sink throughput with records keyed by url and without a
//! key (baseline: a raw `COPY` of the same rows) and its bytes per stored check,
//! a sink's resume after kill -9 with static membership (baseline: dynamic
//! membership), end-to-end latency at 5,000 checks/s, and the SQL API's query
//! times over a generated long-run data set (10,000 sites of rollups). Every
//! connector runs as a real release process ([`proc`]); the figures go to a
//! table on stdout and to
//! `target/bench/results.json` ([`report`]). Before the source and
//! end-to-end scenarios the broker is warmed up with 20 s of source traffic
//! ([`scenarios::warm_up_broker`]); every topic the run made is deleted at its
//! end, also when a scenario fails.
//!
//! Environment: `WM_BENCH_HTTP` (the nginx target, set by `scripts/bench.sh`),
//! `WM_BENCH_ONLY` (comma-separated scenario names to run: `source`, `scale`,
//! `million`, `sink`, `sink_keyless`, `resume`, `e2e`, `dataset`), `WM_BENCH_SCALE`
//! (a factor < 1 shrinks every scenario, for a quick try), `WM_BENCH_SOURCE_METRICS`
//! (the source's telemetry address, default 127.0.0.1:19464).

mod proc;
mod report;
mod scenarios;

use anyhow::{Context, Result};

/// The source's allocator, so the bare reqwest loop measures the HTTP client
/// under the same allocator as the connector it is compared with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<()> {
    let ctx = scenarios::Ctx::from_env()?;
    let only: Option<Vec<String>> = std::env::var("WM_BENCH_ONLY")
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect());
    let wanted = |name: &str| only.as_ref().is_none_or(|o| o.iter().any(|x| x == name));
    let figures = run(&ctx, &wanted).await;
    if let Err(e) = ctx.delete_topics().await {
        eprintln!("warning: the bench's topics were not deleted: {e}");
    }
    let figures = figures?;
    report::print_table(&figures);
    let path = report::write_json(&ctx.root, &figures)?;
    println!("\nwrote {}", path.display());
    Ok(())
}

/// Every wanted scenario, in order; the first error stops the run.
async fn run(ctx: &scenarios::Ctx, wanted: &dyn Fn(&str) -> bool) -> Result<Vec<report::Figure>> {
    let mut figures = Vec::new();
    if wanted("source") || wanted("e2e") {
        figures.extend(
            scenarios::warm_up_broker(ctx)
                .await
                .context("warming the broker up")?,
        );
    }
    if wanted("source") {
        figures.extend(
            scenarios::source_throughput(ctx, false)
                .await
                .context("source throughput")?,
        );
        figures.extend(
            scenarios::source_throughput(ctx, true)
                .await
                .context("source keep-alive")?,
        );
    }
    if wanted("scale") {
        figures.extend(
            scenarios::source_scale(ctx)
                .await
                .context("source at scale")?,
        );
    }
    if wanted("million") {
        figures.extend(
            scenarios::source_million(ctx)
                .await
                .context("source at a million sites")?,
        );
    }
    if wanted("sink") {
        figures.extend(
            scenarios::sink_throughput(ctx, scenarios::Keys::Url)
                .await
                .context("sink throughput")?,
        );
    }
    if wanted("sink_keyless") {
        figures.extend(
            scenarios::sink_throughput(ctx, scenarios::Keys::None)
                .await
                .context("sink throughput, keyless records")?,
        );
    }
    if wanted("resume") {
        figures.extend(
            scenarios::sink_resume(ctx)
                .await
                .context("sink resume after kill -9")?,
        );
    }
    if wanted("e2e") {
        figures.extend(scenarios::end_to_end(ctx).await.context("end to end")?);
    }
    if wanted("dataset") {
        figures.extend(
            scenarios::dataset(ctx)
                .await
                .context("generated data set")?,
        );
    }
    Ok(figures)
}
