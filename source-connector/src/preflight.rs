//! `--check-live`: beyond `--check-config`, reach what the configuration
//! names — the Kafka brokers, with these settings, and the topic.

use std::time::Duration;

use connector_common::cli::LiveCheck;
use connector_common::kafka::preflight::check_topic;
use connector_common::Loaded;

use crate::SourceConfig;

/// How long the brokers may take to answer.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The source's live checks: Kafka's brokers and the topic it writes.
pub async fn check_live(loaded: &Loaded<SourceConfig>) -> Vec<LiveCheck> {
    let kafka = loaded.kafka.clone();
    let topic = loaded.section.topic.clone();
    let found = tokio::task::spawn_blocking(move || check_topic(&kafka, &topic, TIMEOUT))
        .await
        .unwrap_or_else(|e| Err(format!("the Kafka check did not finish: {e}")));
    vec![("kafka", found)]
}
