//! Small HTTP(S) targets on 127.0.0.1 for the source connector's tests.
//!
//! [`TestServer::http`] / [`TestServer::https`] listen on a free loopback
//! port and answer:
//!
//! - `/` — 200 `ok`;
//! - `/status/{code}` — that status;
//! - `/slow/{ms}` — 200 after `ms` milliseconds;
//! - `/redirect/{n}` — 302 to `/redirect/{n-1}`, and `/redirect/0` is 200 `arrived`;
//! - `/text` — 200 with a known sentence ([`TEXT`]), for regexes;
//! - `/big/{bytes}` — 200 with a body of that many bytes, streamed in 16 KiB
//!   chunks; [`TestServer::bytes_sent`] counts the chunks handed to the socket;
//! - `/phases/{headers_ms}/{gap_ms}` — 200 after `headers_ms` milliseconds,
//!   with a body of two chunks `gap_ms` milliseconds apart (a stall before the
//!   headers and one between body chunks, for the phase timings).
//! - `/to/{port}/{path}` — 302 to `http://localhost:{port}/{path}` (another
//!   origin than `127.0.0.1`, even on the same port);
//! - `/long-location/{bytes}` — 302 with a `Location` of that many bytes that
//!   is no usable url;
//! - `/by-probe` — 200 `ok`, or 503 to a request whose `x-probe` header the
//!   test named in [`TestServer::fail_for`] (one url, several probes), or
//!   by a cycle of outcomes ([`TestServer::fail_pattern_for`]).
//!
//! [`TestServer::https_stalling_handshake`] also stalls inside the TLS
//! handshake: the server's first flight (ServerHello … Finished) is held back.
//! [`TestServer::requests`] gives the headers of every request to a path.
//!
//! Every server counts connections, requests per path and the most requests
//! it ever had open at once ([`TestServer::max_in_flight`]). [`Pki`] makes the TLS side: a
//! test CA, a server certificate it signed, a self-signed one and an expired
//! one the CA signed.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

mod by_probe;

/// The body of `/text`.
pub const TEXT: &str = "The quick brown fox jumps over the lazy dog.";

type Body = BoxBody<Bytes, Infallible>;

#[derive(Debug, Default)]
struct State {
    connections: AtomicU64,
    bytes_sent: AtomicU64,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    hits: Mutex<HashMap<String, u64>>,
    requests: Mutex<HashMap<String, Vec<hyper::HeaderMap>>>,
    /// What `/doc` answers: a status and a JSON body ([`TestServer::set_doc`]).
    doc: Mutex<(u16, String)>,
    /// What `/by-probe` answers per `x-probe` value.
    by_probe: by_probe::ByProbe,
}

/// A running test server; stops when dropped.
#[derive(Debug)]
pub struct TestServer {
    addr: SocketAddr,
    scheme: &'static str,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestServer {
    /// A plain HTTP server.
    pub async fn http() -> Self {
        Self::start(None, Duration::ZERO).await
    }

    /// An HTTPS server presenting the certificate of `tls`.
    pub async fn https(tls: Arc<ServerConfig>) -> Self {
        Self::start(Some(tokio_rustls::TlsAcceptor::from(tls)), Duration::ZERO).await
    }

    /// [`TestServer::https`] that stalls `stall` inside every TLS handshake:
    /// its first write on a connection (the server's flight after the
    /// ClientHello) waits that long, so a client sees the stall between its
    /// ClientHello and the ServerHello.
    pub async fn https_stalling_handshake(tls: Arc<ServerConfig>, stall: Duration) -> Self {
        Self::start(Some(tokio_rustls::TlsAcceptor::from(tls)), stall).await
    }

