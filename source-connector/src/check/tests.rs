//! Unit tests of one check: expected statuses, cancellation, error kinds.

use std::time::Duration;

use super::*;

fn site(url: &str) -> SiteSpec {
    SiteSpec::for_test(url, Duration::from_secs(1), Duration::from_secs(5))
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
    let client = build_client(&site("http://x/").client, &tls::TlsBase::load().unwrap()).unwrap();
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
