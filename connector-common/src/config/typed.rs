//! Step 5 of loading: a TOML value deserialised into a typed struct, with
//! unknown keys refused and serde's error turned into the dotted path of the
//! key it is about and a message for an operator.

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

fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

/// serde's message, made for an operator: an unknown field says what to do;
/// a string of the wrong type is not repeated (it may be a secret written in
/// the wrong place, or huge); the whole is at most 1 KiB.
pub fn friendly(message: &str) -> String {
    let message = message.trim();
    // The toml crate appends the key it was reading (`\nin `sites.regex``);
    // the loader names the key already, with its full path.
    let message = match message.rfind("\nin `") {
        Some(at) if message.ends_with('`') => &message[..at],
        _ => message,
    };
    let message = if message.starts_with("unknown field") {
        format!("{message}; remove it or fix its spelling")
    } else if let (Some(what), Some(at)) = (
        ["invalid type", "invalid value"]
            .into_iter()
            .find(|w| message.starts_with(&format!("{w}: string "))),
        message.rfind(", expected"),
    ) {
        format!("{what}: a string{}", &message[at..])
    } else {
        message.to_owned()
    };
    truncate(&message, MAX_FOREIGN_TEXT_BYTES)
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
}
