//! [`resolve`]: the declared sites — `[[source.sites]]`, then `sites_file` —
//! resolved one by one, each url once, kept when this instance's `shard`
//! has it. Every problem is a [`ConfigError`] naming the file, the line and
//! the key, like the loader's own.

use std::collections::HashMap;
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};

use connector_common::config::{locate, ConfigError, Invalid, Loaded};

use super::defaults::Resolver;
use super::file::{count_lines, for_each_site_line, open_sites_file};
use super::index::{fingerprint, line_hash, Entry, FileIndex};
use super::spec::SiteSpec;
use crate::config::{validate_site, SiteConfig, SourceConfig};
use crate::hash::{fnv1a, shard_of_hash};

/// Where a site was declared, for error messages.
#[derive(Debug, Clone, Copy)]
enum Origin {
    /// `[[source.sites]]` entry number `i`.
    Inline(usize),
    /// Line `n` (1-based) of `sites_file`.
    File(usize),
}

/// Resolves the sites of `loaded` for this instance (after sharding).
pub fn resolve(loaded: &Loaded<SourceConfig>) -> Result<Vec<SiteSpec>, ConfigError> {
    resolve_with(loaded, false).map(|(sites, _)| sites)
}

/// [`resolve`], and the index of `sites_file`'s lines that lets the next
/// reload resolve only the lines that changed ([`super::reread`]); no index
/// without a `sites_file`, when a site reads a `tls_ca` file (read again at
/// each reload), or when two urls have one hash.
pub fn resolve_indexed(
    loaded: &Loaded<SourceConfig>,
) -> Result<(Vec<SiteSpec>, Option<FileIndex>), ConfigError> {
    resolve_with(loaded, true)
}

/// [`resolve`], with the index when `index`. A url declared twice is looked
/// for by url hash first (8 bytes a site, not a map of every url: at a
/// million sites the map was the largest part of the start-up peak); only
/// when a hash is seen twice, or the file has problems, are the sites walked
/// again with the map, which names both places of a url listed twice (or
/// finds two urls of one hash) and reports every problem together.
fn resolve_with(
    loaded: &Loaded<SourceConfig>,
    index: bool,
) -> Result<(Vec<SiteSpec>, Option<FileIndex>), ConfigError> {
    match resolve_once(loaded, index, false) {
        Ok((out, index, false)) => Ok((out, index)),
        _ => resolve_once(loaded, index, true).map(|(out, index, _)| (out, index)),
    }
}

/// One walk of [`resolve_with`] (with the map of every url when `unique`):
/// the sites, the index, and whether two declared sites (of any shard) have
/// one url hash.
fn resolve_once(
    loaded: &Loaded<SourceConfig>,
    index: bool,
    unique: bool,
) -> Result<(Vec<SiteSpec>, Option<FileIndex>, bool), ConfigError> {
    let mut file = open(loaded)?;
    let mut out = Vec::with_capacity(share(loaded, file.as_ref()));
    let mut hashes = Vec::with_capacity(declared(loaded, file.as_ref()));
    let walked = walk(
        loaded,
        file.as_mut(),
        Walk { index, unique },
        &mut |spec, url, mine| {
            hashes.push(url);
            if mine {
                out.push(spec);
            }
        },
    )?;
    hashes.sort_unstable();
    let twice = hashes.windows(2).any(|w| w[0] == w[1]);
    drop(hashes);
    let index = walked.lines.and_then(|lines| {
        let with_ca = out.iter().any(|s| s.client.tls_ca.is_some());
        let config = fingerprint(loaded).filter(|_| !with_ca)?;
        FileIndex::build(config, lines, walked.inline)
    });
    out.shrink_to_fit();
    Ok((out, index, twice))
}

/// `sites_file`, open: its path (resolved against the configuration's
/// directory) and the file (a file renamed over it since is another file).
pub(super) struct SitesFile {
    /// The path, for errors.
    pub path: PathBuf,
    /// The file.
    pub file: std::fs::File,
    /// How many lines it has (read when it was opened).
    pub lines: usize,
}

