//! Faults: PostgreSQL restarted or black-holed, Kafka unreachable — what
//! `/readyz` says, that nothing is lost or doubled, and that shutdown stays
//! bounded.

use std::time::Duration;

use website_monitor_tests::sink::{self, numbered, SinkTest};
use website_monitor_tests::{
    free_port, http_get, kv_uri, pg, pg_port, stack_script, unique, wait_not_ready, wait_ready,
    BlackHole, RestartOnDrop, WAIT,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_while_running_loses_and_doubles_nothing() {
    assert!(
        website_monitor_tests::stack().pg_ours,
        "postgres_restart_while_running_loses_and_doubles_nothing needs the PostgreSQL started by scripts/stack.sh (WM_PG_OURS=1, as `make up`/`make test` do): it stops and restarts it, which it must not do to a database it does not own. Run it against the local stack, or skip it explicitly with `--skip postgres_restart`"
    );
    let mut t = SinkTest::restarting_postgres("sink_pgrestart", 2).await;
    let (running, token) = sink::start(&t.config().set("batch_size", 500)).await;
    let addr = running.metrics_addr.to_string();
    let first: Vec<Vec<u8>> = (0..2_000).map(|i| numbered(i, 100)).collect();
    t.produce(&first).await;
    t.wait_rows("site_check", 2_000).await;
    wait_ready(&addr).await;

    stack_script("pg-stop");
    let restart = RestartOnDrop::new("pg-start");
    let second: Vec<Vec<u8>> = (2_000..5_000).map(|i| numbered(i, 100)).collect();
    t.produce(&second).await;
    wait_not_ready(
        &addr,
        "PostgreSQL",
        "/readyz to report PostgreSQL down",
        WAIT,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stack_script("pg-start");
    restart.disarm();

    // The test's own connection did not survive the restart either.
    t.db = pg(&t.stack.postgres_uri).await;
    t.wait_rows("site_check", 5_000).await;
    wait_ready(&addr).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    t.assert_exactly_once(5_000).await;
    let (_, metrics) = http_get(&addr, "/metrics").await.unwrap();
    assert!(
        metrics.contains("website_monitor_db_retries_total"),
        "retries are counted"
    );
    sink::stop(running, token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_while_kafka_is_unreachable() {
    let t = SinkTest::new("sink_nokafka", 1).await;
    let config = t
        .config()
        .brokers(&format!("127.0.0.1:{}", free_port()))
        .set("topic", unique("sink-nokafka"));
    let (running, token) = sink::start(&config).await;
    let addr = running.metrics_addr.to_string();
    // PostgreSQL is fine (tables are made) but Kafka is not: not ready, saying why.
    t.wait_rows("site_check", 0).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (status, body) = http_get(&addr, "/readyz").await.unwrap();
    assert_eq!(status, 503);
    assert!(body.contains("Kafka"), "{body}");
    assert!(!body.contains("PostgreSQL"), "{body}");
    sink::stop(running, token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_postgres_connection_times_out_and_shutdown_stays_bounded() {
    let t = SinkTest::new("sink_blackhole", 1).await;
    let proxy = BlackHole::start(pg_port(&t.stack.postgres_uri)).await;
    let uri = kv_uri(
        &t.stack.postgres_uri,
        None,
        Some("127.0.0.1"),
        None,
        Some(proxy.port),
    );
    let config = t
        .config()
        .set("postgres_uri", uri)
        .set("write_timeout", "2s")
        .set("shutdown_timeout", "3s");
    let (running, token) = sink::start(&config).await;
    let addr = running.metrics_addr.to_string();
    let first: Vec<Vec<u8>> = (0..5).map(|i| numbered(i, 5)).collect();
    t.produce(&first).await;
    t.wait_rows("site_check", 5).await;
    wait_ready(&addr).await;

    proxy.freeze();
    let second: Vec<Vec<u8>> = (5..10).map(|i| numbered(i, 5)).collect();
    t.produce(&second).await;
    wait_not_ready(
        &addr,
        "PostgreSQL",
        "/readyz to report the unanswered PostgreSQL connection",
        Duration::from_secs(20),
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
    let (running, token) = sink::start(&config).await;
    t.wait_rows("site_check", 10).await;
    t.assert_exactly_once(10).await;
    sink::stop(running, token).await;
}
