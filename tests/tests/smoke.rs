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
        rustls::crypto::ring::default_provider(),
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
