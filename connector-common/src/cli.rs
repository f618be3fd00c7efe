//! Command-line flags shared by both connectors.

use std::path::PathBuf;

/// Flags every connector binary accepts.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Configuration file. Without it: `pipelines/$WEBSITE_MONITOR_ENVIRONMENT.toml`
    /// when that variable is set, else `./connector.toml`.
    #[arg(long, short = 'c', value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Validate the configuration, print the effective configuration (secrets
    /// masked) and exit: 0 when valid, 2 when not.
    #[arg(long)]
    pub check_config: bool,

    /// Validate the configuration, then connect to what it names (Kafka's
    /// brokers and the topic; the sink also PostgreSQL: login, migrations,
    /// privileges), print one line per check and exit: 0 when every check
    /// passed, 3 when one failed, 2 when the configuration is invalid.
    #[arg(long, conflicts_with = "check_config")]
    pub check_live: bool,
}

/// Exit code of `--check-live` when a check failed.
pub const EXIT_LIVE: u8 = 3;

/// One `--check-live` check: what was checked, and what was found (`Err`:
/// what failed and what to do).
pub type LiveCheck = (&'static str, Result<String, String>);

/// Prints each check as `program: ok|FAILED <name>: <detail>` on stdout and
/// returns the exit code: 0 when all passed, [`EXIT_LIVE`] otherwise.
pub fn report_live(program: &str, checks: &[LiveCheck]) -> u8 {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let mut failed = 0;
    for (name, result) in checks {
        let (word, detail) = match result {
            Ok(d) => ("ok", d),
            Err(d) => {
                failed += 1;
                ("FAILED", d)
            }
        };
        let _ = writeln!(out, "{program}: {word} {name}: {detail}");
    }
    if failed == 0 {
        0
    } else {
        EXIT_LIVE
    }
}

/// Exit code for a configuration that cannot be used.
pub const EXIT_CONFIG: u8 = 2;

/// Exit code after a second SIGTERM/SIGINT cut shutdown short (128 + SIGINT).
pub const EXIT_FORCED: u8 = 130;

/// Writes `message` and a newline to stderr, dropping it if stderr is closed
/// (`eprintln!` would panic there, e.g. when the log shipper at its other end
/// has died).
pub fn say(message: &dyn std::fmt::Display) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{message}");
}

/// Writes a configuration that cannot be used to stderr, as both connectors
/// do: each line of `error` (one a problem) prefixed by `program: `, so every
/// line says which binary refused the file, as `grep` or a log shipper sees it.
pub fn say_refused(program: &str, error: &dyn std::fmt::Display) {
    say(&prefixed(program, &error.to_string()));
}

/// `text` with each line prefixed by `program: `.
fn prefixed(program: &str, text: &str) -> String {
    text.lines()
        .map(|line| format!("{program}: {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_line_of_a_refusal_names_the_program() {
        assert_eq!(
            super::prefixed("p", "c.toml:1: key `a`: x\nc.toml:2: key `b`: y"),
            "p: c.toml:1: key `a`: x\np: c.toml:2: key `b`: y"
        );
    }
}
