use super::*;

const SOURCE_RECORD: &str = r#"{"url":"https://example.com/","checked_at":1764264000.5,"status_code":200,"duration":0.184123,"re_check":true,"ok":true,"error":null,"timings":{"dns":0.002,"connect":0.01,"tls":0.03,"ttfb":0.1,"transfer":0.04},"http_version":"HTTP/2","response_bytes":5120,"redirects":0,"ip":"93.184.216.34","tls":{"version":"TLSv1.3","cert_not_after":1790000000,"cert_days_left":297},"probe":"eu-1","interval":0.25,"schema_version":2}"#;

fn all_bits() -> i32 {
    (1 << FIELDS.len()) - 1
}

#[test]
fn a_source_record_is_all_typed_columns_and_no_extra() {
    let row = Compact::from_json(SOURCE_RECORD).unwrap();
    assert_eq!(row.present, all_bits());
    assert_eq!(row.extra, None);
    assert_eq!(
        row.checked_at,
        Some(UNIX_EPOCH + Duration::from_millis(1_764_264_000_500))
    );
    assert_eq!(row.status_code, Some(200));
    assert_eq!(row.duration_us, Some(184_123));
    assert_eq!(
        row.timings_us,
        [
            Some(2000),
            Some(10_000),
            Some(30_000),
            Some(100_000),
            Some(40_000)
        ]
    );
    assert_eq!((row.http_version, row.tls_version), (Some(20), Some(13)));
    assert_eq!(
        (row.cert_not_after, row.cert_days_left),
        (Some(1_790_000_000), Some(297))
    );
    assert_eq!(row.ip, Some("93.184.216.34".parse().unwrap()));
    assert_eq!(row.probe.as_deref(), Some("eu-1"));
    assert_eq!(
        (row.ok, row.re_check, row.schema_version),
        (Some(true), Some(true), Some(2))
    );
    assert_eq!(row.interval_ms, Some(250));
    assert_eq!((row.response_bytes, row.redirects), (Some(5120), Some(0)));
}

#[test]
fn a_failure_keeps_its_error_in_columns_and_null_phases() {
    let row = Compact::from_json(
        r#"{"url":"http://x/","checked_at":1,"status_code":null,"ok":false,"error":{"kind":"dns","message":"no such host"},"timings":{"dns":null,"connect":null,"tls":null,"ttfb":null,"transfer":null},"tls":null}"#,
    )
    .unwrap();
    assert_eq!(row.extra, None);
    assert_eq!(row.error_kind.as_deref(), Some("dns"));
    assert_eq!(row.error_message.as_deref(), Some("no such host"));
    assert_eq!(row.timings_us, [None; 5]);
    assert_eq!(row.tls_version, None);
    let bits = [
        "url",
        "checked_at",
        "status_code",
        "ok",
        "error",
        "timings",
        "tls",
    ]
    .iter()
    .map(|f| 1 << FIELDS.iter().position(|k| k == f).unwrap())
    .sum::<i32>();
    assert_eq!(row.present, bits);
}

