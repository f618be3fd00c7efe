//! Key paths: building them (`source.sites[2].interval`) and finding the line
//! where the file writes one, so every message can say `file:line`.

/// `prefix` and `rest` joined into one dotted path (`rest` may start with an
/// index, `[2]`, or be serde's `.` for "the value itself").
pub(crate) fn join_path(prefix: &str, rest: &str) -> String {
    let rest = if rest == "." { "" } else { rest };
    match (prefix.is_empty(), rest.is_empty()) {
        (true, _) => rest.to_owned(),
        (false, true) => prefix.to_owned(),
        (false, false) if rest.starts_with('[') => format!("{prefix}{rest}"),
        (false, false) => format!("{prefix}.{rest}"),
    }
}

/// 1-based line and column of byte `offset` in `text`.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// The line where the file writes `key` (a dotted path with `[i]` indexes),
/// or its deepest written parent. `None` when the file does not mention it
/// (a value that came from the environment, or a default).
pub fn locate(text: &str, key: &str) -> Option<usize> {
    Locator::new(text).line(key)
}

/// A file's text parsed once, to find the lines of many keys ([`locate`]
/// parses it for each).
pub(crate) struct Locator<'t> {
    /// Byte offsets of the text's newlines.
    newlines: Vec<usize>,
    root: Option<toml::de::DeTable<'t>>,
}

impl<'t> Locator<'t> {
    /// Parses `text`; a text that is not TOML has no lines to give.
    pub(crate) fn new(text: &'t str) -> Self {
        Self {
            newlines: text.match_indices('\n').map(|(at, _)| at).collect(),
            root: toml::de::DeTable::parse(text).ok().map(|r| r.into_inner()),
        }
    }

    /// What [`locate`] says about `key`.
    pub(crate) fn line(&self, key: &str) -> Option<usize> {
        use toml::de::{DeTable, DeValue};
        let root = self.root.as_ref()?;
        let mut best: Option<usize> = None;
        let mut current: Option<&DeValue<'_>> = None;
        let mut table: Option<&DeTable<'_>> = Some(root);
        let segments = split_key(key);
        for (at, segment) in segments.iter().enumerate() {
            match *segment {
                Segment::Key(k) => {
                    let t = match (table, current) {
                        (Some(t), _) => t,
                        (None, Some(DeValue::Table(t))) => t,
                        _ => break,
                    };
                    let Some((name, value)) = t.get_key_value(k) else {
                        // A quoted key with dots (`"linger.ms"` in
                        // `[kafka.options]`): the rest of the path is its name.
                        let rest: Vec<&str> = segments[at..]
                            .iter()
                            .map_while(|s| match s {
                                Segment::Key(k) => Some(*k),
                                Segment::Index(_) => None,
                            })
                            .collect();
                        if let Some((name, _)) = t.get_key_value(rest.join(".").as_str()) {
                            best = Some(self.line_at(name.span().start));
                        }
                        break;
                    };
                    best = Some(self.line_at(name.span().start));
                    current = Some(value.get_ref());
                    table = None;
                }
                Segment::Index(i) => {
                    let Some(DeValue::Array(items)) = current else {
                        break;
                    };
                    let Some(item) = items.get(i) else { break };
                    best = Some(self.line_at(item.span().start));
                    current = Some(item.get_ref());
                    table = None;
                }
            }
        }
        best
    }

    /// The 1-based line of byte `offset`.
    fn line_at(&self, offset: usize) -> usize {
        self.newlines.partition_point(|&n| n < offset) + 1
    }
}

enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

fn split_key(key: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    for part in key.split('.').filter(|p| !p.is_empty()) {
        let (name, mut idx) = match part.find('[') {
            Some(b) => (&part[..b], &part[b..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            out.push(Segment::Key(name));
        }
        while let Some(stripped) = idx.strip_prefix('[') {
            let end = stripped.find(']').unwrap_or(stripped.len());
            if let Ok(i) = stripped[..end].parse() {
                out.push(Segment::Index(i));
            }
            idx = stripped.get(end + 1..).unwrap_or("");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quoted_dotted_key_is_located_on_its_own_line() {
        let text = "[kafka]\nbrokers = \"k:1\"\n[kafka.options]\n\"acks\" = \"1\"\n\"linger.ms\" = \"soon\"\n";
        assert_eq!(locate(text, "kafka.options.linger.ms"), Some(5));
        assert_eq!(locate(text, "kafka.options.nope.x"), Some(3));
    }
}