    async fn start(tls: Option<tokio_rustls::TlsAcceptor>, handshake_stall: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(State::default());
        let scheme = if tls.is_some() { "https" } else { "http" };
        let st = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                st.connections.fetch_add(1, Ordering::SeqCst);
                let st = Arc::clone(&st);
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let st = Arc::clone(&st);
                        async move { Ok::<_, Infallible>(route(req, st).await) }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        None => {
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        }
                        Some(acceptor) => {
                            let stream = StallFirstWrite::new(stream, handshake_stall);
                            if let Ok(tls_stream) = acceptor.accept(stream).await {
                                let _ = http
                                    .serve_connection(TokioIo::new(tls_stream), service)
                                    .await;
                            }
                        }
                    }
                });
            }
        });
        TestServer {
            addr,
            scheme,
            state,
            task,
        }
    }

    /// `scheme://127.0.0.1:port{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("{}://127.0.0.1:{}{path}", self.scheme, self.addr.port())
    }

    /// `scheme://localhost:port{path}` (a name the resolver must look up).
    pub fn url_by_name(&self, path: &str) -> String {
        format!("{}://localhost:{}{path}", self.scheme, self.addr.port())
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Body bytes of `/big/...` handed to the connection so far.
    pub fn bytes_sent(&self) -> u64 {
        self.state.bytes_sent.load(Ordering::SeqCst)
    }

    /// The most requests that were being answered at the same time.
    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }

    /// The headers of every request received for exactly `path`, in order.
    pub fn requests(&self, path: &str) -> Vec<hyper::HeaderMap> {
        self.state
            .requests
            .lock()
            .expect("requests lock")
            .get(path)
            .cloned()
            .unwrap_or_default()
    }

    /// Makes `/doc` answer `status` with `body` (as `application/json`):
    /// a document the test changes while the source reads it (an http_sd
    /// list, a failure, garbage).
    pub fn set_doc(&self, status: u16, body: impl Into<String>) {
        *self.state.doc.lock().expect("doc lock") = (status, body.into());
    }

    /// Makes `/by-probe` answer 503 (`fail`) or 200 to the requests whose
    /// `x-probe` header is `probe`: one url that several probes (sources
    /// sending that header) see fail or not.
    pub fn fail_for(&self, probe: &str, fail: bool) {
        self.state.by_probe.set(probe, &[fail]);
    }

    /// Makes `/by-probe` answer `probe`'s requests by `pattern` in a cycle,
    /// one request each (`true`: 503), from its next request on: a probe
    /// that sees the site flap (`[true, true, false]`: fail, fail, ok, …).
    pub fn fail_pattern_for(&self, probe: &str, pattern: &[bool]) {
        self.state.by_probe.set(probe, pattern);
    }

    /// Requests received for exactly `path`.
    pub fn hits(&self, path: &str) -> u64 {
        self.state
            .hits
            .lock()
            .expect("hits lock")
            .get(path)
            .copied()
            .unwrap_or(0)
    }
}

