//! Loading `connector.toml`: the one entry point that turns a file into a
//! typed, validated configuration or into messages naming file, line and key.
//!
//! One file declares both connectors; each binary reads the shared top level
//! (`log_level`, `log_format`, `[kafka]`) and its own section (`[source]` or
//! `[sink]`). Loading goes:
//!
//! 1. choose the file ([`resolve_path`]): `--config`, else
//!    `pipelines/$WEBSITE_MONITOR_ENVIRONMENT.toml`, else `./connector.toml`;
//! 2. parse TOML (syntax errors carry line and column);
//! 3. expand `${VAR}` and `${VAR:-default}` in every string value of the
//!    top level, `[kafka]` and the binary's own section ([`expand()`]; the
//!    other connector's section is left as written, its variables need not
//!    be set here);
//! 4. apply the seed's environment overrides (`kafka_host`, `kafka_topic`,
//!    `kafka_ssl_ca`, `kafka_ssl_cert`, `kafka_ssl_key`, `postgres_uri`, `log_level`);
//! 5. deserialise into typed structs with unknown keys refused; when a part
//!    fails, each key (and each element of an array) is deserialised alone,
//!    so every key that cannot be used is named, not only the first;
//! 6. run the [`Validate`] checks of each part that deserialised.
//!
//! Every failure is a [`ConfigError`] naming the file, the key (as a dotted
//! path such as `source.sites[2].interval`), the line where the file says it
//! ([`locate`]), and what to do. Past TOML syntax and `${VAR}` expansion,
//! every problem of the file is reported at once: the top level's, `[kafka]`'s
//! and the section's, one line each, in the order of their lines. Binaries
//! exit with code 2 on any of them.
//!
//! The environment is passed in as a lookup function, so tests need not touch
//! the process environment.
//!
//! Inside: `expand` (steps 3 and 4), `typed` (step 5, serde's
//! errors as key and message), `locate` (key paths and their
//! lines), `error` ([`ConfigError`] and how it reads). They import each
//! other one way only, and none of them this module.

mod error;
mod expand;
mod locate;
mod typed;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::kafka::KafkaConfig;
use crate::logging::{level_problem, LogFormat};

pub use crate::problem::{require_positive, Invalid, Validate};
#[cfg(test)]
use error::printable;
pub use error::{ConfigError, Problem, MAX_PROBLEMS_SHOWN};
pub use expand::expand;
pub use locate::locate;
pub use typed::friendly;

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

    /// The other connector's section, which this one does not read.
    fn other(self) -> Self {
        match self {
            Section::Source => Section::Sink,
            Section::Sink => Section::Source,
        }
    }

    /// The seed's environment variables ([`SEED_ENV_VARS`]), each
    /// overriding one key, in the order they are applied.
    fn overrides(self) -> Vec<expand::Override> {
        let mut all: Vec<expand::Override> = vec![
            (&["log_level"], "log_level"),
            (&["kafka", "brokers"], "kafka_host"),
            (&["kafka", "ssl_ca"], "kafka_ssl_ca"),
            (&["kafka", "ssl_cert"], "kafka_ssl_cert"),
            (&["kafka", "ssl_key"], "kafka_ssl_key"),
        ];
        match self {
            Section::Source => all.push((&["source", "topic"], "kafka_topic")),
            Section::Sink => all.extend([
                (&["sink", "topic"][..], "kafka_topic"),
                (&["sink", "postgres_uri"][..], "postgres_uri"),
            ]),
        }
        all
    }
}

/// The seed's environment variables, every one that overrides a key of
/// either connector (see [`Section`]).
pub const SEED_ENV_VARS: [&str; 7] = [
    "log_level",
    "kafka_host",
    "kafka_ssl_ca",
    "kafka_ssl_cert",
    "kafka_ssl_key",
    "kafka_topic",
    "postgres_uri",
];

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
    let text = read_config_file(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    load_str(&text, path, section, env)
}

/// Largest configuration file read (sites beyond a few thousand belong in
/// `sites_file`).
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// The text of a configuration file ([`crate::files::read_regular`]).
fn read_config_file(path: &Path) -> std::io::Result<String> {
    let bytes = crate::files::read_regular(path, MAX_CONFIG_BYTES)?;
    String::from_utf8(bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
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
    let located = |problems: Vec<Invalid>| ConfigError::located(path, text, problems);
    let mut table = parse(text, path)?;
    let mut problems = Vec::new();
    // The other connector's section is not read here: its `${VAR}`s are its
    // own (the source need not have the sink's database password).
    expand::expand_table(
        &mut table,
        "",
        &[section.other().name()],
        env,
        &mut problems,
    );
    if !problems.is_empty() {
        // An unexpanded `${VAR}` would only cause more, misleading problems.
        return Err(located(problems));
    }
    expand::apply_env_overrides(&mut table, &section.overrides(), env);
    let name = section.name();
    let raw = table
        .remove(name)
        .unwrap_or_else(|| toml::Value::Table(toml::Table::new()));
    let top = match typed::every_problem::<TopLevel>(toml::Value::Table(table), "") {
        Ok(top) => {
            if let Some(problem) = level_problem(&top.log_level) {
                problems.push(Invalid::new("log_level", problem));
            }
            problems.extend(top.kafka.validate("kafka"));
            Some(top)
        }
        Err(found) => {
            problems.extend(found);
            None
        }
    };
    let parsed: Option<S> = match typed::every_problem(raw, name) {
        Ok(parsed) => {
            problems.extend(Validate::validate(&parsed, name));
            Some(parsed)
        }
        Err(found) => {
            problems.extend(found);
            None
        }
    };
    match (top, parsed) {
        (Some(top), Some(section)) if problems.is_empty() => Ok(Loaded {
            path: path.to_path_buf(),
            log_level: top.log_level,
            log_format: top.log_format,
            kafka: top.kafka,
            section,
        }),
        _ => Err(located(problems)),
    }
}

/// Step 2: the file's text as a TOML table, or where its syntax fails.
fn parse(text: &str, path: &Path) -> Result<toml::Table, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let (line, column) = e
            .span()
            .map(|s| locate::line_col(text, s.start))
            .unwrap_or((1, 1));
        ConfigError::Syntax {
            path: path.to_path_buf(),
            line,
            column,
            message: e.message().trim().to_owned(),
        }
    })
}

/// Looks a variable up in the process environment; what binaries pass as `env`.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
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
