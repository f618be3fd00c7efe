//! Shared pieces of the website-monitor connector pair.
//!
//! Both binaries (`website-monitor-source` and `website-monitor-sink`) are thin:
//! they parse flags ([`cli`]), load their section of `connector.toml`
//! ([`config`]), set up logging ([`logging`]) and telemetry ([`telemetry`]),
//! then call their crate's `run(config, shutdown)`, where `shutdown` is a
//! [`tokio_util::sync::CancellationToken`] fired by [`shutdown::on_signal`].
//!
//! Layout:
//! - [`config`]: file selection, `${VAR}` expansion, the seed's environment
//!   overrides, typed deserialisation, and every problem of a file reported at
//!   once, each naming file, line and key.
//! - [`kafka`]: the `[kafka]` section and its translation into librdkafka settings
//!   (plaintext, mTLS with PEM files, SASL), and what both connectors'
//!   librdkafka contexts share (error classification, rate-limited logging).
//! - [`telemetry`]: the Prometheus recorder and the `/metrics`, `/healthz`,
//!   `/readyz` HTTP server.
//! - [`shutdown`]: SIGTERM / SIGINT into a cancellation token.
//! - [`logging`]: `tracing` subscriber, text or JSON.
//! - [`cli`]: the flags both binaries share.
//! - [`tls`]: rustls pieces both connectors use.
//! - [`files`]: files a configuration names, opened only when they are
//!   regular files of a bounded size.
//! - [`secret`]: secrets in types that cannot print them.
//! - [`limits`]: the bounds shared by both connectors' settings, and bounded text.
//! - [`listen`]: `metrics_address`, a `host:port` checked once at load.
//! - [`retry`]: the one backoff (with jitter) and the one rate limit for log
//!   lines.
//! - [`problem`]: a setting's problem before it is located ([`config::Invalid`]),
//!   and the [`config::Validate`] trait every section implements.
//!
//! Imports run one way, from the top of this list to the bottom:
//! [`config`] → [`kafka`] → [`tls`], [`secret`] and [`limits`] → [`problem`];
//! [`kafka`] → [`retry`]; [`config`] → [`logging`] → [`limits`];
//! [`telemetry`] → [`listen`] → [`limits`]; [`config`] and [`tls`] →
//! [`files`]. [`problem`], [`secret`], [`files`], [`retry`], [`cli`] and
//! [`shutdown`] import nothing of this crate.

pub mod cli;
pub mod config;
pub mod files;
pub mod kafka;
pub mod limits;
pub mod listen;
pub mod logging;
pub mod problem;
pub mod retry;
pub mod secret;
pub mod shutdown;
pub mod telemetry;
pub mod tls;

pub use config::{ConfigError, Loaded};
pub use kafka::KafkaConfig;