/// Opens the `sites_file` of `loaded`, if it has one, and counts its lines;
/// a file that cannot be read is refused at `source.sites_file`.
pub(super) fn open(loaded: &Loaded<SourceConfig>) -> Result<Option<SitesFile>, ConfigError> {
    let Some(name) = &loaded.section.sites_file else {
        return Ok(None);
    };
    let path = loaded.path.parent().unwrap_or(Path::new("")).join(name);
    let counted = open_sites_file(&path).and_then(|mut file| {
        let lines = count_lines(&mut file)?;
        file.seek(SeekFrom::Start(0))?;
        Ok((file, lines))
    });
    let (file, lines) = counted.map_err(|e| ConfigError::Invalid {
        path: loaded.path.clone(),
        key: "source.sites_file".into(),
        line: std::fs::read_to_string(&loaded.path)
            .ok()
            .and_then(|t| locate(&t, "source.sites_file")),
        message: format!(
            "cannot read {}: {e}; the path is relative to the configuration file's directory",
            path.display()
        ),
    })?;
    Ok(Some(SitesFile { path, file, lines }))
}

/// How many sites `loaded` declares at most (one a line of the file).
pub(super) fn declared(loaded: &Loaded<SourceConfig>, file: Option<&SitesFile>) -> usize {
    loaded.section.sites.len() + file.map_or(0, |f| f.lines)
}

/// Room for this instance's share of the sites `loaded` declares (its
/// shard's), with 10 % slack: a shard a little over its share must not
/// double a list sized for it.
pub(super) fn share(loaded: &Loaded<SourceConfig>, file: Option<&SitesFile>) -> usize {
    let shards = loaded.section.shard.map_or(1, |s| s.count as usize).max(1);
    let share = declared(loaded, file) / shards;
    share + share / 10 + 1
}

/// What a [`walk`] does besides resolving.
#[derive(Debug, Clone, Copy)]
pub(super) struct Walk {
    /// Note each line of the file ([`Walked::lines`]).
    pub index: bool,
    /// Refuse a url declared twice as it is met, by its text; without it a
    /// url twice is found afterwards by its hash ([`FileIndex::build`]), and
    /// no map of every url is held.
    pub unique: bool,
}

/// What a [`walk`] gives besides the sites.
pub(super) struct Walked {
    /// With [`Walk::index`] and a file: each of its lines' hashes.
    pub lines: Option<Vec<Entry>>,
    /// The url hashes of `[[source.sites]]`.
    pub inline: Vec<u64>,
}

/// Resolves every declared site of `loaded` in order — `[[source.sites]]`,
/// then the lines of `file` — and hands each to `keep`, with its url hash
/// and whether this instance's shard has it, as it is resolved (only what `keep` keeps
/// stays in memory: 100,000 lines held as parsed entries first doubled the
/// start-up peak). Every problem is refused with its file, line and key.
pub(super) fn walk(
    loaded: &Loaded<SourceConfig>,
    file: Option<&mut SitesFile>,
    how: Walk,
    keep: &mut dyn FnMut(SiteSpec, u64, bool),
) -> Result<Walked, ConfigError> {
    let config = &loaded.section;
    let dir = loaded.path.parent().unwrap_or(Path::new(""));
    let declared = declared(loaded, file.as_deref());
    let mut resolving = Resolving {
        loaded,
        resolver: Resolver::new(config, dir),
        config_text: std::cell::OnceCell::new(),
        sites_file: (file.as_ref()).map(|f| f.path.clone()).unwrap_or_default(),
        first_seen: how.unique.then(|| HashMap::with_capacity(declared)),
        keep,
        lines: (how.index && file.is_some()).then(|| Vec::with_capacity(declared)),
        inline: Vec::new(),
        last_url: 0,
    };
    for (i, site) in config.sites.iter().enumerate() {
        resolving.add(Origin::Inline(i), site)?;
    }
    if let Some(file) = file {
        let SitesFile { file: f, path, .. } = file;
        let found = for_each_site_line(f, path, |line, text, site| {
            resolving.add(Origin::File(line), &site)?;
            if let Some(lines) = &mut resolving.lines {
                let url = resolving.last_url;
                lines.push(Entry {
                    line: line_hash(text),
                    url,
                });
            }
            Ok(())
        })?;
        let outside = config.sites_topic.is_some() || config.http_sd_url.is_some();
        if found == 0 && config.sites.is_empty() && !outside {
            return Err(ConfigError::Invalid {
                path: path.clone(),
                key: "source.sites_file".into(),
                line: None,
                message: "no sites in this file and none in [[source.sites]]; add one url a line"
                    .into(),
            });
        }
    }
    Ok(Walked {
        lines: resolving.lines,
        inline: resolving.inline,
    })
}

