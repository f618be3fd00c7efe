//! [`FileIndex`]: what the last load knew of `sites_file`'s lines, so that
//! a reload resolves only the lines that changed.
//!
//! Each line of the file that defines a site is kept as a 128-bit hash of
//! its text and the 64-bit hash of its site's url ([`crate::hash::fnv1a`]
//! of the url as shown, the hash sharding and offsets already use): 24 bytes
//! a line, 24 MB for a million lines, in the file's order (no hash map of a
//! million boxed urls). Given the same configuration (the [`fingerprint`]
//! of everything but the file's lines), a line of the same text resolves to
//! the same site. A reload walks the new file and the index side by side
//! ([`Cursor`]): a line that is the next entry, or one a little further
//! (lines removed in between), runs as it is; any other line is parsed and
//! resolved as at start — a new or changed line, or one moved far, whose
//! site the check threads then find unchanged.
//!
//! Two different lines have the same 128-bit hash with a chance of about
//! 10⁻²⁷ in a million-line file. Two different urls may have the same
//! 64-bit hash (about 3 × 10⁻⁸ for a million urls): then no index is built
//! ([`FileIndex::build`] gives `None`) and every reload resolves the whole
//! file, as without an index.

use connector_common::config::Loaded;
use siphasher::sip128::SipHasher13;

use crate::config::SourceConfig;

/// The 128-bit hash of a line's text (the line trimmed, as it is read).
pub fn line_hash(line: &str) -> [u64; 2] {
    let h = SipHasher13::new().hash(line.as_bytes());
    [h.h1, h.h2]
}

/// The hash of everything in `loaded` that a site of `sites_file` is
/// resolved with: the whole `[source]` section as it serialises, and the
/// `[[source.sites]]` urls as requested (their passwords are masked in the
/// serialised form). `None` when it does not serialise.
pub fn fingerprint(loaded: &Loaded<SourceConfig>) -> Option<[u64; 2]> {
    let mut text = serde_json::to_vec(&loaded.section).ok()?;
    for site in &loaded.section.sites {
        text.push(b'\n');
        text.extend_from_slice(site.url.request().as_str().as_bytes());
    }
    text.push(b'\n');
    text.extend_from_slice(loaded.path.to_string_lossy().as_bytes());
    let h = SipHasher13::new().hash(&text);
    Some([h.h1, h.h2])
}

/// One line of the file: its text's hash and its url's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// [`line_hash`] of the line.
    pub line: [u64; 2],
    /// [`crate::hash::fnv1a`] of the site's url (as shown).
    pub url: u64,
}

/// The lines of a `sites_file` as the last successful load read them.
#[derive(Debug)]
pub struct FileIndex {
    /// [`fingerprint`] of the configuration they were resolved with.
    config: [u64; 2],
    /// In the file's order; no two urls alike.
    entries: Vec<Entry>,
    /// The url hashes of `[[source.sites]]` (a line must not repeat one).
    inline: Vec<u64>,
}

impl FileIndex {
    /// The index of `entries` (in the file's order) resolved with `config`,
    /// next to the `[[source.sites]]` of url hashes `inline`; `None` when two
    /// urls have one hash (then none is kept).
    pub fn build(config: [u64; 2], mut entries: Vec<Entry>, inline: Vec<u64>) -> Option<Self> {
        let mut urls: Vec<u64> = (entries.iter().map(|e| e.url))
            .chain(inline.iter().copied())
            .collect();
        urls.sort_unstable();
        if urls.windows(2).any(|w| w[0] == w[1]) {
            return None;
        }
        drop(urls);
        entries.shrink_to_fit();
        Some(Self::new(config, entries, inline))
    }

    /// The index of `entries`, known to have no two urls alike.
    pub(super) fn new(config: [u64; 2], entries: Vec<Entry>, inline: Vec<u64>) -> Self {
        FileIndex {
            config,
            entries,
            inline,
        }
    }

    /// The configuration's fingerprint the lines were resolved with.
    pub fn config(&self) -> [u64; 2] {
        self.config
    }