#[test]
fn the_seed_record_keeps_its_unknown_field_in_extra() {
    let row = Compact::from_json(r#"{"url": "http://foo.bar", "key": "valuefoo"}"#).unwrap();
    assert_eq!(row.present, 1);
    assert_eq!(row.extra.as_deref(), Some(r#"{"key":"valuefoo"}"#));
}

#[test]
fn known_fields_that_would_not_read_back_the_same_go_to_extra_as_written() {
    let cases = [
        (r#""status_code":"200""#, "status_code"),
        (r#""status_code":200.0"#, "status_code"),
        (r#""status_code":70000"#, "status_code"),
        (r#""duration":-1"#, "duration"),
        (r#""duration":"fast""#, "duration"),
        (r#""ok":"yes""#, "ok"),
        (r#""checked_at":"2024-01-02T03:04:05Z""#, "checked_at"),
        (r#""checked_at":1e300"#, "checked_at"),
        (r#""error":{"kind":"dns"}"#, "error"),
        (r#""error":{"kind":"dns","message":"m","code":3}"#, "error"),
        (r#""timings":{"dns":0.1}"#, "timings"),
        (r#""timings":null"#, "timings"),
        (r#""http_version":"HTTP/1.2""#, "http_version"),
        (r#""ip":"::0:1""#, "ip"),
        (r#""ip":"localhost""#, "ip"),
        (r#""ip":"::102:304""#, "ip"),
        (r#""ip":"::a:b""#, "ip"),
        (
            r#""tls":{"version":null,"cert_not_after":null,"cert_days_left":null}"#,
            "tls",
        ),
        (
            r#""tls":{"version":"SSLv3","cert_not_after":null,"cert_days_left":null}"#,
            "tls",
        ),
        (r#""probe":7"#, "probe"),
        (r#""redirects":1.5"#, "redirects"),
        (r#""response_bytes":3000000000"#, "response_bytes"),
    ];
    for (member, field) in cases {
        let text = format!(r#"{{"url":"u",{member}}}"#);
        let row = Compact::from_json(&text).unwrap();
        let bit = 1 << FIELDS.iter().position(|f| *f == field).unwrap();
        assert_eq!(row.present & bit, 0, "{text}: {field} must not be typed");
        assert_eq!(
            row.extra.as_deref(),
            Some(format!("{{{member}}}").as_str()),
            "{text}"
        );
    }
}

#[test]
fn a_long_probe_name_stays_in_extra() {
    let long = "p".repeat(MAX_PROBE_BYTES + 1);
    let text = format!(r#"{{"url":"u","probe":"{long}"}}"#);
    let row = Compact::from_json(&text).unwrap();
    assert_eq!(row.probe, None);
    assert!(row.extra.unwrap().contains(&long));
}

#[test]
fn of_a_repeated_key_the_last_counts_as_in_jsonb() {
    let row = Compact::from_json(r#"{"url":"u","status_code":"x","status_code":404}"#).unwrap();
    assert_eq!(row.status_code, Some(404));
    assert_eq!(row.extra, None);
    let row = Compact::from_json(r#"{"url":"u","status_code":404,"status_code":"x"}"#).unwrap();
    assert_eq!(row.present & 4, 0);
    assert_eq!(row.extra.as_deref(), Some(r#"{"status_code":"x"}"#));
}

#[test]
fn escaped_keys_and_strings_are_read_and_written_back_escaped() {
    let row = Compact::from_json(r#"{"url":"u","\u006bey":"a\"b","probe":"p\u00e9"}"#).unwrap();
    assert_eq!(row.probe.as_deref(), Some("p\u{e9}"));
    assert_eq!(row.extra.as_deref(), Some(r#"{"key":"a\"b"}"#));
}

#[test]
fn times_are_kept_to_the_microsecond() {
    let row = Compact::from_json(r#"{"url":"u","duration":0.0000014,"timings":{"dns":1e-7,"connect":null,"tls":null,"ttfb":2,"transfer":0}}"#).unwrap();
    assert_eq!(row.duration_us, Some(1));
    assert_eq!(
        row.timings_us,
        [Some(0), None, None, Some(2_000_000), Some(0)]
    );
}

#[test]
fn an_interval_not_in_whole_milliseconds_stays_in_extra_as_written() {
    for (interval, kept) in [
        ("30", Some(30_000)),
        ("0.001", Some(1)),
        ("1e-4", None),
        ("-1", None),
    ] {
        let text = format!(r#"{{"url":"http://x/","interval":{interval}}}"#);
        let row = Compact::from_json(&text).unwrap();
        assert_eq!(row.interval_ms, kept, "{interval}");
        assert_eq!(row.present & (1 << 15) != 0, kept.is_some(), "{interval}");
        let extra = kept
            .is_none()
            .then(|| format!(r#"{{"interval":{interval}}}"#));
        assert_eq!(row.extra, extra, "{interval}");
    }
}
