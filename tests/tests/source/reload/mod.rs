//! Reloading a running source (the binary, against the real Kafka): SIGHUP,
//! `POST /-/reload` and `reload_watch` adding, removing and changing sites
//! without a restart; a bad file and a restart-only key refused, the old
//! sites still running, the metrics saying so. [`survey`]: a reload that
//! changes every site, applied a chunk at a time.

mod survey;

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use website_monitor_tests::http::TestServer;
use website_monitor_tests::metrics::sum;
use website_monitor_tests::source::{consume, records, source_config};
use website_monitor_tests::{
    create_topic, eventually, free_port, http_exchange, http_post, scrape, scrape_until, stack,
    unique, wait_ready, ConfigBuilder, Proc,
};

/// The reloads counted in `text` with `result` (`success` or `failure`).
fn reloads(text: &str, result: &str) -> f64 {
    sum(
        text,
        &format!("website_monitor_config_reloads_total{{result=\"{result}\"}}"),
    )
}

/// Now, in Unix seconds (as `checked_at`).
fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A source writing `topic` with metrics on `port`, its sites in
/// `sites.txt`, every site each `interval` unless it says otherwise.
fn config(topic: &str, port: u16, interval: &str) -> ConfigBuilder {
    source_config(topic)
        .set("metrics_address", format!("127.0.0.1:{port}"))
        .set("interval", interval)
        .set("sites_file", "sites.txt")
}

