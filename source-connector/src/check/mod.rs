//! One HTTP check of one site, turned into a [`Record`].
//!
//! - Clients: one `reqwest::Client` per distinct [`ClientKey`] (keep-alive,
//!   extra CA, verification), built once at start by [`build_clients`], never
//!   per check. Without keep-alive the pool is off, so every check opens a
//!   fresh connection and its DNS, connect and TLS timings are real.
//! - Redirects are followed here, not by reqwest, so they can be counted and
//!   limited: up to `max_redirects`, one more is an `http` error. 301/302 turn
//!   a POST into a GET, 303 turns anything but HEAD into a GET. When a
//!   redirect leaves the origin (scheme, host and port), every header that
//!   came from the configuration (`authorization`, `cookie`,
//!   `proxy-authorization`, `x-api-key`... all of them) is dropped for the rest
//!   of the check, as curl does; credentials in the url's userinfo are not
//!   carried to another origin either.
//! - Requests go to the site's real url ([`crate::config::SiteUrl::request`],
//!   credentials included); the record shows its masked form.
//! - An error message is at most 1 KiB ([`MAX_FOREIGN_TEXT_BYTES`]): what a
//!   server sends (a 300 KB `Location`) cannot make a record huge.
//! - The body of the last response is read chunk by chunk and reading stops
//!   once more than `max_body_bytes` have come; the regex sees at most
//!   `max_body_bytes` bytes, decoded as UTF-8 (invalid bytes replaced).
//! - `timeout` bounds the whole check (every redirect and the body); what was
//!   learnt before it fired (status, phases) stays in the record.
//! - Phase timings come from [`phases`]; error kinds from [`classify`]; TLS
//!   settings and certificate facts from [`tls`].

