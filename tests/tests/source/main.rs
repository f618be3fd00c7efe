//! The source connector against the real Kafka of `make up`, with HTTP(S)
//! targets started on 127.0.0.1 by the tests (nothing leaves the machine):
//! one test binary, a module per theme. Each test writes its own topic.
//!
//! - [`checks`]: what one check finds — status, regex, network failures,
//!   TLS, redirects, the body cap, connection reuse;
//! - [`timings`]: the phase timings, against `curl -w`;
//! - [`records`]: the records in Kafka and on stdout, scheduling, check
//!   threads, shards;
//! - [`config`]: refused configurations, the environment, mTLS settings;
//! - [`metrics`]: `/healthz`, `/readyz` and the counters;
//! - [`reload`]: SIGHUP, `POST /-/reload` and `reload_watch` applying the
//!   difference in sites (a changed `shard` too); bad files and restart-only
//!   keys refused;
//! - [`discovery`]: sites from a Kafka topic (a consumer group splitting
//!   it between instances) and from http_sd;
//! - [`lifecycle`]: start failures, SIGTERM, shutdown_timeout, dropping,
//!   a closed stderr, the open-file limit, log files without colour codes.

mod checks;
mod config;
mod discovery;
mod lifecycle;
mod metrics;
mod records;
mod reload;
mod schema;
mod timings;

use std::path::Path;
use std::process::Stdio;

use tokio::process::Command;

/// The source binary on `config`, without the seed's environment overrides;
/// killed when dropped, so a test that fails half-way leaves no source running.
fn source_bin(config: &Path) -> Command {
    website_monitor_tests::connector("website-monitor-source", config)
}

/// Starts the source binary on `config`: stdout discarded, stderr captured.
fn spawn_source(config: &Path) -> tokio::process::Child {
    source_bin(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the source")
}
