//! The sink connector against the real Kafka and PostgreSQL of `make up`.
//!
//! Each test has its own topic, consumer group and PostgreSQL schema. The
//! crash and scale-out tests run the real `website-monitor-sink` binary (build
//! it first: `cargo build --bins`); the others run the sink in-process.

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use connector_common::config::{load_str, Section};
use connector_common::Loaded;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use website_monitor_sink::{Running, SinkConfig};
use website_monitor_tests::sink::{batch_conn, batch_msg};
use website_monitor_tests::{
    column, create_topic, eventually, free_port, fresh_schema, http_get, pg, produce, stack,
    stack_script, unique, unique_ident, Proc, RestartOnDrop, Stack,
};

/// The PostgreSQL restart test takes this for writing; every other test reads
/// it, so nothing else in this binary runs while the database is down.
static PG_RESTART: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

const WAIT: Duration = Duration::from_secs(60);

/// A sink configuration for `topic` into `schema`, as a connector.toml would say it.
fn config_text(kafka: &str, topic: &str, schema: &str, uri: &str, extra_sink: &str) -> String {
    format!(
        "log_level = \"info\"\n{kafka}\n[sink]\ntopic = \"{topic}\"\ngroup_id = \"{group}\"\npostgres_uri = \"{uri}\"\nschema = \"{schema}\"\nbatch_timeout = \"50ms\"\nmetrics_address = \"127.0.0.1:0\"\n{extra_sink}\n",
        group = unique("sink-group"),
    )
}

fn plain_kafka(s: &Stack) -> String {
    format!("[kafka]\nbrokers = \"{}\"\n", s.brokers)
}

fn load(text: &str) -> Loaded<SinkConfig> {
    load_str::<SinkConfig>(text, Path::new("test.toml"), Section::Sink, &|_| None)
        .unwrap_or_else(|e| panic!("test config: {e}"))
}

async fn start(text: &str) -> (Running, CancellationToken) {
    connector_common::logging::init("info,website_monitor_sink=debug", Default::default());
    let token = CancellationToken::new();
    let running = website_monitor_sink::start(load(text), token.clone())
        .await
        .expect("sink starts");
    (running, token)
}

async fn stop(running: Running, token: CancellationToken) {
    token.cancel();
    tokio::time::timeout(WAIT, running.wait())
        .await
        .expect("sink stops within a minute")
        .expect("sink stops without error");
}

async fn count(db: &tokio_postgres::Client, schema: &str, table: &str, filter: &str) -> i64 {
    db.query_one(
        &format!("SELECT count(*) FROM \"{schema}\".\"{table}\" {filter}"),
        &[],
    )
    .await
    .unwrap_or_else(|e| panic!("counting {schema}.{table}: {e}"))
    .get(0)
}

/// A connection holding `ACCESS EXCLUSIVE` on a schema's latest-state table,
/// so every write of the sink waits on it until [`LatestTableLock::release`].
struct LatestTableLock(tokio_postgres::Client);

impl LatestTableLock {
    async fn take(uri: &str, schema: &str) -> Self {
        let client = pg(uri).await;
        client
            .batch_execute(&format!(
                "BEGIN; LOCK TABLE \"{schema}\".site IN ACCESS EXCLUSIVE MODE"
            ))
            .await
            .unwrap();
        Self(client)
    }

    async fn release(self) {
        self.0.batch_execute("ROLLBACK").await.unwrap();
    }
}

/// Waits until `schema.table` holds exactly `n` rows (and fails at once if it holds more).
async fn wait_rows(db: &tokio_postgres::Client, schema: &str, table: &str, n: i64) {
    eventually(&format!("{n} rows in {schema}.{table}"), WAIT, || async {
        let exists: bool = db
            .query_one(
                "SELECT to_regclass($1) IS NOT NULL",
                &[&format!("\"{schema}\".\"{table}\"")],
            )
            .await
            .unwrap()
            .get(0);
        if !exists {
            return None;
        }
        let c = count(db, schema, table, "").await;
        assert!(
            c <= n,
            "{schema}.{table} holds {c} rows, more than the {n} records produced"
        );
        (c == n).then_some(())
    })
    .await;
}

async fn wait_ready(addr: &str) {
    eventually(&format!("{addr}/readyz to say ready"), WAIT, || async {
        matches!(http_get(addr, "/readyz").await, Some((200, _))).then_some(())
    })
    .await;
}

fn json_rec(v: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&v).unwrap()
}

