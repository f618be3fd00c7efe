//! Prometheus http_sd: `http_sd_url` fetched at start and every
//! `http_sd_refresh`, its `[{"targets": [...], "labels": {...}}]` turned
//! into sites. A fetch that fails (connection, timeout, HTTP status, a body
//! that is not that JSON) keeps the last good list running; a target that
//! cannot be used is logged and counted, the others run.
//!
//! A target is a url (`https://example.com/health`), or Prometheus's
//! `host:port`, which becomes `__scheme__://host:port__metrics_path__`
//! (`http` and `/` when those labels are missing). Labels that name a
//! per-site setting set it: `interval` (or `__scrape_interval__`), `timeout`
//! (or `__scrape_timeout__`), `method`, `body`, `regex`, `expected_status`
//! (`"200,204"`), `follow_redirects`, `max_redirects`, `max_body_bytes`,
//! `keep_alive`, `tls_verify`; the other labels are ignored.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Change, Origin, Update};
use crate::config::SiteUrl;
use crate::metrics;

/// The largest list read: far above a million targets' worth of groups
/// of a few hundred bytes... per site (in practice, a few MiB).
const MAX_BODY_BYTES: usize = 256 << 20;

/// A fetch takes at most this long (or `http_sd_refresh`, if shorter).
const MAX_FETCH: Duration = Duration::from_secs(30);

/// The http_sd client could not be made.
#[derive(Debug, thiserror::Error)]
#[error("source.http_sd_url: cannot set up the HTTP client ({0})")]
pub struct HttpSdError(String);

/// One group of the http_sd list.
#[derive(Debug, Deserialize)]
struct Group {
    targets: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// Labels and the per-site key each sets.
const LABELS: [(&str, &str); 13] = [
    ("__scrape_interval__", "interval"),
    ("interval", "interval"),
    ("__scrape_timeout__", "timeout"),
    ("timeout", "timeout"),
    ("method", "method"),
    ("body", "body"),
    ("regex", "regex"),
    ("expected_status", "expected_status"),
    ("follow_redirects", "follow_redirects"),
    ("max_redirects", "max_redirects"),
    ("max_body_bytes", "max_body_bytes"),
    ("keep_alive", "keep_alive"),
    ("tls_verify", "tls_verify"),
];

/// Fetches the list and sends it.
pub struct Poller {
    url: SiteUrl,
    every: Duration,
    client: reqwest::Client,
    tx: mpsc::Sender<Update>,
}

impl Poller {
    /// A poller of `url` every `every`.
    pub fn new(
        url: SiteUrl,
        every: Duration,
        tx: mpsc::Sender<Update>,
    ) -> Result<Self, HttpSdError> {
        let tls = crate::check::tls::TlsBase::load()
            .and_then(|base| base.client_config(None, true))
            .map_err(|e| HttpSdError(e.to_string()))?;
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(every.min(MAX_FETCH))
            .build()
            .map_err(|e| HttpSdError(e.to_string()))?;
        Ok(Poller {
            url,
            every,
            client,
            tx,
        })
    }

    /// Fetches at once, then every `every`, until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let mut ready = false;
        let mut running = 0;
        metrics::http_sd_started();
        loop {
            match self.fetch().await {
                Ok(changes) => {
                    metrics::http_sd_refresh(true);
                    running = changes
                        .iter()
                        .filter(|c| matches!(c, Change::Put(..)))
                        .count();
                    if self
                        .tx
                        .send(Update::Changes(Origin::HttpSd, changes))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Err(e) => {
                    metrics::http_sd_refresh(false);
                    tracing::error!(
                        url = %self.url,
                        "http_sd_url could not be used: {e}; the last good list keeps running ({running} sites); make the url answer 200 with [{{\"targets\": [...], \"labels\": {{...}}}}] (docs/discovery.md)"
                    );
                }
            }
            if !ready {
                ready = true;
                if self.tx.send(Update::Ready(Origin::HttpSd)).await.is_err() {
                    return;
                }
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(self.every) => {}
            }
        }
    }

