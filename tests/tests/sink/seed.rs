//! The seed's records and tables, the record's columns, the latest state per
//! url, migrations.

use std::time::Duration;

use website_monitor_tests::sink::{self, numbered, numbers_as_f64, SinkTest};
use website_monitor_tests::{
    column, consume_all, create_topic, http_get, json_rec, pg, scrape_until, stack, unique,
    unique_ident, wait_ready, WAIT,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_system_test_two_sites_three_checks() {
    let t = SinkTest::new("sink_seed", 1).await;
    let (db, schema, topic) = (&t.db, &t.schema, &t.topic);
    let msgs = [
        r#"{"url": "http://foo.bar", "key": "valuefoo"}"#,
        r#"{"url": "http://bar.baz", "key": "valuebar"}"#,
        r#"{"url": "http://foo.bar", "key": "valuefooupdated"}"#,
    ];
    // One at a time, like the seed's producer, so the Kafka timestamps increase.
    for m in msgs {
        t.produce(&[m.as_bytes().to_vec()]).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (running, token) = sink::start(&t.config()).await;
    let addr = running.metrics_addr.to_string();
    t.wait_rows("site_check", 3).await;

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
    let produced = consume_all(&t.stack.brokers, topic, Duration::from_secs(2), WAIT).await;
    assert_eq!(produced.len(), 3, "the three records are in the topic");
    let kafka_ms: Vec<i64> = produced
        .iter()
        .map(|c| c.timestamp_ms.expect("records carry a Kafka timestamp"))
        .collect();
    let check_ms: Vec<i64> = column(
        db,
        &format!("SELECT (extract(epoch FROM checked_at) * 1000)::int8 FROM \"{schema}\".site_check ORDER BY checked_at"),
    )
    .await;
    assert_eq!(
        check_ms, kafka_ms,
        "site_check.checked_at is each record's Kafka timestamp"
    );
    let site_ms: Vec<i64> = column(
        db,
        &format!("SELECT (extract(epoch FROM checked_at) * 1000)::int8 FROM \"{schema}\".site ORDER BY url"),
    )
    .await;
    assert_eq!(
        site_ms,
        [kafka_ms[1], kafka_ms[2]],
        "site.checked_at is the Kafka timestamp of the url's newest record"
    );
    assert_eq!(t.count("site_check", "").await, 3);
    assert_eq!(t.count("site_rejected", "").await, 0);
    let history: Vec<String> = column(
        db,
        &format!(
            "SELECT c.record->>'key' FROM \"{schema}\".site_check_record c ORDER BY c.checked_at"
        ),
    )
    .await;
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
    if let Err(m) = scrape_until(&addr, WAIT, |m| {
        m.contains(&lag_line) && m.contains("website_monitor_last_commit_timestamp_seconds")
    })
    .await
    {
        panic!("/metrics lacks `{lag_line}` or the last commit timestamp:\n{m}");
    }
    sink::stop(running, token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_seed_table_is_kept_and_updated() {
    let t = SinkTest::new("sink_seedtable", 1).await;
    let (db, schema) = (&t.db, &t.schema);
    // The seed's own table: serial id, unique url, jsonb data, nothing else.
    db.batch_execute(&format!(
        "CREATE TABLE \"{schema}\".site (id serial PRIMARY KEY, url text UNIQUE NOT NULL, data jsonb);
         INSERT INTO \"{schema}\".site (url, data) VALUES ('http://foo.bar', '{{\"url\": \"http://foo.bar\", \"key\": \"old\"}}'),
                                                       ('http://kept/', '{{\"url\": \"http://kept/\"}}');"
    ))
    .await
    .unwrap();
    t.produce(&[
        br#"{"url": "http://foo.bar", "key": "new"}"#.to_vec(),
        br#"{"url": "http://new/"}"#.to_vec(),
    ])
    .await;
    let (running, token) = sink::start(&t.config()).await;
    t.wait_rows("site_check", 2).await;
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
    sink::stop(running, token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_schema_records_fill_the_columns() {
    let t = SinkTest::new("sink_cols", 1).await;
    let (db, schema) = (&t.db, &t.schema);
    // Whole seconds from the numbered start, plus a decimal fraction parsed
    // as written (the record view gives it back the same way).
    let start = website_monitor_tests::sink::numbered_start() as i64;
    let at: f64 = format!("{start}.123").parse().unwrap();
    let failed_at: f64 = format!("{}.5", start + 1).parse().unwrap();
    let ok = serde_json::json!({
        "url": "https://example.com/", "checked_at": at, "status_code": 200, "duration": 0.1841,
        "re_check": true, "ok": true, "error": null,
        "timings": {"dns": 0.0021, "connect": 0.0103, "tls": 0.0301, "ttfb": 0.1207, "transfer": 0.0209},
        "http_version": "HTTP/1.1", "response_bytes": 1256, "redirects": 0, "ip": "93.184.215.14",
        "tls": {"version": "TLSv1.3", "cert_not_after": 1790000000, "cert_days_left": 301},
        "probe": "local", "interval": 0.5, "schema_version": 2
    });
    let failed = serde_json::json!({
        "url": "https://down.example/", "checked_at": failed_at, "status_code": null, "duration": 5.0,
        "re_check": null, "ok": false, "error": {"kind": "timeout", "message": "no answer in 5s"},
        "probe": "local", "schema_version": 1
    });
    t.produce(&[json_rec(ok.clone()), json_rec(failed.clone())])
        .await;
    let (running, token) = sink::start(&t.config()).await;
    t.wait_rows("site_check", 2).await;
    let rows = db
        .query(
            &format!(
                "SELECT s.url, extract(epoch FROM c.checked_at)::float8, c.ok, c.status_code::int4, c.duration_us,
                        ARRAY[c.dns_us, c.connect_us, c.tls_us, c.ttfb_us, c.transfer_us],
                        c.http_version::int4, c.tls_version::int4, c.cert_days_left::int4, c.response_bytes,
                        host('0.0.0.0'::inet + (c.ipv4::int8 & 4294967295)), c.error_kind, c.error_message, c.extra,
                        c.ip IS NULL, c.insert_delay_ms IS NOT NULL,
                        extract(epoch FROM s.checked_at)::float8, s.data, r.record
                 FROM \"{schema}\".site_check c JOIN \"{schema}\".site s ON s.id = c.site_id
                 JOIN \"{schema}\".site_check_record r ON r.checked_at = c.checked_at AND r.url = s.url
                 ORDER BY c.checked_at"
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    let r = &rows[0];
    assert_eq!(r.get::<_, String>(0), "https://example.com/");
    assert!((r.get::<_, f64>(1) - at).abs() < 1e-6);
    assert_eq!(r.get::<_, Option<bool>>(2), Some(true));
    assert_eq!(r.get::<_, Option<i32>>(3), Some(200));
    assert_eq!(r.get::<_, Option<i32>>(4), Some(184_100), "duration in µs");
    let timings: Vec<Option<i32>> = r.get(5);
    assert_eq!(
        timings,
        [
            Some(2_100),
            Some(10_300),
            Some(30_100),
            Some(120_700),
            Some(20_900)
        ]
    );
    assert_eq!(
        (r.get::<_, Option<i32>>(6), r.get::<_, Option<i32>>(7)),
        (Some(11), Some(13)),
        "HTTP/1.1 and TLSv1.3 as numbers"
    );
    assert_eq!(r.get::<_, Option<i32>>(8), Some(301));
    assert_eq!(r.get::<_, Option<i32>>(9), Some(1256));
    assert_eq!(
        r.get::<_, Option<String>>(10).as_deref(),
        Some("93.184.215.14")
    );
    assert_eq!(r.get::<_, Option<String>>(11), None, "no error kind");
    assert_eq!(
        r.get::<_, Option<serde_json::Value>>(13),
        None,
        "every field has a column"
    );
    assert_eq!(
        (r.get::<_, bool>(14), r.get::<_, bool>(15)),
        (true, true),
        "an IPv4 address in ipv4 alone; the delay to the write kept"
    );
    assert!(
        (r.get::<_, f64>(16) - at).abs() < 1e-6,
        "site.checked_at is the record's"
    );
    assert_eq!(
        r.get::<_, serde_json::Value>(17),
        ok,
        "the latest state keeps the record whole"
    );
    assert_eq!(
        numbers_as_f64(r.get(18)),
        numbers_as_f64(ok),
        "the view gives the record back"
    );
    let r = &rows[1];
    assert_eq!(r.get::<_, Option<bool>>(2), Some(false));
    assert_eq!(r.get::<_, Option<i32>>(3), None, "no response, no status");
    assert_eq!(r.get::<_, Option<i32>>(4), Some(5_000_000));
    assert_eq!(r.get::<_, Option<String>>(11).as_deref(), Some("timeout"));
    assert_eq!(
        r.get::<_, Option<String>>(12).as_deref(),
        Some("no answer in 5s")
    );
    assert_eq!(
        numbers_as_f64(r.get(18)),
        numbers_as_f64(failed),
        "the view gives the failure back"
    );
    sink::stop(running, token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_record_never_overwrites_a_newer_one() {
    let t = SinkTest::new("sink_order", 1).await;
    let (db, schema) = (&t.db, &t.schema);
    // Times inside the history's retention.
    let base = website_monitor_tests::sink::numbered_start();
    let rec = |url: &str, t: f64, tag: &str| {
        json_rec(serde_json::json!({"url": url, "checked_at": base + t, "tag": tag}))
    };
    // In one batch: newer first, then older.
    t.produce(&[
        rec("http://a/", 2000.0, "new"),
        rec("http://a/", 1000.0, "old"),
    ])
    .await;
    let (running, token) = sink::start(&t.config()).await;
    t.wait_rows("site_check", 2).await;
    // In a later batch: older again, and a newer one for a second url.
    t.produce(&[
        rec("http://a/", 1500.0, "older-later"),
        rec("http://b/", 10.0, "b1"),
    ])
    .await;
    t.wait_rows("site_check", 4).await;
    t.produce(&[rec("http://b/", 5.0, "b-old"), rec("http://b/", 20.0, "b2")])
        .await;
    t.wait_rows("site_check", 6).await;
    let latest = |url: &'static str| async move {
        let r = db
            .query_one(
                &format!("SELECT data->>'tag', extract(epoch FROM checked_at)::float8 FROM \"{schema}\".site WHERE url = $1"),
                &[&url],
            )
            .await
            .unwrap();
        (r.get::<_, String>(0), r.get::<_, f64>(1))
    };
    assert_eq!(latest("http://a/").await, ("new".to_owned(), base + 2000.0));
    assert_eq!(latest("http://b/").await, ("b2".to_owned(), base + 20.0));
    assert_eq!(t.count("site", "").await, 2);
    sink::stop(running, token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sinks_starting_at_once_on_an_empty_schema_migrate_once_and_both_work() {
    let _g = sink::PG_RESTART.read().await;
    let s = stack();
    let db = pg(&s.postgres_uri).await;
    // Not created: the sinks create it.
    let schema = unique_ident("sink_race");
    let topic = unique("sink-race");
    create_topic(&s.brokers, &topic, 2).await;
    let config = sink::sink_config(&s, &topic, &schema, &s.postgres_uri)
        .set("group_id", unique("sink-race-group"));
    let ((ra, ta), (rb, tb)) = tokio::join!(sink::start(&config), sink::start(&config));
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
    website_monitor_tests::produce_json(&s.brokers, &topic, &recs).await;
    website_monitor_tests::wait_rows(&db, &schema, "site_check", 400).await;
    sink::assert_exactly_once(&db, &schema, 400).await;
    let (a, b) = tokio::join!(sink::stop(ra, ta), sink::stop(rb, tb));
    let _ = (a, b);
}
