//! The source connector against the real Kafka of `make up`, with HTTP(S)
//! targets started on 127.0.0.1 by the tests (nothing leaves the machine).
//! Each test writes its own topic.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Output, Stdio};

use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::process::Command;

use connector_common::config::{load_str, Loaded, Section};
use tokio_util::sync::CancellationToken;
use website_monitor_source::record::{ErrorKind, Record};
use website_monitor_source::{RunOptions, RunSummary, SourceConfig, SourceError};
use website_monitor_tests::http::{Pki, TestServer, TEXT};
use website_monitor_tests::{
    binary, consume_all, create_topic, eventually, repo_root, stack, unique, Consumed,
};

/// A `[kafka]` + `[source]` config for the local stack writing `topic`, with
/// `extra` lines in `[source]` and then `sites` (`[[source.sites]]` entries).
fn config(topic: &str, extra: &str, sites: &str) -> String {
    format!(
        "[kafka]\nbrokers = \"{}\"\n\n[source]\ntopic = \"{topic}\"\nprobe = \"test-probe\"\nmetrics_address = \"127.0.0.1:0\"\n{extra}\n\n{sites}",
        stack().brokers
    )
}

fn site(url: &str, extra: &str) -> String {
    format!("[[source.sites]]\nurl = \"{url}\"\n{extra}\n")
}

