//! The third hostile review of the site status (docs/status-review-3.md),
//! through the sink on the real stack.

use std::time::Duration;

use website_monitor_tests::sink::{self, SinkTest};

use super::{check, feed, make_up, now, of, probe_fails, quiet_status, transitions, wait_state};

/// Findings 5 and 6: a window inserted right after a quiet site's record
/// (evaluated after the sweep's round began) was never entered; one whose
/// end was moved into the past, or deleted, was never left. Each reaches
/// the site at the next sweep now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_inserted_moved_or_deleted_reach_a_quiet_site_at_the_next_sweep() {
    let t = SinkTest::new("status_windows_live", 1).await;
    let status = quiet_status();
    let (running, token) = sink::start(&t.config().set("status", status)).await;
    let url = "http://calm/";
    let mut total = 0;
    // Let a first sweep pass, then a record, then the window at once.
    tokio::time::sleep(Duration::from_secs(6)).await;
    make_up(&t, url, &mut total).await;
    let schema = &t.schema;
    let sql = |q: &str| q.replace("{m}", &format!("\"{schema}\".site_maintenance"));
    t.db.execute(
        &sql("INSERT INTO {m} (url_pattern, starts_at, ends_at) VALUES ('^http://calm/$', now(), now() + interval '1 hour')"),
        &[],
    )
    .await
    .unwrap();
    wait_state(&t, url, "maintenance").await;
    // Its end moved into the past: left.
    t.db.execute(&sql("UPDATE {m} SET starts_at = now() - interval '1 minute', ends_at = now() - interval '30 seconds'"), &[])
        .await
        .unwrap();
    wait_state(&t, url, "up").await;
    // Another, deleted while it runs: left.
    t.db.execute(
        &sql("INSERT INTO {m} (url_pattern, starts_at, ends_at) VALUES ('^http://calm/$', now(), now() + interval '1 hour')"),
        &[],
    )
    .await
    .unwrap();
    wait_state(&t, url, "maintenance").await;
    t.db.execute(&sql("DELETE FROM {m}"), &[]).await.unwrap();
    wait_state(&t, url, "up").await;
    sink::stop(running, token).await;
    assert_eq!(
        of(&transitions(&t).await, url),
        [
            ("unknown", "up"),
            ("up", "maintenance"),
            ("maintenance", "up"),
            ("up", "maintenance"),
            ("maintenance", "up")
        ]
    );
}

/// Finding 4: a check dated ahead of the sink, delivered three times,
/// counted three times ("3 consecutive failures", down); the same copies
/// dated now were dropped as repeats. A repeat of one dated ahead is
/// dropped too, in the same batch or a later one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_dated_ahead_and_delivered_three_times_counts_once() {
    let t = SinkTest::new("status_ahead_repeat", 1).await;
    let status = quiet_status();
    let (running, token) = sink::start(&t.config().set("status", status)).await;
    let url = "http://twice/";
    let mut total = 0;
    make_up(&t, url, &mut total).await;
    let ahead = check(url, "p1", now() + 60.0, false);
    // Two copies in one batch, then one in a batch of its own (review 4,
    // finding 3: repeats in separate batches counted).
    feed(&t, &[ahead.clone(), ahead.clone()], &mut total).await;
    feed(&t, &[ahead], &mut total).await;
    sink::stop(running, token).await;
    let fails = probe_fails(&t).await;
    assert_eq!(fails, 1, "one failure, not three");
    assert_eq!(of(&transitions(&t).await, url), [("unknown", "up")]);
}

/// Review 4, finding 4: a window deleted while no sink ran left a quiet
/// site in `maintenance` (the sweep's memory of windows starts empty). The
/// first sweep of a sink looks at every site in maintenance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_deleted_while_the_sink_was_stopped_is_left_after_its_restart() {
    let t = SinkTest::new("status_window_offline", 1).await;
    let status = quiet_status();
    let config = t.config().set("status", status);
    let (running, token) = sink::start(&config).await;
    let url = "http://offline/";
    let mut total = 0;
    make_up(&t, url, &mut total).await;
    let m = format!("\"{}\".site_maintenance", t.schema);
    t.db.execute(
        &format!("INSERT INTO {m} (url_pattern, starts_at, ends_at) VALUES ('^http://offline/$', now(), now() + interval '1 hour')"),
        &[],
    )
    .await
    .unwrap();
    wait_state(&t, url, "maintenance").await;
    sink::stop(running, token).await;
    t.db.execute(&format!("DELETE FROM {m}"), &[])
        .await
        .unwrap();
    let (running, token) = sink::start(&config).await;
    wait_state(&t, url, "up").await;
    sink::stop(running, token).await;
}
