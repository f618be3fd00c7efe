//! Hostile records against the real sink binary, Kafka and PostgreSQL: every
//! kind of the harness's catalogue, mixed with good records, through a
//! `kill -9` and a restart; each record ends stored or rejected with its
//! reason, exactly once, and no record stalls the partition.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::FutureRecord;
use rdkafka::ClientConfig;
use website_monitor_sink::decode::{decode, Decoded, Limits};
use website_monitor_sink::migrate::{migrate, Tables};
use website_monitor_tests::hostile::{
    catalogue, database_refusals_sql, good, Expect, Kind, MAX_RECORD_BYTES,
};
use website_monitor_tests::{
    eventually, fresh_schema, pg, producer, stack, unique, ConfigBuilder, Proc,
};

const LIMITS: Limits = Limits {
    max_record_bytes: MAX_RECORD_BYTES,
    max_url_bytes: 2048,
};

#[test]
fn every_catalogued_record_decodes_to_what_the_sink_must_make_of_it() {
    for k in catalogue() {
        let got = match decode(k.value.as_deref(), LIMITS) {
            Decoded::Good(_) => Expect::Stored,
            Decoded::Rejected(r) => Expect::Rejected(r.reason.as_str()),
        };
        // PostgreSQL refuses the `database` kinds; decoding finds them good.
        let want = match k.expect {
            Expect::Rejected("database") => Expect::Stored,
            e => e,
        };
        assert_eq!(got, want, "{}", k.name);
    }
}

/// A topic whose broker accepts any record timestamp (Kafka 4 refuses
/// timestamps more than an hour ahead by default).
async fn create_any_time_topic(brokers: &str, topic: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    let any = i64::MAX.to_string();
    let new = NewTopic::new(topic, 1, TopicReplication::Fixed(1))
        .set("message.timestamp.after.max.ms", &any)
        .set("max.message.bytes", "2000000");
    for r in admin
        .create_topics(&[new], &AdminOptions::new())
        .await
        .expect("create_topics")
    {
        r.unwrap_or_else(|(t, e)| panic!("creating {t}: {e}"));
    }
}

/// Produces `records` in order to partition 0; returns what each offset must become.
async fn produce_in_order(brokers: &str, topic: &str, records: &[Kind]) {
    let p = producer(brokers);
    for chunk in records.chunks(200) {
        let sends = chunk.iter().map(|k| {
            let mut r: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).partition(0);
            if let Some(v) = &k.value {
                r = r.payload(v);
            }
            if let Some(key) = &k.key {
                r = r.key(key);
            }
            if let Some(ts) = k.timestamp_ms {
                r = r.timestamp(ts);
            }
            p.send(r, Duration::from_secs(30))
        });
        for res in futures::future::join_all(sends).await {
            res.unwrap_or_else(|(e, _)| panic!("produce to {topic}: {e}"));
        }
    }
}