fn load(text: &str) -> Loaded<SourceConfig> {
    load_str(text, Path::new("test.toml"), Section::Source, &|_| None)
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// Reads every record of `topic`.
async fn consume(topic: &str) -> Vec<Consumed> {
    consume_all(
        &stack().brokers,
        topic,
        Duration::from_secs(3),
        Duration::from_secs(60),
    )
    .await
}

fn records(consumed: &[Consumed]) -> Vec<Record> {
    consumed
        .iter()
        .map(|c| serde_json::from_slice(&c.payload).expect("a record"))
        .collect()
}

fn by_url(records: Vec<Record>) -> HashMap<String, Record> {
    records.into_iter().map(|r| (r.url.clone(), r)).collect()
}

/// Runs one round (`--once`) of `text` in-process; returns its summary and records by url.
async fn once(topic: &str, text: &str) -> (RunSummary, HashMap<String, Record>) {
    create_topic(&stack().brokers, topic, 1).await;
    let opts = RunOptions {
        once: true,
        stdout: false,
    };
    let summary = website_monitor_source::run(load(text), opts, CancellationToken::new())
        .await
        .expect("run");
    let found = records(&consume(topic).await);
    assert_eq!(found.len() as u64, summary.delivered, "{summary:?}");
    (summary, by_url(found))
}

fn kind(r: &Record) -> Option<ErrorKind> {
    r.error.as_ref().map(|e| e.kind)
}

#[tokio::test]
async fn http_outcomes_status_regex_and_expected_status() {
    let s = TestServer::http().await;
    let topic = unique("src-http");
    let sites = [
        site(&s.url("/"), ""),
        site(&s.url("/text"), "regex = \"lazy dog\""),
        site(&s.url("/text?miss"), "regex = \"sleepy cat\""),
        site(&s.url("/status/500"), ""),
        site(&s.url("/status/404"), "expected_status = [404]"),
        site(&s.url("/status/200"), "expected_status = [201]"),
    ]
    .concat();
    let (summary, r) = once(&topic, &config(&topic, "", &sites)).await;
    assert_eq!(
        (summary.checks_finished, summary.delivered, summary.failed),
        (6, 6, 0)
    );

    let ok = &r[&s.url("/")];
    assert!(
        ok.ok && ok.error.is_none() && ok.re_check.is_none(),
        "{ok:?}"
    );
    assert_eq!(ok.status_code, Some(200));
    assert_eq!(ok.http_version.as_deref(), Some("HTTP/1.1"));
    assert_eq!(ok.response_bytes, Some(3));
    assert_eq!(ok.ip.as_deref(), Some("127.0.0.1"));
    assert!(ok.tls.is_none());

    let matched = &r[&s.url("/text")];
    assert!(matched.ok && matched.re_check == Some(true), "{matched:?}");
    assert_eq!(matched.response_bytes, Some(TEXT.len() as u64));

    let missed = &r[&s.url("/text?miss")];
    assert_eq!(kind(missed), Some(ErrorKind::Regex), "{missed:?}");
    assert!(!missed.ok && missed.re_check == Some(false));
    assert_eq!(missed.status_code, Some(200));

    let err500 = &r[&s.url("/status/500")];
    assert_eq!(kind(err500), Some(ErrorKind::Status), "{err500:?}");
    assert_eq!(err500.status_code, Some(500));
    assert!(!err500.ok && err500.re_check.is_none());

    assert!(
        r[&s.url("/status/404")].ok,
        "{:?}",
        r[&s.url("/status/404")]
    );
    let not201 = &r[&s.url("/status/200")];
    assert_eq!(
        (kind(not201), not201.status_code),
        (Some(ErrorKind::Status), Some(200))
    );
}

#[tokio::test]
async fn network_failures_dns_connect_timeout() {
    let s = TestServer::http().await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let topic = unique("src-net");
    let closed_url = format!("http://127.0.0.1:{closed}/");
    let sites = [
        site("http://no-such-host.invalid/", ""),
        site(&closed_url, ""),
        site(&s.url("/slow/3000"), "timeout = \"500ms\""),
    ]
    .concat();
    let (summary, r) = once(&topic, &config(&topic, "", &sites)).await;
    assert_eq!(summary.delivered, 3);

    let dns = &r["http://no-such-host.invalid/"];
    assert_eq!(kind(dns), Some(ErrorKind::Dns), "{dns:?}");
    assert!(!dns.ok && dns.status_code.is_none() && dns.ip.is_none());
    assert!(
        dns.timings.dns.is_some() && dns.timings.connect.is_none(),
        "{dns:?}"
    );

    let refused = &r[&closed_url];
    assert_eq!(kind(refused), Some(ErrorKind::Connect), "{refused:?}");
    assert!(!refused.ok && refused.status_code.is_none());

    let slow = &r[&s.url("/slow/3000")];
    assert_eq!(kind(slow), Some(ErrorKind::Timeout), "{slow:?}");
    assert!(!slow.ok && slow.status_code.is_none());
    // Connected fine before timing out: the phase it got through is kept.
    assert!(slow.timings.connect.is_some(), "{slow:?}");
    assert!(slow.duration >= 0.5, "{slow:?}");
}

#[tokio::test]
async fn tls_unknown_ca_self_signed_trusted_ca_and_no_verify() {
    let pki = Pki::new();
    let signed = TestServer::https(pki.ca_signed.clone()).await;
    let selfsigned = TestServer::https(pki.self_signed.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let topic = unique("src-tls");
    let with_ca = format!("tls_ca = \"{}\"", ca.display());
    let sites = [
        site(&signed.url("/?unknown-ca"), ""),
        site(&selfsigned.url("/"), ""),
        site(&signed.url("/"), &with_ca),
        site(
            &signed.url_by_name("/text"),
            &format!("{with_ca}\nregex = \"fox\""),
        ),
        site(&selfsigned.url("/?no-verify"), "tls_verify = false"),
    ]
    .concat();
    let (_, r) = once(&topic, &config(&topic, "", &sites)).await;

    for url in [signed.url("/?unknown-ca"), selfsigned.url("/")] {
        let rec = &r[&url];
        assert_eq!(kind(rec), Some(ErrorKind::Tls), "{rec:?}");
        assert!(!rec.ok && rec.status_code.is_none());
    }

    let good = &r[&signed.url("/")];
    assert!(good.ok, "{good:?}");
    let tls = good.tls.as_ref().expect("tls facts");
    assert_eq!(tls.version.as_deref(), Some("TLSv1.3"));
    assert_eq!(tls.cert_not_after, Some(pki.not_after));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert_eq!(
        tls.cert_days_left,
        Some((pki.not_after - now).div_euclid(86_400))
    );
    let t = &good.timings;
    assert!(t.dns.is_none(), "an IP address needs no lookup: {t:?}");
    assert!(
        t.connect.is_some() && t.tls.is_some() && t.ttfb.is_some() && t.transfer.is_some(),
        "{t:?}"
    );

    let by_name = &r[&signed.url_by_name("/text")];
    assert!(by_name.ok && by_name.re_check == Some(true), "{by_name:?}");
    assert!(
        by_name.timings.dns.is_some() && by_name.timings.tls.is_some(),
        "{by_name:?}"
    );

    let no_verify = &r[&selfsigned.url("/?no-verify")];
    assert!(no_verify.ok, "{no_verify:?}");
    assert_eq!(
        no_verify.tls.as_ref().and_then(|t| t.cert_not_after),
        Some(pki.not_after)
    );
}

#[tokio::test]
async fn redirects_followed_counted_and_limited() {
    let s = TestServer::http().await;
    let topic = unique("src-redir");
    let sites = [
        site(&s.url("/redirect/3"), ""),
        site(&s.url("/redirect/3?limit"), "max_redirects = 2"),
        site(&s.url("/redirect/1?no-follow"), "follow_redirects = false"),
    ]
    .concat();
    let (_, r) = once(&topic, &config(&topic, "", &sites)).await;

    let followed = &r[&s.url("/redirect/3")];
    assert!(followed.ok, "{followed:?}");
    assert_eq!((followed.redirects, followed.status_code), (3, Some(200)));
    assert_eq!(s.hits("/redirect/0"), 1, "the final hop was requested once");

    let limited = &r[&s.url("/redirect/3?limit")];
    assert_eq!(kind(limited), Some(ErrorKind::Http), "{limited:?}");
    assert_eq!((limited.redirects, limited.status_code), (2, Some(302)));

    let kept = &r[&s.url("/redirect/1?no-follow")];
    assert!(kept.ok, "{kept:?}");
    assert_eq!((kept.redirects, kept.status_code), (0, Some(302)));
}

#[tokio::test]
async fn body_over_the_cap_is_not_read_past_it() {
    let s = TestServer::http().await;
    let topic = unique("src-body");
    const TOTAL: u64 = 256 * 1024 * 1024;
    const CAP: u64 = 64 * 1024;
    let big = s.url(&format!("/big/{TOTAL}"));
    let sites = [
        site(&big, &format!("max_body_bytes = {CAP}\nregex = \"xxx\"")),
        site(&s.url("/big/1000?under"), "max_body_bytes = 1000"),
    ]
    .concat();
    let (_, r) = once(&topic, &config(&topic, "", &sites)).await;

    let over = &r[&big];
    assert_eq!(kind(over), Some(ErrorKind::Body), "{over:?}");
    assert_eq!(over.status_code, Some(200));
    assert_eq!(
        over.re_check,
        Some(true),
        "the regex still sees the first bytes"
    );
    let read = over.response_bytes.expect("bytes counted");
    assert!(
        read > CAP && read < CAP + 1024 * 1024,
        "read {read} bytes with a cap of {CAP}"
    );
    // The server produced at most what the socket buffers took, far from all of it.
    let sent = s.bytes_sent();
    assert!(
        sent < 32 * 1024 * 1024,
        "server sent {sent} of {TOTAL} bytes"
    );

    let under = &r[&s.url("/big/1000?under")];
    assert!(under.ok, "exactly the cap is fine: {under:?}");
    assert_eq!(under.response_bytes, Some(1000));
}

#[tokio::test]
async fn records_in_kafka_have_key_timestamp_and_every_field() {
    let s = TestServer::http().await;
    let topic = unique("src-record");
    let sites = [
        site(&s.url_by_name("/"), ""),
        site("http://no-such-host.invalid/", ""),
    ]
    .concat();
    create_topic(&stack().brokers, &topic, 1).await;
    let opts = RunOptions {
        once: true,
        stdout: false,
    };
    website_monitor_source::run(
        load(&config(&topic, "", &sites)),
        opts,
        CancellationToken::new(),
    )
    .await
    .unwrap();
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
        assert_eq!(v["schema_version"], 1);
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
    let sites: String = urls.iter().map(|u| site(u, "")).collect();
    let stop = CancellationToken::new();
    let running = website_monitor_source::start(
        load(&config(&topic, "interval = \"1s\"", &sites)),
        RunOptions::default(),
        stop.clone(),
    )
    .await
    .unwrap();
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
    let sites = site(
        &s.url("/slow/2500"),
        "interval = \"500ms\"\ntimeout = \"10s\"",
    );
    let stop = CancellationToken::new();
    let running = website_monitor_source::start(
        load(&config(&topic, "", &sites)),
        RunOptions::default(),
        stop.clone(),
    )
    .await
    .unwrap();
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

#[tokio::test]
async fn metrics_counters_move() {
    let s = TestServer::http().await;
    let topic = unique("src-metrics");
    create_topic(&stack().brokers, &topic, 1).await;
    let (up, down) = (s.url("/?metrics"), s.url("/status/500?metrics"));
    let sites = [site(&up, ""), site(&down, "")].concat();
    let stop = CancellationToken::new();
    let running = website_monitor_source::start(
        load(&config(&topic, "interval = \"200ms\"", &sites)),
        RunOptions::default(),
        stop.clone(),
    )
    .await
    .unwrap();
    let base = format!(
        "http://{}",
        running.metrics_address.expect("metrics served")
    );
    let client = website_monitor_tests::http_client_builder()
        .build()
        .unwrap();
    let get = |path: &'static str| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            let r = client
                .get(format!("{base}{path}"))
                .send()
                .await
                .expect("telemetry answers");
            (r.status().as_u16(), r.text().await.unwrap_or_default())
        }
    };
    assert_eq!(get("/healthz").await.0, 200);
    eventually("/readyz to say ready", Duration::from_secs(20), || async {
        (get("/readyz").await.0 == 200).then_some(())
    })
    .await;
    let first = eventually("some checks counted", Duration::from_secs(20), || async {
        let (_, text) = get("/metrics").await;
        (sum(&text, "website_monitor_records_produced_total") > 0.0).then_some(text)
    })
    .await;
    // The recorder is global: other tests in this process move the counters
    // too, so also wait for this test's own sites to have been checked.
    let later = eventually("the counters to move", Duration::from_secs(20), || async {
        let (_, text) = get("/metrics").await;
        let moved = sum(&text, "website_monitor_checks_total{")
            > sum(&first, "website_monitor_checks_total{")
            && sum(&text, "website_monitor_records_produced_total")
                > sum(&first, "website_monitor_records_produced_total")
            && [&up, &down].iter().all(|u| {
                text.contains(&format!("website_monitor_site_up{{url=\"{u}\"}}"))
                    && text.contains(&format!(
                        "website_monitor_site_duration_seconds{{url=\"{u}\"}}"
                    ))
            });
        moved.then_some(text)
    })
    .await;
    stop.cancel();
    running.wait().await.unwrap();

    assert!(
        sum(
            &later,
            "website_monitor_checks_total{outcome=\"fail\",error_kind=\"status\"}"
        ) > 0.0,
        "{later}"
    );
    assert!(
        sum(
            &later,
            "website_monitor_checks_total{outcome=\"ok\",error_kind=\"none\"}"
        ) > 0.0,
        "{later}"
    );
    assert_eq!(
        sum(&later, &format!("website_monitor_site_up{{url=\"{up}\"}}")),
        1.0,
        "{later}"
    );
    assert_eq!(
        sum(
            &later,
            &format!("website_monitor_site_up{{url=\"{down}\"}}")
        ),
        0.0,
        "{later}"
    );
    assert!(
        sum(&later, "website_monitor_check_duration_seconds_count") > 0.0,
        "{later}"
    );
    assert!(
        sum(&later, "website_monitor_schedule_lateness_seconds_count") > 0.0,
        "{later}"
    );
    assert!(
        later.contains("website_monitor_checks_in_flight"),
        "{later}"
    );
    assert!(
        later.contains(&format!(
            "website_monitor_site_duration_seconds{{url=\"{up}\"}}"
        )),
        "{later}"
    );
}

#[tokio::test]
async fn fresh_connection_per_check_unless_keep_alive() {
    let fresh = TestServer::http().await;
    let reused = TestServer::http().await;
    let topic = unique("src-keepalive");
    create_topic(&stack().brokers, &topic, 1).await;
    let sites = [
        site(&fresh.url("/"), ""),
        site(&reused.url("/"), "keep_alive = true"),
    ]
    .concat();
    let stop = CancellationToken::new();
    let text = config(&topic, "interval = \"200ms\"", &sites);
    let running = website_monitor_source::start(load(&text), RunOptions::default(), stop.clone())
        .await
        .unwrap();
    eventually(
        "a few checks of each site",
        Duration::from_secs(30),
        || async { (fresh.hits("/") >= 4 && reused.hits("/") >= 4).then_some(()) },
    )
    .await;
    stop.cancel();
    running.wait().await.unwrap();
    assert_eq!(
        fresh.connections(),
        fresh.hits("/"),
        "one connection per check by default"
    );
    assert!(
        reused.connections() < reused.hits("/"),
        "keep_alive reuses connections: {} for {} checks",
        reused.connections(),
        reused.hits("/")
    );
    let found = records(&consume(&topic).await);
    let fresh_records: Vec<&Record> = found.iter().filter(|r| r.url == fresh.url("/")).collect();
    assert!(
        fresh_records
            .iter()
            .all(|r| r.ok && r.timings.connect.is_some()),
        "{fresh_records:?}"
    );
    let reused_records: Vec<&Record> = found.iter().filter(|r| r.url == reused.url("/")).collect();
    assert!(
        reused_records
            .iter()
            .any(|r| r.ok && r.timings.connect.is_none()),
        "a check on a reused connection has no connect phase: {reused_records:?}"
    );
}

/// Sum of the values of the metric lines starting with `prefix`.
fn sum(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn write_config(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("connector.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn source(config: &Path) -> Command {
    // A test that fails half-way leaves no source running.
    website_monitor_tests::connector("website-monitor-source", config)
}

/// Starts the source binary on `config`: stdout discarded, stderr captured.
fn spawn_source(config: &Path) -> tokio::process::Child {
    source(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the source")
}

/// Sends SIGTERM to `pid`.
async fn sigterm(pid: u32) {
    let killed = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await
        .expect("kill");
    assert!(killed.success());
}

/// Parses `source stopped checks_finished=N delivered=N failed=N` from the log.
fn final_counts(stderr: &str) -> (u64, u64, u64) {
    let line = stderr
        .lines()
        .rfind(|l| l.contains("source stopped"))
        .unwrap_or_else(|| panic!("no final line in:\n{stderr}"));
    let field = |name: &str| -> u64 {
        let at = line
            .find(&format!("{name}="))
            .unwrap_or_else(|| panic!("{name} not in {line}"))
            + name.len()
            + 1;
        line[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .expect("a count")
    };
    (
        field("checks_finished"),
        field("delivered"),
        field("failed"),
    )
}

#[tokio::test]
async fn sigterm_mid_run_exits_0_with_every_finished_check_in_the_topic() {
    let s = TestServer::http().await;
    let topic = unique("src-sigterm");
    create_topic(&stack().brokers, &topic, 2).await;
    let sites = [
        site(&s.url("/"), "interval = \"100ms\""),
        site(&s.url("/text"), "interval = \"100ms\""),
        site(&s.url("/slow/1500"), "interval = \"300ms\""),
    ]
    .concat();
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &config(&topic, "", &sites));
    let child = spawn_source(&path);
    let pid = child.id().expect("a pid");
    // Let it run until the slow site has a check in flight for sure.
    eventually(
        "the slow site to be hit twice",
        Duration::from_secs(30),
        || async { (s.hits("/slow/1500") >= 2).then_some(()) },
    )
    .await;
    sigterm(pid).await;
    let out = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let (finished, delivered, failed) = final_counts(&stderr);
    assert!(finished > 10, "{stderr}");
    assert_eq!((delivered, failed), (finished, 0), "{stderr}");
    let found = consume(&topic).await;
    assert_eq!(
        found.len() as u64,
        finished,
        "records in the topic vs checks the source finished"
    );
    // The check in flight at SIGTERM was finished, not dropped.
    assert!(records(&found)
        .iter()
        .filter(|r| r.url.ends_with("/slow/1500"))
        .all(|r| r.ok));
    assert_eq!(
        records(&found)
            .iter()
            .filter(|r| r.url.ends_with("/slow/1500"))
            .count() as u64,
        s.hits("/slow/1500")
    );
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
    let sites: String = (0..6)
        .map(|i| {
            let url = if i % 3 == 0 {
                slow.url(&format!("/slow/800?site={i}"))
            } else {
                fast.url(&format!("/slow/300?site={i}"))
            };
            site(&url, "interval = \"500ms\"")
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        &config(&topic, "threads = 3\nconcurrency = 3", &sites),
    );
    let shown = source(&path).arg("--check-config").output().await.unwrap();
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
async fn dropping_running_without_a_shutdown_stops_the_check_threads() {
    let s = TestServer::http().await;
    let topic = unique("src-dropped");
    create_topic(&stack().brokers, &topic, 1).await;
    let sites = site(&s.url("/slow/50"), "interval = \"100ms\"");
    let running = website_monitor_source::start(
        load(&config(&topic, "", &sites)),
        RunOptions::default(),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    eventually("a few checks", Duration::from_secs(30), || async {
        (s.hits("/slow/50") >= 3).then_some(())
    })
    .await;
    drop(running);
    // A check in flight at the drop may still finish; then nothing more.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = s.hits("/slow/50");
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(
        s.hits("/slow/50"),
        after,
        "the check threads went on checking"
    );
}

#[tokio::test]
async fn a_failed_start_is_an_error_not_a_panic() {
    let s = TestServer::http().await;
    let topic = unique("src-failed-start");
    let sites: String = (0..4)
        .map(|i| site(&s.url(&format!("/?{i}")), ""))
        .collect();
    // The metrics address is taken (and this is no --once run).
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let text = config(&topic, "threads = 2", &sites).replace(
        "metrics_address = \"127.0.0.1:0\"",
        &format!("metrics_address = \"{}\"", taken.local_addr().unwrap()),
    );
    let e =
        website_monitor_source::start(load(&text), RunOptions::default(), CancellationToken::new())
            .await
            .err()
            .expect("the address is taken");
    assert!(matches!(e, SourceError::Telemetry(_)), "{e}");
    // A CA file without a certificate on a site of the second thread.
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let bad = site(
        &s.url("/?bad"),
        &format!("tls_ca = \"{}\"", empty.display()),
    );
    let text = config(
        &topic,
        "threads = 2",
        &[site(&s.url("/?ok"), ""), bad].concat(),
    );
    let e =
        website_monitor_source::start(load(&text), RunOptions::default(), CancellationToken::new())
            .await
            .err()
            .expect("the CA file is empty");
    assert!(e.to_string().contains("empty.pem"), "{e}");
}

#[tokio::test]
async fn sigterm_stops_the_source_even_when_its_stderr_is_closed() {
    // The log shipper on the other end of stderr died: log lines cannot be
    // written any more, and shutdown must still happen.
    let s = TestServer::http().await;
    let topic = unique("src-stderr-closed");
    create_topic(&stack().brokers, &topic, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        &config(&topic, "", &site(&s.url("/"), "interval = \"100ms\"")),
    );
    let mut child = spawn_source(&path);
    let pid = child.id().expect("a pid");
    eventually("a first check", Duration::from_secs(30), || async {
        (s.hits("/") >= 1).then_some(())
    })
    .await;
    drop(child.stderr.take());
    sigterm(pid).await;
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the source stops after SIGTERM although it cannot log")
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn mtls_through_9094_with_pem_paths_from_the_environment() {
    let st = stack();
    let s = TestServer::http().await;
    let topic = unique("src-mtls");
    create_topic(&st.brokers, &topic, 1).await;
    let dir = tempfile::tempdir().unwrap();
    // No TLS keys in the file: the seed's variables bring them.
    let text = format!(
        "[kafka]\nbrokers = \"127.0.0.1:1\"\n[source]\ntopic = \"{topic}\"\nmetrics_address = \"127.0.0.1:0\"\n{}",
        site(&s.url("/"), "")
    );
    let path = write_config(dir.path(), &text);
    let tls = &st.tls_dir;
    let out = source(&path)
        .arg("--once")
        .env("kafka_host", &st.ssl_brokers)
        .env("kafka_ssl_ca", tls.join("ca.pem"))
        .env("kafka_ssl_cert", tls.join("client.pem"))
        .env("kafka_ssl_key", tls.join("client.key"))
        .output()
        .await
        .expect("run the source");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(final_counts(&stderr), (1, 1, 0), "{stderr}");
    let found = consume(&topic).await;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].json()["url"], s.url("/"));
    assert_eq!(found[0].json()["ok"], true, "the target answered");
}

#[tokio::test]
async fn pipelines_mtls_toml_publishes_through_the_mtls_listener() {
    let topic = unique("src-mtls-pipeline");
    create_topic(&stack().brokers, &topic, 1).await;
    let out = Command::new(binary("website-monitor-source"))
        .current_dir(repo_root())
        .args(["--config", "pipelines/mtls.toml", "--once"])
        .env("kafka_topic", &topic)
        .env_remove("kafka_host")
        .output()
        .await
        .expect("run the source");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let (finished, delivered, _) = final_counts(&stderr);
    assert!(finished >= 1 && delivered == finished, "{stderr}");
    assert_eq!(consume(&topic).await.len() as u64, finished);
}

#[tokio::test]
async fn stdout_mode_needs_no_broker() {
    let s = TestServer::http().await;
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[kafka]\nbrokers = \"127.0.0.1:1\"\n[source]\nmetrics_address = \"127.0.0.1:0\"\n{}{}",
        site(&s.url("/"), ""),
        site(&s.url("/status/500"), "")
    );
    let out = source(&write_config(dir.path(), &text))
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
    let lines: Vec<Record> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON record per line"))
        .collect();
    assert_eq!(lines.len(), 2);
    assert!(lines.iter().any(|r| r.ok) && lines.iter().any(|r| kind(r) == Some(ErrorKind::Status)));
}

#[tokio::test]
async fn shards_split_the_sites_between_probes() {
    let s = TestServer::http().await;
    let topic = unique("src-shard");
    create_topic(&stack().brokers, &topic, 1).await;
    let urls: Vec<String> = (0..12).map(|n| s.url(&format!("/?site={n}"))).collect();
    let sites: String = urls.iter().map(|u| site(u, "")).collect();
    let mut finished = 0;
    for k in 1..=3 {
        let text = config(
            &topic,
            &format!("shard = \"{k}/3\"\nprobe = \"probe-{k}\""),
            &sites,
        )
        .replace("probe = \"test-probe\"\n", "");
        let opts = RunOptions {
            once: true,
            stdout: false,
        };
        finished += website_monitor_source::run(load(&text), opts, CancellationToken::new())
            .await
            .unwrap()
            .checks_finished;
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

async fn check_config(dir: &Path, text: &str) -> Output {
    source(&write_config(dir, text))
        .arg("--check-config")
        .output()
        .await
        .unwrap()
}

#[tokio::test]
async fn bad_configs_exit_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let ok_site = "[[source.sites]]\nurl = \"http://127.0.0.1/\"\n";
    let cases = [
        (
            format!("[source]\nintervl = \"1s\"\n{ok_site}"),
            "source.intervl",
        ),
        (
            format!("[source]\ntimeout = \"soon\"\n{ok_site}"),
            "source.timeout",
        ),
        (
            format!("[source]\ninterval = \"0s\"\n{ok_site}"),
            "source.interval",
        ),
        (
            format!("[source]\nshard = \"5/4\"\n{ok_site}"),
            "source.shard",
        ),
        ("[source]\ntopic = \"t\"\n".to_owned(), "source.sites"),
        (
            format!("{ok_site}[[source.sites]]\nurl = \"ftp://example.com/\"\n"),
            "source.sites[1].url",
        ),
        (
            format!("{ok_site}regex = \"(unclosed\"\n"),
            "source.sites[0].regex",
        ),
        (
            format!("{ok_site}expected_status = [999]\n"),
            "source.sites[0].expected_status",
        ),
        (
            "[source]\nsites_file = \"missing.txt\"\n".to_owned(),
            "source.sites_file",
        ),
        (
            format!("[kafka]\nbrokers = \"\"\n{ok_site}"),
            "kafka.brokers",
        ),
        (
            format!("[source]\ntimeout = \"1h\"\n{ok_site}"),
            "source.timeout",
        ),
        (
            format!("[source]\nshutdown_timeout = \"0s\"\n{ok_site}"),
            "source.shutdown_timeout",
        ),
        (
            format!("[source]\ntls_ca = \"ca.pem\"\ntls_verify = false\n{ok_site}"),
            "source.tls_ca",
        ),
        (
            format!("{ok_site}[[source.sites]]\nurl = \"HTTP://127.0.0.1:80\"\n"),
            "source.sites[1].url",
        ),
    ];
    for (text, key) in &cases {
        let out = check_config(dir.path(), text).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{key}: {stderr}");
        assert!(stderr.contains(key), "{key} not named in: {stderr}");
        assert!(
            stderr.contains("connector.toml"),
            "the file is named: {stderr}"
        );
    }
    // Without --check-config too: refused before anything starts.
    let out = source(&write_config(dir.path(), &cases[0].0))
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    // A bad line of sites_file names that file and line.
    std::fs::write(
        dir.path().join("sites.txt"),
        "http://127.0.0.1/\nnot a url\n",
    )
    .unwrap();
    let out = check_config(dir.path(), "[source]\nsites_file = \"sites.txt\"\n").await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("sites.txt:2: key `url`"), "{stderr}");
    // A bad value on a JSON line is blamed on its own key.
    std::fs::write(
        dir.path().join("sites.txt"),
        "{\"url\": \"http://127.0.0.1/\", \"interval\": \"soon\"}\n",
    )
    .unwrap();
    let out = check_config(dir.path(), "[source]\nsites_file = \"sites.txt\"\n").await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("sites.txt:1: key `interval`"), "{stderr}");
    // A url listed inline and in sites_file: refused, naming both places.
    std::fs::write(dir.path().join("sites.txt"), "# more\nhttp://127.0.0.1\n").unwrap();
    let out = check_config(
        dir.path(),
        &format!("[source]\nsites_file = \"sites.txt\"\n{ok_site}"),
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("sites.txt:2: key `url`")
            && stderr.contains("listed twice")
            && stderr.contains("connector.toml:4 (key `source.sites[0].url`)"),
        "{stderr}"
    );
}

#[tokio::test]
async fn env_overrides_and_dollar_vars_take_effect() {
    let st = stack();
    let s = TestServer::http().await;
    let topic = unique("src-env");
    create_topic(&st.brokers, &topic, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[kafka]\nbrokers = \"127.0.0.1:1\"\n[source]\ntopic = \"not-this-topic\"\nprobe = \"${{TEST_PROBE_NAME}}\"\ninterval = \"${{TEST_INTERVAL:-2s}}\"\nmetrics_address = \"127.0.0.1:0\"\n{}",
        site(&s.url("/"), "")
    );
    let path = write_config(dir.path(), &text);
    let shown = source(&path)
        .arg("--check-config")
        .env("kafka_topic", &topic)
        .env("kafka_host", &st.brokers)
        .env("TEST_PROBE_NAME", "probe-from-env")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&shown.stdout);
    assert_eq!(
        shown.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    assert!(stdout.contains(&format!("topic = \"{topic}\"")), "{stdout}");
    assert!(
        stdout.contains("probe = \"probe-from-env\"") && stdout.contains("interval = \"2s\""),
        "{stdout}"
    );

    let out = source(&path)
        .arg("--once")
        .env("kafka_topic", &topic)
        .env("kafka_host", &st.brokers)
        .env("TEST_PROBE_NAME", "probe-from-env")
        .output()
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let found = records(&consume(&topic).await);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].probe, "probe-from-env");
    assert!(found[0].ok, "{:?}", found[0]);

    // Unset and without a default: refused, naming the key and the variable.
    let out = source(&path)
        .arg("--check-config")
        .env_remove("TEST_PROBE_NAME")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("source.probe") && stderr.contains("TEST_PROBE_NAME"),
        "{stderr}"
    );
}

#[tokio::test]
async fn shutdown_timeout_cancels_slow_checks_each_with_its_record() {
    let s = TestServer::http().await;
    let topic = unique("src-shutdown-timeout");
    create_topic(&stack().brokers, &topic, 1).await;
    // Short intervals, so both sites are checked within a second; the slow
    // one then stays in flight (its later ticks are skipped).
    let sites = [
        site(&s.url("/slow/60000"), "timeout = \"2m\"\ninterval = \"1s\""),
        site(&s.url("/"), "interval = \"1s\""),
    ]
    .concat();
    let stop = CancellationToken::new();
    let running = website_monitor_source::start(
        load(&config(&topic, "shutdown_timeout = \"1s\"", &sites)),
        RunOptions::default(),
        stop.clone(),
    )
    .await
    .unwrap();
    eventually("both sites to be hit", Duration::from_secs(30), || async {
        (s.hits("/slow/60000") >= 1 && s.hits("/") >= 1).then_some(())
    })
    .await;
    let stopped_at = std::time::Instant::now();
    stop.cancel();
    let summary = tokio::time::timeout(Duration::from_secs(20), running.wait())
        .await
        .expect("shutdown is bounded by shutdown_timeout, not by the check's 2 min timeout")
        .unwrap();
    let took = stopped_at.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(8),
        "stopped after {took:?}"
    );
    assert_eq!(summary.delivered, summary.checks_finished, "{summary:?}");
    assert_eq!(summary.failed, 0, "{summary:?}");
    let found = records(&consume(&topic).await);
    assert_eq!(found.len() as u64, summary.checks_finished, "{summary:?}");
    assert_eq!(s.hits("/slow/60000"), 1);
    let slow: Vec<&Record> = found
        .iter()
        .filter(|r| r.url == s.url("/slow/60000"))
        .collect();
    assert_eq!(slow.len(), 1, "one check, one record: {found:?}");
    let slow = slow[0];
    assert_eq!(kind(slow), Some(ErrorKind::Timeout), "{slow:?}");
    assert_eq!(
        slow.error.as_ref().unwrap().message,
        "cancelled at shutdown"
    );
    assert!(
        !slow.ok && slow.status_code.is_none() && slow.duration < 30.0,
        "{slow:?}"
    );
    assert!(
        found.iter().filter(|r| r.url == s.url("/")).all(|r| r.ok),
        "{found:?}"
    );
}

