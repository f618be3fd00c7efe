//! Prometheus metrics and health endpoints.
//!
//! Each connector serves on its `metrics_address`:
//! - `GET /metrics`: Prometheus text exposition, from the `metrics` facade;
//! - `GET /healthz`: 200 while the process runs;
//! - `GET /readyz`: 200 when the connector says it is connected and making
//!   progress ([`Health::set_ready`]), 503 with the reason otherwise;
//! - `POST /-/reload`, when the connector gives a [`ReloadHook`]
//!   ([`serve_with_hooks`]): reloads its configuration; 200 with what
//!   changed, or 500 with why the reload was refused; any other method 405
//!   with `Allow: POST`.
//!
//! `/metrics` renders the `metrics` registry, then what the connector's
//! [`ExtraMetrics`] hook writes (series the connector keeps itself because
//! it must be able to remove them, which the registry cannot).
//!
//! The `metrics` facade has one process-wide recorder by design;
//! [`install_recorder`] installs it once and hands out the same handle after,
//! so tests can run several connectors in one process.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::listen::ListenAddress;

/// Errors starting the telemetry server.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The address could not be bound.
    #[error("cannot listen on metrics_address {addr}: {source}; choose a free port (0 picks one)")]
    Bind {
        /// The address asked for.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Installs the Prometheus recorder (once per process) and returns its handle.
pub fn install_recorder() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            // Seconds; fine at the low end, where lateness and loopback checks live.
            let buckets = [
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0,
                2.5, 5.0, 10.0, 30.0,
            ];
            let recorder = PrometheusBuilder::new()
                .set_buckets(&buckets)
                .expect("static buckets are valid")
                // Counts, not seconds: records per batch and the like.
                .set_buckets_for_metric(
                    Matcher::Suffix("_size".to_owned()),
                    &[
                        1.0, 10.0, 100.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, 50000.0,
                    ],
                )
                .expect("static buckets are valid")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (a host program); then
            // our handle renders only what we record through it, which is nothing.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// The gauge that mirrors `/readyz`: 1 ready, 0 not (both connectors).
pub const READY: &str = "website_monitor_ready";

/// Readiness shared between a connector and its `/readyz` endpoint (and
/// the [`READY`] gauge, for alerting without probing `/readyz`).
#[derive(Debug, Clone, Default)]
pub struct Health {
    inner: Arc<Mutex<Option<String>>>,
}

impl Health {
    /// A new handle, not ready with reason "starting".
    pub fn new() -> Self {
        let h = Self::default();
        h.set_not_ready("starting");
        h
    }

    /// Marks the connector ready.
    pub fn set_ready(&self) {
        *self.inner.lock().expect("health lock") = None;
        metrics::gauge!(READY).set(1.0);
    }

    /// Marks the connector not ready, with the reason `/readyz` shows.
    pub fn set_not_ready(&self, reason: impl Into<String>) {
        *self.inner.lock().expect("health lock") = Some(reason.into());
        metrics::gauge!(READY).set(0.0);
    }

    /// `None` when ready, else the reason it is not.
    pub fn not_ready_reason(&self) -> Option<String> {
        self.inner.lock().expect("health lock").clone()
    }
}

/// A running telemetry server.
#[derive(Debug)]
pub struct TelemetryServer {
    /// The address actually bound (useful with port 0).
    pub local_addr: SocketAddr,
    /// The server task; it ends when the shutdown token fires.
    pub task: tokio::task::JoinHandle<()>,
}

/// What `POST /-/reload` runs: the connector's reload, resolving to a
/// summary of what changed or to why it was refused.
pub type ReloadHook =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<String, String>> + Send>> + Send + Sync>;

/// Appends series in the Prometheus text format to `/metrics`.
pub type ExtraMetrics = Arc<dyn Fn(&mut String) + Send + Sync>;

/// A label value as the Prometheus text format wants it (for
/// [`ExtraMetrics`] hooks): backslash, double quote and newline escaped.
pub fn escape_label(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return value.into();
    }
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
        .into()
}

