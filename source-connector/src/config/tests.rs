//! Unit tests of the `[source]` section: defaults, typed values, bounds and
//! the keys named in refusals.

use std::path::Path;
use std::time::Duration;

use connector_common::config::{load_str, ConfigError, Loaded, Section};

use super::*;

fn load(text: &str) -> Result<Loaded<SourceConfig>, ConfigError> {
    load_str(text, Path::new("c.toml"), Section::Source, &|_| None)
}

fn err(text: &str) -> String {
    load(text).expect_err("should be refused").to_string()
}

#[test]
fn defaults_apply() {
    let c = load("[[source.sites]]\nurl = \"https://example.com/\"\n")
        .unwrap()
        .section;
    assert_eq!(c.topic, "site-status");
    assert_eq!(c.probe, "local");
    assert_eq!(c.interval, Duration::from_secs(1));
    assert_eq!(c.timeout, Duration::from_secs(5));
    assert_eq!(c.metrics_address, "127.0.0.1:9464");
    assert!(c.per_site_metrics && c.follow_redirects && c.tls_verify && !c.keep_alive);
    assert_eq!(c.max_body_bytes, 1 << 20);
    assert_eq!(c.method.as_str(), "GET");
}

#[test]
fn bad_url_names_the_site_key() {
    let m = err("[source]\n[[source.sites]]\nurl = \"https://a.example/\"\n[[source.sites]]\nurl = \"ftp://x/\"\n");
    assert!(m.starts_with("c.toml:5: key `source.sites[1].url`"), "{m}");
    assert!(m.contains("only http and https"), "{m}");
    let m = err("[[source.sites]]\nurl = \"not a url\"\n");
    assert!(m.contains("source.sites[0].url"), "{m}");
}

#[test]
fn regex_that_does_not_compile_is_refused() {
    let m = err("[[source.sites]]\nurl = \"https://a.example/\"\nregex = \"(\"\n");
    assert!(
        m.starts_with("c.toml:3: key `source.sites[0].regex`: does not compile"),
        "{m}"
    );
    let m = err("[source]\nregex = \"[z-a]\"\n[[source.sites]]\nurl = \"https://a.example/\"\n");
    assert!(m.contains("key `source.regex`"), "{m}");
}

#[test]
fn empty_site_list_is_refused() {
    let m = err("[source]\ntopic = \"t\"\n");
    assert!(
        m.contains("key `source.sites`") && m.contains("no sites"),
        "{m}"
    );
}

#[test]
fn zero_interval_and_timeout_are_refused() {
    let m = err("[source]\ninterval = \"0s\"\n[[source.sites]]\nurl = \"https://a.example/\"\n");
    assert!(m.contains("key `source.interval`"), "{m}");
    let m = err("[[source.sites]]\nurl = \"https://a.example/\"\ntimeout = \"0ms\"\n");
    assert!(m.contains("key `source.sites[0].timeout`"), "{m}");
}

#[test]
fn shard_is_parsed_and_checked() {
    let ok = "[source]\nshard = \"2/4\"\n[[source.sites]]\nurl = \"https://a.example/\"\n";
    assert_eq!(
        load(ok).unwrap().section.shard,
        Some(Shard { index: 2, count: 4 })
    );
    for bad in ["0/4", "5/4", "1/0", "x", "1-4"] {
        let m = err(&format!(
            "[source]\nshard = \"{bad}\"\n[[source.sites]]\nurl = \"https://a.example/\"\n"
        ));
        assert!(
            m.contains("key `source.shard`") && m.contains("not a shard"),
            "{bad}: {m}"
        );
    }
}

#[test]
fn other_bad_values_name_their_key() {
    let site = "[[source.sites]]\nurl = \"https://a.example/\"\n";
    for (section, key) in [
        ("concurrency = 0", "source.concurrency"),
        ("threads = 0", "source.threads"),
        ("threads = 5000", "source.threads"),
        ("max_buffered_records = 0", "source.max_buffered_records"),
        (
            "max_buffered_records = 10000001",
            "source.max_buffered_records",
        ),
        ("delivery_timeout = \"10ms\"", "source.delivery_timeout"),
        ("delivery_timeout = \"2d\"", "source.delivery_timeout"),
        ("metrics_address = \"nope\"", "source.metrics_address"),
        ("method = \"GE T\"", "source.method"),
        ("expected_status = [200, 999]", "source.expected_status"),
        ("expected_status = []", "source.expected_status"),
        ("headers = { \"bad name\" = \"x\" }", "source.headers"),
        ("intervl = \"1s\"", "source.intervl"),
        ("interval = \"soon\"", "source.interval"),
        ("timeout = \"11m\"", "source.timeout"),
        ("shutdown_timeout = \"0s\"", "source.shutdown_timeout"),
    ] {
        let m = err(&format!("[source]\n{section}\n{site}"));
        assert!(m.contains(&format!("key `{key}`")), "{section}: {m}");
    }
}

