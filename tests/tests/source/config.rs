//! Configuration: refused files (exit code 2, naming the file, line and key),
//! the environment (the seed's variables, `${VAR}`), mTLS settings from the
//! environment and from the shipped `pipelines/mtls.toml`.

use std::path::Path;
use std::process::Output;

use tokio::process::Command;
use website_monitor_tests::http::TestServer;
use website_monitor_tests::source::{consume, final_counts, offline_config, records};
use website_monitor_tests::{binary, create_topic, repo_root, stack, unique, Site};

use crate::source_bin;

/// Writes `text`, a malformed file under test, as `dir/connector.toml`.
fn write_config(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("connector.toml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn check_config(dir: &Path, text: &str) -> Output {
    source_bin(&write_config(dir, text))
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
    let out = source_bin(&write_config(dir.path(), &cases[0].0))
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
    // `${…}` is expanded by the loader, not by TOML: typed values hold it as text.
    let path = offline_config()
        .set("topic", "not-this-topic")
        .set("probe", "${TEST_PROBE_NAME}")
        .set("interval", "${TEST_INTERVAL:-2s}")
        .site(Site::new(s.url("/")))
        .write(dir.path());
    let shown = source_bin(&path)
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

    let out = source_bin(&path)
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
    let out = source_bin(&path)
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
async fn mtls_through_9094_with_pem_paths_from_the_environment() {
    let st = stack();
    let s = TestServer::http().await;
    let topic = unique("src-mtls");
    create_topic(&st.brokers, &topic, 1).await;
    let dir = tempfile::tempdir().unwrap();
    // No TLS keys in the file: the seed's variables bring them.
    let path = offline_config()
        .set("topic", topic.as_str())
        .site(Site::new(s.url("/")))
        .write(dir.path());
    let tls = &st.tls_dir;
    let out = source_bin(&path)
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
