//! Unit tests of loading: messages, expansion, overrides, masking.

use super::*;
use std::path::Path;

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct Sec {
    topic: String,
    #[serde(default, with = "humantime_serde")]
    interval: Option<std::time::Duration>,
    #[serde(default)]
    postgres_uri: Option<crate::secret::ConnectionString>,
}
impl Validate for Sec {
    fn validate(&self, prefix: &str) -> Vec<Invalid> {
        if self.topic.is_empty() {
            vec![Invalid::new(format!("{prefix}.topic"), "must not be empty")]
        } else {
            vec![]
        }
    }
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn load_sink(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Loaded<Sec>, ConfigError> {
    load_str(text, Path::new("c.toml"), Section::Sink, env)
}

#[test]
fn unknown_key_names_file_line_and_key() {
    let err = load_sink("[sink]\ntopic = \"t\"\nintervl = \"1s\"\n", &no_env).unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("c.toml:3: key `sink.intervl`"), "{msg}");
}

#[test]
fn bad_duration_names_key_and_line() {
    let err = load_sink("[sink]\ntopic = \"t\"\n\ninterval = \"soon\"\n", &no_env).unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("c.toml:4: key `sink.interval`"), "{msg}");
}

#[test]
fn syntax_error_has_line_and_column() {
    let err = load_sink("[sink]\ntopic = \n", &no_env).unwrap_err();
    assert!(matches!(err, ConfigError::Syntax { line: 2, .. }), "{err}");
}

#[test]
fn validation_error_is_located() {
    let err = load_sink("log_level = \"info\"\n[sink]\ntopic = \"\"\n", &no_env).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("c.toml:3: key `sink.topic`: must not be empty"),
        "{err}"
    );
}

#[test]
fn seed_env_vars_override_the_file() {
    let env = |k: &str| match k {
        "kafka_host" => Some("k:1".to_owned()),
        "kafka_topic" => Some("from-env".to_owned()),
        "postgres_uri" => Some("postgres://x@y/z".to_owned()),
        "log_level" => Some("debug".to_owned()),
        _ => None,
    };
    let c = load_sink("[sink]\ntopic = \"t\"\n", &env).unwrap();
    assert_eq!(c.kafka.brokers, "k:1");
    assert_eq!(c.section.topic, "from-env");
    assert_eq!(
        c.section.postgres_uri.as_ref().map(|u| u.expose()),
        Some("postgres://x@y/z")
    );
    assert_eq!(c.log_level, "debug");
}

#[test]
fn dollar_brace_expands_with_default() {
    let env = |k: &str| (k == "T").then(|| "tt".to_owned());
    let c = load_sink("[sink]\ntopic = \"${T}-${U:-u}\"\n", &env).unwrap();
    assert_eq!(c.section.topic, "tt-u");
}

#[test]
fn unset_variable_without_default_is_an_error_naming_it() {
    let err = load_sink("[sink]\ntopic = \"${NOPE}\"\n", &no_env).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("sink.topic") && msg.contains("`NOPE` is not set"),
        "{msg}"
    );
}

#[test]
fn unknown_top_level_key_is_refused() {
    let err = load_sink("wat = 1\n[sink]\ntopic = \"t\"\n", &no_env).unwrap_err();
    assert!(err.to_string().starts_with("c.toml:1: key `wat`"), "{err}");
}

#[test]
fn check_config_output_masks_every_secret() {
    let env = |k: &str| (k == "P").then(|| "hunter2".to_owned());
    let c = load_str::<Sec>(
        "[kafka]\nsasl_username = \"u\"\nsasl_password = \"${P}\"\nsasl_mechanism = \"SCRAM-SHA-256\"\n[kafka.options]\n\"ssl.key.pem\" = \"-----BEGIN PRIVATE KEY-----MIIEsecret\"\n\"ssl.key.location\" = \"/etc/k.pem\"\n[sink]\ntopic = \"t\"\npostgres_uri = \"postgres://a:b/c@d/e\"\n",
        Path::new("c.toml"),
        Section::Sink,
        &env,
    )
    .unwrap();
    let shown = render_masked(&c, Section::Sink);
    let debug = format!("{c:?}");
    for secret in ["hunter2", "MIIEsecret", "b/c"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
        assert!(!debug.contains(secret), "{secret} in {debug}");
    }
    assert!(
        shown.contains("/etc/k.pem") && shown.contains("postgres://a:********@d/e"),
        "{shown}"
    );
    assert!(shown.contains("[sink]"), "{shown}");
}

