//! The sink connector against the real Kafka and PostgreSQL of `make up`:
//! one test binary, a module per theme.
//!
//! Each test has its own topic, consumer group and PostgreSQL schema
//! ([`SinkTest`](website_monitor_tests::sink::SinkTest)). The crash and
//! scale-out tests run the real `website-monitor-sink` binary (built by the
//! support crate with `cargo build` once per run); the others run the sink in-process.
//! The test that restarts PostgreSQL runs alone
//! ([`PG_RESTART`](website_monitor_tests::sink::PG_RESTART)).
//!
//! - [`seed`]: the seed's records and tables, the record's columns, the
//!   latest state per url, migrations;
//! - [`rejects`]: bad records rejected with their reason, the batch writer
//!   called directly;
//! - [`groups`]: exactly once across kill -9, restarts and consumer groups
//!   (static membership, fencing, scale-out);
//! - [`writers`]: batches collected while written, parallel writers, stored
//!   positions;
//! - [`security`]: TLS to PostgreSQL and Kafka, least privilege;
//! - [`faults`]: PostgreSQL restarted or black-holed, Kafka unreachable —
//!   readiness and bounded shutdown.

mod dead_letter;
mod faults;
mod fillfactor;
mod groups;
mod rejects;
mod security;
mod seed;
mod writers;
