//! Logging through `tracing`, as text or JSON lines.

use std::io::IsTerminal as _;

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

/// Installs the global `tracing` subscriber. Text lines are coloured only
/// when stderr is a terminal.
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
    //
    // Colours only on a terminal: a log file or a shipper reading a pipe
    // gets plain text, not ANSI escape codes.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .log_internal_errors(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// The level names `log_level` accepts on their own.
pub const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// Why `level` cannot be used as `log_level`, if it cannot: it must be a
/// level name, or a `tracing` filter whose every part is a level name or
/// `target=level` (e.g. `info,website_monitor_sink=debug`). A bare word that
/// is not a level (`loud`) would be read as a module name and silence every
/// other line, so it is refused.
pub fn level_problem(level: &str) -> Option<String> {
    let allowed = format!(
        "use one of {} (or a tracing filter such as `info,website_monitor_sink=debug`)",
        LEVELS.join(", ")
    );
    let shown = crate::limits::truncate(level, 100);
    if level.len() > 1024 {
        return Some(format!("{} bytes long; {allowed}", level.len()));
    }
    if level.trim().is_empty() {
        return Some(format!("empty; {allowed}"));
    }
    for part in level.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let is_level = LEVELS.iter().any(|l| l.eq_ignore_ascii_case(part));
        if !is_level && !part.contains('=') {
            return Some(format!("`{part}` is not a log level; {allowed}"));
        }
    }
    if tracing_subscriber::EnvFilter::try_new(level).is_err() {
        return Some(format!("`{shown}` is not a log filter; {allowed}"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_word_that_is_not_a_level_is_refused_with_the_allowed_values() {
        for ok in [
            "info",
            "DEBUG",
            "warn,website_monitor_sink=debug",
            "off",
            "rdkafka=trace,info",
        ] {
            assert_eq!(level_problem(ok), None, "{ok}");
        }
        for bad in ["loud", "", "info,loud", "x=notalevel"] {
            let p = level_problem(bad).unwrap_or_else(|| panic!("{bad} accepted"));
            assert!(p.contains("error, warn, info, debug"), "{p}");
        }
    }
}
