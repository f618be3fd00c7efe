//! The harness reaches the real services of `make up`: Kafka over PLAINTEXT
//! and over mTLS with the generated PEM files, PostgreSQL over plain TCP and TLS.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use website_monitor_tests::{create_topic, pg, stack, unique, Stack};

fn mtls(stack: &Stack, c: &mut ClientConfig) {
    let tls = &stack.tls_dir;
    c.set("bootstrap.servers", &stack.ssl_brokers)
        .set("security.protocol", "ssl")
        .set("ssl.ca.location", tls.join("ca.pem").display().to_string())
        .set(
            "ssl.certificate.location",
            tls.join("client.pem").display().to_string(),
        )
        .set(
            "ssl.key.location",
            tls.join("client.key").display().to_string(),
        );
}

async fn round_trip(base: ClientConfig, topic: &str) -> Vec<u8> {
    let producer: FutureProducer = base.clone().set("acks", "all").create().expect("producer");
    producer
        .send(
            FutureRecord::to(topic).key("k").payload("hello"),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("delivered");
    let consumer: StreamConsumer = base
        .clone()
        .set("group.id", unique("smoke"))
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let m = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
        .await
        .expect("a message within 30 s")
        .expect("no consumer error");
    m.payload().expect("payload").to_vec()
}

#[tokio::test]
async fn kafka_plaintext_produce_and_consume() {
    let s = stack();
    let topic = unique("smoke-plain");
    create_topic(&s.brokers, &topic, 1).await;
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &s.brokers);
    assert_eq!(round_trip(c, &topic).await, b"hello");
}

#[tokio::test]
async fn kafka_mtls_produce_and_consume_with_generated_pem_files() {
    let s = stack();
    let topic = unique("smoke-mtls");
    create_topic(&s.brokers, &topic, 1).await;
    let mut c = ClientConfig::new();
    mtls(&s, &mut c);
    assert_eq!(round_trip(c, &topic).await, b"hello");
}

#[tokio::test]
async fn kafka_mtls_listener_refuses_a_client_without_certificate() {
    let s = stack();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &s.ssl_brokers)
        .set("security.protocol", "ssl")
        .set(
            "ssl.ca.location",
            s.tls_dir.join("ca.pem").display().to_string(),
        )
        .set("message.timeout.ms", "5000")
        .create()
        .expect("producer");
    let r = producer
        .send(
            FutureRecord::to(&unique("smoke-nocert"))
                .key("k")
                .payload("x"),
            Duration::from_secs(10),
        )
        .await;
    assert!(
        r.is_err(),
        "a client without a certificate must not be able to produce"
    );
}

#[tokio::test]
async fn postgres_plain_query() {
    let s = stack();
    let client = pg(&s.postgres_uri).await;
    let row = client
        .query_one("SELECT 1::int4 + 1", &[])
        .await
        .expect("query");
    assert_eq!(row.get::<_, i32>(0), 2);
}

#[tokio::test]
async fn postgres_tls_with_verify_full_against_the_stack_ca() {
    let s = stack();
    let pem = std::fs::read(s.tls_dir.join("ca.pem")).expect("ca.pem");
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.expect("pem cert")).expect("add root");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocols")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(config);
    let uri = format!(
        "{}?sslmode=require",
        s.postgres_uri.replace("127.0.0.1", "localhost")
    );
    let (client, conn) = tokio_postgres::connect(&uri, tls)
        .await
        .expect("TLS connection to PostgreSQL with the stack's CA");
    tokio::spawn(conn);
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("query");
    assert!(row.get::<_, bool>(0), "the connection must be encrypted");
}

/// Topic names on the broker, from its metadata.
fn topic_names(brokers: &str) -> Vec<String> {
    let consumer: rdkafka::consumer::BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("metadata client");
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .expect("metadata");
    metadata
        .topics()
        .iter()
        .map(|t| t.name().to_owned())
        .collect()
}

#[tokio::test]
async fn topics_left_by_runs_over_an_hour_ago_are_deleted_and_recent_or_running_ones_kept() {
    let s = stack();
    let two_hours_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        - 2 * 3600 * 1000;
    // A pid no process has (above Linux's pid_max limit of 2^22).
    let old = format!("sweep-old-4194999-{two_hours_ago}-0");
    let recent = unique("sweep-recent");
    // Old, but its maker (this process) still runs.
    let mine = format!("sweep-mine-{}-{two_hours_ago}-0", std::process::id());
    let kept = "sweep-not-from-unique";
    for t in [old.as_str(), recent.as_str(), mine.as_str(), kept] {
        create_topic(&s.brokers, t, 1).await;
    }
    website_monitor_tests::delete_stale_topics(&s.brokers, Duration::from_secs(3600))
        .await
        .expect("sweep");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let names = topic_names(&s.brokers);
        assert!(names.contains(&recent), "a recent test topic is kept");
        assert!(names.contains(&mine), "a running process's topic is kept");
        assert!(
            names.iter().any(|n| n == kept),
            "a topic not named by unique() is kept"
        );
        if !names.contains(&old) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{old} still listed 30 s after its deletion"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
