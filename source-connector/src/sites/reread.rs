//! [`reread`]: a reload's sites, as the changes since the last load when
//! only `sites_file`'s lines changed.
//!
//! With the [`FileIndex`] of the last load and the same configuration
//! otherwise, the file is read a block at a time and each line is hashed
//! and looked for where the index says it was ([`Cursor`]): a line found
//! is a site that runs as it is (not parsed, not resolved); only the other
//! lines are, as at start (a line moved far is one of them: its site is
//! put again and the check threads find it unchanged). What was in the index and is not in the file any
//! more, and whose url no new line defines, is removed. A million-line file
//! with 1 % changed resolves 10,000 lines instead of a million and holds
//! no list of every site.
//!
//! Anything out of the ordinary — a line that cannot be used, a url listed
//! twice, two urls of one hash, a `tls_ca` — goes the whole way instead,
//! which says what is wrong exactly as at start (file, line, key): with
//! `in_chunks`, a [`survey`] (every site checked, handed over a chunk at a
//! time after), else every site in one list ([`super::resolve_indexed`]).

use std::collections::HashSet;
use std::path::Path;

use connector_common::config::{self, ConfigError, Loaded, Section};

use super::defaults::Resolver;
use super::file::{each_line, open_sites_file, parse_line};
use super::index::{fingerprint, line_hash, Cursor, Entry, FileIndex};
use super::resolve::resolve_indexed;
use super::spec::SiteSpec;
use super::survey::{survey, Survey};
use crate::config::{validate_site, SourceConfig};
use crate::hash::{fnv1a, shard_of_hash};

/// The sites of a reload.
#[derive(Debug)]
pub enum Reread {
    /// Every site of this instance (and the index for the next reload, if
    /// one can be kept).
    Full {
        /// The sites, resolved and sharded.
        sites: Vec<SiteSpec>,
        /// Their lines' index.
        index: Option<FileIndex>,
    },
    /// Every site of this instance, checked, to be handed over a chunk at
    /// a time ([`Survey::put_in_chunks`]).
    Survey(Survey),
    /// What changed since the last load.
    Changes {
        /// The sites of this instance defined by new or changed lines.
        changes: Changes,
        /// The index of the file read now.
        index: FileIndex,
    },
}

/// The sites of a reload that differ from the last load's, by url; every
/// other site runs as it does.
#[derive(Debug, Default)]
pub struct Changes {
    /// Sites of lines the last load did not have (new urls, or new
    /// settings of a url; maybe the same settings written otherwise).
    pub put: Vec<SiteSpec>,
    /// The url hashes ([`fnv1a`]) of the sites no line defines any more.
    pub removed: Vec<u64>,
    /// When set, the url hashes (sorted) of every site that runs after the
    /// reload: a running site whose hash is not among them is removed too.
    pub retain: Option<Vec<u64>>,
}

/// Reads the configuration at `path` as [`super::load`] does and gives its
/// sites: only the changes since the load `previous` indexes when nothing
/// but `sites_file`'s lines changed; else, with `in_chunks`, a [`Survey`]
/// when one can settle it; else every site.
pub fn reread(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    previous: Option<&FileIndex>,
    in_chunks: bool,
) -> Result<(Loaded<SourceConfig>, Reread), ConfigError> {
    let loaded = config::load::<SourceConfig>(path, Section::Source, env)?;
    if let Some((changes, index)) = previous.and_then(|p| changes_since(&loaded, p)) {
        return Ok((loaded, Reread::Changes { changes, index }));
    }
    if in_chunks {
        if let Some(survey) = survey(&loaded)? {
            return Ok((loaded, Reread::Survey(survey)));
        }
    }
    let (sites, index) = resolve_indexed(&loaded)?;
    Ok((loaded, Reread::Full { sites, index }))
}

