//! [`reread`]: a reload's sites, as the changes since the last load when
//! only `sites_file`'s lines changed.
//!
//! With the [`FileIndex`] of the last load and the same configuration
//! otherwise, each line of the file is hashed and looked up: a line found
//! is a site that runs as it is (not parsed, not resolved); only the other
//! lines are, as at start. What was in the index and is not in the file any
//! more, and whose url no new line defines, is removed. A million-line file
//! with 1 % changed resolves 10,000 lines instead of a million and holds
//! no list of every site.
//!
//! Anything out of the ordinary — a line that cannot be used, a url listed
//! twice, two urls of one hash, a `tls_ca` — goes the whole way instead
//! ([`super::resolve_indexed`]), which says what is wrong exactly as at
//! start (file, line, key) or gives every site.

use std::collections::HashSet;
use std::path::Path;

use connector_common::config::{self, ConfigError, Loaded, Section};

use super::defaults::Resolver;
use super::file::{is_blank, parse_line, read_sites_file};
use super::index::{fingerprint, line_hash, Entry, FileIndex};
use super::resolve::resolve_indexed;
use super::spec::SiteSpec;
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
}

/// Reads the configuration at `path` as [`super::load`] does and gives its
/// sites: only the changes since the load `previous` indexes when nothing
/// but `sites_file`'s lines changed, else every site.
pub fn reread(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    previous: Option<&FileIndex>,
) -> Result<(Loaded<SourceConfig>, Reread), ConfigError> {
    let loaded = config::load::<SourceConfig>(path, Section::Source, env)?;
    if let Some((changes, index)) = previous.and_then(|p| changes_since(&loaded, p)) {
        return Ok((loaded, Reread::Changes { changes, index }));
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
    let text = read_sites_file(&dir.join(config.sites_file.as_ref()?)).ok()?;
    // One bit per line of the index: seen in the file now.
    let mut kept = vec![0u64; previous.len() / 64 + 1];
    let mut new_lines = Vec::new();
    let mut found = 0usize;
    for line in text.lines().map(str::trim).filter(|l| !is_blank(l)) {
        found += 1;
        let hash = line_hash(line);
        match previous.find(hash) {
            Some(i) if kept[i / 64] & (1 << (i % 64)) != 0 => return None,
            Some(i) => kept[i / 64] |= 1 << (i % 64),
            None => new_lines.push((hash, line)),
        }
    }
    if found == 0 {
        return None;
    }
    let in_shard = |url: u64| {
        config
            .shard
            .is_none_or(|s| shard_of_hash(url, s.count) == s.index)
    };
    let mut resolver = Resolver::new(config, dir);
    let mut changes = Changes::default();
    let mut added = Vec::with_capacity(new_lines.len());
    let mut new_urls = HashSet::with_capacity(new_lines.len());
    for (hash, line) in new_lines {
        let site = parse_line(line).ok()?;
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
        added.push(Entry { line: hash, url });
        if in_shard(url) {
            changes.put.push(spec);
        }
    }
    drop(text);
    for (i, e) in previous.entries().iter().enumerate() {
        let is_kept = kept[i / 64] & (1 << (i % 64)) != 0;
        match (is_kept, new_urls.contains(&e.url)) {
            // A url listed twice (or two urls of one hash).
            (true, true) => return None,
            (false, false) if in_shard(e.url) => changes.removed.push(e.url),
            _ => {}
        }
    }
    Some((changes, previous.next(&kept, added)))
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
        reread(path, &|_| None, Some(index)).map(|(_, r)| r)
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
        // site), s100..s102 added, the rest kept in another order.
        let mut text = String::from(
            "{\"url\": \"http://s10.example/\", \"interval\": \"5s\"}\nHTTP://S11.example\n",
        );
        text += &urls(100..103);
        text += &urls(12..100);
        text += &urls(5..10);
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
