//! From the `[source]` section to the list of sites this instance checks.
//!
//! [`resolve`] reads `sites_file` (relative to the configuration file),
//! applies the `[source]` defaults to every site, shares each distinct
//! compiled regex, reads each `tls_ca` file once (refused unless it holds CA
//! certificates; the clients trust what was read), and keeps
//! only the urls of this instance's `shard`. The sites' values come typed and
//! checked from [`crate::config`]; nothing here parses them again. Every
//! problem is a [`connector_common::config::ConfigError`] naming the file, the
//! line and the key, like the loader's own.
//!
//! Layout (each file imports only the ones listed before it):
//! - `spec`: [`SiteSpec`] and [`ClientKey`], a site with every setting
//!   resolved, and [`CaFile`], a `tls_ca` file as read;
//! - `file`: the `sites_file` reader (urls and JSON lines);
//! - `defaults`: one declared site to a [`SiteSpec`];
//! - `index`: [`FileIndex`], the hashes of `sites_file`'s lines and urls as
//!   last loaded;
//! - `resolve`: [`resolve`], every declared site in order, each url once,
//!   sharded (and [`resolve_indexed`], with the index);
//! - `survey`: [`survey`], every site checked and only its url hash kept,
//!   then handed over a chunk at a time (a reload that changes every site);
//! - `reread`: [`reread`], a reload's sites: only what changed since the
//!   index, when only the file's lines changed; else a survey, or every site.
//!
//! [`load`] is the whole way from a file to its sites: `--check-config`
//! uses it; reloads use [`reread`], which checks every site the same way
//! whenever anything but the file's lines changed.

mod defaults;
mod file;
mod index;
mod reread;
mod resolve;
mod spec;
mod survey;

pub use defaults::Resolver;
pub(crate) use file::parse_site_json;
pub use index::FileIndex;
pub use reread::{reread, Changes, Reread};
pub use resolve::{resolve, resolve_indexed};
pub use spec::{CaFile, ClientKey, Settings, SiteSpec};
pub use survey::{survey, Interrupted, Survey, CHUNK};

use std::path::Path;

use connector_common::config::{self, ConfigError, Loaded, Section};

use crate::config::SourceConfig;

/// Reads the configuration at `path` and resolves its sites: what
/// `--check-config` checks and what every reload applies, by the one path
/// (`${VAR}` and the environment overrides from `env`, then the loader's
/// checks, then [`resolve`]).
pub fn load(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Loaded<SourceConfig>, Vec<SiteSpec>), ConfigError> {
    let loaded = config::load::<SourceConfig>(path, Section::Source, env)?;
    let sites = resolve(&loaded)?;
    Ok((loaded, sites))
}

#[cfg(test)]
mod tests;
