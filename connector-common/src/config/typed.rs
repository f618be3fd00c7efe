//! Step 5 of loading: a TOML value deserialised into a typed struct, with
//! unknown keys refused and serde's error turned into the dotted path of the
//! key it is about and a message for an operator.
//!
//! Values are parsed into their types as they are deserialised (a regex, a
//! url, a header), and serde stops at the first that fails. So when a value
//! fails, [`every_problem`] deserialises each key alone (a table holding only
//! that key: every field has a default), and each element of an array alone,
//! to report every problem, not only the first.

use serde::de::DeserializeOwned;

use crate::limits::{truncate, MAX_FOREIGN_TEXT_BYTES};
use crate::problem::Invalid;

use super::locate::join_path;

/// Deserialises `value` and turns an error into the dotted path of the key it is about.
pub(crate) fn from_value<T: DeserializeOwned>(
    value: toml::Value,
    prefix: &str,
) -> Result<T, Invalid> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.inner().to_string();
        let mut key = join_path(prefix, &e.path().to_string());
        // serde names an unknown field only in its message; point at it.
        if let Some(field) = unknown_field(&inner) {
            if !key.ends_with(field) {
                key = join_path(&key, field);
            }
        }
        Invalid::new(key, friendly(&inner))
    })
}

/// How deep [`every_problem`] looks for the keys that fail alone; past it,
/// the first problem below stands for the others.
const MAX_DEPTH: usize = 8;

/// One step of a key path: a key of a table or an index of an array.
enum Step {
    Key(String),
    Index(usize),
}

/// Deserialises `value` or returns every key that cannot be used (at least one).
///
/// When `value` fails as a whole, each key of a failing table is tried alone
/// (in a copy of `value` holding only it), each element of a failing array
/// alone (its index put back into the key path), deeper while a part fails;
/// a problem the parts do not show alone (one about the keys together) is
/// reported as the whole said it. A refusal caused only by leaving the other
/// keys out (a required field missing) is not a problem of the key tried.
pub(crate) fn every_problem<T: DeserializeOwned>(
    value: toml::Value,
    prefix: &str,
) -> Result<T, Vec<Invalid>> {
    let first = match from_value::<T>(value.clone(), prefix) {
        Ok(parsed) => return Ok(parsed),
        Err(first) => first,
    };
    let mut out = Vec::new();
    explore::<T>(prefix, &mut Vec::new(), &value, first, &mut out);
    Err(out)
}

/// Adds the problems of `node` (at `steps` below the root) to `out`: those its
/// parts show alone, else `first`, the problem `node` shows as a whole.
fn explore<T: DeserializeOwned>(
    prefix: &str,
    steps: &mut Vec<Step>,
    node: &toml::Value,
    first: Invalid,
    out: &mut Vec<Invalid>,
) {
    let before = out.len();
    let at = path_of(prefix, steps, false);
    if first.key != at && within(&first.key, &at) && steps.len() < MAX_DEPTH {
        let mut try_part = |steps: &mut Vec<Step>, part: &toml::Value| {
            if let Some(problem) = alone::<T>(prefix, steps, part) {
                explore::<T>(prefix, steps, part, problem, out);
            }
        };
        match node {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    steps.push(Step::Key(k.clone()));
                    try_part(steps, v);
                    steps.pop();
                }
            }
            toml::Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    steps.push(Step::Index(i));
                    try_part(steps, v);
                    steps.pop();
                }
            }
            _ => {}
        }
    }
    if out.len() == before {
        out.push(first);
    }
}

/// The problem of `part` (at `steps`) deserialised alone: in a root holding
/// only it, each array on the way holding only it. `None` when it can be
/// used, or when the refusal is about a parent (what leaving the other keys
/// out causes).
fn alone<T: DeserializeOwned>(prefix: &str, steps: &[Step], part: &toml::Value) -> Option<Invalid> {
    let mut candidate = part.clone();
    for step in steps.iter().rev() {
        candidate = match step {
            Step::Key(k) => toml::Value::Table(toml::Table::from_iter([(k.clone(), candidate)])),
            Step::Index(_) => toml::Value::Array(vec![candidate]),
        };
    }
    let problem = from_value::<T>(candidate, prefix).err()?;
    let in_candidate = path_of(prefix, steps, true);
    let rest = problem.key.strip_prefix(in_candidate.as_str())?;
    if !(rest.is_empty() || rest.starts_with('.') || rest.starts_with('[')) {
        return None;
    }
    Some(Invalid::new(
        format!("{}{rest}", path_of(prefix, steps, false)),
        problem.message,
    ))
}

/// The dotted key path of `steps` below `prefix`; with `zeroed`, every index
/// 0 (as in a candidate of [`alone`]).
fn path_of(prefix: &str, steps: &[Step], zeroed: bool) -> String {
    steps
        .iter()
        .fold(prefix.to_owned(), |path, step| match step {
            Step::Key(k) => join_path(&path, k),
            Step::Index(i) => format!("{path}[{}]", if zeroed { 0 } else { *i }),
        })
}

/// Whether `key` is `path` or below it.
fn within(key: &str, path: &str) -> bool {
    path.is_empty()
        || key
            .strip_prefix(path)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
}

fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