/// What a connector adds to the endpoints.
#[derive(Clone, Default)]
pub struct Hooks {
    /// Serves `POST /-/reload` when given.
    pub reload: Option<ReloadHook>,
    /// Appends its own series to `/metrics` when given.
    pub metrics: Option<ExtraMetrics>,
}

/// Binds `addr` and serves `/metrics`, `/healthz` and `/readyz` until `shutdown`.
pub async fn serve(
    addr: &ListenAddress,
    handle: PrometheusHandle,
    health: Health,
    shutdown: CancellationToken,
) -> Result<TelemetryServer, TelemetryError> {
    serve_with_hooks(addr, handle, health, Hooks::default(), shutdown).await
}

/// [`serve`], with the connector's `hooks`.
pub async fn serve_with_hooks(
    addr: &ListenAddress,
    handle: PrometheusHandle,
    health: Health,
    hooks: Hooks,
    shutdown: CancellationToken,
) -> Result<TelemetryServer, TelemetryError> {
    let bind_error = |source| TelemetryError::Bind {
        addr: addr.to_string(),
        source,
    };
    let listener = TcpListener::bind(addr.as_str()).await.map_err(bind_error)?;
    let local_addr = listener.local_addr().map_err(bind_error)?;
    let task = tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(s) => s,
                    Err(e) => {
                        // E.g. out of file descriptors: back off instead of spinning.
                        tracing::warn!(error = %e, "telemetry accept failed; retrying in 100 ms");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let handle = handle.clone();
            let health = health.clone();
            let hooks = hooks.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let handle = handle.clone();
                    let health = health.clone();
                    let hooks = hooks.clone();
                    async move {
                        if req.uri().path() == "/-/reload" {
                            if let Some(reload) = hooks.reload {
                                return Ok::<_, Infallible>(
                                    reload_route(req.method(), &reload).await,
                                );
                            }
                        }
                        // Rendering many series (per-site gauges of 100k sites) is CPU
                        // work: keep it off the runtime the checks run on.
                        let path = req.uri().path().to_owned();
                        let extra = hooks.metrics;
                        let response = tokio::task::spawn_blocking(move || {
                            route(&path, &handle, extra.as_ref(), &health)
                        })
                        .await
                        .unwrap_or_else(|_| {
                            respond(
                                StatusCode::INTERNAL_SERVER_ERROR,
                                "text/plain",
                                "render failed\n".to_owned(),
                            )
                        });
                        Ok::<_, Infallible>(response)
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    tracing::info!(address = %local_addr, "serving /metrics, /healthz, /readyz");
    Ok(TelemetryServer { local_addr, task })
}

fn route(
    path: &str,
    handle: &PrometheusHandle,
    extra: Option<&ExtraMetrics>,
    health: &Health,
) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match path {
        "/metrics" => {
            let mut text = handle.render();
            if let Some(extra) = extra {
                extra(&mut text);
            }
            (StatusCode::OK, "text/plain; version=0.0.4", text)
        }
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
        "/readyz" => match health.not_ready_reason() {
            None => (StatusCode::OK, "text/plain", "ready\n".to_owned()),
            Some(reason) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("not ready: {reason}\n"),
            ),
        },
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found; try /metrics, /healthz or /readyz\n".to_owned(),
        ),
    };
    respond(status, content_type, body)
}

/// `/-/reload`: runs `reload` on a POST.
async fn reload_route(method: &Method, reload: &ReloadHook) -> Response<Full<Bytes>> {
    if method != Method::POST {
        let mut response = respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "use POST to reload the configuration\n".to_owned(),
        );
        response.headers_mut().insert(
            hyper::header::ALLOW,
            hyper::header::HeaderValue::from_static("POST"),
        );
        return response;
    }
    match reload().await {
        Ok(done) => respond(StatusCode::OK, "text/plain", format!("{done}\n")),
        Err(why) => respond(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            format!("reload refused: {why}\n"),
        ),
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid")
}

#[cfg(test)]
mod tests {
    use super::escape_label;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(escape_label("http://a/"), "http://a/");
    }
}
