//! Unit tests of the `[sink]` section: defaults, every key, and each refusal.

use super::*;
use connector_common::config::{load_str, Section};
use std::path::Path;

fn load(text: &str) -> Result<SinkConfig, String> {
    load_str::<SinkConfig>(text, Path::new("c.toml"), Section::Sink, &|_| None)
        .map(|l| l.section)
        .map_err(|e| e.to_string())
}

#[test]
fn defaults_when_section_is_empty() {
    let c = load("").unwrap();
    assert_eq!(c.topic, "site-status");
    assert_eq!(c.group_id, "website-monitor-sink");
    assert_eq!(c.table, "site");
    assert_eq!(c.schema, "public");
    assert_eq!(c.batch_timeout, Duration::from_millis(100));
    assert_eq!(c.start_from, StartFrom::Earliest);
    assert_eq!(c.max_record_bytes, 1024 * 1024);
    assert_eq!(c.max_url_bytes, 2048);
    assert_eq!(c.batch_max_bytes, 64 * 1024 * 1024);
    assert_eq!(c.writers, 2);
    assert_eq!(c.write_timeout, Duration::from_secs(30));
    assert_eq!(c.metrics_address, "127.0.0.1:9465");
}

#[test]
fn every_key_parses() {
    let c = load(
        "[sink]\ntopic = \"t\"\ngroup_id = \"g\"\npostgres_uri = \"postgres://u@h/db?sslmode=verify-full&sslrootcert=/x/ca.pem\"\nschema = \"S p\"\ntable = \"My \\\"T\"\nbatch_size = 10\nbatch_timeout = \"1s\"\nstart_from = \"latest\"\nmax_record_bytes = 100\nmax_url_bytes = 50\nshutdown_timeout = \"5s\"\nwrite_timeout = \"7s\"\nbatch_max_bytes = 1000\nwriters = 8\nmetrics_address = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    assert_eq!(c.table, "My \"T");
    assert_eq!(c.schema, "S p");
    assert_eq!(c.batch_size, 10);
    assert_eq!(c.batch_timeout, Duration::from_secs(1));
    assert_eq!(c.start_from, StartFrom::Latest);
    assert_eq!(c.shutdown_timeout, Duration::from_secs(5));
    assert_eq!(c.write_timeout, Duration::from_secs(7));
    assert_eq!(c.batch_max_bytes, 1000);
    assert_eq!(c.writers, 8);
    assert_eq!(c.group_instance_id, None);
}

#[test]
fn group_instance_id_follows_kafkas_rule() {
    let c = load("[sink]\ngroup_instance_id = \"sink-0.eu_1\"\n").unwrap();
    assert_eq!(c.group_instance_id.as_deref(), Some("sink-0.eu_1"));
    for bad in [
        "\"\"",
        "\"a b\"",
        "\"é\"",
        &format!("\"{}\"", "x".repeat(250)),
    ] {
        let e = load(&format!("[sink]\ngroup_instance_id = {bad}\n")).unwrap_err();
        assert!(e.contains("sink.group_instance_id"), "{bad}: {e}");
    }
}

#[test]
fn regex_topic_is_refused() {
    let err = load("[sink]\ntopic = \"^site-.*\"\n").unwrap_err();
    assert!(
        err.contains("sink.topic") && err.contains("regular expression"),
        "{err}"
    );
}

#[test]
fn braces_in_names_are_refused() {
    let err = load("[sink]\ntable = \"a{{rejected}}\"\n").unwrap_err();
    assert!(err.contains("sink.table"), "{err}");
    let err = load("[sink]\nschema = \"s}\"\n").unwrap_err();
    assert!(err.contains("sink.schema"), "{err}");
}

#[test]
fn zero_write_timeout_and_batch_bytes_are_refused() {
    assert!(load("[sink]\nwrite_timeout = \"0s\"\n")
        .unwrap_err()
        .contains("sink.write_timeout"));
    assert!(load("[sink]\nbatch_max_bytes = 0\n")
        .unwrap_err()
        .contains("sink.batch_max_bytes"));
}

#[test]
fn unknown_key_is_refused_with_line() {
    let err = load("[sink]\ntopic = \"t\"\nbatchsize = 3\n").unwrap_err();
    assert!(err.starts_with("c.toml:3: key `sink.batchsize`"), "{err}");
}

#[test]
fn bad_start_from_is_refused() {
    let err = load("[sink]\nstart_from = \"middle\"\n").unwrap_err();
    assert!(err.contains("sink.start_from"), "{err}");
}

