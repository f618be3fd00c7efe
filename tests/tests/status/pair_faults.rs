//! Through the pair, the faults of issue 14: a probe that stops reporting, a
//! maintenance window, a flapping site and a kill -9 of the sink in the
//! middle of an incident — three source processes (probes `ap`, `eu`, `us`,
//! 300 ms interval) against `/by-probe` of a test server, and the sink binary.

use website_monitor_tests::http::TestServer;
use website_monitor_tests::sink::SinkTest;
use website_monitor_tests::status::{
    checks_of, more_checks, probe_row, wait_probe, wait_published, Probes,
};
use website_monitor_tests::Proc;

use super::{of, state, status_toml, transitions, wait_state};

/// The sink binary on `[sink.status]` `status` (with `extra` top-level sink
/// keys), then a source process per probe on `/by-probe`; waits until the
/// site is `up`.
async fn start(
    t: &SinkTest,
    status: &str,
    extra: &[(&str, &str)],
) -> (Proc, String, TestServer, String, Probes) {
    let server = TestServer::http().await;
    let url = server.url("/by-probe");
    // The tables first: the test reads them while the sink starts.
    t.migrate().await;
    let mut config = t.config().set("status", status_toml(status));
    for (key, value) in extra {
        config = config.set(key, *value);
    }
    let config = config.text();
    let sink = Proc::spawn("sink", &config);
    let probes = Probes::start(&t.topic, &url, &["ap", "eu", "us"]);
    wait_state(t, &url, "up").await;
    (sink, config, server, url, probes)
}