    /// One fetch: the sites of the list, or why there is none.
    async fn fetch(&self) -> Result<Vec<Change>, String> {
        let mut response = self
            .client
            .get(self.url.request().clone())
            .header("Accept", "application/json")
            .header(
                "X-Prometheus-Refresh-Interval-Seconds",
                self.every.as_secs().to_string(),
            )
            .send()
            .await
            .map_err(|e| format!("the request failed ({})", error_chain(&e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("it answered HTTP {status}"));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("reading the answer failed ({})", error_chain(&e)))?
        {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(format!("the answer is larger than {MAX_BODY_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        parse_targets(&body)
    }
}

/// `e` and its sources, as one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        text.push_str(": ");
        text.push_str(&s.to_string());
        next = s.source();
    }
    text
}

/// The sites of an http_sd answer, each url once (the first wins); an
/// answer that is not the http_sd JSON is an error (the last good list
/// stays), a target that cannot be used is a [`Change::Refused`].
pub fn parse_targets(body: &[u8]) -> Result<Vec<Change>, String> {
    let groups: Vec<Group> = serde_json::from_slice(body).map_err(|e| {
        format!(
            "the answer is not http_sd JSON, [{{\"targets\": [...], \"labels\": {{...}}}}] ({e})"
        )
    })?;
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for group in groups {
        for target in &group.targets {
            let url = match target_url(target, &group.labels) {
                Ok(url) => url,
                Err((key, message)) => {
                    out.push(Change::refused(target, &key, message));
                    continue;
                }
            };
            let mut object = Map::new();
            object.insert("url".into(), Value::String(url.clone()));
            for (label, key) in LABELS {
                if let Some(v) = group.labels.get(label) {
                    object.insert(key.into(), label_value(key, v));
                }
            }
            let text = Value::Object(object).to_string();
            match crate::sites::parse_site_json(&text) {
                Ok(site) => {
                    let shown: Box<str> = site.url.as_str().into();
                    if seen.insert(shown.clone()) {
                        out.push(Change::Put(shown, Box::new(site)));
                    } else {
                        out.push(Change::refused(
                            &format!("{shown} (listed again)"),
                            "targets",
                            "listed twice; the first one runs".to_owned(),
                        ));
                    }
                }
                Err((key, message)) => out.push(Change::refused(&url, &key, message)),
            }
        }
    }
    Ok(out)
}

/// A target as a url: itself when it has a scheme, else Prometheus's
/// `__scheme__://target__metrics_path__`, built so the labels cannot change
/// the host: the target must be a bare `host[:port]`, `__scheme__` `http`
/// or `https`, `__metrics_path__` a path starting with `/` (set as the
/// path, never parsed as a url). Else the key of the problem and what is wrong.
fn target_url(target: &str, labels: &BTreeMap<String, String>) -> Result<String, (String, String)> {
    if target.contains("://") {
        return Ok(target.to_owned());
    }
    let bad = |key: &str, message: String| Err((key.to_owned(), message));
    let scheme = labels.get("__scheme__").map_or("http", String::as_str);
    if !matches!(scheme, "http" | "https") {
        return bad(
            "__scheme__",
            format!("`{scheme}` is not http or https; set __scheme__ to one of them"),
        );
    }
    if target.is_empty()
        || target.contains(['/', '?', '#', '@', '\\'])
        || target.contains(char::is_whitespace)
    {
        return bad(
            "targets",
            "a target without a scheme must be a bare host:port (no path, user or query); write a url or host:port".to_owned(),
        );
    }
    let path = labels.get("__metrics_path__").map_or("/", String::as_str);
    if !path.starts_with('/') || path.starts_with("//") {
        return bad(
            "__metrics_path__",
            format!(
                "`{}` is not a path starting with a single `/`; write e.g. /health",
                path.chars().take(200).collect::<String>()
            ),
        );
    }
    let mut url = url::Url::parse(&format!("{scheme}://{target}/")).map_err(|e| {
        (
            "targets".to_owned(),
            format!("`{target}` is not a host:port ({e})"),
        )
    })?;
    let host = (url.host_str().map(str::to_owned), url.port());
    url.set_path(path);
    if (url.host_str().map(str::to_owned), url.port()) != host {
        return bad(
            "__metrics_path__",
            "the path changes the target's host; write a path starting with `/`".to_owned(),
        );
    }
    Ok(url.into())
}

/// A label's text as the JSON value the site key takes (booleans, numbers,
/// the status list); left a string when it is not one, so the site's parser
/// names the key and the type it wants.
fn label_value(key: &str, text: &str) -> Value {
    let t = text.trim();
    match key {
        "follow_redirects" | "keep_alive" | "tls_verify" => match t {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => Value::String(text.to_owned()),
        },
        "max_redirects" | "max_body_bytes" => t
            .parse::<u64>()
            .map_or_else(|_| Value::String(text.to_owned()), Value::from),
        "expected_status" => {
            let codes: Result<Vec<Value>, _> = t
                .split(',')
                .map(|c| c.trim().parse::<u16>().map(Value::from))
                .collect();
            codes.map_or_else(|_| Value::String(text.to_owned()), Value::Array)
        }
        _ => Value::String(text.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn puts(changes: Vec<Change>) -> Vec<(String, crate::config::SiteConfig)> {
        changes
            .into_iter()
            .filter_map(|c| match c {
                Change::Put(u, s) => Some((u.to_string(), *s)),
                Change::Refused(..) => None,
                Change::Remove(u) => panic!("a removal of {u}"),
            })
            .collect()
    }

    #[test]
    fn labels_that_name_a_setting_set_it_and_host_port_targets_get_a_scheme() {
        let body = br#"[
            {"targets": ["https://a.example/health", "b.example:8080"],
             "labels": {"__scrape_interval__": "30s", "regex": "ok", "expected_status": "200, 204",
                        "keep_alive": "true", "max_redirects": "2", "__metrics_path__": "/up", "team": "x"}},
            {"targets": ["https://a.example/health", "http://c.example/"], "labels": {}}
        ]"#;
        let sites = puts(parse_targets(body).unwrap());
        let urls: Vec<&str> = sites.iter().map(|(u, _)| u.as_str()).collect();
        assert_eq!(
            urls,
            [
                "https://a.example/health",
                "http://b.example:8080/up",
                "http://c.example/"
            ]
        );
        let a = &sites[0].1;
        assert_eq!(a.interval, Some(Duration::from_secs(30)));
        assert_eq!(a.regex.as_ref().map(|r| r.as_str()), Some("ok"));
        assert_eq!(a.expected_status.as_deref(), Some(&[200, 204][..]));
        assert_eq!((a.keep_alive, a.max_redirects), (Some(true), Some(2)));
        assert_eq!(sites[2].1.interval, None);
    }

    #[test]
    fn labels_never_move_a_host_port_target_to_another_host() {
        let body = br#"[
            {"targets": ["127.0.0.1:18701"], "labels": {"__metrics_path__": "@evil.example/x"}},
            {"targets": ["127.0.0.1:18701"], "labels": {"__metrics_path__": "//evil.example/x"}},
            {"targets": ["127.0.0.1:18701"], "labels": {"__scheme__": "http://evil.example/?"}},
            {"targets": ["evil.example/x@127.0.0.1:18701"], "labels": {}},
            {"targets": ["ok.example:81"], "labels": {"__metrics_path__": "/a/@b?c#d"}}
        ]"#;
        let sites = puts(parse_targets(body).unwrap());
        let urls: Vec<&str> = sites.iter().map(|(u, _)| u.as_str()).collect();
        assert_eq!(urls, ["http://ok.example:81/a/@b%3Fc%23d"]);
    }

    #[test]
    fn garbage_is_an_error_and_a_bad_target_is_left_out() {
        assert!(parse_targets(b"<html>")
            .unwrap_err()
            .contains("not http_sd JSON"));
        assert!(parse_targets(br#"{"targets": []}"#).is_err());
        let body =
            br#"[{"targets": ["ftp://x.example/", "http://ok.example/", "http://bad.example/"],
                        "labels": {}},
                       {"targets": ["http://slow.example/"], "labels": {"interval": "soon"}}]"#;
        let sites = puts(parse_targets(body).unwrap());
        let urls: Vec<&str> = sites.iter().map(|(u, _)| u.as_str()).collect();
        assert_eq!(urls, ["http://ok.example/", "http://bad.example/"]);
    }
}
