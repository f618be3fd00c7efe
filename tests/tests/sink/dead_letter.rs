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

/// The value of the metric line starting with `prefix` in `text`.
fn value(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

const AGE: &str = "website_monitor_publish_oldest_age_seconds{stream=\"dead_letters\"}";
const BACKLOG: &str = "website_monitor_publish_backlog{stream=\"dead_letters\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_kept_waiting_by_another_sinks_lock_show_their_age() {
    let t = SinkTest::new("sink_dlq_age", 1).await;
    t.migrate().await;
    let dlq = unique("dlq_age");
    create_topic(&t.stack.brokers, &dlq, 1).await;
    insert_rejects(&t, 0, 4, 2, false).await;
    // A frozen lock holder: the rows wait, and no round of this sink fails.
    let other = hold_dead_letter_lock(&t).await;
    let config = t.config().set("dead_letter_topic", dlq.as_str());
    let (running, token) = sink::start(&config).await;
    let addr = running.metrics_addr.to_string();
    let text = website_monitor_tests::metrics::scrape_until(&addr, Duration::from_secs(30), |m| {
        value(m, AGE).is_some_and(|age| age > 86_400.0) && value(m, BACKLOG) == Some(4.0)
    })
    .await
    .unwrap_or_else(|m| panic!("the oldest waiting reject's age (2 days) is shown:\n{m}"));
    assert!(text.contains("website_monitor_publish_failures_total{stream=\"dead_letters\"} 0"));
    drop(other);
    all_produced(&t, Duration::from_secs(60)).await;
    website_monitor_tests::metrics::scrape_until(&addr, Duration::from_secs(30), |m| {
        value(m, AGE) == Some(0.0)
    })
    .await
    .unwrap_or_else(|m| panic!("the age is 0 once none waits:\n{m}"));
    sink::stop(running, token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rounds_that_all_fail_still_show_the_backlog_and_its_age() {
    let t = SinkTest::new("sink_dlq_failing", 1).await;
    t.migrate().await;
    // Kafka refuses to create a topic whose name collides with an existing
    // one ('.' and '_' are the same to its metrics): every produce fails.
    let taken = unique("dlq_fail");
    create_topic(&t.stack.brokers, &taken, 1).await;
    let dlq = taken.replace('_', ".");
    insert_rejects(&t, 0, 3, 2, false).await;
    let config = t
        .config()
        .set("dead_letter_topic", dlq.as_str())
        .set("write_timeout", "2s");
    let (running, token) = sink::start(&config).await;
    let addr = running.metrics_addr.to_string();
    website_monitor_tests::metrics::scrape_until(&addr, Duration::from_secs(60), |m| {
        value(
            m,
            "website_monitor_publish_failures_total{stream=\"dead_letters\"}",
        )
        .is_some_and(|n| n >= 1.0)
            && value(m, AGE).is_some_and(|age| age > 86_400.0)
            && value(m, BACKLOG) == Some(3.0)
    })
    .await
    .unwrap_or_else(|m| panic!("failing rounds show the backlog and its age:\n{m}"));
    sink::stop(running, token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_too_large_for_kafka_is_cut_and_produced() {
    let t = SinkTest::new("sink_dlq_bigkey", 1).await;
    t.migrate().await;
    let dlq = unique("dlq_bigkey");
    create_topic(&t.stack.brokers, &dlq, 1).await;
    insert_rejects(&t, 0, 3, 0, false).await;
    // A kept key of 1,000,000 bytes: with the value, over Kafka's 1 MB.
    t.db.execute(
        &format!(
            "UPDATE \"{}\".site_rejected SET key = convert_to(repeat('K', 1000000), 'UTF8')
             WHERE \"offset\" = 0",
            t.schema
        ),
        &[],
    )
    .await
    .unwrap();
    let config = t.config().set("dead_letter_topic", dlq.as_str());
    let (running, token) = sink::start(&config).await;
    all_produced(&t, Duration::from_secs(60)).await;
    sink::stop(running, token).await;
    let got = dead_letters(&t.stack.brokers, &dlq).await;
    assert_eq!(got.len(), 3);
    let big = &got[&0];
    assert_eq!(
        big.key.as_ref().map(Vec::len),
        Some(64 * 1024),
        "the key's first 64 KiB"
    );
    assert!(big
        .headers
        .iter()
        .any(|(k, v)| k == "website-monitor.raw-key-length" && v == b"1000000"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_kafka_can_never_take_is_given_up_and_the_others_are_produced() {
    let t = SinkTest::new("sink_dlq_giveup", 1).await;
    t.migrate().await;
    let dlq = unique("dlq_giveup");
    create_topic(&t.stack.brokers, &dlq, 1).await;
    insert_rejects(&t, 0, 600, 0, false).await;
    // The oldest reject is larger than this producer may send.
    t.db.execute(
        &format!(
            "UPDATE \"{}\".site_rejected SET raw = convert_to(repeat('v', 5000), 'UTF8'),
                    rejected_at = rejected_at - interval '1 hour'
             WHERE \"offset\" = 0",
            t.schema
        ),
        &[],
    )
    .await
    .unwrap();
    let mut options = toml::Table::new();
    options.insert("message.max.bytes".into(), "3000".into());
    let config = t
        .config()
        .kafka("options", toml::Value::Table(options))
        .set("dead_letter_topic", dlq.as_str());
    let (running, token) = sink::start(&config).await;
    all_produced(&t, Duration::from_secs(60)).await;
    let text = website_monitor_tests::metrics::scrape(&running.metrics_addr.to_string()).await;
    sink::stop(running, token).await;
    assert_eq!(
        value(
            &text,
            "website_monitor_publish_given_up_total{stream=\"dead_letters\"}"
        ),
        Some(1.0),
        "{text}"
    );
    let got = dead_letters(&t.stack.brokers, &dlq).await;
    assert_eq!(got.len(), 599, "every other reject produced");
    assert!(!got.contains_key(&0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_lock_holder_gives_the_lock_up_and_another_sink_produces() {
    let t = SinkTest::new("sink_dlq_frozen", 1).await;
    t.migrate().await;
    let dlq = unique("dlq_frozen");
    create_topic(&t.stack.brokers, &dlq, 1).await;
    // write_timeout 2s: the outbox's connection ends after 6 s idle.
    let config = t
        .config()
        .set("dead_letter_topic", dlq.as_str())
        .set("write_timeout", "2s");
    let holder = website_monitor_tests::process::Proc::spawn("sink", &config.text());
    let table = format!("\"{}\".site_rejected", t.schema);
    let locked = || async {
        let n: i64 =
            t.db.query_one(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = 1460994051
                   AND objid = $1::text::regclass::oid",
                &[&table],
            )
            .await
            .unwrap()
            .get(0);
        n
    };
    website_monitor_tests::wait::eventually(
        "the process holds the lock",
        Duration::from_secs(60),
        || async { (locked().await == 1).then_some(()) },
    )
    .await;
    holder.signal("STOP");
    insert_rejects(&t, 0, 5, 0, false).await;
    let (running, token) = sink::start(&config).await;
    all_produced(&t, Duration::from_secs(90)).await;
    sink::stop(running, token).await;
    holder.signal("CONT");
    assert_eq!(dead_letters(&t.stack.brokers, &dlq).await.len(), 5);
}
