//! The sink connector against the real Kafka and PostgreSQL of `make up`.
//!
//! Each test has its own topic, consumer group and PostgreSQL schema. The
//! crash and scale-out tests run the real `website-monitor-sink` binary (build
//! it first: `cargo build --bins`); the others run the sink in-process.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use connector_common::config::{load_str, Section};
use connector_common::Loaded;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use website_monitor_sink::{Running, SinkConfig};
use website_monitor_tests::{
    binary, create_topic, eventually, fresh_schema, pg, produce, repo_root, stack, unique,
    unique_ident, Stack,
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

/// `GET path` on a local HTTP server: (status, body).
async fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
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
    assert_eq!(count(&db, &schema, "site_check", "").await, 3);
    assert_eq!(count(&db, &schema, "site_rejected", "").await, 0);
    let history: Vec<String> = db
        .query(
            &format!("SELECT c.data->>'key' FROM \"{schema}\".site_check c JOIN \"{schema}\".site s ON s.id = c.site_id ORDER BY c.\"offset\""),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
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
    let good: Vec<String> = db
        .query(
            &format!("SELECT url FROM \"{schema}\".site ORDER BY url"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
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

struct Proc {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Proc {
    fn spawn(config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("connector.toml");
        std::fs::write(&path, config).unwrap();
        let log = dir.path().join("sink.log");
        let child = Command::new(binary("website-monitor-sink"))
            .arg("--config")
            .arg(&path)
            .current_dir(repo_root())
            .env_remove("kafka_host")
            .env_remove("kafka_topic")
            .env_remove("postgres_uri")
            .env_remove("log_level")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start website-monitor-sink");
        Self {
            child,
            log,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill9(&mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().unwrap();
    }

    /// SIGTERM, then the exit code.
    fn term(&mut self) -> Option<i32> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        for _ in 0..600 {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.kill9();
        panic!(
            "sink did not stop within 60 s of SIGTERM; log:\n{}",
            self.log()
        );
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

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

    let mut sink = Proc::spawn(&config);
    // Produce in chunks while the sink runs, and kill it once it is part way.
    let mut killed_at = None;
    for chunk in (0..N).collect::<Vec<_>>().chunks(2_000) {
        let recs: Vec<Vec<u8>> = chunk.iter().map(|&i| numbered(i, 700)).collect();
        produce_json(&s.brokers, &topic, &recs).await;
        if killed_at.is_none() {
            let stored = eventually("the sink to be writing", WAIT, || async {
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
                let c = count(&db, &schema, "site_check", "").await;
                (c >= 1_000).then_some(c)
            })
            .await;
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

    let mut sink = Proc::spawn(&config);
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
    let mut a = Proc::spawn(&cfg(port_a));
    let mut b = Proc::spawn(&cfg(port_b));
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
    let versions: Vec<i32> = db
        .query(
            &format!("SELECT version FROM \"{schema}\".site_migrations ORDER BY version"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let expected: Vec<i32> = website_monitor_sink::migrate::MIGRATIONS
        .iter()
        .map(|m| m.version)
        .collect();
    assert_eq!(versions, expected, "each migration recorded once");
    let recs: Vec<Vec<u8>> = (0..400).map(|i| numbered(i, 40)).collect();
    produce_json(&s.brokers, &topic, &recs).await;
    wait_rows(&db, &schema, "site_check", 400).await;
    assert_exactly_once(&db, &schema, 400).await;
    let (a, b) = tokio::join!(stop(ra, ta), stop(rb, tb));
    let _ = (a, b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_while_running_loses_and_doubles_nothing() {
    let s = stack();
    if !s.pg_ours {
        eprintln!(
            "SKIPPED postgres_restart_while_running_loses_and_doubles_nothing: the PostgreSQL in use was not started by scripts/stack.sh (WM_PG_OURS != 1), so this test may not stop it"
        );
        return;
    }
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

    let script = repo_root().join("scripts/stack.sh");
    let st = Command::new("bash")
        .arg(&script)
        .arg("pg-stop")
        .status()
        .expect("pg-stop");
    assert!(st.success(), "scripts/stack.sh pg-stop failed");
    let restart = scopeguard(script.clone());
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
    let st = Command::new("bash")
        .arg(&script)
        .arg("pg-start")
        .status()
        .expect("pg-start");
    assert!(st.success(), "scripts/stack.sh pg-start failed");
    std::mem::forget(restart);

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

/// Starts PostgreSQL again if the restart test fails while it is stopped.
struct PgStartOnDrop(PathBuf);
fn scopeguard(script: PathBuf) -> PgStartOnDrop {
    PgStartOnDrop(script)
}
impl Drop for PgStartOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(&self.0).arg("pg-start").status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_postgres_with_require_and_verify_full() {
    let _g = PG_RESTART.read().await;
    let s = stack();
    let db = pg(&s.postgres_uri).await;
    let ca = s.tls_dir.join("ca.pem");
    let sep = if s.postgres_uri.contains('?') {
        '&'
    } else {
        '?'
    };
    for (mode, extra) in [
        ("require", String::new()),
        ("verify-ca", format!("&sslrootcert={}", ca.display())),
        ("verify-full", format!("&sslrootcert={}", ca.display())),
    ] {
        let schema = fresh_schema(&db, "sink_tls").await;
        let topic = unique("sink-tls");
        create_topic(&s.brokers, &topic, 1).await;
        let app = unique_ident("sinktls");
        let uri = format!(
            "{}{sep}sslmode={mode}{extra}&application_name={app}",
            s.postgres_uri
        );
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

    // verify-full against a CA that did not sign the server's certificate must not connect.
    let schema = fresh_schema(&db, "sink_tls_bad").await;
    let topic = unique("sink-tls-bad");
    create_topic(&s.brokers, &topic, 1).await;
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
    let (running, token) = start(&config_text(&plain_kafka(&s), &topic, &schema, &uri, "")).await;
    let addr = running.metrics_addr.to_string();
    eventually(
        "/readyz to report the certificate problem",
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
        "no table was created through an unverified connection"
    );
    stop(running, token).await;
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
