//! The source under test: its configuration for the local stack, runs in
//! this process, and what it wrote (records in Kafka, its final log line).

use std::collections::HashMap;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use website_monitor_source::record::{ErrorKind, Record};
use website_monitor_source::{RunOptions, RunSummary};

use crate::config::ConfigBuilder;
use crate::kafka::{consume_all, create_topic, Consumed};
use crate::stack::stack;

/// A source configuration for the local stack writing `topic`: probe
/// `test-probe`, metrics on a free port, no sites yet.
pub fn source_config(topic: &str) -> ConfigBuilder {
    ConfigBuilder::source()
        .brokers(&stack().brokers)
        .set("topic", topic)
        .set("probe", "test-probe")
        .set("metrics_address", "127.0.0.1:0")
}

/// A source configuration that needs no broker (`--stdout`, or the broker
/// given by the environment): brokers `127.0.0.1:1`, metrics on a free port.
pub fn offline_config() -> ConfigBuilder {
    ConfigBuilder::source()
        .brokers("127.0.0.1:1")
        .set("metrics_address", "127.0.0.1:0")
}

/// Reads every record of `topic` (until 3 s pass without a new one).
pub async fn consume(topic: &str) -> Vec<Consumed> {
    consume_all(
        &stack().brokers,
        topic,
        Duration::from_secs(3),
        Duration::from_secs(60),
    )
    .await
}

/// The consumed values as records.
pub fn records(consumed: &[Consumed]) -> Vec<Record> {
    consumed
        .iter()
        .map(|c| serde_json::from_slice(&c.payload).expect("a record"))
        .collect()
}

/// Records by url (one per url).
pub fn by_url(records: Vec<Record>) -> HashMap<String, Record> {
    records.into_iter().map(|r| (r.url.clone(), r)).collect()
}

/// The kind of a record's error, if any.
pub fn kind(r: &Record) -> Option<ErrorKind> {
    r.error.as_ref().map(|e| e.kind)
}

/// Runs one round (`--once`) of `config` in-process after creating `topic`;
/// the summary.
pub async fn run_once(topic: &str, config: &ConfigBuilder) -> RunSummary {
    create_topic(&stack().brokers, topic, 1).await;
    let opts = RunOptions {
        once: true,
        stdout: false,
    };
    website_monitor_source::run(config.source_config(), opts, CancellationToken::new())
        .await
        .expect("run")
}

/// [`run_once`], then every record of `topic` (as many as were delivered), by url.
pub async fn once(topic: &str, config: &ConfigBuilder) -> (RunSummary, HashMap<String, Record>) {
    let summary = run_once(topic, config).await;
    let found = records(&consume(topic).await);
    assert_eq!(found.len() as u64, summary.delivered, "{summary:?}");
    (summary, by_url(found))
}

/// Starts the source in this process on `config` (not `--once`).
pub async fn start(
    config: &ConfigBuilder,
    stop: &CancellationToken,
) -> website_monitor_source::Running {
    website_monitor_source::start(config.source_config(), RunOptions::default(), stop.clone())
        .await
        .expect("the source starts")
}

/// Parses `source stopped checks_finished=N delivered=N failed=N` from the log.
pub fn final_counts(stderr: &str) -> (u64, u64, u64) {
    let line = stderr
        .lines()
        .rfind(|l| l.contains("source stopped"))
        .unwrap_or_else(|| panic!("no final line in:\n{stderr}"));
    let field = |name: &str| -> u64 {
        let at = line
            .find(&format!("{name}="))
            .unwrap_or_else(|| panic!("{name} not in {line}"))
            + name.len()
            + 1;
        line[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .expect("a count")
    };
    (
        field("checks_finished"),
        field("delivered"),
        field("failed"),
    )
}

/// The records a `--stdout` run printed, one JSON record a line.
pub fn stdout_records(stdout: Vec<u8>) -> Vec<Record> {
    String::from_utf8(stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON record per line"))
        .collect()
}
