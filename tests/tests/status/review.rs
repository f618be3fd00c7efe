//! The hostile review of the site status (docs/status-review.md), finding
//! by finding, through the sink on the real stack: each test failed before
//! its fix.

use std::time::{Duration, Instant};

use website_monitor_tests::sink::{self, SinkTest};
use website_monitor_tests::Proc;

use super::{check, feed, of, state, status_toml, transitions, wait_state};

/// The wall clock, seconds since the epoch.
fn wall() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Finding 1: one success dated a day ahead on one probe froze the site
/// (`up` through a total outage). It counts at the sink's clock now: the
/// failures after it make the site down, and no probe, site clock or
/// `wake_at` is left in the future.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_from_the_future_does_not_freeze_the_site() {
    let t = SinkTest::new("status_future", 1).await;
    let status = status_toml("unknown_after = 10\ndefault_interval = \"1s\"\n");
    let (running, token) = sink::start(&t.config().set("status", status)).await;
    let url = "http://fut/";
    let base = wall() - 1.0;
    let mut recs = Vec::new();
    for i in 0..4 {
        for p in ["p1", "p2"] {
            recs.push(check(url, p, base + f64::from(i) * 0.1, true));
        }
    }
    let mut total = 0;
    feed(&t, &recs, &mut total).await;
    assert_eq!(state(&t, url).await.0, "up");
    feed(&t, &[check(url, "p1", wall() + 86_000.0, true)], &mut total).await;
    let from = wall();
    let mut recs = Vec::new();
    for i in 0..8 {
        for p in ["p1", "p2"] {
            recs.push(check(url, p, from + f64::from(i) * 0.1, false));
        }
    }
    feed(&t, &recs, &mut total).await;
    wait_state(&t, url, "down").await;
    sink::stop(running, token).await;
    assert_eq!(
        of(&transitions(&t).await, url),
        [("unknown", "up"), ("up", "down")]
    );
    let schema = &t.schema;
    let ahead = "WHERE last_checked_at > now() + interval '2 seconds'";
    assert_eq!(
        t.count("site_probe_state", ahead).await,
        0,
        "no probe's newest check is in the future"
    );
    let status = format!(
        "SELECT count(*) FROM \"{schema}\".site_status
         WHERE evaluated_at > now() + interval '2 seconds' OR wake_at > now() + interval '1 hour'"
    );
    let n: i64 = t.db.query_one(&status, &[]).await.unwrap().get(0);
    assert_eq!(n, 0, "the site's clock and wake_at are not in the future");
}

