//! `reload_watch`: whether the configuration file or `sites_file` changed
//! on disk since the last reload, by polling (no file-notification API:
//! polling works the same on every filesystem, a bind mount or a Kubernetes
//! ConfigMap's symlink swap included).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use connector_common::config::Loaded;

use crate::config::SourceConfig;
use crate::hash::fnv1a;

/// Files up to this size are compared by content too, so an edit that keeps
/// the size within the filesystem's timestamp granularity is still seen.
const HASHED_BYTES: u64 = 4 << 20;

/// What identifies one version of a file: `None` when it cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint(Option<(SystemTime, u64, u64)>);

impl Fingerprint {
    /// The file at `path` as it is now.
    pub fn of(path: &Path) -> Self {
        let Ok(meta) = std::fs::metadata(path) else {
            return Fingerprint(None);
        };
        let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        let hash = if meta.len() <= HASHED_BYTES {
            std::fs::read(path).map(|b| fnv1a(&b)).unwrap_or_default()
        } else {
            0
        };
        Fingerprint(Some((modified, meta.len(), hash)))
    }
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

    /// Whether any of the files differs from what it was.
    pub fn changed(&self) -> bool {
        self.files.iter().any(|(p, f)| Fingerprint::of(p) != *f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
