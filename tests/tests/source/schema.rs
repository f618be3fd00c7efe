//! The record contract (issue 16): every record the source writes — each
//! error kind, http and https — matches `schema/record.schema.json`, and
//! carries the content-type and schema-version headers.

use std::collections::BTreeSet;

use serde_json::Value;
use website_monitor_tests::http::{Pki, TestServer};
use website_monitor_tests::source::{consume, run_once, source_config};
use website_monitor_tests::{unique, Site};

/// The published schema, compiled.
fn schema() -> jsonschema::Validator {
    schema_file("record.schema.json")
}

/// A schema file of `schema/`, compiled.
fn schema_file(name: &str) -> jsonschema::Validator {
    let path = format!("{}/../schema/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("a schema file");
    let schema: Value = serde_json::from_str(&text).expect("the schema is JSON");
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("the schema compiles")
}

#[test]
fn the_schema_refuses_what_the_contract_forbids() {
    let v = schema();
    let good = serde_json::json!({
        "url": "https://example.com/", "checked_at": 1764312000.123, "status_code": 200,
        "duration": 0.28, "re_check": null, "ok": true, "error": null,
        "timings": {"dns": 0.003, "connect": 0.09, "tls": 0.09, "ttfb": 0.09, "transfer": 0.0002},
        "http_version": "HTTP/1.1", "response_bytes": 1256, "redirects": 0, "ip": "93.184.215.14",
        "tls": {"version": "TLSv1.3", "cert_not_after": 1767225599, "cert_days_left": 36},
        "probe": "local", "interval": 30.0, "schema_version": 2
    });
    assert!(v.is_valid(&good), "docs/record.md's example");
    // Version 1 (no interval) stays valid under its own file.
    let mut v1 = good.clone();
    v1.as_object_mut().unwrap().remove("interval");
    v1["schema_version"] = 1.into();
    assert!(schema_file("record.v1.schema.json").is_valid(&v1));
    assert!(!v.is_valid(&v1), "a version 1 record is not version 2");
    let broken: [(&str, Value); 14] = [
        ("ok without error", serde_json::json!({"ok": false})),
        (
            "an unknown error kind",
            serde_json::json!({"ok": false, "error": {"kind": "weird", "message": "x"}}),
        ),
        ("a field missing", serde_json::json!({"probe": Value::Null})),
        ("a string duration", serde_json::json!({"duration": "0.2"})),
        ("not an address", serde_json::json!({"ip": "example.com"})),
        ("another schema", serde_json::json!({"schema_version": 3})),
        ("a zero interval", serde_json::json!({"interval": 0})),
        ("a negative interval", serde_json::json!({"interval": -1})),
        ("no interval", serde_json::json!({"interval": Value::Null})),
        (
            "ok without a status",
            serde_json::json!({"status_code": null}),
        ),
        (
            "ok without a version",
            serde_json::json!({"http_version": null}),
        ),
        (
            "ok with a failed regex",
            serde_json::json!({"re_check": false}),
        ),
        (
            "a status error without a status",
            serde_json::json!({"ok": false, "status_code": null,
                               "error": {"kind": "status", "message": "unexpected status"}}),
        ),
        (
            "a url that is no http(s) url",
            serde_json::json!({"url": "x"}),
        ),
    ];
    for (what, change) in broken {
        let mut bad = good.clone();
        for (k, val) in change.as_object().unwrap() {
            if what == "a field missing" || what == "no interval" {
                bad.as_object_mut().unwrap().remove(k);
            } else {
                bad[k] = val.clone();
            }
        }
        assert!(!v.is_valid(&bad), "{what} is refused: {bad}");
    }
}

#[tokio::test]
async fn records_of_every_error_kind_over_http_and_https_match_the_schema_and_carry_headers() {
    let s = TestServer::http().await;
    let pki = Pki::new();
    let signed = TestServer::https(pki.ca_signed.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let ca = ca.display().to_string();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let topic = unique("src-schema");
    let config = source_config(&topic).sites([
        Site::new(s.url("/")),
        Site::new(signed.url("/")).set("tls_ca", ca.as_str()),
        Site::new(signed.url("/?no-ca")),
        Site::new("http://no-such-host.invalid/"),
        Site::new(format!("http://127.0.0.1:{closed}/")),
        Site::new(s.url("/slow/3000")).set("timeout", "500ms"),
        Site::new(s.url("/redirect/3")).set("max_redirects", 1),
        Site::new(s.url("/status/500")),
        Site::new(s.url("/text")).set("regex", "not in the text"),
        Site::new(s.url("/big/100000")).set("max_body_bytes", 1000),
    ]);
    run_once(&topic, &config).await;
    let consumed = consume(&topic).await;
    assert_eq!(consumed.len(), 10);
    let v = schema();
    let mut kinds = BTreeSet::new();
    for c in &consumed {
        let record = c.json();
        let problems: Vec<String> = v.iter_errors(&record).map(|e| e.to_string()).collect();
        assert!(
            problems.is_empty(),
            "{record} breaks the schema: {problems:?}"
        );
        kinds.insert(
            record["error"]["kind"]
                .as_str()
                .unwrap_or("none")
                .to_owned(),
        );
        assert_eq!(
            c.headers,
            [
                ("content-type".to_owned(), b"application/json".to_vec()),
                ("schema-version".to_owned(), b"2".to_vec())
            ],
            "{record}"
        );
    }
    let every: BTreeSet<String> = [
        "none", "dns", "connect", "tls", "timeout", "http", "status", "regex", "body",
    ]
    .map(str::to_owned)
    .into();
    assert_eq!(kinds, every, "every error kind was checked");
    let https_ok = consumed
        .iter()
        .map(|c| c.json())
        .find(|r| r["ok"] == true && r["tls"].is_object());
    assert!(https_ok.is_some(), "an https record with TLS facts");
}
