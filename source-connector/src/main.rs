//! `website-monitor-source`: checks websites and writes one record per check to Kafka.
//!
//! Thin on purpose: flags, configuration, logging, signals; the work is in the
//! `website_monitor_source` library.

use std::process::ExitCode;

use clap::Parser;
use connector_common::cli::{report_live, say, say_refused, CommonArgs, EXIT_CONFIG, EXIT_FORCED};
use connector_common::config::{self, process_env, render_masked, Section};
use website_monitor_source::reload::{ReloadHandle, Trigger};
use website_monitor_source::{lanes, sites, RunOptions, SourceConfig, SourceError};

/// mimalloc: the check path allocates and frees per request (hyper, reqwest,
/// the record); glibc malloc spent ~16 % of a keep-alive profile, and
/// mimalloc gave +19-28 % checks/s with keep-alive (interleaved pairs, see
/// docs/benchmarks-history.md, "mimalloc as the source's allocator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Checks the websites listed in `[source]` of connector.toml on a schedule
/// and writes one JSON record per check (failures included) to a Kafka topic.
///
/// Exit codes: 0 done (after SIGTERM/SIGINT, or after --once with every record
/// delivered); 1 a runtime failure (or --once with undelivered records);
/// 2 an unusable configuration (the message names file, line and key);
/// 3 a --check-live check failed.
#[derive(Debug, Parser)]
#[command(name = "website-monitor-source", version, about, long_about)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,

    /// Check every site once, wait for Kafka to acknowledge the records, and
    /// exit (for cron jobs and tests). Exit code 1 if any record was not delivered.
    #[arg(long)]
    once: bool,

    /// Write the records as JSON lines to stdout instead of Kafka (no broker needed).
    #[arg(long)]
    stdout: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(run(args)),
        Err(e) => {
            say(&format_args!(
                "website-monitor-source: cannot start the async runtime: {e}"
            ));
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> ExitCode {
    let refuse = |e: &dyn std::fmt::Display| {
        say_refused("website-monitor-source", e);
        ExitCode::from(EXIT_CONFIG)
    };
    let path = match config::resolve_path(args.common.config.as_deref(), &process_env) {
        Ok(p) => p,
        Err(e) => return refuse(&e),
    };
    if args.common.check_live {
        let (loaded, resolved) = match sites::load(&path, &process_env) {
            Ok(l) => l,
            Err(e) => return refuse(&e),
        };
        let mut checks = vec![(
            "sites",
            Ok(format!("{} site(s) in this instance", resolved.len())),
        )];
        checks.extend(website_monitor_source::preflight::check_live(&loaded).await);
        return ExitCode::from(report_live("website-monitor-source", &checks));
    }
    if args.common.check_config {
        let (loaded, resolved) = match sites::load(&path, &process_env) {
            Ok(l) => l,
            Err(e) => return refuse(&e),
        };
        print!("{}", render_masked(&loaded, Section::Source));
        let section = &loaded.section;
        let outside = section.sites_topic.is_some() || section.http_sd_url.is_some();
        // Sites from outside come later: the threads do not wait for them.
        let counted = if outside { usize::MAX } else { resolved.len() };
        let threads = lanes::count(section.threads, section.concurrency, counted);
        println!(
            "# {} site(s) to check in this instance, on {threads} check thread(s)",
            resolved.len()
        );
        if outside {
            println!("# and the sites of sites_topic / http_sd_url, read when the source runs (docs/discovery.md)");
        }
        return ExitCode::SUCCESS;
    }
    let loaded = match config::load::<SourceConfig>(&path, Section::Source, &process_env) {
        Ok(l) => l,
        Err(e) => return refuse(&e),
    };
    connector_common::logging::init(&loaded.log_level, loaded.log_format);
    let signals = connector_common::shutdown::on_signal();
    let opts = RunOptions {
        once: args.once,
        stdout: args.stdout,
    };
    // Listening before the start: SIGHUP's default action ends the process.
    // `--once` does not reload: there SIGHUP keeps its default.
    let hangups = if args.once { None } else { hangups() };
    let started = website_monitor_source::start(loaded, opts, signals.graceful.clone());
    let result = tokio::select! {
        r = async {
            let running = started.await?;
            if let (Some(hangups), Some(handle)) = (hangups, running.reload_handle()) {
                tokio::spawn(reload_on_hangup(hangups, handle));
            }
            running.wait().await
        } => r,
        () = signals.forced.cancelled() => return ExitCode::from(EXIT_FORCED),
    };
    match result {
        Ok(summary) if args.once && summary.failed > 0 => ExitCode::FAILURE,
        Ok(_) => ExitCode::SUCCESS,
        Err(SourceError::Config(e)) => refuse(&e),
        Err(e) => {
            tracing::error!("{:#}", anyhow::Error::from(e));
            ExitCode::FAILURE
        }
    }
}

/// SIGHUP, as a stream (`None` where there is none, or it cannot be
/// listened to: then a SIGHUP ends the process, as without a handler).
#[cfg(unix)]
fn hangups() -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{signal, SignalKind};
    signal(SignalKind::hangup())
        .inspect_err(
            |e| tracing::warn!(error = %e, "cannot listen for SIGHUP; reload with POST /-/reload"),
        )
        .ok()
}

/// No SIGHUP here.
#[cfg(not(unix))]
fn hangups() -> Option<()> {
    None
}

/// Reloads at each SIGHUP (the reloader logs the outcome).
#[cfg(unix)]
async fn reload_on_hangup(mut hangups: tokio::signal::unix::Signal, handle: ReloadHandle) {
    while hangups.recv().await.is_some() {
        handle.request(Trigger::Signal);
    }
}

/// No SIGHUP here.
#[cfg(not(unix))]
async fn reload_on_hangup(_: (), _: ReloadHandle) {}
