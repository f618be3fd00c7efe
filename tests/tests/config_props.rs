//! Generated hostile configurations (issue 11, part 3): random TOML text and
//! random values for every known key of `[source]`, a site, `[sink]` and
//! `[kafka]`. The loader never panics; every refusal names the file and line
//! (and, past TOML syntax, the key). Bounded to 256 cases per property so
//! this runs in seconds.

use std::path::Path;

use connector_common::config::{load_str, ConfigError, Section};
use proptest::prelude::*;
use website_monitor_sink::SinkConfig;
use website_monitor_source::SourceConfig;

const SITE: &str = "[[source.sites]]\nurl = \"http://127.0.0.1/\"\n";

const SOURCE_KEYS: &[&str] = &[
    "topic",
    "probe",
    "interval",
    "timeout",
    "concurrency",
    "threads",
    "metrics_address",
    "per_site_metrics",
    "shard",
    "shutdown_timeout",
    "flush_timeout",
    "method",
    "body",
    "regex",
    "expected_status",
    "follow_redirects",
    "max_redirects",
    "max_body_bytes",
    "keep_alive",
    "tls_verify",
];

const SITE_KEYS: &[&str] = &[
    "url",
    "interval",
    "timeout",
    "method",
    "body",
    "regex",
    "expected_status",
    "follow_redirects",
    "max_redirects",
    "max_body_bytes",
    "keep_alive",
    "tls_verify",
];

const SINK_KEYS: &[&str] = &[
    "topic",
    "group_id",
    "postgres_uri",
    "schema",
    "table",
    "batch_size",
    "batch_max_bytes",
    "batch_timeout",
    "writers",
    "start_from",
    "max_record_bytes",
    "max_url_bytes",
    "shutdown_timeout",
    "write_timeout",
    "metrics_address",
];

const KAFKA_KEYS: &[&str] = &[
    "brokers",
    "security_protocol",
    "sasl_mechanism",
    "sasl_username",
    "sasl_password",
];

/// Values that are hostile for one key or another.
fn value() -> impl Strategy<Value = toml::Value> {
    prop_oneof![
        any::<i64>().prop_map(toml::Value::Integer),
        (0i64..100_000).prop_map(toml::Value::Integer),
        any::<bool>().prop_map(toml::Value::Boolean),
        any::<f64>().prop_map(toml::Value::Float),
        any::<String>().prop_map(toml::Value::String),
        prop::sample::select(vec![
            "500000000000y",
            "1ns",
            "0s",
            "100ms",
            "25h",
            "loud",
            "nope",
            "127.0.0.1:0",
            "..",
            "a/b",
            "\u{0}",
            "http://u:p@127.0.0.1/",
            "ftp://x/",
            "(",
            "1/0",
            "GET",
            "",
        ])
        .prop_map(|s| toml::Value::String(s.to_owned())),
        "[0-9]{1,25}(ns|ms|s|m|h|d|y)".prop_map(toml::Value::String),
        prop::collection::vec(any::<i64>().prop_map(toml::Value::Integer), 0..4)
            .prop_map(toml::Value::Array),
    ]
}

fn assign(key: &str, v: &toml::Value) -> String {
    format!("{key} = {v}\n")
}

