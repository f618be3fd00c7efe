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
