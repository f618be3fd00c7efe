//! The status model through the pair: one source process per probe checking
//! one url of a [`crate::http::TestServer`] (`/by-probe`, each sending its
//! name in an `x-probe` header), and what the sink made of it, probe by probe.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::Site;
use crate::process::Proc;
use crate::sink::SinkTest;
use crate::source::source_config;
use crate::wait::{eventually, WAIT};

/// Source processes, one per probe, each checking `url` every 300 ms and
/// writing `topic`; each is killed (SIGKILL) when dropped.
pub struct Probes {
    topic: String,
    url: String,
    running: BTreeMap<String, Proc>,
}

impl Probes {
    /// Starts a source process for each of `names`.
    pub fn start(topic: &str, url: &str, names: &[&str]) -> Self {
        let mut probes = Probes {
            topic: topic.to_owned(),
            url: url.to_owned(),
            running: BTreeMap::new(),
        };
        for name in names {
            probes.start_one(name);
        }
        probes
    }

    /// Starts (again) the source process of probe `name`.
    pub fn start_one(&mut self, name: &str) {
        let mut headers = toml::Table::new();
        headers.insert("x-probe".into(), name.into());
        let config = source_config(&self.topic).set("probe", name).site(
            Site::new(self.url.as_str())
                .set("interval", "300ms")
                .set("timeout", "2s")
                .set("headers", toml::Value::Table(headers)),
        );
        let proc = Proc::spawn("source", &config.text());
        assert!(
            self.running.insert(name.to_owned(), proc).is_none(),
            "{name} was running"
        );
    }

    /// Kills probe `name`'s source process with SIGKILL: it stops reporting
    /// without a word.
    pub fn kill9(&mut self, name: &str) {
        let mut proc = self.running.remove(name).expect("a running probe");
        proc.kill9();
    }

    /// Stops every source process with SIGTERM; each must exit 0.
    pub fn stop(&mut self) {
        for (name, mut proc) in std::mem::take(&mut self.running) {
            assert_eq!(
                proc.term(),
                Some(0),
                "source {name} stops cleanly; log:\n{}",
                proc.log()
            );
        }
    }
}

/// A probe's row in `site_probe_state`.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeRow {
    /// The state shown (`maintenance` in a window).
    pub state: String,
    /// What its checks say.
    pub health: String,
    /// Its interval as the sink took it from the records, in milliseconds.
    pub interval_ms: Option<i32>,
    /// From when the sink last heard from it (`heard_at`, or its newest
    /// check's time) to `since`, in milliseconds.
    pub since_heard_ms: Option<f64>,
}

/// Probe `probe`'s view of `url`, if it has one.
pub async fn probe_row(t: &SinkTest, url: &str, probe: &str) -> Option<ProbeRow> {
    let schema = &t.schema;
    let sql = format!(
        "SELECT ps.state, ps.health, ps.interval_ms,
                (extract(epoch FROM ps.since - coalesce(ps.heard_at, ps.last_checked_at)) * 1000)::float8
         FROM \"{schema}\".site_probe_state ps
         JOIN \"{schema}\".site s ON s.id = ps.site_id
         JOIN \"{schema}\".site_probe p ON p.id = ps.probe_id
         WHERE s.url = $1 AND p.name = $2"
    );
    let row = t.db.query_opt(&sql, &[&url, &probe]).await.unwrap()?;
    Some(ProbeRow {
        state: row.get(0),
        health: row.get(1),
        interval_ms: row.get(2),
        since_heard_ms: row.get(3),
    })
}

/// Waits (up to [`WAIT`]) until probe `probe`'s view of `url` has health
/// `want`; its row then.
pub async fn wait_probe(t: &SinkTest, url: &str, probe: &str, want: &str) -> ProbeRow {
    let what = format!("{probe}'s view of {url} to be {want}");
    eventually(&what, WAIT, || async {
        probe_row(t, url, probe).await.filter(|r| r.health == want)
    })
    .await
}

/// Waits until the history holds `n` more checks of `url` by `probe` than now.
pub async fn more_checks(t: &SinkTest, url: &str, probe: &str, n: i64) {
    let filter = checks_of(t, url, probe, "");
    let start = t.count("site_check", &filter).await;
    eventually("more checks", WAIT, || async {
        (t.count("site_check", &filter).await >= start + n).then_some(())
    })
    .await;
}

/// A `WHERE` clause for `site_check`: the checks of `url` by `probe`, and `and` (SQL, may be empty).
pub fn checks_of(t: &SinkTest, url: &str, probe: &str, and: &str) -> String {
    let schema = &t.schema;
    format!(
        "WHERE site_id = (SELECT id FROM \"{schema}\".site WHERE url = '{url}')
           AND probe_id = (SELECT id FROM \"{schema}\".site_probe WHERE name = '{probe}') {and}"
    )
}

/// Waits until the sink has published every transition to its topic.
pub async fn wait_published(t: &SinkTest) {
    eventually(
        "every transition published",
        Duration::from_secs(30),
        || async {
            (t.count("site_transition", "WHERE published_at IS NULL")
                .await
                == 0)
                .then_some(())
        },
    )
    .await;
}
