//! Steps 3 and 4 of loading: `${VAR}` and `${VAR:-default}` expanded in every
//! string value the binary reads, then the seed's environment variables
//! applied over the file.

use crate::problem::Invalid;

use super::locate::join_path;

/// Expands `${VAR}` and `${VAR:-default}` in every string of `table` but
/// those under its keys named in `skip` (left as written); one problem per
/// string that cannot be expanded.
pub(crate) fn expand_table(
    table: &mut toml::Table,
    prefix: &str,
    skip: &[&str],
    env: &dyn Fn(&str) -> Option<String>,
    out: &mut Vec<Invalid>,
) {
    for (k, v) in table.iter_mut() {
        if !skip.contains(&k.as_str()) {
            expand_value(v, &join_path(prefix, k), env, out);
        }
    }
}

fn expand_value(
    value: &mut toml::Value,
    key: &str,
    env: &dyn Fn(&str) -> Option<String>,
    out: &mut Vec<Invalid>,
) {
    match value {
        toml::Value::String(s) => match expand(s, env) {
            Ok(expanded) => *s = expanded,
            Err(m) => out.push(Invalid::new(key, m)),
        },
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_value(item, &format!("{key}[{i}]"), env, out);
            }
        }
        toml::Value::Table(t) => expand_table(t, key, &[], env, out),
        _ => {}
    }
}

/// Expands `${VAR}` / `${VAR:-default}` in `input`; `$$` is a literal `$`.
pub fn expand(input: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or_else(|| format!("`${{` without a closing `}}` in \"{input}\""))?;
            out.push_str(&lookup(&body[..end], env)?);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The value of one `NAME` or `NAME:-default` reference.
fn lookup(expr: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let (name, default) = match expr.split_once(":-") {
        Some((n, d)) => (n, Some(d)),
        None => (expr, None),
    };
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "`${{{expr}}}` is not a variable reference; write ${{NAME}} or ${{NAME:-default}}"
        ));
    }
    match (env(name).filter(|v| !v.is_empty()), default) {
        (Some(v), _) => Ok(v),
        (None, Some(d)) => Ok(d.to_owned()),
        (None, None) => Err(format!(
            "environment variable `{name}` is not set; set it, or write ${{{name}:-default}}"
        )),
    }
}

/// One environment variable overriding one key: the key's path, the variable.
pub(crate) type Override = (&'static [&'static str], &'static str);

/// Sets each key of `overrides` whose variable is set (and not empty).
pub(crate) fn apply_env_overrides(
    table: &mut toml::Table,
    overrides: &[Override],
    env: &dyn Fn(&str) -> Option<String>,
) {
    for (path, var) in overrides {
        if let Some(v) = env(var).filter(|v| !v.is_empty()) {
            set_path(table, path, toml::Value::String(v));
        }
    }
}

fn set_path(table: &mut toml::Table, path: &[&str], value: toml::Value) {
    let (last, parents) = path.split_last().expect("non-empty path");
    let mut cur = table;
    for p in parents {
        let entry = cur
            .entry((*p).to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match entry {
            toml::Value::Table(t) => cur = t,
            // A scalar where a table belongs: deserialisation reports it.
            _ => return,
        }
    }
    cur.insert((*last).to_owned(), value);
}
