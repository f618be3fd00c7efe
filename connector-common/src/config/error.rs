//! Why a configuration cannot be used, as the operator reads it: one problem
//! or several, each `file:line: key `k`: message`, with control and
//! invisible format characters escaped.

use std::path::{Path, PathBuf};

use crate::limits::{truncate, MAX_FOREIGN_TEXT_BYTES};
use crate::problem::Invalid;

use super::locate;

/// A configuration that cannot be used. Its `Display` is the message an
/// operator reads.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No file was given and none of the default places has one.
    #[error("no configuration file found (tried {}); pass --config PATH or create ./connector.toml", fmt_paths(.tried))]
    NotFound {
        /// The paths looked at, in order.
        tried: Vec<PathBuf>,
    },
    /// The file could not be read.
    #[error("{}: cannot read configuration file: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("{}:{line}:{column}: not valid TOML: {message}", .path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the parser said.
        message: String,
    },
    /// A key has a value that cannot be used, or is not a known key.
    #[error("{}", fmt_problem(.path, .key, *.line, .message))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Dotted key path, e.g. `source.sites[2].interval`.
        key: String,
        /// 1-based line where the key (or its closest parent) is written, when known.
        line: Option<usize>,
        /// What is wrong and what to do.
        message: String,
    },
    /// More than one key cannot be used: every problem, one line each
    /// (`file:line: key `k`: message`), in the order of their lines. The
    /// first line is what [`ConfigError::Invalid`] would say about the first
    /// problem alone. At most [`MAX_PROBLEMS_SHOWN`] are shown, the rest counted.
    #[error("{}", fmt_several(.path, .problems, *.more))]
    Several {
        /// The file.
        path: PathBuf,
        /// The problems kept (with `more`, at least two).
        problems: Vec<Problem>,
        /// How many more were found and not kept (a reader that stops
        /// keeping problems past those shown, such as `sites_file`'s).
        more: usize,
    },
}

/// One key of a file that cannot be used, located: an item of
/// [`ConfigError::Several`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path, e.g. `source.sites[2].interval`.
    pub key: String,
    /// 1-based line where the key (or its closest parent) is written, when known.
    pub line: Option<usize>,
    /// What is wrong and what to do.
    pub message: String,
}

/// Most problems [`ConfigError::Several`] prints; the rest are counted.
pub const MAX_PROBLEMS_SHOWN: usize = 20;

impl ConfigError {
    /// The error for `problems` (at least one) found in `text`, the file at
    /// `path`: each located, and bounded like any other text of the file.
    /// They are put in the order of their lines (those without a line last).
    pub fn located(path: &Path, text: &str, problems: Vec<Invalid>) -> Self {
        let lines = locate::Locator::new(text);
        let mut problems: Vec<Problem> = problems
            .into_iter()
            .map(|i| Problem {
                line: lines.line(&i.key),
                // A key is the file's own text: bounded like any other.
                key: truncate(&i.key, 256),
                message: truncate(&i.message, MAX_FOREIGN_TEXT_BYTES),
            })
            .collect();
        problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
        Self::of(path, problems, 0)
    }

    /// The error for `problems` (with `more`, at least one) of the file at
    /// `path`, already located; `more` counts those found and not kept.
    pub fn of(path: &Path, mut problems: Vec<Problem>, more: usize) -> Self {
        if problems.len() == 1 && more == 0 {
            let Problem { key, line, message } = problems.remove(0);
            return ConfigError::Invalid {
                path: path.to_path_buf(),
                key,
                line,
                message,
            };
        }
        ConfigError::Several {
            path: path.to_path_buf(),
            problems,
            more,
        }
    }
}

fn fmt_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `path:line: key `key`: message`, the line left out when unknown.
fn fmt_problem(path: &Path, key: &str, line: Option<usize>, message: &str) -> String {
    let line = line.map(|l| format!(":{l}")).unwrap_or_default();
    format!(
        "{}{line}: key `{}`: {}",
        path.display(),
        printable(key),
        printable(message)
    )
}

fn fmt_several(path: &Path, problems: &[Problem], more: usize) -> String {
    let mut lines: Vec<String> = problems
        .iter()
        .take(MAX_PROBLEMS_SHOWN)
        .map(|p| fmt_problem(path, &p.key, p.line, &p.message))
        .collect();
    let not_shown = problems.len().saturating_sub(MAX_PROBLEMS_SHOWN) + more;
    if not_shown > 0 {
        lines.push(format!(
            "{}: {not_shown} more problems not shown; fix the ones above and check again",
            path.display(),
        ));
    }
    lines.join("\n")
}

/// `text` with its control characters (`\u{1b}`) and invisible format
/// characters (Unicode category Cf: bidi overrides such as `\u{202e}`,
/// zero-width characters such as `\u{200b}`) escaped: a key or value quoted
/// in a message must not drive the operator's terminal, nor read as other
/// text than it is.
pub(super) fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else if is_format_char(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether `c` is of Unicode category Cf (format: invisible, yet changing
/// how the text around it is shown), as of Unicode 15.
fn is_format_char(c: char) -> bool {
    matches!(
        c,
        '\u{ad}'
            | '\u{600}'..='\u{605}'
            | '\u{61c}'
            | '\u{6dd}'
            | '\u{70f}'
            | '\u{890}'..='\u{891}'
            | '\u{8e2}'
            | '\u{180e}'
            | '\u{200b}'..='\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206f}'
            | '\u{feff}'
            | '\u{fff9}'..='\u{fffb}'
            | '\u{110bd}'
            | '\u{110cd}'
            | '\u{13430}'..='\u{1343f}'
            | '\u{1bca0}'..='\u{1bca3}'
            | '\u{1d173}'..='\u{1d17a}'
            | '\u{e0001}'
            | '\u{e0020}'..='\u{e007f}'
    )
}
