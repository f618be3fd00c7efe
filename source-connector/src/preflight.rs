//! `--check-live`: beyond `--check-config`, reach what the configuration
//! names — the Kafka brokers, with these settings, the topic, and the
//! sites topic.

use std::time::Duration;

use connector_common::cli::LiveCheck;
use connector_common::kafka::preflight::check_topic;
use connector_common::Loaded;

use crate::SourceConfig;

/// How long the brokers may take to answer.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The source's live checks: Kafka's brokers and the topic it writes, and
/// `sites_topic` when set.
pub async fn check_live(loaded: &Loaded<SourceConfig>) -> Vec<LiveCheck> {
    let mut checks = vec![("kafka", topic_check(loaded, &loaded.section.topic).await)];
    if let Some(sites) = &loaded.section.sites_topic {
        checks.push(("sites_topic", topic_check(loaded, sites).await));
    }
    checks
}

/// Whether the brokers answer and have `topic`.
async fn topic_check(loaded: &Loaded<SourceConfig>, topic: &str) -> Result<String, String> {
    let kafka = loaded.kafka.clone();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || check_topic(&kafka, &topic, TIMEOUT))
        .await
        .unwrap_or_else(|e| Err(format!("the Kafka check did not finish: {e}")))
}
