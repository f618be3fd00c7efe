//! `--check-live`'s Kafka half: can these brokers be reached with these
//! settings, and do they have the topic? One metadata request, bounded.

use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use super::events::{ClientEvents, KafkaEvent};
use super::KafkaConfig;

/// A context that remembers why the brokers refused us, if they did.
struct Refusals(ClientEvents);

impl ClientContext for Refusals {
    fn error(&self, error: KafkaError, reason: &str) {
        // Logged by the caller's report, not the log: only remembered.
        let _ = matches!(self.0.on_error(&error, reason), KafkaEvent::Auth(_));
    }
}

impl ConsumerContext for Refusals {}

/// Asks `kafka`'s brokers for `topic`'s metadata within `timeout`. `Ok`
/// says how many brokers and partitions answered; `Err` says what failed
/// and which settings to check.
pub fn check_topic(kafka: &KafkaConfig, topic: &str, timeout: Duration) -> Result<String, String> {
    let mut config = kafka.client_config();
    // A consumer never creates the topic by asking for it.
    config.set("allow.auto.create.topics", "false");
    config.set("log_level", "0");
    kafka.apply_options(&mut config);
    let consumer: BaseConsumer<Refusals> = config
        .create_with_context(Refusals(ClientEvents::new()))
        .map_err(|e| format!("cannot make a Kafka client with these [kafka] settings: {e}"))?;
    let metadata = consumer.fetch_metadata(Some(topic), timeout);
    if metadata.is_err() {
        // The client's errors (a refused credential or handshake) reach the
        // context only when it is polled.
        let _ = consumer.poll(Duration::from_millis(500));
    }
    let refused = consumer.context().0.refusal();
    let metadata = match (metadata, refused) {
        (_, Some(why)) => return Err(why),
        (Err(e), None) => {
            return Err(format!(
                "no answer from the brokers {} within {}: {e}; check [kafka] brokers and that they are reachable from here",
                kafka.brokers,
                humantime::format_duration(timeout)
            ))
        }
        (Ok(m), None) => m,
    };
    let brokers = metadata.brokers().len();
    let found = metadata.topics().iter().find(|t| t.name() == topic);
    let code = found.and_then(|t| t.error()).map(RDKafkaErrorCode::from);
    match (found, code) {
        (Some(t), None) if !t.partitions().is_empty() => Ok(format!(
            "{brokers} broker(s) answered; topic `{topic}` has {} partition(s)",
            t.partitions().len()
        )),
        (Some(_), Some(code)) if code != RDKafkaErrorCode::UnknownTopicOrPartition => Err(format!(
            "topic `{topic}`: {code} (the brokers answered); check the topic setting and this client's rights on it"
        )),
        _ => Err(format!(
            "topic `{topic}` does not exist (the brokers answered); create it, or fix the topic setting"
        )),
    }
}
