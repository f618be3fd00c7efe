//! Writing: the next batch collected while one is written, several writers
//! for the partitions of a batch, and the positions stored with the rows.

use std::time::Duration;

use website_monitor_tests::sink::{self, numbered, LatestTableLock, SinkTest};
use website_monitor_tests::{
    eventually, json_rec, kv_uri, scrape_until, unique_ident, wait_ready, with_param, WAIT,
};

/// How many backends of `app` (their `application_name`) wait on a lock.
async fn waiting_backends(db: &tokio_postgres::Client, app: &str) -> i64 {
    db.query_one(
        "SELECT count(DISTINCT l.pid) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
         WHERE NOT l.granted AND a.application_name = $1",
        &[&app],
    )
    .await
    .unwrap()
    .get(0)
}

/// Waits until a batch's write waits on the lock on `t`'s latest-state table.
async fn first_write_waits(t: &SinkTest) {
    let site = format!("\"{}\".site", t.schema);
    eventually(
        "the first batch's write to wait on the lock",
        WAIT,
        || async {
            let waiting: i64 = t
            .db
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = to_regclass($1)",
                &[&site],
            )
            .await
            .unwrap()
            .get(0);
            (waiting > 0).then_some(())
        },
    )
    .await;
}

/// While one batch is written, the next is collected: its `batch_timeout`
/// runs from its own first record, so after a slow write it is written at
/// once instead of waiting a whole `batch_timeout` more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_batch_is_collected_while_the_previous_one_is_written() {
    let t = SinkTest::new("sink_overlap", 1).await;
    let (db, schema) = (&t.db, &t.schema);
    let (running, token) = sink::start(&t.config().set("batch_timeout", "4s")).await;
    wait_ready(&running.metrics_addr.to_string()).await;
    // Hold the latest-state table so the first batch's write waits.
    let lock = LatestTableLock::take(&t.stack.postgres_uri, schema).await;
    let at = website_monitor_tests::sink::numbered_start();
    let rec = |url: &str| json_rec(serde_json::json!({"url": url, "checked_at": at}));
    t.produce(&[rec("http://first/")]).await;
    first_write_waits(&t).await;
    t.produce(&[rec("http://second/")]).await;
    // More than batch_timeout: the second batch is complete before the first
    // write can finish.
    tokio::time::sleep(Duration::from_secs(6)).await;
    lock.release().await;
    t.wait_rows("site_check", 2).await;
    let gap: f64 = db
        .query_one(
            // Each history row is stamped with the clock time it was written.
            &format!("SELECT extract(epoch FROM max(inserted_at) - min(inserted_at))::float8 FROM \"{schema}\".site_check_record"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    // Collected only after the first write, the second batch would wait the
    // whole 4 s batch_timeout; collected meanwhile, it follows at once.
    assert!(
        gap < 2.0,
        "the second batch was written {gap:.3} s after the first: it was not collected during the first write"
    );
    sink::stop(running, token).await;
}

/// While one batch is written, the next keeps filling past `batch_timeout`
/// (100 ms here): records produced a second apart while the first write
/// waits are written together: two batch transactions in all, not one per
/// record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_batch_keeps_filling_while_the_previous_one_is_written() {
    let t = SinkTest::new("sink_fill", 1).await;
    let (running, token) = sink::start(&t.config().set("batch_timeout", "100ms")).await;
    let addr = running.metrics_addr.to_string();
    wait_ready(&addr).await;
    let lock = LatestTableLock::take(&t.stack.postgres_uri, &t.schema).await;
    let at = website_monitor_tests::sink::numbered_start();
    let rec = |url: &str| json_rec(serde_json::json!({"url": url, "checked_at": at}));
    t.produce(&[rec("http://first/")]).await;
    first_write_waits(&t).await;
    for url in ["http://second/", "http://third/", "http://fourth/"] {
        t.produce(&[rec(url)]).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    lock.release().await;
    t.wait_rows("site_check", 4).await;
    // One transaction per batch (the sink has one partition: one part).
    let transactions: i64 =
        t.db.query_one(
            &format!(
                "SELECT count(DISTINCT xmin::text) FROM \"{}\".site_check",
                t.schema
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        transactions, 2,
        "the three records collected during the write are one batch"
    );
    sink::stop(running, token).await;
}

/// With `writers = 4` the parts of one batch (split by partition) are written
/// on four PostgreSQL connections at once: all four of the sink's backends
/// are seen waiting on one lock together. Record `i` has url `i % 101` and
/// goes to partition `url % 4`, as a url key would put it; each record is
/// stored once and `site` holds the newest record of each url.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_writers_write_the_partitions_of_a_batch_at_once_and_each_record_once() {
    four_writers_store(|i| i % URLS % 4, 4).await;
}

/// Records without a key (record `i` to partition `i % 4`) put every url in
/// every partition: the batch is one part, written by one writer (one
/// backend waits on the lock, not four waiting on each other's rows), and
/// still each record is stored once and `site` holds the newest of each url.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_urls_span_every_partition_is_written_by_one_writer() {
    four_writers_store(|i| i % 4, 1).await;
}