#[test]
fn bad_batch_timeout_is_refused() {
    let err = load("[sink]\nbatch_timeout = \"soon\"\n").unwrap_err();
    assert!(err.contains("sink.batch_timeout"), "{err}");
}

#[test]
fn bad_sslmode_is_refused() {
    let err = load("[sink]\npostgres_uri = \"postgres://h/db?sslmode=sometimes\"\n").unwrap_err();
    assert!(
        err.contains("sink.postgres_uri") && err.contains("sslmode"),
        "{err}"
    );
}

#[test]
fn unparsable_uri_is_refused() {
    let err = load("[sink]\npostgres_uri = \"postgres://h/db?port=notaport\"\n").unwrap_err();
    assert!(err.contains("sink.postgres_uri"), "{err}");
}

#[test]
fn empty_or_long_table_is_refused() {
    assert!(load("[sink]\ntable = \"\"\n")
        .unwrap_err()
        .contains("sink.table"));
    let long = "x".repeat(MAX_TABLE_NAME_BYTES + 1);
    assert!(load(&format!("[sink]\ntable = \"{long}\"\n"))
        .unwrap_err()
        .contains("sink.table"));
}

#[test]
fn zero_batch_size_is_refused() {
    assert!(load("[sink]\nbatch_size = 0\n")
        .unwrap_err()
        .contains("sink.batch_size"));
}

#[test]
fn writers_out_of_range_are_refused_naming_the_key() {
    let err = load("[sink]\nwriters = 0\n").unwrap_err();
    assert!(
        err.contains("c.toml:2")
            && err.contains("key `sink.writers`")
            && err.contains("give 1 to 64"),
        "{err}"
    );
    let err = load("[sink]\nwriters = 65\n").unwrap_err();
    assert!(err.contains("sink.writers") && err.contains("65"), "{err}");
    assert_eq!(load("[sink]\nwriters = 1\n").unwrap().writers, 1);
    assert_eq!(load("[sink]\nwriters = 64\n").unwrap().writers, 64);
}

#[test]
fn every_duration_and_number_has_bounds_named_with_its_line() {
    for (line, key) in [
        ("batch_timeout = \"500000000000y\"", "sink.batch_timeout"),
        (
            "shutdown_timeout = \"500000000000y\"",
            "sink.shutdown_timeout",
        ),
        ("write_timeout = \"2h\"", "sink.write_timeout"),
        ("shutdown_timeout = \"0s\"", "sink.shutdown_timeout"),
        ("batch_size = 1000001", "sink.batch_size"),
        ("batch_max_bytes = 1073741825", "sink.batch_max_bytes"),
        ("max_record_bytes = 0", "sink.max_record_bytes"),
        ("max_record_bytes = 104857601", "sink.max_record_bytes"),
        ("max_url_bytes = 2701", "sink.max_url_bytes"),
        ("metrics_address = \"nope\"", "sink.metrics_address"),
        ("topic = \"a b\"", "sink.topic"),
        ("topic = \"..\"", "sink.topic"),
        ("group_id = \"a\\nb\"", "sink.group_id"),
    ] {
        let err = load(&format!("[sink]\n{line}\n")).unwrap_err();
        assert!(
            err.starts_with(&format!("c.toml:2: key `{key}`")),
            "{line}: {err}"
        );
    }
    assert_eq!(
        load("[sink]\nmax_url_bytes = 2700\n")
            .unwrap()
            .max_url_bytes,
        2700
    );
}

#[test]
fn the_postgres_password_never_prints() {
    let c = load("[sink]\npostgres_uri = \"postgres://u:se/cr@h/db\"\n").unwrap();
    assert!(!format!("{c:?}").contains("se/cr"));
    assert_eq!(c.postgres_uri.expose(), "postgres://u:se/cr@h/db");
    assert_eq!(c.postgres_uri.to_string(), "postgres://u:********@h/db");
}

#[test]
fn env_overrides_topic_and_uri() {
    let env = |k: &str| match k {
        "kafka_topic" => Some("from-env".to_owned()),
        "postgres_uri" => Some("postgres://x@y/z".to_owned()),
        _ => None,
    };
    let c = load_str::<SinkConfig>(
        "[sink]\ntopic = \"t\"\n",
        Path::new("c.toml"),
        Section::Sink,
        &env,
    )
    .unwrap()
    .section;
    assert_eq!(c.topic, "from-env");
    assert_eq!(c.postgres_uri.expose(), "postgres://x@y/z");
}

