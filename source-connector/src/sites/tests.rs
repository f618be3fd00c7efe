//! Unit tests of site resolution: `sites_file`, defaults, duplicates,
//! `tls_ca`, shards.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use connector_common::config::{load, ConfigError, Section};
use reqwest::Method;

use super::*;
use crate::config::SourceConfig;

/// A self-signed CA certificate (P-256, made with openssl for these
/// tests; no key is needed to read it as a trust anchor).
pub(super) const TEST_CA_PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBmjCCAUGgAwIBAgIUH8L7DQflsEw/4GcklpL7dD8bhNswCgYIKoZIzj0EAwIw\nIjEgMB4GA1UEAwwXd2Vic2l0ZS1tb25pdG9yIHRlc3QgQ0EwIBcNMjYxMTI4MjAz\nMzU1WhgPMjEyNjExMDQyMDMzNTVaMCIxIDAeBgNVBAMMF3dlYnNpdGUtbW9uaXRv\nciB0ZXN0IENBMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEYMdcS0xrZUg6uY0X\nvBnMV2tQ3bH3PhOlMK2ZJgkifWku+VeUpGU5i5FC4Y3fbYRkq8iJnG/qamaaHL7t\nBumwGaNTMFEwHQYDVR0OBBYEFMwMTS9ekg/kU00LOPB2hv9N/VwbMB8GA1UdIwQY\nMBaAFMwMTS9ekg/kU00LOPB2hv9N/VwbMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZI\nzj0EAwIDRwAwRAIgLQ7w0hEARWwVR7lSKvby4FcUb2CmoYKNNdp5klLdFfcCIB58\ndgrJraFrgDjwRSkntnZPFVxRX2fzehZgXcq8jubY\n-----END CERTIFICATE-----\n";

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn resolve_in(dir: &Path, toml: &str) -> Result<Vec<SiteSpec>, ConfigError> {
    let path = write(dir, "connector.toml", toml);
    let loaded = load::<SourceConfig>(&path, Section::Source, &|_| None)?;
    resolve(&loaded)
}

#[test]
fn sites_file_is_relative_to_the_config_and_takes_both_forms() {
    let dir = tempfile::tempdir().unwrap();
    write(
            dir.path(),
            "sites.txt",
            "# comment\nhttps://a.example\n\n{\"url\": \"https://b.example/x\", \"regex\": \"B\", \"interval\": \"30s\"}\n",
        );
    let sites = resolve_in(
            dir.path(),
            "[source]\nsites_file = \"sites.txt\"\nregex = \"A\"\n[[source.sites]]\nurl = \"http://c.example/\"\nmethod = \"HEAD\"\n",
        )
        .unwrap();
    let urls: Vec<&str> = sites.iter().map(|s| s.url.as_str()).collect();
    assert_eq!(
        urls,
        [
            "http://c.example/",
            "https://a.example/",
            "https://b.example/x"
        ]
    );
    assert_eq!(sites[0].method, Method::HEAD);
    assert_eq!(sites[1].regex.as_ref().unwrap().as_str(), "A");
    assert_eq!(sites[2].regex.as_ref().unwrap().as_str(), "B");
    assert_eq!(sites[2].interval, Duration::from_secs(30));
    assert_eq!(sites[1].interval, Duration::from_secs(1));
    // One compiled regex shared by the sites that use the default.
    assert!(Arc::ptr_eq(
        sites[0].regex.as_ref().unwrap(),
        sites[1].regex.as_ref().unwrap()
    ));
}