/// The changes of `loaded`'s sites since `previous`, and the new index;
/// `None` when the whole way must be gone (see the module documentation).
fn changes_since(
    loaded: &Loaded<SourceConfig>,
    previous: &FileIndex,
) -> Option<(Changes, FileIndex)> {
    let config = &loaded.section;
    if fingerprint(loaded)? != previous.config() {
        return None;
    }
    let dir = loaded.path.parent().unwrap_or(Path::new(""));
    let started = std::time::Instant::now();
    let Lines {
        kept,
        mut entries,
        new_lines,
    } = look_up(&dir.join(config.sites_file.as_ref()?), previous)?;
    if entries.is_empty() {
        return None;
    }
    let looked_up = started.elapsed();
    let in_shard = |url: u64| {
        config
            .shard
            .is_none_or(|s| shard_of_hash(url, s.count) == s.index)
    };
    let mut resolver = Resolver::new(config, dir);
    let mut changes = Changes::default();
    let mut new_urls = HashSet::with_capacity(new_lines.len());
    for (at, line) in new_lines {
        let site = parse_line(&line).ok()?;
        let mut problems = Vec::new();
        validate_site(&site, config, "", &mut problems);
        if !problems.is_empty() {
            return None;
        }
        let spec = resolver.site(&site).ok()?;
        let url = fnv1a(spec.url.as_str().as_bytes());
        if spec.client.tls_ca.is_some() || !new_urls.insert(url) || previous.inline().contains(&url)
        {
            return None;
        }
        entries[at].url = url;
        if in_shard(url) {
            changes.put.push(spec);
        }
    }
    let resolved = started.elapsed();
    for (i, e) in previous.entries().iter().enumerate() {
        let is_kept = kept[i / 64] & (1 << (i % 64)) != 0;
        match (is_kept, new_urls.contains(&e.url)) {
            // A url listed twice (or two urls of one hash).
            (true, true) => return None,
            (false, false) if in_shard(e.url) => changes.removed.push(e.url),
            _ => {}
        }
    }
    let index = FileIndex::new(previous.config(), entries, previous.inline().to_vec());
    tracing::debug!(
        looked_up_s = looked_up.as_secs_f64(),
        resolved_s = resolved.as_secs_f64(),
        indexed_s = started.elapsed().as_secs_f64(),
        "sites_file's changed lines read"
    );
    Some((changes, index))
}

/// What [`look_up`] found in the file.
struct Lines {
    /// One bit per position of the index: its line is in the file.
    kept: Vec<u64>,
    /// The index of the file read now, in its order: the entries found,
    /// and for the other lines their hash (their url's is set once they
    /// are resolved).
    entries: Vec<Entry>,
    /// The lines not found (their position in `entries`, text).
    new_lines: Vec<(usize, String)>,
}

/// Reads `file` a block at a time ([`each_line`]) and looks each line up in
/// `previous` ([`Cursor`]); `None` when it cannot be read as at start.
fn look_up(file: &Path, previous: &FileIndex) -> Option<Lines> {
    let mut f = open_sites_file(file).ok()?;
    let mut out = Lines {
        kept: vec![0u64; previous.len() / 64 + 1],
        entries: Vec::with_capacity(previous.len() + previous.len() / 16),
        new_lines: Vec::new(),
    };
    let mut cursor = Cursor::default();
    each_line(&mut f, &mut |_, line| {
        out.add(line, previous, &mut cursor);
        true
    })
    .ok()?;
    Some(out)
}

