//! Long-run storage (issue 13), through the sink against the real stack:
//! compact history given back whole by the record view, exact rollups,
//! partitions made for the times a batch holds.

use serde_json::json;
use website_monitor_tests::kafka::json_rec;
use website_monitor_tests::sink::{self, numbers_as_f64, SinkTest};

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        .floor()
}

fn source_record(url: &str, at: f64, ok: bool, us: u32) -> serde_json::Value {
    json!({
        "url": url, "checked_at": at, "status_code": if ok { json!(200) } else { json!(null) },
        "duration": f64::from(us) / 1e6, "re_check": null, "ok": ok,
        "error": if ok { json!(null) } else { json!({"kind": "timeout", "message": "no answer in 5s"}) },
        "timings": {"dns": null, "connect": 0.000125, "tls": null, "ttfb": 0.0005, "transfer": 0.000025},
        "http_version": "HTTP/1.1", "response_bytes": 35, "redirects": 0, "ip": "127.0.0.1",
        "tls": null, "probe": "p1", "schema_version": 1
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_history_row_reads_back_as_the_record_it_was_and_rollups_count_it_once() {
    let t = SinkTest::new("storage_view", 2).await;
    let at = now();
    let mut records = Vec::new();
    for i in 0..40u32 {
        let url = format!("http://s{}/", i % 4);
        // Times with microsecond digits, written as the source writes them.
        let checked_at: f64 = format!("{}.{:06}", at as i64 + i64::from(i), 170_780 + i)
            .parse()
            .unwrap();
        let mut r = source_record(&url, checked_at, i % 10 != 0, 1000 + i * 10);
        let not_after = at as i64 + 30 * 86_400 + 5_000;
        match i % 4 {
            // The source's days left (derived by the view, not stored) ...
            1 => {
                r["tls"] =
                    json!({"version": "TLSv1.3", "cert_not_after": not_after, "cert_days_left": 30})
            }
            // ... and days left that are not (stored as written).
            2 => {
                r["tls"] =
                    json!({"version": "TLSv1.2", "cert_not_after": not_after, "cert_days_left": 99})
            }
            3 => r["ip"] = json!("2001:db8::1"),
            _ => {}
        }
        records.push(r);
    }
    records.push(json!({"url": "http://seed/", "key": "valuefoo"}));
    t.produce(
        &records
            .iter()
            .map(|r| json_rec(r.clone()))
            .collect::<Vec<_>>(),
    )
    .await;
    let (running, token) = sink::start(&t.config()).await;
    t.wait_rows("site_check", records.len() as i64).await;
    sink::stop(running, token).await;

    let (db, schema) = (&t.db, &t.schema);
    let mut back = records_of(
        db,
        &format!("SELECT record FROM \"{schema}\".site_check_record"),
    )
    .await;
    let key = |v: &serde_json::Value| v.to_string();
    back.sort_by_key(key);
    let stored: Vec<(Option<i16>, i64, Option<i32>, bool)> = db
        .query(
            &format!(
                "SELECT cert_days_left, count(*), min(ipv4), bool_and(inserted_at BETWEEN now() - interval '10 minutes' AND now())
                 FROM \"{schema}\".site_check JOIN \"{schema}\".site_check_record USING (checked_at)
                 WHERE cert_after_s IS NOT NULL AND cert_not_after IS NULL GROUP BY 1 ORDER BY 1"
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        stored,
        [
            (Some(99), 10, Some(0x7f00_0001), true),
            (None, 10, Some(0x7f00_0001), true)
        ],
        "days left the view derives are not stored; 127.0.0.1 as an int4; inserted_at is when the row was written"
    );
    let mut sent: Vec<serde_json::Value> = records.iter().cloned().map(numbers_as_f64).collect();
    sent.sort_by_key(key);
    assert_eq!(back, sent, "every record reads back as it was");

    assert_rollups_equal_a_recount(db, schema).await;
    assert_fleet_answers_as_every_site(db, schema).await;
}

/// `site_fleet` (from the fleet rollups) gives what the per-site API gives
/// for all sites together: checks and uptime summed, the same percentiles.
async fn assert_fleet_answers_as_every_site(db: &tokio_postgres::Client, schema: &str) {
    let range = "now() - interval '2 days', now() + interval '1 day'";
    let fleet = db
        .query_one(
            &format!("SELECT checks, ok, failed, responses, p50_ms, p95_ms, p99_ms, max_ms FROM \"{schema}\".site_fleet({range})"),
            &[],
        )
        .await
        .unwrap();
    let sites = db
        .query_one(
            &format!(
                "SELECT (SELECT sum(checks)::int8 FROM \"{schema}\".site_uptime(NULL, {range})),
                        (SELECT sum(ok)::int8 FROM \"{schema}\".site_uptime(NULL, {range})),
                        (SELECT sum(failed)::int8 FROM \"{schema}\".site_uptime(NULL, {range})),
                        l.responses, l.p50_ms, l.p95_ms, l.p99_ms, l.max_ms
                 FROM \"{schema}\".site_latency(NULL, {range}, NULL, false) l"
            ),
            &[],
        )
        .await
        .unwrap();
    assert!(fleet.get::<_, i64>(0) > 0, "the fleet has checks");
    for i in 0..4 {
        assert_eq!(fleet.get::<_, i64>(i), sites.get::<_, i64>(i), "column {i}");
    }
    for i in 4..8 {
        assert_eq!(fleet.get::<_, f64>(i), sites.get::<_, f64>(i), "column {i}");
    }
}

/// The JSON values of the first column of `sql`'s rows, numbers as f64.
async fn records_of(db: &tokio_postgres::Client, sql: &str) -> Vec<serde_json::Value> {
    db.query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| numbers_as_f64(r.get(0)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_populated_history_moves_into_the_new_tables_without_losing_a_row() {
    let t = SinkTest::new("storage_upgrade", 1).await;
    let (db, schema) = (&t.db, &t.schema);
    t.migrate_up_to(5).await;
    // 40,000 old rows over 3 sites and 3 days (eight chunks), each
    // record whole in `data`, as sinks before migration 6 wrote them.
    let at = now() - 3.0 * 86_400.0;
    db.batch_execute(&format!(
        "INSERT INTO \"{schema}\".site (url, data, checked_at) SELECT 'http://s' || i || '/', '{{}}', now() FROM generate_series(0, 2) i;
         INSERT INTO \"{schema}\".site_check (site_id, checked_at, ok, status_code, duration, data, topic, \"partition\", \"offset\")
         SELECT s.id, to_timestamp({at} + n * 6), n % 7 <> 0, 200, 0.001,
                jsonb_build_object('url', s.url, 'checked_at', {at} + n * 6, 'ok', n % 7 <> 0, 'status_code', 200,
                                   'duration', 0.001 + (n % 50) / 1e5, 'probe', 'old', 'n', n),
                'old-topic', 0, n
         FROM generate_series(0, 39999) n JOIN \"{schema}\".site s ON s.url = 'http://s' || (n % 3) || '/';
         -- Two odd old records (another stage's): no JSON object at all.
         INSERT INTO \"{schema}\".site_check (site_id, checked_at, ok, status_code, duration, data, topic, \"partition\", \"offset\")
         SELECT s.id, now() - interval '1 hour', NULL, NULL, NULL, d, 'old-topic', 0, 40000 + i
         FROM \"{schema}\".site s, unnest(ARRAY['\"just a string\"'::jsonb, '[1, 2, 3]'::jsonb]) WITH ORDINALITY AS o(d, i)
         WHERE s.url = 'http://s0/';"
    ))
    .await
    .unwrap();
    let originals = records_of(
        db,
        &format!("SELECT data FROM \"{schema}\".site_check ORDER BY data::text"),
    )
    .await;

    // Two sinks of four writers each start at once: eight movers share the
    // old table; none may drop it while another still moves a chunk.
    let config = t.config().set("writers", 4);
    let ((running, token), (running2, token2)) =
        tokio::join!(sink::start(&config), sink::start(&config));
    let gone = format!("SELECT to_regclass('\"{schema}\".site_check_legacy') IS NULL AND to_regclass('\"{schema}\".site_check_record') IS NOT NULL");
    website_monitor_tests::wait::eventually(
        "the old history table moved and dropped",
        website_monitor_tests::wait::WAIT,
        || async {
            db.query_one(&gone, &[])
                .await
                .unwrap()
                .get::<_, bool>(0)
                .then_some(())
        },
    )
    .await;
    sink::stop(running, token).await;
    sink::stop(running2, token2).await;
    let back = records_of(
        db,
        &format!("SELECT record FROM \"{schema}\".site_check_record ORDER BY record::text"),
    )
    .await;
    assert_eq!(back.len(), originals.len(), "no row lost or doubled");
    assert!(back == originals, "every old record reads back as it was");
    let per_day: i64 = db
        .query_one(
            &format!("SELECT sum(checks)::int8 FROM \"{schema}\".site_per_day"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(per_day, 40_002, "the old rows are counted in the rollups");
}

/// Asserts every rollup level holds exactly what a recount of the history gives.
async fn assert_rollups_equal_a_recount(db: &tokio_postgres::Client, schema: &str) {
    let recount = format!(
        "SELECT count(*), count(*) FILTER (WHERE ok), count(*) FILTER (WHERE NOT ok),
                count(*) FILTER (WHERE status_code IS NOT NULL),
                coalesce(sum(duration_us) FILTER (WHERE status_code IS NOT NULL), 0)::int8
         FROM \"{schema}\".site_check"
    );
    let h = db.query_one(&recount, &[]).await.unwrap();
    let levels = ["per_minute", "per_hour", "per_day"];
    for level in levels
        .iter()
        .flat_map(|l| [l.to_string(), format!("fleet_{l}")])
    {
        let r = db
            .query_one(
                &format!("SELECT coalesce(sum(checks), 0)::int8, coalesce(sum(ok), 0)::int8, coalesce(sum(failed), 0)::int8, coalesce(sum(responses), 0)::int8, coalesce(sum(duration_sum_us), 0)::int8 FROM \"{schema}\".site_{level}"),
                &[],
            )
            .await
            .unwrap();
        for i in 0..5 {
            assert_eq!(
                r.get::<_, i64>(i),
                h.get::<_, i64>(i),
                "{level}: column {i} equals a recount from history"
            );
        }
    }
    // The fleet's histograms are every site's, merged.
    let histogram = |table: String| {
        format!(
            "SELECT e >> 32, sum(e & 4294967295)::int8 FROM \"{schema}\".{table}, unnest(latency) e
             GROUP BY 1 ORDER BY 1"
        )
    };
    for level in levels {
        let pairs = |rows: Vec<tokio_postgres::Row>| -> Vec<(i64, i64)> {
            rows.iter().map(|r| (r.get(0), r.get(1))).collect()
        };
        let site = pairs(
            db.query(&histogram(format!("site_{level}")), &[])
                .await
                .unwrap(),
        );
        let fleet = pairs(
            db.query(&histogram(format!("site_fleet_{level}")), &[])
                .await
                .unwrap(),
        );
        assert!(!site.is_empty(), "{level}: some latencies");
        assert_eq!(
            fleet, site,
            "{level}: the fleet's histogram is the sites' merged"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_kill_9_and_a_restart_the_rollups_equal_a_recount_from_history() {
    let t = SinkTest::new("storage_kill", 3).await;
    let (db, schema) = (&t.db, &t.schema);
    const N: u32 = 20_000;
    let config = t.config().set("batch_size", 300).text();
    let at = now();
    let mut sink = website_monitor_tests::Proc::spawn("sink", &config);
    let mut killed = false;
    for chunk in (0..N).collect::<Vec<_>>().chunks(2_000) {
        let recs: Vec<Vec<u8>> = chunk
            .iter()
            .map(|&i| {
                let url = format!("http://k{}/", i % 300);
                json_rec(source_record(
                    &url,
                    at + f64::from(i) * 0.01,
                    i % 13 != 0,
                    900 + i % 400,
                ))
            })
            .collect();
        t.produce(&recs).await;
        if !killed {
            website_monitor_tests::postgres::rows_at_least(db, schema, "site_check", 1_000).await;
            sink.kill9();
            killed = true;
        }
    }
    assert!(
        t.count("site_check", "").await < i64::from(N),
        "the kill came mid-stream"
    );
    let mut sink = website_monitor_tests::Proc::spawn("sink", &config);
    t.wait_rows("site_check", i64::from(N)).await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(
        t.count("site_check", "").await,
        i64::from(N),
        "each check stored once"
    );
    assert_rollups_equal_a_recount(db, schema).await;
    assert_eq!(
        sink.term(),
        Some(0),
        "SIGTERM exits 0; log:\n{}",
        sink.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_early_and_expired_records_and_retention_by_whole_partitions() {
    let t = SinkTest::new("storage_retention", 1).await;
    let (db, schema) = (&t.db, &t.schema);
    t.migrate().await;
    // A partition of 5 days ago with a row in it: past a 2-day retention.
    let old = now() - 5.0 * 86_400.0;
    db.batch_execute(&format!(
        "SET search_path = \"{schema}\";
         SELECT site_make_partitions('site_check', to_timestamp({old}), to_timestamp({old}), '1 day');
         INSERT INTO site (url, data) VALUES ('http://old/', '{{}}');
         INSERT INTO site_check (checked_at, site_id, present)
         SELECT to_timestamp({old}), id, 1 FROM site;"
    ))
    .await
    .unwrap();
    let at = now();
    let records = [
        source_record("http://late/", at - 3.0 * 3600.0, true, 1000), // late: kept
        source_record("http://expired/", at - 3.0 * 86_400.0, true, 1000), // past retention
        source_record("http://future/", at + 3.0 * 86_400.0, true, 1000), // a wrong clock
        source_record("http://now/", at, true, 1000),
    ];
    t.produce(
        &records
            .iter()
            .map(|r| json_rec(r.clone()))
            .collect::<Vec<_>>(),
    )
    .await;
    let config = t
        .config()
        .set("history_retention", "2d")
        .set("rollup_minute_retention", "2d");
    let (running, token) = sink::start(&config).await;
    t.wait_rows("site_rejected", 1).await;
    sink::stop(running, token).await;

    let urls: Vec<String> = db
        .query(
            &format!("SELECT url FROM \"{schema}\".site_check_record ORDER BY url"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        urls,
        ["http://late/", "http://now/"],
        "the late record is stored, the expired one and the old partition are not"
    );
    let reason: String = db
        .query_one(
            &format!("SELECT reason FROM \"{schema}\".site_rejected"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(reason, "checked_at_in_future");
    let old_partition: bool = db
        .query_one(
            &format!("SELECT count(*) > 0 FROM pg_inherits WHERE inhparent = '\"{schema}\".site_check'::regclass AND inhrelid::regclass::text LIKE '%' || to_char(to_timestamp({old}) AT TIME ZONE 'UTC', 'YYYYMMDD')"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        !old_partition,
        "the partition past retention is dropped whole"
    );
    let day_checks: i64 = db
        .query_one(
            &format!("SELECT coalesce(sum(checks), 0)::int8 FROM \"{schema}\".site_per_day"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        day_checks, 3,
        "the expired record still counts in the day rollups (kept 400 days)"
    );
    let minute_checks: i64 = db
        .query_one(
            &format!("SELECT coalesce(sum(checks), 0)::int8 FROM \"{schema}\".site_per_minute"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        minute_checks, 2,
        "but not in the minute rollups (kept 2 days)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_least_privileged_sink_facing_the_old_history_stops_and_says_to_start_once_as_the_owner()
{
    let t = SinkTest::new("storage_lp_upgrade", 1).await;
    let (db, schema) = (&t.db, &t.schema);
    t.migrate_up_to(5).await;
    db.batch_execute(&format!(
        "INSERT INTO \"{schema}\".site (url, data, checked_at) VALUES ('http://lp/', '{{}}', now());
         INSERT INTO \"{schema}\".site_check (site_id, checked_at, ok, status_code, duration, data, topic, \"partition\", \"offset\")
         SELECT s.id, now(), true, 200, 0.001, jsonb_build_object('url', s.url, 'n', n), 'old-topic', 0, n
         FROM generate_series(0, 9) n, \"{schema}\".site s;"
    ))
    .await
    .unwrap();
    // The DBA applies the new migrations (the old table is renamed, its rows
    // stay) and the sink runs as a role that does not own the tables.
    t.migrate().await;
    let role = t.least_privileged_role().await;
    let uri = website_monitor_tests::kv_uri(&t.stack.postgres_uri, Some(&role), None, None, None);
    let mut sink =
        website_monitor_tests::Proc::spawn("sink", &t.config().set("postgres_uri", uri).text());
    let code = website_monitor_tests::wait::eventually(
        "the least-privileged sink exits",
        website_monitor_tests::wait::WAIT,
        || {
            let exited = sink.exited();
            async move { exited }
        },
    )
    .await;
    let log = sink.log();
    assert_ne!(code, Some(0), "it fails; log:\n{log}");
    assert!(
        log.contains("site_check_legacy")
            && log.contains("start one sink once with the postgres_uri of the role that owns"),
        "the error names the table and what to do; log:\n{log}"
    );
    // Started once as the owner, the sink moves the rows.
    let (running, token) = sink::start(&t.config()).await;
    t.wait_rows("site_check", 10).await;
    sink::stop(running, token).await;
    assert_eq!(
        t.count("site_check_record", "WHERE record->>'n' IS NOT NULL")
            .await,
        10
    );
    t.drop_role(&role).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_partition_functions_refuse_other_tables_and_fill_around_existing_partitions() {
    let t = SinkTest::new("storage_parts", 1).await;
    let (db, schema) = (&t.db, &t.schema);
    t.migrate().await;
    let role = t.least_privileged_role().await;
    db.batch_execute(&format!(
        "SET search_path = \"{schema}\";
         CREATE TABLE ledger (at timestamptz, amount int) PARTITION BY RANGE (at);
         CREATE TABLE ledger_all PARTITION OF ledger FOR VALUES FROM ('2000-01-01') TO ('2100-01-01');
         INSERT INTO ledger VALUES (now(), 1);"
    ))
    .await
    .unwrap();
    // The sink's role may run the functions, but only on the sink's tables.
    let uri = website_monitor_tests::kv_uri(&t.stack.postgres_uri, Some(&role), None, None, None);
    let as_sink = website_monitor_tests::pg(&uri).await;
    for call in [
        format!("SELECT \"{schema}\".site_drop_partitions('\"{schema}\".ledger'::regclass, 'infinity')"),
        format!("SELECT \"{schema}\".site_make_partitions('\"{schema}\".ledger'::regclass, now(), now(), '1 hour')"),
    ] {
        let e = as_sink.query_one(&call, &[]).await.expect_err(&call);
        let message = e.as_db_error().map(|d| d.message().to_owned()).unwrap_or_default();
        assert!(
            message.contains("not one of the website-monitor sink's partitioned tables"),
            "{call}: {e:?}"
        );
    }
    assert_eq!(
        t.count("ledger", "").await,
        1,
        "the other table keeps its rows"
    );

    // A span changed from a day to an hour: the day's partition covers the
    // hours, nothing fails. Its day partition detached: hours fill the gap.
    let make = |span: &str| {
        format!("SELECT \"{schema}\".site_make_partitions('\"{schema}\".site_check'::regclass, now(), now(), '{span}')")
    };
    let as_sink = &as_sink;
    let made =
        |sql: String| async move { as_sink.query_one(&sql, &[]).await.unwrap().get::<_, i32>(0) };
    made(make("1 day")).await;
    assert_eq!(
        made(make("1 hour")).await,
        0,
        "covered by the day's partition"
    );
    let today = db
        .query_one("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYYMMDD')", &[])
        .await
        .unwrap()
        .get::<_, String>(0);
    db.batch_execute(&format!(
        "ALTER TABLE \"{schema}\".site_check DETACH PARTITION \"{schema}\".site_check_{today}"
    ))
    .await
    .unwrap();
    assert_eq!(
        made(make("1 day")).await,
        24,
        "the detached day is filled hour by hour"
    );
    assert_eq!(made(make("1 day")).await, 0, "and then covered");
    t.drop_role(&role).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_rows_written_before_migration_8_read_back_after_it_and_a_least_privileged_sink_goes_on(
) {
    let t = SinkTest::new("storage_m8", 1).await;
    let (db, schema) = (&t.db, &t.schema);
    t.migrate_up_to(7).await;
    // A row as a sink of migration 7 wrote it: Kafka position, inserted_at,
    // the address as inet, the days left stored.
    let at = now() - 600.0;
    db.batch_execute(&format!(
        "SET search_path = \"{schema}\";
         DROP TABLE IF EXISTS site_check_legacy;
         SELECT site_make_partitions('site_check', to_timestamp({at}), to_timestamp({at}), '1 day');
         INSERT INTO site (url, data) VALUES ('http://old/', '{{}}');
         INSERT INTO site_check (checked_at, inserted_at, site_id, \"offset\", \"partition\", present, ok, ip,
                                 tls_version, cert_not_after, cert_days_left)
         SELECT to_timestamp({at}), to_timestamp({at}) + interval '50 ms', id, 7, 0, 1 | 2 | 32 | 2048 | 4096,
                true, '10.1.2.3', 13, to_timestamp({at}) + interval '30 days', 30 FROM site;"
    ))
    .await
    .unwrap();
    // Rollups written before migration 8 (3 checks: 2 ok, 1 timeout) at each level.
    for (level, span) in [("minute", "1 day"), ("hour", "1 day"), ("day", "30 days")] {
        db.batch_execute(&format!(
            "SET search_path = \"{schema}\";
             SELECT site_make_partitions('site_per_{level}', to_timestamp({at}), to_timestamp({at}), '{span}');
             INSERT INTO site_per_{level} (site_id, probe_id, bucket, checks, ok, failed, responses,
                                          duration_min_us, duration_max_us, duration_sum_us, latency, failures)
             SELECT id, 0, date_trunc('{level}', to_timestamp({at}), 'UTC'), 3, 2, 1, 2, 900, 1100, 2000,
                    ARRAY[(80::int8 << 32) | 1, (81::int8 << 32) | 1], ARRAY[(4::int8 << 32) | 1]
             FROM site;"
        ))
        .await
        .unwrap();
    }
    let record =
        format!("SELECT record FROM \"{schema}\".site_check_record WHERE url = 'http://old/'");
    let before: serde_json::Value = db.query_one(&record, &[]).await.unwrap().get(0);
    // A least-privileged sink granted what migration 7's tables need ...
    let role = t.least_privileged_role().await;
    t.migrate().await;
    // Migration 9 adds the status tables: granted by hand, as docs/sink.md
    // says for tables an upgrade adds (migration 8 passes its grants on).
    db.batch_execute(&format!(
        "GRANT SELECT, INSERT, UPDATE ON \"{schema}\".site_status, \"{schema}\".site_probe_state,
                                        \"{schema}\".site_transition, \"{schema}\".site_maintenance TO \"{role}\""
    ))
    .await
    .unwrap();
    let after: serde_json::Value = db.query_one(&record, &[]).await.unwrap().get(0);
    assert_eq!(after, before, "the old row reads back the same");
    assert_eq!(after["ip"], "10.1.2.3");
    assert_eq!(after["tls"]["cert_days_left"], 30);

    let new = source_record("http://new/", now(), true, 1500);
    t.produce(&[json_rec(new.clone())]).await;
    // ... writes migration 8's fleet tables and reads the rebuilt view: the
    // migration passed the grants on.
    let uri = website_monitor_tests::kv_uri(&t.stack.postgres_uri, Some(&role), None, None, None);
    let (running, token) = sink::start(&t.config().set("postgres_uri", uri.as_str())).await;
    t.wait_rows("site_check", 2).await;
    sink::stop(running, token).await;
    let as_sink = website_monitor_tests::pg(&uri).await;
    let fleet: i64 = as_sink
        .query_one(
            &format!("SELECT sum(checks)::int8 FROM \"{schema}\".site_fleet_per_day"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        fleet,
        1 + 3,
        "the new check and the 3 from before, in the fleet"
    );
    as_sink
        .query_one(&record, &[])
        .await
        .expect("the view granted again");
    drop(as_sink);
    // The fleet holds the rollups from before the migration too.
    assert_fleet_answers_as_every_site(db, schema).await;
    t.drop_role(&role).await;
    let back: serde_json::Value = db
        .query_one(
            &format!("SELECT record FROM \"{schema}\".site_check_record WHERE url = 'http://new/'"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        numbers_as_f64(back),
        numbers_as_f64(new),
        "a new row beside the old"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_runs_while_no_record_comes() {
    let t = SinkTest::new("storage_idle", 1).await;
    let (db, schema) = (&t.db, &t.schema);
    t.migrate().await;
    let old = now() - 5.0 * 86_400.0;
    db.batch_execute(&format!(
        "SET search_path = \"{schema}\";
         SELECT site_make_partitions('site_check', to_timestamp({old}), to_timestamp({old}), '1 day');"
    ))
    .await
    .unwrap();
    let partitions = format!(
        "SELECT count(*) FROM pg_inherits WHERE inhparent = '\"{schema}\".site_check'::regclass
           AND inhrelid::regclass::text LIKE '%' || to_char(to_timestamp({old}) AT TIME ZONE 'UTC', 'YYYYMMDD')"
    );
    let count = || async {
        db.query_one(&partitions, &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    assert_eq!(count().await, 1, "the old partition is there");
    // Nothing is ever produced to the topic.
    let (running, token) = sink::start(&t.config().set("history_retention", "2d")).await;
    website_monitor_tests::wait::eventually(
        "the idle sink to drop the partition past retention",
        website_monitor_tests::wait::WAIT,
        || async { (count().await == 0).then_some(()) },
    )
    .await;
    sink::stop(running, token).await;
}

/// Retention detaches a partition (the parent locked for a catalog change
/// only), then drops the detached table in a transaction of its own: a
/// table a sink detached but did not drop (killed in between) is dropped by
/// the next run, and only tables marked retired of that parent are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_partitions_detached_before_and_nothing_else() {
    let t = SinkTest::new("storage_retired", 1).await;
    let (db, schema) = (&t.db, &t.schema);
    t.migrate().await;
    let old = now() - 5.0 * 86_400.0;
    db.batch_execute(&format!(
        "SET search_path = \"{schema}\";
         SELECT site_make_partitions('site_check', to_timestamp({old}), to_timestamp({old}), '1 day');
         CREATE TABLE bystander (x int);
         COMMENT ON TABLE bystander IS 'website-monitor: retired partition of 1';"
    ))
    .await
    .unwrap();
    // As a sink killed between its two steps leaves it: detached, not dropped.
    let detached: i32 = db
        .query_one(
            &format!(
                "SELECT \"{schema}\".site_drop_partitions('\"{schema}\".site_check'::regclass, now() - interval '2 days')"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(detached, 1);
    let day = format!("to_char(to_timestamp({old}) AT TIME ZONE 'UTC', 'YYYYMMDD')");
    // The detached table: renamed retired_<oid>, marked by a comment.
    let tables = format!(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = '{schema}' AND c.relname LIKE 'retired_%'
           AND obj_description(c.oid, 'pg_class') = 'website-monitor: retired partition of '
               || '\"{schema}\".site_check'::regclass::oid::text"
    );
    let partitions = format!(
        "SELECT count(*) FROM pg_inherits WHERE inhparent = '\"{schema}\".site_check'::regclass
           AND inhrelid::regclass::text LIKE '%' || {day}"
    );
    let count =
        |sql: String| async move { db.query_one(&sql, &[]).await.unwrap().get::<_, i64>(0) };
    assert_eq!(
        (count(tables.clone()).await, count(partitions.clone()).await),
        (1, 0),
        "detached, still there"
    );
    let (running, token) = sink::start(&t.config().set("history_retention", "2d")).await;
    website_monitor_tests::wait::eventually(
        "the sink to drop the table detached before",
        website_monitor_tests::wait::WAIT,
        || async { (count(tables.clone()).await == 0).then_some(()) },
    )
    .await;
    sink::stop(running, token).await;
    let bystander = format!(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = '{schema}' AND c.relname = 'bystander'"
    );
    assert_eq!(
        count(bystander).await,
        1,
        "a table not retired from the history stays"
    );
}

/// The SQL API's level picking (migration 15: bounds computed in UTC
/// `timestamp`, each finer level reading the range's edges only) gives,
/// for any range, what the minute rollups alone give for that range rounded
/// out to whole minutes: per site and for the fleet, over ranges inside a
/// minute, across hours and days, on exact boundaries and not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sql_api_levels_add_up_to_the_minute_rollups_over_any_range() {
    let t = SinkTest::new("storage_levels", 1).await;
    let end = (now() / 86_400.0).floor() * 86_400.0 + 7_200.0;
    let start = end - 3.0 * 86_400.0;
    // A fixed pseudo-random sequence (no seed to chase when it fails).
    let mut state: u64 = 0x5eed_1234;
    let mut next = move |n: u64| {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        (state >> 33) % n
    };
    let span = (end - start) as u64;
    let records: Vec<Vec<u8>> = (0..600)
        .map(|i| {
            let at = start + next(span) as f64 + f64::from(i % 1000) / 1000.0;
            json_rec(source_record(
                &format!("http://l{}/", i % 3),
                at,
                i % 7 != 0,
                900 + i,
            ))
        })
        .collect();
    let config = t.config().set("rollup_minute_retention", "10d");
    let (running, token) = sink::start(&config).await;
    t.produce(&records).await;
    t.wait_rows("site_check", records.len() as i64).await;
    sink::stop(running, token).await;

    let mut ranges: Vec<(f64, f64)> = vec![
        (start, end),
        (start + 86_400.0, start + 2.0 * 86_400.0),
        (start + 3_600.0, start + 7_200.0),
        (start + 90.5, start + 150.25),
        (start + 86_399.0, start + 86_401.0),
        (start + 10.0, start + 20.0),
        // Inverted: nothing (review of migration 15, finding 5).
        (start + 100.0, start + 50.0),
        (end, start),
    ];
    for _ in 0..60 {
        let a = start + next(span) as f64 + next(1000) as f64 / 1000.0;
        let b = a + next(span / 2) as f64 + 1.0;
        ranges.push((a, b));
    }
    let (db, schema) = (&t.db, &t.schema);
    let minutes = "date_trunc('minute', to_timestamp($1) AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'";
    let minutes_end =
        "(date_trunc('minute', (to_timestamp($2) AT TIME ZONE 'UTC') - interval '1 microsecond')
                       + interval '1 minute') AT TIME ZONE 'UTC'";
    for (table, api) in [
        ("site_per_minute", "site_rollup(NULL, NULL, to_timestamp($1), to_timestamp($2))"),
        ("site_fleet_per_minute", "site_fleet_rollup(NULL, to_timestamp($1), to_timestamp($2))"),
        (
            "site_per_minute WHERE site_id = (SELECT id FROM \"{schema}\".site WHERE url = 'http://l1/') AND",
            "site_rollup('http://l1/', NULL, to_timestamp($1), to_timestamp($2))",
        ),
    ] {
        let (table, filter) = match table.split_once(" WHERE ") {
            Some((t, f)) => (t, format!("WHERE {} ", f.replace("{schema}", schema))),
            None => (table, "WHERE ".to_owned()),
        };
        let sums = "coalesce(sum(checks), 0)::int8, coalesce(sum(ok), 0)::int8, coalesce(sum(failed), 0)::int8";
        let want = format!(
            "SELECT {sums} FROM \"{schema}\".{table} {filter} bucket >= {minutes} AND bucket < {minutes_end}"
        );
        let got = format!("SELECT {sums} FROM \"{schema}\".{api}");
        for (a, b) in &ranges {
            let want: (i64, i64, i64) = {
                let r = db.query_one(&want, &[a, b]).await.unwrap();
                (r.get(0), r.get(1), r.get(2))
            };
            let got: (i64, i64, i64) = {
                let r = db.query_one(&got, &[a, b]).await.unwrap();
                (r.get(0), r.get(1), r.get(2))
            };
            assert_eq!(got, want, "{api} over [{a}, {b})");
        }
    }
}