/// The state of a [`walk`] while sites are added one by one.
struct Resolving<'a, 'k> {
    /// The configuration (for its path, and the shard).
    loaded: &'a Loaded<SourceConfig>,
    /// Defaults, shared headers and compiled regexes.
    resolver: Resolver<'a>,
    /// The configuration file's text, read on the first error that needs a line.
    config_text: std::cell::OnceCell<Option<String>>,
    /// `sites_file`'s path, for errors.
    sites_file: PathBuf,
    /// With [`Walk::unique`]: where each url was first declared (one url
    /// twice would be two checks of one site in flight and two records per
    /// interval).
    first_seen: Option<HashMap<Box<str>, Origin>>,
    /// Where every site goes, with its url hash and whether this
    /// instance's shard has it.
    keep: &'k mut dyn FnMut(SiteSpec, u64, bool),
    /// With an index: each line of `sites_file` read so far.
    lines: Option<Vec<Entry>>,
    /// The url hashes of `[[source.sites]]`.
    inline: Vec<u64>,
    /// The url hash of the site added last.
    last_url: u64,
}

impl Resolving<'_, '_> {
    /// The line of the configuration file where `key` is written.
    fn config_line(&self, key: &str) -> Option<usize> {
        self.config_text
            .get_or_init(|| std::fs::read_to_string(&self.loaded.path).ok())
            .as_deref()
            .and_then(|t| locate(t, key))
    }

    /// `problem` of the site declared at `origin`, with its file, line and key.
    fn refuse(&self, origin: Origin, problem: Invalid) -> ConfigError {
        match origin {
            Origin::Inline(i) => {
                let key = if problem.key.starts_with("source.") {
                    problem.key
                } else {
                    format!("source.sites[{i}].{}", problem.key)
                };
                ConfigError::Invalid {
                    path: self.loaded.path.clone(),
                    line: self.config_line(&key),
                    key,
                    message: problem.message,
                }
            }
            Origin::File(line) => ConfigError::Invalid {
                path: self.sites_file.clone(),
                key: problem.key,
                line: Some(line),
                message: problem.message,
            },
        }
    }

    /// Resolves one declared site; keeps it when this instance's shard has it.
    fn add(&mut self, origin: Origin, site: &SiteConfig) -> Result<(), ConfigError> {
        if let Origin::File(_) = origin {
            // The loader checked the `[[source.sites]]` entries; a line of
            // `sites_file` is checked here, by the same rules.
            let mut problems = Vec::new();
            validate_site(site, &self.loaded.section, "", &mut problems);
            if let Some(problem) = problems.into_iter().next() {
                return Err(self.refuse(origin, problem));
            }
        }
        let spec = match self.resolver.site(site) {
            Ok(spec) => spec,
            Err(problem) => return Err(self.refuse(origin, problem)),
        };
        let first =
            (self.first_seen.as_mut()).and_then(|f| f.insert(spec.url.as_str().into(), origin));
        if let Some(first) = first {
            return Err(self.listed_twice(origin, first, &spec));
        }
        self.last_url = fnv1a(spec.url.as_str().as_bytes());
        if let Origin::Inline(_) = origin {
            self.inline.push(self.last_url);
        }
        let keep = (self.loaded.section.shard)
            .is_none_or(|s| shard_of_hash(self.last_url, s.count) == s.index);
        (self.keep)(spec, self.last_url, keep);
        Ok(())
    }

    /// The refusal of `spec`, declared at `origin`, already declared at `first`.
    fn listed_twice(&self, origin: Origin, first: Origin, spec: &SiteSpec) -> ConfigError {
        let place = match first {
            Origin::Inline(i) => {
                let key = format!("source.sites[{i}].url");
                let line = self
                    .config_line(&key)
                    .map(|l| format!(":{l}"))
                    .unwrap_or_default();
                format!("{}{line} (key `{key}`)", self.loaded.path.display())
            }
            Origin::File(line) => format!("{}:{line}", self.sites_file.display()),
        };
        let problem = Invalid::new(
            "url",
            format!(
                "`{}` is listed twice, also at {place} (after normalisation); \
                 list each url once: two entries would check the site twice per interval",
                spec.url
            ),
        );
        self.refuse(origin, problem)
    }
}
