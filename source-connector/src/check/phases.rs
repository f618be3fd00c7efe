//! Phase timings, measured through reqwest's own hooks.
//!
//! reqwest has no per-request timing API, so the hooks note instants in a
//! [`Recorder`] that the check puts in a `tokio::task_local!` around its
//! request. On a fresh connection hyper polls the connect future inside the
//! request's task (the pool is off, or nothing idle was there), so the hooks
//! find the recorder of the check that opened the connection:
//!
//! - [`TimingResolver`], the client's DNS resolver: start and end of the lookup;
//! - [`TimingLayer`], a connector layer around reqwest's connector: start and
//!   end of the whole connection set-up (lookup, TCP, TLS);
//! - [`TlsStartMarker`], the rustls session store, which rustls consults when
//!   it builds the ClientHello, right after the TCP connection is up: the
//!   start of the TLS handshake. It stores nothing, so every handshake is a
//!   full one and its time is real.
//!
//! A hook that runs outside a check (a connection finished in the background)
//! notes nothing, and the phases it would have given stay `null`.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use rustls::client::{ClientSessionStore, Tls12ClientSessionValue, Tls13ClientSessionValue};
use rustls::pki_types::ServerName;
use rustls::NamedGroup;

tokio::task_local! {
    static RECORDER: Arc<Recorder>;
}

/// Instants noted during one request (one hop of a check).
#[derive(Debug, Default, Clone, Copy)]
pub struct Hop {
    /// The resolver was called.
    pub dns_start: Option<Instant>,
    /// The resolver answered (or failed).
    pub dns_end: Option<Instant>,
    /// The connector was called.
    pub connect_start: Option<Instant>,
    /// rustls started the handshake (TCP was up).
    pub tls_start: Option<Instant>,
    /// The connector returned (TCP and TLS done, or failed).
    pub connect_end: Option<Instant>,
    /// The lookup failed, so no TCP connect was tried.
    pub dns_failed: bool,
}

/// Durations of one hop's phases, from its [`Hop`].
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct HopPhases {
    /// Name resolution.
    pub dns: Option<Duration>,
    /// TCP connect (after resolution).
    pub connect: Option<Duration>,
    /// TLS handshake.
    pub tls: Option<Duration>,
}

impl Hop {
    /// The phases these instants give; a phase missing either end is `None`.
    pub fn phases(&self) -> HopPhases {
        let span = |a: Option<Instant>, b: Option<Instant>| Some(b?.saturating_duration_since(a?));
        let dns = span(self.dns_start, self.dns_end);
        let tcp_start = self.dns_end.or(self.connect_start);
        let tcp_end = self.tls_start.or(self.connect_end);
        HopPhases {
            dns,
            connect: if self.dns_failed {
                None
            } else {
                span(tcp_start, tcp_end)
            },
            tls: span(self.tls_start, self.connect_end),
        }
    }

    /// When the connection was ready for the request, if this hop opened one.
    pub fn ready_at(&self) -> Option<Instant> {
        self.connect_end
    }
}

/// Where the hooks note the instants of the check running in this task.
#[derive(Debug, Default)]
pub struct Recorder {
    hop: Mutex<Hop>,
}

impl Recorder {
    /// Returns the instants noted since the last call, and starts afresh.
    pub fn take_hop(&self) -> Hop {
        std::mem::take(&mut *self.hop.lock().expect("recorder lock"))
    }

    fn note(&self, f: impl FnOnce(&mut Hop)) {
        f(&mut self.hop.lock().expect("recorder lock"));
    }
}

/// Runs `fut` with `recorder` visible to the hooks.
pub async fn scope<F: Future>(recorder: Arc<Recorder>, fut: F) -> F::Output {
    RECORDER.scope(recorder, fut).await
}

fn current() -> Option<Arc<Recorder>> {
    RECORDER.try_with(Arc::clone).ok()
}

/// A name that did not resolve; the classifier finds it in the error chain.
#[derive(Debug, thiserror::Error)]
#[error("cannot resolve {host}: {reason}")]
pub struct DnsError {
    /// The name looked up.
    pub host: String,
    /// What the system resolver said.
    pub reason: String,
}

/// The system resolver (getaddrinfo on tokio's blocking pool), timed.
#[derive(Debug, Clone, Copy, Default)]
pub struct TimingResolver;