/// Starts the source on `config` with `sites` as its sites.txt, after
/// creating `topic`; waits until it is ready.
async fn start(topic: &str, config: &ConfigBuilder, sites: &[String]) -> Proc {
    create_topic(&stack().brokers, topic, 1).await;
    let text = sites.join("\n");
    let proc = Proc::spawn_with_files("source", &config.text(), &[("sites.txt", &text)]);
    let port = config.as_table()["source"]["metrics_address"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_ready(&port).await;
    proc
}

/// Waits until `addr` counts `n` reloads with `result`; the metrics text.
async fn counted(addr: &str, result: &str, n: f64, proc: &Proc) -> String {
    scrape_until(addr, Duration::from_secs(30), |t| reloads(t, result) >= n)
        .await
        .unwrap_or_else(|t| panic!("no {result} reload counted:\n{t}\nlog:\n{}", proc.log()))
}

/// The start times of the checks of each url, in order.
fn checks_by_url(
    topic_records: Vec<website_monitor_source::record::Record>,
) -> HashMap<String, Vec<f64>> {
    let mut by: HashMap<String, Vec<f64>> = HashMap::new();
    for r in topic_records {
        by.entry(r.url).or_default().push(r.checked_at);
    }
    for times in by.values_mut() {
        times.sort_by(f64::total_cmp);
    }
    by
}

/// Asserts every gap between two checks in `times` is within `range`
/// seconds: no tick missed, none doubled.
fn assert_cadence(what: &str, times: &[f64], range: std::ops::RangeInclusive<f64>) {
    assert!(times.len() >= 2, "{what}: too few checks: {times:?}");
    for w in times.windows(2) {
        let gap = w[1] - w[0];
        assert!(
            range.contains(&gap),
            "{what}: a gap of {gap:.3} s between checks (want {range:?}): {times:?}"
        );
    }
}

/// When a reload was asked for and when it had been applied (Unix seconds).
struct Reloaded {
    asked: f64,
    applied: f64,
}

impl Reloaded {
    /// Asserts, from the checks `by` url of sites checked every second,
    /// that `kept` was checked each second throughout, across the reload;
    /// `removed` before it and never after it was applied; `added` first
    /// within two intervals, then each second.
    fn assert_kept_removed_added(
        &self,
        by: &HashMap<String, Vec<f64>>,
        [kept, removed, added]: [&String; 3],
    ) {
        let (asked, applied) = (self.asked, self.applied);
        assert_cadence("the kept site", &by[kept], 0.5..=1.5);
        assert!(by[kept].first().unwrap() < &asked && by[kept].last().unwrap() > &applied);
        let g = &by[removed];
        assert!(
            !g.is_empty() && g.iter().all(|t| *t < applied),
            "{g:?} vs {applied}"
        );
        let n = &by[added];
        assert!(n[0] >= asked && n[0] <= applied + 2.0, "{n:?} vs {applied}");
        assert_cadence("the added site", n, 0.5..=1.5);
    }
}

#[tokio::test]
async fn sighup_adds_removes_and_changes_sites_and_the_others_keep_their_cadence() {
    let s = TestServer::http().await;
    let topic = unique("src-reload-hup");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let [keep, gone, change, new] =
        ["keep", "gone", "change", "new"].map(|p| s.url(&format!("/text/{p}")));
    let config = config(&topic, port, "1s");
    let mut proc = start(
        &topic,
        &config,
        &[keep.clone(), gone.clone(), change.clone()],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let changed = format!("{{\"url\": \"{change}\", \"interval\": \"500ms\"}}");
    std::fs::write(
        proc.file("sites.txt"),
        [keep.as_str(), &changed, &new].join("\n"),
    )
    .unwrap();
    let asked = now();
    proc.signal("HUP");
    counted(&addr, "success", 1.0, &proc).await;
    let applied = now();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(proc.term(), Some(0), "log:\n{}", proc.log());
    let log = proc.log();
    assert!(
        log.contains("configuration reloaded")
            && log.contains("added=1")
            && log.contains("removed=1")
            && log.contains("changed=1")
            && log.contains("unchanged=1"),
        "{log}"
    );

    let by = checks_by_url(records(&consume(&topic).await));
    let window = Reloaded { asked, applied };
    window.assert_kept_removed_added(&by, [&keep, &gone, &new]);
    // The changed site: every second before, every half second from the
    // tick after its next one.
    let c = &by[&change];
    let before: Vec<f64> = c.iter().copied().filter(|t| *t < asked).collect();
    let after: Vec<f64> = c.iter().copied().filter(|t| *t > applied + 1.0).collect();
    assert_cadence("the changed site before", &before, 0.5..=1.5);
    assert_cadence("the changed site after", &after, 0.2..=0.8);
    assert!(after.len() >= 4, "{c:?}");
}

#[tokio::test]
async fn post_reload_applies_and_a_bad_file_keeps_the_old_sites_running() {
    let s = TestServer::http().await;
    let topic = unique("src-reload-post");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let [keep, new] = ["keep", "new"].map(|p| s.url(&format!("/text/{p}")));
    let config = config(&topic, port, "500ms");
    let mut proc = start(&topic, &config, std::slice::from_ref(&keep)).await;

    let (status, head, _) = http_exchange(&addr, "GET", "/-/reload").await.unwrap();
    assert_eq!(status, 405);
    assert!(
        head.to_ascii_lowercase().contains("\r\nallow: post"),
        "a 405 names the allowed method: {head}"
    );
    std::fs::write(proc.file("sites.txt"), format!("{keep}\n{new}\n")).unwrap();
    let (status, body) = http_post(&addr, "/-/reload").await.unwrap();
    assert_eq!((status, body.contains("added=1")), (200, true), "{body}");
    eventually(
        "the added site checked",
        Duration::from_secs(10),
        || async { (s.hits("/text/new") > 0).then_some(()) },
    )
    .await;

    // A url that is not one, on line 2: refused, as at start.
    std::fs::write(proc.file("sites.txt"), format!("{keep}\nnot a url\n")).unwrap();
    let (status, body) = http_post(&addr, "/-/reload").await.unwrap();
    assert_eq!(status, 500, "{body}");
    assert!(
        body.contains("sites.txt:2") && body.contains("url"),
        "{body}"
    );
    let text = counted(&addr, "failure", 1.0, &proc).await;
    assert_eq!(
        sum(&text, "website_monitor_config_reload_success"),
        0.0,
        "{text}"
    );
    assert!(
        sum(
            &text,
            "website_monitor_config_reload_last_success_timestamp_seconds"
        ) > 0.0
    );
    let refused = now();
    let hits = (s.hits("/text/keep"), s.hits("/text/new"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        s.hits("/text/keep") >= hits.0 + 2 && s.hits("/text/new") >= hits.1 + 2,
        "both sites still checked after the refused reload"
    );
    assert_eq!(proc.term(), Some(0));
    let log = proc.log();
    assert!(
        log.contains("reload refused") && log.contains("sites.txt:2"),
        "{log}"
    );
    let by = checks_by_url(records(&consume(&topic).await));
    assert!(by[&new].iter().any(|t| *t > refused + 1.0), "{by:?}");
}

#[tokio::test]
async fn reload_watch_applies_a_changed_sites_file() {
    let s = TestServer::http().await;
    let topic = unique("src-reload-watch");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let [keep, new] = ["keep", "new"].map(|p| s.url(&format!("/text/{p}")));
    let config = config(&topic, port, "500ms").set("reload_watch", "200ms");
    let mut proc = start(&topic, &config, std::slice::from_ref(&keep)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(s.hits("/text/new"), 0);
    std::fs::write(proc.file("sites.txt"), format!("{new}\n")).unwrap();
    counted(&addr, "success", 1.0, &proc).await;
    eventually(
        "the added site checked",
        Duration::from_secs(10),
        || async { (s.hits("/text/new") > 0).then_some(()) },
    )
    .await;
    let removed = s.hits("/text/keep");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        s.hits("/text/keep") <= removed + 1,
        "the removed site stopped"
    );
    assert_eq!(proc.term(), Some(0));
    assert!(proc.log().contains("trigger=\"file change\"") || proc.log().contains("file change"));
}

#[tokio::test]
async fn a_reload_changing_a_restart_only_key_is_refused_naming_it() {
    let s = TestServer::http().await;
    let topic = unique("src-reload-fixed");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let [keep, new] = ["keep", "new"].map(|p| s.url(&format!("/text/{p}")));
    let config = config(&topic, port, "500ms");
    let mut proc = start(&topic, &config, std::slice::from_ref(&keep)).await;
    let moved = config
        .clone()
        .set("topic", format!("{topic}-other"))
        .set("concurrency", 7);
    std::fs::write(proc.file("connector.toml"), moved.text()).unwrap();
    std::fs::write(proc.file("sites.txt"), format!("{keep}\n{new}\n")).unwrap();
    proc.signal("HUP");
    let text = counted(&addr, "failure", 1.0, &proc).await;
    assert_eq!(sum(&text, "website_monitor_config_reload_success"), 0.0);
    let (status, body) = http_post(&addr, "/-/reload").await.unwrap();
    assert_eq!(status, 500, "{body}");
    assert!(
        body.contains("`source.topic`")
            && body.contains("`source.concurrency`")
            && body.contains("restart"),
        "{body}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        s.hits("/text/new"),
        0,
        "nothing of the refused reload applied"
    );
    // Undone: the sites part applies.
    std::fs::write(proc.file("connector.toml"), config.text()).unwrap();
    let (status, body) = http_post(&addr, "/-/reload").await.unwrap();
    assert_eq!((status, body.contains("added=1")), (200, true), "{body}");
    let text = counted(&addr, "success", 1.0, &proc).await;
    assert_eq!(sum(&text, "website_monitor_config_reload_success"), 1.0);
    assert_eq!(proc.term(), Some(0));
    assert!(proc.log().contains("source.topic"), "{}", proc.log());
}

#[tokio::test]
async fn a_reloaded_shard_applies_to_the_reloaded_list() {
    use website_monitor_source::hash::shard_of;
    let s = TestServer::http().await;
    let topic = unique("src-reload-shard");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    // One url of each of two shards.
    let urls: Vec<String> = (0..64).map(|i| s.url(&format!("/text/{i}"))).collect();
    let pick = |shard| {
        let i = urls.iter().position(|u| shard_of(u, 2) == shard).unwrap();
        (format!("/text/{i}"), urls[i].clone())
    };
    let ((one_path, one), (two_path, two)) = (pick(1), pick(2));
    let config = config(&topic, port, "500ms").set("shard", "1/2");
    let mut proc = start(&topic, &config, &[one.clone(), two.clone()]).await;
    eventually(
        "shard 1's site checked",
        Duration::from_secs(10),
        || async { (s.hits(&one_path) > 0).then_some(()) },
    )
    .await;
    assert_eq!(s.hits(&two_path), 0, "shard 2's site is not this probe's");
    std::fs::write(
        proc.file("connector.toml"),
        config.clone().set("shard", "2/2").text(),
    )
    .unwrap();
    let (status, body) = http_post(&addr, "/-/reload").await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("added=1") && body.contains("removed=1"),
        "{body}"
    );
    eventually(
        "shard 2's site checked",
        Duration::from_secs(10),
        || async { (s.hits(&two_path) > 0).then_some(()) },
    )
    .await;
    let stopped = s.hits(&one_path);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(s.hits(&one_path) <= stopped + 1, "shard 1's site stopped");
    assert_eq!(proc.term(), Some(0));
}

#[tokio::test]
async fn an_unchanged_keep_alive_site_keeps_its_connection_across_a_reload() {
    let (s, other) = (TestServer::http().await, TestServer::http().await);
    let topic = unique("src-reload-keepalive");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let (keep, new) = (s.url("/text/keep"), other.url("/text/new"));
    let config = config(&topic, port, "300ms").set("keep_alive", true);
    let mut proc = start(&topic, &config, std::slice::from_ref(&keep)).await;
    eventually("a few checks", Duration::from_secs(10), || async {
        (s.hits("/text/keep") >= 3).then_some(())
    })
    .await;
    let connections = s.connections();
    std::fs::write(proc.file("sites.txt"), format!("{keep}\n{new}\n")).unwrap();
    let (status, body) = http_post(&addr, "/-/reload").await.unwrap();
    assert_eq!(
        (status, body.contains("unchanged=1")),
        (200, true),
        "{body}"
    );
    let hits = s.hits("/text/keep");
    eventually(
        "more checks after the reload",
        Duration::from_secs(10),
        || async {
            (s.hits("/text/keep") >= hits + 3 && other.hits("/text/new") > 0).then_some(())
        },
    )
    .await;
    assert_eq!(
        s.connections(),
        connections,
        "the unchanged site reused its connection"
    );
    assert_eq!(proc.term(), Some(0));
}

#[tokio::test]
async fn a_removed_site_takes_its_per_url_gauges_off_metrics() {
    let s = TestServer::http().await;
    let topic = unique("src-reload-gauges");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let (keep, down) = (s.url("/text/keep"), s.url("/status/500"));
    let config = config(&topic, port, "300ms").set("per_site_metrics", true);
    let mut proc = start(&topic, &config, &[keep.clone(), down.clone()]).await;
    let series = |url: &str| format!("website_monitor_site_up{{url=\"{url}\"}}");
    let text = scrape_until(&addr, Duration::from_secs(10), |t| {
        t.contains(&series(&keep)) && t.contains(&format!("{} 0", series(&down)))
    })
    .await
    .unwrap_or_else(|t| panic!("both sites' gauges:\n{t}"));
    assert!(text.contains(&format!(
        "website_monitor_site_duration_seconds{{url=\"{down}\"}}"
    )));
    std::fs::write(proc.file("sites.txt"), format!("{keep}\n")).unwrap();
    let (status, body) = http_post(&addr, "/-/reload").await.unwrap();
    assert_eq!((status, body.contains("removed=1")), (200, true), "{body}");
    let text = scrape(&addr).await;
    assert!(
        !text.contains(&format!("url=\"{down}\"")),
        "the removed site's series are gone (its WebsiteDown alert ends):\n{text}"
    );
    assert!(text.contains(&series(&keep)), "{text}");
    // Added again: its series come back with its first check.
    std::fs::write(proc.file("sites.txt"), format!("{keep}\n{down}\n")).unwrap();
    assert_eq!(http_post(&addr, "/-/reload").await.unwrap().0, 200);
    scrape_until(&addr, Duration::from_secs(10), |t| {
        t.contains(&series(&down))
    })
    .await
    .unwrap_or_else(|t| panic!("the re-added site's gauges:\n{t}"));
    assert_eq!(proc.term(), Some(0));
}

#[tokio::test]
async fn a_url_removed_and_added_again_during_its_check_is_never_checked_twice_at_once() {
    let s = TestServer::http().await;
    let topic = unique("src-reload-readd");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let (keep, slow) = (s.url("/text/keep"), s.url("/slow/3000"));
    let slow_site = format!("{{\"url\": \"{slow}\", \"timeout\": \"10s\"}}");
    let config = config(&topic, port, "1s");
    let mut proc = start(&topic, &config, &[keep.clone(), slow_site.clone()]).await;
    eventually(
        "the slow site's check started",
        Duration::from_secs(10),
        || async { (s.hits("/slow/3000") > 0).then_some(()) },
    )
    .await;
    // Removed and added again while that check runs.
    std::fs::write(proc.file("sites.txt"), format!("{keep}\n")).unwrap();
    let (status, body) = http_post(&addr, "/-/reload").await.unwrap();
    assert_eq!((status, body.contains("removed=1")), (200, true), "{body}");
    std::fs::write(proc.file("sites.txt"), format!("{keep}\n{slow_site}\n")).unwrap();
    let (status, body) = http_post(&addr, "/-/reload").await.unwrap();
    assert_eq!((status, body.contains("added=1")), (200, true), "{body}");
    eventually(
        "a check after the first",
        Duration::from_secs(20),
        || async { (s.hits("/slow/3000") >= 2).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(proc.term(), Some(0), "log:\n{}", proc.log());
    let mut checks: Vec<(f64, f64)> = records(&consume(&topic).await)
        .into_iter()
        .filter(|r| r.url == slow)
        .map(|r| (r.checked_at, r.checked_at + r.duration))
        .collect();
    checks.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(checks.len() >= 2, "{checks:?}");
    for w in checks.windows(2) {
        assert!(
            w[1].0 >= w[0].1 - 0.01,
            "a check started before the previous one of the same url ended: {checks:?}"
        );
    }
}

#[tokio::test]
async fn reload_watch_does_not_apply_a_sites_file_cut_mid_line() {
    let s = TestServer::http().await;
    let topic = unique("src-reload-partial");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let [keep, new] = ["keep", "new"].map(|p| s.url(&format!("/text/{p}")));
    let config = config(&topic, port, "300ms").set("reload_watch", "200ms");
    let mut proc = start(&topic, &config, std::slice::from_ref(&keep)).await;
    // Written in place and not finished: the last url cut short is a valid
    // url of another site.
    use std::io::Write as _;
    let mut f = std::fs::File::create(proc.file("sites.txt")).unwrap();
    let cut = &new[..new.len() - 1];
    write!(f, "{keep}\n{cut}").unwrap();
    f.flush().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let text = scrape(&addr).await;
    assert_eq!(
        reloads(&text, "success"),
        0.0,
        "nothing applied yet:\n{text}"
    );
    writeln!(f, "w").unwrap();
    drop(f);
    counted(&addr, "success", 1.0, &proc).await;
    eventually(
        "the added site checked",
        Duration::from_secs(10),
        || async { (s.hits("/text/new") > 0).then_some(()) },
    )
    .await;
    assert_eq!(s.hits("/text/ne"), 0, "the cut url was never a site");
    assert_eq!(proc.term(), Some(0));
    let log = proc.log();
    assert_eq!(log.matches("configuration reloaded").count(), 1, "{log}");
}
