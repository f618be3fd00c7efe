//! TLS to PostgreSQL (require, verify-ca, verify-full; a CA that did not
//! sign the server's certificate, an expired certificate) and to Kafka
//! (mTLS), and a sink role with the least privilege.

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use website_monitor_tests::http::Pki;

use website_monitor_tests::sink::{self, sink_config, SinkTest};
use website_monitor_tests::{kv_uri, table_exists, unique_ident, wait_not_ready, with_param, WAIT};

/// Starts a sink on `uri` and checks it never gets PostgreSQL: `/readyz`
/// names PostgreSQL and no table appears.
async fn assert_refused(t: &SinkTest, uri: &str, what: &str) {
    assert_refused_because(t, uri, "PostgreSQL", what).await;
}

/// [`assert_refused`], with `/readyz` giving `cause`.
async fn assert_refused_because(t: &SinkTest, uri: &str, cause: &str, what: &str) {
    let (schema, topic) = t.fresh("sink_tls_bad", 1).await;
    let (running, token) = sink::start(&sink_config(&t.stack, &topic, &schema, uri)).await;
    let addr = running.metrics_addr.to_string();
    wait_not_ready(
        &addr,
        cause,
        &format!("/readyz to report the certificate problem ({what}): {cause}"),
        WAIT,
    )
    .await;
    assert!(
        !table_exists(&t.db, &schema, "site").await,
        "{what}: no table was created through an unverified connection"
    );
    sink::stop(running, token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_postgres_with_require_and_verify_full() {
    let t = SinkTest::new("sink_tls", 1).await;
    let s = &t.stack;
    let ca = s.tls_dir.join("ca.pem");
    // The server certificate names 127.0.0.1 and localhost only. Connecting
    // to 127.0.0.1 while calling it `not-in-the-cert.invalid` (libpq's
    // `hostaddr`) gives a target whose chain is good and whose name is not:
    // verify-ca must connect there and verify-full must not.
    let wrong_name = |mode: &str| {
        format!(
            "{} sslmode={mode} sslrootcert='{}'",
            kv_uri(
                &s.postgres_uri,
                None,
                Some("not-in-the-cert.invalid"),
                Some("127.0.0.1"),
                None
            ),
            ca.display()
        )
    };
    for (mode, base) in [
        ("require", with_param(&s.postgres_uri, "sslmode", "require")),
        ("verify-ca", wrong_name("verify-ca")),
        (
            "verify-full",
            format!(
                "{}&sslrootcert={}",
                with_param(&s.postgres_uri, "sslmode", "verify-full"),
                ca.display()
            ),
        ),
    ] {
        let (schema, topic) = t.fresh("sink_tls", 1).await;
        let app = unique_ident("sinktls");
        let uri = if base.starts_with("postgres") {
            format!("{base}&application_name={app}")
        } else {
            format!("{base} application_name={app}")
        };
        website_monitor_tests::produce_json(
            &s.brokers,
            &topic,
            &[br#"{"url": "http://tls/"}"#.to_vec()],
        )
        .await;
        let (running, token) = sink::start(&sink_config(s, &topic, &schema, &uri)).await;
        website_monitor_tests::wait_rows(&t.db, &schema, "site_check", 1).await;
        let ssl: bool = t
            .db
            .query_one(
                "SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = $1",
                &[&app],
            )
            .await
            .unwrap()
            .get::<_, Option<bool>>(0)
            .expect("the sink's connection is listed");
        assert!(ssl, "sslmode={mode}: the sink's connection is encrypted");
        sink::stop(running, token).await;
    }

    // The same good chain under a name the certificate does not hold:
    // verify-full checks the name, so it must not connect.
    assert_refused(
        &t,
        &wrong_name("verify-full"),
        "verify-full, name not in the certificate",
    )
    .await;

    // verify-full against a CA that did not sign the server's certificate must not connect.
    let wrong_ca = tempfile::NamedTempFile::new().unwrap();
    {
        let mut f = wrong_ca.reopen().unwrap();
        f.write_all(&std::fs::read(s.tls_dir.join("client.pem")).unwrap())
            .unwrap();
    }
    let uri = format!(
        "{}&sslrootcert={}",
        with_param(&s.postgres_uri, "sslmode", "verify-full"),
        wrong_ca.path().display()
    );
    assert_refused(&t, &uri, "verify-full, wrong CA").await;
}

/// `verify-ca` checks the chain: against the real PostgreSQL, with a CA of
/// its own (made here, not the stack's) as `sslrootcert`, the sink must not
/// connect — by IP, so the name would match and only the chain is wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_ca_with_a_ca_that_did_not_sign_the_server_certificate_is_refused() {
    let t = SinkTest::new("sink_tls_ca", 1).await;
    let s = &t.stack;
    let dir = tempfile::tempdir().unwrap();
    let other_ca = dir.path().join("other-ca.pem");
    std::fs::write(&other_ca, Pki::new().ca_pem).unwrap();
    let url = format!(
        "{}&sslrootcert={}",
        with_param(&s.postgres_uri, "sslmode", "verify-ca"),
        other_ca.display()
    );
    let cause = "invalid peer certificate: UnknownIssuer";
    assert_refused_because(&t, &url, cause, "verify-ca, another CA (URL form)").await;
    let kv = format!(
        "{} sslmode=verify-ca sslrootcert='{}'",
        kv_uri(&s.postgres_uri, None, None, Some("127.0.0.1"), None),
        other_ca.display()
    );
    assert_refused_because(&t, &kv, cause, "verify-ca, another CA (key=value form)").await;
    // `require` with a root certificate is verify-ca (libpq's rule).
    let require = format!(
        "{}&sslrootcert={}",
        with_param(&s.postgres_uri, "sslmode", "require"),
        other_ca.display()
    );
    assert_refused_because(&t, &require, cause, "require + sslrootcert, another CA").await;
}

/// PostgreSQL as far as TLS goes, on a loopback port: answers the
/// SSLRequest with `S` and does the TLS handshake with `tls`, then hangs up.
/// Counts the SSLRequests and the handshakes that completed, and keeps why
/// the others failed.
struct TlsOnlyPostgres {
    addr: SocketAddr,
    ssl_requests: Arc<AtomicUsize>,
    completed: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsOnlyPostgres {
    async fn start(tls: Arc<rustls::ServerConfig>) -> Self {
        // PostgreSQL's SSLRequest: length 8, code 1234.5679.
        const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let ssl_requests = Arc::new(AtomicUsize::new(0));
        let completed = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let (requests, done, failed) = (
            Arc::clone(&ssl_requests),
            Arc::clone(&completed),
            Arc::clone(&failures),
        );
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (acceptor, requests, done, failed) = (
                    acceptor.clone(),
                    Arc::clone(&requests),
                    Arc::clone(&done),
                    Arc::clone(&failed),
                );
                tokio::spawn(async move {
                    let mut first = [0u8; 8];
                    if stream.read_exact(&mut first).await.is_err() || first != SSL_REQUEST {
                        return;
                    }
                    requests.fetch_add(1, Ordering::SeqCst);
                    if stream.write_all(b"S").await.is_err() {
                        return;
                    }
                    match acceptor.accept(stream).await {
                        Ok(_) => {
                            done.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) => failed.lock().unwrap().push(e.to_string()),
                    }
                });
            }
        });
        Self {
            addr,
            ssl_requests,
            completed,
            failures,
            task,
        }
    }
}