#[test]
fn bad_line_in_sites_file_names_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "s.txt",
        "https://a.example/\nftp://b.example/\n",
    );
    let e = resolve_in(dir.path(), "[source]\nsites_file = \"s.txt\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("s.txt:2: key `url`") && e.contains("only http and https"),
        "{e}"
    );
    write(
        dir.path(),
        "s.txt",
        "{\"url\": \"https://a.example/\", \"regex\": \"(\"}\n",
    );
    let e = resolve_in(dir.path(), "[source]\nsites_file = \"s.txt\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("s.txt:1: key `regex`"), "{e}");
    write(
        dir.path(),
        "s.txt",
        "{\"url\": \"https://a.example/\", \"headers\": {\"bad name\": \"SEKRIT\"}}\n",
    );
    let e = resolve_in(dir.path(), "[source]\nsites_file = \"s.txt\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("s.txt:1: key `headers`: `bad name` is not a valid header name")
            && !e.contains("SEKRIT"),
        "{e}"
    );
    write(
        dir.path(),
        "s.txt",
        "{\"url\": \"https://a.example/\", \"colour\": 1}\n",
    );
    let e = resolve_in(dir.path(), "[source]\nsites_file = \"s.txt\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("s.txt:1: key `colour`"), "{e}");
}

#[test]
fn a_bad_value_on_a_json_line_is_blamed_on_its_key() {
    let dir = tempfile::tempdir().unwrap();
    for (line, key) in [
        (
            "{\"url\": \"https://a.example/\", \"interval\": \"soon\"}",
            "interval",
        ),
        (
            "{\"url\": \"https://a.example/\", \"expected_status\": [200, \"x\"]}",
            "expected_status[1]",
        ),
        (
            "{\"url\": \"https://a.example/\", \"keep_alive\": \"yes\"}",
            "keep_alive",
        ),
        ("{\"interval\": \"1s\"}", "url"),
    ] {
        write(
            dir.path(),
            "s.txt",
            &format!("https://z.example/\n{line}\n"),
        );
        let e = resolve_in(dir.path(), "[source]\nsites_file = \"s.txt\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("s.txt:2: key `{key}`: not a site")),
            "{line}: {e}"
        );
    }
}

#[test]
fn a_sites_file_line_of_the_wrong_type_does_not_repeat_its_value() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "s.txt",
        "{\"url\": \"https://a.example/\", \"headers\": \"Authorization: Bearer SEKRIT\"}\n",
    );
    let e = resolve_in(dir.path(), "[source]\nsites_file = \"s.txt\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("s.txt:1: key `headers`"), "{e}");
    assert!(!e.contains("SEKRIT"), "{e}");
}

#[test]
fn a_url_listed_twice_is_refused_naming_both_places() {
    let dir = tempfile::tempdir().unwrap();
    // Inline and in sites_file, spelled differently but the same after normalisation.
    write(
        dir.path(),
        "s.txt",
        "# list\nhttps://b.example/\nHTTPS://A.example:443\n",
    );
    let e = resolve_in(
        dir.path(),
        "[source]\nsites_file = \"s.txt\"\n[[source.sites]]\nurl = \"https://a.example/\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("s.txt:3: key `url`"), "{e}");
    assert!(
        e.contains("`https://a.example/` is listed twice")
            && e.contains("connector.toml:4 (key `source.sites[0].url`)"),
        "{e}"
    );
    // Twice in the file.
    write(
        dir.path(),
        "s.txt",
        "https://b.example/\n{\"url\": \"https://b.example\"}\n",
    );
    let e = resolve_in(dir.path(), "[source]\nsites_file = \"s.txt\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("s.txt:2: key `url`") && e.contains("also at "),
        "{e}"
    );
    assert!(e.contains("s.txt:1 "), "{e}");
    // Twice inline.
    let e = resolve_in(
            dir.path(),
            "[[source.sites]]\nurl = \"http://c.example\"\n[[source.sites]]\nurl = \"http://c.example/\"\n",
        )
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(":4: key `source.sites[1].url`")
            && e.contains("connector.toml:2 (key `source.sites[0].url`)"),
        "{e}"
    );
    // Differing only in the path or query is fine.
    assert!(resolve_in(
            dir.path(),
            "[[source.sites]]\nurl = \"http://c.example/\"\n[[source.sites]]\nurl = \"http://c.example/?x\"\n",
        )
        .is_ok());
}

#[test]
fn a_url_listed_twice_is_refused_in_every_shard_with_the_other_problems() {
    let dir = tempfile::tempdir().unwrap();
    let twice = "http://twice.example/";
    let other = (crate::hash::shard_of(twice, 2) % 2) + 1;
    write(
        dir.path(),
        "s.txt",
        &format!("{twice}\nftp://bad.example/\n{twice}\n"),
    );
    // The shard that does not check it refuses it too, and reports the
    // bad line beside it.
    let toml = format!("[source]\nsites_file = \"s.txt\"\nshard = \"{other}/2\"\n");
    let e = resolve_in(dir.path(), &toml).unwrap_err().to_string();
    assert!(e.contains("s.txt:2: key `url`"), "{e}");
    assert!(
        e.contains("s.txt:3: key `url`") && e.contains("listed twice"),
        "{e}"
    );
    // Without the bad line, found by its hash and named with both places.
    write(dir.path(), "s.txt", &format!("{twice}\n{twice}\n"));
    let e = resolve_in(dir.path(), &toml).unwrap_err().to_string();
    assert!(
        e.contains("s.txt:2: key `url`") && e.contains("s.txt:1 "),
        "{e}"
    );
}

