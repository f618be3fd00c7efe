//! The Prometheus rules in `prometheus/` (issue 16): checked and unit-tested
//! with promtool, then run by the real Prometheus scraping both connectors,
//! where a site made to fail fires `WebsiteDown`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use website_monitor_tests::http::TestServer;
use website_monitor_tests::process::free_port;
use website_monitor_tests::sink::SinkTest;
use website_monitor_tests::source::source_config;
use website_monitor_tests::wait::eventually;
use website_monitor_tests::Proc;

/// The repository's `prometheus/` folder.
fn rules_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../prometheus")
}

/// Runs `promtool args…` in `prometheus/`; panics with its output unless it succeeds.
fn promtool(args: &[&str]) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(rules_dir())
        .output()
        .expect("promtool runs (apt-get install prometheus; scripts/stack.sh installs it)");
    assert!(
        out.status.success(),
        "promtool {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_rules_and_the_example_config_pass_promtool_check() {
    promtool(&["check", "rules", "rules.yml"]);
    promtool(&["check", "config", "prometheus.yml"]);
}

#[test]
fn the_rules_pass_their_unit_tests() {
    promtool(&["test", "rules", "rules_test.yml"]);
}

/// A Prometheus server, killed when dropped.
struct Prometheus {
    child: std::process::Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts Prometheus scraping `source` and `sink` every second with the
    /// repository's rules, every `for` set to 0s (the expressions as shipped).
    fn start(source: &str, sink: &str) -> Self {
        let dir = tempfile::tempdir().expect("temporary folder");
        let rules = std::fs::read_to_string(rules_dir().join("rules.yml")).expect("rules.yml");
        let rules: String = rules
            .lines()
            .map(|l| match l.trim_start().strip_prefix("for: ") {
                Some(_) => format!("{}for: 0s\n", &l[..l.len() - l.trim_start().len()]),
                None => format!("{l}\n"),
            })
            .collect();
        std::fs::write(dir.path().join("rules.yml"), rules).unwrap();
        let config = format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}
rule_files: [rules.yml]
scrape_configs:
  - job_name: website-monitor-source
    static_configs: [{{targets: ['{source}']}}]
  - job_name: website-monitor-sink
    static_configs: [{{targets: ['{sink}']}}]
"
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus starts (apt-get install prometheus)");
        Self {
            child,
            addr,
            _dir: dir,
        }
    }

    /// `GET /api/v1/<path>`'s `data`, when Prometheus answers.
    async fn api(&self, path: &str) -> Option<Value> {
        let url = format!("http://{}/api/v1/{path}", self.addr);
        let text = reqwest::get(&url).await.ok()?.text().await.ok()?;
        let body: Value = serde_json::from_str(&text).ok()?;
        (body["status"] == "success").then(|| body["data"].clone())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_both_connectors_and_a_failing_site_fires_website_down() {
    let t = SinkTest::new("prometheus", 1).await;
    let server = TestServer::http().await;
    let (ok_url, down_url) = (
        server.url("/"),
        format!("http://127.0.0.1:{}/", free_port()),
    );
    let source_addr = format!("127.0.0.1:{}", free_port());
    let sink_addr = format!("127.0.0.1:{}", free_port());
    let source = source_config(&t.topic)
        .set("metrics_address", source_addr.as_str())
        .set("per_site_metrics", true)
        .site(website_monitor_tests::config::Site::new(ok_url.as_str()).set("interval", "1s"))
        .site(website_monitor_tests::config::Site::new(down_url.as_str()).set("interval", "1s"));
    let _source = Proc::spawn("source", &source.text());
    let _sink = Proc::spawn(
        "sink",
        &t.config().set("metrics_address", sink_addr.as_str()).text(),
    );
    let prometheus = Prometheus::start(&source_addr, &sink_addr);

    eventually(
        "Prometheus to scrape both connectors",
        Duration::from_secs(60),
        || async {
            let targets = prometheus.api("targets").await?;
            let up = targets["activeTargets"]
                .as_array()?
                .iter()
                .filter(|t| t["health"] == "up")
                .count();
            (up == 2).then_some(())
        },
    )
    .await;
    eventually(
        "both connectors ready in Prometheus",
        Duration::from_secs(60),
        || async {
            let ready = prometheus.api("query?query=website_monitor_ready").await?;
            let ones = ready["result"]
                .as_array()?
                .iter()
                .filter(|r| r["value"][1] == "1")
                .count();
            (ones == 2).then_some(())
        },
    )
    .await;
    let firing = eventually("WebsiteDown to fire", Duration::from_secs(60), || async {
        let alerts = prometheus.api("alerts").await?;
        let down: Vec<String> = alerts["alerts"]
            .as_array()?
            .iter()
            .filter(|a| a["labels"]["alertname"] == "WebsiteDown" && a["state"] == "firing")
            .filter_map(|a| a["labels"]["url"].as_str().map(str::to_owned))
            .collect();
        (!down.is_empty()).then_some(down)
    })
    .await;
    assert_eq!(firing, [down_url], "only the failing site is down");
}