impl Lines {
    /// Looks `line` up and notes it: kept, or to be parsed.
    fn add(&mut self, line: &str, previous: &FileIndex, cursor: &mut Cursor) {
        let hash = line_hash(line);
        match cursor.find(previous, hash) {
            Some(i) => {
                self.kept[i / 64] |= 1 << (i % 64);
                self.entries.push(previous.entries()[i]);
            }
            None => {
                let at = self.entries.len();
                self.new_lines.push((at, line.to_owned()));
                self.entries.push(Entry { line: hash, url: 0 });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// A configuration `toml` (its `sites_file` is `s.txt`) in `dir`, with
    /// `lines` in `s.txt`; its path.
    fn config(dir: &Path, toml: &str, lines: &str) -> PathBuf {
        std::fs::write(dir.join("s.txt"), lines).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(&path, format!("[source]\nsites_file = \"s.txt\"\n{toml}")).unwrap();
        path
    }

    fn urls(n: std::ops::Range<usize>) -> String {
        n.map(|i| format!("http://s{i}.example/\n")).collect()
    }

    /// The index of the configuration at `path`, as at start.
    fn index(path: &Path) -> FileIndex {
        let loaded = config::load::<SourceConfig>(path, Section::Source, &|_| None).unwrap();
        resolve_indexed(&loaded).unwrap().1.expect("an index")
    }

    fn reread_at(path: &Path, index: &FileIndex) -> Result<Reread, ConfigError> {
        reread(path, &|_| None, Some(index), false).map(|(_, r)| r)
    }

    fn hash(url: &str) -> u64 {
        fnv1a(url.as_bytes())
    }

    #[test]
    fn only_the_changed_lines_are_resolved_and_removed_urls_named() {
        let dir = tempfile::tempdir().unwrap();
        let toml = "[[source.sites]]\nurl = \"http://inline.example/\"\n";
        let path = config(dir.path(), toml, &urls(0..100));
        let start = index(&path);
        // s0..s4 removed, s10 changed (a JSON line), s11 respelled (the same
        // site), s100..s102 added, the rest kept.
        let mut text = urls(5..10);
        text += "{\"url\": \"http://s10.example/\", \"interval\": \"5s\"}\nHTTP://S11.example\n";
        text += &urls(100..103);
        text += &urls(12..100);
        config(dir.path(), toml, &text);
        let Reread::Changes { changes, index } = reread_at(&path, &start).unwrap() else {
            panic!("not the changes");
        };
        let put: Vec<&str> = changes.put.iter().map(|s| s.url.as_str()).collect();
        assert_eq!(
            put,
            [
                "http://s10.example/",
                "http://s11.example/",
                "http://s100.example/",
                "http://s101.example/",
                "http://s102.example/"
            ]
        );
        assert_eq!(changes.put[0].interval, std::time::Duration::from_secs(5));
        let mut removed = changes.removed.clone();
        removed.sort_unstable();
        let mut gone: Vec<u64> = (0..5)
            .map(|i| hash(&format!("http://s{i}.example/")))
            .collect();
        gone.sort_unstable();
        assert_eq!(removed, gone);
        // The next reload starts from this file: nothing changed now.
        assert_eq!(index.len(), 100 - 5 + 3);
        let Reread::Changes { changes, .. } = reread_at(&path, &index).unwrap() else {
            panic!("not the changes");
        };
        assert!(changes.put.is_empty() && changes.removed.is_empty());
    }

    #[test]
    fn a_line_moved_far_is_put_again_not_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = config(dir.path(), "", &urls(0..1000));
        let start = index(&path);
        config(dir.path(), "", &(urls(1..1000) + &urls(0..1)));
        let Reread::Changes { changes, index } = reread_at(&path, &start).unwrap() else {
            panic!("not the changes");
        };
        let put: Vec<&str> = changes.put.iter().map(|s| s.url.as_str()).collect();
        assert_eq!(put, ["http://s0.example/"]);
        assert!(changes.removed.is_empty(), "{:?}", changes.removed);
        assert_eq!(index.len(), 1000);
    }

    #[test]
    fn a_bad_line_or_a_url_listed_twice_is_reported_as_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = config(dir.path(), "", &urls(0..10));
        let start = index(&path);
        config(dir.path(), "", &(urls(0..10) + "ftp://x.example/\n"));
        let e = reread_at(&path, &start).unwrap_err().to_string();
        assert!(e.contains("s.txt:11: key `url`"), "{e}");
        // A new spelling of a kept url, and a kept line twice.
        for (again, line) in [("HTTP://s3.example\n", 11), ("http://s3.example/\n", 11)] {
            config(dir.path(), "", &(urls(0..10) + again));
            let e = reread_at(&path, &start).unwrap_err().to_string();
            assert!(
                e.contains(&format!("s.txt:{line}")) && e.contains("listed twice"),
                "{e}"
            );
        }
        // A url of [[source.sites]] on a new line.
        let inline = "[[source.sites]]\nurl = \"http://inline.example/\"\n";
        let path = config(dir.path(), inline, &urls(0..10));
        let start = index(&path);
        config(
            dir.path(),
            inline,
            &(urls(0..10) + "http://inline.example/\n"),
        );
        let e = reread_at(&path, &start).unwrap_err().to_string();
        assert!(e.contains("s.txt:11") && e.contains("listed twice"), "{e}");
    }

    #[test]
    fn another_configuration_resolves_every_line_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = config(dir.path(), "", &urls(0..10));
        let start = index(&path);
        config(dir.path(), "timeout = \"2s\"\n", &urls(0..10));
        let Reread::Full { sites, index } = reread_at(&path, &start).unwrap() else {
            panic!("not every site");
        };
        assert_eq!(sites.len(), 10);
        assert!(sites
            .iter()
            .all(|s| s.timeout == std::time::Duration::from_secs(2)));
        assert!(index.is_some_and(|i| i.config() != start.config()));
    }