/// Loads `text` for `section`; panics (failing the property) when a refusal
/// does not name the file and line (and the key past TOML syntax); only a key
/// the file does not write at all (nor any parent of it) has no line.
fn check(text: &str, section: Section) {
    let path = Path::new("c.toml");
    let result = match section {
        Section::Source => load_str::<SourceConfig>(text, path, section, &|_| None).map(|_| ()),
        Section::Sink => load_str::<SinkConfig>(text, path, section, &|_| None).map(|_| ()),
    };
    match result {
        Ok(()) => {}
        Err(ConfigError::Syntax { line, column, .. }) => {
            assert!(line >= 1 && column >= 1);
        }
        Err(e @ ConfigError::Invalid { .. }) => check_invalid(text, e),
        // Several keys: one line each, each naming the file, the key and
        // (when the file writes it) its line, like a single problem.
        Err(e @ ConfigError::Several { .. }) => {
            let shown = e.to_string();
            let ConfigError::Several { path, problems, .. } = e else {
                unreachable!()
            };
            assert!(problems.len() >= 2, "{shown}");
            for (p, shown) in problems.into_iter().zip(shown.lines()) {
                let one = ConfigError::Invalid {
                    path: path.clone(),
                    key: p.key,
                    line: p.line,
                    message: p.message,
                };
                assert_eq!(one.to_string(), shown);
                check_invalid(text, one);
            }
        }
        Err(e) => panic!("neither a syntax error nor a named key: {e}\n--- text:\n{text}"),
    }
}

/// One refused key: the message names the file, the key and, when the file
/// writes the key (or a parent of it), its line.
fn check_invalid(text: &str, e: ConfigError) {
    match e {
        e @ ConfigError::Invalid {
            line: Some(line), ..
        } => {
            let ConfigError::Invalid { key, .. } = &e else {
                unreachable!()
            };
            let shown = e.to_string();
            assert!(
                shown.starts_with(&format!("c.toml:{line}: key `{key}`: ")),
                "{shown}"
            );
            assert!(!key.is_empty(), "{shown}");
        }
        // A key the file does not write (e.g. no `[source]` and so no
        // sites): the file and the key are named, and no line can be.
        e @ ConfigError::Invalid { line: None, .. } => {
            let ConfigError::Invalid { key, .. } = &e else {
                unreachable!()
            };
            assert_eq!(
                connector_common::config::locate(text, key),
                None,
                "a key the file writes, named without its line: {e}\n--- text:\n{text}"
            );
            assert!(
                e.to_string().starts_with(&format!("c.toml: key `{key}`: ")),
                "{e}"
            );
        }
        e => panic!("not a refused key: {e}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_values_for_known_keys_are_accepted_or_refused_naming_file_line_and_key(
        source_key in prop::sample::select(SOURCE_KEYS),
        site_key in prop::sample::select(SITE_KEYS),
        sink_key in prop::sample::select(SINK_KEYS),
        kafka_key in prop::sample::select(KAFKA_KEYS),
        which in 0usize..4,
        v in value(),
    ) {
        let (source, site, sink, kafka) = match which {
            0 => (assign(source_key, &v), String::new(), String::new(), String::new()),
            1 => (String::new(), assign(site_key, &v), String::new(), String::new()),
            2 => (String::new(), String::new(), assign(sink_key, &v), String::new()),
            _ => (String::new(), String::new(), String::new(), assign(kafka_key, &v)),
        };
        let text = format!(
            "log_level = \"info\"\n[kafka]\n{kafka}[source]\n{source}[sink]\n{sink}[[source.sites]]\nurl = \"http://127.0.0.1/\"\n{site}"
        );
        check(&text, Section::Source);
        check(&text, Section::Sink);
    }

    #[test]
    fn random_toml_text_never_panics_and_every_refusal_names_a_line(
        text in "[a-z_\\[\\]=\" .0-9\n{},:/\\\\-]{0,300}",
    ) {
        check(&text, Section::Source);
        check(&text, Section::Sink);
    }

    #[test]
    fn a_valid_file_with_junk_inserted_never_panics(
        at in 0usize..200,
        junk in any::<String>(),
    ) {
        let base = format!(
            "log_level = \"info\"\n[kafka]\nbrokers = \"127.0.0.1:9092\"\n[source]\ntopic = \"t\"\ninterval = \"1s\"\n[sink]\nbatch_size = 10\n{SITE}"
        );
        let mut at = at.min(base.len());
        while !base.is_char_boundary(at) {
            at -= 1;
        }
        let text = format!("{}{junk}{}", &base[..at], &base[at..]);
        check(&text, Section::Source);
        check(&text, Section::Sink);
    }
}
