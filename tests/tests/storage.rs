//! Long-run storage (issue 13), through the sink against the real stack:
//! compact history given back whole by the record view, exact rollups,
//! partitions made for the times a batch holds.

use serde_json::json;
use website_monitor_tests::kafka::json_rec;
use website_monitor_tests::sink::{self, SinkTest};

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        .floor()
}

/// The value with every number as an f64 (`1` and `1.0` are the same JSON number).
fn numbers_as_f64(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Number(n) => json!(n.as_f64().unwrap()),
        Value::Array(a) => Value::Array(a.into_iter().map(numbers_as_f64).collect()),
        Value::Object(o) => {
            Value::Object(o.into_iter().map(|(k, v)| (k, numbers_as_f64(v))).collect())
        }
        other => other,
    }
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
        records.push(source_record(
            &url,
            at + f64::from(i) * 0.25,
            i % 10 != 0,
            1000 + i * 10,
        ));
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
    let rows = db
        .query(
            &format!("SELECT record FROM \"{schema}\".site_check_record"),
            &[],
        )
        .await
        .unwrap();
    let mut back: Vec<serde_json::Value> = rows.iter().map(|r| numbers_as_f64(r.get(0))).collect();
    let key = |v: &serde_json::Value| v.to_string();
    back.sort_by_key(key);
    let mut sent: Vec<serde_json::Value> = records.iter().cloned().map(numbers_as_f64).collect();
    sent.sort_by_key(key);
    assert_eq!(back, sent, "every record reads back as it was");

    for level in ["per_minute", "per_hour", "per_day"] {
        let r = db
            .query_one(
                &format!("SELECT sum(checks)::int8, sum(ok)::int8, sum(failed)::int8, sum(responses)::int8, sum(duration_sum_us)::int8 FROM \"{schema}\".site_{level}"),
                &[],
            )
            .await
            .unwrap();
        let h = db
            .query_one(
                &format!("SELECT count(*), count(*) FILTER (WHERE ok), count(*) FILTER (WHERE NOT ok), count(*) FILTER (WHERE status_code IS NOT NULL), coalesce(sum(duration_us) FILTER (WHERE status_code IS NOT NULL), 0)::int8 FROM \"{schema}\".site_check"),
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
}
