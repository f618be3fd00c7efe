//! Through the pair: three real source processes (probes `ap`, `eu`, `us`)
//! check one url of a test server that fails for the probes the test names,
//! and the real sink binary decides the site's status.

use std::time::Duration;

use website_monitor_tests::http::TestServer;
use website_monitor_tests::sink::SinkTest;
use website_monitor_tests::status::{more_checks, wait_probe, wait_published, Probes};
use website_monitor_tests::Proc;

use super::{assert_downstream_sees_each_transition, of, status_toml, transitions, wait_state};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_source_processes_one_failing_probe_is_no_down_two_are_one_down() {
    let t = SinkTest::new("status_pair", 1).await;
    let topic = website_monitor_tests::stack::unique("status-pair-transitions");
    website_monitor_tests::kafka::create_topic(&t.stack.brokers, &topic, 1).await;
    let server = TestServer::http().await;
    let url = server.url("/by-probe");
    let mut status = status_toml("min_probes_down = 2\nunknown_after = 1000\n");
    status
        .as_table_mut()
        .unwrap()
        .insert("transitions_topic".into(), topic.clone().into());
    // The tables first: the test reads them while the sink starts.
    t.migrate().await;
    let mut sink = Proc::spawn("sink", &t.config().set("status", status).text());
    let mut probes = Probes::start(&t.topic, &url, &["ap", "eu", "us"]);

    wait_state(&t, &url, "up").await;
    // eu sees failures: eu says down, the site stays up.
    server.fail_for("eu", true);
    wait_probe(&t, &url, "eu", "down").await;
    more_checks(&t, &url, "ap", 5).await;
    assert_eq!(
        of(&transitions(&t).await, &url),
        [("unknown", "up")],
        "one probe failing is no down"
    );
    // us too: down, exactly once, however long it lasts.
    server.fail_for("us", true);
    wait_state(&t, &url, "down").await;
    more_checks(&t, &url, "us", 10).await;
    assert_eq!(
        of(&transitions(&t).await, &url),
        [("unknown", "up"), ("up", "down")],
        "two probes failing: one down"
    );
    // Both recover: up, once.
    server.fail_for("eu", false);
    server.fail_for("us", false);
    wait_state(&t, &url, "up").await;
    more_checks(&t, &url, "eu", 5).await;
    probes.stop();
    // Let the sink publish the last transitions, then stop it.
    wait_published(&t).await;
    assert_eq!(sink.term(), Some(0), "the sink stops cleanly");
    let all = transitions(&t).await;
    assert_eq!(
        of(&all, &url),
        [("unknown", "up"), ("up", "down"), ("down", "up")],
        "{all:?}"
    );
    assert_downstream_sees_each_transition(&t, &topic).await;
    let schema = &t.schema;
    let reason: String =
        t.db.query_one(
            &format!("SELECT reason FROM \"{schema}\".site_transition WHERE to_state = 'down'"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(reason.starts_with("2 of 3 voting probes down"), "{reason}");
    assert!(
        reason.contains("eu: ") && reason.contains("us: "),
        "{reason}"
    );
}

/// `[sink.status] per_site_gauge`: off by default (no per-site series); on,
/// `/metrics` shows each site's state, 1 for the state it is in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_site_state_gauge_is_off_by_default_shows_each_sites_state_when_on_and_drops_a_deleted_site(
) {
    use website_monitor_tests::{free_port, scrape_until};
    let t = SinkTest::new("status_gauge", 1).await;
    t.migrate().await;
    let at = super::now() - 30.0;
    let mut recs = Vec::new();
    for i in 0..3 {
        let dt = f64::from(i) * 0.1;
        recs.push(super::check("http://fine/", "p1", at + dt, true));
        recs.push(super::check("http://broken/", "p1", at + dt, false));
    }
    t.produce(&recs).await;
    let run = |on: bool| {
        let addr = format!("127.0.0.1:{}", free_port());
        let status = status_toml(&format!("unknown_after = 1000\nper_site_gauge = {on}\n"));
        let config = t
            .config()
            .set("metrics_address", addr.as_str())
            .set("status", status);
        (Proc::spawn("sink", &config.text()), addr)
    };
    let (mut off, addr) = run(false);
    t.wait_rows("site_check", 6).await;
    // The batch is committed: the next scrape has its counters; no per-site gauge.
    let text = scrape_until(&addr, Duration::from_secs(30), |m| {
        m.contains("website_monitor_status_transitions_total")
    })
    .await
    .expect("the sink's metrics");
    assert!(!text.contains("website_monitor_site_state"), "{text}");
    assert_eq!(off.term(), Some(0));

    let (mut on, addr) = run(true);
    let want = [
        r#"website_monitor_site_state{url="http://broken/",state="down"} 1"#,
        r#"website_monitor_site_state{url="http://broken/",state="up"} 0"#,
        r#"website_monitor_site_state{url="http://fine/",state="up"} 1"#,
        r#"website_monitor_site_state{url="http://fine/",state="down"} 0"#,
    ];
    let seen = scrape_until(&addr, Duration::from_secs(30), |m| {
        want.iter().all(|w| m.lines().any(|l| l == *w))
    })
    .await;
    if let Err(m) = seen {
        on.term();
        panic!("no per-site state for every site: {m}");
    }
    // A deleted site drops out (review 2, finding 7).
    let schema = &t.schema;
    t.db.execute(
        &format!("DELETE FROM \"{schema}\".site WHERE url = 'http://broken/'"),
        &[],
    )
    .await
    .unwrap();
    let gone = scrape_until(&addr, Duration::from_secs(30), |m| {
        !m.contains("http://broken/") && m.lines().any(|l| l == want[2])
    })
    .await;
    assert_eq!(on.term(), Some(0));
    if let Err(m) = gone {
        panic!("the deleted site's gauge stayed: {m}");
    }
}
