//! Kafka for tests: topics made and swept, records produced and read back.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

use crate::stack::{made_by_unique_before, maker_alive, unique};

/// Deletes the topics that tests and benchmarks made (names from [`unique`])
/// more than `age` ago by a process that is no longer running, and returns
/// how many. A long-lived local stack
/// otherwise keeps every test run's topics (about 80 MB per `make test`).
pub async fn delete_stale_topics(brokers: &str, age: Duration) -> Result<usize, String> {
    let cutoff = SystemTime::now()
        .checked_sub(age)
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis());
    let brokers_owned = brokers.to_owned();
    let names = tokio::task::spawn_blocking(move || -> Result<Vec<String>, String> {
        let consumer: rdkafka::consumer::BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers_owned)
            .create()
            .map_err(|e| format!("metadata client for {brokers_owned}: {e}"))?;
        let metadata = consumer
            .fetch_metadata(None, Duration::from_secs(10))
            .map_err(|e| format!("listing topics on {brokers_owned}: {e}"))?;
        Ok(metadata
            .topics()
            .iter()
            .map(|t| t.name().to_owned())
            .collect())
    })
    .await
    .map_err(|e| format!("listing topics: {e}"))??;
    let stale: Vec<String> = names
        .into_iter()
        .filter(|name| made_by_unique_before(name, cutoff) && !maker_alive(name))
        .collect();
    delete_topics(brokers, &stale).await?;
    Ok(stale.len())
}

/// Creates `topic` with `partitions` partitions and waits until it exists.
/// The first call in a process first deletes the topics earlier runs left
/// behind more than an hour ago ([`delete_stale_topics`]; a failure there is
/// only printed).
pub async fn create_topic(brokers: &str, topic: &str, partitions: i32) {
    static SWEPT: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    SWEPT
        .get_or_init(|| async {
            if let Err(e) = delete_stale_topics(brokers, Duration::from_secs(3600)).await {
                eprintln!("warning: old test topics were not deleted: {e}");
            }
        })
        .await;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("create_topics request");
    for r in results {
        if let Err((name, code)) = r {
            if code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists {
                panic!("creating topic {name}: {code}");
            }
        }
    }
}

/// Deletes `topics` (those that exist); a failure is returned, not a panic,
/// so a caller cleaning up can report it and go on.
pub async fn delete_topics(brokers: &str, topics: &[String]) -> Result<(), String> {
    if topics.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .map_err(|e| format!("admin client for {brokers}: {e}"))?;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let results = admin
        .delete_topics(
            &names,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .map_err(|e| format!("deleting topics {names:?}: {e}"))?;
    let failed: Vec<String> = results
        .into_iter()
        .filter_map(Result::err)
        .filter(|(_, code)| *code != rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition)
        .map(|(name, code)| format!("{name}: {code}"))
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("deleting topics: {}", failed.join(", ")))
    }
}

/// A producer to `brokers` with acks=all, for tests.
pub fn producer(brokers: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .create()
        .expect("producer")
}

/// Produces `(key, value)` pairs to `topic` and waits for every acknowledgement.
pub async fn produce(brokers: &str, topic: &str, records: &[(Option<&[u8]>, &[u8])]) {
    let p = producer(brokers);
    let sends = records.iter().map(|(k, v)| {
        let mut r: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).payload(*v);
        if let Some(k) = k {
            r = r.key(*k);
        }
        p.send(r, Duration::from_secs(30))
    });
    for res in futures::future::join_all(sends).await {
        res.unwrap_or_else(|(e, _)| panic!("produce to {topic}: {e}"));
    }
}

/// Produces records keyed by text, in order, and waits for every
/// acknowledgement; a `None` value is a tombstone (no payload at all).
pub async fn produce_keyed(brokers: &str, topic: &str, records: &[(&str, Option<&str>)]) {
    let p = producer(brokers);
    for (key, value) in records {
        let mut r: FutureRecord<'_, str, str> = FutureRecord::to(topic).key(*key);
        if let Some(v) = value {
            r = r.payload(*v);
        }
        p.send(r, Duration::from_secs(30))
            .await
            .unwrap_or_else(|(e, _)| panic!("produce to {topic}: {e}"));
    }
}

/// `v` as JSON bytes, a record's value.
pub fn json_rec(v: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&v).unwrap()
}

/// Produces records keyed by their url (as the source keys them; a record
/// that is no JSON object with a string `url` has no key).
pub async fn produce_json(brokers: &str, topic: &str, records: &[Vec<u8>]) {
    let keys: Vec<Option<Vec<u8>>> = records
        .iter()
        .map(|r| {
            serde_json::from_slice::<serde_json::Value>(r)
                .ok()
                .and_then(|v| {
                    v.get("url")
                        .and_then(|u| u.as_str())
                        .map(|u| u.as_bytes().to_vec())
                })
        })
        .collect();
    let pairs: Vec<(Option<&[u8]>, &[u8])> = records
        .iter()
        .zip(&keys)
        .map(|(r, k)| (k.as_deref(), r.as_slice()))
        .collect();
    produce(brokers, topic, &pairs).await;
}

/// One consumed message.
#[derive(Debug, Clone)]
pub struct Consumed {
    /// The key, if any.
    pub key: Option<Vec<u8>>,
    /// The value.
    pub payload: Vec<u8>,
    /// The message timestamp in milliseconds, if any.
    pub timestamp_ms: Option<i64>,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Headers: name and value, in order.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Consumed {
    /// The value parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).expect("record is JSON")
    }
}

/// Reads `topic` from the beginning until nothing new arrives for `idle`
/// (or `max` passed), returning every message.
pub async fn consume_all(
    brokers: &str,
    topic: &str,
    idle: Duration,
    max: Duration,
) -> Vec<Consumed> {
    let c: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("test-reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    c.subscribe(&[topic]).expect("subscribe");
    let start = Instant::now();
    let mut out = Vec::new();
    while start.elapsed() < max {
        match tokio::time::timeout(idle, c.recv()).await {
            Ok(Ok(m)) => out.push(Consumed {
                key: m.key().map(<[u8]>::to_vec),
                payload: m.payload().unwrap_or_default().to_vec(),
                timestamp_ms: m.timestamp().to_millis(),
                partition: m.partition(),
                offset: m.offset(),
                headers: m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|x| (x.key.to_owned(), x.value.unwrap_or_default().to_vec()))
                            .collect()
                    })
                    .unwrap_or_default(),
            }),
            Ok(Err(e)) => panic!("consuming {topic}: {e}"),
            Err(_) if !out.is_empty() => break,
            Err(_) => {}
        }
    }
    out
}
