//! What one check finds: status and regex outcomes, network failures, TLS,
//! redirects, the body cap, connection reuse.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;
use website_monitor_source::record::{ErrorKind, Record};
use website_monitor_tests::http::{Pki, TestServer, TEXT};
use website_monitor_tests::source::{self, consume, kind, once, records, source_config};
use website_monitor_tests::{create_topic, eventually, stack, unique, Site};

#[tokio::test]
async fn http_outcomes_status_regex_and_expected_status() {
    let s = TestServer::http().await;
    let topic = unique("src-http");
    let config = source_config(&topic).sites([
        Site::new(s.url("/")),
        Site::new(s.url("/text")).set("regex", "lazy dog"),
        Site::new(s.url("/text?miss")).set("regex", "sleepy cat"),
        Site::new(s.url("/status/500")),
        Site::new(s.url("/status/404")).set("expected_status", vec![404]),
        Site::new(s.url("/status/200")).set("expected_status", vec![201]),
    ]);
    let (summary, r) = once(&topic, &config).await;
    assert_eq!(
        (summary.checks_finished, summary.delivered, summary.failed),
        (6, 6, 0)
    );

    let ok = &r[&s.url("/")];
    assert!(
        ok.ok && ok.error.is_none() && ok.re_check.is_none(),
        "{ok:?}"
    );
    assert_eq!(ok.status_code, Some(200));
    assert_eq!(ok.http_version.as_deref(), Some("HTTP/1.1"));
    assert_eq!(ok.response_bytes, Some(3));
    assert_eq!(ok.ip.as_deref(), Some("127.0.0.1"));
    assert!(ok.tls.is_none());

    let matched = &r[&s.url("/text")];
    assert!(matched.ok && matched.re_check == Some(true), "{matched:?}");
    assert_eq!(matched.response_bytes, Some(TEXT.len() as u64));

    let missed = &r[&s.url("/text?miss")];
    assert_eq!(kind(missed), Some(ErrorKind::Regex), "{missed:?}");
    assert!(!missed.ok && missed.re_check == Some(false));
    assert_eq!(missed.status_code, Some(200));

    let err500 = &r[&s.url("/status/500")];
    assert_eq!(kind(err500), Some(ErrorKind::Status), "{err500:?}");
    assert_eq!(err500.status_code, Some(500));
    assert!(!err500.ok && err500.re_check.is_none());

    assert!(
        r[&s.url("/status/404")].ok,
        "{:?}",
        r[&s.url("/status/404")]
    );
    let not201 = &r[&s.url("/status/200")];
    assert_eq!(
        (kind(not201), not201.status_code),
        (Some(ErrorKind::Status), Some(200))
    );
}

#[tokio::test]
async fn network_failures_dns_connect_timeout() {
    let s = TestServer::http().await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let topic = unique("src-net");
    let closed_url = format!("http://127.0.0.1:{closed}/");
    let config = source_config(&topic).sites([
        Site::new("http://no-such-host.invalid/"),
        Site::new(closed_url.as_str()),
        Site::new(s.url("/slow/3000")).set("timeout", "500ms"),
    ]);
    let (summary, r) = once(&topic, &config).await;
    assert_eq!(summary.delivered, 3);

    let dns = &r["http://no-such-host.invalid/"];
    assert_eq!(kind(dns), Some(ErrorKind::Dns), "{dns:?}");
    assert!(!dns.ok && dns.status_code.is_none() && dns.ip.is_none());
    assert!(
        dns.timings.dns.is_some() && dns.timings.connect.is_none(),
        "{dns:?}"
    );

    let refused = &r[&closed_url];
    assert_eq!(kind(refused), Some(ErrorKind::Connect), "{refused:?}");
    assert!(!refused.ok && refused.status_code.is_none());

    let slow = &r[&s.url("/slow/3000")];
    assert_eq!(kind(slow), Some(ErrorKind::Timeout), "{slow:?}");
    assert!(!slow.ok && slow.status_code.is_none());
    // Connected fine before timing out: the phase it got through is kept.
    assert!(slow.timings.connect.is_some(), "{slow:?}");
    assert!(slow.duration >= 0.5, "{slow:?}");
}