/// Urls of [`four_writers_store`]'s records.
const URLS: usize = 101;

/// Produces 4,000 records (url `i % URLS`) to partition `partition_of(i)` of
/// a 4-partition topic while the latest-state table is locked, under a sink
/// of four writers; `waiting` of its connections wait on the lock at once
/// and no more; then every record is stored once, `site` holds the newest
/// of each url and each partition's position is past its last record.
async fn four_writers_store(partition_of: fn(usize) -> usize, waiting: i64) {
    use rdkafka::producer::FutureRecord;
    let t = SinkTest::new("sink_writers", 4).await;
    let (db, schema, topic) = (&t.db, &t.schema, &t.topic);
    const N: usize = 4_000;
    // The sink's connections, told apart from every other test's by name.
    let app = unique_ident("sinkwriters");
    let uri = with_param(&t.stack.postgres_uri, "application_name", &app);
    // A long batch_timeout: every record produced below lands in one batch.
    let config = t
        .config()
        .set("postgres_uri", uri)
        .set("writers", 4)
        .set("batch_timeout", "3s");
    let (running, token) = sink::start(&config).await;
    wait_ready(&running.metrics_addr.to_string()).await;
    let connections: i64 = db
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            &[&app],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(connections, 4, "the sink holds one connection per writer");

    // Hold the latest-state table, so every part's transaction waits on it.
    let lock = LatestTableLock::take(&t.stack.postgres_uri, schema).await;
    let producer = website_monitor_tests::producer(&t.stack.brokers);
    let records: Vec<Vec<u8>> = (0..N).map(|i| numbered(i, URLS)).collect();
    let sends = records.iter().enumerate().map(|(i, r)| {
        let partition = i32::try_from(partition_of(i)).unwrap();
        producer.send(
            FutureRecord::<[u8], [u8]>::to(topic)
                .partition(partition)
                .payload(r),
            Duration::from_secs(30),
        )
    });
    for sent in futures::future::join_all(sends).await {
        sent.unwrap_or_else(|(e, _)| panic!("produce to {topic}: {e}"));
    }
    eventually(
        "the sink's connections to wait on the lock",
        WAIT,
        || async { (waiting_backends(db, &app).await >= waiting).then_some(()) },
    )
    .await;
    // Past batch_timeout: a part that was to come has come.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        waiting_backends(db, &app).await,
        waiting,
        "transactions at once"
    );
    lock.release().await;

    t.wait_rows("site_check", N as i64).await;
    // Let anything redelivered arrive, then check nothing doubled.
    tokio::time::sleep(Duration::from_secs(1)).await;
    t.assert_exactly_once(N as i64).await;
    let newest: Vec<(String, i64)> = db
        .query(
            &format!("SELECT url, (data->>'n')::int8 FROM \"{schema}\".site ORDER BY url"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut expected: Vec<(String, i64)> = (0..URLS)
        .map(|u| {
            let last = (0..N).rev().find(|i| i % URLS == u).unwrap();
            (format!("http://site-{u}/"), last as i64)
        })
        .collect();
    expected.sort();
    assert_eq!(newest, expected, "site holds the newest record of each url");
    let positions: Vec<(i32, i64)> = db
        .query(
            &format!("SELECT \"partition\", next_offset FROM \"{schema}\".site_kafka_offsets WHERE topic = $1 ORDER BY 1"),
            &[topic],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let expected: Vec<(i32, i64)> = (0..4)
        .map(|p| {
            (
                p as i32,
                (0..N).filter(|i| partition_of(*i) == p).count() as i64,
            )
        })
        .collect();
    assert_eq!(
        positions, expected,
        "each partition's position is past its last record"
    );
    sink::stop(running, token).await;
}

/// With two writers but room for one connection (a role limited to one),
/// writer 1 cannot connect; writer 0 writes its parts too, and every record
/// is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_room_for_one_connection_two_writers_still_store_everything_once() {
    let t = SinkTest::new("sink_one_conn", 2).await;
    let (db, schema) = (&t.db, &t.schema);
    let role = unique_ident("sink_one_conn_role");
    db.batch_execute(&format!(
        "CREATE ROLE \"{role}\" LOGIN CONNECTION LIMIT 1;
         GRANT ALL ON SCHEMA \"{schema}\" TO \"{role}\";"
    ))
    .await
    .unwrap();
    let n = 400;
    let records: Vec<Vec<u8>> = (0..n).map(|i| numbered(i, 37)).collect();
    // Keys spread the records over both partitions, so both writers get parts.
    t.produce(&records).await;
    let uri = kv_uri(&t.stack.postgres_uri, Some(&role), None, None, None);
    let config = t.config().set("postgres_uri", uri).set("writers", 2);
    let (running, token) = sink::start(&config).await;
    t.wait_rows("site_check", n as i64).await;
    t.assert_exactly_once(n as i64).await;
    let partitions: i64 = db
        .query_one(
            // The fleet rollups are kept per Kafka partition.
            &format!("SELECT count(DISTINCT shard) FROM \"{schema}\".site_fleet_per_day"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(partitions, 2, "both partitions' records were written");
    sink::stop(running, token).await;
    db.batch_execute(&format!("DROP OWNED BY \"{role}\"; DROP ROLE \"{role}\";"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_position_beyond_the_partition_end_is_reported() {
    let t = SinkTest::new("sink_ahead", 1).await;
    let (db, schema, topic) = (&t.db, &t.schema, &t.topic);
    t.migrate().await;
    // Positions left over from an earlier topic of the same name.
    db.execute(
        &format!("INSERT INTO \"{schema}\".site_kafka_offsets (topic, \"partition\", next_offset) VALUES ($1, 0, 1000)"),
        &[topic],
    )
    .await
    .unwrap();
    let recs: Vec<Vec<u8>> = (0..3).map(|i| numbered(i, 3)).collect();
    t.produce(&recs).await;
    let (running, token) = sink::start(&t.config()).await;
    let addr = running.metrics_addr.to_string();
    let line = format!(
        "website_monitor_records_position_ahead_total{{topic=\"{topic}\",partition=\"0\"}} 3"
    );
    if let Err(m) = scrape_until(&addr, WAIT, |m| m.lines().any(|l| l == line)).await {
        panic!("/metrics lacks `{line}`:\n{m}");
    }
    assert_eq!(t.count("site_check", "").await, 0);
    sink::stop(running, token).await;
}

/// A part whose write outlasts `write_timeout` (every history row slowed by
/// a trigger, as a slow server or an operator's heavy trigger would) is
/// written in pieces after the timeout, each its own transaction: every
/// record is stored once instead of the part being retried whole forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_longer_than_write_timeout_is_written_in_pieces() {
    let t = SinkTest::new("sink_pieces", 1).await;
    let (db, schema) = (&t.db, &t.schema);
    t.migrate().await;
    // About 2 ms a row (`pg_sleep(0.001)` in a row trigger): 3,000 records
    // take ~6 s in one transaction, three times the 2 s write_timeout.
    db.batch_execute(&format!(
        "CREATE FUNCTION \"{schema}\".slow() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN PERFORM pg_sleep(0.001); RETURN NEW; END $$;
         CREATE TRIGGER slow BEFORE INSERT ON \"{schema}\".site_check
         FOR EACH ROW EXECUTE FUNCTION \"{schema}\".slow();"
    ))
    .await
    .unwrap();
    let n = 3_000;
    let records: Vec<Vec<u8>> = (0..n).map(|i| numbered(i, 50)).collect();
    t.produce(&records).await;
    let config = t.config().set("write_timeout", "2s");
    let (running, token) = sink::start(&config).await;
    t.wait_rows("site_check", n as i64).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    t.assert_exactly_once(n as i64).await;
    let transactions: i64 = db
        .query_one(
            &format!("SELECT count(DISTINCT xmin::text) FROM \"{schema}\".site_check"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        transactions > 1,
        "written in pieces: {transactions} transaction(s)"
    );
    sink::stop(running, token).await;
}

/// A status sweep waiting on a lock does not hold up shutdown: with the
/// latest-state table locked (and `write_timeout` 10 minutes) the sink
/// leaves the sweep at SIGTERM and stops while the lock is still held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_waiting_on_a_lock_is_left_at_shutdown() {
    let t = SinkTest::new("sink_sweep_stop", 1).await;
    let app = unique_ident("sweepstop");
    let uri = with_param(&t.stack.postgres_uri, "application_name", &app);
    let config = t
        .config()
        .set("postgres_uri", uri)
        .set("write_timeout", "10m")
        .set("shutdown_timeout", "3s");
    let (running, token) = sink::start(&config).await;
    t.produce(&[numbered(0, 1)]).await;
    t.wait_rows("site_check", 1).await;
    let lock = LatestTableLock::take(&t.stack.postgres_uri, &t.schema).await;
    eventually(
        "a sweep of the sink's to wait on the lock",
        WAIT,
        || async { (waiting_backends(&t.db, &app).await > 0).then_some(()) },
    )
    .await;
    // Stopped with the lock still held: the sweep did not wait for it.
    sink::stop(running, token).await;
    lock.release().await;
}
