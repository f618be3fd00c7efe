//! The records in Kafka (key, timestamp, every field) and on stdout;
//! scheduling (about one check per interval, never two in flight), the
//! check threads and shards.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;
use website_monitor_source::record::{ErrorKind, Record};
use website_monitor_tests::http::TestServer;
use website_monitor_tests::source::{
    self, consume, final_counts, kind, offline_config, records, run_once, source_config,
    stdout_records,
};
use website_monitor_tests::{create_topic, eventually, sigterm, stack, unique, Consumed, Site};

use crate::{source_bin, spawn_source};

#[tokio::test]
async fn records_in_kafka_have_key_timestamp_and_every_field() {
    let s = TestServer::http().await;
    let topic = unique("src-record");
    let config = source_config(&topic).sites([
        Site::new(s.url_by_name("/")),
        Site::new("http://no-such-host.invalid/").set("interval", "7s"),
    ]);
    run_once(&topic, &config).await;
    let consumed = consume(&topic).await;
    assert_eq!(consumed.len(), 2);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    for c in &consumed {
        let v = c.json();
        let obj = v.as_object().expect("an object");
        for field in [
            "url",
            "checked_at",
            "status_code",
            "duration",
            "re_check",
            "ok",
            "error",
            "timings",
            "http_version",
            "response_bytes",
            "redirects",
            "ip",
            "tls",
            "probe",
            "interval",
            "schema_version",
        ] {
            assert!(obj.contains_key(field), "{field} missing in {v}");
        }
        for phase in ["dns", "connect", "tls", "ttfb", "transfer"] {
            assert!(
                v["timings"].get(phase).is_some(),
                "timings.{phase} missing in {v}"
            );
        }
        // Key = url; timestamp = check start in ms; seed units: epoch seconds, seconds.
        assert_eq!(c.key.as_deref(), v["url"].as_str().map(str::as_bytes));
        let checked_at = v["checked_at"].as_f64().expect("checked_at is a number");
        assert!(
            (now - checked_at).abs() < 600.0,
            "checked_at {checked_at} is epoch seconds"
        );
        assert_eq!(c.timestamp_ms, Some((checked_at * 1000.0) as i64));
        let duration = v["duration"].as_f64().expect("duration is a number");
        assert!(
            (0.0..5.0).contains(&duration),
            "duration {duration} is seconds"
        );
        assert_eq!(v["probe"], "test-probe");
        assert_eq!(v["schema_version"], 2);
        let interval = v["interval"].as_f64().expect("interval is a number");
        if v["url"] == "http://no-such-host.invalid/" {
            assert_eq!(interval, 7.0, "the site's own interval, seconds");
        } else {
            assert!(interval > 0.0, "the source's interval, seconds: {v}");
        }
        assert!(v["ok"].is_boolean() && v["redirects"].is_u64());
    }
    let ok = consumed
        .iter()
        .map(Consumed::json)
        .find(|v| v["ok"] == true)
        .expect("the ok record");
    assert_eq!(ok["status_code"], 200);
    assert!(ok["re_check"].is_null() && ok["error"].is_null());
    assert!(
        ok["timings"]["dns"].is_f64() && ok["timings"]["ttfb"].is_f64(),
        "{ok}"
    );
    let failed = consumed
        .iter()
        .map(Consumed::json)
        .find(|v| v["ok"] == false)
        .expect("the failed record");
    assert_eq!(failed["error"]["kind"], "dns");
    assert!(failed["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    assert!(failed["status_code"].is_null());
}

#[tokio::test]
async fn about_five_records_per_site_in_five_seconds() {
    let s = TestServer::http().await;
    let topic = unique("src-count");
    create_topic(&stack().brokers, &topic, 3).await;
    let urls = [s.url("/"), s.url("/text"), s.url("/status/503")];
    let config = source_config(&topic).set("interval", "1s").sites(&urls);
    let stop = CancellationToken::new();
    let running = source::start(&config, &stop).await;
    tokio::time::sleep(Duration::from_millis(5_500)).await;
    stop.cancel();
    let summary = running.wait().await.unwrap();
    let found = records(&consume(&topic).await);
    assert_eq!(found.len() as u64, summary.checks_finished, "{summary:?}");
    assert_eq!(summary.delivered, summary.checks_finished);
    for url in &urls {
        let n = found.iter().filter(|r| &r.url == url).count();
        assert!(
            (4..=7).contains(&n),
            "{n} records for {url}; expected about 5"
        );
    }
}

#[tokio::test]
async fn a_slow_site_never_has_two_checks_in_flight() {
    let s = TestServer::http().await;
    let topic = unique("src-slow");
    create_topic(&stack().brokers, &topic, 1).await;
    let config = source_config(&topic).site(
        Site::new(s.url("/slow/2500"))
            .set("interval", "500ms")
            .set("timeout", "10s"),
    );
    let stop = CancellationToken::new();
    let running = source::start(&config, &stop).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    stop.cancel();
    let summary = running.wait().await.unwrap();
    assert_eq!(s.max_in_flight(), 1, "two checks of one site ran at once");
    assert!(
        summary.skipped_ticks >= 3,
        "ticks during a running check are skipped and counted: {summary:?}"
    );
    let found = records(&consume(&topic).await);
    assert!(found.len() >= 2 && found.iter().all(|r| r.ok), "{found:?}");
    assert_eq!(found.len() as u64, summary.checks_finished);
}

/// The names of the threads of process `pid` that start with `prefix`, sorted.
fn threads_named(pid: u32, prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("the process's threads")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_owned())
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn checks_run_on_the_configured_threads_and_concurrency_is_split_over_them() {
    // Sites are dealt by position: with three threads, sites 0 and 3 go to
    // the first, 1 and 4 to the second, 2 and 5 to the third. The first
    // thread's two sites are slow and on a server of their own.
    let slow = TestServer::http().await;
    let fast = TestServer::http().await;
    let topic = unique("src-threads");
    create_topic(&stack().brokers, &topic, 1).await;
    let sites = (0..6).map(|i| {
        let url = if i % 3 == 0 {
            slow.url(&format!("/slow/800?site={i}"))
        } else {
            fast.url(&format!("/slow/300?site={i}"))
        };
        Site::new(url).set("interval", "500ms")
    });
    let dir = tempfile::tempdir().unwrap();
    let path = source_config(&topic)
        .set("threads", 3)
        .set("concurrency", 3)
        .sites(sites)
        .write(dir.path());
    let shown = source_bin(&path)
        .arg("--check-config")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&shown.stdout);
    assert!(
        stdout.contains("threads = 3")
            && stdout.contains("6 site(s) to check in this instance, on 3 check thread(s)"),
        "{stdout}"
    );
    let child = spawn_source(&path);
    let pid = child.id().expect("a pid");
    eventually(
        "two checks of each slow site",
        Duration::from_secs(30),
        || async { (slow.hits("/slow/800") >= 4).then_some(()) },
    )
    .await;
    assert_eq!(
        threads_named(pid, "check-"),
        ["check-0", "check-1", "check-2"]
    );
    sigterm(pid).await;
    let out = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    // The first thread has one slot: its two slow sites never ran at once,
    // although the other threads had slots free.
    assert_eq!(slow.max_in_flight(), 1, "a thread used another's slot");
    // The other two threads, one slot each: never more than two at once.
    assert_eq!(fast.max_in_flight(), 2, "the shares add up to concurrency");
    let (finished, delivered, _) = final_counts(&stderr);
    let hits = slow.hits("/slow/800") + fast.hits("/slow/300");
    assert_eq!((finished, delivered), (hits, finished), "{stderr}");
}

#[tokio::test]
async fn stdout_mode_needs_no_broker() {
    let s = TestServer::http().await;
    let dir = tempfile::tempdir().unwrap();
    let config = offline_config()
        .site(Site::new(s.url("/")))
        .site(Site::new(s.url("/status/500")))
        .write(dir.path());
    let out = source_bin(&config)
        .args(["--once", "--stdout"])
        .output()
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Record> = stdout_records(out.stdout);
    assert_eq!(lines.len(), 2);
    assert!(lines.iter().any(|r| r.ok) && lines.iter().any(|r| kind(r) == Some(ErrorKind::Status)));
}

#[tokio::test]
async fn shards_split_the_sites_between_probes() {
    let s = TestServer::http().await;
    let topic = unique("src-shard");
    create_topic(&stack().brokers, &topic, 1).await;
    let urls: Vec<String> = (0..12).map(|n| s.url(&format!("/?site={n}"))).collect();
    let mut finished = 0;
    for k in 1..=3 {
        let config = source_config(&topic)
            .set("shard", format!("{k}/3"))
            .set("probe", format!("probe-{k}"))
            .sites(&urls);
        finished += run_once(&topic, &config).await.checks_finished;
    }
    let found = records(&consume(&topic).await);
    assert_eq!(finished, 12);
    let mut seen: Vec<&str> = found.iter().map(|r| r.url.as_str()).collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), 12, "every url checked by exactly one probe");
    assert_eq!(found.len(), 12);
    let probes: std::collections::HashSet<&str> = found.iter().map(|r| r.probe.as_str()).collect();
    assert!(probes.len() > 1, "{probes:?}");
}
