//! [`survey`]: every site of a reload checked first and handed over a chunk
//! at a time after, so that a reload that changes every site (a `[source]`
//! default, `shard`) never holds a second list of every site beside the
//! running one.
//!
//! The survey walks the whole configuration exactly as start does
//! ([`super::resolve::walk`]: every line parsed, checked and resolved, the
//! same errors with file, line and key) but keeps of each site only its url
//! hash, and of each line the index entry; a url declared twice is found
//! afterwards by hash ([`FileIndex::build`]). Only once all of it is known
//! good does anything run: [`Survey::put_in_chunks`] reads the file again,
//! a block at a time, from the handle the survey read (a file renamed over
//! it since is not read), checks each line against the index just made
//! (the same text), and hands the sites over [`CHUNK`] at a time. A million
//! sites cost 24 bytes a line of index and 8 a url of hashes, instead of a
//! million resolved sites, a map of their urls and the file's text.
//!
//! What the survey cannot settle — a url hash seen twice (a url listed
//! twice, or two urls of one hash), a `tls_ca` (read again by every walk),
//! no `sites_file` — it leaves to the whole way ([`super::resolve_indexed`]).

use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};

use connector_common::config::{ConfigError, Loaded};

use super::defaults::Resolver;
use super::file::{each_line, parse_line, LinesError};
use super::index::{fingerprint, line_hash, FileIndex};
use super::resolve::{open, share, walk, Walk};
use super::spec::SiteSpec;
use crate::config::SourceConfig;
use crate::hash::{fnv1a, shard_of_hash};

/// How many sites [`Survey::put_in_chunks`] hands over at a time.
pub const CHUNK: usize = 32_768;

/// A configuration whose every site has been checked, not yet applied.
#[derive(Debug)]
pub struct Survey {
    /// `sites_file`, as opened when surveyed.
    file: std::fs::File,
    /// Its path, for errors.
    path: PathBuf,
    /// The url hashes of this instance's sites, sorted: what runs after the
    /// reload (a running site whose hash is not here is removed).
    pub keep: Vec<u64>,
    /// The index of the file's lines, for the next reload.
    pub index: FileIndex,
}

/// The surveyed file read otherwise the second time (written over in place
/// meanwhile, or unreadable): the sites before where it stopped were handed
/// over, the rest not.
#[derive(Debug, thiserror::Error)]
#[error(
    "{}{}: the file changed while the reload applied it ({why}); the sites \
     before {} were applied, the rest not: reload again",
    path.display(),
    line.map(|l| format!(":{l}")).unwrap_or_default(),
    if line.is_some() { "this line" } else { "that point" }
)]
pub struct Interrupted {
    /// The file.
    pub path: PathBuf,
    /// The line (1-based) where it stopped, when known.
    pub line: Option<usize>,
    /// What was found there.
    pub why: String,
}

/// Checks every site of `loaded` as start does and keeps only their url
/// hashes (see the module documentation): the problems of a file that
/// cannot be used, as at start; `None` when the survey cannot settle it and
/// the whole way must be gone.
pub fn survey(loaded: &Loaded<SourceConfig>) -> Result<Option<Survey>, ConfigError> {
    let Some(mut read) = open(loaded)? else {
        return Ok(None);
    };
    let mut keep = Vec::with_capacity(share(loaded, Some(&read)));
    let mut with_ca = false;
    let how = Walk {
        index: true,
        unique: false,
    };
    let walked = walk(loaded, Some(&mut read), how, &mut |spec, url, mine| {
        if mine {
            with_ca |= spec.client.tls_ca.is_some();
            keep.push(url);
        }
    })?;
    let Some(lines) = walked.lines.filter(|_| !with_ca) else {
        return Ok(None);
    };
    let Some(index) =
        fingerprint(loaded).and_then(|config| FileIndex::build(config, lines, walked.inline))
    else {
        return Ok(None);
    };
    keep.sort_unstable();
    keep.shrink_to_fit();
    let (file, path) = (read.file, read.path);
    Ok(Some(Survey {
        file,
        path,
        keep,
        index,
    }))
}

/// Sites gathered into chunks for a `put` that may say stop.
struct Chunks<'p> {
    held: Vec<SiteSpec>,
    size: usize,
    open: bool,
    put: &'p mut dyn FnMut(Vec<SiteSpec>) -> bool,
}

impl Chunks<'_> {
    /// Adds `spec`; hands a full chunk over. Whether to go on.
    fn push(&mut self, spec: SiteSpec) -> bool {
        self.held.push(spec);
        if self.open && self.held.len() >= self.size {
            let full = std::mem::replace(&mut self.held, Vec::with_capacity(self.size));
            self.open = (self.put)(full);
        }
        self.open
    }

    /// Hands the last chunk over.
    fn finish(self) {
        if self.open && !self.held.is_empty() {
            (self.put)(self.held);
        }
    }
}

