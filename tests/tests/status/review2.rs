//! The second hostile review of the site status (docs/status-review-2.md),
//! through the sink on the real stack: each test failed before its fix.

use std::time::Duration;

use website_monitor_tests::sink::{self, SinkTest};

use super::{
    check, feed, make_up, now, of, probe_fails, quiet_status, state, status_toml, transitions,
    wait_state,
};

/// Finding 4: checks dated more than the skew ahead of the sink all counted
/// at the sink's clock, so all but one of a batch were taken as repeats
/// ("late"): six failures in one batch made one. Each counts now, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_dated_ahead_of_the_sink_each_count_and_make_the_site_down() {
    let t = SinkTest::new("status_ahead", 1).await;
    let status = status_toml("unknown_after = 100\ndefault_interval = \"1s\"\n");
    let (running, token) = sink::start(&t.config().set("status", status)).await;
    let url = "http://ahead/";
    let ahead = now() + 3600.0;
    let mut total = 0;
    let oks: Vec<Vec<u8>> = (0..3)
        .map(|i| check(url, "p1", ahead + f64::from(i) * 1.5, true))
        .collect();
    feed(&t, &oks, &mut total).await;
    assert_eq!(state(&t, url).await.0, "up");
    let fails: Vec<Vec<u8>> = (3..9)
        .map(|i| check(url, "p1", ahead + f64::from(i) * 1.5, false))
        .collect();
    feed(&t, &fails, &mut total).await;
    wait_state(&t, url, "down").await;
    sink::stop(running, token).await;
    assert_eq!(
        of(&transitions(&t).await, url),
        [("unknown", "up"), ("up", "down")]
    );
    let fails = probe_fails(&t).await;
    assert_eq!(fails, 6, "every failure counted");
}

/// Finding 2: the sweep ran at the oldest `checked_at` of the records
/// waiting to be written, so one probe sending backdated records (a slow
/// clock, a backfill) kept every other site of its partition from going
/// `unknown`. A stopped probe goes unknown now while the backdated one
/// keeps sending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_sending_backdated_records_does_not_keep_a_stopped_one_from_going_unknown() {
    let t = SinkTest::new("status_backdated", 1).await;
    let status = status_toml("unknown_after = 3\ndefault_interval = \"1s\"\n");
    let (running, token) = sink::start(&t.config().set("status", status)).await;
    let (stop, skew) = ("http://stop/", "http://skew/");
    let mut total = 0;
    let start = now();
    let first: Vec<Vec<u8>> = (0..3)
        .flat_map(|i| {
            let at = start + f64::from(i) * 0.3;
            [
                check(stop, "p1", at, true),
                check(skew, "p1", at - 600.0, true),
            ]
        })
        .collect();
    feed(&t, &first, &mut total).await;
    wait_state(&t, stop, "up").await;
    // `stop` stops; `skew` goes on, one record a second dated 10 minutes back.
    let mut unknown_after = None;
    for i in 0..25 {
        let at = now() - 600.0;
        feed(&t, &[check(skew, "p1", at, true)], &mut total).await;
        if state(&t, stop).await.0 == "unknown" {
            unknown_after = Some(i);
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    sink::stop(running, token).await;
    assert!(
        unknown_after.is_some(),
        "the stopped probe stayed up while the backdated one kept sending"
    );
    assert_eq!(state(&t, skew).await.0, "up");
}

/// Finding 10: the sweep noticed an ad-hoc window only when one of its ends
/// fell after the previous sweep, so a row inserted "since 10 minutes ago"
/// reached a site without records only at its next `wake_at` (here, after
/// 1,000 s of silence). A row not seen before is new to every site now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_inserted_as_begun_in_the_past_reaches_a_quiet_site_at_the_next_sweep() {
    let t = SinkTest::new("status_past_window", 1).await;
    let status = quiet_status();
    let (running, token) = sink::start(&t.config().set("status", status)).await;
    let url = "http://quiet/";
    let mut total = 0;
    make_up(&t, url, &mut total).await;
    // Let a sweep pass, so the window's start is before the sweep's cursor.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let schema = &t.schema;
    t.db.execute(
        &format!(
            "INSERT INTO \"{schema}\".site_maintenance (url_pattern, starts_at, ends_at, reason)
             VALUES ('^http://quiet/$', now() - interval '10 minutes', now() + interval '1 hour', 'late entry')"
        ),
        &[],
    )
    .await
    .unwrap();
    wait_state(&t, url, "maintenance").await;
    sink::stop(running, token).await;
    assert_eq!(
        of(&transitions(&t).await, url),
        [("unknown", "up"), ("up", "maintenance")]
    );
}