/// The source binary with `--config config`, run by `sh` after the `limits`
/// commands (`ulimit ...`).
fn source_with_ulimit(limits: &str, config: &Path) -> Command {
    let mut sh = Command::new("sh");
    sh.arg("-c")
        .arg(format!("{limits} && exec \"$0\" \"$@\""))
        .arg(binary("website-monitor-source"))
        .arg("--config")
        .arg(config);
    for var in [
        "kafka_host",
        "kafka_topic",
        "kafka_ssl_ca",
        "kafka_ssl_cert",
        "kafka_ssl_key",
        "log_level",
    ] {
        sh.env_remove(var);
    }
    sh
}

#[tokio::test]
async fn the_open_file_limit_is_raised_and_a_too_low_one_is_warned_about() {
    let s = TestServer::http().await;
    let dir = tempfile::tempdir().unwrap();
    // 200 checks at once, each holding a connection for 1.5 s: under a soft
    // limit of 128 most would fail with EMFILE unless the source raises it.
    let list: String = (0..200)
        .map(|n| format!("{}\n", s.url(&format!("/slow/1500?site={n}"))))
        .collect();
    std::fs::write(dir.path().join("sites.txt"), list).unwrap();
    let text = "[kafka]\nbrokers = \"127.0.0.1:1\"\n[source]\nmetrics_address = \"127.0.0.1:0\"\nconcurrency = 200\ntimeout = \"20s\"\nsites_file = \"sites.txt\"\n";
    let path = write_config(dir.path(), text);
    let out = source_with_ulimit("ulimit -Sn 128", &path)
        .args(["--once", "--stdout"])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let lines: Vec<Record> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON record per line"))
        .collect();
    assert_eq!(lines.len(), 200);
    let failed: Vec<&Record> = lines.iter().filter(|r| !r.ok).collect();
    assert!(
        failed.is_empty(),
        "{} failed, e.g. {:?}",
        failed.len(),
        failed.first()
    );
    assert!(
        !stderr.contains("open files"),
        "no warning when the hard limit is enough: {stderr}"
    );

    // A hard limit too low for the concurrency: a warning naming both numbers.
    let list: String = (0..32)
        .map(|n| format!("{}\n", s.url(&format!("/?site={n}"))))
        .collect();
    std::fs::write(dir.path().join("sites.txt"), list).unwrap();
    let text = text.replace("concurrency = 200", "concurrency = 32");
    let path = write_config(dir.path(), &text);
    let out = source_with_ulimit("ulimit -Sn 80 && ulimit -Hn 80", &path)
        .args(["--once", "--stdout"])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("concurrency = 32")
            && stderr.contains("the limit is 80")
            && stderr.contains("ulimit -n 96")
            && stderr.contains("LimitNOFILE=96"),
        "{stderr}"
    );
}

