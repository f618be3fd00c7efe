//! Test support for the website-monitor pair: the real Kafka and PostgreSQL
//! of `make up` (never a mock), unique names per test, and small helpers by
//! role. Used by the integration tests in `tests/tests/` and by the bench.
//!
//! # Layout
//!
//! - [`mod@stack`]: where the stack's services are (`.stack/env`, `WM_*`
//!   overrides), names no other test uses, stopping and starting a service
//!   ([`stack_script`], [`RestartOnDrop`]).
//! - [`kafka`]: topics made and swept, records produced and read back.
//! - [`postgres`]: connections, fresh schemas, row counts and waits,
//!   connection strings derived from the stack's.
//! - [`process`]: the connector binaries as child processes ([`Proc`],
//!   [`connector`]), built (`cargo build`, once per test process) by [`binary`].
//! - [`config`]: connector configurations built from typed values
//!   ([`ConfigBuilder`]).
//! - [`metrics`]: a connector's `/healthz`, `/readyz` and Prometheus scraping.
//! - [`wait`]: waiting for a condition with a deadline ([`eventually`]).
//! - [`http`]: HTTP(S) targets for the source ([`http::TestServer`], [`http::Pki`]).
//! - [`blackhole`]: a TCP proxy that turns into a black hole ([`BlackHole`]).
//! - [`source`], [`sink`]: each connector under test — its configuration
//!   for the stack, runs in this process, per-test fixtures.
//! - [`pair`]: both connectors in this process ([`Pair`]).
//! - [`hostile`]: a catalogue of hostile records for the sink.
//! - [`status`]: the status model through the pair: a source process per
//!   probe ([`status::Probes`]) and each probe's view as the sink wrote it.
//!
//! The names most tests use are re-exported at the crate root.
//!
//! # Test files
//!
//! `tests/tests/`: `smoke.rs` (the harness reaches the services),
//! `source/` and `sink/` (one binary per connector, a module per theme),
//! `pipeline.rs` (the pair end to end), `sasl.rs` (the pair over SASL_SSL
//! with SCRAM), `hardening.rs`, `hostile.rs`, `config_props.rs`, and
//! `outage.rs` (a 60 s broker outage: it stops and restarts the local
//! broker, alone in its test binary).

pub mod blackhole;
pub mod config;
pub mod hostile;
pub mod http;
pub mod kafka;
pub mod metrics;
pub mod pair;
pub mod postgres;
pub mod process;
pub mod sink;
pub mod source;
pub mod stack;
pub mod status;
pub mod wait;

pub use blackhole::BlackHole;
pub use config::{ConfigBuilder, Site};
pub use http::http_client_builder;
pub use kafka::{
    consume_all, create_topic, delete_stale_topics, delete_topics, json_rec, produce, produce_json,
    produce_keyed, producer, Consumed,
};
pub use metrics::{
    http_exchange, http_get, http_post, scrape, scrape_until, wait_not_ready, wait_ready,
};
pub use pair::Pair;
pub use postgres::{
    column, count, fresh_schema, kv_uri, pg, pg_port, table_exists, wait_rows, with_param,
};
pub use process::{binary, connector, free_port, sigterm, Proc};
pub use stack::{
    made_by_unique_before, repo_root, stack, stack_script, unique, unique_ident, RestartOnDrop,
    Stack,
};
pub use wait::{eventually, WAIT};