    #[test]
    fn another_configuration_in_chunks_is_a_survey_of_every_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = config(dir.path(), "", &urls(0..10));
        let start = index(&path);
        config(dir.path(), "timeout = \"2s\"\n", &urls(0..10));
        let (loaded, first) = reread(&path, &|_| None, Some(&start), true).unwrap();
        let Reread::Survey(survey) = first else {
            panic!("not a survey");
        };
        assert_eq!(survey.keep.len(), 10);
        assert_ne!(survey.index.config(), start.config());
        let mut sites = Vec::new();
        let mut put = |c: Vec<SiteSpec>| {
            sites.extend(c);
            true
        };
        survey.put_in_chunks(&loaded, 4, &mut put).unwrap();
        assert_eq!(sites.len(), 10);
        assert!(sites
            .iter()
            .all(|s| s.timeout == std::time::Duration::from_secs(2)));
        // Only the lines changed: still only the changes.
        let (_, again) = reread(&path, &|_| None, Some(&survey.index), true).unwrap();
        assert!(matches!(again, Reread::Changes { .. }), "{again:?}");
    }

    #[test]
    fn a_shard_is_told_only_its_own_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = config(dir.path(), "shard = \"1/2\"\n", &urls(0..100));
        let start = index(&path);
        assert_eq!(start.len(), 100, "every line, to find a url listed twice");
        config(dir.path(), "shard = \"1/2\"\n", &urls(50..150));
        let Reread::Changes { changes, .. } = reread_at(&path, &start).unwrap() else {
            panic!("not the changes");
        };
        let mine = |url: &str| crate::hash::shard_of(url, 2) == 1;
        assert!(changes.put.iter().all(|s| mine(s.url.as_str())));
        let added = (100..150)
            .filter(|i| mine(&format!("http://s{i}.example/")))
            .count();
        assert_eq!(changes.put.len(), added);
        let removed = (0..50)
            .filter(|i| mine(&format!("http://s{i}.example/")))
            .count();
        assert_eq!(changes.removed.len(), removed);
    }
}

#[cfg(test)]
mod timing {
    use std::time::Instant;

    use super::*;

    /// How long a 1 % reread of a million-line file takes, by phase (run by
    /// hand: `cargo test --release -p website-monitor-source --lib -- --ignored
    /// a_million_line_reread --nocapture`); prints, asserts no time.
    #[test]
    #[ignore = "a measurement, run by hand"]
    fn a_million_line_reread() {
        let dir = tempfile::tempdir().unwrap();
        let lines = |moved: usize| -> String {
            (0..1_000_000)
                .map(|i| {
                    let d = if i % 100 == 0 && moved > 0 { "r" } else { "s" };
                    format!("http://127.0.0.1:18093/{d}/{i}\n")
                })
                .collect()
        };
        std::fs::write(dir.path().join("s.txt"), lines(0)).unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[source]\nsites_file = \"s.txt\"\n").unwrap();
        let t = Instant::now();
        let loaded = config::load::<SourceConfig>(&path, Section::Source, &|_| None).unwrap();
        let (sites, index) = resolve_indexed(&loaded).unwrap();
        println!(
            "start: {} sites resolved and indexed in {:?}",
            sites.len(),
            t.elapsed()
        );
        drop(sites);
        std::fs::write(dir.path().join("s.txt"), lines(1)).unwrap();
        for _ in 0..3 {
            let t = Instant::now();
            let (_, reread) = reread(&path, &|_| None, index.as_ref(), false).unwrap();
            let Reread::Changes { changes, .. } = reread else {
                panic!("not the changes")
            };
            println!(
                "reread: {} put, {} removed in {:?}",
                changes.put.len(),
                changes.removed.len(),
                t.elapsed()
            );
        }
    }
}