/// Stops the sources, then the sink (each must exit 0).
fn stop(mut sink: Proc, mut probes: Probes) {
    probes.stop();
    assert_eq!(sink.term(), Some(0), "the sink stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_source_makes_its_probe_unknown_after_its_silence_not_down_and_back_when_restarted(
) {
    let t = SinkTest::new("status_pair_silent", 1).await;
    // One probe down would make the site down: a silent probe taken for a
    // down one would show. Silent after 5 intervals of the records' 300 ms.
    let status = "min_probes_down = 1\nmin_interval = \"100ms\"\nunknown_after = 5\n";
    let (sink, _, _server, url, mut probes) = start(&t, status, &[]).await;
    wait_probe(&t, &url, "ap", "up").await;
    probes.kill9("ap");
    let ap = wait_probe(&t, &url, "ap", "unknown").await;
    assert_eq!(ap.state, "unknown");
    assert_eq!(ap.interval_ms, Some(300), "the interval its records carry");
    let silence = ap.since_heard_ms.expect("a last check");
    assert!(
        (silence - 1500.0).abs() < 1.0,
        "unknown 5 × 300 ms after the sink last heard from it, not {silence} ms"
    );
    more_checks(&t, &url, "eu", 10).await;
    assert_eq!(
        state(&t, &url).await,
        ("up".into(), 2, 0, 1),
        "a stopped probe is unknown, not down; the site stays up"
    );
    // Started again: it votes again once its success threshold is met.
    probes.start_one("ap");
    wait_probe(&t, &url, "ap", "up").await;
    assert_eq!(state(&t, &url).await, ("up".into(), 3, 0, 0));
    more_checks(&t, &url, "ap", 3).await;
    stop(sink, probes);
    assert_eq!(
        of(&transitions(&t).await, &url),
        [("unknown", "up")],
        "a probe stopping and coming back is no incident"
    );
}

/// `ok`, `failed` and `maintenance` of `url` in `site_uptime` over the last hour.
async fn uptime(t: &SinkTest, url: &str) -> (i64, i64, i64) {
    let schema = &t.schema;
    let sql = format!(
        "SELECT ok, failed, maintenance FROM \"{schema}\".site_uptime($1,
                now() - interval '1 hour', now() + interval '1 minute')"
    );
    let r = t.db.query_one(&sql, &[&url]).await.unwrap();
    (r.get(0), r.get(1), r.get(2))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ad_hoc_window_keeps_two_failing_probes_from_a_down_and_their_failures_out_of_uptime() {
    let t = SinkTest::new("status_pair_window", 1).await;
    let (sink, _, server, url, probes) =
        start(&t, "min_probes_down = 2\nunknown_after = 1000\n", &[]).await;
    // A window over the url from now on, for an hour (the test ends it).
    let schema = &t.schema;
    t.db.execute(
        &format!(
            "INSERT INTO \"{schema}\".site_maintenance (url_pattern, starts_at, ends_at, reason)
             VALUES ($1, now(), now() + interval '1 hour', 'deploy')"
        ),
        &[&format!("^{}$", regex::escape(&url))],
    )
    .await
    .unwrap();
    wait_state(&t, &url, "maintenance").await;
    // Two of three probes fail: down by their checks, maintenance shown.
    server.fail_for("ap", true);
    server.fail_for("eu", true);
    wait_probe(&t, &url, "ap", "down").await;
    wait_probe(&t, &url, "eu", "down").await;
    more_checks(&t, &url, "eu", 5).await;
    let ap = probe_row(&t, &url, "ap").await.unwrap();
    assert_eq!(ap.state, "maintenance", "{ap:?}");
    assert_eq!(state(&t, &url).await.0, "maintenance");
    assert_eq!(
        of(&transitions(&t).await, &url),
        [("unknown", "up"), ("up", "maintenance")],
        "no down in a window"
    );
    let failed = t
        .count("site_check", &checks_of(&t, &url, "eu", "AND NOT ok"))
        .await
        + t.count("site_check", &checks_of(&t, &url, "ap", "AND NOT ok"))
            .await;
    assert!(failed >= 3 + 3 + 5, "ap's 3 and eu's 8 at least: {failed}");
    let (ok, failed_in_uptime, maintenance) = uptime(&t, &url).await;
    assert_eq!(
        failed_in_uptime, 0,
        "failures in the window are not in uptime"
    );
    assert!(
        maintenance >= failed,
        "they count under maintenance: {maintenance} < {failed}"
    );
    assert!(ok > 0);
    // Healthy again, then the window ends: up, never down.
    server.fail_for("ap", false);
    server.fail_for("eu", false);
    wait_probe(&t, &url, "ap", "up").await;
    wait_probe(&t, &url, "eu", "up").await;
    t.db.execute(
        &format!("UPDATE \"{schema}\".site_maintenance SET ends_at = now()"),
        &[],
    )
    .await
    .unwrap();
    wait_state(&t, &url, "up").await;
    more_checks(&t, &url, "ap", 5).await;
    stop(sink, probes);
    assert_eq!(
        of(&transitions(&t).await, &url),
        [
            ("unknown", "up"),
            ("up", "maintenance"),
            ("maintenance", "up")
        ],
        "no false down after the window"
    );
    assert_eq!(
        uptime(&t, &url).await.1,
        0,
        "nothing failed outside the window"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_seeing_fail_fail_ok_never_goes_down_and_shows_the_site_degraded_for_flapping() {
    let t = SinkTest::new("status_pair_flap", 1).await;
    // One probe down would make the site down: the thresholds must hold it.
    let (sink, _, server, url, probes) =
        start(&t, "min_probes_down = 1\nunknown_after = 1000\n", &[]).await;
    wait_probe(&t, &url, "eu", "up").await;
    server.fail_pattern_for("eu", &[true, true, false]);
    wait_state(&t, &url, "degraded").await;
    let eu = wait_probe(&t, &url, "eu", "degraded").await;
    assert_eq!(eu.state, "degraded");
    // Four more cycles: still degraded, never down.
    more_checks(&t, &url, "eu", 12).await;
    assert_eq!(state(&t, &url).await.0, "degraded");
    let failed = t
        .count("site_check", &checks_of(&t, &url, "eu", "AND NOT ok"))
        .await;
    // Two of every three of the 12 checks after `degraded`, and those before.
    assert!(failed >= 12, "eu saw {failed} failures");
    let schema = &t.schema;
    let reason: String =
        t.db.query_one(
            &format!("SELECT reason FROM \"{schema}\".site_transition WHERE to_state = 'degraded'"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(reason.contains("eu: flapping"), "{reason}");
    // Steady successes bring it back.
    server.fail_for("eu", false);
    wait_state(&t, &url, "up").await;
    stop(sink, probes);
    assert_eq!(
        of(&transitions(&t).await, &url),
        [("unknown", "up"), ("up", "degraded"), ("degraded", "up")],
        "thresholds hold back the down; flapping shows as degraded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_of_the_sink_in_the_middle_of_an_incident_leaves_one_down_and_one_up() {
    let t = SinkTest::new("status_pair_kill", 1).await;
    let topic = website_monitor_tests::stack::unique("status-pair-kill-transitions");
    website_monitor_tests::kafka::create_topic(&t.stack.brokers, &topic, 1).await;
    // A static member: the restarted sink takes its partition back at once.
    let status =
        format!("min_probes_down = 2\nunknown_after = 1000\ntransitions_topic = \"{topic}\"\n");
    let member = website_monitor_tests::stack::unique("status-pair-sink");
    let (mut sink, config, server, url, probes) =
        start(&t, &status, &[("group_instance_id", member.as_str())]).await;
    server.fail_for("eu", true);
    server.fail_for("us", true);
    wait_state(&t, &url, "down").await;
    // Mid-incident, with batches of failures coming every 300 ms.
    more_checks(&t, &url, "us", 3).await;
    sink.kill9();
    let sink = Proc::spawn("sink", &config);
    more_checks(&t, &url, "us", 10).await;
    assert_eq!(state(&t, &url).await.0, "down");
    server.fail_for("eu", false);
    server.fail_for("us", false);
    wait_state(&t, &url, "up").await;
    more_checks(&t, &url, "eu", 5).await;
    wait_published(&t).await;
    stop(sink, probes);
    let all = transitions(&t).await;
    assert_eq!(
        of(&all, &url),
        [("unknown", "up"), ("up", "down"), ("down", "up")],
        "exactly one transition each way across the kill: {all:?}"
    );
    assert!(all.iter().all(|t| t.4), "each names its record: {all:?}");
    super::assert_downstream_sees_each_transition(&t, &topic).await;
}