impl Survey {
    /// Resolves the surveyed sites again and hands them to `put` in the
    /// order they are declared, at most `chunk` at a time, until `put` says
    /// no more (`false`). `loaded` is the configuration surveyed. A line
    /// that reads otherwise than surveyed stops it there ([`Interrupted`]).
    pub fn put_in_chunks(
        &self,
        loaded: &Loaded<SourceConfig>,
        chunk: usize,
        put: &mut dyn FnMut(Vec<SiteSpec>) -> bool,
    ) -> Result<(), Interrupted> {
        let config = &loaded.section;
        let mut resolver = Resolver::new(config, loaded.path.parent().unwrap_or(Path::new("")));
        let in_shard = |spec: &SiteSpec| {
            let url = fnv1a(spec.url.as_str().as_bytes());
            (config.shard).is_none_or(|s| shard_of_hash(url, s.count) == s.index)
        };
        let stop = |line: Option<usize>, why: String| Interrupted {
            path: self.path.clone(),
            line,
            why,
        };
        let mut chunks = Chunks {
            held: Vec::with_capacity(chunk.max(1)),
            size: chunk.max(1),
            open: true,
            put,
        };
        for site in &config.sites {
            // Resolved by the survey with the same settings: cannot fail.
            let spec = resolver.site(site).map_err(|p| stop(None, p.message))?;
            if in_shard(&spec) {
                chunks.push(spec);
            }
        }
        let entries = self.index.entries();
        let (mut at, mut failed) = (0, None);
        let mut f = &self.file;
        f.seek(SeekFrom::Start(0))
            .map_err(|e| stop(None, e.to_string()))?;
        let read = each_line(&mut f, &mut |number, line| {
            let same = entries.get(at).is_some_and(|e| e.line == line_hash(line));
            let spec = same.then(|| parse_line(line).ok()).flatten();
            let Some(spec) = spec.and_then(|site| resolver.site(&site).ok()) else {
                failed = Some(number);
                return false;
            };
            at += 1;
            !in_shard(&spec) || chunks.push(spec)
        });
        // What was read before a stop is handed over, as the error says.
        let outcome = match read {
            Err(LinesError::Unreadable(line)) => Err(stop(Some(line), "unreadable".into())),
            Err(e) => Err(stop(None, e.to_string())),
            Ok(_) if failed.is_some() => Err(stop(failed, "not the line surveyed".into())),
            Ok(true) if at != entries.len() => Err(stop(None, "shorter than surveyed".into())),
            Ok(_) => Ok(()),
        };
        chunks.finish();
        outcome
    }
}

#[cfg(test)]
mod tests {
    use connector_common::config::{self, Section};

    use super::*;

    fn config(dir: &Path, toml: &str, lines: &str) -> Loaded<SourceConfig> {
        std::fs::write(dir.join("s.txt"), lines).unwrap();
        let path: PathBuf = dir.join("c.toml");
        std::fs::write(&path, format!("[source]\nsites_file = \"s.txt\"\n{toml}")).unwrap();
        config::load::<SourceConfig>(&path, Section::Source, &|_| None).unwrap()
    }

    fn urls(n: std::ops::Range<usize>) -> String {
        n.map(|i| format!("http://s{i}.example/\n")).collect()
    }

    /// Every site `survey` puts (in chunks of `size`), by url, and how
    /// putting ended.
    fn put_all(
        survey: &Survey,
        loaded: &Loaded<SourceConfig>,
        size: usize,
    ) -> (Vec<String>, Result<(), Interrupted>) {
        let mut all = Vec::new();
        let ended = survey.put_in_chunks(loaded, size, &mut |c| {
            all.extend(c.iter().map(|s| s.url.as_str().to_owned()));
            true
        });
        (all, ended)
    }

