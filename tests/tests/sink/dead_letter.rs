//! `[sink] dead_letter_topic`: each rejected record is also produced to a
//! Kafka topic, with its original key and value and headers saying where it
//! came from and why; once per reject, also across a restart.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::producer::FutureRecord;
use website_monitor_tests::sink::{self, SinkTest};
use website_monitor_tests::{consume_all, create_topic, producer, unique, Consumed};

/// The dead-letter topic's messages by their original offset.
async fn dead_letters(brokers: &str, topic: &str) -> HashMap<i64, Consumed> {
    let got = consume_all(
        brokers,
        topic,
        Duration::from_secs(3),
        Duration::from_secs(60),
    )
    .await;
    let mut by_offset = HashMap::new();
    for m in got {
        let header = |k: &str| {
            m.headers
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        };
        let offset: i64 = header("__connect.errors.offset")
            .expect("offset header")
            .parse()
            .unwrap();
        assert!(
            by_offset.insert(offset, m).is_none(),
            "offset {offset} dead-lettered twice"
        );
    }
    by_offset
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_records_go_to_the_dead_letter_topic_once_with_where_and_why() {
    let t = SinkTest::new("sink_dlq", 1).await;
    let dlq = unique("dlq");
    create_topic(&t.stack.brokers, &dlq, 1).await;
    let cases: [(&str, Option<&[u8]>); 4] = [
        ("good", Some(br#"{"url": "http://good/"}"#)),
        ("not_json", Some(b"{\"url\": ")),
        ("no_url", Some(br#"{"href": "http://x/"}"#)),
        ("empty", None),
    ];
    let p = producer(&t.stack.brokers);
    for (i, (_, value)) in cases.iter().enumerate() {
        let key = format!("k{i}");
        let mut r: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&t.topic).key(key.as_bytes());
        if let Some(v) = value {
            r = r.payload(*v);
        }
        p.send(r, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)
            .expect("produce");
    }
    let config = t.config().set("dead_letter_topic", dlq.as_str());
    let (running, token) = sink::start(&config).await;
    t.wait_rows("site_rejected", 3).await;
    let got = website_monitor_tests::wait::eventually(
        "three dead letters",
        Duration::from_secs(60),
        || async {
            let got = dead_letters(&t.stack.brokers, &dlq).await;
            (got.len() == 3).then_some(got)
        },
    )
    .await;
    for (offset, (reason, value)) in cases.iter().enumerate().skip(1) {
        let m = &got[&(offset as i64)];
        assert_eq!(
            m.key.as_deref(),
            Some(format!("k{offset}").as_bytes()),
            "the original key"
        );
        assert_eq!(m.payload, value.unwrap_or_default(), "the original value");
        let headers: HashMap<&str, String> = m
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), String::from_utf8_lossy(v).into_owned()))
            .collect();
        assert_eq!(headers["__connect.errors.topic"], t.topic);
        assert_eq!(headers["__connect.errors.partition"], "0");
        assert_eq!(headers["website-monitor.reason"], *reason);
        assert!(!headers["__connect.errors.exception.message"].is_empty());
    }
    sink::stop(running, token).await;
    assert_eq!(
        t.count("site_rejected", "WHERE dead_lettered_at IS NULL")
            .await,
        0,
        "every reject marked as produced"
    );
    // A restart produces nothing again.
    let (running, token) = sink::start(&config).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    sink::stop(running, token).await;
    assert_eq!(
        dead_letters(&t.stack.brokers, &dlq).await.len(),
        3,
        "no copy after a restart"
    );
}
