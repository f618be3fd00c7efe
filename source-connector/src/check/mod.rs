//! One HTTP check of one site, turned into a [`Record`].
//!
//! - Clients: one `reqwest::Client` per distinct [`crate::sites::ClientKey`]
//!   (keep-alive, extra CA, verification), built once at start by
//!   [`build_clients`], never per check. Without keep-alive the pool is off, so every check opens a
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
mod client;
mod error;
pub mod phases;
pub mod tls;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use connector_common::limits::{truncate, MAX_FOREIGN_TEXT_BYTES};
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{Client, Method, Response, StatusCode};
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::record::{CheckError, ErrorKind, Record, Timings, TlsFacts, SCHEMA_VERSION};
use crate::sites::SiteSpec;
use phases::Recorder;

pub use client::{build_client, build_clients, Clients, USER_AGENT};
pub use error::SetupError;

/// `error.message` of a check cut short by shutdown (`shutdown_timeout`).
pub const CANCELLED_AT_SHUTDOWN: &str = "cancelled at shutdown";

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
        interval: site.interval.as_secs_f64(),
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

/// The request of one hop, borrowed from the site until a redirect changes
/// it: the first hop copies only what reqwest must own.
struct HopRequest<'s> {
    url: Cow<'s, Url>,
    method: Method,
    body: Option<&'s Bytes>,
    headers: Cow<'s, HeaderMap>,
}

impl<'s> HopRequest<'s> {
    fn first(site: &'s SiteSpec) -> Self {
        HopRequest {
            url: Cow::Borrowed(site.url.request()),
            method: site.method.clone(),
            body: site.body.as_ref(),
            headers: Cow::Borrowed(&site.headers),
        }
    }

    /// Sends the request; notes the hop's phases, its time to first byte and
    /// what the response tells. Returns the response and when its headers
    /// came.
    async fn send(
        &self,
        client: &Client,
        recorder: &Recorder,
        p: &mut Progress,
        now: f64,
    ) -> Result<(Response, Instant), CheckError> {
        recorder.take_hop();
        let hop_start = Instant::now();
        let mut request = client.request(self.method.clone(), self.url.as_ref().clone());
        if !self.headers.is_empty() {
            request = request.headers(self.headers.as_ref().clone());
        }
        if let Some(b) = self.body {
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
        Ok((response, headers_at))
    }

    /// Turns this request into the one a `status` redirect to `location`
    /// asks for, within `max_redirects`.
    fn redirect(
        &mut self,
        site: &SiteSpec,
        p: &mut Progress,
        status: StatusCode,
        location: Option<&HeaderValue>,
    ) -> Result<(), CheckError> {
        if p.redirects >= site.max_redirects {
            return Err(http_error(format!(
                "more than {} redirects; raise max_redirects or check the final url instead",
                site.max_redirects
            )));
        }
        let next = location
            .and_then(|l| l.to_str().ok())
            .and_then(|l| self.url.join(l).ok())
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
        if (code == 303 && self.method != Method::HEAD)
            || (matches!(code, 301 | 302) && self.method == Method::POST)
        {
            self.method = Method::GET;
            self.body = None;
            let h = self.headers.to_mut();
            h.remove(CONTENT_TYPE);
            h.remove(CONTENT_LENGTH);
        }
        if next.origin() != self.url.origin() {
            // Another origin gets none of the configured headers
            // (credentials, cookies, API keys, proxy-authorization).
            self.headers = Cow::Owned(HeaderMap::new());
        }
        self.url = Cow::Owned(next);
        Ok(())
    }
}

/// The check without its timeout: hops until a response that is not a
/// redirect to follow, reads its body, judges it.
async fn attempt(
    site: &SiteSpec,
    client: &Client,
    recorder: &Recorder,
    p: &mut Progress,
    now: f64,
) -> Result<(), CheckError> {
    let mut request = HopRequest::first(site);
    loop {
        let (response, headers_at) = request.send(client, recorder, p, now).await?;
        let status = response.status();
        let location = response.headers().get(LOCATION);
        if status.is_redirection() && site.follow_redirects && location.is_some() {
            request.redirect(site, p, status, location)?;
            continue;
        }
        p.headers_at = Some(headers_at);
        let read = read_body(response, site, p).await;
        p.transfer = Some(headers_at.elapsed());
        let over_cap = read?;
        return judge(site, p, status, over_cap);
    }
}

/// The verdict on the final response: its status, the body cap, the regex.
fn judge(
    site: &SiteSpec,
    p: &Progress,
    status: StatusCode,
    over_cap: bool,
) -> Result<(), CheckError> {
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
    Ok(())
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
mod tests;
