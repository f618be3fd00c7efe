//! The sites topic: a Kafka consumer read from the beginning and followed.
//!
//! Without `sites_group` the follower assigns itself every partition of
//! `sites_topic` at its beginning. With `sites_group` it subscribes in that
//! consumer group (cooperative-sticky, so a rebalance moves only the
//! partitions that change hands), never commits, and seeks each partition
//! it is assigned to the beginning; the sites of a revoked partition are
//! removed at once, those of an assigned one are sent once the partition
//! was read to its end (`enable.partition.eof`). Records are sent in
//! batches: at most every [`BATCH_WAIT`] while following, one batch for a
//! whole catch-up.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use connector_common::kafka::{forward_log, ClientEvents};
use connector_common::KafkaConfig;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{
    BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::catalog::refused;
use super::{Change, Origin, Update};
use crate::config::{SiteConfig, SiteUrl, SourceConfig};
use crate::metrics;

/// While following, changes wait at most this long to be applied together.
const BATCH_WAIT: Duration = Duration::from_millis(200);

/// How long a failed start of reading waits to try again.
const RETRY: Duration = Duration::from_secs(5);

/// The sites topic's consumer could not be made.
#[derive(Debug, thiserror::Error)]
#[error("source.sites_topic: cannot create the Kafka consumer ({0}); check the [kafka] settings and [kafka.options]")]
pub struct TopicError(#[source] KafkaError);

/// A change of this member's partitions, as the rebalance callback saw it.
#[derive(Debug)]
pub(super) enum Assignment {
    /// These partitions were given to this member.
    Assigned(Vec<i32>),
    /// These partitions were taken away.
    Revoked(Vec<i32>),
}

/// librdkafka callbacks: log lines, errors, and rebalances that start each
/// assigned partition at its beginning.
pub(super) struct FollowContext {
    events: ClientEvents,
    changes: Mutex<Vec<Assignment>>,
}

impl ClientContext for FollowContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        forward_log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // The end of a partition is an event this consumer asked for
        // (`enable.partition.eof`), not a problem.
        if matches!(error, KafkaError::PartitionEOF(_))
            || matches!(&error, KafkaError::Global(e) if *e == rdkafka::types::RDKafkaErrorCode::PartitionEOF)
        {
            return;
        }
        self.events.log_error(&error, reason);
    }
}

impl ConsumerContext for FollowContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let done = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                // Never a committed offset: every site definition is read.
                let _ = tpl.set_all_offsets(Offset::Beginning);
                self.push(Assignment::Assigned(parts));
                if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.push(Assignment::Revoked(parts));
                if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                }
            }
            other => {
                tracing::warn!(error = ?other, "sites_group rebalance error; giving up the partitions until the next assignment");
                self.push(Assignment::Revoked(parts));
                consumer.unassign()
            }
        };
        if let Err(e) = done {
            tracing::error!(error = %e, "sites_group: taking the new assignment failed");
        }
    }
}

impl FollowContext {
    fn push(&self, a: Assignment) {
        self.changes.lock().expect("assignment lock").push(a);
    }

    fn take(&self) -> Vec<Assignment> {
        std::mem::take(&mut *self.changes.lock().expect("assignment lock"))
    }
}

/// Reads the sites topic and sends its changes.
pub struct Follower {
    consumer: Arc<StreamConsumer<FollowContext>>,
    topic: String,
    group: bool,
    tx: mpsc::Sender<Update>,
}

impl Follower {
    /// A consumer of `topic` on the brokers of `kafka`, in `source.sites_group`
    /// when set.
    pub fn new(
        kafka: &KafkaConfig,
        source: &SourceConfig,
        topic: &str,
        tx: mpsc::Sender<Update>,
    ) -> Result<Self, TopicError> {
        let consumer = super::topic_client::client_config(kafka, source)
            .create_with_context(FollowContext {
                events: ClientEvents::new(),
                changes: Mutex::new(Vec::new()),
            })
            .map_err(TopicError)?;
        Ok(Follower {
            consumer: Arc::new(consumer),
            topic: topic.to_owned(),
            group: source.sites_group.is_some(),
            tx,
        })
    }

