//! Connector configurations built from typed values: a [`ConfigBuilder`]
//! holds a [`toml::Table`] and writes it with `toml`, so every value is
//! quoted and escaped by the serializer, never pasted into text.
//!
//! ```
//! use website_monitor_tests::config::{ConfigBuilder, Site};
//! let text = ConfigBuilder::source()
//!     .brokers("127.0.0.1:9092")
//!     .set("interval", "1s")
//!     .site(Site::new("http://127.0.0.1/").set("regex", "a \"quoted\" word"))
//!     .text();
//! let back: toml::Table = text.parse().unwrap();
//! assert_eq!(back["source"]["sites"][0]["regex"].as_str(), Some("a \"quoted\" word"));
//! ```
//!
//! Tests whose input is a malformed file (bad TOML, bad values, line numbers)
//! keep literal text: that text is what they test.

use std::path::{Path, PathBuf};

use connector_common::config::{load_str, Section};
use connector_common::Loaded;
use toml::{Table, Value};

/// A connector.toml under construction: `[kafka]`, the connector's own
/// section (`[source]` or `[sink]`, or both: [`ConfigBuilder::section`]) and
/// top-level keys.
#[derive(Debug, Clone)]
pub struct ConfigBuilder {
    root: Table,
    section: Section,
}

impl ConfigBuilder {
    /// An empty `[source]` configuration.
    pub fn source() -> Self {
        Self::new(Section::Source)
    }

    /// An empty `[sink]` configuration.
    pub fn sink() -> Self {
        Self::new(Section::Sink)
    }

    fn new(section: Section) -> Self {
        let mut root = Table::new();
        root.insert(section.name().to_owned(), Value::Table(Table::new()));
        Self { root, section }
    }

    fn table(&mut self, name: &str) -> &mut Table {
        match self
            .root
            .entry(name)
            .or_insert_with(|| Value::Table(Table::new()))
        {
            Value::Table(t) => t,
            other => panic!("[{name}] is not a table: {other}"),
        }
    }

    /// `kafka.brokers`.
    pub fn brokers(self, brokers: &str) -> Self {
        self.kafka("brokers", brokers)
    }

    /// A key of `[kafka]`.
    pub fn kafka(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.table("kafka").insert(key.to_owned(), value.into());
        self
    }

    /// From now on [`ConfigBuilder::set`], [`ConfigBuilder::unset`] and
    /// [`ConfigBuilder::site`] write `[source]` or `[sink]`: one file for
    /// both connectors, as `pipelines/*.toml` are.
    pub fn section(mut self, section: Section) -> Self {
        self.table(section.name());
        self.section = section;
        self
    }

    /// A key of the current section (`[source]` or `[sink]`).
    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
        let name = self.section.name();
        self.table(name).insert(key.to_owned(), value.into());
        self
    }

    /// Removes a key of the connector's own section.
    pub fn unset(mut self, key: &str) -> Self {
        let name = self.section.name();
        self.table(name).remove(key);
        self
    }

    /// A top-level key (`log_level`, say).
    pub fn top(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.root.insert(key.to_owned(), value.into());
        self
    }

    /// One more `[[source.sites]]` entry.
    pub fn site(mut self, site: impl Into<Site>) -> Self {
        let name = self.section.name();
        let sites = self
            .table(name)
            .entry("sites")
            .or_insert_with(|| Value::Array(Vec::new()));
        match sites {
            Value::Array(a) => a.push(Value::Table(site.into().0)),
            other => panic!("sites is not an array: {other}"),
        }
        self
    }

    /// Each of `sites`, as [`ConfigBuilder::site`].
    pub fn sites<S: Into<Site>>(self, sites: impl IntoIterator<Item = S>) -> Self {
        sites.into_iter().fold(self, Self::site)
    }

    /// The configuration as a TOML table.
    pub fn as_table(&self) -> &Table {
        &self.root
    }

    /// The configuration as connector.toml text.
    pub fn text(&self) -> String {
        toml::to_string(&self.root).expect("a TOML table serializes")
    }

    /// Writes the text to `dir/connector.toml` and returns that path.
    pub fn write(&self, dir: &Path) -> PathBuf {
        let path = dir.join("connector.toml");
        std::fs::write(&path, self.text()).expect("write connector.toml");
        path
    }

    /// The configuration loaded as the connector of `section` loads its file
    /// (without the environment); panics, showing the text, when it is refused.
    fn load<S>(&self, section: Section) -> Loaded<S>
    where
        S: serde::de::DeserializeOwned + connector_common::config::Validate,
    {
        let text = self.text();
        load_str(&text, Path::new("test.toml"), section, &|_| None)
            .unwrap_or_else(|e| panic!("test config: {e}\n{text}"))
    }

    /// The source's view of the configuration: loaded as the source loads its
    /// file (without the environment); panics, showing the text, when refused.
    pub fn source_config(&self) -> Loaded<website_monitor_source::SourceConfig> {
        self.load(Section::Source)
    }

    /// The sink's view of the configuration, as [`ConfigBuilder::source_config`].
    pub fn sink_config(&self) -> Loaded<website_monitor_sink::SinkConfig> {
        self.load(Section::Sink)
    }
}

/// One `[[source.sites]]` entry.
#[derive(Debug, Clone)]
pub struct Site(Table);

impl Site {
    /// A site checking `url`, every other key from `[source]`.
    pub fn new(url: impl Into<String>) -> Self {
        let mut t = Table::new();
        t.insert("url".to_owned(), Value::String(url.into()));
        Self(t)
    }

    /// One of its keys.
    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.0.insert(key.to_owned(), value.into());
        self
    }
}

impl From<&str> for Site {
    fn from(url: &str) -> Self {
        Self::new(url)
    }
}

impl From<String> for Site {
    fn from(url: String) -> Self {
        Self::new(url)
    }
}

impl From<&String> for Site {
    fn from(url: &String) -> Self {
        Self::new(url.as_str())
    }
}
