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
