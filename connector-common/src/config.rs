//! Loading `connector.toml`.
//!
//! One file declares both connectors; each binary reads the shared top level
//! (`log_level`, `log_format`, `[kafka]`) and its own section (`[source]` or
//! `[sink]`). Loading goes:
//!
//! 1. choose the file ([`resolve_path`]): `--config`, else
//!    `pipelines/$WEBSITE_MONITOR_ENVIRONMENT.toml`, else `./connector.toml`;
//! 2. parse TOML (syntax errors carry line and column);
//! 3. expand `${VAR}` and `${VAR:-default}` in every string value;
//! 4. apply the seed's environment overrides (`kafka_host`, `kafka_topic`,
//!    `kafka_ssl_ca`, `kafka_ssl_cert`, `kafka_ssl_key`, `postgres_uri`, `log_level`);
//! 5. deserialise into typed structs with unknown keys refused;
//! 6. run the section's [`Validate`] checks.
//!
//! Every failure is a [`ConfigError`] naming the file, the key (as a dotted
//! path such as `source.sites[2].interval`), the line where the file says it,
//! and what to do. Binaries exit with code 2 on any of them.
//!
//! The environment is passed in as a lookup function, so tests need not touch
//! the process environment.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::kafka::KafkaConfig;
use crate::logging::LogFormat;

/// A configuration that cannot be used. Its `Display` is the message an
/// operator reads.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No file was given and none of the default places has one.
    #[error("no configuration file found (tried {}); pass --config PATH or create ./connector.toml", fmt_paths(.tried))]
    NotFound {
        /// The paths looked at, in order.
        tried: Vec<PathBuf>,
    },
    /// The file could not be read.
    #[error("{}: cannot read configuration file: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("{}:{line}:{column}: not valid TOML: {message}", .path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the parser said.
        message: String,
    },
    /// A key has a value that cannot be used, or is not a known key.
    #[error("{}{}: key `{key}`: {}", .path.display(), fmt_line(*.line), printable(.message))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Dotted key path, e.g. `source.sites[2].interval`.
        key: String,
        /// 1-based line where the key (or its closest parent) is written, when known.
        line: Option<usize>,
        /// What is wrong and what to do.
        message: String,
    },
}

fn fmt_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn fmt_line(line: Option<usize>) -> String {
    line.map(|l| format!(":{l}")).unwrap_or_default()
}

/// A problem found by a section's [`Validate`] check, before the file and
/// line are attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// Dotted key path relative to the file's top level, e.g. `source.sites[0].url`.
    pub key: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl Invalid {
    /// A problem with `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key `{}`: {}", self.key, self.message)
    }
}

/// Adds a problem to `out` when the duration at `key` is zero; `example` is a
/// value to suggest (e.g. `"30s"`). Shared by both sections' checks.
pub fn require_positive(
    out: &mut Vec<Invalid>,
    key: String,
    value: std::time::Duration,
    example: &str,
) {
    if value.is_zero() {
        out.push(Invalid::new(
            key,
            format!("must be more than zero, e.g. \"{example}\""),
        ));
    }
}

/// Checks a section cannot express through types alone (urls, regexes,
/// ranges). `prefix` is the section's name, to build key paths.
pub trait Validate {
    /// Returns every problem found; empty when the section is usable.
    fn validate(&self, prefix: &str) -> Vec<Invalid>;
}

/// Which section a binary reads, and which environment variables override it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// `[source]`: `kafka_topic` overrides `source.topic`.
    Source,
    /// `[sink]`: `kafka_topic` overrides `sink.topic`, `postgres_uri` overrides `sink.postgres_uri`.
    Sink,
}

impl Section {
    /// The table name in the file.
    pub fn name(self) -> &'static str {
        match self {
            Section::Source => "source",
            Section::Sink => "sink",
        }
    }
}

/// The shared top level of the file, as each binary sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopLevel {
    /// What to log: `off`, `error`, `warn`, `info`, `debug`, `trace`, or a
    /// `tracing` filter whose every comma-separated part is a level or
    /// `target=level`, such as `info,website_monitor_sink=debug`. Env: `log_level`.
    #[serde(default = "default_log_level")]
    log_level: String,
    /// Log lines on stderr: `text`, or `json` (one JSON object per line).
    #[serde(default)]
    log_format: LogFormat,
    #[serde(default)]
    kafka: KafkaConfig,
    #[serde(default)]
    source: Option<toml::Value>,
    #[serde(default)]
    sink: Option<toml::Value>,
}