/// A TCP stream whose first write waits `stall` (none when zero).
struct StallFirstWrite {
    inner: TcpStream,
    stall: Option<Duration>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl StallFirstWrite {
    fn new(inner: TcpStream, stall: Duration) -> Self {
        StallFirstWrite {
            inner,
            stall: (!stall.is_zero()).then_some(stall),
            sleep: None,
        }
    }
}

impl AsyncRead for StallFirstWrite {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for StallFirstWrite {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if let Some(stall) = self.stall {
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.stall = None;
            self.sleep = None;
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

fn full(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .body(Full::new(body.into()).boxed())
        .expect("valid response")
}

async fn route(req: Request<Incoming>, st: Arc<State>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    *st.hits
        .lock()
        .expect("hits lock")
        .entry(path.clone())
        .or_default() += 1;
    st.requests
        .lock()
        .expect("requests lock")
        .entry(path.clone())
        .or_default()
        .push(req.headers().clone());
    let now = st.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    st.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let probe = req.headers().get("x-probe").and_then(|v| v.to_str().ok());
    let response = if path == "/by-probe" && st.by_probe.next_fails(probe) {
        full(StatusCode::SERVICE_UNAVAILABLE, "failing for this probe\n")
    } else {
        answer(&path, &st).await
    };
    st.in_flight.fetch_sub(1, Ordering::SeqCst);
    response
}

async fn answer(path: &str, st: &Arc<State>) -> Response<Body> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let number = |i: usize| segments.get(i).and_then(|s| s.parse::<u64>().ok());
    match segments.first().copied().unwrap_or("") {
        "" | "by-probe" => full(StatusCode::OK, "ok\n"),
        "text" => full(StatusCode::OK, TEXT),
        "doc" => {
            let (status, body) = st.doc.lock().expect("doc lock").clone();
            let mut r = full(
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                body,
            );
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json"),
            );
            r
        }
        "status" => {
            let code = number(1)
                .and_then(|c| StatusCode::from_u16(c as u16).ok())
                .unwrap_or(StatusCode::BAD_REQUEST);
            full(code, format!("status {code}\n"))
        }
        "slow" => {
            tokio::time::sleep(Duration::from_millis(number(1).unwrap_or(1000))).await;
            full(StatusCode::OK, "slow\n")
        }
        "redirect" => match number(1) {
            Some(0) => full(StatusCode::OK, "arrived\n"),
            Some(n) => Response::builder()
                .status(StatusCode::FOUND)
                .header("location", format!("/redirect/{}", n - 1))
                .body(Full::new(Bytes::new()).boxed())
                .expect("valid response"),
            None => full(StatusCode::BAD_REQUEST, "redirect/{n}\n"),
        },
        "to" => {
            let rest = segments.get(2..).map(|s| s.join("/")).unwrap_or_default();
            Response::builder()
                .status(StatusCode::FOUND)
                .header(
                    "location",
                    format!("http://localhost:{}/{rest}", number(1).unwrap_or(0)),
                )
                .body(Full::new(Bytes::new()).boxed())
                .expect("valid response")
        }
        "long-location" => Response::builder()
            .status(StatusCode::FOUND)
            .header(
                "location",
                format!("http://[{}", "x".repeat(number(1).unwrap_or(10) as usize)),
            )
            .body(Full::new(Bytes::new()).boxed())
            .expect("valid response"),
        "big" => {
            let total = number(1).unwrap_or(0);
            let st = Arc::clone(st);
            let chunks = futures::stream::unfold(0u64, move |sent| {
                let st = Arc::clone(&st);
                async move {
                    if sent >= total {
                        return None;
                    }
                    let n = (total - sent).min(16 * 1024);
                    st.bytes_sent.fetch_add(n, Ordering::SeqCst);
                    let frame = Frame::data(Bytes::from(vec![b'x'; n as usize]));
                    Some((Ok::<_, Infallible>(frame), sent + n))
                }
            });
            Response::builder()
                .status(StatusCode::OK)
                .header("content-length", total.to_string())
                .body(BodyExt::boxed(StreamBody::new(chunks)))
                .expect("valid response")
        }
        "phases" => {
            tokio::time::sleep(Duration::from_millis(number(1).unwrap_or(0))).await;
            let gap = Duration::from_millis(number(2).unwrap_or(0));
            let chunks = futures::stream::unfold(0u8, move |n| async move {
                let text: &'static str = match n {
                    0 => "first chunk\n",
                    1 => {
                        tokio::time::sleep(gap).await;
                        "second chunk\n"
                    }
                    _ => return None,
                };
                Some((Ok::<_, Infallible>(Frame::data(Bytes::from(text))), n + 1))
            });
            Response::builder()
                .status(StatusCode::OK)
                .body(BodyExt::boxed(StreamBody::new(chunks)))
                .expect("valid response")
        }
        _ => full(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// Certificates for the HTTPS tests, made fresh in memory.
pub struct Pki {
    /// The test CA's certificate (PEM), to give as `tls_ca`.
    pub ca_pem: String,
    /// A server config whose certificate (for `localhost` and `127.0.0.1`) the CA signed.
    pub ca_signed: Arc<ServerConfig>,
    /// A server config with a self-signed certificate for the same names.
    pub self_signed: Arc<ServerConfig>,
    /// notAfter of both server certificates, epoch seconds.
    pub not_after: i64,
    /// A server config whose certificate the CA signed for the same names,
    /// but which expired (valid from 2020-01-01 to 2021-01-01).
    pub expired: Arc<ServerConfig>,
}

impl Pki {
    /// Makes a CA, a certificate it signs and a self-signed one, valid until
    /// 2040-01-01, and an expired certificate the CA signed.
    pub fn new() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let not_after = rcgen::date_time_ymd(2040, 1, 1);
        let ca_key = KeyPair::generate().expect("ca key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "website-monitor test CA");
        let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
        let issuer = Issuer::new(ca_params, ca_key);

        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let server_params = || {
            let mut p = CertificateParams::new(names.clone()).expect("server params");
            p.distinguished_name.push(DnType::CommonName, "localhost");
            p.not_after = not_after;
            p
        };
        let signed_key = KeyPair::generate().expect("server key");
        let signed = server_params()
            .signed_by(&signed_key, &issuer)
            .expect("signed cert");
        let expired_key = KeyPair::generate().expect("expired key");
        let expired = {
            let mut p = server_params();
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
            p.signed_by(&expired_key, &issuer).expect("expired cert")
        };
        let self_key = KeyPair::generate().expect("self-signed key");
        let self_signed = server_params()
            .self_signed(&self_key)
            .expect("self-signed cert");

        let config = |cert: &rcgen::Certificate, key: &KeyPair| {
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let mut c = ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("protocol versions")
                .with_no_client_auth()
                .with_single_cert(
                    vec![cert.der().clone()],
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
                )
                .expect("server config");
            c.alpn_protocols = vec![b"http/1.1".to_vec()];
            Arc::new(c)
        };
        Pki {
            ca_pem: ca_cert.pem(),
            ca_signed: config(&signed, &signed_key),
            self_signed: config(&self_signed, &self_key),
            not_after: not_after.unix_timestamp(),
            expired: config(&expired, &expired_key),
        }
    }
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

/// A reqwest client builder for tests and the bench (loopback HTTP, no
/// proxy).
pub fn http_client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder().no_proxy()
}
