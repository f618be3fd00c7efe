//! The pair over SASL_SSL with SCRAM, as managed Kafka services offer it: the
//! local broker's SASL_SSL listener (`make up` creates its SCRAM user), TLS
//! verified with the stack's CA, no client certificate.

use std::time::Duration;

use connector_common::Loaded;
use tokio_util::sync::CancellationToken;
use website_monitor_sink::SinkConfig;
use website_monitor_source::{RunOptions, SourceConfig};
use website_monitor_tests::http::TestServer;
use website_monitor_tests::{
    create_topic, eventually, fresh_schema, http_get, pg, stack, unique, ConfigBuilder, Pair, Stack,
};

/// `config` on the SASL_SSL listener with `mechanism` and `password`.
fn over_sasl(config: ConfigBuilder, s: &Stack, mechanism: &str, password: &str) -> ConfigBuilder {
    config
        .brokers(&s.sasl_brokers)
        .kafka("security_protocol", "sasl_ssl")
        .kafka("sasl_mechanism", mechanism)
        .kafka("sasl_username", s.sasl_username.as_str())
        .kafka("sasl_password", password)
        .kafka("ssl_ca", s.tls_dir.join("ca.pem").display().to_string())
}

fn source_config(kafka: ConfigBuilder, target: &TestServer, topic: &str) -> Loaded<SourceConfig> {
    kafka
        .set("topic", topic)
        .set("interval", "200ms")
        .set("timeout", "2s")
        .set("metrics_address", "127.0.0.1:0")
        .site(target.url("/text"))
        .source_config()
}

fn sink_config(kafka: ConfigBuilder, topic: &str, schema: &str, uri: &str) -> Loaded<SinkConfig> {
    kafka
        .set("topic", topic)
        .set("group_id", unique("sasl-group"))
        .set("postgres_uri", uri)
        .set("schema", schema)
        .set("batch_timeout", "50ms")
        .set("metrics_address", "127.0.0.1:0")
        .sink_config()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_and_sink_over_sasl_ssl_with_scram_store_every_delivered_check() {
    let s = stack();
    let target = TestServer::http().await;
    let topic = unique("sasl");
    create_topic(&s.brokers, &topic, 2).await;
    let db = pg(&s.postgres_uri).await;
    let schema = fresh_schema(&db, "sasl").await;
    // Both mechanisms the listener offers: the source with SHA-256, the sink with SHA-512.
    let source_cfg = source_config(
        over_sasl(
            ConfigBuilder::source(),
            &s,
            "SCRAM-SHA-256",
            &s.sasl_password,
        ),
        &target,
        &topic,
    );
    let sink_cfg = sink_config(
        over_sasl(ConfigBuilder::sink(), &s, "SCRAM-SHA-512", &s.sasl_password),
        &topic,
        &schema,
        &s.postgres_uri,
    );
    let pair = Pair::start(source_cfg, sink_cfg).await;
    let count_sql = format!("SELECT count(*) FROM \"{schema}\".site_check");
    eventually(
        "5 checks stored over SASL_SSL",
        Duration::from_secs(60),
        || async {
            let n: i64 = db.query_one(&count_sql, &[]).await.ok()?.get(0);
            (n >= 5).then_some(())
        },
    )
    .await;
    pair.stop_and_assert_history_holds_every_delivered_record(&db, &schema)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_scram_password_keeps_both_connectors_not_ready_and_says_which_settings() {
    let s = stack();
    let target = TestServer::http().await;
    let topic = unique("sasl-wrong");
    create_topic(&s.brokers, &topic, 1).await;
    let db = pg(&s.postgres_uri).await;
    let schema = fresh_schema(&db, "sasl_wrong").await;
    let wrong = |config| over_sasl(config, &s, "SCRAM-SHA-256", "not-the-password");
    let stop = CancellationToken::new();
    let source = website_monitor_source::start(
        source_config(wrong(ConfigBuilder::source()), &target, &topic),
        RunOptions::default(),
        stop.clone(),
    )
    .await
    .expect("the source starts (Kafka problems are reported, not fatal)");
    let sink = website_monitor_sink::start(
        sink_config(
            wrong(ConfigBuilder::sink()),
            &topic,
            &schema,
            &s.postgres_uri,
        ),
        stop.clone(),
    )
    .await
    .expect("the sink starts (Kafka problems are reported, not fatal)");
    for (name, addr) in [
        (
            "source",
            source.metrics_address.expect("source serves telemetry"),
        ),
        ("sink", sink.metrics_addr),
    ] {
        let body = eventually(
            &format!("the {name}'s /readyz to name the refused credentials"),
            Duration::from_secs(30),
            || async {
                let (status, body) = http_get(&addr.to_string(), "/readyz").await?;
                (status == 503 && body.contains("sasl_password")).then_some(body)
            },
        )
        .await;
        assert!(body.contains("SASL"), "{name}: {body}");
    }
    stop.cancel();
    source.wait().await.expect("source stops");
    sink.wait().await.expect("sink stops");
}
