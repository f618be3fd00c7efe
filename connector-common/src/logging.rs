//! Logging through `tracing`, as text or JSON lines.

use serde::{Deserialize, Serialize};

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Installs the global `tracing` subscriber.
///
/// `level` is an `EnvFilter` directive such as `info` or
/// `info,website_monitor_sink=debug`. Calling it twice is harmless (the first
/// subscriber stays), so tests may call it freely.
pub fn init(level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A log line that cannot be written (stderr closed: the log shipper died)
    // is dropped. By default tracing-subscriber reports the failure with
    // `eprintln!`, which panics when stderr is gone — in whatever task was
    // logging, the signal handler's included, so SIGTERM was then ignored.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Whether `level` is a valid `EnvFilter` directive.
pub fn level_is_valid(level: &str) -> bool {
    tracing_subscriber::EnvFilter::try_new(level).is_ok()
}
