//! The source's life: a failed start, SIGTERM mid-run, `shutdown_timeout`,
//! dropping it without a shutdown, a closed stderr, the open-file limit,
//! log files without colour codes.

use std::path::Path;
use std::time::Duration;

use tokio::process::Command;
use tokio_util::sync::CancellationToken;
use website_monitor_source::record::{ErrorKind, Record};
use website_monitor_source::{RunOptions, SourceError};
use website_monitor_tests::http::TestServer;
use website_monitor_tests::process::SEED_ENV;
use website_monitor_tests::source::{
    self, consume, final_counts, kind, offline_config, records, source_config, stdout_records,
};
use website_monitor_tests::{binary, create_topic, eventually, sigterm, stack, unique, Site};

use crate::{source_bin, spawn_source};

#[tokio::test]
async fn sigterm_mid_run_exits_0_with_every_finished_check_in_the_topic() {
    let s = TestServer::http().await;
    let topic = unique("src-sigterm");
    create_topic(&stack().brokers, &topic, 2).await;
    let dir = tempfile::tempdir().unwrap();
    let path = source_config(&topic)
        .sites([
            Site::new(s.url("/")).set("interval", "100ms"),
            Site::new(s.url("/text")).set("interval", "100ms"),
            Site::new(s.url("/slow/1500")).set("interval", "300ms"),
        ])
        .write(dir.path());
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

#[tokio::test]
async fn dropping_running_without_a_shutdown_stops_the_check_threads() {
    let s = TestServer::http().await;
    let topic = unique("src-dropped");
    create_topic(&stack().brokers, &topic, 1).await;
    let config = source_config(&topic).site(Site::new(s.url("/slow/50")).set("interval", "100ms"));
    let running = source::start(&config, &CancellationToken::new()).await;
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
    let sites: Vec<String> = (0..4).map(|i| s.url(&format!("/?{i}"))).collect();
    // The metrics address is taken (and this is no --once run).
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = source_config(&topic)
        .set("threads", 2)
        .set("metrics_address", taken.local_addr().unwrap().to_string())
        .sites(&sites);
    let e = website_monitor_source::start(
        config.source_config(),
        RunOptions::default(),
        CancellationToken::new(),
    )
    .await
    .err()
    .expect("the address is taken");
    assert!(matches!(e, SourceError::Telemetry(_)), "{e}");
    // A CA file without a certificate on a site of the second thread.
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let config = source_config(&topic).set("threads", 2).sites([
        Site::new(s.url("/?ok")),
        Site::new(s.url("/?bad")).set("tls_ca", empty.display().to_string()),
    ]);
    let e = website_monitor_source::start(
        config.source_config(),
        RunOptions::default(),
        CancellationToken::new(),
    )
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
    let path = source_config(&topic)
        .site(Site::new(s.url("/")).set("interval", "100ms"))
        .write(dir.path());
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
async fn shutdown_timeout_cancels_slow_checks_each_with_its_record() {
    let s = TestServer::http().await;
    let topic = unique("src-shutdown-timeout");
    create_topic(&stack().brokers, &topic, 1).await;
    // Short intervals, so both sites are checked within a second; the slow
    // one then stays in flight (its later ticks are skipped).
    let config = source_config(&topic).set("shutdown_timeout", "1s").sites([
        Site::new(s.url("/slow/60000"))
            .set("timeout", "2m")
            .set("interval", "1s"),
        Site::new(s.url("/")).set("interval", "1s"),
    ]);
    let stop = CancellationToken::new();
    let running = source::start(&config, &stop).await;
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
    for var in SEED_ENV {
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
    let config = offline_config()
        .set("concurrency", 200)
        .set("timeout", "20s")
        .set("sites_file", "sites.txt");
    let path = config.write(dir.path());
    let out = source_with_ulimit("ulimit -Sn 128", &path)
        .args(["--once", "--stdout"])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let lines: Vec<Record> = stdout_records(out.stdout);
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
    let path = config.set("concurrency", 32).write(dir.path());
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

/// Text log lines written to a file (stderr not a terminal) carry no ANSI
/// colour codes: a log file or shipper gets plain text.
#[tokio::test]
async fn text_logs_to_a_file_have_no_colour_codes() {
    let s = TestServer::http().await;
    let dir = tempfile::tempdir().unwrap();
    let path = offline_config()
        .top("log_level", "debug")
        .sites([Site::new(s.url("/"))])
        .write(dir.path());
    let log_path = dir.path().join("source.log");
    let status = source_bin(&path)
        .args(["--once", "--stdout"])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .status()
        .await
        .unwrap();
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("source stopped"), "the run logged: {log}");
    assert!(
        !log.contains('\x1b'),
        "no escape sequence in a log file: {log:?}"
    );
}