pub mod classify;
pub mod phases;
pub mod tls;

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use connector_common::limits::{truncate, MAX_FOREIGN_TEXT_BYTES};
use reqwest::header::{HeaderMap, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{Client, Method, Response};
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::record::{CheckError, ErrorKind, Record, Timings, TlsFacts, SCHEMA_VERSION};
use crate::sites::{ClientKey, SiteSpec};
use phases::Recorder;

/// `error.message` of a check cut short by shutdown (`shutdown_timeout`).
pub const CANCELLED_AT_SHUTDOWN: &str = "cancelled at shutdown";

/// The `User-Agent` of checks unless a site sets its own.
pub const USER_AGENT: &str = concat!("website-monitor/", env!("CARGO_PKG_VERSION"));

/// A client that cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The TLS configuration could not be made.
    #[error("cannot set up TLS for site checks: {0}")]
    Tls(String),
    /// A `tls_ca` file is unusable.
    #[error("tls_ca {}: {message}; give a PEM file with the CA certificate(s)", .path.display())]
    TlsCa {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// reqwest refused the settings.
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// Builds the client for sites with these settings, on the process's
/// [`tls::TlsBase`].
pub fn build_client(key: &ClientKey, base: &tls::TlsBase) -> Result<Client, SetupError> {
    let tls = base.client_config(key.tls_ca.as_deref(), key.tls_verify)?;
    let mut builder = Client::builder()
        .tls_backend_preconfigured(tls)
        .tls_info(true)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(phases::TimingResolver)
        .connector_layer(phases::TimingLayer)
        .user_agent(USER_AGENT);
    if !key.keep_alive {
        // Say so: the server closes after its response, as it would for
        // ab's HTTP/1.0, instead of keeping an idle connection until we drop
        // it (nginx then spent twice the CPU per check, `make bench`).
        let mut close = reqwest::header::HeaderMap::new();
        close.insert(
            reqwest::header::CONNECTION,
            reqwest::header::HeaderValue::from_static("close"),
        );
        builder = builder.pool_max_idle_per_host(0).default_headers(close);
    }
    builder.build().map_err(SetupError::Client)
}

/// Builds every distinct client `sites` need, once.
pub fn build_clients(
    sites: &[SiteSpec],
    base: &tls::TlsBase,
) -> Result<HashMap<ClientKey, Client>, SetupError> {
    let mut clients = HashMap::new();
    for site in sites {
        if !clients.contains_key(&site.client) {
            clients.insert(site.client.clone(), build_client(&site.client, base)?);
        }
    }
    Ok(clients)
}

/// What a check learnt so far; kept outside the timeout so a check cut short
/// still reports it.
#[derive(Debug, Default)]
struct Progress {
    status: Option<u16>,
    http_version: Option<&'static str>,
    ip: Option<String>,
    tls: Option<TlsFacts>,
    redirects: u32,
    dns: Option<Duration>,
    connect: Option<Duration>,
    tls_time: Option<Duration>,
    ttfb: Option<Duration>,
    transfer: Option<Duration>,
    headers_at: Option<Instant>,
    response_bytes: Option<u64>,
    re_check: Option<bool>,
}

fn add(acc: &mut Option<Duration>, d: Option<Duration>) {
    if let Some(d) = d {
        *acc = Some(acc.unwrap_or_default() + d);
    }
}

impl Progress {
    fn add_hop(&mut self, hop: &phases::Hop) {
        let p = hop.phases();
        add(&mut self.dns, p.dns);
        add(&mut self.connect, p.connect);
        add(&mut self.tls_time, p.tls);
    }
}

/// Checks `site` once with `client` and returns its record (never fails:
/// a failure is a record with `ok: false`).
pub async fn check(site: &SiteSpec, client: &Client, probe: &str) -> Record {
    check_until(site, client, probe, &CancellationToken::new()).await
}

/// [`check`], cut short when `cancel` fires (shutdown): the record then has
/// error kind `timeout` with the message [`CANCELLED_AT_SHUTDOWN`], and keeps
/// what the check had learnt.
pub async fn check_until(
    site: &SiteSpec,
    client: &Client,
    probe: &str,
    cancel: &CancellationToken,
) -> Record {
    let checked_at = SystemTime::now();
    let epoch = checked_at
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let start = Instant::now();
    let recorder = Arc::new(Recorder::default());
    let mut p = Progress::default();
    let attempt = attempt(site, client, &recorder, &mut p, epoch);
    let timed = phases::scope(
        Arc::clone(&recorder),
        tokio::time::timeout(site.timeout, attempt),
    );
    let result = tokio::select! {
        biased;
        r = timed => Some(r),
        () = cancel.cancelled() => None,
    };
    let error = match result {
        Some(Ok(Ok(()))) => None,
        Some(Ok(Err(e))) => Some(e),
        Some(Err(_)) | None => {
            p.add_hop(&recorder.take_hop());
            if let (Some(at), None) = (p.headers_at, p.transfer) {
                p.transfer = Some(at.elapsed());
            }
            Some(CheckError {
                kind: ErrorKind::Timeout,
                message: if result.is_none() {
                    CANCELLED_AT_SHUTDOWN.to_owned()
                } else {
                    format!(
                        "no complete answer within {}; raise timeout if the site is just slow",
                        humantime::format_duration(site.timeout)
                    )
                },
            })
        }
    };
    // What a server sent may be in the message: keep it bounded.
    let error = error.map(|mut e| {
        if e.message.len() > MAX_FOREIGN_TEXT_BYTES {
            e.message = truncate(&e.message, MAX_FOREIGN_TEXT_BYTES);
        }
        e
    });
    let secs = |d: Option<Duration>| d.map(|d| d.as_secs_f64());
    Record {
        url: site.url.as_str().to_owned(),
        checked_at: epoch,
        status_code: p.status,
        duration: start.elapsed().as_secs_f64(),
        re_check: p.re_check,
        ok: error.is_none(),
        error,
        timings: Timings {
            dns: secs(p.dns),
            connect: secs(p.connect),
            tls: secs(p.tls_time),
            ttfb: secs(p.ttfb),
            transfer: secs(p.transfer),
        },
        http_version: p.http_version.map(str::to_owned),
        response_bytes: p.response_bytes,
        redirects: p.redirects,
        ip: p.ip,
        tls: p.tls,
        probe: probe.to_owned(),
        schema_version: SCHEMA_VERSION,
    }
}

fn request_error(e: &reqwest::Error) -> CheckError {
    // "error sending request for url (...)" repeats the record's url: start
    // the message at its cause.
    let shown: &(dyn std::error::Error + 'static) = match std::error::Error::source(e) {
        Some(cause) if e.is_request() || e.is_connect() => cause,
        _ => e,
    };
    CheckError {
        kind: classify::classify(e),
        message: classify::describe(shown),
    }
}

fn http_error(message: String) -> CheckError {
    CheckError {
        kind: ErrorKind::Http,
        message,
    }
}

async fn attempt(
    site: &SiteSpec,
    client: &Client,
    recorder: &Recorder,
    p: &mut Progress,
    now: f64,
) -> Result<(), CheckError> {
    // Borrowed from the site until a redirect changes them: the first hop
    // copies only what reqwest must own.
    let mut url: Cow<'_, Url> = Cow::Borrowed(site.url.request());
    let mut method = site.method.clone();
    let mut body = site.body.as_ref();
    let mut headers: Cow<'_, HeaderMap> = Cow::Borrowed(&site.headers);
    loop {
        recorder.take_hop();
        let hop_start = Instant::now();
        let mut request = client.request(method.clone(), url.as_ref().clone());
        if !headers.is_empty() {
            request = request.headers(headers.as_ref().clone());
        }
        if let Some(b) = body {
            request = request.body(b.clone());
        }
        let sent = request.send().await;
        let headers_at = Instant::now();
        let hop = recorder.take_hop();
        p.add_hop(&hop);
        let response = sent.map_err(|e| request_error(&e))?;
        add(
            &mut p.ttfb,
            Some(headers_at - hop.ready_at().unwrap_or(hop_start)),
        );
        note_response(p, &response, now);

        let status = response.status();
        let location = response.headers().get(LOCATION);
        if status.is_redirection() && site.follow_redirects && location.is_some() {
            if p.redirects >= site.max_redirects {
                return Err(http_error(format!(
                    "more than {} redirects; raise max_redirects or check the final url instead",
                    site.max_redirects
                )));
            }
            let next = location
                .and_then(|l| l.to_str().ok())
                .and_then(|l| url.join(l).ok())
                .filter(|u| matches!(u.scheme(), "http" | "https"))
                .ok_or_else(|| {
                    let shown = location.map_or_else(String::new, |l| {
                        String::from_utf8_lossy(l.as_bytes()).into_owned()
                    });
                    http_error(format!(
                        "redirect {status} with an unusable Location header ({:?})",
                        truncate(&shown, 256)
                    ))
                })?;
            p.redirects += 1;
            let code = status.as_u16();
            if (code == 303 && method != Method::HEAD)
                || (matches!(code, 301 | 302) && method == Method::POST)
            {
                method = Method::GET;
                body = None;
                let h = headers.to_mut();
                h.remove(CONTENT_TYPE);
                h.remove(CONTENT_LENGTH);
            }
            if next.origin() != url.origin() {
                // Another origin gets none of the configured headers
                // (credentials, cookies, API keys, proxy-authorization).
                headers = Cow::Owned(HeaderMap::new());
            }
            url = Cow::Owned(next);
            continue;
        }

        p.headers_at = Some(headers_at);
        let read = read_body(response, site, p).await;
        p.transfer = Some(headers_at.elapsed());
        let over_cap = read?;
        if !status_expected(site, status.as_u16()) {
            let expected = match &site.expected_status {
                Some(list) => format!("{list:?}"),
                None => "any 2xx or 3xx".to_owned(),
            };
            return Err(CheckError {
                kind: ErrorKind::Status,
                message: format!(
                    "unexpected status {status}; expected {expected} (see expected_status)"
                ),
            });
        }
        if over_cap {
            return Err(CheckError {
                kind: ErrorKind::Body,
                message: format!(
                    "body larger than max_body_bytes ({} bytes); stopped reading there; raise max_body_bytes for this site",
                    site.max_body_bytes
                ),
            });
        }
        if p.re_check == Some(false) {
            let pattern = site.regex.as_ref().map(|r| r.as_str()).unwrap_or_default();
            return Err(CheckError {
                kind: ErrorKind::Regex,
                message: format!("regex `{pattern}` not found in the body"),
            });
        }
        return Ok(());
    }
}

/// Notes what every response tells: status, version, peer address, TLS facts.
fn note_response(p: &mut Progress, response: &Response, now: f64) {
    p.status = Some(response.status().as_u16());
    p.http_version = Some(version_name(response.version()));
    p.ip = response.remote_addr().map(|a| a.ip().to_string());
    p.tls = if response.url().scheme() == "https" {
        let info = response.extensions().get::<reqwest::tls::TlsInfo>();
        let not_after = info
            .and_then(|i| i.peer_certificate())
            .and_then(tls::not_after);
        Some(TlsFacts {
            version: info
                .and_then(|i| i.version())
                .and_then(tls::version_name)
                .map(str::to_owned),
            cert_not_after: not_after,
            cert_days_left: not_after.map(|n| tls::days_left(n, now)),
        })
    } else {
        None
    };
}

/// Reads the body up to the cap; returns whether the body was longer.
async fn read_body(
    mut response: Response,
    site: &SiteSpec,
    p: &mut Progress,
) -> Result<bool, CheckError> {
    let cap = site.max_body_bytes;
    let mut kept: Vec<u8> = Vec::new();
    let mut received: u64 = 0;
    p.response_bytes = Some(0);
    let over_cap = loop {
        let chunk = match response.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break false,
            Err(e) => {
                let mut err = request_error(&e);
                if err.kind == ErrorKind::Http {
                    err.kind = ErrorKind::Body;
                }
                return Err(err);
            }
        };
        received += chunk.len() as u64;
        p.response_bytes = Some(received);
        if site.regex.is_some() {
            let room = usize::try_from(cap)
                .unwrap_or(usize::MAX)
                .saturating_sub(kept.len());
            kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
        }
        if received > cap {
            break true;
        }
    };
    if let Some(re) = &site.regex {
        p.re_check = Some(re.is_match(&String::from_utf8_lossy(&kept)));
    }
    Ok(over_cap)
}

fn status_expected(site: &SiteSpec, status: u16) -> bool {
    match &site.expected_status {
        Some(list) => list.contains(&status),
        None => (200..400).contains(&status),
    }
}

fn version_name(v: reqwest::Version) -> &'static str {
    match v {
        reqwest::Version::HTTP_09 => "HTTP/0.9",
        reqwest::Version::HTTP_10 => "HTTP/1.0",
        reqwest::Version::HTTP_11 => "HTTP/1.1",
        reqwest::Version::HTTP_2 => "HTTP/2",
        reqwest::Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/?",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(url: &str) -> SiteSpec {
        SiteSpec {
            url: url.parse().unwrap(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
            method: Method::GET,
            headers: Arc::default(),
            body: None,
            regex: None,
            expected_status: None,
            follow_redirects: true,
            max_redirects: 5,
            max_body_bytes: 1024,
            client: ClientKey {
                keep_alive: false,
                tls_ca: None,
                tls_verify: true,
            },
        }
    }

    #[test]
    fn default_expected_status_is_2xx_and_3xx() {
        let mut s = site("http://127.0.0.1/");
        assert!(status_expected(&s, 200) && status_expected(&s, 302) && !status_expected(&s, 404));
        s.expected_status = Some(Arc::from([404u16].as_slice()));
        assert!(status_expected(&s, 404) && !status_expected(&s, 200));
    }

    #[tokio::test]
    async fn a_cancelled_check_is_a_timeout_cancelled_at_shutdown() {
        // A listener that accepts and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hold = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                open.push(conn);
            }
        });
        let mut s = site(&format!("http://127.0.0.1:{port}/"));
        s.timeout = Duration::from_secs(60);
        let client = build_client(&s.client, &tls::TlsBase::load().unwrap()).unwrap();
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            stop.cancel();
        });
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            check_until(&s, &client, "t", &cancel),
        )
        .await
        .expect("the check stops when cancelled");
        let e = r.error.as_ref().unwrap();
        assert_eq!(
            (e.kind, e.message.as_str()),
            (ErrorKind::Timeout, CANCELLED_AT_SHUTDOWN)
        );
        assert!(
            !r.ok && r.status_code.is_none() && r.duration < 5.0,
            "{r:?}"
        );
        assert!(r.timings.connect.is_some(), "what was learnt stays: {r:?}");
        hold.abort();
    }

    #[tokio::test]
    async fn closed_port_is_connect_and_unresolvable_host_is_dns() {
        let client =
            build_client(&site("http://x/").client, &tls::TlsBase::load().unwrap()).unwrap();
        // Bind then drop: nothing listens on that port any more.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let r = check(&site(&format!("http://127.0.0.1:{port}/")), &client, "t").await;
        assert_eq!(
            r.error.as_ref().map(|e| e.kind),
            Some(ErrorKind::Connect),
            "{r:?}"
        );
        assert!(!r.ok && r.status_code.is_none());
        assert!(
            r.timings.connect.is_some() && r.timings.dns.is_none(),
            "{r:?}"
        );
        let r = check(&site("http://no-such-host.invalid/"), &client, "t").await;
        assert_eq!(
            r.error.as_ref().map(|e| e.kind),
            Some(ErrorKind::Dns),
            "{r:?}"
        );
        assert!(
            r.timings.dns.is_some() && r.timings.connect.is_none(),
            "{r:?}"
        );
    }
}