/// The stalls of [`timings_match_curl_and_each_phase_sees_only_its_own_stall`]
/// and the phases measured against them, seconds.
#[derive(Debug, Clone, Copy)]
struct Phases {
    tls: f64,
    ttfb: f64,
    transfer: f64,
}

/// What `curl -w` measures for `url`, trusting `ca`: the median of three runs
/// of each phase (tls = appconnect - connect, ttfb = starttransfer -
/// appconnect, transfer = total - starttransfer). Panics, saying to install
/// it, when curl is missing.
async fn curl_phases(url: &str, ca: &Path) -> Phases {
    let mut runs = Vec::new();
    for _ in 0..3 {
        let out = Command::new("curl")
            // -q first: no ~/.curlrc; no proxy from the environment.
            .args(["-q", "-sS", "--noproxy", "*", "-o", "/dev/null", "--cacert"])
            .arg(ca)
            .args([
                "-w",
                "%{time_namelookup} %{time_connect} %{time_appconnect} %{time_starttransfer} %{time_total}",
                url,
            ])
            .output()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run curl ({e}): this test compares the records' timings with `curl -w`; \
                     install curl (apt-get install curl; `make up` installs it)"
                )
            });
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "curl {url}: {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        let t: Vec<f64> = text
            .split_whitespace()
            .map(|v| v.parse().expect("curl -w gives seconds"))
            .collect();
        let [_namelookup, connect, appconnect, starttransfer, total] = t[..] else {
            panic!("curl -w gave {text:?}");
        };
        runs.push(Phases {
            tls: appconnect - connect,
            ttfb: starttransfer - appconnect,
            transfer: total - starttransfer,
        });
    }
    let median = |f: fn(&Phases) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Phases {
        tls: median(|p| p.tls),
        ttfb: median(|p| p.ttfb),
        transfer: median(|p| p.transfer),
    }
}