    /// How many lines it holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds no line.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every line, in the file's order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The url hashes of `[[source.sites]]`.
    pub fn inline(&self) -> &[u64] {
        &self.inline
    }
}

/// How far past the next entry a line is looked for at once: lines removed
/// in between (64 entries: 1.5 KiB, read in order).
const WINDOW: usize = 64;

/// Where a reload is in the index while it walks the new file.
#[derive(Debug)]
pub struct Cursor {
    /// The next entry expected.
    next: usize,
    /// Lines in a row not found near `next`.
    misses: usize,
    /// After this many misses in a row, the rest of the index is searched
    /// for the line (doubled after each search that finds nothing, so new
    /// lines in a row cost a few searches, not one each).
    patience: usize,
}

impl Default for Cursor {
    fn default() -> Self {
        Cursor {
            next: 0,
            misses: 0,
            patience: 4,
        }
    }
}

impl Cursor {
    /// The position in `index` of the line of hash `line`, looked for at
    /// the next entry, a little further, or (after several lines in a row
    /// not found) in the rest of the index; `None`: a line to parse.
    pub fn find(&mut self, index: &FileIndex, line: [u64; 2]) -> Option<usize> {
        let entries = index.entries();
        let near = entries.get(self.next..).unwrap_or_default();
        let within = near.len().min(WINDOW);
        let mut at = near[..within].iter().position(|e| e.line == line);
        if at.is_none() {
            self.misses += 1;
            if self.misses < self.patience {
                return None;
            }
            at = near.iter().position(|e| e.line == line);
            if at.is_none() {
                self.patience = self.patience.saturating_mul(2);
                self.misses = 0;
                return None;
            }
        }
        let i = self.next + at?;
        (self.next, self.misses, self.patience) = (i + 1, 0, 4);
        Some(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u64) -> Entry {
        Entry {
            line: line_hash(&format!("http://s{n}.example/")),
            url: crate::hash::fnv1a(format!("http://s{n}.example/").as_bytes()),
        }
    }

    fn index(n: std::ops::Range<u64>) -> FileIndex {
        FileIndex::build([1, 2], n.map(entry).collect(), vec![]).unwrap()
    }

    #[test]
    fn two_urls_of_one_hash_build_no_index() {
        let mut twin = entry(2);
        twin.url = entry(1).url;
        assert!(FileIndex::build([0, 0], vec![entry(1), twin], vec![]).is_none());
        assert!(FileIndex::build([0, 0], vec![entry(1)], vec![entry(1).url]).is_none());
    }

    #[test]
    fn the_cursor_finds_lines_in_order_after_removed_ones_and_far_ahead() {
        let index = index(0..10_000);
        let mut c = Cursor::default();
        let mut found = |n: u64| c.find(&index, entry(n).line);
        assert_eq!(found(0), Some(0));
        // Lines 1..=10 removed: found a little further.
        assert_eq!(found(11), Some(11));
        // A new line, then the next one in order.
        assert_eq!(found(20_000), None);
        assert_eq!(found(12), Some(12));
        // Lines behind are not found again (a line twice is parsed).
        assert_eq!(found(5), None);
        // Thousands removed: a few lines are parsed, then the rest found.
        let far: Vec<Option<usize>> = (5_000..5_010).map(&mut found).collect();
        assert!(far.iter().filter(|f| f.is_none()).count() <= 3, "{far:?}");
        assert!(
            far[3..].iter().zip(5_003..).all(|(f, n)| *f == Some(n)),
            "{far:?}"
        );
    }

    #[test]
    fn new_lines_in_a_row_search_the_rest_ever_more_rarely() {
        let index = index(0..100);
        let mut c = Cursor::default();
        for n in 1_000..2_000 {
            assert_eq!(c.find(&index, entry(n).line), None);
        }
        assert!(c.patience >= 512, "{c:?}");
        assert_eq!(c.find(&index, entry(0).line), Some(0));
        assert_eq!(c.patience, 4);
    }
}