impl Drop for TlsOnlyPostgres {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An expired server certificate, from the CA given as `sslrootcert` and
/// for the right name: verify-ca and verify-full both check the dates, so the
/// sink aborts the handshake, says why in `/readyz`, and never gets further.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_server_certificate_is_refused_under_verify_ca_and_verify_full() {
    let t = SinkTest::new("sink_tls_expired", 1).await;
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    // PostgreSQL's clients offer ALPN `postgresql`; this server insists on none.
    let mut tls = rustls::ServerConfig::clone(&pki.expired);
    tls.alpn_protocols.clear();
    let tls = Arc::new(tls);
    for mode in ["verify-ca", "verify-full"] {
        let server = TlsOnlyPostgres::start(Arc::clone(&tls)).await;
        let uri = format!(
            "postgres://postgres@127.0.0.1:{}/postgres?sslmode={mode}&sslrootcert={}&connect_timeout=5",
            server.addr.port(),
            ca.display()
        );
        let (schema, topic) = t.fresh("sink_tls_expired", 1).await;
        let (running, token) = sink::start(&sink_config(&t.stack, &topic, &schema, &uri)).await;
        let addr = running.metrics_addr.to_string();
        wait_not_ready(
            &addr,
            "invalid peer certificate: certificate expired",
            &format!("/readyz to report the expired certificate ({mode})"),
            WAIT,
        )
        .await;
        sink::stop(running, token).await;
        assert!(server.ssl_requests.load(Ordering::SeqCst) >= 1, "{mode}");
        assert_eq!(
            server.completed.load(Ordering::SeqCst),
            0,
            "sslmode={mode}: no TLS handshake with an expired certificate completes"
        );
        assert!(
            !server.failures.lock().unwrap().is_empty(),
            "sslmode={mode}: the sink aborted the handshakes"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumes_through_the_mtls_listener() {
    let t = SinkTest::new("sink_mtls", 1).await;
    let s = &t.stack;
    t.produce(&[br#"{"url": "http://mtls/", "ok": true}"#.to_vec()])
        .await;
    let config = t
        .config()
        .brokers(&s.ssl_brokers)
        .kafka("ssl_ca", s.tls_dir.join("ca.pem").display().to_string())
        .kafka(
            "ssl_cert",
            s.tls_dir.join("client.pem").display().to_string(),
        )
        .kafka(
            "ssl_key",
            s.tls_dir.join("client.key").display().to_string(),
        );
    let (running, token) = sink::start(&config).await;
    t.wait_rows("site_check", 1).await;
    assert_eq!(t.count("site", "WHERE url = 'http://mtls/'").await, 1);
    sink::stop(running, token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_without_create_rights_starts_on_tables_a_dba_created() {
    let t = SinkTest::new("sink_lp", 1).await;
    let (db, schema) = (&t.db, &t.schema);
    // The DBA creates the tables (the sink's own migrations, as a superuser) ...
    t.migrate().await;
    // ... and grants a role only what the sink needs to write.
    let role = t.least_privileged_role().await;
    let may_create: bool = db
        .query_one(
            "SELECT has_database_privilege($1, current_database(), 'CREATE') OR has_schema_privilege($1, $2, 'CREATE')",
            &[&role, schema],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!may_create, "the role may not create anything");
    t.produce(&[
        br#"{"url": "http://lp/", "n": 1}"#.to_vec(),
        br#"{"url": "http://lp/", "n": 2}"#.to_vec(),
    ])
    .await;
    let uri = kv_uri(&t.stack.postgres_uri, Some(&role), None, None, None);
    let (running, token) = sink::start(&t.config().set("postgres_uri", uri)).await;
    t.wait_rows("site_check", 2).await;
    sink::stop(running, token).await;
    t.drop_role(&role).await;
}
