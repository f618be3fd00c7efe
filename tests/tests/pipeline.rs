//! The pair end to end: the source checks loopback HTTP targets and writes
//! Kafka, the sink drains that topic into PostgreSQL. Real Kafka, real
//! PostgreSQL, one topic and one schema per test.

use std::time::Duration;

use connector_common::config::Section;
use website_monitor_tests::http::TestServer;
use website_monitor_tests::{
    create_topic, eventually, fresh_schema, pg, stack, unique, ConfigBuilder, Pair, Site,
};

/// One file for both connectors, as `pipelines/*.toml` are.
fn config(target: &TestServer, topic: &str, schema: &str, group: &str) -> ConfigBuilder {
    let s = stack();
    ConfigBuilder::source()
        .brokers(&s.brokers)
        .set("topic", topic)
        .set("probe", "pipeline-test")
        .set("interval", "500ms")
        .set("timeout", "2s")
        .set("metrics_address", "127.0.0.1:0")
        .site(Site::new(target.url("/text")).set("regex", "quick brown fox"))
        .site(target.url("/status/503"))
        .site("http://127.0.0.1:9/")
        .section(Section::Sink)
        .set("topic", topic)
        .set("group_id", group)
        .set("postgres_uri", s.postgres_uri.as_str())
        .set("schema", schema)
        .set("batch_timeout", "100ms")
        .set("metrics_address", "127.0.0.1:0")
}

#[tokio::test]
async fn checks_flow_from_source_through_kafka_into_latest_and_history_tables() {
    let s = stack();
    let target = TestServer::http().await;
    let topic = unique("pipeline");
    create_topic(&s.brokers, &topic, 2).await;
    let client = pg(&s.postgres_uri).await;
    let schema = fresh_schema(&client, "pipeline").await;
    let config = config(&target, &topic, &schema, &unique("pipeline-group"));
    let source_cfg = config.source_config();
    let sink_cfg = config.sink_config();

    let pair = Pair::start(source_cfg, sink_cfg).await;

    // Every site shows up in the latest-state table, with at least 3 checks each in history.
    let sql = format!(
        "SELECT (SELECT count(*) FROM \"{schema}\".site), \
                (SELECT min(n) FROM (SELECT count(*) AS n FROM \"{schema}\".site_check GROUP BY site_id) c)"
    );
    eventually(
        "3 sites with 3 checks each in PostgreSQL",
        Duration::from_secs(60),
        || async {
            let row = client.query_one(&sql, &[]).await.ok()?;
            let (sites, min_checks): (i64, Option<i64>) = (row.get(0), row.get(1));
            (sites == 3 && min_checks.unwrap_or(0) >= 3).then_some(())
        },
    )
    .await;
    // Nothing lost, nothing doubled: history ends up holding exactly the
    // records the source had acknowledged by Kafka.
    pair.stop_and_assert_history_holds_every_delivered_record(&client, &schema)
        .await;

    // The latest row of each site holds a whole source record with the right verdict.
    let rows = client
        .query(
            &format!(
                "SELECT url, data, checked_at IS NOT NULL FROM \"{schema}\".site ORDER BY url"
            ),
            &[],
        )
        .await
        .expect("latest rows");
    let by_url = |u: &str| {
        rows.iter()
            .find(|r| r.get::<_, String>(0) == u)
            .map(|r| r.get::<_, serde_json::Value>(1))
            .unwrap_or_else(|| panic!("no latest row for {u}"))
    };
    let up = by_url(&target.url("/text"));
    assert_eq!(up["ok"], true);
    assert_eq!(up["status_code"], 200);
    assert_eq!(up["re_check"], true);
    assert_eq!(up["probe"], "pipeline-test");
    let down = by_url(&target.url("/status/503"));
    assert_eq!(down["ok"], false);
    assert_eq!(down["error"]["kind"], "status");
    let refused = by_url("http://127.0.0.1:9/");
    assert_eq!(refused["error"]["kind"], "connect");
    assert!(refused["status_code"].is_null());
    assert!(
        rows.iter().all(|r| r.get::<_, bool>(2)),
        "checked_at column filled"
    );

    let dup: i64 = client
        .query_one(
            &format!(
                "SELECT count(*) FROM (SELECT 1 FROM \"{schema}\".site_check \
                 GROUP BY site_id, checked_at HAVING count(*) > 1) d"
            ),
            &[],
        )
        .await
        .expect("duplicate query")
        .get(0);
    assert_eq!(dup, 0, "no check stored twice");
}

/// Every shipped configuration (`connector.toml` and `pipelines/*.toml`) is
/// valid for both binaries, given the environment variables it asks for.
#[test]
fn every_shipped_config_passes_check_config_for_both_connectors() {
    let root = website_monitor_tests::repo_root();
    let mut files = vec![root.join("connector.toml")];
    for entry in std::fs::read_dir(root.join("pipelines")).expect("pipelines/") {
        let path = entry.expect("dir entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            files.push(path);
        }
    }
    assert!(
        files.len() >= 5,
        "connector.toml and the pipelines: {files:?}"
    );
    for bin in ["website-monitor-source", "website-monitor-sink"] {
        for file in &files {
            let out = std::process::Command::new(website_monitor_tests::binary(bin))
                .arg("--config")
                .arg(file)
                .arg("--check-config")
                .current_dir(&root)
                .env("kafka_host", "127.0.0.1:9092")
                .env("KAFKA_USERNAME", "u")
                .env("KAFKA_PASSWORD", "secret-password")
                .env(
                    "postgres_uri",
                    "postgres://u:pw@127.0.0.1:5432/db?sslmode=require",
                )
                .output()
                .expect("run --check-config");
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{bin} --check-config {}: {}{}",
                file.display(),
                stdout,
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                !stdout.contains("secret-password") && !stdout.contains(":pw@"),
                "{bin} --check-config {} shows a secret: {stdout}",
                file.display()
            );
        }
    }
}
