//! Exactly once across kill -9, restarts and consumer groups: static
//! membership, fencing, two sinks sharing the partitions. These run the real
//! `website-monitor-sink` binary.

use std::time::Duration;

use website_monitor_tests::postgres::rows_at_least;
use website_monitor_tests::sink::{numbered, SinkTest};
use website_monitor_tests::{
    count, eventually, free_port, scrape_until, unique, wait_rows, Proc, WAIT,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_then_restart_stores_each_record_exactly_once() {
    let t = SinkTest::new("sink_crash", 3).await;
    let (db, schema) = (&t.db, &t.schema);
    const N: usize = 30_000;
    let config = t.config().set("batch_size", 300).text();

    let mut sink = Proc::spawn("sink", &config);
    // Produce in chunks while the sink runs, and kill it once it is part way.
    let mut killed_at = None;
    for chunk in (0..N).collect::<Vec<_>>().chunks(2_000) {
        let recs: Vec<Vec<u8>> = chunk.iter().map(|&i| numbered(i, 700)).collect();
        t.produce(&recs).await;
        if killed_at.is_none() {
            let stored = rows_at_least(db, schema, "site_check", 1_000).await;
            sink.kill9();
            killed_at = Some(stored);
        }
    }
    let stored_at_kill = killed_at.unwrap();
    let after_kill = t.count("site_check", "").await;
    assert!(
        after_kill < N as i64,
        "the kill came mid-stream ({after_kill} of {N} stored)"
    );
    eprintln!("killed with {stored_at_kill} of {N} stored");

    let mut sink = Proc::spawn("sink", &config);
    t.wait_rows("site_check", N as i64).await;
    // Let anything redelivered arrive, then check nothing doubled.
    tokio::time::sleep(Duration::from_secs(2)).await;
    t.assert_exactly_once(N as i64).await;
    assert_eq!(t.count("site", "").await, 700);
    let newest: i64 = db
        .query_one(&format!("SELECT max((data->>'n')::int8) FROM \"{schema}\".site WHERE url = 'http://site-0/'"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        newest,
        ((N - 1) / 700 * 700) as i64,
        "site holds the newest check of each url"
    );
    assert_eq!(
        sink.term(),
        Some(0),
        "SIGTERM exits 0; log:\n{}",
        sink.log()
    );
}

/// Runs a sink with `config`, kills it with -9 once it stored 1,000 of the
/// first `n / 2` records, produces the rest while no sink runs, starts it
/// again and returns how long after its start it stored its first new record;
/// then checks every record is stored exactly once.
async fn resume_after_kill_9(t: &SinkTest, config: &str, n: usize) -> Duration {
    let (db, schema) = (&t.db, t.schema.as_str());
    let mut sink = Proc::spawn("sink", config);
    let first: Vec<Vec<u8>> = (0..n / 2).map(|i| numbered(i, 500)).collect();
    t.produce(&first).await;
    rows_at_least(db, schema, "site_check", 1_000).await;
    sink.kill9();
    // A COMMIT the dead process had already sent may still land.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let at_kill = count(db, schema, "site_check", "").await;
    let rest: Vec<Vec<u8>> = (n / 2..n).map(|i| numbered(i, 500)).collect();
    t.produce(&rest).await;
    assert_eq!(
        count(db, schema, "site_check", "").await,
        at_kill,
        "nothing is stored while no sink runs"
    );
    let started = std::time::Instant::now();
    let mut sink = Proc::spawn("sink", config);
    let resumed = eventually("the restarted sink to store new records", WAIT, || async {
        (count(db, schema, "site_check", "").await > at_kill).then(|| started.elapsed())
    })
    .await;
    eprintln!("killed with {at_kill} of {n} stored; the restarted sink stored new records {resumed:?} after its start");
    wait_rows(db, schema, "site_check", n as i64).await;
    // Let anything redelivered arrive, then check nothing doubled.
    tokio::time::sleep(Duration::from_secs(2)).await;
    t.assert_exactly_once(n as i64).await;
    assert_eq!(
        sink.term(),
        Some(0),
        "SIGTERM exits 0; log:\n{}",
        sink.log()
    );
    resumed
}

/// Static group membership (issue 11, part 4): a sink killed with -9 and
/// started again with the same `group_instance_id` takes its partitions back
/// at once, instead of after the dead member's session timeout (45 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_after_kill_9_with_its_group_instance_id_a_sink_resumes_within_5_s() {
    let t = SinkTest::new("sink_static", 3).await;
    let config = t
        .config()
        .set("batch_size", 300)
        .set("group_instance_id", unique("sink"))
        .text();
    let resumed = resume_after_kill_9(&t, &config, 20_000).await;
    assert!(
        resumed < Duration::from_secs(5),
        "the restarted sink stored new records only {resumed:?} after its start (dynamic membership waits ~45 s)"
    );
}

/// Two live sinks with one `group_instance_id`: the broker fences the older,
/// which stops with exit code 1 and says why; the newer stores everything,
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_sinks_with_one_group_instance_id_the_older_stops_with_a_clear_error() {
    let t = SinkTest::new("sink_fenced", 2).await;
    let id = unique("sink");
    let config = t.config().set("group_instance_id", id.as_str()).text();
    let mut older = Proc::spawn("sink", &config);
    let first: Vec<Vec<u8>> = (0..1_000).map(|i| numbered(i, 100)).collect();
    t.produce(&first).await;
    t.wait_rows("site_check", 1_000).await;

    let mut newer = Proc::spawn("sink", &config);
    let mut code = None;
    for _ in 0..600 {
        code = older.exited();
        if code.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = older.log();
    assert_eq!(
        code,
        Some(Some(1)),
        "the fenced sink exits 1 within 60 s; log:\n{log}"
    );
    assert!(
        log.contains("fenced") && log.contains(&id) && log.contains("group_instance_id"),
        "the fenced sink says why, naming the id; log:\n{log}"
    );
    let second: Vec<Vec<u8>> = (1_000..2_000).map(|i| numbered(i, 100)).collect();
    t.produce(&second).await;
    t.wait_rows("site_check", 2_000).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    t.assert_exactly_once(2_000).await;
    assert_eq!(newer.term(), Some(0), "log:\n{}", newer.log());
}

/// A static member that stops cleanly leaves the group (it does not keep its
/// partitions for session.timeout.ms): another sink of the group stores the
/// records that come after within seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_member_stopped_with_sigterm_hands_its_partitions_over_at_once() {
    let t = SinkTest::new("sink_static_term", 2).await;
    let config = t.config();
    let member = |id: String| config.clone().set("group_instance_id", id).text();
    let mut first = Proc::spawn("sink", &member(unique("a")));
    let mut second = Proc::spawn("sink", &member(unique("b")));
    let records: Vec<Vec<u8>> = (0..1_000).map(|i| numbered(i, 100)).collect();
    t.produce(&records).await;
    t.wait_rows("site_check", 1_000).await;
    assert_eq!(first.term(), Some(0), "log:\n{}", first.log());
    let stopped = std::time::Instant::now();
    let records: Vec<Vec<u8>> = (1_000..2_000).map(|i| numbered(i, 100)).collect();
    t.produce(&records).await;
    t.wait_rows("site_check", 2_000).await;
    let took = stopped.elapsed();
    eprintln!("every record stored {took:?} after the first sink stopped");
    assert!(
        took < Duration::from_secs(15),
        "the remaining sink took the partitions over only after {took:?} (session.timeout.ms is 45 s); its log:\n{}",
        second.log()
    );
    t.assert_exactly_once(2_000).await;
    assert_eq!(second.term(), Some(0), "log:\n{}", second.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sinks_in_one_group_store_every_record_exactly_once() {
    let t = SinkTest::new("sink_group", 6).await;
    const N: usize = 12_000;
    let group = unique("sink-shared-group");
    let port_a = free_port();
    let port_b = free_port();
    let cfg = |port: u16| {
        t.config()
            .set("group_id", group.as_str())
            .set("batch_size", 200)
            .set("metrics_address", format!("127.0.0.1:{port}"))
            .text()
    };
    let mut a = Proc::spawn("sink", &cfg(port_a));
    let mut b = Proc::spawn("sink", &cfg(port_b));
    // Produce only once both are members, so both get partitions with records.
    let assigned = |p: &Proc| {
        p.log()
            .lines()
            .any(|l| l.contains("partitions assigned") && !l.trim_end().ends_with("[]"))
    };
    let joined = tokio::time::timeout(WAIT, async {
        while !(assigned(&a) && assigned(&b)) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        joined.is_ok(),
        "both sinks get partitions; logs:\n{}\n---\n{}",
        a.log(),
        b.log()
    );
    let half: Vec<Vec<u8>> = (0..N / 2).map(|i| numbered(i, 300)).collect();
    t.produce(&half).await;
    // Both must have taken partitions and written rows.
    for (name, port, proc) in [("a", port_a, &a), ("b", port_b, &b)] {
        let wrote = scrape_until(&format!("127.0.0.1:{port}"), WAIT, |m| {
            m.lines().any(|l| {
                l.starts_with("website_monitor_rows_written_total{table=\"site_check\"}")
                    && !l.ends_with(" 0")
            })
        })
        .await;
        assert!(
            wrote.is_ok(),
            "sink {name} wrote no rows within {WAIT:?}; log:\n{}",
            proc.log()
        );
    }
    // One member leaves mid-stream: the other takes its partitions over.
    let rest: Vec<Vec<u8>> = (N / 2..N).map(|i| numbered(i, 300)).collect();
    let producing = t.produce(&rest);
    let stopping = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        tokio::task::block_in_place(|| a.term())
    };
    let (_, code) = tokio::join!(producing, stopping);
    assert_eq!(
        code,
        Some(0),
        "sink a exits 0 on SIGTERM; log:\n{}",
        a.log()
    );
    t.wait_rows("site_check", N as i64).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    t.assert_exactly_once(N as i64).await;
    assert_eq!(t.count("site", "").await, 300);
    assert_eq!(b.term(), Some(0), "log:\n{}", b.log());
}