#[test]
fn control_characters_in_a_message_are_escaped() {
    assert_eq!(printable("a\u{1b}[2J\0b"), "a\\u{1b}[2J\\u{0}b");
}

#[test]
fn a_string_of_the_wrong_type_is_not_repeated_and_messages_are_bounded() {
    let err = load_sink(
        "[sink]\ntopic = \"t\"\ninterval = \"Bearer hunter2\"\n",
        &no_env,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("sink.interval") && !err.contains("hunter2"),
        "{err}"
    );
    let err = load_sink("[sink]\ntopic = \"t\"\npostgres_uri = [\"x\"]\n", &no_env)
        .unwrap_err()
        .to_string();
    assert!(err.contains("sink.postgres_uri"), "{err}");
    let long = "x".repeat(100_000);
    let err = load_sink(&format!("[sink]\ntopic = \"t\"\n{long} = 1\n"), &no_env)
        .unwrap_err()
        .to_string();
    assert!(
        err.len() < 1600 && err.contains("truncated"),
        "{} bytes",
        err.len()
    );
}

#[test]
fn environment_file_is_chosen_by_variable() {
    let env = |k: &str| (k == "WEBSITE_MONITOR_ENVIRONMENT").then(|| "nope-xyz".to_owned());
    let err = resolve_path(None, &env).unwrap_err();
    assert!(err.to_string().contains("pipelines/nope-xyz.toml"), "{err}");
}

#[test]
fn every_problem_of_the_file_is_reported_each_with_its_line() {
    let text = "log_level = \"loud\"\n[kafka]\nbrokers = \"nohostport\"\n[sink]\ntopic = \"\"\n";
    let err = load_sink(text, &no_env).unwrap_err();
    let shown = err.to_string();
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), 3, "{shown}");
    assert!(
        lines[0].starts_with("c.toml:1: key `log_level`: "),
        "{shown}"
    );
    assert!(
        lines[1].starts_with("c.toml:3: key `kafka.brokers`: "),
        "{shown}"
    );
    assert_eq!(lines[2], "c.toml:5: key `sink.topic`: must not be empty");
    let ConfigError::Several { problems, .. } = err else {
        panic!("three problems, one error: {shown}");
    };
    let at: Vec<Option<usize>> = problems.iter().map(|p| p.line).collect();
    assert_eq!(at, [Some(1), Some(3), Some(5)]);
}

#[test]
fn the_first_line_of_several_is_the_message_of_the_first_alone() {
    let one = load_sink("log_level = \"loud\"\n[sink]\ntopic = \"t\"\n", &no_env)
        .unwrap_err()
        .to_string();
    assert!(!one.contains('\n'), "{one}");
    let several = load_sink("log_level = \"loud\"\n[sink]\ntopic = \"\"\n", &no_env)
        .unwrap_err()
        .to_string();
    assert_eq!(several.lines().next(), Some(one.as_str()));
}

#[test]
fn a_section_that_cannot_be_deserialised_is_reported_with_the_other_problems() {
    let err = load_sink("log_level = \"loud\"\n[sink]\nintervl = \"1s\"\n", &no_env)
        .unwrap_err()
        .to_string();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines[1].starts_with("c.toml:3: key `sink.intervl`"),
        "{err}"
    );
}