fn default_log_level() -> String {
    "info".to_owned()
}

/// A loaded, validated configuration for one connector.
#[derive(Debug, Clone, Serialize)]
pub struct Loaded<S> {
    /// The file it came from.
    #[serde(skip)]
    pub path: PathBuf,
    /// `tracing` filter directive (`log_level`, env `log_level`).
    pub log_level: String,
    /// Text or JSON log lines (`log_format`).
    pub log_format: LogFormat,
    /// The shared `[kafka]` section.
    pub kafka: KafkaConfig,
    /// The connector's own section.
    pub section: S,
}

/// Picks the configuration file: `explicit`, else
/// `pipelines/$WEBSITE_MONITOR_ENVIRONMENT.toml` when that variable is set,
/// else `./connector.toml`.
pub fn resolve_path(
    explicit: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<PathBuf, ConfigError> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    let mut tried = Vec::new();
    if let Some(name) = env("WEBSITE_MONITOR_ENVIRONMENT").filter(|n| !n.is_empty()) {
        let p = PathBuf::from("pipelines").join(format!("{name}.toml"));
        if p.exists() {
            return Ok(p);
        }
        tried.push(p);
    }
    let p = PathBuf::from("connector.toml");
    if p.exists() {
        return Ok(p);
    }
    tried.push(p);
    Err(ConfigError::NotFound { tried })
}

/// Reads, expands, overrides, deserialises and validates the file at `path`
/// for `section`. `env` looks up environment variables (pass
/// [`process_env`] in binaries).
pub fn load<S>(
    path: &Path,
    section: Section,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded<S>, ConfigError>
where
    S: DeserializeOwned + Validate,
{
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    load_str(&text, path, section, env)
}

/// Like [`load`], from text already read; `path` is only used in messages.
pub fn load_str<S>(
    text: &str,
    path: &Path,
    section: Section,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded<S>, ConfigError>
where
    S: DeserializeOwned + Validate,
{
    let invalid = |key: String, message: String| ConfigError::Invalid {
        line: locate(text, &key),
        path: path.to_path_buf(),
        // A key is the file's own text: bounded like any other.
        key: crate::limits::truncate(&key, 256),
        message: crate::limits::truncate(&message, crate::limits::MAX_FOREIGN_TEXT_BYTES),
    };
    let mut table: toml::Table = toml::from_str(text).map_err(|e| {
        let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
        ConfigError::Syntax {
            path: path.to_path_buf(),
            line,
            column,
            message: e.message().trim().to_owned(),
        }
    })?;
    expand_table(&mut table, "", env).map_err(|i| invalid(i.key, i.message))?;
    apply_env_overrides(&mut table, section, env);

    let top: TopLevel =
        from_value(toml::Value::Table(table), "").map_err(|i| invalid(i.key, i.message))?;
    if let Some(problem) = crate::logging::level_problem(&top.log_level) {
        return Err(invalid("log_level".into(), problem));
    }
    if let Some(problem) = top.kafka.validate("kafka").into_iter().next() {
        return Err(invalid(problem.key, problem.message));
    }
    let name = section.name();
    let raw = match section {
        Section::Source => top.source,
        Section::Sink => top.sink,
    }
    .unwrap_or_else(|| toml::Value::Table(toml::Table::new()));
    let parsed: S = from_value(raw, name).map_err(|i| invalid(i.key, i.message))?;
    if let Some(problem) = parsed.validate(name).into_iter().next() {
        return Err(invalid(problem.key, problem.message));
    }
    Ok(Loaded {
        path: path.to_path_buf(),
        log_level: top.log_level,
        log_format: top.log_format,
        kafka: top.kafka,
        section: parsed,
    })
}

/// Looks a variable up in the process environment; what binaries pass as `env`.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Deserialises `value` and turns an error into the dotted path of the key it is about.
fn from_value<T: DeserializeOwned>(value: toml::Value, prefix: &str) -> Result<T, Invalid> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.inner().to_string();
        let mut key = join_path(prefix, &e.path().to_string());
        // serde names an unknown field only in its message; point at it.
        if let Some(field) = unknown_field(&inner) {
            if !key.ends_with(field) {
                key = join_path(&key, field);
            }
        }
        Invalid::new(key, friendly(&inner))
    })
}

