//! [`FileIndex`]: what the last load knew of `sites_file`'s lines, so that
//! a reload resolves only the lines that changed.
//!
//! Each line of the file that defines a site is kept as a 128-bit hash of
//! its text and the 64-bit hash of its site's url ([`crate::hash::fnv1a`]
//! of the url as shown, the hash sharding and offsets already use): 24 bytes
//! a line, 24 MB for a million lines, in one vector sorted by the line's
//! hash, with a directory of the hashes' top bits (one step to the right
//! place; no hash map of a million boxed urls). Given the same
//! configuration (the [`fingerprint`] of everything but the file's lines),
//! a line of the same text resolves to the same site: a reload looks each
//! line up here and resolves only those not found.
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
    /// Sorted by `line`; no two alike.
    entries: Vec<Entry>,
    /// `dir[b]..dir[b + 1]`: the entries whose `line[0]` starts with the
    /// `bits` bits `b`.
    dir: Vec<u32>,
    /// How many top bits of `line[0]` the directory distinguishes (1..=32).
    bits: u32,
    /// The url hashes of `[[source.sites]]` (a line must not repeat one).
    inline: Vec<u64>,
}

impl FileIndex {
    /// The index of `entries` (any order) resolved with `config`, next to
    /// the `[[source.sites]]` of url hashes `inline`; `None` when two lines
    /// are alike or two urls have one hash (then none is kept).
    pub fn build(config: [u64; 2], mut entries: Vec<Entry>, inline: Vec<u64>) -> Option<Self> {
        entries.sort_unstable_by_key(|e| e.line);
        if entries.windows(2).any(|w| w[0].line == w[1].line) {
            return None;
        }
        let mut urls: Vec<u64> = entries
            .iter()
            .map(|e| e.url)
            .chain(inline.iter().copied())
            .collect();
        urls.sort_unstable();
        if urls.windows(2).any(|w| w[0] == w[1]) {
            return None;
        }
        drop(urls);
        entries.shrink_to_fit();
        Some(Self::sorted(config, entries, inline))
    }

    /// The index of `entries`, sorted by line and unique.
    fn sorted(config: [u64; 2], entries: Vec<Entry>, inline: Vec<u64>) -> Self {
        // About one entry per directory slot.
        let bits = (usize::BITS - entries.len().leading_zeros()).clamp(1, 32);
        let mut dir = Vec::with_capacity((1 << bits) + 1);
        let mut next = 0;
        for bucket in 0..(1u64 << bits) {
            while next < entries.len() && top(entries[next].line[0], bits) < bucket {
                next += 1;
            }
            dir.push(u32::try_from(next).unwrap_or(u32::MAX));
        }
        dir.push(u32::try_from(entries.len()).unwrap_or(u32::MAX));
        FileIndex {
            config,
            entries,
            dir,
            bits,
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

    /// Every line, in the index's order (the positions [`FileIndex::find`] gives).
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The url hashes of `[[source.sites]]`.
    pub fn inline(&self) -> &[u64] {
        &self.inline
    }

    /// The position of the line of hash `line`, if the file had it.
    pub fn find(&self, line: [u64; 2]) -> Option<usize> {
        let b = top(line[0], self.bits) as usize;
        let (from, to) = (self.dir[b] as usize, self.dir[b + 1] as usize);
        (from..to).find(|&i| self.entries[i].line == line)
    }

    /// The index after a reload: the lines at the positions `kept` marks
    /// (a bit a position), and `added` (lines not in this index, with urls
    /// no kept line has), under the same configuration.
    pub fn next(&self, kept: &[u64], mut added: Vec<Entry>) -> FileIndex {
        added.sort_unstable_by_key(|e| e.line);
        let is_kept = |i: usize| kept[i / 64] & (1 << (i % 64)) != 0;
        let count = (0..self.entries.len()).filter(|&i| is_kept(i)).count() + added.len();
        let mut entries = Vec::with_capacity(count);
        let mut added = added.into_iter().peekable();
        let kept_entries = (self.entries.iter().enumerate()).filter(|(i, _)| is_kept(*i));
        for (_, e) in kept_entries {
            while let Some(a) = added.next_if(|a| a.line < e.line) {
                entries.push(a);
            }
            entries.push(*e);
        }
        entries.extend(added);
        FileIndex::sorted(self.config, entries, self.inline.clone())
    }
}

/// The top `bits` bits of `h`.
fn top(h: u64, bits: u32) -> u64 {
    h >> (64 - bits)
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

    #[test]
    fn every_line_is_found_and_no_other() {
        let entries: Vec<Entry> = (0..10_000).map(entry).collect();
        let index = FileIndex::build([1, 2], entries.clone(), vec![]).unwrap();
        for e in &entries {
            let at = index.find(e.line).expect("a line of the file");
            assert_eq!(index.entries()[at], *e);
        }
        assert_eq!(index.find(line_hash("http://other.example/")), None);
        let empty = FileIndex::build([1, 2], vec![], vec![]).unwrap();
        assert_eq!(empty.find(entries[0].line), None);
    }

    #[test]
    fn two_urls_of_one_hash_or_two_alike_lines_build_no_index() {
        let mut twin = entry(2);
        twin.url = entry(1).url;
        assert!(FileIndex::build([0, 0], vec![entry(1), twin], vec![]).is_none());
        assert!(FileIndex::build([0, 0], vec![entry(1), entry(1)], vec![]).is_none());
        assert!(FileIndex::build([0, 0], vec![entry(1)], vec![entry(1).url]).is_none());
    }

    #[test]
    fn the_next_index_keeps_the_marked_lines_and_adds_the_new() {
        let index = FileIndex::build([7, 7], (0..1000).map(entry).collect(), vec![]).unwrap();
        // Every line but those of the even numbers under 100 kept.
        let mut kept = vec![0u64; index.len() / 64 + 1];
        let dropped: Vec<Entry> = (0..100).step_by(2).map(entry).collect();
        for i in 0..index.len() {
            if !dropped.contains(&index.entries()[i]) {
                kept[i / 64] |= 1 << (i % 64);
            }
        }
        let next = index.next(&kept, (1000..1010).map(entry).collect());
        assert_eq!(next.len(), 1000 - 50 + 10);
        assert_eq!(next.config(), [7, 7]);
        assert!(next.entries().windows(2).all(|w| w[0].line < w[1].line));
        for n in (0..1010).filter(|n| !(n % 2 == 0 && *n < 100)) {
            assert!(next.find(entry(n).line).is_some(), "{n}");
        }
        assert!(dropped.iter().all(|d| next.find(d.line).is_none()));
    }
}
