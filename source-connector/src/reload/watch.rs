//! `reload_watch`: whether the configuration file or `sites_file` changed
//! on disk since the last reload, by polling (no file-notification API:
//! polling works the same on every filesystem, a bind mount or a Kubernetes
//! ConfigMap's symlink swap included).
//!
//! A file being written in place is seen half-written, and a half-written
//! sites list can be a valid list (cut at a line end: every site after the
//! cut removed) or hold a different valid site (a url cut short). So a
//! change is applied only once it has **settled** ([`Settle`]): the files
//! looked the same on two polls in a row, and — when a file's last line has
//! no line end, as a file cut mid-line has not — for at least
//! [`UNFINISHED_SETTLE`]. Replacing a file atomically (write another file,
//! then rename it over the watched one) needs none of this.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use connector_common::config::Loaded;
use connector_common::files::read_regular;

use crate::config::SourceConfig;
use crate::hash::fnv1a;

/// Files up to this size are compared by content too, so an edit that keeps
/// the size within the filesystem's timestamp granularity is still seen.
const HASHED_BYTES: u64 = 4 << 20;

/// How long a changed file whose last line has no line end must stay the
/// same before a watch applies it (a writer may be in the middle of a line).
pub const UNFINISHED_SETTLE: Duration = Duration::from_secs(5);

/// What identifies one version of a file: `None` when it cannot be read;
/// else its modification time, size, content hash (of regular files up to
/// 4 MiB; nothing else is read: `/dev/zero` or a FIFO would never end)
/// and whether it ends with a line end (or is empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint(Option<(SystemTime, u64, u64, bool)>);

impl Fingerprint {
    /// The file at `path` as it is now.
    pub fn of(path: &Path) -> Self {
        let Ok(meta) = std::fs::metadata(path) else {
            return Fingerprint(None);
        };
        let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        let (hash, finished) = if !meta.is_file() {
            (0, true)
        } else if meta.len() <= HASHED_BYTES {
            let bytes = read_regular(path, HASHED_BYTES).unwrap_or_default();
            (fnv1a(&bytes), bytes.last().is_none_or(|b| *b == b'\n'))
        } else {
            (0, last_byte(path).is_none_or(|b| b == b'\n'))
        };
        Fingerprint(Some((modified, meta.len(), hash, finished)))
    }

    /// Whether the file ends with a line end, is empty, or cannot be read.
    fn finished(&self) -> bool {
        self.0.is_none_or(|(_, _, _, finished)| finished)
    }
}

/// The last byte of the file at `path`.
fn last_byte(path: &Path) -> Option<u8> {
    let mut f = std::fs::File::open(path).ok()?;
    f.seek(SeekFrom::End(-1)).ok()?;
    let mut b = [0u8];
    f.read_exact(&mut b).ok()?;
    Some(b[0])
}

/// The files a configuration reads: itself and its `sites_file`, as of the
/// last look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watched {
    files: Vec<(PathBuf, Fingerprint)>,
}

impl Watched {
    /// The files of `config` as they are now.
    pub fn of(config: &Loaded<SourceConfig>) -> Self {
        let mut paths = vec![config.path.clone()];
        if let Some(file) = &config.section.sites_file {
            let dir = config.path.parent().unwrap_or(Path::new(""));
            paths.push(dir.join(file));
        }
        Watched {
            files: paths
                .into_iter()
                .map(|p| {
                    let f = Fingerprint::of(&p);
                    (p, f)
                })
                .collect(),
        }
    }

    /// After a reload that read the files as `before` saw them: `before`
    /// when the reloaded configuration watches the same files (an edit made
    /// while the reload read them is then still seen as a change next time),
    /// else the new set as it is now.
    pub fn after_reload(before: Self, config: &Loaded<SourceConfig>) -> Self {
        let now = Self::of(config);
        let same = now.files.len() == before.files.len()
            && now.files.iter().zip(&before.files).all(|(a, b)| a.0 == b.0);
        if same {
            before
        } else {
            now
        }
    }

    /// The same files as they are now.
    pub fn again(&self) -> Self {
        Watched {
            files: (self.files.iter())
                .map(|(p, _)| (p.clone(), Fingerprint::of(p)))
                .collect(),
        }
    }

    /// Whether every file ends with a line end (or is empty, or missing).
    fn finished(&self) -> bool {
        self.files.iter().all(|(_, f)| f.finished())
    }
}

/// A change seen by the watch, waiting to settle before it is applied.
#[derive(Debug, Default)]
pub struct Settle {
    /// The files as last seen changed, and since when they look so.
    seen: Option<(Watched, Instant)>,
}

impl Settle {
    /// One poll: whether the files, which were `applied` at the last reload,
    /// have changed and settled (see the module documentation) at `now`.
    pub fn poll(&mut self, applied: &Watched, now: Instant) -> bool {
        let current = applied.again();
        if current == *applied {
            self.seen = None;
            return false;
        }
        match &self.seen {
            Some((seen, since)) if *seen == current => {
                if current.finished() || now.duration_since(*since) >= UNFINISHED_SETTLE {
                    self.seen = None;
                    return true;
                }
                false
            }
            _ => {
                self.seen = Some((current, now));
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_or_a_fifo_is_looked_at_not_read() {
        let dir = tempfile::tempdir().unwrap();
        // Read, /dev/zero would fill the memory and a FIFO would block.
        let zero = dir.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.unwrap().success());
        for p in [zero, fifo] {
            let f = Fingerprint::of(&p);
            assert!(f.0.is_some_and(|(_, _, hash, _)| hash == 0), "{p:?}: {f:?}");
        }
    }

    #[test]
    fn a_change_of_content_size_or_existence_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sites.txt");
        std::fs::write(&p, "http://a.example/\n").unwrap();
        let first = Fingerprint::of(&p);
        assert_eq!(first, Fingerprint::of(&p));
        std::fs::write(&p, "http://b.example/\n").unwrap();
        assert_ne!(first, Fingerprint::of(&p), "same size, other content");
        std::fs::remove_file(&p).unwrap();
        assert_eq!(Fingerprint::of(&p), Fingerprint(None));
    }

    #[test]
    fn a_change_applies_once_it_looks_the_same_twice_or_longer_without_a_line_end() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sites.txt");
        std::fs::write(&p, "http://a.example/\n").unwrap();
        let applied = Watched {
            files: vec![(p.clone(), Fingerprint::of(&p))],
        };
        let (mut settle, t0) = (Settle::default(), Instant::now());
        assert!(!settle.poll(&applied, t0), "nothing changed");
        std::fs::write(&p, "http://a.example/\nhttp://b.example/\n").unwrap();
        assert!(!settle.poll(&applied, t0), "first seen");
        assert!(settle.poll(&applied, t0), "the same on the next poll");
        // Cut mid-line: waits UNFINISHED_SETTLE, however many polls.
        std::fs::write(&p, "http://a.example/\nhttp://b.ex").unwrap();
        let (mut settle, ms) = (Settle::default(), Duration::from_millis);
        assert!(!settle.poll(&applied, t0));
        assert!(!settle.poll(&applied, t0 + ms(300)));
        assert!(!settle.poll(&applied, t0 + UNFINISHED_SETTLE - ms(1)));
        // Written on meanwhile: starts again.
        std::fs::write(&p, "http://a.example/\nhttp://b.exam").unwrap();
        assert!(!settle.poll(&applied, t0 + UNFINISHED_SETTLE));
        let later = t0 + UNFINISHED_SETTLE * 2;
        assert!(!settle.poll(&applied, later - ms(1)));
        assert!(settle.poll(&applied, later), "unchanged for long enough");
    }
}