/// Whether `r`'s phases each saw their own stall and not another's, and agree
/// with curl: each phase more than its stall less 15 ms (a check thread
/// late to read the headers moves a few ms from `transfer` to `ttfb`), less
/// than its stall + 40 ms (the smallest other stall is 100 ms) and within
/// max(15 ms, 30 %) of curl's. Tolerances for a shared, noisy 2-core machine.
fn judge(what: &str, r: &Record, curl: Phases, stalls: Phases) -> Result<(), String> {
    let table = format!(
        "{what}: tls {:?} (curl {:.4}, stall {}), ttfb {:?} (curl {:.4}, stall {}), transfer {:?} (curl {:.4}, stall {})",
        r.timings.tls, curl.tls, stalls.tls, r.timings.ttfb, curl.ttfb, stalls.ttfb,
        r.timings.transfer, curl.transfer, stalls.transfer
    );
    eprintln!("{table}");
    if !r.ok {
        return Err(format!("{table}: the check failed: {:?}", r.error));
    }
    let mut wrong = Vec::new();
    for (name, got, curl, stall) in [
        ("tls", r.timings.tls, curl.tls, stalls.tls),
        ("ttfb", r.timings.ttfb, curl.ttfb, stalls.ttfb),
        (
            "transfer",
            r.timings.transfer,
            curl.transfer,
            stalls.transfer,
        ),
    ] {
        let Some(got) = got else {
            wrong.push(format!("{name} is null"));
            continue;
        };
        if got < stall - 0.015 {
            wrong.push(format!(
                "{name} {got:.4} s is 15 ms or more shorter than its own stall"
            ));
        }
        if got >= stall + 0.040 {
            wrong.push(format!(
                "{name} {got:.4} s is 40 ms or more over its stall of {stall} s"
            ));
        }
        if (got - curl).abs() > (0.3 * curl).max(0.015) {
            wrong.push(format!(
                "{name} {got:.4} s is not within max(15 ms, 30 %) of curl's {curl:.4} s"
            ));
        }
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!("{table}: {}", wrong.join("; ")))
    }
}

