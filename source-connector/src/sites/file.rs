//! The `sites_file` reader: one url a line, or one JSON object a line with
//! the keys of `[[source.sites]]`, parsed into the same typed values.

use std::path::Path;

use connector_common::config::{ConfigError, Problem, MAX_PROBLEMS_SHOWN};

use crate::config::{SiteConfig, SiteUrl};

/// Largest `sites_file` read: a million sites of a few hundred bytes each fit
/// well below it; `/dev/zero` or a runaway file does not fill the memory.
pub const MAX_SITES_FILE_BYTES: u64 = 1 << 30;

/// Reads `sites_file`: a regular file of at most [`MAX_SITES_FILE_BYTES`].
pub fn read_sites_file(file: &Path) -> std::io::Result<String> {
    use std::io::{Error, ErrorKind, Read};
    let f = std::fs::File::open(file)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(Error::new(ErrorKind::InvalidInput, "not a regular file"));
    }
    // Sized from the start: a growing string would copy itself and hold up
    // to twice the file.
    let size = usize::try_from(meta.len().min(MAX_SITES_FILE_BYTES)).unwrap_or(0);
    let mut text = String::with_capacity(size + 1);
    f.take(MAX_SITES_FILE_BYTES + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_SITES_FILE_BYTES {
        return Err(Error::new(
            ErrorKind::InvalidData,
            format!("larger than {MAX_SITES_FILE_BYTES} bytes; split the sites over several instances (`shard`)"),
        ));
    }
    Ok(text)
}

/// Parses the text of `sites_file` (at `path`, for errors), handing each
/// site to `add` with its 1-based line and the line's text (trimmed) as it
/// is parsed: blank lines and `#`
/// comments are skipped; a line starting with `{` is a JSON object with the
/// per-site keys, any other line is a url. Returns how many sites the file
/// declared.
///
/// A line that cannot be used (or that `add` refuses with a
/// [`ConfigError::Invalid`] of this file) does not stop the reading: every
/// such line is reported, each with its line, the first
/// [`MAX_PROBLEMS_SHOWN`] kept and the rest counted, as the loader does.
pub fn for_each_site_line(
    text: &str,
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
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if is_blank(line) {
            continue;
        }
        let invalid = |key: String, message: String| Problem {
            key,
            line: Some(n + 1),
            message,
        };
        let site = parse_line(line).map_err(|(key, m)| invalid(key, m));
        let site = match site {
            Ok(site) => site,
            Err(problem) => {
                refused(problem);
                continue;
            }
        };
        match add(n + 1, line, site) {
            Ok(()) => found += 1,
            Err(ConfigError::Invalid {
                path: p,
                key,
                line,
                message,
            }) if p == path => refused(Problem { key, line, message }),
            Err(other) => return Err(other),
        }
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