#[test]
fn tls_ca_with_tls_verify_false_on_a_site_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "ca.pem", TEST_CA_PEM);
    let e = resolve_in(
        dir.path(),
        "[[source.sites]]\nurl = \"https://a.example/\"\ntls_ca = \"ca.pem\"\ntls_verify = false\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains(":3: key `source.sites[0].tls_ca`") && e.contains("tls_verify = false"),
        "{e}"
    );
    write(
        dir.path(),
        "s.txt",
        "{\"url\": \"https://b.example/\", \"tls_ca\": \"ca.pem\"}\n",
    );
    let e = resolve_in(
        dir.path(),
        "[source]\ntls_verify = false\nsites_file = \"s.txt\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("s.txt:1: key `tls_ca`") && e.contains("source.tls_verify = false"),
        "{e}"
    );
    // A site that turns verification off does not inherit the CA of [source].
    let sites = resolve_in(
            dir.path(),
            "[source]\ntls_ca = \"ca.pem\"\n[[source.sites]]\nurl = \"https://a.example/\"\ntls_verify = false\n[[source.sites]]\nurl = \"https://b.example/\"\n",
        )
        .unwrap();
    assert_eq!(sites[0].client.tls_ca, None);
    assert!(!sites[0].client.tls_verify);
    assert_eq!(
        sites[1].client.tls_ca.as_ref().map(|ca| ca.path.clone()),
        Some(dir.path().join("ca.pem"))
    );
}

#[test]
fn missing_sites_file_and_tls_ca_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let e = resolve_in(dir.path(), "[source]\nsites_file = \"nope.txt\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(":2: key `source.sites_file`: cannot read") && e.contains("nope.txt"),
        "{e}"
    );
    let e = resolve_in(
        dir.path(),
        "[[source.sites]]\nurl = \"https://a.example/\"\ntls_ca = \"ca.pem\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains(":3: key `source.sites[0].tls_ca`"), "{e}");
}

#[test]
fn a_sites_file_that_is_a_device_or_a_fifo_is_refused_without_reading_it() {
    let dir = tempfile::tempdir().unwrap();
    let toml = "[source]\nsites_file = \"s.txt\"\n";
    std::os::unix::fs::symlink("/dev/zero", dir.path().join("s.txt")).unwrap();
    let e = resolve_in(dir.path(), toml).unwrap_err().to_string();
    assert!(e.contains("not a regular file"), "{e}");
    // Opened, a FIFO would wait for a writer for ever.
    std::fs::remove_file(dir.path().join("s.txt")).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(dir.path().join("s.txt"))
        .status();
    assert!(made.unwrap().success());
    let e = resolve_in(dir.path(), toml).unwrap_err().to_string();
    assert!(e.contains("not a regular file"), "{e}");
}

#[test]
fn lines_of_white_space_are_not_counted_when_sizing_the_lists() {
    let text = "http://a.example/\n\n   \n\t\r\n# a comment\nhttp://b.example/";
    let counted = super::file::count_lines(&mut text.as_bytes()).unwrap();
    assert_eq!(counted, 3, "two sites and a comment");
}

#[test]
fn a_sites_file_that_cannot_be_read_on_is_refused_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let toml = "[source]\nsites_file = \"s.txt\"\n";
    let mut bytes = b"http://a.example/\nhttp://b.example/\n".to_vec();
    bytes.extend_from_slice(b"http://\xff.example/\n");
    std::fs::write(dir.path().join("s.txt"), &bytes).unwrap();
    let e = resolve_in(dir.path(), toml).unwrap_err().to_string();
    assert!(
        e.contains("s.txt:3: key `source.sites_file`: cannot read on") && e.contains("UTF-8"),
        "{e}"
    );
    // A line longer than a block: refused there, nothing held whole.
    let long = format!(
        "http://a.example/\nhttp://b.example/{}\n",
        "x".repeat(1 << 20)
    );
    std::fs::write(dir.path().join("s.txt"), long).unwrap();
    let e = resolve_in(dir.path(), toml).unwrap_err().to_string();
    assert!(e.contains("s.txt:2: key `source.sites_file`"), "{e}");
}