#[test]
fn every_unset_variable_is_named_and_nothing_past_them_is_checked() {
    let err = load_sink(
        "log_level = \"loud\"\n[sink]\ntopic = \"${A}\"\ninterval = \"${B}\"\n",
        &no_env,
    )
    .unwrap_err()
    .to_string();
    let mut lines: Vec<&str> = err.lines().collect();
    lines.sort_unstable();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines[0].starts_with("c.toml:3: key `sink.topic`") && lines[0].contains("`A`"),
        "{err}"
    );
    assert!(
        lines[1].starts_with("c.toml:4: key `sink.interval`") && lines[1].contains("`B`"),
        "{err}"
    );
}

#[test]
fn a_long_list_of_problems_is_cut_and_counted() {
    let problems = (0..MAX_PROBLEMS_SHOWN + 5)
        .map(|i| Invalid::new(format!("k{i}"), "bad"))
        .collect();
    let shown = ConfigError::located(Path::new("c.toml"), "", problems).to_string();
    assert_eq!(shown.lines().count(), MAX_PROBLEMS_SHOWN + 1, "{shown}");
    assert!(
        shown.ends_with("c.toml: 5 more problems not shown; fix the ones above and check again"),
        "{shown}"
    );
}

/// A section with typed values of several kinds, an array of tables among
/// them, and a required field in its elements.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Rich {
    #[serde(default)]
    topic: String,
    #[serde(default, with = "humantime_serde")]
    interval: Option<std::time::Duration>,
    #[serde(default)]
    count: u32,
    #[serde(default)]
    metrics_address: Option<crate::listen::ListenAddress>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    items: Vec<Item>,
}
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Item {
    url: String,
    #[serde(default)]
    weight: u8,
    #[serde(default)]
    flag: bool,
}
impl Validate for Rich {
    fn validate(&self, prefix: &str) -> Vec<Invalid> {
        vec![Invalid::new(format!("{prefix}.topic"), "validated")]
    }
}

#[test]
fn every_key_that_cannot_be_deserialised_is_reported_with_its_line() {
    let text = "[sink]\ntopic = 7\ninterval = \"soon\"\ncount = -1\nmetrics_address = \"nope\"\nheaders = { A = \"ok\", B = 42 }\ncolour = 1\n[[sink.items]]\nurl = \"a\"\n[[sink.items]]\nurl = \"b\"\nweight = 300\nflag = \"yes\"\n[[sink.items]]\nweight = 1\n";
    let err = load_str::<Rich>(text, Path::new("c.toml"), Section::Sink, &no_env).unwrap_err();
    let shown = err.to_string();
    let ConfigError::Several { problems, .. } = err else {
        panic!("{shown}");
    };
    let found: Vec<(Option<usize>, &str)> =
        problems.iter().map(|p| (p.line, p.key.as_str())).collect();
    assert_eq!(
        found,
        [
            (Some(2), "sink.topic"),
            (Some(3), "sink.interval"),
            (Some(4), "sink.count"),
            (Some(5), "sink.metrics_address"),
            (Some(6), "sink.headers.B"),
            (Some(7), "sink.colour"),
            (Some(12), "sink.items[1].weight"),
            (Some(13), "sink.items[1].flag"),
            (Some(14), "sink.items[2]"),
        ],
        "{shown}"
    );
    assert!(
        problems[8].message.contains("missing field `url`"),
        "{shown}"
    );
    // The section's checks run only on a section that deserialised.
    assert!(!shown.contains("validated"), "{shown}");
}

#[test]
fn the_top_level_and_kafka_report_every_problem_too() {
    let text = "log_format = \"loud\"\nwat = 1\n[kafka]\nsasl_password = 12345678\nsecurity_protocol = \"carrier pigeon\"\n[sink]\ntopic = 5\n";
    let err = load_sink(text, &no_env).unwrap_err().to_string();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 5, "{err}");
    for (line, key) in [
        (1, "log_format"),
        (2, "wat"),
        (4, "kafka.sasl_password"),
        (5, "kafka.security_protocol"),
        (7, "sink.topic"),
    ] {
        assert!(
            lines[line_index(line)].starts_with(&format!("c.toml:{line}: key `{key}`: ")),
            "{err}"
        );
    }
    assert!(!err.contains("12345678"), "{err}");
}