    /// Follows the topic until `stop` (or until nobody listens).
    pub async fn run(self, stop: CancellationToken) {
        let consumer = Arc::clone(&self.consumer);
        let mut state = State::default();
        loop {
            let started = if self.group {
                consumer
                    .subscribe(&[&self.topic])
                    .map_err(|e| e.to_string())
            } else {
                assign_all(&consumer, &self.topic).await.map(|parts| {
                    state.assigned(parts);
                })
            };
            match started {
                Ok(()) => {
                    tokio::spawn(super::topic_client::watch(
                        Arc::downgrade(&consumer),
                        self.topic.clone(),
                        stop.clone(),
                    ));
                    self.follow(&consumer, state, &stop).await;
                    break;
                }
                Err(e) => {
                    tracing::error!(topic = %self.topic, "sites_topic cannot be read: {e}; check that the topic exists and this user may read it (trying again in {}s)", RETRY.as_secs());
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(RETRY) => {}
                    }
                }
            }
        }
        // Closing leaves the group (a blocking call): the others take the
        // partitions at once.
        drop(consumer);
        let last = self.consumer;
        let _ = tokio::task::spawn_blocking(move || drop(last)).await;
    }

    /// The loop: records, end-of-partition events and rebalances into batches.
    async fn follow(
        &self,
        consumer: &StreamConsumer<FollowContext>,
        mut state: State,
        stop: &CancellationToken,
    ) {
        let mut ready = false;
        loop {
            let got = tokio::select! {
                () = stop.cancelled() => return,
                r = tokio::time::timeout(BATCH_WAIT, consumer.recv()) => r,
            };
            let (mut eof, mut revoked) = (false, false);
            for change in consumer.context().take() {
                revoked |= state.rebalanced(change);
            }
            match got {
                Ok(Ok(m)) => state.record(m.partition(), m.key(), m.payload()),
                Ok(Err(KafkaError::PartitionEOF(p))) => {
                    state.pending.remove(&p);
                    eof = true;
                }
                Ok(Err(e)) => {
                    metrics::sites_topic_read_error();
                    tracing::warn!(
                        topic = %self.topic,
                        error = %e,
                        "reading sites_topic failed; check that the topic exists (cleanup.policy=compact) and this user may read it"
                    )
                }
                Err(_) => {}
            }
            if state.due(eof, revoked) {
                let batch = std::mem::take(&mut state.batch);
                state.since = None;
                if self
                    .tx
                    .send(Update::Changes(Origin::Topic, batch))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            if !ready && state.caught_up() {
                ready = true;
                tracing::info!(topic = %self.topic, sites = state.owner.len(), "sites_topic read to its end");
                if self.tx.send(Update::Ready(Origin::Topic)).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Assigns every partition of `topic` from its beginning.
async fn assign_all(
    consumer: &Arc<StreamConsumer<FollowContext>>,
    topic: &str,
) -> Result<Vec<i32>, String> {
    let (c, t) = (Arc::clone(consumer), topic.to_owned());
    let parts = tokio::task::spawn_blocking(move || {
        let md = c
            .fetch_metadata(Some(&t), Duration::from_secs(10))
            .map_err(|e| e.to_string())?;
        let parts: Vec<i32> = md
            .topics()
            .iter()
            .filter(|m| m.name() == t && m.error().is_none())
            .flat_map(|m| m.partitions().iter().map(|p| p.id()))
            .collect();
        if parts.is_empty() {
            return Err(format!(
                "topic {t} does not exist (or has no partition); create it with cleanup.policy=compact"
            ));
        }
        Ok(parts)
    })
    .await
    .map_err(|e| e.to_string())??;
    let mut tpl = TopicPartitionList::new();
    for p in &parts {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)
            .map_err(|e| e.to_string())?;
    }
    consumer.assign(&tpl).map_err(|e| e.to_string())?;
    Ok(parts)
}

/// What the follower knows of its partitions and the batch to send.
#[derive(Default)]
pub(super) struct State {
    /// Partitions read now.
    partitions: HashSet<i32>,
    /// Assigned partitions not yet read to their end.
    pub(super) pending: HashSet<i32>,
    /// Whether any assignment came (with `sites_group`, the first one).
    assigned_once: bool,
    /// The partition of each url defined now.
    owner: HashMap<Box<str>, i32>,
    /// Changes not sent yet.
    pub(super) batch: Vec<Change>,
    /// When the oldest change of the batch came.
    since: Option<Instant>,
}

impl State {
    /// `parts` are assigned: to be read from their beginning.
    pub(super) fn assigned(&mut self, parts: Vec<i32>) {
        self.assigned_once = true;
        self.pending.extend(parts.iter().copied());
        self.partitions.extend(parts);
        metrics::sites_topic_partitions(self.partitions.len());
    }

    /// Applies a rebalance; whether the batch is due now (sites removed).
    pub(super) fn rebalanced(&mut self, change: Assignment) -> bool {
        match change {
            Assignment::Assigned(parts) => {
                tracing::info!(partitions = ?parts, "sites_group: partitions assigned; reading them from the beginning");
                metrics::sites_topic_rebalance("assigned");
                self.assigned(parts);
                false
            }
            Assignment::Revoked(parts) => {
                tracing::info!(partitions = ?parts, "sites_group: partitions revoked; their sites stop here");
                metrics::sites_topic_rebalance("revoked");
                let gone: HashSet<i32> = parts.into_iter().collect();
                self.partitions.retain(|p| !gone.contains(p));
                self.pending.retain(|p| !gone.contains(p));
                metrics::sites_topic_partitions(self.partitions.len());
                let urls: Vec<Box<str>> = self
                    .owner
                    .iter()
                    .filter(|(_, p)| gone.contains(p))
                    .map(|(u, _)| u.clone())
                    .collect();
                for url in urls {
                    self.owner.remove(&url);
                    self.batch.push(Change::Remove(url));
                }
                self.since.get_or_insert_with(Instant::now);
                true
            }
        }
    }

    /// One record of `partition`.
    pub(super) fn record(&mut self, partition: i32, key: Option<&[u8]>, value: Option<&[u8]>) {
        let Some((url, change)) = definition(key, value) else {
            return;
        };
        match &change {
            Change::Put(..) => {
                if let Some(other) = self.owner.insert(url.clone(), partition) {
                    if other != partition {
                        metrics::discovered_site_errors(Origin::Topic.as_str(), 1);
                        tracing::error!(
                            site = &*url,
                            partitions = ?[other, partition],
                            "a url of sites_topic is defined in two partitions (partitions were added, or a record was written to an explicit partition): the latest record read runs here, but another instance of the group may check it too and a tombstone in one partition leaves the other; write a tombstone to both partitions, then the definition once with the default partitioner, or move to a new topic (docs/discovery.md)"
                        );
                    }
                }
            }
            Change::Remove(_) => {
                self.owner.remove(&url);
            }
            Change::Refused(..) => {
                // Owned all the same: a revocation clears its refusal.
                self.owner.insert(url, partition);
            }
        }
        self.batch.push(change);
        self.since.get_or_insert_with(Instant::now);
    }

    /// Whether the whole assignment has been read to its end.
    fn caught_up(&self) -> bool {
        self.assigned_once && self.pending.is_empty()
    }

    /// Whether to send the batch now: at once when sites were `revoked`;
    /// not during a catch-up (one batch for all of it); else once an end
    /// was reached (`eof`) or [`BATCH_WAIT`] passed.
    pub(super) fn due(&self, eof: bool, revoked: bool) -> bool {
        let waited = self.since.is_some_and(|s| s.elapsed() >= BATCH_WAIT);
        !self.batch.is_empty() && (revoked || (self.pending.is_empty() && (eof || waited)))
    }
}

/// The change a record makes: its url (from the key) and its definition, its
/// removal (a tombstone), or its refusal (a value that cannot be used: it
/// removes what an earlier record defined, the latest record of a url is
/// what counts, as after a restart). A key that is no url, or not the url
/// as normalised, is refused under the key's own text (a tombstone of that
/// key clears it). `None` only for a record without a key (logged and
/// counted; a compacted topic has none).
pub fn definition(key: Option<&[u8]>, value: Option<&[u8]>) -> Option<(Box<str>, Change)> {
    let Some(key) = key else {
        refused(
            Origin::Topic,
            "(no key)",
            "key",
            "the record has no key; write the url as the key",
        );
        return None;
    };
    let text = String::from_utf8_lossy(key);
    let tombstone = value.is_none_or(<[u8]>::is_empty);
    let bad_key = |ident: Box<str>, message: String| {
        let change = if tombstone {
            Change::Remove(ident.clone())
        } else {
            Change::refused(&ident, "key", message)
        };
        Some((ident, change))
    };
    let url = match SiteUrl::parse(&text) {
        Ok(u) => u,
        Err(message) => {
            let ident: String = text.chars().take(200).collect();
            return bad_key(
                ident.into(),
                format!("the key must be the site's url: {message}"),
            );
        }
    };
    let shown: Box<str> = url.as_str().into();
    if text != url.request().as_str() {
        // Kafka places and compacts records by the key's bytes: two
        // spellings of one url would be two definitions, maybe in two
        // partitions (checked twice, a tombstone removing only one).
        let ident = if text.contains('@') {
            format!("{shown} (a key not normalised)")
        } else {
            text.chars().take(200).collect()
        };
        return bad_key(ident.into(), "the key is not the url as normalised (lower-case scheme and host, no default port, a path of at least `/`, as the site's url is shown); write the record with the normalised url as its key, and a tombstone for this key".to_owned());
    }
    let change = match value.filter(|v| !v.is_empty()) {
        None => Change::Remove(shown.clone()),
        Some(v) => match site_value(v, &url) {
            Ok(site) => Change::Put(shown.clone(), Box::new(site)),
            Err((k, message)) => Change::refused(&shown, &k, message),
        },
    };
    Some((shown, change))
}

/// A record's value: the JSON object of a `sites_file` line, for the url of
/// its key; the key of a problem and what is wrong.
fn site_value(value: &[u8], key: &SiteUrl) -> Result<SiteConfig, (String, String)> {
    let text = std::str::from_utf8(value).map_err(|_| {
        (
            "value".to_owned(),
            "the value is not UTF-8 text; write a JSON object".to_owned(),
        )
    })?;
    if !text.trim_start().starts_with('{') {
        return Err(("value".to_owned(), "the value is not a JSON object; write {\"url\": \"https://...\", ...} with the keys of [[source.sites]]".to_owned()));
    }
    let site = crate::sites::parse_site_json(text.trim())?;
    if site.url.as_str() != key.as_str() {
        return Err((
            "url".to_owned(),
            format!(
                "the value's url `{}` is not the record's key `{}`; key each record by its url",
                site.url, key
            ),
        ));
    }
    Ok(site)
}