#[test]
fn postgres_uri_is_parsed_once_into_the_target_start_uses() {
    let c = load("[sink]\npostgres_uri = \"postgres://u:pw@h:5433/db?sslmode=verify-full&sslrootcert=/x/ca.pem\"\n").unwrap();
    let target = c.postgres_uri.target();
    assert_eq!(target.verify, crate::uri::Verify::Full);
    assert_eq!(target.root_cert.as_deref(), Some("/x/ca.pem"));
    assert_eq!(target.config.get_ports(), &[5433]);
    assert_eq!(c.metrics_address.as_str(), "127.0.0.1:9465");
    let shown = toml::to_string(&c).unwrap();
    assert!(
        shown.contains("postgres://u:********@h:5433/db") && !shown.contains("pw"),
        "{shown}"
    );
}

#[test]
fn every_bad_key_of_the_section_is_reported_on_its_own_line() {
    let err = load("[sink]\nbatch_size = 0\nwriters = 65\ntable = \"\"\n").unwrap_err();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 3, "{err}");
    // In the order of their lines.
    assert!(
        lines[0].starts_with("c.toml:2: key `sink.batch_size`"),
        "{err}"
    );
    assert!(
        lines[1].starts_with("c.toml:3: key `sink.writers`"),
        "{err}"
    );
    assert!(lines[2].starts_with("c.toml:4: key `sink.table`"), "{err}");
}

#[test]
fn every_key_that_cannot_be_parsed_is_reported_not_only_the_first() {
    let err = load("[sink]\ntopic = \"t\"\npostgres_uri = \"postgres://u:PG-SECRET@h/db?sslmode=bogus\"\nmetrics_address = \"also nonsense\"\nbatch_size = \"many\"\nbatch_timeout = 12345\nwat = 1\n").unwrap_err();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 5, "{err}");
    for (line, (at, key)) in lines.iter().zip([
        (3, "postgres_uri"),
        (4, "metrics_address"),
        (5, "batch_size"),
        (6, "batch_timeout"),
        (7, "wat"),
    ]) {
        assert!(
            line.starts_with(&format!("c.toml:{at}: key `sink.{key}`: ")),
            "{err}"
        );
    }
    assert!(
        !err.contains("PG-SECRET") && !err.contains("12345"),
        "{err}"
    );
}

#[test]
fn status_defaults() {
    let s = load("").unwrap().status;
    assert_eq!(
        (
            s.failure_threshold,
            s.success_threshold,
            s.unknown_after,
            s.min_probes_down
        ),
        (3, 2, 3, 1)
    );
    assert_eq!(s.degraded_after, None);
    assert_eq!(s.probes_down_fraction, None);
    assert_eq!(s.default_interval, Duration::from_secs(60));
    assert!(s.rules.is_empty() && s.maintenance.is_empty());
}

#[test]
fn status_table_parses_with_rules_and_windows() {
    let c = load(
        r#"
[sink.status]
failure_threshold = 5
degraded_after = "2s"
probes_down_fraction = 0.5
[[sink.status.rules]]
urls = '^https://shop\.'
min_probes_down = 2
default_interval = "30s"
[[sink.status.maintenance]]
name = "backup"
urls = "."
weekdays = ["mon", "sun"]
start = "02:30"
duration = "45m"
timezone = "Europe/Berlin"
"#,
    )
    .unwrap();
    let policy = crate::status::Policy::from_config(&c.status).unwrap();
    let shop = policy.for_url("https://shop.example/");
    assert_eq!((shop.failure_threshold, shop.min_probes_down), (5, 2));
    assert_eq!(shop.default_interval, Duration::from_secs(30));
    assert_eq!(shop.degraded_after, Some(Duration::from_secs(2)));
    let other = policy.for_url("https://www.example/");
    assert_eq!(
        (other.min_probes_down, other.probes_down_fraction),
        (1, Some(0.5))
    );
    assert_eq!(policy.recurring()[0].name(), "backup");
}

