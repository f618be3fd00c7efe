//! Secrets never leave the process, and what `--check-config` accepts, runs
//! (issue 11, parts 2 and 3). The secret tests run the real source against
//! the local Kafka with HTTP targets on 127.0.0.1; the bounds tests run the
//! real binaries' `--check-config`.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use tokio::process::Command;
use website_monitor_source::record::Record;
use website_monitor_tests::http::TestServer;
use website_monitor_tests::source::{consume, records, run_once, source_config};
use website_monitor_tests::{
    connector, consume_all, create_topic, eventually, free_port, http_get, stack, unique,
    ConfigBuilder,
};

fn write_config(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("connector.toml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn check_config(name: &str, dir: &Path, text: &str) -> Output {
    connector(name, &write_config(dir, text))
        .arg("--check-config")
        .output()
        .await
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Standard base64 of `bytes` (what `Authorization: Basic` carries).
fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// One round (`--once`) in-process; the records of `topic`.
async fn once(topic: &str, config: &ConfigBuilder) -> Vec<Record> {
    run_once(topic, config).await;
    records(&consume(topic).await)
}

#[tokio::test]
async fn a_url_password_is_in_no_record_key_metric_log_or_check_config_yet_is_sent() {
    let s = TestServer::http().await;
    let password = format!("pw-{}", unique("secret"));
    let port = s.addr().port();
    let url = format!("http://alice:{password}@127.0.0.1:{port}/");
    // A second site whose check fails, so the error path is covered too.
    let closed = free_port();
    let failing = format!("http://bob:{password}@127.0.0.1:{closed}/down");
    let topic = unique("src-secret");
    create_topic(&stack().brokers, &topic, 1).await;
    let metrics_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let path = source_config(&topic)
        .top("log_level", "debug")
        .set("probe", "p")
        .set("interval", "200ms")
        .set("metrics_address", format!("127.0.0.1:{metrics_port}"))
        .sites([&url, &failing])
        .write(dir.path());

    let checked = connector("website-monitor-source", &path)
        .arg("--check-config")
        .output()
        .await
        .unwrap();
    let shown = text(&checked);
    assert_eq!(checked.status.code(), Some(0), "{shown}");
    assert!(
        !shown.contains(&password),
        "check-config shows it:\n{shown}"
    );
    assert!(
        shown.contains(&format!("http://alice:***@127.0.0.1:{port}/")),
        "{shown}"
    );

    let child = connector("website-monitor-source", &path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    eventually("three checks", Duration::from_secs(30), || async {
        (s.hits("/") >= 3).then_some(())
    })
    .await;
    let metrics = eventually("the metrics page", Duration::from_secs(10), || async {
        http_get(&format!("127.0.0.1:{metrics_port}"), "/metrics")
            .await
            .filter(|(code, body)| *code == 200 && body.contains("alice"))
            .map(|(_, body)| body)
    })
    .await;
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await
        .unwrap();
    let out = child.wait_with_output().await.unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{log}");

    let consumed = consume_all(
        &stack().brokers,
        &topic,
        Duration::from_secs(3),
        Duration::from_secs(60),
    )
    .await;
    assert!(consumed.len() >= 4, "{consumed:?}");
    let shown_url = format!("http://alice:***@127.0.0.1:{port}/");
    let shown_failing = format!("http://bob:***@127.0.0.1:{closed}/down");
    for c in &consumed {
        let key = String::from_utf8_lossy(c.key.as_deref().unwrap_or_default()).into_owned();
        let value = String::from_utf8_lossy(&c.payload).into_owned();
        assert!(
            !key.contains(&password) && !value.contains(&password),
            "{key} {value}"
        );
        assert!(key == shown_url || key == shown_failing, "{key}");
        let record: Record = serde_json::from_slice(&c.payload).unwrap();
        assert_eq!(record.url, key);
    }
    assert!(
        consumed
            .iter()
            .any(|c| c.key.as_deref() == Some(shown_failing.as_bytes())),
        "the failing site has records too"
    );
    assert!(!metrics.contains(&password), "{metrics}");
    assert!(metrics.contains(&shown_url), "{metrics}");
    assert!(!log.contains(&password), "{log}");
    // The request itself still carried the credentials.
    let expected = format!("Basic {}", base64(format!("alice:{password}").as_bytes()));
    let requests = s.requests("/");
    assert!(!requests.is_empty());
    for headers in requests {
        assert_eq!(
            headers.get("authorization").and_then(|v| v.to_str().ok()),
            Some(expected.as_str())
        );
    }
}

#[tokio::test]
async fn a_redirect_to_another_origin_gets_none_of_the_configured_headers() {
    let a = TestServer::http().await;
    let b = TestServer::http().await;
    let topic = unique("src-redirect-origin");
    let headers: toml::Table = [
        ("authorization", "Bearer tok"),
        ("cookie", "sid=1"),
        ("x-api-key", "k1"),
        ("proxy-authorization", "Basic cHJveHk="),
        ("x-custom", "c1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), toml::Value::from(v)))
    .collect();
    let config = source_config(&topic)
        .set("probe", "p")
        .set("headers", headers)
        .site(a.url(&format!("/to/{}/text", b.addr().port())))
        .site(a.url("/redirect/1"));
    let records = once(&topic, &config).await;
    assert_eq!(records.len(), 2, "{records:?}");
    for r in &records {
        assert!(r.ok && r.redirects == 1, "{r:?}");
    }
    let sent = |h: &hyper::HeaderMap, name: &str| h.get(name).is_some();
    // The first origin got them all.
    let first = a.requests(&format!("/to/{}/text", b.addr().port()));
    assert!(
        [
            "authorization",
            "cookie",
            "x-api-key",
            "proxy-authorization",
            "x-custom"
        ]
        .iter()
        .all(|n| sent(&first[0], n)),
        "{first:?}"
    );
    // The other origin got none of them.
    let landing = b.requests("/text");
    assert_eq!(landing.len(), 1);
    for name in [
        "authorization",
        "cookie",
        "x-api-key",
        "proxy-authorization",
        "x-custom",
    ] {
        assert!(
            !sent(&landing[0], name),
            "{name} sent to another origin: {landing:?}"
        );
    }
    // A redirect within the origin keeps them.
    let same = a.requests("/redirect/0");
    assert_eq!(same.len(), 1);
    assert!(
        sent(&same[0], "authorization") && sent(&same[0], "x-custom"),
        "{same:?}"
    );
}

#[tokio::test]
async fn an_error_message_built_from_a_huge_location_is_truncated() {
    let s = TestServer::http().await;
    let topic = unique("src-long-location");
    let config = source_config(&topic)
        .set("probe", "p")
        .site(s.url("/long-location/300000"));
    let records = once(&topic, &config).await;
    assert_eq!(records.len(), 1);
    let e = records[0].error.as_ref().expect("an error");
    assert!(
        e.message.len() <= 1100 && e.message.contains("truncated"),
        "{} bytes: {}",
        e.message.len(),
        &e.message[..e.message.len().min(300)]
    );
}

#[tokio::test]
async fn check_config_masks_credential_headers_kafka_keys_and_postgres_passwords() {
    let dir = tempfile::tempdir().unwrap();
    let out = check_config(
        "website-monitor-source",
        dir.path(),
        "[kafka.options]\n\"ssl.key.pem\" = \"-----BEGIN PRIVATE KEY-----MIIEsecretkey\"\n\"ssl.key.location\" = \"/etc/kafka/key.pem\"\n[source]\nheaders = { authorization = \"Bearer sekrit-1\", \"x-api-key\" = \"sekrit-2\", accept = \"text/html\" }\n[[source.sites]]\nurl = \"http://127.0.0.1/\"\nheaders = { cookie = \"sid=sekrit-3\", \"proxy-authorization\" = \"Basic sekrit-4\", \"x-session-token\" = \"sekrit-5\" }\n",
    )
    .await;
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    for secret in ["MIIEsecretkey", "sekrit-"] {
        assert!(!shown.contains(secret), "{secret} shown:\n{shown}");
    }
    assert!(
        shown.contains("/etc/kafka/key.pem") && shown.contains("text/html"),
        "what is no secret stays visible:\n{shown}"
    );
    for uri in [
        "postgres://u:se/cr@t@127.0.0.1/db",
        "host=127.0.0.1 user=u password='se/cr et' dbname=db",
        "postgres://127.0.0.1/db?user=u&password=se/cr",
    ] {
        let out = check_config(
            "website-monitor-sink",
            dir.path(),
            &format!("[sink]\npostgres_uri = \"{uri}\"\n"),
        )
        .await;
        let shown = text(&out);
        assert_eq!(out.status.code(), Some(0), "{uri}: {shown}");
        assert!(!shown.contains("se/cr"), "{uri}:\n{shown}");
        assert!(shown.contains("127.0.0.1"), "{shown}");
    }
}

/// Each (config text, key, line): `--check-config` exits 2 with
/// `connector.toml:LINE: key `KEY``.
async fn assert_refused(name: &str, cases: &[(String, &str, usize)]) {
    let dir = tempfile::tempdir().unwrap();
    for (text, key, line) in cases {
        let out = check_config(name, dir.path(), text).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{key}: {stderr}");
        assert!(
            stderr.contains(&format!("connector.toml:{line}: key `{key}`")),
            "{key} at line {line} not named in: {stderr}"
        );
        assert!(
            stderr.len() < 4096,
            "a bounded message: {} bytes",
            stderr.len()
        );
    }
}

#[tokio::test]
async fn source_settings_out_of_bounds_exit_2_naming_file_line_and_key() {
    let site = "[[source.sites]]\nurl = \"http://127.0.0.1/\"\n";
    let long_url = format!("http://127.0.0.1/{}", "a".repeat(100_000));
    let cases = [
        (
            format!("[source]\nshutdown_timeout = \"500000000000y\"\n{site}"),
            "source.shutdown_timeout",
            2,
        ),
        (
            format!("[source]\nflush_timeout = \"500000000000y\"\n{site}"),
            "source.flush_timeout",
            2,
        ),
        (
            format!("[source]\ninterval = \"1ns\"\n{site}"),
            "source.interval",
            2,
        ),
        (
            format!("[source]\ninterval = \"500000000000y\"\n{site}"),
            "source.interval",
            2,
        ),
        (
            format!("{site}interval = \"1ns\"\n"),
            "source.sites[0].interval",
            3,
        ),
        (format!("log_level = \"loud\"\n{site}"), "log_level", 1),
        (
            format!("[source]\ntopic = \"site status!\"\n{site}"),
            "source.topic",
            2,
        ),
        (
            format!("[source]\ntopic = \"..\"\n{site}"),
            "source.topic",
            2,
        ),
        (
            format!("[source]\ntopic = \"{}\"\n{site}", "t".repeat(250)),
            "source.topic",
            2,
        ),
        (
            format!("[source]\nprobe = \"eu\\u0000west\"\n{site}"),
            "source.probe",
            2,
        ),
        (
            format!("[source]\nprobe = \"eu\\nwest\"\n{site}"),
            "source.probe",
            2,
        ),
        (
            format!("[[source.sites]]\nurl = \"{long_url}\"\n"),
            "source.sites[0].url",
            2,
        ),
        (
            format!("[source]\nmax_body_bytes = 10000000000\n{site}"),
            "source.max_body_bytes",
            2,
        ),
        (
            format!("{site}max_redirects = 1000\n"),
            "source.sites[0].max_redirects",
            3,
        ),
        (
            format!("[source]\nmetrics_address = \"nope\"\n{site}"),
            "source.metrics_address",
            2,
        ),
        (
            format!("[kafka]\nbrokers = \"nohostport\"\n{site}"),
            "kafka.brokers",
            2,
        ),
        (
            format!("[kafka.options]\n\"linger.ms\" = \"soon\"\n{site}"),
            "kafka.options.linger.ms",
            2,
        ),
        (
            format!("[kafka.options]\n\"no.such.option\" = \"1\"\n{site}"),
            "kafka.options.no.such.option",
            2,
        ),
    ];
    assert_refused("website-monitor-source", &cases).await;
}

#[tokio::test]
async fn sink_settings_out_of_bounds_exit_2_naming_file_line_and_key() {
    let cases = [
        (
            "[sink]\nbatch_timeout = \"500000000000y\"\n".to_owned(),
            "sink.batch_timeout",
            2,
        ),
        (
            "[sink]\nshutdown_timeout = \"500000000000y\"\n".to_owned(),
            "sink.shutdown_timeout",
            2,
        ),
        (
            "[sink]\nwrite_timeout = \"500000000000y\"\n".to_owned(),
            "sink.write_timeout",
            2,
        ),
        (
            "[sink]\nmetrics_address = \"nope\"\n".to_owned(),
            "sink.metrics_address",
            2,
        ),
        ("log_level = \"loud\"\n[sink]\n".to_owned(), "log_level", 1),
        ("[sink]\ntopic = \"a/b\"\n".to_owned(), "sink.topic", 2),
        ("[sink]\ntopic = \".\"\n".to_owned(), "sink.topic", 2),
        (
            "[sink]\nbatch_size = 100000000000\n".to_owned(),
            "sink.batch_size",
            2,
        ),
        (
            "[sink]\nbatch_max_bytes = 100000000000\n".to_owned(),
            "sink.batch_max_bytes",
            2,
        ),
        (
            "[sink]\nmax_record_bytes = 100000000000\n".to_owned(),
            "sink.max_record_bytes",
            2,
        ),
        (
            "[sink]\nmax_url_bytes = 100000\n".to_owned(),
            "sink.max_url_bytes",
            2,
        ),
        (
            "[sink]\ngroup_id = \"g\\u0000\"\n".to_owned(),
            "sink.group_id",
            2,
        ),
    ];
    assert_refused("website-monitor-sink", &cases).await;
    // Without --check-config too: refused before anything starts, exit 2 (not 1).
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "[sink]\nmetrics_address = \"nope\"\n");
    let out = connector("website-monitor-sink", &path)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("connector.toml:2: key `sink.metrics_address`"),
        "{stderr}"
    );
}
