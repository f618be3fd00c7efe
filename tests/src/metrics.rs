//! A connector's HTTP endpoints: `/healthz`, `/readyz` and Prometheus
//! scraping of `/metrics`.

use std::time::Duration;

use crate::wait::{eventually, WAIT};

/// `GET path` on a local HTTP server (a connector's `/readyz`, say): (status, body).
pub async fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    http_request(addr, "GET", path).await
}

/// `POST path` (with no body) on a local HTTP server (a connector's
/// `/-/reload`, say): (status, body).
pub async fn http_post(addr: &str, path: &str) -> Option<(u16, String)> {
    http_request(addr, "POST", path).await
}

/// `method path` on a local HTTP server: (status, body).
async fn http_request(addr: &str, method: &str, path: &str) -> Option<(u16, String)> {
    let (status, _, body) = http_exchange(addr, method, path).await?;
    Some((status, body))
}

/// `method path` (with no body) on a local HTTP server: (status, the
/// header lines, body).
pub async fn http_exchange(addr: &str, method: &str, path: &str) -> Option<(u16, String, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(
        format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Some((status, head.to_owned(), body.to_owned()))
}

/// The text of `addr`'s `/metrics` (empty when it does not answer).
pub async fn scrape(addr: &str) -> String {
    http_get(addr, "/metrics").await.unwrap_or_default().1
}

/// Scrapes `addr` every 100 ms until `found` holds for the text, for up to
/// `max`: `Ok(text)`, or `Err` with the last text scraped.
pub async fn scrape_until(
    addr: &str,
    max: Duration,
    found: impl Fn(&str) -> bool,
) -> Result<String, String> {
    let seen = tokio::time::timeout(max, async {
        loop {
            let text = scrape(addr).await;
            if found(&text) {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    match seen {
        Ok(text) => Ok(text),
        Err(_) => Err(scrape(addr).await),
    }
}

/// Sum of the values of the metric lines starting with `prefix`.
pub fn sum(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits (up to [`WAIT`]) until `addr`'s `/readyz` answers 200.
pub async fn wait_ready(addr: &str) {
    eventually(&format!("{addr}/readyz to say ready"), WAIT, || async {
        matches!(http_get(addr, "/readyz").await, Some((200, _))).then_some(())
    })
    .await;
}

/// Waits (up to `max`) until `addr`'s `/readyz` answers 503 naming `cause`
/// (`PostgreSQL`, `Kafka`); `what` says what is awaited.
pub async fn wait_not_ready(addr: &str, cause: &str, what: &str, max: Duration) {
    eventually(what, max, || async {
        match http_get(addr, "/readyz").await {
            Some((503, body)) if body.contains(cause) => Some(()),
            _ => None,
        }
    })
    .await;
}
