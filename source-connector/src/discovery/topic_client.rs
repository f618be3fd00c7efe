//! The sites topic's consumer settings, and the look every
//! [`METADATA_REFRESH`] at whether the topic can still be read.

use std::sync::Weak;
use std::time::Duration;

use connector_common::KafkaConfig;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use tokio_util::sync::CancellationToken;

use super::topic::FollowContext;
use crate::config::SourceConfig;
use crate::metrics;

/// How often the sites consumer asks the brokers for the topic's
/// partitions: with `sites_group`, added (or removed) partitions are
/// assigned within this (librdkafka's default is 5 minutes).
pub(super) const METADATA_REFRESH: Duration = Duration::from_secs(30);

/// The sites topic's consumer settings (one place).
pub(super) fn client_config(kafka: &KafkaConfig, source: &SourceConfig) -> ClientConfig {
    let mut c = kafka.client_config();
    c.set("client.id", "website-monitor-source-sites")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "true")
        .set(
            "topic.metadata.refresh.interval.ms",
            METADATA_REFRESH.as_millis().to_string(),
        );
    // librdkafka wants a group id even to read assigned partitions;
    // without `sites_group` this one never joins (nothing subscribes)
    // and nothing is committed.
    c.set("group.id", "website-monitor-source-sites");
    if let Some(group) = &source.sites_group {
        let session = source.sites_group_session_timeout.as_millis();
        c.set("group.id", group)
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("session.timeout.ms", session.to_string())
            .set("heartbeat.interval.ms", (session / 5).max(100).to_string());
    }
    kafka.apply_options(&mut c);
    c
}

/// Whether `topic` exists with partitions and no error, as the brokers say.
fn topic_problem(consumer: &StreamConsumer<FollowContext>, topic: &str) -> Option<String> {
    match consumer.fetch_metadata(Some(topic), Duration::from_secs(10)) {
        Err(e) => Some(e.to_string()),
        Ok(md) => match md.topics().iter().find(|m| m.name() == topic) {
            None => Some("the brokers do not know it".to_owned()),
            Some(m) => match m.error() {
                Some(e) => Some(format!("{e:?}")),
                None if m.partitions().is_empty() => Some("it has no partition".to_owned()),
                None => None,
            },
        },
    }
}

/// Asks the brokers every [`METADATA_REFRESH`] whether the topic can still
/// be read: `website_monitor_sites_topic_readable` says so, and a topic
/// deleted (or no longer readable) after start is logged at each look until
/// it is back (the sites read last keep running meanwhile).
pub(super) async fn watch(
    consumer: Weak<StreamConsumer<FollowContext>>,
    topic: String,
    stop: CancellationToken,
) {
    metrics::sites_topic_readable(true);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(METADATA_REFRESH) => {}
        }
        let Some(c) = consumer.upgrade() else { return };
        let t = topic.clone();
        let Ok(problem) = tokio::task::spawn_blocking(move || topic_problem(&c, &t)).await else {
            return;
        };
        metrics::sites_topic_readable(problem.is_none());
        if let Some(problem) = problem {
            tracing::error!(topic = %topic, "sites_topic cannot be read ({problem}): no change of the sites is seen and the sites read last keep running; create the topic again (cleanup.policy=compact) and write its definitions, or check this user's rights");
        }
    }
}
