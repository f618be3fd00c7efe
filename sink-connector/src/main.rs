//! `website-monitor-sink`: Kafka → PostgreSQL. See the crate docs, docs/sink.md
//! and docs/configuration.md.

use std::process::ExitCode;

use clap::Parser;
use connector_common::cli::{report_live, say, say_refused, CommonArgs, EXIT_CONFIG, EXIT_FORCED};
use connector_common::config::{load, process_env, render_masked, resolve_path, Section};
use website_monitor_sink::SinkConfig;

/// Drains website-check records from a Kafka topic into PostgreSQL: the latest
/// state per url (`<table>`), every check (`<table>_check`) and every record
/// that cannot be stored (`<table>_rejected`). Offsets are committed only after
/// the rows are; a crash loses nothing and stores nothing twice.
///
/// Configuration: the `[kafka]` and `[sink]` sections of connector.toml.
/// Environment overrides: kafka_host, kafka_topic, kafka_ssl_ca, kafka_ssl_cert,
/// kafka_ssl_key, postgres_uri, log_level. Exit codes: 0 stopped cleanly (or every
/// --check-live check passed), 3 a --check-live check failed,
/// 1 runtime failure, 2 unusable configuration.
#[derive(Debug, Parser)]
#[command(name = "website-monitor-sink", version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let loaded = resolve_path(args.common.config.as_deref(), &process_env)
        .and_then(|path| load::<SinkConfig>(&path, Section::Sink, &process_env));
    let config = match loaded {
        Ok(c) => c,
        Err(e) => {
            say_refused("website-monitor-sink", &e);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if args.common.check_config {
        print!("{}", render_masked(&config, Section::Sink));
        return ExitCode::SUCCESS;
    }
    connector_common::logging::init(&config.log_level, config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            say(&format_args!(
                "website-monitor-sink: cannot start the async runtime: {e}"
            ));
            return ExitCode::FAILURE;
        }
    };
    if args.common.check_live {
        let checks = runtime.block_on(website_monitor_sink::preflight::check_live(&config));
        return ExitCode::from(report_live("website-monitor-sink", &checks));
    }
    let code = runtime.block_on(async {
        let signals = connector_common::shutdown::on_signal();
        tokio::select! {
            result = website_monitor_sink::run(config, signals.graceful.clone()) => match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{:#}", anyhow::Error::from(e));
                    ExitCode::FAILURE
                }
            },
            () = signals.forced.cancelled() => ExitCode::from(EXIT_FORCED),
        }
    });
    // A blocking Kafka call that outlived its timeout (a commit or the
    // group leave against a dead broker) must not keep the process alive.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    code
}