fn join_path(prefix: &str, rest: &str) -> String {
    let rest = if rest == "." { "" } else { rest };
    match (prefix.is_empty(), rest.is_empty()) {
        (true, _) => rest.to_owned(),
        (false, true) => prefix.to_owned(),
        (false, false) if rest.starts_with('[') => format!("{prefix}{rest}"),
        (false, false) => format!("{prefix}.{rest}"),
    }
}

/// `text` with its control characters escaped (`\u{1b}`): a refused value
/// quoted in a message must not drive the operator's terminal.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

/// serde's message, made for an operator: an unknown field says what to do;
/// a string of the wrong type is not repeated (it may be a secret written in
/// the wrong place, or huge); the whole is at most 1 KiB.
pub fn friendly(message: &str) -> String {
    let message = message.trim();
    let message = if message.starts_with("unknown field") {
        format!("{message}; remove it or fix its spelling")
    } else if let (Some(what), Some(at)) = (
        ["invalid type", "invalid value"]
            .into_iter()
            .find(|w| message.starts_with(&format!("{w}: string "))),
        message.rfind(", expected"),
    ) {
        format!("{what}: a string{}", &message[at..])
    } else {
        message.to_owned()
    };
    crate::limits::truncate(&message, crate::limits::MAX_FOREIGN_TEXT_BYTES)
}

/// Expands `${VAR}` and `${VAR:-default}` in every string of `table`.
fn expand_table(
    table: &mut toml::Table,
    prefix: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), Invalid> {
    for (k, v) in table.iter_mut() {
        expand_value(v, &join_path(prefix, k), env)?;
    }
    Ok(())
}

fn expand_value(
    value: &mut toml::Value,
    key: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), Invalid> {
    match value {
        toml::Value::String(s) => {
            *s = expand(s, env).map_err(|m| Invalid::new(key, m))?;
        }
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_value(item, &format!("{key}[{i}]"), env)?;
            }
        }
        toml::Value::Table(t) => expand_table(t, key, env)?,
        _ => {}
    }
    Ok(())
}

