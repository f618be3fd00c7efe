//! The source's telemetry: `/healthz`, `/readyz` and the counters and
//! gauges of `/metrics`.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use website_monitor_tests::http::TestServer;
use website_monitor_tests::metrics::sum;
use website_monitor_tests::source::{self, source_config};
use website_monitor_tests::{create_topic, eventually, stack, unique};

#[tokio::test]
async fn metrics_counters_move() {
    let s = TestServer::http().await;
    let topic = unique("src-metrics");
    create_topic(&stack().brokers, &topic, 1).await;
    let (up, down) = (s.url("/?metrics"), s.url("/status/500?metrics"));
    let config = source_config(&topic)
        .set("interval", "200ms")
        .sites([&up, &down]);
    let stop = CancellationToken::new();
    let running = source::start(&config, &stop).await;
    let base = format!(
        "http://{}",
        running.metrics_address.expect("metrics served")
    );
    let client = website_monitor_tests::http_client_builder()
        .build()
        .unwrap();
    let get = |path: &'static str| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            let r = client
                .get(format!("{base}{path}"))
                .send()
                .await
                .expect("telemetry answers");
            (r.status().as_u16(), r.text().await.unwrap_or_default())
        }
    };
    assert_eq!(get("/healthz").await.0, 200);
    eventually("/readyz to say ready", Duration::from_secs(20), || async {
        (get("/readyz").await.0 == 200).then_some(())
    })
    .await;
    let first = eventually("some checks counted", Duration::from_secs(20), || async {
        let (_, text) = get("/metrics").await;
        (sum(&text, "website_monitor_records_produced_total") > 0.0).then_some(text)
    })
    .await;
    // The recorder is global: other tests in this process move the counters
    // too, so also wait for this test's own sites to have been checked.
    let later = eventually("the counters to move", Duration::from_secs(20), || async {
        let (_, text) = get("/metrics").await;
        let moved = sum(&text, "website_monitor_checks_total{")
            > sum(&first, "website_monitor_checks_total{")
            && sum(&text, "website_monitor_records_produced_total")
                > sum(&first, "website_monitor_records_produced_total")
            && [&up, &down].iter().all(|u| {
                text.contains(&format!("website_monitor_site_up{{url=\"{u}\"}}"))
                    && text.contains(&format!(
                        "website_monitor_site_duration_seconds{{url=\"{u}\"}}"
                    ))
            });
        moved.then_some(text)
    })
    .await;
    stop.cancel();
    running.wait().await.unwrap();

    assert!(
        sum(
            &later,
            "website_monitor_checks_total{outcome=\"fail\",error_kind=\"status\"}"
        ) > 0.0,
        "{later}"
    );
    assert!(
        sum(
            &later,
            "website_monitor_checks_total{outcome=\"ok\",error_kind=\"none\"}"
        ) > 0.0,
        "{later}"
    );
    assert_eq!(
        sum(&later, &format!("website_monitor_site_up{{url=\"{up}\"}}")),
        1.0,
        "{later}"
    );
    assert_eq!(
        sum(
            &later,
            &format!("website_monitor_site_up{{url=\"{down}\"}}")
        ),
        0.0,
        "{later}"
    );
    assert!(
        sum(&later, "website_monitor_check_duration_seconds_count") > 0.0,
        "{later}"
    );
    assert!(
        sum(&later, "website_monitor_schedule_lateness_seconds_count") > 0.0,
        "{later}"
    );
    assert!(
        later.contains("website_monitor_checks_in_flight"),
        "{later}"
    );
    assert!(
        later.contains(&format!(
            "website_monitor_site_duration_seconds{{url=\"{up}\"}}"
        )),
        "{later}"
    );
}
