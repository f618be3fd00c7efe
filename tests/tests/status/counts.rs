//! Rollups and the SQL API count the checks made during maintenance apart
//! (migration 0011), and the time per state comes from the transitions.

use super::{check, status_toml, transitions};
use website_monitor_tests::sink::{self, SinkTest};

fn wall() -> f64 {
    super::now()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_in_a_window_count_under_maintenance_uptime_stays_whole_and_state_time_adds_up() {
    let t = SinkTest::new("status_counts", 1).await;
    let (db, schema) = (&t.db, &t.schema);
    // A deployment of migration 10 with rollups already written ...
    t.migrate_up_to(10).await;
    let at0 = wall() - 300.0;
    db.batch_execute(&format!(
        "SET search_path = \"{schema}\";
         SELECT site_make_partitions('site_per_minute', to_timestamp({at0}), to_timestamp({at0}), '1 day');
         INSERT INTO site (url, data) VALUES ('http://old/', '{{}}');
         INSERT INTO site_per_minute (site_id, probe_id, bucket, checks, ok, failed, responses, duration_sum_us)
         SELECT id, 0, date_trunc('minute', to_timestamp({at0} - 120), 'UTC'), 3, 2, 1, 2, 2000 FROM site;"
    ))
    .await
    .unwrap();
    // ... and a least-privileged sink granted what those tables need.
    let role = t.least_privileged_role().await;
    t.migrate().await;
    // An ad-hoc window of 30 s over the url, before its records come.
    let url = "http://maint/";
    db.execute(
        &format!(
            "INSERT INTO \"{schema}\".site_maintenance (url_pattern, starts_at, ends_at, reason)
             VALUES ('^http://maint/', to_timestamp({at0}), to_timestamp({at0} + 30), 'restart')"
        ),
        &[],
    )
    .await
    .unwrap();
    // 3 successes before it, 5 failures in it, 2 successes after it.
    let mut recs = Vec::new();
    for (dt, ok) in [
        (-10.0, true),
        (-9.0, true),
        (-8.0, true),
        (1.0, false),
        (2.0, false),
        (3.0, false),
        (4.0, false),
        (5.0, false),
        (31.0, true),
        (32.0, true),
    ] {
        recs.push(check(url, "p1", at0 + dt, ok));
    }
    t.produce(&recs).await;
    let uri = website_monitor_tests::kv_uri(&t.stack.postgres_uri, Some(&role), None, None, None);
    let config = t
        .config()
        .set("postgres_uri", uri.as_str())
        .set("status", status_toml("unknown_after = 1000\n"));
    let (running, token) = sink::start(&config).await;
    t.wait_rows("site_check", 10).await;
    sink::stop(running, token).await;

    let as_sink = website_monitor_tests::pg(&uri).await;
    let range = format!("to_timestamp({at0} - 600), to_timestamp({at0} + 60)");
    let up = as_sink
        .query(
            &format!(
                "SELECT url, checks, ok, failed, uptime, maintenance
                 FROM \"{schema}\".site_uptime(NULL, {range}) ORDER BY url"
            ),
            &[],
        )
        .await
        .unwrap();
    let rows: Vec<(String, i64, i64, i64, f64, i64)> = up
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
        .collect();
    assert_eq!(
        rows,
        [
            (url.to_owned(), 10, 5, 0, 1.0, 5),
            ("http://old/".to_owned(), 3, 2, 1, 2.0 / 3.0, 0),
        ],
        "the failures in the window count under maintenance, not against uptime; rows from before the migration as they were"
    );
    let summary: f64 = as_sink
        .query_one(
            &format!("SELECT uptime FROM \"{schema}\".site_summary({range}) WHERE url = $1"),
            &[&url],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(summary, 1.0, "the summary's uptime leaves maintenance out");
    for level in ["minute", "hour", "day"] {
        let (m, f): (i64, i64) = as_sink
            .query_one(
                &format!(
                    "SELECT sum(maintenance)::int8, sum(failed)::int8 FROM \"{schema}\".site_fleet_per_{level}"
                ),
                &[],
            )
            .await
            .map(|r| (r.get(0), r.get(1)))
            .unwrap();
        assert_eq!(
            (m, f),
            (5, 0),
            "the fleet's {level} rollups count them apart"
        );
    }
    // The time per state adds up to the range; the window's 30 s (entered
    // by the first check in it, left by the first after it) are maintenance.
    let from = at0 - 20.0;
    let to = at0 + 60.0;
    let per_state = as_sink
        .query(
            &format!(
                "SELECT state, seconds FROM \"{schema}\".site_state_time($1,
                 to_timestamp({from}), to_timestamp({to})) ORDER BY state"
            ),
            &[&url],
        )
        .await
        .unwrap();
    let per_state: Vec<(String, f64)> = per_state.iter().map(|r| (r.get(0), r.get(1))).collect();
    let total: f64 = per_state.iter().map(|s| s.1).sum();
    assert!((total - (to - from)).abs() < 1e-6, "{per_state:?}");
    let secs = |s: &str| per_state.iter().find(|p| p.0 == s).map_or(0.0, |p| p.1);
    assert!((secs("maintenance") - 30.0).abs() < 1e-6, "{per_state:?}");
    // unknown until the second success, and between leaving the window
    // (latest check failed: unknown) and the second success after it.
    assert!(
        (secs("unknown") - (11.0 + 1.0)).abs() < 1e-6,
        "{per_state:?}"
    );
    let all = transitions(&t).await;
    assert_eq!(
        super::of(&all, url),
        [
            ("unknown", "up"),
            ("up", "maintenance"),
            ("maintenance", "unknown"),
            ("unknown", "up")
        ],
        "{all:?}"
    );
    drop(as_sink);
    t.drop_role(&role).await;
}
