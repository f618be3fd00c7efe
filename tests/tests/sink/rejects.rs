//! Bad records rejected with their reason while good ones around them are
//! stored; the batch writer called directly.

use std::time::Duration;

use website_monitor_tests::sink::{self, batch_conn, batch_msg, SinkTest};
use website_monitor_tests::{column, count, http_get, stack, wait_ready};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_records_are_rejected_with_their_reason_and_good_ones_around_them_stored() {
    let t = SinkTest::new("sink_bad", 1).await;
    let (db, schema, topic) = (&t.db, &t.schema, &t.topic);
    let config = t
        .config()
        .set("max_record_bytes", 2000)
        .set("max_url_bytes", 100);
    let (running, token) = sink::start(&config).await;
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
        let p = website_monitor_tests::producer(&t.stack.brokers);
        for (i, (_, payload)) in cases.iter().enumerate() {
            let key = format!("k{i}");
            let mut r: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).key(key.as_bytes());
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
    t.wait_rows("site_rejected", n_bad).await;
    t.wait_rows("site_check", 2).await;
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
        db,
        &format!("SELECT url FROM \"{schema}\".site ORDER BY url"),
    )
    .await;
    assert_eq!(
        good,
        ["http://good1/", "http://good2/"],
        "good records around the bad ones are stored; the refused one left no row"
    );

    // The sink is still running and takes more.
    t.produce(&[br#"{"url": "http://good3/"}"#.to_vec()]).await;
    t.wait_rows("site_check", 3).await;
    let (_, metrics) = http_get(&addr, "/metrics").await.unwrap();
    for reason in ["not_utf8", "nul_in_string", "database"] {
        assert!(
            metrics.contains(&format!(
                "website_monitor_records_rejected_total{{reason=\"{reason}\"}}"
            )),
            "metrics count reason {reason}"
        );
    }
    sink::stop(running, token).await;
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
    let _g = sink::PG_RESTART.read().await;
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
        "CREATE UNIQUE INDEX one_n ON \"{schema}\".site ((data->>'n'))"
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
        "DROP INDEX \"{schema}\".one_n; DELETE FROM \"{schema}\".site_rejected; DELETE FROM \"{schema}\".site_check WHERE site_id IN (SELECT id FROM \"{schema}\".site WHERE url IN ('http://c/', 'http://d/')); DELETE FROM \"{schema}\".site WHERE url IN ('http://c/', 'http://d/'); UPDATE \"{schema}\".site_kafka_offsets SET next_offset = 2"
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