#[test]
fn site_overrides_and_unknown_site_keys() {
    let c = load(
        "[[source.sites]]\nurl = \"https://a.example/\"\ninterval = \"250ms\"\nkeep_alive = true\n",
    )
    .unwrap();
    assert_eq!(
        c.section.sites[0].interval,
        Some(Duration::from_millis(250))
    );
    let m = err("[[source.sites]]\nurl = \"https://a.example/\"\nregexp = \"x\"\n");
    assert!(m.contains("key `source.sites[0].regexp`"), "{m}");
}

#[test]
fn timeout_has_an_upper_bound() {
    let site = "[[source.sites]]\nurl = \"https://a.example/\"\n";
    assert!(load(&format!("[source]\ntimeout = \"10m\"\n{site}")).is_ok());
    let m = err(&format!("[source]\ntimeout = \"1h\"\n{site}"));
    assert!(
        m.contains("key `source.timeout`") && m.contains("more than the limit of 10m"),
        "{m}"
    );
    let m = err(&format!("{site}timeout = \"601s\"\n"));
    assert!(m.contains("key `source.sites[0].timeout`"), "{m}");
}

#[test]
fn shutdown_timeout_defaults_to_ten_seconds() {
    let c = load("[[source.sites]]\nurl = \"https://a.example/\"\n")
        .unwrap()
        .section;
    assert_eq!(c.shutdown_timeout, Duration::from_secs(10));
}

#[test]
fn tls_ca_with_tls_verify_false_is_refused() {
    let m = err("[source]\ntls_ca = \"ca.pem\"\ntls_verify = false\n[[source.sites]]\nurl = \"https://a.example/\"\n");
    assert!(
        m.contains("key `source.tls_ca`") && m.contains("source.tls_verify = false"),
        "{m}"
    );
}

#[test]
fn a_url_password_is_shown_masked_everywhere_but_kept_for_the_request() {
    let u = SiteUrl::parse("http://alice:s3cret@Example.com/x").unwrap();
    assert_eq!(u.as_str(), "http://alice:***@example.com/x");
    let token = SiteUrl::parse("https://ghp_SEKRIT@example.com/").unwrap();
    assert_eq!(token.as_str(), "https://***@example.com/");
    assert_eq!(token.request().username(), "ghp_SEKRIT");
    let key_colon = SiteUrl::parse("https://sk_live_x:@example.com/").unwrap();
    assert_eq!(key_colon.as_str(), "https://***@example.com/");
    assert_eq!(u.to_string(), u.as_str());
    assert_eq!(format!("{u:?}"), "\"http://alice:***@example.com/x\"");
    assert_eq!(u.request().password(), Some("s3cret"));
    // Stable: another password shows the same.
    let v = SiteUrl::parse("http://alice:other@example.com/x").unwrap();
    assert_eq!(u.as_str(), v.as_str());
    // A user name alone may be the secret: masked.
    let w = SiteUrl::parse("http://alice@example.com/").unwrap();
    assert_eq!(w.as_str(), "http://***@example.com/");
    let c = load("[[source.sites]]\nurl = \"http://alice:s3cret@example.com/\"\n").unwrap();
    let shown = connector_common::config::render_masked(&c, Section::Source);
    assert!(
        !shown.contains("s3cret") && shown.contains("alice:***@"),
        "{shown}"
    );
    assert!(!format!("{c:?}").contains("s3cret"));
    let m = err("[[source.sites]]\nurl = \"ftp://alice:s3cret@example.com/\"\n");
    assert!(
        !m.contains("s3cret") && m.contains("source.sites[0].url"),
        "{m}"
    );
}

#[test]
fn a_site_url_over_2048_bytes_is_refused_at_load() {
    let long = format!("https://a.example/{}", "x".repeat(2048));
    let m = err(&format!("[[source.sites]]\nurl = \"{long}\"\n"));
    assert!(
        m.starts_with("c.toml:2: key `source.sites[0].url`") && m.contains("at most 2048"),
        "{}",
        &m[..m.len().min(300)]
    );
    assert!(m.len() < 400, "the url is not repeated: {} bytes", m.len());
    let ok = format!("https://a.example/{}", "x".repeat(2000));
    assert!(load(&format!("[[source.sites]]\nurl = \"{ok}\"\n")).is_ok());
}

