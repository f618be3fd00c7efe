//! The `sites_file` reader: one url a line, or one JSON object a line with
//! the keys of `[[source.sites]]`, parsed into the same typed values.

use std::path::Path;

use connector_common::config::{ConfigError, Problem, MAX_PROBLEMS_SHOWN};

use crate::config::{SiteConfig, SiteUrl};

/// Largest `sites_file` read: a million sites of a few hundred bytes each fit
/// well below it; `/dev/zero` or a runaway file does not fill the memory.
pub const MAX_SITES_FILE_BYTES: u64 = 1 << 30;

/// Opens `sites_file`: a regular file of at most [`MAX_SITES_FILE_BYTES`]
/// (read a block at a time by [`each_line`], never whole).
pub fn open_sites_file(file: &Path) -> std::io::Result<std::fs::File> {
    let advice = "; split the sites over several instances (`shard`)";
    connector_common::files::open_regular(file, MAX_SITES_FILE_BYTES, advice)
}

/// How many lines of `f` (from where it is) have something besides white
/// space: an upper bound of its sites, to size lists once (a file of blank
/// lines sizes nothing); `f` is read to its end (at most
/// [`MAX_SITES_FILE_BYTES`]).
pub fn count_lines(f: &mut impl std::io::Read) -> std::io::Result<usize> {
    use std::io::Read;
    let mut f = f.take(MAX_SITES_FILE_BYTES);
    let mut block = vec![0u8; BLOCK];
    let (mut lines, mut content) = (0, false);
    loop {
        let n = f.read(&mut block)?;
        if n == 0 {
            return Ok(lines + usize::from(content));
        }
        for b in &block[..n] {
            match b {
                b'\n' => {
                    lines += usize::from(content);
                    content = false;
                }
                b' ' | b'\t' | b'\r' => {}
                _ => content = true,
            }
        }
    }
}

/// How much of a file [`each_line`] reads at a time; a longer line is not
/// read.
pub const BLOCK: usize = 1 << 20;

/// Why [`each_line`] stopped before the end of the file.
#[derive(Debug, thiserror::Error)]
pub enum LinesError {
    /// The file could not be read.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Not UTF-8, or a line longer than [`BLOCK`].
    #[error("line {0} is longer than {BLOCK} bytes or not UTF-8")]
    Unreadable(usize),
}

/// Reads `f` from where it is to its end (at most [`MAX_SITES_FILE_BYTES`])
/// a [`BLOCK`] at a time (never the whole file at once) and hands each line that defines a site (trimmed,
/// not blank, not a comment) to `each` with its 1-based line number, until
/// `each` says stop (`false`: then `Ok(false)`).
pub fn each_line(
    f: &mut impl std::io::Read,
    each: &mut dyn FnMut(usize, &str) -> bool,
) -> Result<bool, LinesError> {
    use std::io::Read;
    // A file that grows while it is read ends where a file may end.
    let mut f = f.take(MAX_SITES_FILE_BYTES);
    let mut block = vec![0u8; BLOCK];
    let (mut held, mut number) = (0, 0);
    loop {
        let read = f.read(&mut block[held..])?;
        let end = held + read;
        // The whole lines of the block (all of it at the end of the file).
        let whole = match block[..end].iter().rposition(|b| *b == b'\n') {
            Some(last) if read > 0 => last + 1,
            _ if read == 0 => end,
            _ if end == block.len() => return Err(LinesError::Unreadable(number + 1)),
            _ => {
                held = end;
                continue;
            }
        };
        let text = std::str::from_utf8(&block[..whole]).map_err(|e| {
            let before = &block[..e.valid_up_to()];
            LinesError::Unreadable(number + 1 + before.iter().filter(|b| **b == b'\n').count())
        })?;
        for raw in text.lines() {
            number += 1;
            let line = raw.trim();
            if !is_blank(line) && !each(number, line) {
                return Ok(false);
            }
        }
        if read == 0 {
            return Ok(true);
        }
        block.copy_within(whole..end, 0);
        held = end - whole;
    }
}