/// Expands `${VAR}` / `${VAR:-default}` in `input`; `$$` is a literal `$`.
pub fn expand(input: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or_else(|| format!("`${{` without a closing `}}` in \"{input}\""))?;
            let expr = &body[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (expr, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("`${{{expr}}}` is not a variable reference; write ${{NAME}} or ${{NAME:-default}}"));
            }
            match (env(name).filter(|v| !v.is_empty()), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(format!(
                        "environment variable `{name}` is not set; set it, or write ${{{name}:-default}}"
                    ))
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The seed's environment variables, each overriding one key.
fn apply_env_overrides(
    table: &mut toml::Table,
    section: Section,
    env: &dyn Fn(&str) -> Option<String>,
) {
    let mut set = |path: &[&str], var: &str| {
        if let Some(v) = env(var).filter(|v| !v.is_empty()) {
            set_path(table, path, toml::Value::String(v));
        }
    };
    set(&["log_level"], "log_level");
    set(&["kafka", "brokers"], "kafka_host");
    set(&["kafka", "ssl_ca"], "kafka_ssl_ca");
    set(&["kafka", "ssl_cert"], "kafka_ssl_cert");
    set(&["kafka", "ssl_key"], "kafka_ssl_key");
    set(&[section.name(), "topic"], "kafka_topic");
    if section == Section::Sink {
        set(&["sink", "postgres_uri"], "postgres_uri");
    }
}

fn set_path(table: &mut toml::Table, path: &[&str], value: toml::Value) {
    let (last, parents) = path.split_last().expect("non-empty path");
    let mut cur = table;
    for p in parents {
        let entry = cur
            .entry((*p).to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match entry {
            toml::Value::Table(t) => cur = t,
            // A scalar where a table belongs: deserialisation reports it.
            _ => return,
        }
    }
    cur.insert((*last).to_owned(), value);
}

/// 1-based line and column of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// The line where the file writes `key` (a dotted path with `[i]` indexes),
/// or its deepest written parent. `None` when the file does not mention it
/// (a value that came from the environment, or a default).
pub fn locate(text: &str, key: &str) -> Option<usize> {
    use toml::de::{DeTable, DeValue};
    let root = DeTable::parse(text).ok()?;
    let mut best: Option<usize> = None;
    let mut current: Option<&DeValue<'_>> = None;
    let mut table: Option<&DeTable<'_>> = Some(root.get_ref());
    let segments = split_key(key);
    for (at, segment) in segments.iter().enumerate() {
        match *segment {
            Segment::Key(k) => {
                let t = match (table, current) {
                    (Some(t), _) => t,
                    (None, Some(DeValue::Table(t))) => t,
                    _ => break,
                };
                let Some((name, value)) = t.get_key_value(k) else {
                    // A quoted key with dots (`"linger.ms"` in
                    // `[kafka.options]`): the rest of the path is its name.
                    let rest: Vec<&str> = segments[at..]
                        .iter()
                        .map_while(|s| match s {
                            Segment::Key(k) => Some(*k),
                            Segment::Index(_) => None,
                        })
                        .collect();
                    if let Some((name, _)) = t.get_key_value(rest.join(".").as_str()) {
                        best = Some(line_col(text, name.span().start).0);
                    }
                    break;
                };
                best = Some(line_col(text, name.span().start).0);
                current = Some(value.get_ref());
                table = None;
            }
            Segment::Index(i) => {
                let Some(DeValue::Array(items)) = current else {
                    break;
                };
                let Some(item) = items.get(i) else { break };
                best = Some(line_col(text, item.span().start).0);
                current = Some(item.get_ref());
                table = None;
            }
        }
    }
    best
}

enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

fn split_key(key: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    for part in key.split('.').filter(|p| !p.is_empty()) {
        let (name, mut idx) = match part.find('[') {
            Some(b) => (&part[..b], &part[b..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            out.push(Segment::Key(name));
        }
        while let Some(stripped) = idx.strip_prefix('[') {
            let end = stripped.find(']').unwrap_or(stripped.len());
            if let Ok(i) = stripped[..end].parse() {
                out.push(Segment::Index(i));
            }
            idx = stripped.get(end + 1..).unwrap_or("");
        }
    }
    out
}

/// Renders a loaded configuration as TOML for `--check-config`, with every
/// secret masked: the secret-holding types ([`crate::secret`]) serialise
/// masked, so what is printed here is what they allow and nothing else.
pub fn render_masked<S: Serialize>(loaded: &Loaded<S>, section: Section) -> String {
    let mut value = match toml::Value::try_from(loaded) {
        Ok(v) => v,
        Err(e) => return format!("# could not render the configuration: {e}\n"),
    };
    if let toml::Value::Table(t) = &mut value {
        if let Some(s) = t.remove("section") {
            t.insert(section.name().to_owned(), s);
        }
    }
    format!(
        "# effective configuration of {} (secrets masked)\n{}",
        loaded.path.display(),
        toml::to_string_pretty(&value).unwrap_or_default()
    )
}

/// A plain string map.
pub type StringMap = BTreeMap<String, String>;

#[cfg(test)]
mod tests {
    use super::*;

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

    fn load_sink(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Loaded<Sec>, ConfigError> {
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
    fn zero_duration_is_refused_with_an_example() {
        let mut out = Vec::new();
        require_positive(&mut out, "s.a".into(), std::time::Duration::ZERO, "5s");
        require_positive(
            &mut out,
            "s.b".into(),
            std::time::Duration::from_millis(1),
            "5s",
        );
        assert_eq!(
            out,
            [Invalid::new("s.a", "must be more than zero, e.g. \"5s\"")]
        );
    }

    #[test]
    fn a_quoted_dotted_key_is_located_on_its_own_line() {
        let text = "[kafka]\nbrokers = \"k:1\"\n[kafka.options]\n\"acks\" = \"1\"\n\"linger.ms\" = \"soon\"\n";
        assert_eq!(locate(text, "kafka.options.linger.ms"), Some(5));
        assert_eq!(locate(text, "kafka.options.nope.x"), Some(3));
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
}