#[test]
fn every_duration_and_number_has_bounds() {
    let site = "[[source.sites]]\nurl = \"https://a.example/\"\n";
    for (line, key) in [
        ("interval = \"1ns\"", "source.interval"),
        ("interval = \"99ms\"", "source.interval"),
        ("interval = \"25h\"", "source.interval"),
        ("interval = \"500000000000y\"", "source.interval"),
        (
            "shutdown_timeout = \"500000000000y\"",
            "source.shutdown_timeout",
        ),
        ("flush_timeout = \"500000000000y\"", "source.flush_timeout"),
        ("flush_timeout = \"0s\"", "source.flush_timeout"),
        ("timeout = \"500000000000y\"", "source.timeout"),
        ("max_redirects = 51", "source.max_redirects"),
        ("max_body_bytes = 67108865", "source.max_body_bytes"),
        ("concurrency = 1000001", "source.concurrency"),
        ("topic = \"a b\"", "source.topic"),
        ("topic = \"..\"", "source.topic"),
        ("probe = \"a\\u0000b\"", "source.probe"),
        ("probe = \"a\\tb\"", "source.probe"),
        ("metrics_address = \"127.0.0.1\"", "source.metrics_address"),
        (
            "method = \"GETGETGETGETGETGETGETGETGETGETGETGET\"",
            "source.method",
        ),
    ] {
        let m = err(&format!("[source]\n{line}\n{site}"));
        assert!(
            m.starts_with(&format!("c.toml:2: key `{key}`")),
            "{line}: {m}"
        );
    }
    let m = err(&format!("{site}interval = \"50ms\"\n"));
    assert!(
        m.starts_with("c.toml:3: key `source.sites[0].interval`"),
        "{m}"
    );
    for line in [
        "interval = \"100ms\"",
        "interval = \"24h\"",
        "max_redirects = 50",
        "max_body_bytes = 67108864",
        "max_body_bytes = 0",
        "metrics_address = \"localhost:0\"",
    ] {
        assert!(load(&format!("[source]\n{line}\n{site}")).is_ok(), "{line}");
    }
}

#[test]
fn renders_for_check_config() {
    let c = load("[source]\nshard = \"1/2\"\n[[source.sites]]\nurl = \"https://a.example/\"\ninterval = \"2s\"\n").unwrap();
    let shown = connector_common::config::render_masked(&c, Section::Source);
    assert!(
        shown.contains("shard = \"1/2\"") && shown.contains("interval = \"2s\""),
        "{shown}"
    );
}

#[test]
fn typed_values_are_used_as_parsed_and_render_back_to_their_text() {
    let c = load("[source]\nmethod = \"PURGE\"\nregex = \"a+b\"\n[[source.sites]]\nurl = \"https://a.example/\"\nmethod = \"HEAD\"\n").unwrap();
    assert_eq!(c.section.method.get().as_str(), "PURGE");
    assert!(c.section.regex.as_ref().unwrap().regex().is_match("xaab"));
    assert_eq!(
        c.section.sites[0].method.as_ref().map(Method::get),
        Some(&reqwest::Method::HEAD)
    );
    let shown = connector_common::config::render_masked(&c, Section::Source);
    assert!(
        shown.contains("method = \"PURGE\"")
            && shown.contains("regex = \"a+b\"")
            && shown.contains("method = \"HEAD\""),
        "{shown}"
    );
    assert_eq!(
        Method::parse("GE T").unwrap_err(),
        "`GE T` is not an HTTP method; write e.g. \"GET\" or \"HEAD\""
    );
    assert!(Pattern::parse("(")
        .unwrap_err()
        .starts_with("does not compile: regex parse error"));
    let long = "a".repeat(MAX_REGEX_BYTES + 1);
    assert_eq!(
        Pattern::parse(&long).unwrap_err(),
        format!(
            "{} bytes; at most {MAX_REGEX_BYTES} are allowed",
            long.len()
        )
    );
}