/// Up to three attempts of `attempt` (a noisy machine can spoil one; a
/// process's start-up work is in every attempt, so no retry hides it).
async fn within_three_attempts<F, Fut>(what: &str, mut attempt: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let mut failures = Vec::new();
    for _ in 0..3 {
        match attempt().await {
            Ok(()) => return,
            Err(e) => failures.push(e),
        }
    }
    panic!("{what}, three attempts:\n{}", failures.join("\n"));
}

#[tokio::test]
async fn timings_match_curl_and_each_phase_sees_only_its_own_stall() {
    let stalls = Phases {
        tls: 0.150,
        ttfb: 0.120,
        transfer: 0.100,
    };
    let ms = |s: f64| (s * 1000.0).round() as u64;
    let pki = Pki::new();
    let server = TestServer::https_stalling_handshake(
        pki.ca_signed.clone(),
        Duration::from_millis(ms(stalls.tls)),
    )
    .await;
    let url = server.url(&format!(
        "/phases/{}/{}",
        ms(stalls.ttfb),
        ms(stalls.transfer)
    ));
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let text = format!(
        "[kafka]\nbrokers = \"127.0.0.1:1\"\n[source]\nmetrics_address = \"127.0.0.1:0\"\n{}",
        site(&url, "tls_ca = \"ca.pem\"\ninterval = \"1s\"")
    );
    let config = write_config(dir.path(), &text);

    // `--once --stdout`: every record is the first check of its process.
    within_three_attempts("--once --stdout", || async {
        let curl = curl_phases(&url, &ca).await;
        let out = source(&config)
            .args(["--once", "--stdout"])
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        let stdout = String::from_utf8(out.stdout).unwrap();
        let line = stdout.lines().next().expect("one record");
        let r: Record = serde_json::from_str(line).expect("a JSON record");
        judge("--once", &r, curl, stalls)
    })
    .await;

    // A running source: its first check and two later ones.
    within_three_attempts("running source", || async {
        use tokio::io::AsyncBufReadExt;
        let curl = curl_phases(&url, &ca).await;
        let mut child = source(&config)
            .arg("--stdout")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the source");
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut found = Vec::new();
        for n in 0..3 {
            let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
                .await
                .expect("a record within 30 s")
                .unwrap()
                .expect("the source keeps running");
            let r: Record = serde_json::from_str(&line).expect("a JSON record");
            found.push(judge(&format!("running, check {n}"), &r, curl, stalls));
        }
        child.kill().await.unwrap();
        found.into_iter().collect()
    })
    .await;
}