/// Reads `sites_file` (`f`, at `path`, for errors) from where it is, a
/// block at a time, handing each site to `add` with its 1-based line and
/// the line's text (trimmed) as it is parsed: blank lines and `#` comments
/// are skipped; a line starting with `{` is a JSON object with the per-site
/// keys, any other line is a url. Returns how many sites the file declared.
///
/// A line that cannot be used (or that `add` refuses with a
/// [`ConfigError::Invalid`] of this file) does not stop the reading: every
/// such line is reported, each with its line, the first
/// [`MAX_PROBLEMS_SHOWN`] kept and the rest counted, as the loader does. A
/// file that cannot be read on (not UTF-8, a line of more than [`BLOCK`]
/// bytes) stops it there.
pub fn for_each_site_line(
    f: &mut impl std::io::Read,
    path: &Path,
    mut add: impl FnMut(usize, &str, SiteConfig) -> Result<(), ConfigError>,
) -> Result<usize, ConfigError> {
    let mut found = 0;
    let mut problems: Vec<Problem> = Vec::new();
    let mut more = 0;
    let mut refused = |problem: Problem| {
        if problems.len() < MAX_PROBLEMS_SHOWN {
            problems.push(problem);
        } else {
            more += 1;
        }
    };
    let mut fatal = None;
    let read = each_line(f, &mut |n, line| {
        let invalid = |key: String, message: String| Problem {
            key,
            line: Some(n),
            message,
        };
        let site = match parse_line(line) {
            Ok(site) => site,
            Err((key, m)) => {
                refused(invalid(key, m));
                return true;
            }
        };
        match add(n, line, site) {
            Ok(()) => found += 1,
            Err(ConfigError::Invalid {
                path: p,
                key,
                line,
                message,
            }) if p == path => refused(Problem { key, line, message }),
            Err(other) => {
                fatal = Some(other);
                return false;
            }
        }
        true
    });
    if let Some(fatal) = fatal {
        return Err(fatal);
    }
    if let Err(e) = read {
        let line = match e {
            LinesError::Unreadable(line) => Some(line),
            LinesError::Io(_) => None,
        };
        refused(Problem {
            key: "source.sites_file".into(),
            line,
            message: format!("cannot read on: {e}; write the file as UTF-8 text, one site a line"),
        });
    }
    if problems.is_empty() {
        Ok(found)
    } else {
        Err(ConfigError::of(path, problems, more))
    }
}

/// One line of `sites_file` (trimmed, not blank, not a comment): a JSON
/// object or a url; the key and the message of a problem.
pub fn parse_line(line: &str) -> Result<SiteConfig, (String, String)> {
    if line.starts_with('{') {
        parse_site_json(line)
    } else {
        SiteUrl::parse(line)
            .map(SiteConfig::new)
            .map_err(|m| ("url".to_owned(), m))
    }
}

/// Whether a line of `sites_file`, trimmed, defines no site.
pub fn is_blank(line: &str) -> bool {
    line.is_empty() || line.starts_with('#')
}

/// The keys whose values are checked as they are parsed ([`crate::config::Pattern`],
/// [`crate::config::Method`], [`crate::config::RequestHeaders`]): a refusal of their value reads as it does in
/// `[[source.sites]]`, without the "not a site" advice meant for a line of
/// the wrong shape.
const VALUE_CHECKED_KEYS: [&str; 3] = ["regex", "method", "headers"];

/// Deserialises one JSON line, naming the key of a problem (the path to the
/// value that could not be used, e.g. `interval` or `expected_status[1]`).
pub(crate) fn parse_site_json(line: &str) -> Result<SiteConfig, (String, String)> {
    let explain = |message: &dyn std::fmt::Display| {
        format!("not a site: {message}; write {{\"url\": \"https://...\", ...}} with the keys of [[source.sites]]")
    };
    let mut de = serde_json::Deserializer::from_str(line);
    let site: SiteConfig = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let text = inner.to_string();
        if let Some(problem) = value_problem(&path, &inner, &text) {
            return (path, problem.to_owned());
        }
        let message = connector_common::config::friendly(&text);
        let named = |prefix: &str| {
            message
                .strip_prefix(prefix)
                .and_then(|r| r.split('`').next())
                .map(str::to_owned)
        };
        let key = named("unknown field `")
            .or_else(|| (path != ".").then(|| path.clone()))
            .or_else(|| named("missing field `"))
            .unwrap_or_else(|| "url".to_owned());
        (key, explain(&message))
    })?;
    de.end().map_err(|e| ("url".to_owned(), explain(&e)))?;
    Ok(site)
}

/// The refusal of a value-checked key's value (not of its type), without
/// serde_json's position: `text` is `inner`'s message.
fn value_problem<'t>(key: &str, inner: &serde_json::Error, text: &'t str) -> Option<&'t str> {
    if !VALUE_CHECKED_KEYS.contains(&key) || !inner.is_data() || text.starts_with("invalid type") {
        return None;
    }
    let position = format!(" at line {} column {}", inner.line(), inner.column());
    Some(text.strip_suffix(position.as_str()).unwrap_or(text))
}