#[test]
fn bad_status_values_are_refused_under_their_keys() {
    let window =
        "[[sink.status.maintenance]]\nurls = \".\"\nstart = \"02:00\"\nduration = \"30m\"\n";
    for (text, key) in [
        (
            "[sink.status]\nfailure_threshold = 0\n",
            "sink.status.failure_threshold",
        ),
        (
            "[sink.status]\nsuccess_threshold = 1001\n",
            "sink.status.success_threshold",
        ),
        (
            "[sink.status]\nunknown_after = 0\n",
            "sink.status.unknown_after",
        ),
        (
            "[sink.status]\nmin_probes_down = 0\n",
            "sink.status.min_probes_down",
        ),
        (
            "[sink.status]\nprobes_down_fraction = 0.0\n",
            "sink.status.probes_down_fraction",
        ),
        (
            "[sink.status]\nprobes_down_fraction = 1.5\n",
            "sink.status.probes_down_fraction",
        ),
        (
            "[sink.status]\ndegraded_after = \"2h\"\n",
            "sink.status.degraded_after",
        ),
        (
            "[sink.status]\ndefault_interval = \"1ms\"\n",
            "sink.status.default_interval",
        ),
        (
            "[[sink.status.rules]]\nurls = \"(\"\n",
            "sink.status.rules[0].urls",
        ),
        (
            "[[sink.status.rules]]\nurls = \".\"\nfailure_threshold = 0\n",
            "sink.status.rules[0].failure_threshold",
        ),
        (
            window.replace("02:00", "2am").as_str(),
            "sink.status.maintenance[0].start",
        ),
        (
            window.replace("30m", "8days").as_str(),
            "sink.status.maintenance[0].duration",
        ),
        (
            format!("{window}timezone = \"Europe/Berlln\"\n").as_str(),
            "sink.status.maintenance[0].timezone",
        ),
        (
            format!("{window}weekdays = [\"monday\"]\n").as_str(),
            "weekdays",
        ),
        (
            "[sink.status]\ntransitions_topic = \"rev14 no such topic\"\n",
            "sink.status.transitions_topic",
        ),
        (
            "[sink.status]\ntransitions_topic = \"..\"\n",
            "sink.status.transitions_topic",
        ),
    ] {
        let e = load(text).unwrap_err();
        assert!(e.contains(key), "{text}: {e}");
    }
    let e = load("[sink.status]\nfailure_threshold = -1\n").unwrap_err();
    assert!(
        e.contains("failure_threshold") && e.contains("give a whole number"),
        "{e}"
    );
    let e = load("[[sink.status.rules]]\nfailure_threshold = 2\n").unwrap_err();
    assert!(e.contains("missing field `urls`; add it"), "{e}");
    let e = load("[sink.status]\ntransitions_topic = \"a b\"\n").unwrap_err();
    assert!(
        e.contains("characters Kafka refuses") && e.contains("\" \""),
        "{e}"
    );
    let long = "t".repeat(250);
    let e = load(&format!("[sink.status]\ntransitions_topic = \"{long}\"\n")).unwrap_err();
    assert!(e.contains("at most 249"), "{e}");
    assert!(load("[sink.status]\ntransitions_topic = \"site-status.transitions_1\"\n").is_ok());
    // A rule's unset keys are not reported again when a default is bad.
    let e = load("[sink.status]\nfailure_threshold = 0\n[[sink.status.rules]]\nurls = \".\"\n")
        .unwrap_err();
    assert!(!e.contains("rules[0]"), "{e}");
}

#[test]
fn a_transitions_topic_equal_to_the_sinks_topic_is_refused_naming_the_key() {
    let e = load("[sink]\ntopic = \"checks\"\n[sink.status]\ntransitions_topic = \"checks\"\n")
        .unwrap_err();
    assert!(
        e.contains("sink.status.transitions_topic")
            && e.contains("give the transitions a topic of their own"),
        "{e}"
    );
    assert!(load(
        "[sink]\ntopic = \"checks\"\n[sink.status]\ntransitions_topic = \"checks.transitions\"\n"
    )
    .is_ok());
}

#[test]
fn retentions_that_would_break_the_sql_api_or_keep_nothing_are_refused_naming_the_key() {
    let err = load("[sink]\nrollup_day_retention = \"1d\"\n").unwrap_err();
    assert!(
        err.contains("sink.rollup_day_retention") && err.contains("at least 35d"),
        "{err}"
    );
    let err = load("[sink]\nrollup_minute_retention = \"40d\"\n").unwrap_err();
    assert!(err.contains("sink.rollup_hour_retention"), "{err}");
    let err = load("[sink]\nhistory_retention = \"1h\"\nhistory_partition = \"7d\"\n").unwrap_err();
    assert!(
        err.contains("sink.history_retention") && err.contains("history_partition (7d)"),
        "{err}"
    );
    let err = load("[sink]\nrollup_day_retention = \"999999d\"\n").unwrap_err();
    assert!(
        err.contains("to 36500d"),
        "days, not months and years: {err}"
    );
    assert!(load("[sink]\nhistory_retention = \"1h\"\nhistory_partition = \"1h\"\n").is_ok());
}