#[test]
fn shards_split_the_list_without_overlap() {
    let dir = tempfile::tempdir().unwrap();
    let list: String = (0..200)
        .map(|n| format!("https://s{n}.example/\n"))
        .collect();
    write(dir.path(), "s.txt", &list);
    let mut seen = Vec::new();
    for k in 1..=3 {
        let sites = resolve_in(
            dir.path(),
            &format!("[source]\nsites_file = \"s.txt\"\nshard = \"{k}/3\"\n"),
        )
        .unwrap();
        assert!(!sites.is_empty());
        seen.extend(sites.into_iter().map(|s| s.url.to_string()));
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 200);
}

#[test]
fn headers_merge_with_site_winning() {
    let dir = tempfile::tempdir().unwrap();
    let sites = resolve_in(
            dir.path(),
            "[source]\nheaders = { a = \"1\", b = \"2\" }\n[[source.sites]]\nurl = \"https://a.example/\"\nheaders = { b = \"3\" }\n[[source.sites]]\nurl = \"https://b.example/\"\n",
        )
        .unwrap();
    assert_eq!(sites[0].headers.get("a").unwrap(), "1");
    assert_eq!(sites[0].headers.get("b").unwrap(), "3");
    assert_eq!(sites[1].headers.get("b").unwrap(), "2");
}

#[test]
fn a_bad_regex_method_or_header_on_a_json_line_reads_as_in_the_config() {
    let dir = tempfile::tempdir().unwrap();
    for (line, expected) in [
        (
            "{\"url\": \"https://a.example/\", \"regex\": \"(\"}",
            "s.txt:1: key `regex`: does not compile: regex parse error",
        ),
        (
            "{\"url\": \"https://a.example/\", \"method\": \"GE T\"}",
            "s.txt:1: key `method`: `GE T` is not an HTTP method; write e.g. \"GET\" or \"HEAD\"",
        ),
    ] {
        write(dir.path(), "s.txt", &format!("{line}\n"));
        let e = resolve_in(dir.path(), "[source]\nsites_file = \"s.txt\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains(expected), "{e}");
        assert!(!e.contains("not a site") && !e.contains(" column "), "{e}");
    }
    // A value of the wrong type is a line of the wrong shape.
    write(
        dir.path(),
        "s.txt",
        "{\"url\": \"https://a.example/\", \"method\": 5}\n",
    );
    let e = resolve_in(dir.path(), "[source]\nsites_file = \"s.txt\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("s.txt:1: key `method`: not a site"), "{e}");
}

#[test]
fn every_bad_line_of_a_sites_file_is_reported_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "s.txt",
        "# comment\nhttps://a.example/\nftp://b.example/\nnot a url\n{\"url\": \"https://c.example/\", \"regex\": \"(\"}\nhttps://d.example/\nhttps://a.example/\n",
    );
    let e = resolve_in(dir.path(), "[source]\nsites_file = \"s.txt\"\n").unwrap_err();
    let shown = e.to_string();
    let ConfigError::Several { problems, more, .. } = e else {
        panic!("{shown}");
    };
    let at: Vec<(Option<usize>, &str)> =
        problems.iter().map(|p| (p.line, p.key.as_str())).collect();
    assert_eq!(
        at,
        [
            (Some(3), "url"),
            (Some(4), "url"),
            (Some(5), "regex"),
            (Some(7), "url"),
        ],
        "{shown}"
    );
    assert_eq!(more, 0);
    assert!(shown.lines().all(|l| l.contains("s.txt:")), "{shown}");
    assert!(shown.contains("listed twice"), "{shown}");
}

#[test]
fn a_sites_file_with_many_bad_lines_shows_some_and_counts_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let text: String = (0..100).map(|i| format!("ftp://{i}.example/\n")).collect();
    write(dir.path(), "s.txt", &text);
    let e = resolve_in(dir.path(), "[source]\nsites_file = \"s.txt\"\n")
        .unwrap_err()
        .to_string();
    let lines: Vec<&str> = e.lines().collect();
    assert_eq!(
        lines.len(),
        connector_common::config::MAX_PROBLEMS_SHOWN + 1,
        "{e}"
    );
    assert!(lines[0].contains("s.txt:1: key `url`"), "{e}");
    assert!(
        lines[lines.len() - 1]
            .ends_with(": 80 more problems not shown; fix the ones above and check again"),
        "{e}"
    );
}
