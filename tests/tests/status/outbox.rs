//! The transitions' outbox as seen in `/metrics`: the rows waiting and the
//! oldest's age, also while another sink holds the lock and produces nothing.

use std::time::Duration;

use website_monitor_tests::sink::{self, SinkTest};

use crate::{check, feed, now, status_toml};

const AGE: &str = "website_monitor_publish_oldest_age_seconds{stream=\"transitions\"}";

/// The value of the metric line starting with `prefix` in `text`.
fn value(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transitions_kept_waiting_by_another_sinks_lock_show_their_age() {
    let t = SinkTest::new("status_outbox_age", 1).await;
    t.migrate().await;
    let topic = website_monitor_tests::stack::unique("status-outbox-age");
    website_monitor_tests::kafka::create_topic(&t.stack.brokers, &topic, 1).await;
    // Another sink's lock on the transitions table, frozen.
    let other = website_monitor_tests::pg(&t.stack.postgres_uri).await;
    let table = format!("\"{}\".site_transition", t.schema);
    let taken: bool = other
        .query_one(
            "SELECT pg_try_advisory_lock(1460994051, $1::text::regclass::oid::int4)",
            &[&table],
        )
        .await
        .unwrap()
        .get(0);
    assert!(taken, "the test takes the transitions lock");
    let status = status_toml(&format!("transitions_topic = '{topic}'\n"));
    let config = t.config().set("status", status);
    let (running, token) = sink::start(&config).await;
    // Checked 10 minutes ago: the site's first transition (unknown → up).
    let at = now() - 600.0;
    let recs: Vec<Vec<u8>> = (0..3)
        .map(|i| check("http://aged/", "eu", at + f64::from(i), true))
        .collect();
    feed(&t, &recs, &mut 0).await;
    let addr = running.metrics_addr.to_string();
    website_monitor_tests::metrics::scrape_until(&addr, Duration::from_secs(30), |m| {
        value(m, AGE).is_some_and(|age| age >= 590.0)
            && value(m, "website_monitor_publish_backlog{stream=\"transitions\"}")
                .is_some_and(|n| n >= 1.0)
    })
    .await
    .unwrap_or_else(|m| panic!("the waiting transition's age is shown:\n{m}"));
    drop(other);
    website_monitor_tests::metrics::scrape_until(&addr, Duration::from_secs(60), |m| {
        value(m, AGE) == Some(0.0)
    })
    .await
    .unwrap_or_else(|m| panic!("the age is 0 once the transition is produced:\n{m}"));
    sink::stop(running, token).await;
}
