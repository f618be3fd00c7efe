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

/// Inserts `n` rejects (reason `not_json`, offsets from `first`) rejected
/// `days_ago` days ago straight into `t`'s rejects table, making the
/// partition they need; `produced` marks them as dead-lettered already.
async fn insert_rejects(t: &SinkTest, first: i64, n: i64, days_ago: i64, produced: bool) {
    let schema = &t.schema;
    let table = format!("\"{schema}\".site_rejected");
    t.db.execute(
        &format!(
            "SELECT \"{schema}\".site_make_partitions($1::text::regclass,
                    now() - make_interval(days => $2::int4), now() - make_interval(days => $2::int4),
                    '1 day')"
        ),
        &[&table, &(days_ago as i32)],
    )
    .await
    .unwrap();
    t.db.execute(
        &format!(
            "INSERT INTO {table} (topic, \"partition\", \"offset\", key, raw, reason, detail, rejected_at,
                                  dead_lettered_at)
             SELECT $1, 0, o, NULL, convert_to('x' || o, 'UTF8'), 'not_json', 'expected a value',
                    now() - make_interval(days => $4::int4), CASE WHEN $5 THEN now() END
             FROM generate_series($2::int8, $2::int8 + $3::int8 - 1) AS o"
        ),
        &[&t.topic, &first, &n, &(days_ago as i32), &produced],
    )
    .await
    .unwrap();
}

/// Waits up to `max` until every reject of `t` is marked as produced.
async fn all_produced(t: &SinkTest, max: Duration) {
    website_monitor_tests::wait::eventually("every reject marked as produced", max, || async {
        (t.count("site_rejected", "WHERE dead_lettered_at IS NULL")
            .await
            == 0)
            .then_some(())
    })
    .await;
}

/// Holds the advisory lock a sink takes to produce `t`'s rejects, as
/// another sink of the group would, on a connection of its own.
async fn hold_dead_letter_lock(t: &SinkTest) -> tokio_postgres::Client {
    let other = website_monitor_tests::pg(&t.stack.postgres_uri).await;
    let table = format!("\"{}\".site_rejected", t.schema);
    let taken: bool = other
        .query_one(
            "SELECT pg_try_advisory_lock(1460994051, $1::text::regclass::oid::int4)",
            &[&table],
        )
        .await
        .unwrap()
        .get(0);
    assert!(taken, "the test takes the dead-letter lock");
    other
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_longer_than_write_timeout_to_produce_is_produced_once() {
    let t = SinkTest::new("sink_dlq_backlog", 1).await;
    t.migrate().await;
    let dlq = unique("dlq_backlog");
    create_topic(&t.stack.brokers, &dlq, 1).await;
    // Far more than one write_timeout's work: the timeout bounds each batch
    // of 500, so no batch is produced, cut off and produced again.
    let n = 30_000;
    insert_rejects(&t, 0, n, 0, false).await;
    let config = t
        .config()
        .set("dead_letter_topic", dlq.as_str())
        .set("write_timeout", "1s");
    let (running, token) = sink::start(&config).await;
    all_produced(&t, Duration::from_secs(180)).await;
    sink::stop(running, token).await;
    // dead_letters() fails on an offset produced twice.
    assert_eq!(dead_letters(&t.stack.brokers, &dlq).await.len(), n as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sink_at_a_time_produces_and_waiting_rejects_outlive_their_retention() {
    let t = SinkTest::new("sink_dlq_lock", 1).await;
    t.migrate().await;
    let dlq = unique("dlq_lock");
    create_topic(&t.stack.brokers, &dlq, 1).await;
    // Past the 30-day rejects_retention: one partition already produced
    // (dropped), and a newer one still waiting for the topic (kept).
    insert_rejects(&t, 0, 3, 50, true).await;
    insert_rejects(&t, 3, 4, 40, false).await;
    insert_rejects(&t, 7, 5, 0, false).await;
    let other = hold_dead_letter_lock(&t).await;
    let config = t.config().set("dead_letter_topic", dlq.as_str());
    let (running, token) = sink::start(&config).await;
    let addr = running.metrics_addr.to_string();
    let text = website_monitor_tests::metrics::scrape_until(&addr, Duration::from_secs(30), |m| {
        m.contains("website_monitor_publish_backlog{stream=\"dead_letters\"} 9")
    })
    .await
    .unwrap_or_else(|m| panic!("the backlog gauge shows the 9 waiting rejects:\n{m}"));
    assert!(text.contains("website_monitor_publish_failures_total{stream=\"dead_letters\"} 0"));
    assert!(text.contains("website_monitor_records_rejected_total{reason=\"not_json\"} 0"));
    website_monitor_tests::wait::eventually(
        "the produced 50-day-old rejects dropped by retention",
        Duration::from_secs(30),
        || async { (t.count("site_rejected", "WHERE \"offset\" < 3").await == 0).then_some(()) },
    )
    .await;
    assert_eq!(
        t.count("site_rejected", "WHERE dead_lettered_at IS NULL").await,
        9,
        "the waiting rejects are kept (also past rejects_retention) and not produced while another sink holds the lock"
    );
    assert!(dead_letters(&t.stack.brokers, &dlq).await.is_empty());
    drop(other);
    all_produced(&t, Duration::from_secs(60)).await;
    sink::stop(running, token).await;
    assert_eq!(dead_letters(&t.stack.brokers, &dlq).await.len(), 9);
}