impl Resolve for TimingResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let recorder = current();
        if let Some(r) = &recorder {
            r.note(|h| h.dns_start = Some(Instant::now()));
        }
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let result: Result<Vec<SocketAddr>, String> =
                match tokio::net::lookup_host((host.as_str(), 0)).await {
                    Ok(addrs) => Ok(addrs.collect()),
                    Err(e) => Err(e.to_string()),
                };
            if let Some(r) = &recorder {
                r.note(|h| {
                    h.dns_end = Some(Instant::now());
                    h.dns_failed = result.is_err();
                });
            }
            let addrs = match result {
                Ok(addrs) => addrs,
                Err(reason) => return Err(Box::new(DnsError { host, reason }) as _),
            };
            if addrs.is_empty() {
                return Err(Box::new(DnsError {
                    host,
                    reason: "no addresses".into(),
                }) as _);
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// Connector layer noting when a connection set-up starts and ends.
#[derive(Debug, Clone, Copy, Default)]
pub struct TimingLayer;

impl<S> tower_layer::Layer<S> for TimingLayer {
    type Service = TimingService<S>;

    fn layer(&self, inner: S) -> TimingService<S> {
        TimingService { inner }
    }
}

/// The service [`TimingLayer`] makes.
#[derive(Debug, Clone)]
pub struct TimingService<S> {
    inner: S,
}

impl<S, R> tower_service::Service<R> for TimingService<S>
where
    S: tower_service::Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        let recorder = current();
        if let Some(r) = &recorder {
            r.note(|h| h.connect_start = Some(Instant::now()));
        }
        let fut = self.inner.call(req);
        Box::pin(async move {
            let out = fut.await;
            if let Some(r) = &recorder {
                r.note(|h| h.connect_end = Some(Instant::now()));
            }
            out
        })
    }
}

/// A rustls session store that keeps nothing and notes when a handshake starts.
#[derive(Debug, Default)]
pub struct TlsStartMarker;

fn mark_tls_start() {
    if let Some(r) = current() {
        r.note(|h| {
            h.tls_start.get_or_insert_with(Instant::now);
        });
    }
}

impl ClientSessionStore for TlsStartMarker {
    fn set_kx_hint(&self, _: ServerName<'static>, _: NamedGroup) {}

    fn kx_hint(&self, _: &ServerName<'_>) -> Option<NamedGroup> {
        mark_tls_start();
        None
    }

    fn set_tls12_session(&self, _: ServerName<'static>, _: Tls12ClientSessionValue) {}

    fn tls12_session(&self, _: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        mark_tls_start();
        None
    }

    fn remove_tls12_session(&self, _: &ServerName<'static>) {}

    fn insert_tls13_ticket(&self, _: ServerName<'static>, _: Tls13ClientSessionValue) {}

    fn take_tls13_ticket(&self, _: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
        mark_tls_start();
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_of_an_https_hop() {
        let t0 = Instant::now();
        let at = |ms| Some(t0 + Duration::from_millis(ms));
        let hop = Hop {
            connect_start: at(0),
            dns_start: at(1),
            dns_end: at(3),
            tls_start: at(10),
            connect_end: at(40),
            dns_failed: false,
        };
        let p = hop.phases();
        assert_eq!(p.dns, Some(Duration::from_millis(2)));
        assert_eq!(p.connect, Some(Duration::from_millis(7)));
        assert_eq!(p.tls, Some(Duration::from_millis(30)));
    }

    #[test]
    fn phases_of_an_http_hop_to_an_ip() {
        let t0 = Instant::now();
        let hop = Hop {
            connect_start: Some(t0),
            connect_end: Some(t0 + Duration::from_millis(5)),
            ..Hop::default()
        };
        let p = hop.phases();
        assert_eq!((p.dns, p.tls), (None, None));
        assert_eq!(p.connect, Some(Duration::from_millis(5)));
        assert_eq!(Hop::default().phases(), HopPhases::default());
    }

    #[tokio::test]
    async fn hooks_note_only_inside_a_scope() {
        mark_tls_start();
        let r = Arc::new(Recorder::default());
        scope(Arc::clone(&r), async { mark_tls_start() }).await;
        assert!(r.take_hop().tls_start.is_some());
        assert!(r.take_hop().tls_start.is_none());
    }
}