/// Produces JSON records keyed by their url.
async fn produce_json(brokers: &str, topic: &str, records: &[Vec<u8>]) {
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

// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_system_test_two_sites_three_checks() {
    let _g = PG_RESTART.read().await;
    let s = stack();
    let db = pg(&s.postgres_uri).await;
    let schema = fresh_schema(&db, "sink_seed").await;
    let topic = unique("sink-seed");
    create_topic(&s.brokers, &topic, 1).await;
    let msgs = [
        r#"{"url": "http://foo.bar", "key": "valuefoo"}"#,
        r#"{"url": "http://bar.baz", "key": "valuebar"}"#,
        r#"{"url": "http://foo.bar", "key": "valuefooupdated"}"#,
    ];
    // One at a time, like the seed's producer, so the Kafka timestamps increase.
    for m in msgs {
        produce_json(&s.brokers, &topic, &[m.as_bytes().to_vec()]).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (running, token) = start(&config_text(
        &plain_kafka(&s),
        &topic,
        &schema,
        &s.postgres_uri,
        "",
    ))
    .await;
    let addr = running.metrics_addr.to_string();
    wait_rows(&db, &schema, "site_check", 3).await;

    let rows = db
        .query(
            &format!(
                "SELECT url, data, checked_at IS NOT NULL FROM \"{schema}\".site ORDER BY url"
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 2, "exactly two rows in site");
    let urls: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(urls, ["http://bar.baz", "http://foo.bar"]);
    let bar: serde_json::Value = rows[0].get(1);
    let foo: serde_json::Value = rows[1].get(1);
    assert_eq!(
        bar,
        serde_json::json!({"url": "http://bar.baz", "key": "valuebar"})
    );
    assert_eq!(
        foo,
        serde_json::json!({"url": "http://foo.bar", "key": "valuefooupdated"}),
        "foo.bar holds the updated message"
    );
    assert!(
        rows.iter().all(|r| r.get::<_, bool>(2)),
        "checked_at falls back to the Kafka timestamp"
    );
    // ... and is exactly that timestamp: per check, and the newest per url.
    let produced =
        website_monitor_tests::consume_all(&s.brokers, &topic, Duration::from_secs(2), WAIT).await;
    assert_eq!(produced.len(), 3, "the three records are in the topic");
    let kafka_ms: Vec<i64> = produced
        .iter()
        .map(|c| c.timestamp_ms.expect("records carry a Kafka timestamp"))
        .collect();
    let check_ms: Vec<i64> = db
        .query(
            &format!("SELECT (extract(epoch FROM checked_at) * 1000)::int8 FROM \"{schema}\".site_check ORDER BY \"offset\""),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        check_ms, kafka_ms,
        "site_check.checked_at is each record's Kafka timestamp"
    );
    let site_ms: Vec<i64> = db
        .query(
            &format!("SELECT (extract(epoch FROM checked_at) * 1000)::int8 FROM \"{schema}\".site ORDER BY url"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        site_ms,
        [kafka_ms[1], kafka_ms[2]],
        "site.checked_at is the Kafka timestamp of the url's newest record"
    );
    assert_eq!(count(&db, &schema, "site_check", "").await, 3);
    assert_eq!(count(&db, &schema, "site_rejected", "").await, 0);
    let history: Vec<String> = column(&db, &format!("SELECT c.data->>'key' FROM \"{schema}\".site_check c JOIN \"{schema}\".site s ON s.id = c.site_id ORDER BY c.\"offset\"")).await;
    assert_eq!(history, ["valuefoo", "valuebar", "valuefooupdated"]);

    wait_ready(&addr).await;
    let (status, metrics) = http_get(&addr, "/metrics").await.expect("metrics answer");
    assert_eq!(status, 200);
    for name in [
        "website_monitor_records_consumed_total",
        "website_monitor_rows_written_total",
        "website_monitor_batch_size",
        "website_monitor_batch_write_seconds",
        "website_monitor_last_commit_age_seconds",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}");
    }
    assert_eq!(http_get(&addr, "/healthz").await.map(|r| r.0), Some(200));
    // From librdkafka statistics and the commit callback: the partition is
    // drained and its offsets committed.
    let lag_line = format!("website_monitor_consumer_lag{{topic=\"{topic}\",partition=\"0\"}} 0");
    let seen = tokio::time::timeout(WAIT, async {
        loop {
            let (_, m) = http_get(&addr, "/metrics").await.unwrap_or_default();
            if m.contains(&lag_line) && m.contains("website_monitor_last_commit_timestamp_seconds")
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    if seen.is_err() {
        let (_, m) = http_get(&addr, "/metrics").await.unwrap_or_default();
        panic!("/metrics lacks `{lag_line}` or the last commit timestamp:\n{m}");
    }
    stop(running, token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_seed_table_is_kept_and_updated() {
    let _g = PG_RESTART.read().await;
    let s = stack();
    let db = pg(&s.postgres_uri).await;
    let schema = fresh_schema(&db, "sink_seedtable").await;
    // The seed's own table: serial id, unique url, jsonb data, nothing else.
    db.batch_execute(&format!(
        "CREATE TABLE \"{schema}\".site (id serial PRIMARY KEY, url text UNIQUE NOT NULL, data jsonb);
         INSERT INTO \"{schema}\".site (url, data) VALUES ('http://foo.bar', '{{\"url\": \"http://foo.bar\", \"key\": \"old\"}}'),
                                                       ('http://kept/', '{{\"url\": \"http://kept/\"}}');"
    ))
    .await
    .unwrap();
    let topic = unique("sink-seedtable");
    create_topic(&s.brokers, &topic, 1).await;
    produce_json(
        &s.brokers,
        &topic,
        &[
            br#"{"url": "http://foo.bar", "key": "new"}"#.to_vec(),
            br#"{"url": "http://new/"}"#.to_vec(),
        ],
    )
    .await;
    let (running, token) = start(&config_text(
        &plain_kafka(&s),
        &topic,
        &schema,
        &s.postgres_uri,
        "",
    ))
    .await;
    wait_rows(&db, &schema, "site_check", 2).await;
    let rows = db
        .query(
            &format!("SELECT id, url, data->>'key' FROM \"{schema}\".site ORDER BY id"),
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(i32, String, Option<String>)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    // A new url takes the next free serial id; upserts may consume sequence
    // values on conflict, so only "after the seed's ids" is stable.
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(
        got[..2],
        [
            (1, "http://foo.bar".to_owned(), Some("new".to_owned())),
            (2, "http://kept/".to_owned(), None),
        ],
        "the seed's rows keep their ids; a newer record updates its row"
    );
    assert_eq!(
        (got[2].1.as_str(), got[2].2.as_deref()),
        ("http://new/", None)
    );
    assert!(got[2].0 > 2, "a new url gets a new id: {got:?}");
    stop(running, token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_schema_records_fill_the_columns() {
    let _g = PG_RESTART.read().await;
    let s = stack();
    let db = pg(&s.postgres_uri).await;
    let schema = fresh_schema(&db, "sink_cols").await;
    let topic = unique("sink-cols");
    create_topic(&s.brokers, &topic, 1).await;
    let ok = serde_json::json!({
        "url": "https://example.com/", "checked_at": 1764264000.123, "status_code": 200, "duration": 0.1841,
        "re_check": true, "ok": true, "error": null,
        "timings": {"dns": 0.0021, "connect": 0.0103, "tls": 0.0301, "ttfb": 0.1207, "transfer": 0.0209},
        "http_version": "HTTP/1.1", "response_bytes": 1256, "redirects": 0, "ip": "93.184.215.14",
        "tls": {"version": "TLSv1.3", "cert_not_after": 1790000000, "cert_days_left": 301},
        "probe": "local", "schema_version": 1
    });
    let failed = serde_json::json!({
        "url": "https://down.example/", "checked_at": 1764264001.5, "status_code": null, "duration": 5.0,
        "re_check": null, "ok": false, "error": {"kind": "timeout", "message": "no answer in 5s"},
        "probe": "local", "schema_version": 1
    });
    produce_json(
        &s.brokers,
        &topic,
        &[json_rec(ok.clone()), json_rec(failed.clone())],
    )
    .await;
    let (running, token) = start(&config_text(
        &plain_kafka(&s),
        &topic,
        &schema,
        &s.postgres_uri,
        "",
    ))
    .await;
    wait_rows(&db, &schema, "site_check", 2).await;
    let rows = db
        .query(
            &format!(
                "SELECT s.url, extract(epoch FROM c.checked_at)::float8, c.ok, c.status_code, c.duration, c.data, c.topic, c.\"partition\", c.\"offset\",
                        extract(epoch FROM s.checked_at)::float8, s.data
                 FROM \"{schema}\".site_check c JOIN \"{schema}\".site s ON s.id = c.site_id ORDER BY c.\"offset\""
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    let r = &rows[0];
    assert_eq!(r.get::<_, String>(0), "https://example.com/");
    assert!((r.get::<_, f64>(1) - 1764264000.123).abs() < 1e-3);
    assert_eq!(r.get::<_, Option<bool>>(2), Some(true));
    assert_eq!(r.get::<_, Option<i32>>(3), Some(200));
    assert_eq!(r.get::<_, Option<f64>>(4), Some(0.1841));
    assert_eq!(r.get::<_, serde_json::Value>(5), ok);
    assert_eq!(r.get::<_, String>(6), topic);
    assert_eq!((r.get::<_, i32>(7), r.get::<_, i64>(8)), (0, 0));
    assert!(
        (r.get::<_, f64>(9) - 1764264000.123).abs() < 1e-3,
        "site.checked_at is the record's"
    );
    assert_eq!(r.get::<_, serde_json::Value>(10), ok);
    let r = &rows[1];
    assert_eq!(r.get::<_, Option<bool>>(2), Some(false));
    assert_eq!(r.get::<_, Option<i32>>(3), None, "no response, no status");
    assert_eq!(r.get::<_, Option<f64>>(4), Some(5.0));
    assert_eq!(r.get::<_, serde_json::Value>(5)["error"]["kind"], "timeout");
    stop(running, token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_record_never_overwrites_a_newer_one() {
    let _g = PG_RESTART.read().await;
    let s = stack();
    let db = pg(&s.postgres_uri).await;
    let schema = fresh_schema(&db, "sink_order").await;
    let topic = unique("sink-order");
    create_topic(&s.brokers, &topic, 1).await;
    let rec = |url: &str, t: f64, tag: &str| {
        json_rec(serde_json::json!({"url": url, "checked_at": t, "tag": tag}))
    };
    // In one batch: newer first, then older.
    produce_json(
        &s.brokers,
        &topic,
        &[
            rec("http://a/", 2000.0, "new"),
            rec("http://a/", 1000.0, "old"),
        ],
    )
    .await;
    let (running, token) = start(&config_text(
        &plain_kafka(&s),
        &topic,
        &schema,
        &s.postgres_uri,
        "",
    ))
    .await;
    wait_rows(&db, &schema, "site_check", 2).await;
    // In a later batch: older again, and a newer one for a second url.
    produce_json(
        &s.brokers,
        &topic,
        &[
            rec("http://a/", 1500.0, "older-later"),
            rec("http://b/", 10.0, "b1"),
        ],
    )
    .await;
    wait_rows(&db, &schema, "site_check", 4).await;
    produce_json(
        &s.brokers,
        &topic,
        &[rec("http://b/", 5.0, "b-old"), rec("http://b/", 20.0, "b2")],
    )
    .await;
    wait_rows(&db, &schema, "site_check", 6).await;
    let latest = |url: &'static str| {
        let db = &db;
        let schema = &schema;
        async move {
            let r = db
                .query_one(
                    &format!("SELECT data->>'tag', extract(epoch FROM checked_at)::float8 FROM \"{schema}\".site WHERE url = $1"),
                    &[&url],
                )
                .await
                .unwrap();
            (r.get::<_, String>(0), r.get::<_, f64>(1))
        }
    };
    assert_eq!(latest("http://a/").await, ("new".to_owned(), 2000.0));
    assert_eq!(latest("http://b/").await, ("b2".to_owned(), 20.0));
    assert_eq!(count(&db, &schema, "site", "").await, 2);
    stop(running, token).await;
}

/// While one batch is written, the next is collected: its `batch_timeout`
/// runs from its own first record, so after a slow write it is written at
/// once instead of waiting a whole `batch_timeout` more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_batch_is_collected_while_the_previous_one_is_written() {
    let _g = PG_RESTART.read().await;
    let s = stack();
    let db = pg(&s.postgres_uri).await;
    let schema = fresh_schema(&db, "sink_overlap").await;
    let topic = unique("sink-overlap");
    create_topic(&s.brokers, &topic, 1).await;
    let text = config_text(&plain_kafka(&s), &topic, &schema, &s.postgres_uri, "")
        .replace("batch_timeout = \"50ms\"", "batch_timeout = \"4s\"");
    let (running, token) = start(&text).await;
    wait_ready(&running.metrics_addr.to_string()).await;
    // Hold the latest-state table so the first batch's write waits.
    let lock = LatestTableLock::take(&s.postgres_uri, &schema).await;
    let rec = |url: &str| json_rec(serde_json::json!({"url": url, "checked_at": 1000.0}));
    produce_json(&s.brokers, &topic, &[rec("http://first/")]).await;
    let site = format!("\"{schema}\".site");
    eventually(
        "the first batch's write to wait on the lock",
        WAIT,
        || async {
            let waiting: i64 = db
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
    produce_json(&s.brokers, &topic, &[rec("http://second/")]).await;
    // More than batch_timeout: the second batch is complete before the first
    // write can finish.
    tokio::time::sleep(Duration::from_secs(6)).await;
    lock.release().await;
    wait_rows(&db, &schema, "site_check", 2).await;
    let gap: f64 = db
        .query_one(
            &format!("SELECT extract(epoch FROM max(inserted_at) - min(inserted_at))::float8 FROM \"{schema}\".site_check"),
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
    stop(running, token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_records_are_rejected_with_their_reason_and_good_ones_around_them_stored() {
    let _g = PG_RESTART.read().await;
    let s = stack();
    let db = pg(&s.postgres_uri).await;
    let schema = fresh_schema(&db, "sink_bad").await;
    let topic = unique("sink-bad");
    create_topic(&s.brokers, &topic, 1).await;
    let (running, token) = start(&config_text(
        &plain_kafka(&s),
        &topic,
        &schema,
        &s.postgres_uri,
        "max_record_bytes = 2000\nmax_url_bytes = 100\n",
    ))
    .await;
    let addr = running.metrics_addr.to_string();
    wait_ready(&addr).await;
    // A constraint PostgreSQL enforces but the sink cannot know about: the
    // record that breaks it must be found and rejected, not retried forever.
    db.batch_execute(&format!(
        "ALTER TABLE \"{schema}\".site_check ADD CONSTRAINT no_599 CHECK (status_code IS DISTINCT FROM 599)"
    ))
    .await
    .unwrap();

    let long_url = format!("{{\"url\": \"http://{}\"}}", "x".repeat(120));
    let big = format!(
        "{{\"url\": \"http://big/\", \"pad\": \"{}\"}}",
        "p".repeat(3000)
    );
    let cases: Vec<(&str, Option<Vec<u8>>)> = vec![
        (
            "good",
            Some(br#"{"url": "http://good1/", "n": 1}"#.to_vec()),
        ),
        (
            "not_utf8",
            Some(b"{\"url\": \"http://x/\xff\xfe\"}".to_vec()),
        ),
        ("not_json", Some(b"{\"url\": \"http://x/\"".to_vec())),
        ("not_object", Some(b"[\"http://x/\"]".to_vec())),
        ("no_url", Some(br#"{"href": "http://x/"}"#.to_vec())),
        ("url_not_string", Some(br#"{"url": 42}"#.to_vec())),
        ("empty_url", Some(br#"{"url": ""}"#.to_vec())),
        ("url_too_long", Some(long_url.into_bytes())),
        ("too_large", Some(big.into_bytes())),
        (
            "nul_in_string",
            Some(br#"{"url": "http://nul/", "e": "a\u0000b"}"#.to_vec()),
        ),
        ("empty", None),
        (
            "database",
            Some(br#"{"url": "http://refused/", "status_code": 599}"#.to_vec()),
        ),
        (
            "good",
            Some(br#"{"url": "http://good2/", "n": 2}"#.to_vec()),
        ),
    ];
    // Produce in order, with a key on each so the rejects keep it.
    {
        use rdkafka::producer::FutureRecord;
        let p = website_monitor_tests::producer(&s.brokers);
        for (i, (_, payload)) in cases.iter().enumerate() {
            let key = format!("k{i}");
            let mut r: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&topic).key(key.as_bytes());
            if let Some(v) = payload {
                r = r.payload(v.as_slice());
            }
            p.send(r, Duration::from_secs(30))
                .await
                .map_err(|(e, _)| e)
                .expect("produce");
        }
    }
    let n_bad = cases.iter().filter(|c| c.0 != "good").count() as i64;
    wait_rows(&db, &schema, "site_rejected", n_bad).await;
    wait_rows(&db, &schema, "site_check", 2).await;
    let rows = db
        .query(
            &format!("SELECT \"offset\", reason, detail, key, raw FROM \"{schema}\".site_rejected ORDER BY \"offset\""),
            &[],
        )
        .await
        .unwrap();
    for r in &rows {
        let offset: i64 = r.get(0);
        let (want, payload) = &cases[offset as usize];
        assert_eq!(r.get::<_, String>(1), *want, "reason of offset {offset}");
        assert_eq!(
            r.get::<_, Option<Vec<u8>>>(3),
            Some(format!("k{offset}").into_bytes()),
            "key kept"
        );
        assert_eq!(&r.get::<_, Option<Vec<u8>>>(4), payload, "raw bytes kept");
        let detail: Option<String> = r.get(2);
        assert!(
            detail.is_some_and(|d| !d.is_empty()),
            "offset {offset} has a detail"
        );
    }
    let db_detail: String = rows
        .iter()
        .find(|r| r.get::<_, String>(1) == "database")
        .unwrap()
        .get(2);
    assert!(
        db_detail.contains("no_599") || db_detail.contains("23514"),
        "PostgreSQL's message is kept: {db_detail}"
    );
    let good: Vec<String> = column(
        &db,
        &format!("SELECT url FROM \"{schema}\".site ORDER BY url"),
    )
    .await;
    assert_eq!(
        good,
        ["http://good1/", "http://good2/"],
        "good records around the bad ones are stored; the refused one left no row"
    );

    // The sink is still running and takes more.
    produce_json(
        &s.brokers,
        &topic,
        &[br#"{"url": "http://good3/"}"#.to_vec()],
    )
    .await;
    wait_rows(&db, &schema, "site_check", 3).await;
    let (_, metrics) = http_get(&addr, "/metrics").await.unwrap();
    for reason in ["not_utf8", "nul_in_string", "database"] {
        assert!(
            metrics.contains(&format!(
                "website_monitor_records_rejected_total{{reason=\"{reason}\"}}"
            )),
            "metrics count reason {reason}"
        );
    }
    stop(running, token).await;
}

// --- real processes --------------------------------------------------------

fn numbered(i: usize, urls: usize) -> Vec<u8> {
    json_rec(
        serde_json::json!({"url": format!("http://site-{}/", i % urls), "checked_at": 1_700_000_000.0 + i as f64, "n": i, "ok": true}),
    )
}

async fn assert_exactly_once(db: &tokio_postgres::Client, schema: &str, n: i64) {
    let r = db
        .query_one(
            &format!(
                "SELECT count(*), count(DISTINCT (data->>'n')::int) FROM \"{schema}\".site_check"
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (r.get::<_, i64>(0), r.get::<_, i64>(1)),
        (n, n),
        "each record exactly once in site_check"
    );
    assert_eq!(
        count(db, schema, "site_rejected", "").await,
        0,
        "no record was rejected (a duplicate would be)"
    );
}

/// Waits until the history table exists and holds at least `n` rows; returns the count.
async fn stored_at_least(db: &tokio_postgres::Client, schema: &str, n: i64) -> i64 {
    eventually(
        &format!("{n} rows in {schema}.site_check"),
        WAIT,
        || async {
            let exists: bool = db
                .query_one(
                    "SELECT to_regclass($1) IS NOT NULL",
                    &[&format!("\"{schema}\".site_check")],
                )
                .await
                .unwrap()
                .get(0);
            if !exists {
                return None;
            }
            let c = count(db, schema, "site_check", "").await;
            (c >= n).then_some(c)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_then_restart_stores_each_record_exactly_once() {
    let _g = PG_RESTART.read().await;
    let s = stack();
    let db = pg(&s.postgres_uri).await;
    let schema = fresh_schema(&db, "sink_crash").await;
    let topic = unique("sink-crash");
    create_topic(&s.brokers, &topic, 3).await;
    const N: usize = 30_000;
    let config = config_text(
        &plain_kafka(&s),
        &topic,
        &schema,
        &s.postgres_uri,
        "batch_size = 300\n",
    );

    let mut sink = Proc::spawn("sink", &config);
    // Produce in chunks while the sink runs, and kill it once it is part way.
    let mut killed_at = None;
    for chunk in (0..N).collect::<Vec<_>>().chunks(2_000) {
        let recs: Vec<Vec<u8>> = chunk.iter().map(|&i| numbered(i, 700)).collect();
        produce_json(&s.brokers, &topic, &recs).await;
        if killed_at.is_none() {
            let stored = stored_at_least(&db, &schema, 1_000).await;
            sink.kill9();
            killed_at = Some(stored);
        }
    }
    let stored_at_kill = killed_at.unwrap();
    let after_kill = count(&db, &schema, "site_check", "").await;
    assert!(
        after_kill < N as i64,
        "the kill came mid-stream ({after_kill} of {N} stored)"
    );
    eprintln!("killed with {stored_at_kill} of {N} stored");

    let mut sink = Proc::spawn("sink", &config);
    wait_rows(&db, &schema, "site_check", N as i64).await;
    // Let anything redelivered arrive, then check nothing doubled.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_exactly_once(&db, &schema, N as i64).await;
    assert_eq!(count(&db, &schema, "site", "").await, 700);
    let newest: i64 = db
        .query_one(&format!("SELECT max((data->>'n')::int8) FROM \"{schema}\".site WHERE url = 'http://site-0/'"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        newest,
        ((N - 1) / 700 * 700) as i64,
        "site holds the newest check of each url"
    );
    assert_eq!(
        sink.term(),
        Some(0),
        "SIGTERM exits 0; log:\n{}",
        sink.log()
    );
}

/// Runs a sink with `config`, kills it with -9 once it stored 1,000 of the
/// first `n / 2` records, produces the rest while no sink runs, starts it
/// again and returns how long after its start it stored its first new record;
/// then checks every record is stored exactly once.
async fn resume_after_kill_9(
    db: &tokio_postgres::Client,
    schema: &str,
    topic: &str,
    config: &str,
    n: usize,
) -> Duration {
    let s = stack();
    let mut sink = Proc::spawn("sink", config);
    let first: Vec<Vec<u8>> = (0..n / 2).map(|i| numbered(i, 500)).collect();
    produce_json(&s.brokers, topic, &first).await;
    stored_at_least(db, schema, 1_000).await;
    sink.kill9();
    // A COMMIT the dead process had already sent may still land.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let at_kill = count(db, schema, "site_check", "").await;
    let rest: Vec<Vec<u8>> = (n / 2..n).map(|i| numbered(i, 500)).collect();
    produce_json(&s.brokers, topic, &rest).await;
    assert_eq!(
        count(db, schema, "site_check", "").await,
        at_kill,
        "nothing is stored while no sink runs"
    );
    let started = std::time::Instant::now();
    let mut sink = Proc::spawn("sink", config);
    let resumed = eventually("the restarted sink to store new records", WAIT, || async {
        (count(db, schema, "site_check", "").await > at_kill).then(|| started.elapsed())
    })
    .await;
    eprintln!("killed with {at_kill} of {n} stored; the restarted sink stored new records {resumed:?} after its start");
    wait_rows(db, schema, "site_check", n as i64).await;
    // Let anything redelivered arrive, then check nothing doubled.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_exactly_once(db, schema, n as i64).await;
    assert_eq!(
        sink.term(),
        Some(0),
        "SIGTERM exits 0; log:\n{}",
        sink.log()
    );
    resumed
}

/// Static group membership (issue 11, part 4): a sink killed with -9 and
/// started again with the same `group_instance_id` takes its partitions back
/// at once, instead of after the dead member's session timeout (45 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_after_kill_9_with_its_group_instance_id_a_sink_resumes_within_5_s() {
    let _g = PG_RESTART.read().await;
    let s = stack();
    let db = pg(&s.postgres_uri).await;
    let schema = fresh_schema(&db, "sink_static").await;
    let topic = unique("sink-static");
    create_topic(&s.brokers, &topic, 3).await;
    let config = config_text(
        &plain_kafka(&s),
        &topic,
        &schema,
        &s.postgres_uri,
        &format!(
            "batch_size = 300\ngroup_instance_id = \"{}\"\n",
            unique("sink")
        ),
    );
    let resumed = resume_after_kill_9(&db, &schema, &topic, &config, 20_000).await;
    assert!(
        resumed < Duration::from_secs(5),
        "the restarted sink stored new records only {resumed:?} after its start (dynamic membership waits ~45 s)"
    );
}

/// Two live sinks with one `group_instance_id`: the broker fences the older,
/// which stops with exit code 1 and says why; the newer stores everything,
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_sinks_with_one_group_instance_id_the_older_stops_with_a_clear_error() {
    let _g = PG_RESTART.read().await;
    let s = stack();
    let db = pg(&s.postgres_uri).await;
    let schema = fresh_schema(&db, "sink_fenced").await;
    let topic = unique("sink-fenced");
    create_topic(&s.brokers, &topic, 2).await;
    let id = unique("sink");
    let config = config_text(
        &plain_kafka(&s),
        &topic,
        &schema,
        &s.postgres_uri,
        &format!("group_instance_id = \"{id}\"\n"),
    );
    let mut older = Proc::spawn("sink", &config);
    let first: Vec<Vec<u8>> = (0..1_000).map(|i| numbered(i, 100)).collect();
    produce_json(&s.brokers, &topic, &first).await;
    wait_rows(&db, &schema, "site_check", 1_000).await;

    let mut newer = Proc::spawn("sink", &config);
    let mut code = None;
    for _ in 0..600 {
        code = older.exited();
        if code.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = older.log();
    assert_eq!(
        code,
        Some(Some(1)),
        "the fenced sink exits 1 within 60 s; log:\n{log}"
    );
    assert!(
        log.contains("fenced") && log.contains(&id) && log.contains("group_instance_id"),
        "the fenced sink says why, naming the id; log:\n{log}"
    );
    let second: Vec<Vec<u8>> = (1_000..2_000).map(|i| numbered(i, 100)).collect();
    produce_json(&s.brokers, &topic, &second).await;
    wait_rows(&db, &schema, "site_check", 2_000).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_exactly_once(&db, &schema, 2_000).await;
    assert_eq!(newer.term(), Some(0), "log:\n{}", newer.log());
}

/// A static member that stops cleanly leaves the group (it does not keep its
/// partitions for session.timeout.ms): another sink of the group stores the
/// records that come after within seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_member_stopped_with_sigterm_hands_its_partitions_over_at_once() {
    let _g = PG_RESTART.read().await;
    let s = stack();
    let db = pg(&s.postgres_uri).await;
    let schema = fresh_schema(&db, "sink_static_term").await;
    let topic = unique("sink-static-term");
    create_topic(&s.brokers, &topic, 2).await;
    let config = config_text(
        &plain_kafka(&s),
        &topic,
        &schema,
        &s.postgres_uri,
        "group_instance_id = \"GROUP_INSTANCE\"\n",
    );
    let mut first = Proc::spawn("sink", &config.replace("GROUP_INSTANCE", &unique("a")));
    let mut second = Proc::spawn("sink", &config.replace("GROUP_INSTANCE", &unique("b")));
    let records: Vec<Vec<u8>> = (0..1_000).map(|i| numbered(i, 100)).collect();
    produce_json(&s.brokers, &topic, &records).await;
    wait_rows(&db, &schema, "site_check", 1_000).await;
    assert_eq!(first.term(), Some(0), "log:\n{}", first.log());
    let stopped = std::time::Instant::now();
    let records: Vec<Vec<u8>> = (1_000..2_000).map(|i| numbered(i, 100)).collect();
    produce_json(&s.brokers, &topic, &records).await;
    wait_rows(&db, &schema, "site_check", 2_000).await;
    let took = stopped.elapsed();
    eprintln!("every record stored {took:?} after the first sink stopped");
    assert!(
        took < Duration::from_secs(15),
        "the remaining sink took the partitions over only after {took:?} (session.timeout.ms is 45 s); its log:\n{}",
        second.log()
    );
    assert_exactly_once(&db, &schema, 2_000).await;
    assert_eq!(second.term(), Some(0), "log:\n{}", second.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sinks_in_one_group_store_every_record_exactly_once() {
    let _g = PG_RESTART.read().await;
    let s = stack();
    let db = pg(&s.postgres_uri).await;
    let schema = fresh_schema(&db, "sink_group").await;
    let topic = unique("sink-group");
    create_topic(&s.brokers, &topic, 6).await;
    const N: usize = 12_000;
    let group = unique("sink-shared-group");
    let port_a = free_port();
    let port_b = free_port();
    let cfg = |port: u16| {
        format!(
            "{}\n[sink]\ntopic = \"{topic}\"\ngroup_id = \"{group}\"\npostgres_uri = \"{}\"\nschema = \"{schema}\"\nbatch_size = 200\nbatch_timeout = \"50ms\"\nmetrics_address = \"127.0.0.1:{port}\"\n",
            plain_kafka(&s),
            s.postgres_uri
        )
    };
    let mut a = Proc::spawn("sink", &cfg(port_a));
    let mut b = Proc::spawn("sink", &cfg(port_b));
    // Produce only once both are members, so both get partitions with records.
    let assigned = |p: &Proc| {
        p.log()
            .lines()
            .any(|l| l.contains("partitions assigned") && !l.trim_end().ends_with("[]"))
    };
    let joined = tokio::time::timeout(WAIT, async {
        while !(assigned(&a) && assigned(&b)) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        joined.is_ok(),
        "both sinks get partitions; logs:\n{}\n---\n{}",
        a.log(),
        b.log()
    );
    let half: Vec<Vec<u8>> = (0..N / 2).map(|i| numbered(i, 300)).collect();
    produce_json(&s.brokers, &topic, &half).await;
    // Both must have taken partitions and written rows.
    for (name, port, proc) in [("a", port_a, &a), ("b", port_b, &b)] {
        let wrote = tokio::time::timeout(WAIT, async {
            loop {
                if let Some((_, m)) = http_get(&format!("127.0.0.1:{port}"), "/metrics").await {
                    if m.lines().any(|l| {
                        l.starts_with("website_monitor_rows_written_total{table=\"site_check\"}")
                            && !l.ends_with(" 0")
                    }) {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        assert!(
            wrote.is_ok(),
            "sink {name} wrote no rows within {WAIT:?}; log:\n{}",
            proc.log()
        );
    }
    // One member leaves mid-stream: the other takes its partitions over.
    let rest: Vec<Vec<u8>> = (N / 2..N).map(|i| numbered(i, 300)).collect();
    let producing = produce_json(&s.brokers, &topic, &rest);
    let stopping = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        tokio::task::block_in_place(|| a.term())
    };
    let (_, code) = tokio::join!(producing, stopping);
    assert_eq!(
        code,
        Some(0),
        "sink a exits 0 on SIGTERM; log:\n{}",
        a.log()
    );
    wait_rows(&db, &schema, "site_check", N as i64).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_exactly_once(&db, &schema, N as i64).await;
    assert_eq!(count(&db, &schema, "site", "").await, 300);
    assert_eq!(b.term(), Some(0), "log:\n{}", b.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sinks_starting_at_once_on_an_empty_schema_migrate_once_and_both_work() {
    let _g = PG_RESTART.read().await;
    let s = stack();
    let db = pg(&s.postgres_uri).await;
    // Not created: the sinks create it.
    let schema = unique_ident("sink_race");
    let topic = unique("sink-race");
    create_topic(&s.brokers, &topic, 2).await;
    let group = unique("sink-race-group");
    let text = format!(
        "{}\n[sink]\ntopic = \"{topic}\"\ngroup_id = \"{group}\"\npostgres_uri = \"{}\"\nschema = \"{schema}\"\nbatch_timeout = \"50ms\"\nmetrics_address = \"127.0.0.1:0\"\n",
        plain_kafka(&s),
        s.postgres_uri
    );
    let ((ra, ta), (rb, tb)) = tokio::join!(start(&text), start(&text));
    let (addr_a, addr_b) = (ra.metrics_addr.to_string(), rb.metrics_addr.to_string());
    wait_ready(&addr_a).await;
    wait_ready(&addr_b).await;
    let versions: Vec<i32> = column(
        &db,
        &format!("SELECT version FROM \"{schema}\".site_migrations ORDER BY version"),
    )
    .await;
    let expected: Vec<i32> = website_monitor_sink::migrate::MIGRATIONS
        .iter()
        .map(|m| m.version)
        .collect();
    assert_eq!(versions, expected, "each migration recorded once");
    // Migration 2 dropped the history table's foreign key (it doubled insert cost).
    let fks: i64 = db
        .query_one(
            "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND conrelid = to_regclass($1)",
            &[&format!("\"{schema}\".site_check")],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        fks, 0,
        "no foreign key on the history table after the migrations"
    );
    // Migration 3 leaves room for HOT updates of the latest rows.
    let options: Option<Vec<String>> = db
        .query_one(
            "SELECT reloptions FROM pg_class WHERE oid = to_regclass($1)",
            &[&format!("\"{schema}\".site")],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(options, Some(vec!["fillfactor=50".to_owned()]));
    let recs: Vec<Vec<u8>> = (0..400).map(|i| numbered(i, 40)).collect();
    produce_json(&s.brokers, &topic, &recs).await;
    wait_rows(&db, &schema, "site_check", 400).await;
    assert_exactly_once(&db, &schema, 400).await;
    let (a, b) = tokio::join!(stop(ra, ta), stop(rb, tb));
    let _ = (a, b);
}

/// With `writers = 4` the parts of one batch (split by partition) are written
/// on four PostgreSQL connections at once: all four of the sink's backends
/// are seen waiting on one lock together. The records are not keyed by url
/// (record `i` goes to partition `i % 4`, url `i % 101`), so every url is in
/// every part and the writers upsert the same rows concurrently; still each
/// record is stored once and `site` holds the newest record of each url.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_writers_write_the_partitions_of_a_batch_at_once_and_each_record_once() {
    use rdkafka::producer::FutureRecord;
    let _g = PG_RESTART.read().await;
    let s = stack();
    let db = pg(&s.postgres_uri).await;
    let schema = fresh_schema(&db, "sink_writers").await;
    let topic = unique("sink-writers");
    create_topic(&s.brokers, &topic, 4).await;
    const N: usize = 4_000;
    const URLS: usize = 101;
    // The sink's connections, told apart from every other test's by name.
    let app = unique_ident("sinkwriters");
    let sep = if s.postgres_uri.contains('?') {
        '&'
    } else {
        '?'
    };
    let uri = format!("{}{sep}application_name={app}", s.postgres_uri);
    // A long batch_timeout: every record produced below lands in one batch.
    let text = config_text(&plain_kafka(&s), &topic, &schema, &uri, "writers = 4\n")
        .replace("batch_timeout = \"50ms\"", "batch_timeout = \"3s\"");
    let (running, token) = start(&text).await;
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
    let lock = LatestTableLock::take(&s.postgres_uri, &schema).await;
    let producer = website_monitor_tests::producer(&s.brokers);
    let records: Vec<Vec<u8>> = (0..N).map(|i| numbered(i, URLS)).collect();
    let sends = records.iter().enumerate().map(|(i, r)| {
        let partition = i32::try_from(i % 4).unwrap();
        producer.send(
            FutureRecord::<[u8], [u8]>::to(&topic)
                .partition(partition)
                .payload(r),
            Duration::from_secs(30),
        )
    });
    for sent in futures::future::join_all(sends).await {
        sent.unwrap_or_else(|(e, _)| panic!("produce to {topic}: {e}"));
    }
    let waiting = eventually(
        "four of the sink's connections to wait on the lock at once",
        WAIT,
        || async {
            let waiting: i64 = db
                .query_one(
                    "SELECT count(DISTINCT l.pid) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                     WHERE NOT l.granted AND a.application_name = $1",
                    &[&app],
                )
                .await
                .unwrap()
                .get(0);
            (waiting >= 4).then_some(waiting)
        },
    )
    .await;
    assert_eq!(waiting, 4, "one transaction per writer");
    lock.release().await;

    wait_rows(&db, &schema, "site_check", N as i64).await;
    // Let anything redelivered arrive, then check nothing doubled.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_exactly_once(&db, &schema, N as i64).await;
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
            &[&topic],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        positions,
        (0..4).map(|p| (p, (N / 4) as i64)).collect::<Vec<_>>(),
        "each partition's position is past its last record"
    );
    stop(running, token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_while_running_loses_and_doubles_nothing() {
    let s = stack();
    assert!(
        s.pg_ours,
        "postgres_restart_while_running_loses_and_doubles_nothing needs the PostgreSQL started by scripts/stack.sh (WM_PG_OURS=1, as `make up`/`make test` do): it stops and restarts it, which it must not do to a database it does not own. Run it against the local stack, or skip it explicitly with `--skip postgres_restart`"
    );
    let _g = PG_RESTART.write().await;
    let db = pg(&s.postgres_uri).await;
    let schema = fresh_schema(&db, "sink_pgrestart").await;
    let topic = unique("sink-pgrestart");
    create_topic(&s.brokers, &topic, 2).await;
    let (running, token) = start(&config_text(
        &plain_kafka(&s),
        &topic,
        &schema,
        &s.postgres_uri,
        "batch_size = 500\n",
    ))
    .await;
    let addr = running.metrics_addr.to_string();
    let first: Vec<Vec<u8>> = (0..2_000).map(|i| numbered(i, 100)).collect();
    produce_json(&s.brokers, &topic, &first).await;
    wait_rows(&db, &schema, "site_check", 2_000).await;
    wait_ready(&addr).await;
    drop(db);

    stack_script("pg-stop");
    let restart = RestartOnDrop::new("pg-start");
    let second: Vec<Vec<u8>> = (2_000..5_000).map(|i| numbered(i, 100)).collect();
    produce_json(&s.brokers, &topic, &second).await;
    eventually("/readyz to report PostgreSQL down", WAIT, || async {
        match http_get(&addr, "/readyz").await {
            Some((503, body)) if body.contains("PostgreSQL") => Some(()),
            _ => None,
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stack_script("pg-start");
    restart.disarm();

    let db = pg(&s.postgres_uri).await;
    wait_rows(&db, &schema, "site_check", 5_000).await;
    wait_ready(&addr).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_exactly_once(&db, &schema, 5_000).await;
    let (_, metrics) = http_get(&addr, "/metrics").await.unwrap();
    assert!(
        metrics.contains("website_monitor_db_retries_total"),
        "retries are counted"
    );
    stop(running, token).await;
}

/// `s.postgres_uri` as a `key=value` string with `user`, the host name the
/// client believes it talks to (`host`, used for TLS verification) and,
/// when given, the address it really connects to (`hostaddr`) and the port.
fn kv_uri(
    uri: &str,
    user: Option<&str>,
    host: Option<&str>,
    hostaddr: Option<&str>,
    port: Option<u16>,
) -> String {
    let c: tokio_postgres::Config = uri.parse().expect("stack postgres_uri parses");
    let orig_host = match c.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".to_owned(),
    };
    let mut out = format!(
        "host={} port={} dbname={} user={}",
        host.unwrap_or(&orig_host),
        port.unwrap_or_else(|| c.get_ports().first().copied().unwrap_or(5432)),
        c.get_dbname().unwrap_or("postgres"),
        user.or(c.get_user()).unwrap_or("postgres"),
    );
    if let Some(a) = hostaddr {
        out.push_str(&format!(" hostaddr={a}"));
    }
    if let Some(pw) = c.get_password() {
        out.push_str(&format!(" password='{}'", String::from_utf8_lossy(pw)));
    }
    out
}

/// The PostgreSQL server's port in the stack's connection string.
fn pg_port(uri: &str) -> u16 {
    let c: tokio_postgres::Config = uri.parse().expect("stack postgres_uri parses");
    c.get_ports().first().copied().unwrap_or(5432)
}

/// Starts a sink on `uri` and checks it never gets PostgreSQL: `/readyz`
/// names PostgreSQL and no table appears.
async fn assert_refused(s: &Stack, db: &tokio_postgres::Client, uri: &str, what: &str) {
    let schema = fresh_schema(db, "sink_tls_bad").await;
    let topic = unique("sink-tls-bad");
    create_topic(&s.brokers, &topic, 1).await;
    let (running, token) = start(&config_text(&plain_kafka(s), &topic, &schema, uri, "")).await;
    let addr = running.metrics_addr.to_string();
    eventually(
        &format!("/readyz to report the certificate problem ({what})"),
        WAIT,
        || async {
            match http_get(&addr, "/readyz").await {
                Some((503, body)) if body.contains("PostgreSQL") => Some(()),
                _ => None,
            }
        },
    )
    .await;
    let exists: bool = db
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[&format!("\"{schema}\".site")],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        !exists,
        "{what}: no table was created through an unverified connection"
    );
    stop(running, token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_postgres_with_require_and_verify_full() {
    let _g = PG_RESTART.read().await;
    let s = stack();
    let db = pg(&s.postgres_uri).await;
    let ca = s.tls_dir.join("ca.pem");
    // The server certificate names 127.0.0.1 and localhost only. Connecting
    // to 127.0.0.1 while calling it `not-in-the-cert.invalid` (libpq's
    // `hostaddr`) gives a target whose chain is good and whose name is not:
    // verify-ca must connect there and verify-full must not.
    let wrong_name = |mode: &str| {
        format!(
            "{} sslmode={mode} sslrootcert='{}'",
            kv_uri(
                &s.postgres_uri,
                None,
                Some("not-in-the-cert.invalid"),
                Some("127.0.0.1"),
                None
            ),
            ca.display()
        )
    };
    let sep = if s.postgres_uri.contains('?') {
        '&'
    } else {
        '?'
    };
    for (mode, base) in [
        ("require", format!("{}{sep}sslmode=require", s.postgres_uri)),
        ("verify-ca", wrong_name("verify-ca")),
        (
            "verify-full",
            format!(
                "{}{sep}sslmode=verify-full&sslrootcert={}",
                s.postgres_uri,
                ca.display()
            ),
        ),
    ] {
        let schema = fresh_schema(&db, "sink_tls").await;
        let topic = unique("sink-tls");
        create_topic(&s.brokers, &topic, 1).await;
        let app = unique_ident("sinktls");
        let uri = if base.starts_with("postgres") {
            format!("{base}&application_name={app}")
        } else {
            format!("{base} application_name={app}")
        };
        produce_json(&s.brokers, &topic, &[br#"{"url": "http://tls/"}"#.to_vec()]).await;
        let (running, token) =
            start(&config_text(&plain_kafka(&s), &topic, &schema, &uri, "")).await;
        wait_rows(&db, &schema, "site_check", 1).await;
        let ssl: bool = db
            .query_one(
                "SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = $1",
                &[&app],
            )
            .await
            .unwrap()
            .get::<_, Option<bool>>(0)
            .expect("the sink's connection is listed");
        assert!(ssl, "sslmode={mode}: the sink's connection is encrypted");
        stop(running, token).await;
    }

    // The same good chain under a name the certificate does not hold:
    // verify-full checks the name, so it must not connect.
    assert_refused(
        &s,
        &db,
        &wrong_name("verify-full"),
        "verify-full, name not in the certificate",
    )
    .await;

    // verify-full against a CA that did not sign the server's certificate must not connect.
    let wrong_ca = tempfile::NamedTempFile::new().unwrap();
    {
        let mut f = wrong_ca.reopen().unwrap();
        f.write_all(&std::fs::read(s.tls_dir.join("client.pem")).unwrap())
            .unwrap();
    }
    let uri = format!(
        "{}{sep}sslmode=verify-full&sslrootcert={}",
        s.postgres_uri,
        wrong_ca.path().display()
    );
    assert_refused(&s, &db, &uri, "verify-full, wrong CA").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumes_through_the_mtls_listener() {
    let _g = PG_RESTART.read().await;
    let s = stack();
    let db = pg(&s.postgres_uri).await;
    let schema = fresh_schema(&db, "sink_mtls").await;
    let topic = unique("sink-mtls");
    create_topic(&s.brokers, &topic, 1).await;
    produce_json(
        &s.brokers,
        &topic,
        &[br#"{"url": "http://mtls/", "ok": true}"#.to_vec()],
    )
    .await;
    let kafka = format!(
        "[kafka]\nbrokers = \"{}\"\nssl_ca = \"{}\"\nssl_cert = \"{}\"\nssl_key = \"{}\"\n",
        s.ssl_brokers,
        s.tls_dir.join("ca.pem").display(),
        s.tls_dir.join("client.pem").display(),
        s.tls_dir.join("client.key").display()
    );
    let (running, token) = start(&config_text(&kafka, &topic, &schema, &s.postgres_uri, "")).await;
    wait_rows(&db, &schema, "site_check", 1).await;
    assert_eq!(
        count(&db, &schema, "site", "WHERE url = 'http://mtls/'").await,
        1
    );
    stop(running, token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_while_kafka_is_unreachable() {
    let _g = PG_RESTART.read().await;
    let s = stack();
    let db = pg(&s.postgres_uri).await;
    let schema = fresh_schema(&db, "sink_nokafka").await;
    let kafka = format!("[kafka]\nbrokers = \"127.0.0.1:{}\"\n", free_port());
    let (running, token) = start(&config_text(
        &kafka,
        &unique("sink-nokafka"),
        &schema,
        &s.postgres_uri,
        "",
    ))
    .await;
    let addr = running.metrics_addr.to_string();
    // PostgreSQL is fine (tables are made) but Kafka is not: not ready, saying why.
    wait_rows(&db, &schema, "site_check", 0).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (status, body) = http_get(&addr, "/readyz").await.unwrap();
    assert_eq!(status, 503);
    assert!(body.contains("Kafka"), "{body}");
    assert!(!body.contains("PostgreSQL"), "{body}");
    stop(running, token).await;
}

// --- the batch writer, called directly ----------------------------------------

async fn next_offset(db: &tokio_postgres::Client, schema: &str, topic: &str) -> Option<i64> {
    db.query_opt(
        &format!("SELECT next_offset FROM \"{schema}\".site_kafka_offsets WHERE topic = $1 AND \"partition\" = 0"),
        &[&topic],
    )
    .await
    .unwrap()
    .map(|r| r.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_batch_writer_survives_repeats_and_never_rejects_good_records_wholesale() {
    use website_monitor_sink::refuse::{write_batch, Search};
    let _g = PG_RESTART.read().await;
    let s = stack();
    let (db, schema, mut conn) = batch_conn(&s, "sink_writer").await;
    let t = "writer-topic";

    // 1. One Kafka position twice in a batch (a rebalance inside recv()
    // re-fetched it): written once, the repeat counted as a duplicate.
    let a = batch_msg(t, 0, r#"{"url": "http://a/", "n": 0}"#);
    let b = batch_msg(t, 1, r#"{"url": "http://b/", "n": 1}"#);
    let batch = vec![a.clone(), b.clone(), a.clone()];
    let out = write_batch(&mut conn, &batch, &mut Search::default())
        .await
        .unwrap_or_else(|e| panic!("a batch holding one position twice is written: {e}"));
    assert_eq!((out.check_rows, out.duplicates), (2, 1));
    assert_eq!(count(&db, &schema, "site_check", "").await, 2);
    assert_eq!(count(&db, &schema, "site_rejected", "").await, 0);
    assert_eq!(next_offset(&db, &schema, t).await, Some(2));
    // Replayed whole: nothing new.
    let out = write_batch(&mut conn, &batch, &mut Search::default())
        .await
        .expect("replay");
    assert_eq!((out.check_rows, out.duplicates), (0, 3));
    assert!(out.skipped.iter().all(|k| k.next_offset == 2));

    // 2. Two records refused only together (no single culprit): the later
    // one is rejected, as writing them one by one would do.
    db.batch_execute(&format!(
        "CREATE UNIQUE INDEX one_n ON \"{schema}\".site_check ((data->>'n'))"
    ))
    .await
    .unwrap();
    let pair = vec![
        batch_msg(t, 2, r#"{"url": "http://c/", "n": 7}"#),
        batch_msg(t, 3, r#"{"url": "http://d/", "n": 7}"#),
    ];
    let out = write_batch(&mut conn, &pair, &mut Search::default())
        .await
        .expect("records that conflict only with each other do not stall the batch");
    assert_eq!(
        (out.check_rows, out.rejected.get("database")),
        (1, Some(&1))
    );
    let rejected: Vec<i64> = column(
        &db,
        &format!("SELECT \"offset\" FROM \"{schema}\".site_rejected"),
    )
    .await;
    assert_eq!(rejected, [3], "the later of the two is rejected");
    assert_eq!(next_offset(&db, &schema, t).await, Some(4));
    db.batch_execute(&format!(
        "DROP INDEX \"{schema}\".one_n; DELETE FROM \"{schema}\".site_rejected; DELETE FROM \"{schema}\".site_check WHERE \"offset\" >= 2; UPDATE \"{schema}\".site_kafka_offsets SET next_offset = 2"
    ))
    .await
    .unwrap();

    // 2b. A column an operator made mandatory (for new rows) refuses every
    // record, the sink's canary too: the schema is at fault, nothing is
    // rejected.
    db.batch_execute(&format!(
        "ALTER TABLE \"{schema}\".site_check ADD COLUMN region text, ADD CONSTRAINT region_set CHECK (region IS NOT NULL) NOT VALID"
    ))
    .await
    .unwrap();
    let err = write_batch(
        &mut conn,
        &[batch_msg(t, 2, r#"{"url": "http://c/", "n": 2}"#)],
        &mut Search::default(),
    )
    .await
    .expect_err("a schema that refuses every record fails the batch");
    assert!(err.to_string().contains("23514"), "{err}");
    assert_eq!(count(&db, &schema, "site_rejected", "").await, 0);
    assert_eq!(next_offset(&db, &schema, t).await, Some(2));
    db.batch_execute(&format!(
        "ALTER TABLE \"{schema}\".site_check DROP COLUMN region"
    ))
    .await
    .unwrap();

    // 3. A refused record among already-written ones: only it is rejected.
    db.batch_execute(&format!(
        "ALTER TABLE \"{schema}\".site_check ADD CONSTRAINT no_599 CHECK (status_code IS DISTINCT FROM 599)"
    ))
    .await
    .unwrap();
    let mixed = vec![
        a.clone(),
        b.clone(),
        batch_msg(t, 2, r#"{"url": "http://c/", "n": 2}"#),
        batch_msg(t, 3, r#"{"url": "http://refused/", "status_code": 599}"#),
    ];
    let out = write_batch(&mut conn, &mixed, &mut Search::default())
        .await
        .expect("mixed batch");
    assert_eq!(out.duplicates, 2);
    assert_eq!(out.check_rows, 1);
    assert_eq!(out.rejected.get("database"), Some(&1));
    let rejected: Vec<i64> = column(
        &db,
        &format!("SELECT \"offset\" FROM \"{schema}\".site_rejected"),
    )
    .await;
    assert_eq!(rejected, [3], "only the refused record is rejected");
    assert_eq!(next_offset(&db, &schema, t).await, Some(4));

    // 4. A url whose site row does not exist after the upsert (here a
    // trigger swallows it), and a url an operator's trigger refuses with a
    // SQLSTATE of its own: each is rejected, the record beside it stored.
    db.batch_execute(&format!(
        "CREATE FUNCTION \"{schema}\".swallow() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN IF NEW.url = 'http://vanish/' THEN RETURN NULL; END IF;
         IF NEW.url = 'http://blocked/' THEN RAISE EXCEPTION 'url is blocked' USING ERRCODE = '45000'; END IF;
         RETURN NEW; END $$;
         CREATE TRIGGER swallow BEFORE INSERT OR UPDATE ON \"{schema}\".site
         FOR EACH ROW EXECUTE FUNCTION \"{schema}\".swallow();"
    ))
    .await
    .unwrap();
    let batch = vec![
        batch_msg(t, 4, r#"{"url": "http://vanish/"}"#),
        batch_msg(t, 5, r#"{"url": "http://blocked/"}"#),
        batch_msg(t, 6, r#"{"url": "http://kept/"}"#),
    ];
    let out = write_batch(&mut conn, &batch, &mut Search::default())
        .await
        .expect("records an operator's trigger refuses do not stall the batch");
    assert_eq!(
        (out.check_rows, out.rejected.get("database")),
        (1, Some(&2))
    );
    let details: Vec<String> = column(
        &db,
        &format!("SELECT detail FROM \"{schema}\".site_rejected WHERE \"offset\" IN (4, 5) ORDER BY \"offset\""),
    )
    .await;
    assert!(
        details[0].contains("no row in the latest-state table"),
        "{details:?}"
    );
    assert!(details[1].contains("45000"), "{details:?}");
    assert_eq!(next_offset(&db, &schema, t).await, Some(7));
}

// --- least privilege, stale positions, half-open connections ------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_without_create_rights_starts_on_tables_a_dba_created() {
    let _g = PG_RESTART.read().await;
    let s = stack();
    let db = pg(&s.postgres_uri).await;
    let schema = fresh_schema(&db, "sink_lp").await;
    // The DBA creates the tables (the sink's own migrations, as a superuser) ...
    let tables = website_monitor_sink::migrate::Tables::new(&schema, "site");
    let mut admin = pg(&s.postgres_uri).await;
    website_monitor_sink::migrate::migrate(&mut admin, &tables)
        .await
        .expect("migrate as the DBA");
    // ... and grants a role only what the sink needs to write.
    let role = unique_ident("sink_lp_role");
    db.batch_execute(&format!(
        "CREATE ROLE \"{role}\" LOGIN;
         GRANT USAGE ON SCHEMA \"{schema}\" TO \"{role}\";
         GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA \"{schema}\" TO \"{role}\";
         GRANT USAGE ON ALL SEQUENCES IN SCHEMA \"{schema}\" TO \"{role}\";"
    ))
    .await
    .unwrap();
    let may_create: bool = db
        .query_one(
            "SELECT has_database_privilege($1, current_database(), 'CREATE') OR has_schema_privilege($1, $2, 'CREATE')",
            &[&role, &schema],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!may_create, "the role may not create anything");
    let topic = unique("sink-lp");
    create_topic(&s.brokers, &topic, 1).await;
    produce_json(
        &s.brokers,
        &topic,
        &[
            br#"{"url": "http://lp/", "n": 1}"#.to_vec(),
            br#"{"url": "http://lp/", "n": 2}"#.to_vec(),
        ],
    )
    .await;
    let uri = kv_uri(&s.postgres_uri, Some(&role), None, None, None);
    let (running, token) = start(&config_text(&plain_kafka(&s), &topic, &schema, &uri, "")).await;
    wait_rows(&db, &schema, "site_check", 2).await;
    stop(running, token).await;
    db.batch_execute(&format!("DROP OWNED BY \"{role}\"; DROP ROLE \"{role}\";"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_position_beyond_the_partition_end_is_reported() {
    let _g = PG_RESTART.read().await;
    let s = stack();
    let db = pg(&s.postgres_uri).await;
    let schema = fresh_schema(&db, "sink_ahead").await;
    let tables = website_monitor_sink::migrate::Tables::new(&schema, "site");
    let mut admin = pg(&s.postgres_uri).await;
    website_monitor_sink::migrate::migrate(&mut admin, &tables)
        .await
        .expect("migrate");
    let topic = unique("sink-ahead");
    create_topic(&s.brokers, &topic, 1).await;
    // Positions left over from an earlier topic of the same name.
    db.execute(
        &format!("INSERT INTO \"{schema}\".site_kafka_offsets (topic, \"partition\", next_offset) VALUES ($1, 0, 1000)"),
        &[&topic],
    )
    .await
    .unwrap();
    let recs: Vec<Vec<u8>> = (0..3).map(|i| numbered(i, 3)).collect();
    produce_json(&s.brokers, &topic, &recs).await;
    let (running, token) = start(&config_text(
        &plain_kafka(&s),
        &topic,
        &schema,
        &s.postgres_uri,
        "",
    ))
    .await;
    let addr = running.metrics_addr.to_string();
    let line = format!(
        "website_monitor_records_position_ahead_total{{topic=\"{topic}\",partition=\"0\"}} 3"
    );
    let seen = tokio::time::timeout(WAIT, async {
        loop {
            let (_, m) = http_get(&addr, "/metrics").await.unwrap_or_default();
            if m.lines().any(|l| l == line) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    if seen.is_err() {
        let (_, m) = http_get(&addr, "/metrics").await.unwrap_or_default();
        panic!("/metrics lacks `{line}`:\n{m}");
    }
    assert_eq!(count(&db, &schema, "site_check", "").await, 0);
    stop(running, token).await;
}

/// A TCP proxy to PostgreSQL that can turn into a black hole: after
/// `freeze`, bytes on open connections are no longer passed on and new
/// connections are accepted but never answered — a half-open peer, as after
/// a network partition or a dead NAT entry.
struct BlackHole {
    port: u16,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Connections numbered up to this are frozen for good.
    cut: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// The number of the last connection accepted.
    last: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl BlackHole {
    async fn start(target_port: u16) -> Self {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        use std::sync::Arc;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let frozen = Arc::new(AtomicBool::new(false));
        let cut = Arc::new(AtomicU64::new(0));
        let last = Arc::new(AtomicU64::new(0));
        let (f, c, l) = (frozen.clone(), cut.clone(), last.clone());
        tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let id = l.fetch_add(1, Ordering::SeqCst) + 1;
                if f.load(Ordering::SeqCst) {
                    held.push(client);
                    continue;
                }
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", target_port)).await
                else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                let me = id;
                for (mut r, mut w) in [
                    (
                        Box::new(cr) as Box<dyn tokio::io::AsyncRead + Send + Unpin>,
                        Box::new(sw) as Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
                    ),
                    (Box::new(sr), Box::new(cw)),
                ] {
                    let c = c.clone();
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = match r.read(&mut buf).await {
                                Ok(0) | Err(_) => {
                                    let _ = w.shutdown().await;
                                    return;
                                }
                                Ok(n) => n,
                            };
                            if c.load(Ordering::SeqCst) >= me {
                                // Frozen: keep both halves open, pass nothing on.
                                let _keep = (r, w);
                                std::future::pending::<()>().await;
                                return;
                            }
                            if w.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            }
        });
        Self {
            port,
            frozen,
            cut,
            last,
        }
    }

    fn freeze(&self) {
        use std::sync::atomic::Ordering;
        self.frozen.store(true, Ordering::SeqCst);
        self.cut
            .store(self.last.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    fn thaw(&self) {
        use std::sync::atomic::Ordering;
        self.frozen.store(false, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_postgres_connection_times_out_and_shutdown_stays_bounded() {
    let _g = PG_RESTART.read().await;
    let s = stack();
    let db = pg(&s.postgres_uri).await;
    let schema = fresh_schema(&db, "sink_blackhole").await;
    let topic = unique("sink-blackhole");
    create_topic(&s.brokers, &topic, 1).await;
    let proxy = BlackHole::start(pg_port(&s.postgres_uri)).await;
    let uri = kv_uri(
        &s.postgres_uri,
        None,
        Some("127.0.0.1"),
        None,
        Some(proxy.port),
    );
    let text = config_text(
        &plain_kafka(&s),
        &topic,
        &schema,
        &uri,
        "write_timeout = \"2s\"\nshutdown_timeout = \"3s\"\n",
    );
    let (running, token) = start(&text).await;
    let addr = running.metrics_addr.to_string();
    let first: Vec<Vec<u8>> = (0..5).map(|i| numbered(i, 5)).collect();
    produce_json(&s.brokers, &topic, &first).await;
    wait_rows(&db, &schema, "site_check", 5).await;
    wait_ready(&addr).await;

    proxy.freeze();
    let second: Vec<Vec<u8>> = (5..10).map(|i| numbered(i, 5)).collect();
    produce_json(&s.brokers, &topic, &second).await;
    eventually(
        "/readyz to report the unanswered PostgreSQL connection",
        Duration::from_secs(20),
        || async {
            match http_get(&addr, "/readyz").await {
                Some((503, body)) if body.contains("PostgreSQL") => Some(()),
                _ => None,
            }
        },
    )
    .await;
    // Shutdown with a batch in hand and PostgreSQL silent: bounded by
    // shutdown_timeout (3 s) plus the consumer's close, not by TCP.
    token.cancel();
    let started = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(20), running.wait())
        .await
        .expect("the sink stops within 20 s although PostgreSQL does not answer")
        .expect("the sink stops without error");
    eprintln!("stopped in {:?}", started.elapsed());

    // Back to normal: a new sink stores the rest, each record once.
    proxy.thaw();
    let (running, token) = start(&text).await;
    wait_rows(&db, &schema, "site_check", 10).await;
    assert_exactly_once(&db, &schema, 10).await;
    stop(running, token).await;
}

/// With two writers but room for one connection (a role limited to one),
/// writer 1 cannot connect; writer 0 writes its parts too, and every record
/// is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_room_for_one_connection_two_writers_still_store_everything_once() {
    let _g = PG_RESTART.read().await;
    let s = stack();
    let db = pg(&s.postgres_uri).await;
    let schema = fresh_schema(&db, "sink_one_conn").await;
    let role = unique_ident("sink_one_conn_role");
    db.batch_execute(&format!(
        "CREATE ROLE \"{role}\" LOGIN CONNECTION LIMIT 1;
         GRANT ALL ON SCHEMA \"{schema}\" TO \"{role}\";"
    ))
    .await
    .unwrap();
    let topic = unique("sink-one-conn");
    create_topic(&s.brokers, &topic, 2).await;
    let n = 400;
    let records: Vec<Vec<u8>> = (0..n).map(|i| numbered(i, 37)).collect();
    // Keys spread the records over both partitions, so both writers get parts.
    produce_json(&s.brokers, &topic, &records).await;
    let uri = kv_uri(&s.postgres_uri, Some(&role), None, None, None);
    let (running, token) = start(&config_text(
        &plain_kafka(&s),
        &topic,
        &schema,
        &uri,
        "writers = 2",
    ))
    .await;
    wait_rows(&db, &schema, "site_check", n as i64).await;
    assert_exactly_once(&db, &schema, n as i64).await;
    let partitions: i64 = db
        .query_one(
            &format!("SELECT count(DISTINCT \"partition\") FROM \"{schema}\".site_check"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(partitions, 2, "both partitions' records were written");
    stop(running, token).await;
    db.batch_execute(&format!("DROP OWNED BY \"{role}\"; DROP ROLE \"{role}\";"))
        .await
        .unwrap();
}