fn line_index(line: usize) -> usize {
    [1, 2, 4, 5, 7].iter().position(|l| *l == line).unwrap()
}

#[test]
fn one_problem_among_good_keys_reads_as_before() {
    let text = "[sink]\ntopic = \"t\"\ninterval = \"soon\"\n";
    let err = load_sink(text, &no_env).unwrap_err();
    assert!(matches!(err, ConfigError::Invalid { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("c.toml:3: key `sink.interval`: "),
        "{err}"
    );
}

#[test]
fn a_secret_of_the_wrong_type_is_not_repeated() {
    for text in [
        "[kafka]\nsasl_password = 12345678\n[sink]\ntopic = \"t\"\n",
        "[sink]\ntopic = \"t\"\npostgres_uri = 12345678\n",
        "[sink]\ntopic = \"t\"\npostgres_uri = 1234.5678\n",
        "[sink]\ntopic = \"t\"\npostgres_uri = [12345678]\n",
    ] {
        let err = load_sink(text, &no_env).unwrap_err().to_string();
        assert!(
            err.contains("invalid type: ") && !err.contains("1234") && !err.contains("1979"),
            "{text}: {err}"
        );
    }
}

#[test]
fn the_other_connectors_variables_need_not_be_set() {
    let text = "[kafka]\nbrokers = \"${BROKERS:-k:9092}\"\n[source]\ntopic = \"t\"\n[sink]\ntopic = \"t\"\npostgres_uri = \"postgres://u:${PGPASSWORD}@h/d\"\n";
    let source = load_str::<Sec>(text, Path::new("c.toml"), Section::Source, &no_env).unwrap();
    assert_eq!(source.kafka.brokers, "k:9092");
    let err = load_sink(text, &no_env).unwrap_err().to_string();
    assert!(
        err.starts_with("c.toml:7: key `sink.postgres_uri`")
            && err.contains("`PGPASSWORD` is not set"),
        "{err}"
    );
    // And the other way round.
    let text = "[source]\ntopic = \"${NOPE}\"\n[sink]\ntopic = \"t\"\n";
    assert!(load_sink(text, &no_env).is_ok());
}

#[test]
fn invisible_format_characters_are_escaped_in_keys_and_values() {
    assert_eq!(
        printable("a\u{202e}b\u{200b}c\u{feff}\u{2066}d\u{e0041}"),
        "a\\u{202e}b\\u{200b}c\\u{feff}\\u{2066}d\\u{e0041}"
    );
    assert_eq!(printable("é ü 日本 ✓"), "é ü 日本 ✓");
    let err = load_sink(
        "[sink]\ntopic = \"t\"\n\"\\u001b[31mRED\\u202e\" = 1\n",
        &no_env,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("c.toml:")
            && err.contains(
                ": key `sink.\\u{1b}[31mRED\\u{202e}`: unknown field `\\u{1b}[31mRED\\u{202e}`"
            ),
        "{err}"
    );
    assert!(
        !err.contains('\u{1b}') && !err.contains('\u{202e}'),
        "{err}"
    );
}

#[test]
fn the_seed_variables_are_exactly_those_that_override_keys() {
    let mut used: Vec<&str> = [Section::Source, Section::Sink]
        .iter()
        .flat_map(|s| s.overrides().into_iter().map(|(_, var)| var))
        .collect();
    used.sort_unstable();
    used.dedup();
    let mut listed = SEED_ENV_VARS.to_vec();
    listed.sort_unstable();
    assert_eq!(used, listed);
}

#[test]
fn a_configuration_path_that_is_a_device_or_a_fifo_is_refused_unread() {
    let dir = tempfile::tempdir().unwrap();
    // Read, /dev/zero would fill the memory; opened, a FIFO would block.
    let zero = dir.path().join("zero.toml");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let fifo = dir.path().join("fifo.toml");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    assert!(made.unwrap().success());
    for path in [zero, fifo] {
        let e = load::<Sec>(&path, Section::Sink, &no_env)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cannot read configuration file: not a regular file"),
            "{e}"
        );
    }
}