/// `offset -> reason` of the rejects (each offset once), and the number of
/// history rows (the history keeps no Kafka position: the offsets table
/// makes its writes exactly-once).
async fn outcomes(db: &tokio_postgres::Client, schema: &str) -> (HashMap<i64, Expect>, i64) {
    let mut rejected = HashMap::new();
    for r in db
        .query(
            &format!("SELECT \"offset\", reason FROM \"{schema}\".site_rejected"),
            &[],
        )
        .await
        .unwrap()
    {
        let reason: String = r.get(1);
        let reason: &'static str = Box::leak(reason.into_boxed_str());
        assert!(
            rejected
                .insert(r.get(0), Expect::Rejected(reason))
                .is_none(),
            "one position rejected twice"
        );
    }
    let stored = db
        .query_one(
            &format!("SELECT count(*) FROM \"{schema}\".site_check"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    (rejected, stored)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_records_mixed_with_good_ones_each_end_stored_or_rejected_once_across_a_kill_9() {
    let s = stack();
    let db = pg(&s.postgres_uri).await;
    let schema = fresh_schema(&db, "hostile").await;
    let mut client = pg(&s.postgres_uri).await;
    migrate(&mut client, &Tables::new(&schema, "site"))
        .await
        .expect("migrate");
    db.batch_execute(&database_refusals_sql(&schema))
        .await
        .expect("the operator's rules");
    let topic = unique("hostile");
    create_any_time_topic(&s.brokers, &topic).await;

    // Every kind, 12 times, each after a good record.
    let kinds = catalogue();
    let mut records = Vec::new();
    for round in 0..12 {
        for (i, k) in kinds.iter().enumerate() {
            records.push(Kind {
                name: "good",
                key: None,
                value: Some(good(round * 1000 + i)),
                timestamp_ms: None,
                expect: Expect::Stored,
            });
            records.push(k.clone());
        }
    }
    produce_in_order(&s.brokers, &topic, &records).await;
    let total = records.len() as i64;

    let config = ConfigBuilder::sink()
        .brokers(&s.brokers)
        .set("topic", topic.as_str())
        .set("group_id", unique("hostile-group"))
        // Static membership: the restarted sink takes the partition back at once.
        .set("group_instance_id", unique("hostile-sink"))
        .set("postgres_uri", s.postgres_uri.as_str())
        .set("schema", schema.as_str())
        .set("batch_size", 100)
        .set("batch_timeout", "50ms")
        .set("write_timeout", "5s")
        .set("max_record_bytes", i64::try_from(MAX_RECORD_BYTES).unwrap())
        .set("metrics_address", "127.0.0.1:0")
        .text();
    let written = || async {
        let r = db
            .query_one(
                &format!(
                    "SELECT (SELECT count(*) FROM \"{schema}\".site_check) + (SELECT count(*) FROM \"{schema}\".site_rejected)"
                ),
                &[],
            )
            .await
            .unwrap();
        r.get::<_, i64>(0)
    };
    let mut sink = Proc::spawn("sink", &config);
    let at_kill = eventually(
        "the sink to be part way",
        Duration::from_secs(120),
        || async {
            let n = written().await;
            (n >= total / 4).then_some(n)
        },
    )
    .await;
    sink.kill9();
    assert!(
        at_kill < total,
        "the kill came mid-stream ({at_kill} of {total})"
    );

    let mut sink = Proc::spawn("sink", &config);
    eventually(
        &format!("history rows + rejected rows == {total} records produced"),
        Duration::from_secs(300),
        || async {
            let n = written().await;
            assert!(
                n <= total,
                "{n} rows for {total} records; log:\n{}",
                sink.log()
            );
            (n == total).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rejected, stored) = outcomes(&db, &schema).await;
    let expect_stored = records
        .iter()
        .filter(|k| k.expect == Expect::Stored)
        .count();
    assert_eq!(stored, expect_stored as i64, "each stored record once");
    for (offset, k) in records.iter().enumerate() {
        let want = (k.expect != Expect::Stored).then_some(&k.expect);
        assert_eq!(
            rejected.get(&(offset as i64)),
            want,
            "offset {offset}: {}",
            k.name
        );
    }
    let bounded: i64 = db
        .query_one(
            &format!("SELECT count(*) FROM \"{schema}\".site_rejected WHERE raw_length > length(raw) AND raw_sha256 IS NOT NULL"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(bounded, 0, "records up to max_record_bytes are kept whole");
    assert_eq!(
        sink.term(),
        Some(0),
        "SIGTERM exits 0; log:\n{}",
        sink.log()
    );
}

// --- generated records ------------------------------------------------------

fn runner(cases: u32) -> proptest::test_runner::TestRunner {
    proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
        cases,
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    })
}

#[test]
fn decoding_any_bytes_never_panics_and_what_it_accepts_postgresql_can_hold() {
    use website_monitor_sink::jsonb;
    use website_monitor_tests::hostile::strategy::payload;
    let first = std::time::UNIX_EPOCH - Duration::from_secs(62_135_596_800);
    let last = std::time::UNIX_EPOCH + Duration::from_secs(253_402_300_799);
    runner(2_000)
        .run(&payload(), |bytes| {
            if let Decoded::Good(g) = decode(Some(&bytes), LIMITS) {
                assert_eq!(jsonb::check(&bytes), Ok(()));
                assert!(!g.url.trim().is_empty() && g.url.len() <= LIMITS.max_url_bytes);
                assert!(g.checked_at.is_none_or(|t| first <= t && t <= last));
                assert!(g.duration.is_none_or(f64::is_finite));
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn any_kafka_timestamp_converts_without_panicking() {
    use website_monitor_sink::decode::kafka_time;
    runner(2_000)
        .run(&proptest::num::i64::ANY, |ms| {
            let t = kafka_time(ms);
            assert_eq!(t.is_some(), (0..=253_402_300_799_999).contains(&ms));
            Ok(())
        })
        .unwrap();
}

#[test]
fn generated_batches_are_written_whole_each_record_stored_or_rejected_with_a_reason() {
    use proptest::prelude::*;
    use website_monitor_sink::refuse::{write_batch, Search};
    use website_monitor_tests::hostile::strategy::payload;
    use website_monitor_tests::sink::{batch_conn, batch_msg_bytes};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let s = stack();
    let (db, schema, conn) = rt.block_on(batch_conn(&s, "hostile_prop"));
    let conn = std::cell::RefCell::new(Some(conn));
    let next = std::cell::Cell::new(0i64);
    // History rows before each batch: the history keeps no Kafka position.
    let history_before = std::cell::Cell::new(0i64);
    runner(48)
        .run(&prop::collection::vec(payload(), 1..24), |payloads| {
            let from = next.get();
            let batch: Vec<_> = payloads
                .iter()
                .enumerate()
                .map(|(i, p)| batch_msg_bytes("prop", from + i as i64, p))
                .collect();
            next.set(from + batch.len() as i64);
            let mut c = conn.borrow_mut().take().expect("the connection");
            rt.block_on(async {
                let out = write_batch(&mut c, &batch, &mut Search::default())
                    .await
                    .unwrap_or_else(|e| panic!("the batch is written, not stalled: {e}"));
                let rejected: u64 = out.rejected.values().sum();
                // A record older than history_retention is counted in the
                // rollups only (no history row).
                let stored_or_counted = out.check_rows + out.past_retention + rejected;
                assert_eq!(stored_or_counted, batch.len() as u64);
                let stored: i64 = db
                    .query_one(
                        &format!(
                            "SELECT (SELECT count(*) FROM \"{schema}\".site_check) - $2
                                  + (SELECT count(*) FROM \"{schema}\".site_rejected WHERE \"offset\" >= $1 AND reason <> '')"
                        ),
                        &[&from, &history_before.get()],
                    )
                    .await
                    .unwrap()
                    .get(0);
                history_before.set(history_before.get() + out.check_rows as i64);
                assert_eq!(
                    stored + out.past_retention as i64,
                    batch.len() as i64,
                    "each record stored, rejected or (past retention) counted in the rollups only"
                );
            });
            *conn.borrow_mut() = Some(c);
            Ok(())
        })
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_for_refused_records_cut_off_by_a_timeout_resumes_where_it_stopped() {
    use website_monitor_tests::sink::batch_conn;
    let s = stack();
    let (db, schema, conn) = batch_conn(&s, "hostile_resume").await;
    db.batch_execute(&format!(
        "ALTER TABLE \"{schema}\".site_check ADD CONSTRAINT no_599 CHECK (status_code IS DISTINCT FROM 599)"
    ))
    .await
    .unwrap();
    // 1,500 refused records among 3,000: finding them takes thousands of
    // probe transactions, far more than one attempt's limit allows.
    const N: i64 = 3_000;
    let batch = status_batch("resume", N, |i| i % 2 == 1);
    let (out, attempts) =
        write_with_timeouts(&s, &schema, conn, &batch, Duration::from_millis(700)).await;
    assert!(
        attempts > 1,
        "the search needed more than one attempt (else this test proves nothing)"
    );
    assert_eq!(out.check_rows, N as u64 / 2);
    assert_eq!(out.rejected.get("database"), Some(&(N as u64 / 2)));
}

/// `n` records of 40 urls at offsets 0.., status 599 (which the test's
/// constraint refuses) where `refused(offset)`, else 200.
fn status_batch(
    topic: &str,
    n: i64,
    refused: impl Fn(i64) -> bool,
) -> Vec<website_monitor_sink::batch::Msg> {
    use website_monitor_tests::sink::batch_msg;
    (0..n)
        .map(|i| {
            let status = if refused(i) { 599 } else { 200 };
            let json = format!(
                r#"{{"url":"http://r.test/{}","status_code":{status}}}"#,
                i % 40
            );
            batch_msg(topic, i, &json)
        })
        .collect()
}

/// Writes `batch` as the sink's writer does: each attempt cut at `limit`,
/// then a new connection, the [`Search`] kept. Returns the outcome and the
/// number of attempts; fails after 400.
async fn write_with_timeouts(
    s: &website_monitor_tests::Stack,
    schema: &str,
    mut conn: website_monitor_sink::sql::Conn,
    batch: &[website_monitor_sink::batch::Msg],
    limit: Duration,
) -> (website_monitor_sink::batch::Outcome, u32) {
    use website_monitor_sink::refuse::{write_batch, Search};
    use website_monitor_tests::sink::batch_conn_on;
    let mut search = Search::default();
    let mut attempts = 0;
    loop {
        attempts += 1;
        assert!(
            attempts <= 400,
            "no attempt finished after {} refused records found",
            search.refused()
        );
        match tokio::time::timeout(limit, write_batch(&mut conn, batch, &mut search)).await {
            Ok(r) => return (r.expect("the batch is written"), attempts),
            // The cut-off attempt left its transaction open: a new
            // connection, as the sink's writer takes.
            Err(_) => conn = batch_conn_on(s, schema).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_progresses_even_when_the_failing_write_takes_most_of_write_timeout() {
    use website_monitor_tests::sink::batch_conn;
    let s = stack();
    let (db, schema, conn) = batch_conn(&s, "hostile_slow").await;
    // Every history row costs about 2 ms (a slow server, or an operator's
    // heavy trigger; `pg_sleep(0.001)` measured 2.2 ms a row in psql here):
    // writing the 200-record batch takes more than half of the 700 ms limit, so an attempt that began with the failing
    // write and then probed the whole batch could never finish (the write
    // alone still fits, as it must for any batch to be written).
    db.batch_execute(&format!(
        "ALTER TABLE \"{schema}\".site_check ADD CONSTRAINT no_599 CHECK (status_code IS DISTINCT FROM 599);
         CREATE FUNCTION \"{schema}\".slow() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN PERFORM pg_sleep(0.001); RETURN NEW; END $$;
         CREATE TRIGGER slow BEFORE INSERT ON \"{schema}\".site_check
         FOR EACH ROW EXECUTE FUNCTION \"{schema}\".slow();"
    ))
    .await
    .unwrap();
    let batch = status_batch("slow", 200, |i| i % 100 == 99);
    let (out, attempts) =
        write_with_timeouts(&s, &schema, conn, &batch, Duration::from_millis(700)).await;
    assert!(
        attempts > 1,
        "the first attempt was cut (else this test proves nothing)"
    );
    // What the tables hold, once each: an attempt cut by the timeout just
    // after its COMMIT reached the server has written the batch already
    // (the last attempt then finds every record a duplicate).
    let count = |sql: String| {
        let db = &db;
        async move { db.query_one(&sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    let stored = count(format!("SELECT count(*) FROM \"{schema}\".site_check")).await;
    let refused = count(format!(
        "SELECT count(*) FROM \"{schema}\".site_rejected WHERE reason = 'database'"
    ))
    .await;
    assert_eq!((stored, refused), (198, 2));
    assert!(
        (out.check_rows, out.rejected.get("database")) == (198, Some(&2)) || out.duplicates == 200,
        "this attempt wrote the batch, or found it written: {out:?}"
    );
}
