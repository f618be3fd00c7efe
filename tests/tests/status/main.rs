//! Site status and incidents (issue 14), through the sink against the real
//! stack: quorum across probes, thresholds holding back a flapping site,
//! and exactly one transition each way across a kill -9; the review's
//! findings in [`review`]; through the source and sink binaries in [`pair`]
//! (quorum) and [`pair_faults`] (a stopped probe, a window, flapping, a
//! kill -9 of the sink).

mod counts;
mod outbox;
mod pair;
mod pair_faults;
mod review;
mod review2;
mod review3;

use serde_json::json;
use website_monitor_tests::kafka::json_rec;
use website_monitor_tests::sink::{self, SinkTest};

pub(crate) fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        .floor()
}

pub(crate) fn check(url: &str, probe: &str, at: f64, ok: bool) -> Vec<u8> {
    json_rec(json!({
        "url": url, "checked_at": at, "ok": ok,
        "status_code": if ok { json!(200) } else { json!(null) },
        "duration": 0.05,
        "error": if ok { json!(null) } else { json!({"kind": "timeout", "message": "no answer in 5s"}) },
        "probe": probe, "schema_version": 1
    }))
}

/// `[sink.status]` for the tests: two probes make a site down (one for the
/// `flap` sites), and probes fall silent only after 100 minutes, so the
/// sweep (wall clock) never touches records of a minute ago.
fn status_table(min_probes_down_for: &str) -> toml::Value {
    let text = format!(
        "min_probes_down = 2\n\
         unknown_after = 100\n\
         [[rules]]\n\
         urls = '{min_probes_down_for}'\n\
         min_probes_down = 1\n"
    );
    toml::Value::Table(text.parse().expect("a status table"))
}

/// `[sink.status]` from TOML text.
pub(crate) fn status_toml(text: &str) -> toml::Value {
    toml::Value::Table(text.parse().expect("a status table"))
}

/// `[sink.status]` for quiet sites: a probe is silent only after 1,000 of
/// its intervals, and records without `interval` are checked every second.
pub(crate) fn quiet_status() -> toml::Value {
    status_toml("unknown_after = 1000\ndefault_interval = \"1s\"\n")
}

/// Makes `url` `up`: three successes of probe p1 from now, 0.2 s apart,
/// written (`total` counts the history rows) and the site seen `up`.
pub(crate) async fn make_up(t: &SinkTest, url: &str, total: &mut i64) {
    let at = now();
    let oks: Vec<Vec<u8>> = (0..3)
        .map(|i| check(url, "p1", at + f64::from(i) * 0.2, true))
        .collect();
    feed(t, &oks, total).await;
    wait_state(t, url, "up").await;
}