/// serde's message, made for an operator: an unknown field says what to do;
/// a refused value is not repeated, only its kind (`invalid type: an
/// integer, expected …`: it may be a secret written in the wrong place, or
/// huge); the whole is at most 1 KiB.
pub fn friendly(message: &str) -> String {
    let message = message.trim();
    // The toml crate appends the key it was reading (`\nin `sites.regex``);
    // the loader names the key already, with its full path.
    let message = match message.rfind("\nin `") {
        Some(at) if message.ends_with('`') => &message[..at],
        _ => message,
    };
    let mut message = if message.starts_with("unknown field") {
        format!("{message}; remove it or fix its spelling")
    } else if let Some(without) = without_value(message) {
        without
    } else {
        message.to_owned()
    };
    if message.ends_with("expected a duration") {
        message.push_str(
            r#"; write a number and a unit in a string, e.g. "250ms", "30s", "5m", "2h" or "7d""#,
        );
    }
    let expected = |types: &[&str]| {
        types
            .iter()
            .any(|t| message.ends_with(&format!("expected {t}")))
    };
    if expected(&["u8", "u16", "u32", "u64", "usize"]) {
        message.push_str("; give a whole number, 0 or more, without quotes (e.g. 3)");
    } else if expected(&["i8", "i16", "i32", "i64", "isize"]) {
        message.push_str("; give a whole number without quotes (e.g. 3)");
    }
    if message.starts_with("missing field `") {
        message.push_str(
            "; add it to this table (docs/configuration-reference.md says what it takes)",
        );
    }
    truncate(&message, MAX_FOREIGN_TEXT_BYTES)
}

/// serde's names of what it was given (`serde::de::Unexpected`), each as
/// an operator would say it, without the value.
const KINDS: [(&str, &str); 12] = [
    ("integer", "an integer"),
    ("floating point", "a float"),
    ("boolean", "a boolean"),
    ("string", "a string"),
    ("character", "a character"),
    ("byte array", "bytes"),
    ("unit value", "an empty value"),
    ("Option value", "an optional value"),
    ("sequence", "an array"),
    ("map", "a table"),
    ("newtype struct", "a value"),
    ("enum", "a value"),
];

/// `invalid type: <what was given>, expected …` (or `invalid value: …`)
/// with what was given named by its kind only; `None` for other messages.
fn without_value(message: &str) -> Option<String> {
    let (what, rest) = ["invalid type", "invalid value"]
        .into_iter()
        .find_map(|w| Some((w, message.strip_prefix(w)?.strip_prefix(": ")?)))?;
    let at = rest.rfind(", expected")?;
    let given = &rest[..at];
    let kind = KINDS
        .iter()
        .find(|(name, _)| {
            given
                .strip_prefix(name)
                .is_some_and(|r| r.is_empty() || r.starts_with(' '))
        })
        .map_or("a value", |(_, said)| said);
    Some(format!("{what}: {kind}{}", &rest[at..]))
}

#[cfg(test)]
mod tests {
    use super::friendly;

    #[test]
    fn the_key_the_toml_crate_appends_is_not_repeated() {
        assert_eq!(
            friendly("does not compile: unclosed group\nin `sites.regex`"),
            "does not compile: unclosed group"
        );
        assert_eq!(friendly("a `b`"), "a `b`");
    }

    #[test]
    fn a_duration_that_does_not_parse_says_how_to_write_one() {
        assert_eq!(
            friendly("invalid value: string \"abc\", expected a duration"),
            r#"invalid value: a string, expected a duration; write a number and a unit in a string, e.g. "250ms", "30s", "5m", "2h" or "7d""#
        );
    }

    #[test]
    fn a_number_of_the_wrong_kind_and_a_missing_key_say_what_to_do() {
        assert_eq!(
            friendly("invalid value: integer `-1`, expected u32"),
            "invalid value: an integer, expected u32; give a whole number, 0 or more, without quotes (e.g. 3)"
        );
        assert_eq!(
            friendly("missing field `urls`"),
            "missing field `urls`; add it to this table (docs/configuration-reference.md says what it takes)"
        );
    }

    #[test]
    fn a_refused_value_of_any_kind_is_not_repeated() {
        for (given, kind) in [
            ("integer `12345678`", "an integer"),
            ("integer `-42`", "an integer"),
            ("floating point `1234.5678`", "a float"),
            ("boolean `true`", "a boolean"),
            ("string \"hunter2\"", "a string"),
            ("character `h`", "a character"),
            ("sequence", "an array"),
            ("map", "a table"),
            ("byte array", "bytes"),
            ("unit value", "an empty value"),
            ("whatever 12345678", "a value"),
        ] {
            for what in ["invalid type", "invalid value"] {
                let said = friendly(&format!("{what}: {given}, expected a string"));
                assert_eq!(
                    said,
                    format!("{what}: {kind}, expected a string"),
                    "{given}"
                );
            }
        }
    }

    #[test]
    fn a_secret_of_the_wrong_type_in_a_file_is_not_repeated() {
        use super::from_value;
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct S {
            password: Option<String>,
            count: Option<u32>,
            headers: Option<std::collections::BTreeMap<String, String>>,
        }
        for text in [
            "password = 12345678",
            "password = 1234.5678",
            "password = true",
            "count = 1979-05-27T07:32:00Z",
            "count = 1979-05-27",
            "password = [12345678]",
            "password = { x = 12345678 }",
            "headers.Authorization = 12345678",
        ] {
            let value: toml::Value = toml::from_str(text).unwrap();
            let problem = from_value::<S>(value, "").unwrap_err();
            assert!(
                problem.message.starts_with("invalid type: ")
                    && !problem.message.contains("1234")
                    && !problem.message.contains("true")
                    && !problem.message.contains("1979"),
                "{text}: {problem}"
            );
        }
    }
}