#[tokio::test]
async fn tls_unknown_ca_self_signed_trusted_ca_and_no_verify() {
    let pki = Pki::new();
    let signed = TestServer::https(pki.ca_signed.clone()).await;
    let selfsigned = TestServer::https(pki.self_signed.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let ca = ca.display().to_string();
    let topic = unique("src-tls");
    let config = source_config(&topic).sites([
        Site::new(signed.url("/?unknown-ca")),
        Site::new(selfsigned.url("/")),
        Site::new(signed.url("/")).set("tls_ca", ca.as_str()),
        Site::new(signed.url_by_name("/text"))
            .set("tls_ca", ca.as_str())
            .set("regex", "fox"),
        Site::new(selfsigned.url("/?no-verify")).set("tls_verify", false),
    ]);
    let (_, r) = once(&topic, &config).await;

    for url in [signed.url("/?unknown-ca"), selfsigned.url("/")] {
        let rec = &r[&url];
        assert_eq!(kind(rec), Some(ErrorKind::Tls), "{rec:?}");
        assert!(!rec.ok && rec.status_code.is_none());
    }

    let good = &r[&signed.url("/")];
    assert!(good.ok, "{good:?}");
    let tls = good.tls.as_ref().expect("tls facts");
    assert_eq!(tls.version.as_deref(), Some("TLSv1.3"));
    assert_eq!(tls.cert_not_after, Some(pki.not_after));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert_eq!(
        tls.cert_days_left,
        Some((pki.not_after - now).div_euclid(86_400))
    );
    let t = &good.timings;
    assert!(t.dns.is_none(), "an IP address needs no lookup: {t:?}");
    assert!(
        t.connect.is_some() && t.tls.is_some() && t.ttfb.is_some() && t.transfer.is_some(),
        "{t:?}"
    );

    let by_name = &r[&signed.url_by_name("/text")];
    assert!(by_name.ok && by_name.re_check == Some(true), "{by_name:?}");
    assert!(
        by_name.timings.dns.is_some() && by_name.timings.tls.is_some(),
        "{by_name:?}"
    );

    let no_verify = &r[&selfsigned.url("/?no-verify")];
    assert!(no_verify.ok, "{no_verify:?}");
    assert_eq!(
        no_verify.tls.as_ref().and_then(|t| t.cert_not_after),
        Some(pki.not_after)
    );
}

/// A certificate from the trusted CA (`tls_ca`), for the right name, but
/// expired: the check fails with `error.kind = "tls"`, and says why. (By IP
/// and by name, so neither path skips the dates.)
#[tokio::test]
async fn an_expired_certificate_from_a_trusted_ca_is_a_tls_error() {
    let pki = Pki::new();
    let expired = TestServer::https(pki.expired.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let ca = ca.display().to_string();
    let topic = unique("src-tls-expired");
    let config = source_config(&topic).sites([
        Site::new(expired.url("/")).set("tls_ca", ca.as_str()),
        Site::new(expired.url_by_name("/")).set("tls_ca", ca.as_str()),
    ]);
    let (_, r) = once(&topic, &config).await;
    for url in [expired.url("/"), expired.url_by_name("/")] {
        let rec = &r[&url];
        assert_eq!(kind(rec), Some(ErrorKind::Tls), "{rec:?}");
        assert!(!rec.ok && rec.status_code.is_none(), "{rec:?}");
        let message = &rec.error.as_ref().expect("an error").message;
        assert!(message.to_lowercase().contains("expired"), "{message}");
    }
    assert_eq!(expired.hits("/"), 0, "no request went over the connection");
}

#[tokio::test]
async fn redirects_followed_counted_and_limited() {
    let s = TestServer::http().await;
    let topic = unique("src-redir");
    let config = source_config(&topic).sites([
        Site::new(s.url("/redirect/3")),
        Site::new(s.url("/redirect/3?limit")).set("max_redirects", 2),
        Site::new(s.url("/redirect/1?no-follow")).set("follow_redirects", false),
    ]);
    let (_, r) = once(&topic, &config).await;

    let followed = &r[&s.url("/redirect/3")];
    assert!(followed.ok, "{followed:?}");
    assert_eq!((followed.redirects, followed.status_code), (3, Some(200)));
    assert_eq!(s.hits("/redirect/0"), 1, "the final hop was requested once");

    let limited = &r[&s.url("/redirect/3?limit")];
    assert_eq!(kind(limited), Some(ErrorKind::Http), "{limited:?}");
    assert_eq!((limited.redirects, limited.status_code), (2, Some(302)));

    let kept = &r[&s.url("/redirect/1?no-follow")];
    assert!(kept.ok, "{kept:?}");
    assert_eq!((kept.redirects, kept.status_code), (0, Some(302)));
}

#[tokio::test]
async fn body_over_the_cap_is_not_read_past_it() {
    let s = TestServer::http().await;
    let topic = unique("src-body");
    const TOTAL: u64 = 256 * 1024 * 1024;
    const CAP: u64 = 64 * 1024;
    let big = s.url(&format!("/big/{TOTAL}"));
    let config = source_config(&topic).sites([
        Site::new(big.as_str())
            .set("max_body_bytes", i64::try_from(CAP).unwrap())
            .set("regex", "xxx"),
        Site::new(s.url("/big/1000?under")).set("max_body_bytes", 1000),
    ]);
    let (_, r) = once(&topic, &config).await;

    let over = &r[&big];
    assert_eq!(kind(over), Some(ErrorKind::Body), "{over:?}");
    assert_eq!(over.status_code, Some(200));
    assert_eq!(
        over.re_check,
        Some(true),
        "the regex still sees the first bytes"
    );
    let read = over.response_bytes.expect("bytes counted");
    assert!(
        read > CAP && read < CAP + 1024 * 1024,
        "read {read} bytes with a cap of {CAP}"
    );
    // The server produced at most what the socket buffers took, far from all of it.
    let sent = s.bytes_sent();
    assert!(
        sent < 32 * 1024 * 1024,
        "server sent {sent} of {TOTAL} bytes"
    );

    let under = &r[&s.url("/big/1000?under")];
    assert!(under.ok, "exactly the cap is fine: {under:?}");
    assert_eq!(under.response_bytes, Some(1000));
}

#[tokio::test]
async fn fresh_connection_per_check_unless_keep_alive() {
    let fresh = TestServer::http().await;
    let reused = TestServer::http().await;
    let topic = unique("src-keepalive");
    create_topic(&stack().brokers, &topic, 1).await;
    let config = source_config(&topic).set("interval", "200ms").sites([
        Site::new(fresh.url("/")),
        Site::new(reused.url("/")).set("keep_alive", true),
    ]);
    let stop = CancellationToken::new();
    let running = source::start(&config, &stop).await;
    eventually(
        "a few checks of each site",
        Duration::from_secs(30),
        || async { (fresh.hits("/") >= 4 && reused.hits("/") >= 4).then_some(()) },
    )
    .await;
    stop.cancel();
    running.wait().await.unwrap();
    assert_eq!(
        fresh.connections(),
        fresh.hits("/"),
        "one connection per check by default"
    );
    assert!(
        reused.connections() < reused.hits("/"),
        "keep_alive reuses connections: {} for {} checks",
        reused.connections(),
        reused.hits("/")
    );
    let found = records(&consume(&topic).await);
    let fresh_records: Vec<&Record> = found.iter().filter(|r| r.url == fresh.url("/")).collect();
    assert!(
        fresh_records
            .iter()
            .all(|r| r.ok && r.timings.connect.is_some()),
        "{fresh_records:?}"
    );
    let reused_records: Vec<&Record> = found.iter().filter(|r| r.url == reused.url("/")).collect();
    assert!(
        reused_records
            .iter()
            .any(|r| r.ok && r.timings.connect.is_none()),
        "a check on a reused connection has no connect phase: {reused_records:?}"
    );
}