/// The consecutive failures of the schema's only probe row.
pub(crate) async fn probe_fails(t: &SinkTest) -> i32 {
    let schema = &t.schema;
    t.db.query_one(
        &format!("SELECT fails FROM \"{schema}\".site_probe_state"),
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

/// Waits until `url`'s status row says `state`.
pub(crate) async fn wait_state(t: &SinkTest, url: &str, want: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
    loop {
        let schema = &t.schema;
        let r =
            t.db.query_opt(
                &format!(
                    "SELECT st.state FROM \"{schema}\".site_status st
                     JOIN \"{schema}\".site s ON s.id = st.site_id WHERE s.url = $1"
                ),
                &[&url],
            )
            .await
            .unwrap();
        let now: Option<String> = r.map(|r| r.get(0));
        if now.as_deref() == Some(want) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{url} is {now:?}, never {want}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// `(site url, from, to, seq, partition set)` of every transition, in (url, seq) order.
pub(crate) async fn transitions(t: &SinkTest) -> Vec<(String, String, String, i64, bool)> {
    let schema = &t.schema;
    let rows =
        t.db.query(
            &format!(
                "SELECT s.url, tr.from_state, tr.to_state, tr.seq, tr.\"partition\" IS NOT NULL
                 FROM \"{schema}\".site_transition tr JOIN \"{schema}\".site s ON s.id = tr.site_id
                 ORDER BY s.url, tr.seq"
            ),
            &[],
        )
        .await
        .unwrap();
    rows.iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect()
}

pub(crate) fn of<'a>(
    all: &'a [(String, String, String, i64, bool)],
    url: &str,
) -> Vec<(&'a str, &'a str)> {
    all.iter()
        .filter(|t| t.0 == url)
        .map(|t| (t.1.as_str(), t.2.as_str()))
        .collect()
}

/// Consumes the transitions topic as a downstream stage would: de-duplicated
/// on `id`, it holds exactly the table's transitions, keyed by site id, in
/// `seq` order per site.
async fn assert_downstream_sees_each_transition(t: &SinkTest, topic: &str) {
    use std::collections::BTreeMap;
    let got = website_monitor_tests::kafka::consume_all(
        &t.stack.brokers,
        topic,
        std::time::Duration::from_secs(3),
        std::time::Duration::from_secs(30),
    )
    .await;
    let mut seen: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    let mut last_seq: BTreeMap<i64, i64> = BTreeMap::new();
    for m in &got {
        let v = m.json();
        let site = v["site_id"].as_i64().unwrap();
        assert_eq!(
            m.key.as_deref(),
            Some(site.to_string().as_bytes()),
            "keyed by site id"
        );
        let seq = v["seq"].as_i64().unwrap();
        let before = last_seq.insert(site, seq).unwrap_or(0);
        assert!(
            seq > before || seen.contains_key(v["id"].as_str().unwrap()),
            "in order per site"
        );
        seen.insert(v["id"].as_str().unwrap().to_owned(), v);
    }
    let schema = &t.schema;
    let rows =
        t.db.query(
            &format!("SELECT id, from_state, to_state, reason FROM \"{schema}\".site_transition"),
            &[],
        )
        .await
        .unwrap();
    let mut table: Vec<(String, String, String, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    table.sort();
    let topic_view: Vec<(String, String, String, String)> = seen
        .iter()
        .map(|(id, v)| {
            let s = |k: &str| v[k].as_str().unwrap().to_owned();
            (id.clone(), s("from"), s("to"), s("reason"))
        })
        .collect();
    assert_eq!(
        topic_view, table,
        "the topic, de-duplicated on id, is the table"
    );
}

/// The status row of `url`: state, probes up, down, unknown.
pub(crate) async fn state(t: &SinkTest, url: &str) -> (String, i32, i32, i32) {
    let schema = &t.schema;
    let r =
        t.db.query_one(
            &format!(
                "SELECT st.state, st.probes_up, st.probes_down, st.probes_unknown
                 FROM \"{schema}\".site_status st JOIN \"{schema}\".site s ON s.id = st.site_id
                 WHERE s.url = $1"
            ),
            &[&url],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1), r.get(2), r.get(3))
}

/// Produces `recs` and waits until the history holds `total` rows (the
/// status is written in the same transactions).
pub(crate) async fn feed(t: &SinkTest, recs: &[Vec<u8>], total: &mut i64) {
    t.produce(recs).await;
    *total += recs.len() as i64;
    t.wait_rows("site_check", *total).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_of_three_probes_make_a_site_down_once_and_thresholds_hold_back_a_flapping_site() {
    let t = SinkTest::new("status_quorum", 2).await;
    let topic = website_monitor_tests::stack::unique("status-transitions");
    website_monitor_tests::kafka::create_topic(&t.stack.brokers, &topic, 2).await;
    let mut status = status_table("^http://flap/");
    status
        .as_table_mut()
        .unwrap()
        .insert("transitions_topic".into(), topic.clone().into());
    let config = t.config().set("batch_size", 4).set("status", status);
    let (running, token) = sink::start(&config).await;
    let at = now() - 60.0;
    let site = "http://quorum/";
    let probes = ["ap", "eu", "us"];
    let mut recs = Vec::new();
    let mut clock = at;
    let mut step = |recs: &mut Vec<Vec<u8>>, probe: &str, ok: bool| {
        clock += 0.1;
        recs.push(check(site, probe, clock, ok));
    };
    // Everyone fine twice: up.
    for _ in 0..2 {
        for p in probes {
            step(&mut recs, p, true);
        }
    }
    // eu fails four times: eu down, the site stays up (1 of 3 < 2).
    for _ in 0..4 {
        step(&mut recs, "ap", true);
        step(&mut recs, "eu", false);
        step(&mut recs, "us", true);
    }
    let mut total = 0;
    feed(&t, &recs, &mut total).await;
    assert_eq!(
        state(&t, site).await,
        ("up".into(), 2, 1, 0),
        "eu down, ap and us up"
    );
    assert_eq!(
        of(&transitions(&t).await, site),
        [("unknown", "up")],
        "one probe failing is no incident"
    );

    // us fails too: down, once; more failures change nothing.
    let mut recs = Vec::new();
    for _ in 0..5 {
        step(&mut recs, "ap", true);
        step(&mut recs, "eu", false);
        step(&mut recs, "us", false);
    }
    feed(&t, &recs, &mut total).await;
    assert_eq!(state(&t, site).await, ("down".into(), 1, 2, 0));
    // Recovery: eu and us succeed twice (and once more).
    let mut recs = Vec::new();
    for _ in 0..3 {
        for p in probes {
            step(&mut recs, p, true);
        }
    }
    feed(&t, &recs, &mut total).await;
    assert_eq!(state(&t, site).await, ("up".into(), 3, 0, 0));

    // The flapping site (one probe decides, by its rule): never three
    // failures in a row, so never down but degraded once half the flap
    // window shows it flapping; then three in a row, then never two
    // successes: held at degraded while it flaps (no up-down storm).
    let flap = "http://flap/";
    let mut f = at;
    let mut recs = Vec::new();
    for ok in [
        true, true, false, false, true, false, false, true, false, true, false, false, true,
    ] {
        f += 0.1;
        recs.push(check(flap, "p1", f, ok));
    }
    for ok in [false, false, false, true, false, true, false, true, false] {
        f += 0.1;
        recs.push(check(flap, "p1", f, ok));
    }
    feed(&t, &recs, &mut total).await;
    assert_eq!(state(&t, flap).await, ("degraded".into(), 0, 0, 0));
    // The transitions topic catches up within a few seconds.
    for _ in 0..100 {
        if t.count("site_transition", "WHERE published_at IS NULL")
            .await
            == 0
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    sink::stop(running, token).await;

    let all = transitions(&t).await;
    assert_eq!(
        of(&all, site),
        [("unknown", "up"), ("up", "down"), ("down", "up")],
        "exactly one transition each way: {all:?}"
    );
    assert_downstream_sees_each_transition(&t, &topic).await;
    assert_eq!(
        of(&all, flap),
        [("unknown", "up"), ("up", "degraded")],
        "thresholds hold back the flapping: {all:?}"
    );
    assert!(all.iter().all(|t| t.4), "each names its record: {all:?}");
    let schema = &t.schema;
    let down = format!(
        "SELECT tr.reason, tr.probes FROM \"{schema}\".site_transition tr
         JOIN \"{schema}\".site s ON s.id = tr.site_id WHERE s.url = $1 AND tr.to_state = 'down'"
    );
    let r = t.db.query_one(&down, &[&site]).await.unwrap();
    let reason: String = r.get(0);
    assert!(reason.starts_with("2 of 3 voting probes down"), "{reason}");
    let probes: serde_json::Value = r.get(1);
    assert_eq!(probes, json!({"ap": "up", "eu": "down", "us": "down"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_kill_9_in_the_middle_of_incidents_each_site_has_exactly_one_transition_each_way() {
    let t = SinkTest::new("status_kill", 3).await;
    let (db, schema) = (&t.db, &t.schema);
    const SITES: usize = 40;
    const ROUNDS: usize = 30;
    let topic = website_monitor_tests::stack::unique("status-kill-transitions");
    website_monitor_tests::kafka::create_topic(&t.stack.brokers, &topic, 3).await;
    let mut status = status_table("^http://k");
    status
        .as_table_mut()
        .unwrap()
        .insert("transitions_topic".into(), topic.clone().into());
    let config = t
        .config()
        .set("batch_size", 20)
        .set("status", status)
        .text();
    let at = now() - 60.0;
    let mut sink = website_monitor_tests::Proc::spawn("sink", &config);
    // Per site and round: 5 successes (up), 10 failures (down), 15
    // successes (up again): three transitions, in rounds across the sites.
    let mut killed = false;
    for round in 0..ROUNDS {
        let recs: Vec<Vec<u8>> = (0..SITES)
            .map(|s| {
                let ok = !(5..15).contains(&round);
                check(
                    &format!("http://k{s}/"),
                    "p1",
                    at + round as f64 + s as f64 * 0.001,
                    ok,
                )
            })
            .collect();
        t.produce(&recs).await;
        if !killed && round == 12 {
            website_monitor_tests::postgres::rows_at_least(db, schema, "site_check", 200).await;
            sink.kill9();
            killed = true;
        }
    }
    let n = (SITES * ROUNDS) as i64;
    assert!(
        t.count("site_check", "").await < n,
        "the kill came mid-stream"
    );
    let mut sink = website_monitor_tests::Proc::spawn("sink", &config);
    t.wait_rows("site_check", n).await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(t.count("site_check", "").await, n, "each check stored once");
    let all = transitions(&t).await;
    for s in 0..SITES {
        let url = format!("http://k{s}/");
        assert_eq!(
            of(&all, &url),
            [("unknown", "up"), ("up", "down"), ("down", "up")],
            "{url}: {all:?}"
        );
    }
    assert_eq!(
        t.count("site_transition", "").await,
        (SITES * 3) as i64,
        "three transitions per site, nothing more"
    );
    assert_eq!(
        t.count("site_transition", "WHERE seq > 3 OR \"partition\" IS NULL")
            .await,
        0,
        "ids 1 to 3 per site, each caused by a record"
    );
    for _ in 0..100 {
        if t.count("site_transition", "WHERE published_at IS NULL")
            .await
            == 0
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        sink.term(),
        Some(0),
        "SIGTERM exits 0; log:\n{}",
        sink.log()
    );
    assert_downstream_sees_each_transition(&t, &topic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_probe_is_unknown_not_down_and_the_sweep_enters_and_leaves_an_ad_hoc_window() {
    let t = SinkTest::new("status_sweep", 1).await;
    // `silent`: checked every second, silent after 4 s; `maint`: one probe
    // decides, never silent.
    let status = status_toml(
        "min_probes_down = 2\n\
         [[rules]]\n\
         urls = '^http://silent/'\n\
         default_interval = \"1s\"\n\
         unknown_after = 4\n\
         [[rules]]\n\
         urls = '^http://maint/'\n\
         min_probes_down = 1\n\
         unknown_after = 1000\n",
    );
    let (running, token) = sink::start(&t.config().set("status", status)).await;
    let (silent, maint) = ("http://silent/", "http://maint/");
    let wall = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    // maint first: the sink's first batch (partitions made, statements
    // prepared) is slow on a loaded machine, and must not make a silence.
    let mut total = 0;
    let at = wall();
    let recs = [
        check(maint, "p1", at, true),
        check(maint, "p1", at + 0.1, true),
    ];
    feed(&t, &recs, &mut total).await;
    let mut recs = Vec::new();
    for i in 0..2 {
        let at = wall() + f64::from(i) * 0.1;
        for p in ["ap", "eu", "us"] {
            recs.push(check(silent, p, at, true));
        }
    }
    feed(&t, &recs, &mut total).await;
    assert_eq!(state(&t, silent).await.0, "up");
    // ap stops; eu and us go on for 6 s or more: ap unknown, the site still up.
    for _ in 0..12 {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let at = wall();
        let recs = [check(silent, "eu", at, true), check(silent, "us", at, true)];
        feed(&t, &recs, &mut total).await;
    }
    assert_eq!(
        state(&t, silent).await,
        ("up".into(), 2, 0, 1),
        "a silent probe is unknown, not down"
    );
    // Everyone stops: the sweep (wall clock) finds no voting probe.
    wait_state(&t, silent, "unknown").await;
    assert_eq!(state(&t, silent).await, ("unknown".into(), 0, 0, 3));

    // An ad-hoc window inserted after the site's wake_at was computed.
    let schema = &t.schema;
    t.db.execute(
        &format!(
            "INSERT INTO \"{schema}\".site_maintenance (site_id, starts_at, ends_at, reason)
             SELECT id, now() + interval '1 second', now() + interval '12 seconds', 'db upgrade'
             FROM \"{schema}\".site WHERE url = $1"
        ),
        &[&maint],
    )
    .await
    .unwrap();
    wait_state(&t, maint, "maintenance").await;
    wait_state(&t, maint, "up").await;
    sink::stop(running, token).await;

    let all = transitions(&t).await;
    assert_eq!(
        of(&all, silent),
        [("unknown", "up"), ("up", "unknown")],
        "{all:?}"
    );
    assert_eq!(
        of(&all, maint),
        [
            ("unknown", "up"),
            ("up", "maintenance"),
            ("maintenance", "up")
        ],
        "{all:?}"
    );
    let by_sweep = t
        .count("site_transition", "WHERE \"partition\" IS NULL")
        .await;
    assert_eq!(by_sweep, 3, "the sweep made the last three: {all:?}");
    let reason: String =
        t.db.query_one(
            &format!(
                "SELECT reason FROM \"{schema}\".site_transition WHERE to_state = 'maintenance'"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(reason.contains("db upgrade"), "{reason}");
}