#[test]
fn headers_are_checked_as_they_are_read_and_masked_when_shown() {
    let site = "[[source.sites]]\nurl = \"https://a.example/\"\n";
    let c = load(&format!(
        "[source]\nheaders = {{ Authorization = \"Bearer SEKRIT\", accept = \"text/html\" }}\n{site}"
    ))
    .unwrap()
    .section;
    let map = c.headers.map();
    assert_eq!(map.get("authorization").unwrap(), "Bearer SEKRIT");
    assert!(map.get("authorization").unwrap().is_sensitive());
    assert!(!map.get("accept").unwrap().is_sensitive());
    let shown = format!(
        "{:?} {} {}",
        c.headers,
        c.headers,
        serde_json::to_string(&c.headers).unwrap()
    );
    assert!(
        !shown.contains("SEKRIT") && shown.contains("Authorization") && shown.contains("text/html"),
        "{shown}"
    );

    let m = err(&format!(
        "[source]\n{site}headers = {{ \"bad name\" = \"x\", ok = \"line\\nbreak\" }}\n"
    ));
    assert!(
        m.contains("key `source.sites[0].headers`")
            && m.contains("`bad name` is not a valid header name")
            && m.contains("the value of `ok` is not a valid header value"),
        "{m}"
    );
    let many: Vec<String> = (0..=MAX_HEADERS).map(|i| format!("h{i} = \"v\"")).collect();
    let m = err(&format!(
        "[source]\nheaders = {{ {} }}\n{site}",
        many.join(", ")
    ));
    assert!(m.contains("101 headers; at most 100 are allowed"), "{m}");
    let long = "v".repeat(MAX_HEADER_VALUE_BYTES + 1);
    let m = err(&format!("[source]\nheaders = {{ a = \"{long}\" }}\n{site}"));
    assert!(
        m.contains("the value of `a` is not a valid header value"),
        "{m}"
    );
}

#[test]
fn every_bad_key_of_the_section_is_reported_each_with_its_line() {
    let text = "[source]\ntopic = \"t\"\nmethod = \"GE T\"\ninterval = \"soon\"\nregex = \"(unclosed\"\n\n[[source.sites]]\nurl = \"ftp://127.0.0.1/\"\n\n[[source.sites]]\nurl = \"https://a.example/\"\n\n[[source.sites]]\nurl = \"https://b.example/\"\nregex = \"[\"\nheaders = { Authorization = 42 }\n";
    let e = load(text).expect_err("should be refused");
    let shown = e.to_string();
    let ConfigError::Several { problems, .. } = e else {
        panic!("{shown}");
    };
    let at: Vec<(Option<usize>, &str)> =
        problems.iter().map(|p| (p.line, p.key.as_str())).collect();
    assert_eq!(
        at,
        [
            (Some(3), "source.method"),
            (Some(4), "source.interval"),
            (Some(5), "source.regex"),
            (Some(8), "source.sites[0].url"),
            (Some(15), "source.sites[2].regex"),
            (Some(16), "source.sites[2].headers.Authorization"),
        ],
        "{shown}"
    );
    assert!(!shown.contains("42"), "{shown}");
}

#[test]
fn the_sources_of_sites_from_outside_are_checked_by_key() {
    // A sites topic or an http_sd url alone is enough sites.
    for line in [
        "sites_topic = \"site-definitions\"",
        "http_sd_url = \"https://sd.example/targets\"",
    ] {
        let c = load(&format!("[source]\n{line}\n")).unwrap().section;
        assert_eq!(c.sites_group_session_timeout, Duration::from_secs(10));
        assert_eq!(c.http_sd_refresh, Duration::from_secs(60));
    }
    for (lines, key, says) in [
        ("sites_topic = \"a b\"", "source.sites_topic", "topic"),
        (
            "sites_topic = \"site-status\"",
            "source.sites_topic",
            "records are written to",
        ),
        (
            "sites_group = \"g\"\nhttp_sd_url = \"http://sd.example/\"",
            "source.sites_group",
            "without sites_topic",
        ),
        (
            "sites_topic = \"t\"\nsites_group = \" \"",
            "source.sites_group",
            "empty group id",
        ),
        (
            "sites_topic = \"t\"\nsites_group_session_timeout = \"0s\"",
            "source.sites_group_session_timeout",
            "more than zero",
        ),
        (
            "http_sd_url = \"ftp://sd.example/\"",
            "source.http_sd_url",
            "only http and https",
        ),
        (
            "http_sd_url = \"http://sd.example/\"\nhttp_sd_refresh = \"100ms\"",
            "source.http_sd_refresh",
            "from 1s",
        ),
    ] {
        let m = err(&format!("[source]\n{lines}\n"));
        assert!(
            m.contains(&format!("key `{key}`")) && m.contains(says),
            "{lines}: {m}"
        );
    }
}