    /// Writes `text` over `s.txt` in place (the same file).
    fn write_in_place(dir: &Path, text: &str, truncate: bool) {
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(truncate)
            .open(dir.join("s.txt"))
            .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()))
            .unwrap();
    }

    fn chunks(survey: &Survey, loaded: &Loaded<SourceConfig>, size: usize) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        let mut put = |c: Vec<SiteSpec>| {
            out.push(c.iter().map(|s| s.url.as_str().to_owned()).collect());
            true
        };
        survey.put_in_chunks(loaded, size, &mut put).unwrap();
        out
    }

    #[test]
    fn every_site_comes_in_chunks_in_declared_order_with_its_hash_kept() {
        let dir = tempfile::tempdir().unwrap();
        let inline = "timeout = \"2s\"\n[[source.sites]]\nurl = \"http://inline.example/\"\n";
        let loaded = config(dir.path(), inline, &urls(0..5));
        let survey = survey(&loaded).unwrap().expect("a survey");
        let got = chunks(&survey, &loaded, 2);
        let want: Vec<String> = std::iter::once("http://inline.example/".to_owned())
            .chain((0..5).map(|i| format!("http://s{i}.example/")))
            .collect();
        assert_eq!(
            got,
            want.chunks(2).map(<[String]>::to_vec).collect::<Vec<_>>()
        );
        let mut hashes: Vec<u64> = want.iter().map(|u| fnv1a(u.as_bytes())).collect();
        hashes.sort_unstable();
        assert_eq!(survey.keep, hashes);
        assert_eq!(survey.index.len(), 5);
    }

    #[test]
    fn a_shard_surveys_and_puts_only_its_own_sites() {
        let dir = tempfile::tempdir().unwrap();
        let loaded = config(dir.path(), "shard = \"2/2\"\n", &urls(0..100));
        let survey = survey(&loaded).unwrap().expect("a survey");
        let mine: Vec<String> = (0..100)
            .map(|i| format!("http://s{i}.example/"))
            .filter(|u| crate::hash::shard_of(u, 2) == 2)
            .collect();
        assert!(!mine.is_empty() && mine.len() < 100);
        assert_eq!(survey.keep.len(), mine.len());
        assert_eq!(chunks(&survey, &loaded, 1000), vec![mine]);
        assert_eq!(survey.index.len(), 100, "every line, to find a url twice");
    }

    #[test]
    fn a_bad_line_is_refused_with_its_line_as_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let loaded = config(dir.path(), "", &(urls(0..3) + "ftp://x.example/\n"));
        let e = survey(&loaded).unwrap_err().to_string();
        assert!(e.contains("s.txt:4: key `url`"), "{e}");
    }

    #[test]
    fn a_url_listed_twice_or_a_tls_ca_is_left_to_the_whole_way() {
        let dir = tempfile::tempdir().unwrap();
        let twice = config(dir.path(), "", &(urls(0..3) + "HTTP://s1.example\n"));
        assert!(survey(&twice).unwrap().is_none());
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, crate::sites::tests::TEST_CA_PEM).unwrap();
        let with_ca = config(dir.path(), "tls_ca = \"ca.pem\"\n", &urls(0..3));
        assert!(survey(&with_ca).unwrap().is_none());
    }

    #[test]
    fn putting_stops_when_told_to() {
        let dir = tempfile::tempdir().unwrap();
        let loaded = config(dir.path(), "", &urls(0..10));
        let survey = survey(&loaded).unwrap().expect("a survey");
        let mut calls = 0;
        survey
            .put_in_chunks(&loaded, 3, &mut |_| {
                calls += 1;
                false
            })
            .unwrap();
        assert_eq!(calls, 1);
    }

    #[test]
    fn a_file_written_over_in_place_after_the_survey_stops_the_chunks_at_its_first_other_line() {
        let dir = tempfile::tempdir().unwrap();
        let loaded = config(dir.path(), "", &urls(0..10));
        let first = survey(&loaded).unwrap().expect("a survey");
        // Written in place (the same file): line 6 differs.
        let text = urls(0..5) + "http://other.example/\n" + &urls(6..10);
        write_in_place(dir.path(), &text, false);
        let (put, ended) = put_all(&first, &loaded, 2);
        let e = ended.unwrap_err();
        assert_eq!(e.line, Some(6), "{e}");
        assert!(e.to_string().contains("s.txt:6: the file changed"), "{e}");
        assert_eq!(put.len(), 5, "every site before line 6, as the error says");
        // Renamed over instead: the surveyed file is still read whole.
        let survey_again = survey(&loaded).unwrap().expect("a survey");
        let next = dir.path().join("s.next");
        std::fs::write(&next, urls(20..30)).unwrap();
        std::fs::rename(&next, dir.path().join("s.txt")).unwrap();
        let (got, ended) = put_all(&survey_again, &loaded, 3);
        ended.unwrap();
        assert_eq!(got[0], "http://s0.example/");
        assert_eq!(got.len(), 10);
        // Cut short in place: every line read is handed over, then refused.
        let cut_short = survey(&loaded).unwrap().expect("a survey");
        write_in_place(dir.path(), &urls(20..23), true);
        let (cut, ended) = put_all(&cut_short, &loaded, 2);
        let e = ended.unwrap_err();
        assert!(e.to_string().contains("shorter than surveyed"), "{e}");
        assert_eq!((e.line, cut.len()), (None, 3));
    }
}