/// Finding 2: a kill -9 in the middle of an incident, checks going on
/// (1 s interval, silent after 3 s): the restarted sink waits for the dead
/// member's session (6 s here) before it gets the partition, and must not
/// judge the probe silent meanwhile. Exactly one transition each way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_mid_incident_with_checks_going_on_splits_nothing() {
    let t = SinkTest::new("status_kill_live", 1).await;
    let mut options = toml::Table::new();
    options.insert("session.timeout.ms".into(), "6000".into());
    let status = status_toml("unknown_after = 3\ndefault_interval = \"1s\"\n");
    let config = t
        .config()
        .kafka("options", options)
        .set("status", status)
        .text();
    let url = "http://k/";
    let mut sink = Proc::spawn("sink", &config);
    // One check a second, dated now.
    let tick = |ok: bool| check(url, "p1", wall(), ok);
    for _ in 0..3 {
        t.produce(&[tick(true)]).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(40);
    while state_of(&t, url).await.as_deref() != Some("down") {
        assert!(Instant::now() < deadline, "never down:\n{}", sink.log());
        t.produce(&[tick(false)]).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    sink.kill9();
    for _ in 0..10 {
        t.produce(&[tick(false)]).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let mut sink = Proc::spawn("sink", &config);
    for _ in 0..10 {
        t.produce(&[tick(false)]).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(40);
    while state_of(&t, url).await.as_deref() != Some("up") {
        assert!(Instant::now() < deadline, "never up again:\n{}", sink.log());
        t.produce(&[tick(true)]).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(sink.term(), Some(0), "log:\n{}", sink.log());
    let all = transitions(&t).await;
    assert_eq!(
        of(&all, url),
        [("unknown", "up"), ("up", "down"), ("down", "up")],
        "one incident, one transition each way: {all:?}"
    );
}

/// The status row's state of `url`, if it has one.
async fn state_of(t: &SinkTest, url: &str) -> Option<String> {
    let schema = &t.schema;
    t.db.query_opt(
        &format!(
            "SELECT st.state FROM \"{schema}\".site_status st
             JOIN \"{schema}\".site s ON s.id = st.site_id WHERE s.url = $1"
        ),
        &[&url],
    )
    .await
    .unwrap()
    .map(|r| r.get(0))
}

/// Finding 6: a `url_pattern` that is not a regex is warned about and
/// counted once (not at every batch and sweep). Finding 3: a record late
/// for its probe is counted. Finding 8: deleting a site deletes its status
/// rows, transitions and windows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_window_is_counted_once_late_records_are_counted_and_a_deleted_site_takes_its_status_along(
) {
    let t = SinkTest::new("status_rows", 1).await;
    let status = status_toml("unknown_after = 100\n");
    let (running, token) = sink::start(&t.config().set("status", status)).await;
    let addr = running.metrics_addr.to_string();
    let url = "http://gone/";
    let at = wall() - 30.0;
    let mut total = 0;
    let first = [check(url, "p1", at, true), check(url, "p1", at + 0.1, true)];
    feed(&t, &first, &mut total).await;
    let schema = &t.schema;
    t.db.execute(
        &format!(
            "INSERT INTO \"{schema}\".site_maintenance (url_pattern, starts_at, ends_at)
             VALUES ('(', now(), now() + interval '1 hour')"
        ),
        &[],
    )
    .await
    .unwrap();
    // Several batches (and sweeps) read the bad row.
    for i in 1..=8 {
        let rec = check(url, "p1", at + f64::from(i), true);
        feed(&t, &[rec], &mut total).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // One record late for p1 (older than its newest).
    feed(&t, &[check(url, "p1", at + 0.5, false)], &mut total).await;
    let text = website_monitor_tests::metrics::scrape(&addr).await;
    let metric = |name: &str| website_monitor_tests::metrics::sum(&text, name);
    assert_eq!(
        metric("website_monitor_status_bad_windows_total"),
        1.0,
        "{text}"
    );
    assert!(metric("website_monitor_status_records_late_total") >= 1.0);
    sink::stop(running, token).await;

    t.db.execute(
        &format!(
            "INSERT INTO \"{schema}\".site_maintenance (site_id, starts_at, ends_at)
             SELECT id, now(), now() + interval '1 hour' FROM \"{schema}\".site WHERE url = $1"
        ),
        &[&url],
    )
    .await
    .unwrap();
    assert!(t.count("site_transition", "").await > 0);
    t.db.execute(
        &format!("DELETE FROM \"{schema}\".site WHERE url = $1"),
        &[&url],
    )
    .await
    .expect("a site with status rows can be deleted");
    for table in ["site_status", "site_probe_state", "site_transition"] {
        assert_eq!(t.count(table, "").await, 0, "{table} cascades");
    }
    assert_eq!(
        t.count("site_maintenance", "WHERE site_id IS NOT NULL")
            .await,
        0,
        "its windows too"
    );
}

/// Finding 4, through the sink: a site that is down, a window opened to fix
/// it, every check during and after it succeeds: it leaves the window `up`,
/// with no false `down`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_fixed_during_a_window_leaves_it_up() {
    let t = SinkTest::new("status_window", 1).await;
    let status = status_toml("unknown_after = 1000\n");
    let (running, token) = sink::start(&t.config().set("status", status)).await;
    let url = "http://m/";
    let at = wall() - 10.0;
    let mut recs = Vec::new();
    for i in 0..6 {
        recs.push(check(url, "p1", at + f64::from(i) * 0.1, i < 2));
    }
    let mut total = 0;
    feed(&t, &recs, &mut total).await;
    assert_eq!(state(&t, url).await.0, "down");
    let schema = &t.schema;
    t.db.execute(
        &format!(
            "INSERT INTO \"{schema}\".site_maintenance (site_id, starts_at, ends_at, reason)
             SELECT id, now(), now() + interval '6 seconds', 'fixing it'
             FROM \"{schema}\".site WHERE url = $1"
        ),
        &[&url],
    )
    .await
    .unwrap();
    for _ in 0..10 {
        feed(&t, &[check(url, "p1", wall(), true)], &mut total).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    wait_state(&t, url, "up").await;
    sink::stop(running, token).await;
    let all = transitions(&t).await;
    assert_eq!(
        of(&all, url),
        [
            ("unknown", "up"),
            ("up", "down"),
            ("down", "maintenance"),
            ("maintenance", "up")
        ],
        "{all:?}"
    );
}

/// Finding 7: fail-fail-ok repeated never met `failure_threshold`, so the
/// probe stayed `up`. Its last outcomes, kept in its row across batches
/// (`recent`), make it `degraded`, reason "flapping", once 10 of them (half
/// the window) hold half failures; no `down`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_fail_ok_repeated_shows_the_site_degraded_for_flapping_not_up() {
    let t = SinkTest::new("status_flapping", 1).await;
    let status = status_toml("unknown_after = 1000\n");
    // Batches of 4: the outcomes must survive from one batch to the next.
    let config = t.config().set("batch_size", 4).set("status", status);
    let (running, token) = sink::start(&config).await;
    let url = "http://flapping/";
    let at = wall() - 60.0;
    let mut recs = vec![check(url, "p1", at, true), check(url, "p1", at + 0.5, true)];
    for i in 0..30 {
        recs.push(check(url, "p1", at + 1.0 + f64::from(i) * 0.5, i % 3 == 2));
    }
    let mut total = 0;
    feed(&t, &recs, &mut total).await;
    sink::stop(running, token).await;
    assert_eq!(state(&t, url).await.0, "degraded");
    let all = transitions(&t).await;
    assert_eq!(
        of(&all, url),
        [("unknown", "up"), ("up", "degraded")],
        "{all:?}"
    );
    let schema = &t.schema;
    let r =
        t.db.query_one(
            &format!(
                "SELECT tr.reason, ps.recent_n, ps.health
                 FROM \"{schema}\".site_transition tr
                 JOIN \"{schema}\".site_probe_state ps ON ps.site_id = tr.site_id
                 WHERE tr.to_state = 'degraded'"
            ),
            &[],
        )
        .await
        .unwrap();
    let (reason, kept, health): (String, i16, String) = (r.get(0), r.get(1), r.get(2));
    assert!(
        reason.contains("p1: flapping, 6 of the last 10 checks failed"),
        "{reason}"
    );
    assert_eq!((kept, health.as_str()), (32, "degraded"));
}
