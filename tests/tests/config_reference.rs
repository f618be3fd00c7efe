//! The configuration reference, `docs/configuration-reference.md`, generated
//! from the config types, so the docs cannot drift from the code.
//!
//! A plain `cargo test` rebuilds the reference and fails when the checked-in
//! file differs; `UPDATE_DOCS=1` rewrites it instead:
//!
//! ```sh
//! UPDATE_DOCS=1 cargo test -p website-monitor-tests --test config_reference
//! ```
//!
//! Where each fact comes from:
//! - keys, types and meanings: the config structs (found by name in any `.rs`
//!   file under the three crates' `src/`), their fields, `///` docs and
//!   `#[serde(...)]` attributes (`rename`, `rename_all`, `default`, `flatten`,
//!   `skip`);
//! - defaults: an empty section loaded through [`load_str`] and serialised
//!   back, so a default shown is the one the loader applies;
//! - accepted ranges of numbers and durations: found by loading values
//!   around the default until the loader refuses them;
//! - environment variables: each of the seed's variables set alone, and the
//!   key it changed (or the key named by the loader's refusal) noted.
//!
//! The other tests here fail when a field has no doc comment, when a doc
//! comment claims an environment variable that does not override its key, and
//! when `connector.toml`, `pipelines/*.toml` or a ```` ```toml ```` block of
//! the docs writes a key (even in a commented-out `# key = value` line) that
//! does not exist, or when README or docs name a dotted key in backticks
//! (`` `source.threads` ``) that does not exist.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use connector_common::config::{load_str, Section};
use syn::meta::ParseNestedMeta;
use website_monitor_sink::SinkConfig;
use website_monitor_source::SourceConfig;

/// Where the generated reference lives, relative to the repository root.
const REFERENCE: &str = "docs/configuration-reference.md";

/// The crates whose `src/` holds the config types.
const CRATES: [&str; 3] = ["connector-common", "source-connector", "sink-connector"];

/// The seed's environment variables.
const SEED_VARS: [&str; 7] = connector_common::config::SEED_ENV_VARS;

/// One table of the file and the struct that declares its keys.
struct TableSpec {
    /// Dotted path of the table (`""` for the top level).
    path: &'static str,
    /// The struct, found by name.
    strukt: &'static str,
    /// How the file writes the table.
    heading: &'static str,
    /// Which binary reads it (for loading defaults and probing values).
    section: Section,
}

const TABLES: [TableSpec; 8] = [
    TableSpec {
        path: "",
        strukt: "TopLevel",
        heading: "Top level",
        section: Section::Sink,
    },
    TableSpec {
        path: "kafka",
        strukt: "KafkaConfig",
        heading: "`[kafka]`",
        section: Section::Sink,
    },
    TableSpec {
        path: "source",
        strukt: "SourceConfig",
        heading: "`[source]`",
        section: Section::Source,
    },
    TableSpec {
        path: "source.sites",
        strukt: "SiteConfig",
        heading: "`[[source.sites]]`",
        section: Section::Source,
    },
    TableSpec {
        path: "sink",
        strukt: "SinkConfig",
        heading: "`[sink]`",
        section: Section::Sink,
    },
    TableSpec {
        path: "sink.status",
        strukt: "StatusConfig",
        heading: "`[sink.status]`",
        section: Section::Sink,
    },
    TableSpec {
        path: "sink.status.rules",
        strukt: "StatusRuleConfig",
        heading: "`[[sink.status.rules]]`",
        section: Section::Sink,
    },
    TableSpec {
        path: "sink.status.maintenance",
        strukt: "MaintenanceConfig",
        heading: "`[[sink.status.maintenance]]`",
        section: Section::Sink,
    },
];

/// The arrays of tables (`[[...]]`): the reference shows their keys as
/// `source.sites[].url`, and the smallest file holds one entry of each
/// (so their defaults and ranges can be read and probed in it).
const ARRAY_TABLES: [&str; 3] = [
    "source.sites",
    "sink.status.rules",
    "sink.status.maintenance",
];

/// The smallest `[source]` the loader accepts: one site.
const SITE_URL: &str = "https://example.com/";

// ---------------------------------------------------------------------------
// Reading the source.

/// The items of the three crates, by name (a name may be declared twice).
#[derive(Default)]
struct Items {
    structs: BTreeMap<String, Vec<syn::ItemStruct>>,
    enums: BTreeMap<String, Vec<syn::ItemEnum>>,
    aliases: BTreeMap<String, Vec<syn::Type>>,
    /// Constants whose value is an integer literal (doc comments link them).
    consts: BTreeMap<String, Vec<String>>,
    /// The source files' text, for what is easier found as text.
    texts: Vec<String>,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate is in the repository")
        .to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn read_items() -> Items {
    let mut items = Items::default();
    for krate in CRATES {
        let mut files = Vec::new();
        rust_files(&repo_root().join(krate).join("src"), &mut files);
        for file in files {
            let text = std::fs::read_to_string(&file).expect("read a source file");
            let parsed = syn::parse_file(&text)
                .unwrap_or_else(|e| panic!("{}: does not parse: {e}", file.display()));
            collect(&parsed.items, &mut items);
            items.texts.push(text);
        }
    }
    items
}

fn is_cfg_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.meta
                .require_list()
                .is_ok_and(|l| l.tokens.to_string().contains("test"))
    })
}

fn collect(list: &[syn::Item], items: &mut Items) {
    for item in list {
        match item {
            syn::Item::Struct(s) => items
                .structs
                .entry(s.ident.to_string())
                .or_default()
                .push(s.clone()),
            syn::Item::Enum(e) => items
                .enums
                .entry(e.ident.to_string())
                .or_default()
                .push(e.clone()),
            syn::Item::Type(t) => items
                .aliases
                .entry(t.ident.to_string())
                .or_default()
                .push((*t.ty).clone()),
            syn::Item::Const(c) => {
                if let syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Int(i),
                    ..
                }) = &*c.expr
                {
                    items
                        .consts
                        .entry(c.ident.to_string())
                        .or_default()
                        .push(i.base10_digits().to_owned());
                }
            }
            syn::Item::Mod(m) if !is_cfg_test(&m.attrs) => {
                if let Some((_, inner)) = &m.content {
                    collect(inner, items);
                }
            }
            _ => {}
        }
    }
}

impl Items {
    /// Whether `name` has a hand-written `Deserialize` that reads a string
    /// (`impl<'de> Deserialize<'de> for Name { ... String::deserialize ... }`).
    fn deserialized_from_string(&self, name: &str) -> bool {
        let head = format!("Deserialize<'de> for {name} ");
        self.texts.iter().any(|text| {
            text.match_indices(&head).any(|(at, _)| {
                let body = &text[at..];
                let end = body.find("\n}").unwrap_or(body.len());
                body[..end].contains("String::deserialize(")
            })
        })
    }

    /// `doc` with each `` `CONST` `` of an integer literal replaced by its value.
    fn resolve(&self, doc: String) -> String {
        self.consts
            .iter()
            .filter_map(|(name, values)| match values.as_slice() {
                [one] => Some((format!("`{name}`"), one)),
                _ => None,
            })
            .fold(doc, |doc, (name, value)| doc.replace(&name, value))
    }

    fn strukt(&self, name: &str) -> &syn::ItemStruct {
        match self.structs.get(name).map(Vec::as_slice) {
            Some([one]) => one,
            Some(_) => panic!("struct `{name}` is declared more than once; rename one"),
            None => panic!(
                "no struct `{name}` under {CRATES:?}/src: if it was renamed, update TABLES in tests/tests/config_reference.rs"
            ),
        }
    }
}

/// The `///` lines of an item, one string per line, leading space removed.
fn doc_lines(attrs: &[syn::Attribute]) -> Vec<String> {
    attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .filter_map(|a| match &a.meta {
            syn::Meta::NameValue(nv) => match &nv.value {
                syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(s),
                    ..
                }) => Some(s.value()),
                _ => None,
            },
            _ => None,
        })
        .map(|l| l.strip_prefix(' ').unwrap_or(&l).trim_end().to_owned())
        .collect()
}

/// Doc lines as markdown paragraphs: intra-doc links lose their brackets.
fn doc_text(attrs: &[syn::Attribute]) -> String {
    let mut paragraphs: Vec<String> = vec![String::new()];
    for line in doc_lines(attrs) {
        if line.is_empty() {
            paragraphs.push(String::new());
            continue;
        }
        let last = paragraphs.last_mut().expect("one paragraph");
        if !last.is_empty() {
            last.push(' ');
        }
        last.push_str(line.trim());
    }
    paragraphs.retain(|p| !p.is_empty());
    paragraphs
        .join("\n\n")
        .replace("[`", "`")
        .replace("`]", "`")
}

/// What `#[serde(...)]` says about a field or a container.
#[derive(Default)]
struct Serde {
    rename: Option<String>,
    rename_all: Option<String>,
    default: bool,
    skip: bool,
    flatten: bool,
    from_string: bool,
}

fn skip_meta(meta: ParseNestedMeta<'_>) -> syn::Result<()> {
    if meta.input.peek(syn::Token![=]) {
        meta.value()?.parse::<syn::Expr>()?;
    } else if meta.input.peek(syn::token::Paren) {
        meta.parse_nested_meta(skip_meta)?;
    }
    Ok(())
}

fn serde_attrs(attrs: &[syn::Attribute]) -> Serde {
    let mut out = Serde::default();
    for attr in attrs.iter().filter(|a| a.path().is_ident("serde")) {
        attr.parse_nested_meta(|meta| {
            let name = meta
                .path
                .get_ident()
                .map(ToString::to_string)
                .unwrap_or_default();
            match name.as_str() {
                "rename" | "rename_all" | "try_from" | "from" => {
                    let value: syn::LitStr = meta.value()?.parse()?;
                    match name.as_str() {
                        "rename" => out.rename = Some(value.value()),
                        "rename_all" => out.rename_all = Some(value.value()),
                        _ => out.from_string |= value.value() == "String",
                    }
                    Ok(())
                }
                "default" => {
                    out.default = true;
                    skip_meta(meta)
                }
                "skip" | "skip_deserializing" => {
                    out.skip = true;
                    Ok(())
                }
                "flatten" => {
                    out.flatten = true;
                    Ok(())
                }
                _ => skip_meta(meta),
            }
        })
        .unwrap_or_else(|e| panic!("#[serde(...)] not understood: {e}"));
    }
    out
}

/// serde's `rename_all` applied to a Rust name.
fn renamed(name: &str, rule: Option<&str>) -> String {
    let snake = || {
        let mut s = String::new();
        for (i, c) in name.chars().enumerate() {
            if c.is_uppercase() && i > 0 {
                s.push('_');
            }
            s.push(c.to_ascii_lowercase());
        }
        s
    };
    match rule {
        None => name.to_owned(),
        Some("lowercase") => name.to_lowercase(),
        Some("UPPERCASE") => name.to_uppercase(),
        Some("snake_case") => snake(),
        Some("kebab-case") => snake().replace('_', "-"),
        Some("SCREAMING_SNAKE_CASE") => snake().to_uppercase(),
        Some(other) => panic!("rename_all = \"{other}\" is not handled here; add it"),
    }
}

// ---------------------------------------------------------------------------
// Types.

/// How a value is probed for its accepted range.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Integer,
    Duration,
    Other,
}

/// The last path segment of a type and its generic arguments.
fn type_parts(ty: &syn::Type) -> Option<(String, Vec<&syn::Type>)> {
    let syn::Type::Path(p) = ty else { return None };
    let last = p.path.segments.last()?;
    let args = match &last.arguments {
        syn::PathArguments::AngleBracketed(a) => a
            .args
            .iter()
            .filter_map(|g| match g {
                syn::GenericArgument::Type(t) => Some(t),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    Some((last.ident.to_string(), args))
}

/// The type as an operator reads it, and how to probe it.
fn render_type(ty: &syn::Type, items: &Items) -> (String, Kind) {
    let Some((name, args)) = type_parts(ty) else {
        panic!("a config field has a type this generator cannot name; add it to render_type")
    };
    let inner = |i: usize| render_type(args[i], items);
    match name.as_str() {
        "Option" => inner(0),
        "Vec" => (format!("array of {}", inner(0).0), Kind::Other),
        "String" | "str" => ("string".into(), Kind::Other),
        "PathBuf" | "Path" => ("path".into(), Kind::Other),
        "bool" => ("boolean".into(), Kind::Other),
        "u8" | "u16" | "u32" | "u64" | "usize" | "i32" | "i64" => ("integer".into(), Kind::Integer),
        "f32" | "f64" => ("number".into(), Kind::Other),
        "Duration" => ("duration".into(), Kind::Duration),
        "BTreeMap" | "HashMap" | "StringMap" | "SecretMap" | "RequestHeaders" => {
            ("table of strings".into(), Kind::Other)
        }
        "Secret" => (format!("{}, secret", inner(0).0), Kind::Other),
        "ConnectionString" | "PostgresUri" => {
            ("connection string, password secret".into(), Kind::Other)
        }
        "ListenAddress" => ("host:port".into(), Kind::Other),
        "SiteUrl" | "Url" => ("url".into(), Kind::Other),
        "Regex" | "Pattern" => ("regex".into(), Kind::Other),
        "Method" => ("HTTP method".into(), Kind::Other),
        _ => render_named(&name, items),
    }
}

/// A type of the crates themselves: an alias, a unit enum, or a struct read
/// from a string.
fn render_named(name: &str, items: &Items) -> (String, Kind) {
    if let Some([ty]) = items.aliases.get(name).map(Vec::as_slice) {
        return render_type(ty, items);
    }
    if let Some([e]) = items.enums.get(name).map(Vec::as_slice) {
        let rule = serde_attrs(&e.attrs).rename_all;
        let variants: Vec<String> = e
            .variants
            .iter()
            .map(|v| {
                let own = serde_attrs(&v.attrs).rename;
                let n = own.unwrap_or_else(|| renamed(&v.ident.to_string(), rule.as_deref()));
                format!("`\"{n}\"`")
            })
            .collect();
        return (variants.join(" \\| "), Kind::Other);
    }
    if let Some([s]) = items.structs.get(name).map(Vec::as_slice) {
        if serde_attrs(&s.attrs).from_string || items.deserialized_from_string(name) {
            return ("string".into(), Kind::Other);
        }
    }
    panic!(
        "config type `{name}`: add how to name it to render_type in tests/tests/config_reference.rs"
    )
}

// ---------------------------------------------------------------------------
// Keys.

/// One key of the file.
struct Key {
    /// Dotted table path (`""`, `kafka`, `source.sites`, ...).
    table: &'static str,
    /// The key as the file writes it.
    name: String,
    /// Where the field is declared, for messages.
    origin: String,
    ty: String,
    kind: Kind,
    /// `Option<T>`.
    optional: bool,
    /// No `#[serde(default)]` and not optional.
    required: bool,
    doc: String,
}

impl Key {
    /// The dotted path the loader's messages use, without array indexes.
    fn path(&self) -> String {
        if self.table.is_empty() {
            self.name.clone()
        } else {
            format!("{}.{}", self.table, self.name)
        }
    }

    /// The path as the reference shows it: `source.sites[].url` for a site's key.
    fn shown(&self) -> String {
        if ARRAY_TABLES.contains(&self.table) {
            format!("{}[].{}", self.table, self.name)
        } else {
            self.path()
        }
    }
}

/// The keys of `spec`'s struct, `flatten`ed fields included; fields that are
/// tables of their own (in [`TABLES`]) are left to those.
fn keys_of(spec: &TableSpec, strukt: &str, items: &Items, out: &mut Vec<Key>) {
    let s = items.strukt(strukt);
    let container = serde_attrs(&s.attrs);
    let syn::Fields::Named(fields) = &s.fields else {
        panic!("`{strukt}` has no named fields")
    };
    for field in &fields.named {
        let attrs = serde_attrs(&field.attrs);
        let ident = field.ident.as_ref().expect("named").to_string();
        if attrs.skip {
            continue;
        }
        if attrs.flatten {
            let (inner, _) = type_parts(&field.ty).expect("a flattened struct");
            keys_of(spec, &inner, items, out);
            continue;
        }
        let name = attrs
            .rename
            .unwrap_or_else(|| renamed(&ident, container.rename_all.as_deref()));
        let full = [spec.path, name.as_str()]
            .iter()
            .filter(|p| !p.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(".");
        if TABLES.iter().any(|t| t.path == full) {
            continue;
        }
        let (ty, kind) = render_type(&field.ty, items);
        let optional = type_parts(&field.ty).is_some_and(|(n, _)| n == "Option");
        out.push(Key {
            table: spec.path,
            name,
            origin: format!("{strukt}::{ident}"),
            ty,
            kind,
            optional,
            required: !attrs.default && !container.default && !optional,
            doc: items.resolve(doc_text(&field.attrs)),
        });
    }
}

fn all_keys(items: &Items) -> Vec<Key> {
    let mut out = Vec::new();
    for spec in &TABLES {
        keys_of(spec, spec.strukt, items, &mut out);
    }
    out
}

// ---------------------------------------------------------------------------
// Loading: defaults, ranges, environment variables.

type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

fn no_env(_: &str) -> Option<String> {
    None
}

/// The smallest file `section` loads: `[source]` needs one site; `[sink]`
/// gets one status rule and one maintenance window (arrays of tables whose
/// keys are probed in their first entry).
fn base_file(section: Section) -> toml::Table {
    let text = match section {
        Section::Source => format!("[[source.sites]]\nurl = \"{SITE_URL}\"\n"),
        Section::Sink => "[[sink.status.rules]]\n\
                          urls = '^https://example\\.com/'\n\
                          [[sink.status.maintenance]]\n\
                          urls = '^https://example\\.com/'\n\
                          start = \"02:30\"\n\
                          duration = \"1h\"\n"
            .to_owned(),
    };
    text.parse().expect("the smallest file is TOML")
}

/// Loads `file` for `section`: the effective configuration as TOML, with the
/// section under its own name (`sites` entries as written), or the refusal.
fn load(section: Section, file: &toml::Table, env: Env<'_>) -> Result<toml::Table, String> {
    let text = toml::to_string(file).expect("a table serialises");
    let path = Path::new("connector.toml");
    let value = match section {
        Section::Source => {
            load_str::<SourceConfig>(&text, path, section, env).map(|l| toml::Value::try_from(&l))
        }
        Section::Sink => {
            load_str::<SinkConfig>(&text, path, section, env).map(|l| toml::Value::try_from(&l))
        }
    }
    .map_err(|e| e.to_string())?
    .expect("a loaded configuration serialises");
    let toml::Value::Table(mut table) = value else {
        panic!("a loaded configuration is a table")
    };
    if let Some(s) = table.remove("section") {
        table.insert(section.name().into(), s);
    }
    Ok(table)
}

/// The value at `table.key` of a loaded configuration (`source.sites` is
/// the first site).
fn lookup<'a>(loaded: &'a toml::Table, table: &str, key: &str) -> Option<&'a toml::Value> {
    let mut cur = loaded;
    for part in table.split('.').filter(|p| !p.is_empty()) {
        cur = match cur.get(part)? {
            toml::Value::Table(t) => t,
            toml::Value::Array(a) => a.first()?.as_table()?,
            _ => return None,
        };
    }
    cur.get(key)
}

/// `file` with `key` set to `value` (in the first site for `source.sites`).
fn with_value(section: Section, key: &Key, value: toml::Value) -> toml::Table {
    let mut file = base_file(section);
    let mut cur = &mut file;
    for part in key.table.split('.').filter(|p| !p.is_empty()) {
        let entry = cur
            .entry(part.to_owned())
            .or_insert_with(|| toml::Table::new().into());
        cur = match entry {
            toml::Value::Table(t) => t,
            toml::Value::Array(a) => a[0].as_table_mut().expect("a site is a table"),
            _ => unreachable!("tables only"),
        };
    }
    cur.insert(key.name.clone(), value);
    file
}

/// The keys a refusal names (`` key `source.sites[0].interval` ``), with
/// array indexes replaced by `[]`-less table paths (`source.sites.interval`).
fn refused_keys(message: &str) -> BTreeSet<String> {
    message
        .split("key `")
        .skip(1)
        .filter_map(|rest| rest.split('`').next())
        .map(|k| {
            let mut out = String::new();
            let mut depth = 0;
            for c in k.chars() {
                match c {
                    '[' => depth += 1,
                    ']' => depth -= 1,
                    _ if depth == 0 => out.push(c),
                    _ => {}
                }
            }
            out
        })
        .collect()
}

/// Whether the loader takes `value` for `key` (a refusal about another key
/// does not count against it).
fn accepts(section: Section, key: &Key, value: toml::Value) -> bool {
    match load(section, &with_value(section, key, value), &no_env) {
        Ok(_) => true,
        Err(e) => !refused_keys(&e).contains(&key.path()),
    }
}

fn probe_value(kind: Kind, n: u64) -> toml::Value {
    match kind {
        Kind::Duration => format!("{n}ms").into(),
        _ => i64::try_from(n).expect("within i64").into(),
    }
}

fn show_amount(kind: Kind, n: u64) -> String {
    if kind != Kind::Duration {
        return format!("`{n}`");
    }
    let unit = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1_000, "s"),
    ]
    .into_iter()
    .find(|(ms, _)| n != 0 && n % ms == 0);
    match unit {
        Some((ms, u)) => format!("`{}{u}`", n / ms),
        None => format!("`{n}ms`"),
    }
}

/// The accepted range of a number or duration, found by probing the loader
/// on both sides of a value it accepts (assumes the accepted values are one
/// interval). Durations in milliseconds.
fn accepted_range(section: Section, key: &Key, default: Option<&toml::Value>) -> Option<String> {
    let cap: u64 = match key.kind {
        Kind::Integer => i64::MAX as u64,
        Kind::Duration => 100 * 365 * 24 * 3_600_000,
        Kind::Other => return None,
    };
    let from_default = default.and_then(|v| match v {
        toml::Value::Integer(i) => u64::try_from(*i).ok(),
        toml::Value::String(s) => humantime::parse_duration(s)
            .ok()
            .and_then(|d| u64::try_from(d.as_millis()).ok()),
        _ => None,
    });
    let ok = |n: u64| accepts(section, key, probe_value(key.kind, n));
    let start = from_default
        .into_iter()
        .chain([1, 5, 100, 1000, 60_000])
        .find(|&n| ok(n))?;
    let low = if ok(0) {
        0
    } else {
        let (mut bad, mut good) = (0, start);
        while good - bad > 1 {
            let mid = bad + (good - bad) / 2;
            if ok(mid) {
                good = mid
            } else {
                bad = mid
            }
        }
        good
    };
    if ok(cap) {
        return Some(format!("at least {}", show_amount(key.kind, low)));
    }
    let (mut good, mut bad) = (start, cap);
    let mut step = start.max(1);
    while step < cap / 2 {
        step *= 2;
        if !ok(step) {
            bad = step;
            break;
        }
        good = step;
    }
    while bad - good > 1 {
        let mid = good + (bad - good) / 2;
        if ok(mid) {
            good = mid
        } else {
            bad = mid
        }
    }
    // Not one interval (e.g. whole hours only): the doc comment says it.
    let inside = (1..8).map(|i| low + (good - low) / 8 * i);
    if !inside.into_iter().all(ok) {
        return None;
    }
    Some(format!(
        "{} to {}",
        show_amount(key.kind, low),
        show_amount(key.kind, good)
    ))
}

/// Leaf paths where two loaded configurations differ (`source.sites.x` for a
/// site's key).
fn differences(a: &toml::Table, b: &toml::Table, prefix: &str, out: &mut BTreeSet<String>) {
    let names: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for name in names {
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        match (a.get(name), b.get(name)) {
            (Some(toml::Value::Table(x)), Some(toml::Value::Table(y))) => {
                differences(x, y, &path, out)
            }
            (x, y) if x != y => {
                out.insert(path);
            }
            _ => {}
        }
    }
}

/// Which keys each of the seed's variables overrides, found by setting it
/// alone (key path → variables).
fn env_overrides() -> BTreeMap<String, BTreeSet<&'static str>> {
    let mut out: BTreeMap<String, BTreeSet<&'static str>> = BTreeMap::new();
    for section in [Section::Source, Section::Sink] {
        let file = base_file(section);
        let baseline = load(section, &file, &no_env).expect("the smallest file loads");
        for var in SEED_VARS {
            for probe in ["debug", "probe.example:9092"] {
                let env = |name: &str| (name == var).then(|| probe.to_owned());
                let mut keys = BTreeSet::new();
                match load(section, &file, &env) {
                    Ok(loaded) => differences(&baseline, &loaded, "", &mut keys),
                    // The first problem is the variable's own key; the
                    // others follow from it (ssl_cert without ssl_key).
                    Err(e) => keys = refused_keys(e.lines().next().unwrap_or_default()),
                }
                for key in &keys {
                    out.entry(key.clone()).or_default().insert(var);
                }
                if !keys.is_empty() {
                    break;
                }
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// The reference.

/// The facts line of one key: type, default, range, env, per-site.
fn facts(
    key: &Key,
    keys: &[Key],
    env: &BTreeMap<String, BTreeSet<&'static str>>,
    defaults: &BTreeMap<&'static str, toml::Table>,
) -> String {
    let spec = TABLES
        .iter()
        .find(|t| t.path == key.table)
        .expect("a table");
    let default = lookup(&defaults[spec.path], key.table, &key.name);
    let site_level = key.table == "source.sites";
    let in_source = |name: &str| keys.iter().any(|k| k.table == "source" && k.name == name);
    let mut parts = vec![key.ty.clone()];
    parts.push(if key.required {
        "required".to_owned()
    } else if site_level && in_source(&key.name) {
        format!("default: the [`[source]` value](#source{})", key.name)
    } else {
        match default {
            Some(toml::Value::Table(t)) if t.is_empty() => "default: empty".to_owned(),
            Some(toml::Value::String(d)) if key.kind == Kind::Duration => {
                let ms = humantime::parse_duration(d).expect("a default duration parses");
                format!("default: {}", show_amount(key.kind, ms.as_millis() as u64))
            }
            Some(v) => format!("default: `{v}`"),
            None if key.optional => "default: unset".to_owned(),
            None => "default: empty".to_owned(),
        }
    });
    let probed = if site_level {
        None
    } else {
        accepted_range(spec.section, key, default)
    };
    if let Some(range) = probed {
        parts.push(format!("accepted: {range}"));
    }
    if let Some(vars) = env.get(&key.path()) {
        let vars: Vec<String> = vars.iter().map(|v| format!("`{v}`")).collect();
        parts.push(format!("env: {}", vars.join(", ")));
    }
    if key.table == "source"
        && keys
            .iter()
            .any(|k| k.table == "source.sites" && k.name == key.name)
    {
        parts.push("per site".to_owned());
    }
    parts.join(" · ")
}

/// The whole reference, as markdown.
fn generate(items: &Items) -> String {
    let keys = all_keys(items);
    let env = env_overrides();
    let defaults: BTreeMap<&'static str, toml::Table> = TABLES
        .iter()
        .map(|t| {
            let loaded = load(t.section, &base_file(t.section), &no_env)
                .unwrap_or_else(|e| panic!("the smallest file does not load: {e}"));
            (t.path, loaded)
        })
        .collect();
    let mut out = String::from(
        "<!-- Generated by tests/tests/config_reference.rs from the config types' doc\n\
         comments and the loader; do not edit. Regenerate with\n\
         UPDATE_DOCS=1 cargo test -p website-monitor-tests --test config_reference -->\n\n\
         # Configuration reference\n\n\
         Every key of `connector.toml`, table by table. How the file is found, `${VAR}`\n\
         expansion, the environment overrides and the error messages are described in\n\
         [configuration.md](configuration.md). Durations are humantime strings\n\
         (`250ms`, `30s`, `5m`, `1h`); \"accepted\" is the range the loader takes\n\
         (anything outside it is refused at start, exit code 2).\n",
    );
    for spec in &TABLES {
        out.push_str(&format!("\n## {}\n\n", spec.heading));
        let intro = doc_text(&items.strukt(spec.strukt).attrs);
        if !intro.is_empty() {
            out.push_str(&format!("{intro}\n"));
        }
        for key in keys.iter().filter(|k| k.table == spec.path) {
            out.push_str(&format!("\n### `{}`\n\n", key.shown()));
            out.push_str(&format!("{}\n\n", facts(key, &keys, &env, &defaults)));
            out.push_str(&format!("{}\n", key.doc));
        }
    }
    out
}

#[test]
fn the_configuration_reference_is_up_to_date() {
    let items = read_items();
    let fresh = generate(&items);
    let path = repo_root().join(REFERENCE);
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    if current == fresh {
        return;
    }
    if std::env::var("UPDATE_DOCS").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &fresh).expect("write the reference");
        return;
    }
    let first = current
        .lines()
        .zip(fresh.lines())
        .position(|(a, b)| a != b)
        .unwrap_or_else(|| current.lines().count().min(fresh.lines().count()));
    panic!(
        "{REFERENCE} is out of date (first difference at line {}: the file says {:?}, the code {:?}).\n\
         Regenerate it and commit the result:\n    \
         UPDATE_DOCS=1 cargo test -p website-monitor-tests --test config_reference",
        first + 1,
        current.lines().nth(first).unwrap_or("<end>"),
        fresh.lines().nth(first).unwrap_or("<end>"),
    );
}

#[test]
fn every_config_field_has_a_doc_comment() {
    let items = read_items();
    let undocumented: Vec<String> = all_keys(&items)
        .iter()
        .filter(|k| k.doc.trim().is_empty())
        .map(|k| format!("`{}` ({})", k.path(), k.origin))
        .collect();
    assert!(
        undocumented.is_empty(),
        "config fields without a /// doc comment (the reference is built from them): {}",
        undocumented.join(", ")
    );
}

#[test]
fn every_env_variable_a_doc_comment_names_overrides_that_key() {
    let items = read_items();
    let env = env_overrides();
    for var in SEED_VARS {
        assert!(
            env.values().any(|vars| vars.contains(var)),
            "the seed's variable `{var}` overrides no key any more: {env:?}"
        );
    }
    for key in all_keys(&items) {
        for claim in key.doc.split("Env: `").skip(1) {
            let var = claim.split('`').next().unwrap_or_default();
            assert!(
                env.get(&key.path()).is_some_and(|v| v.contains(var)),
                "the doc of `{}` ({}) says `Env: {var}`, but that variable does not override it (it overrides: {env:?})",
                key.path(),
                key.origin
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Keys written in the shipped files and the docs.

/// `(line, table, key)` for every `key = value` line of TOML `text`, and
/// every commented-out one (`# key = value`); keys of `[kafka.options]`
/// (librdkafka's names) and of inline tables are not config keys.
fn written_keys(text: &str) -> Vec<(usize, String, String)> {
    let mut table = String::new();
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim_start();
        let line = line.strip_prefix('#').map_or(line, str::trim_start);
        if let Some(header) = table_header(line) {
            table = header;
            continue;
        }
        let Some((name, value)) = line.split_once('=') else {
            continue;
        };
        let name = name.trim();
        let is_key = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        // `# a = b` in prose has words after the value; a key line has a
        // value TOML can read (up to a trailing comment).
        let value = value.split(" #").next().unwrap_or_default().trim();
        let readable = format!("x = {value}").parse::<toml::Table>().is_ok();
        if is_key && readable && table != "kafka.options" {
            out.push((n + 1, table.clone(), name.to_owned()));
        }
    }
    out
}

/// The table a `[name]` or `[[name]]` line opens (a trailing comment
/// allowed); `None` for anything else, such as prose that starts with `[`.
fn table_header(line: &str) -> Option<String> {
    let inner = line.strip_prefix('[')?;
    let array = inner.starts_with('[');
    let inner = inner.strip_prefix('[').unwrap_or(inner);
    let end = inner.find(']')?;
    let name = inner[..end].trim();
    let rest = inner[end..].strip_prefix(if array { "]]" } else { "]" })?;
    let rest = rest.trim_start();
    let is_name = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    (is_name && (rest.is_empty() || rest.starts_with('#'))).then(|| name.to_owned())
}

/// The problems of the keys written in `text`, named `place:line`.
fn unknown_keys(text: &str, place: &str, keys: &[Key]) -> Vec<String> {
    written_keys(text)
        .into_iter()
        .filter(|(_, table, name)| {
            // `[[source.sites]]` and the JSON lines of `sites_file` take the
            // same keys; a site's keys may also be written in `[source]`.
            !keys
                .iter()
                .any(|k| k.table == table.as_str() && &k.name == name)
        })
        .map(|(line, table, name)| {
            let at = if table.is_empty() {
                name
            } else {
                format!("{table}.{name}")
            };
            format!("{place}:{line}: `{at}` is not a configuration key")
        })
        .collect()
}

/// The problems of the dotted keys a markdown text names in backticks
/// (`` `source.threads` ``, `` `source.sites[0].url` ``).
fn unknown_dotted_keys(markdown: &str, place: &str, keys: &[Key]) -> Vec<String> {
    let mut out = Vec::new();
    for (n, line) in markdown.lines().enumerate() {
        for span in line.split('`').skip(1).step_by(2) {
            let Some(section) = ["kafka.", "source.", "sink."]
                .into_iter()
                .find(|p| span.starts_with(p))
            else {
                continue;
            };
            if !span
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.[]".contains(c))
                || span.len() == section.len()
            {
                continue;
            }
            let path: String = refused_keys(&format!("key `{span}`"))
                .into_iter()
                .next()
                .unwrap_or_default();
            let known = keys.iter().any(|k| k.path() == path)
                || TABLES.iter().any(|t| t.path == path)
                || path.starts_with("kafka.options.");
            if !known {
                out.push(format!(
                    "{place}:{}: `{span}` is not a configuration key",
                    n + 1
                ));
            }
        }
    }
    out
}

/// The ```` ```toml ```` blocks of a markdown text, each with its first line.
fn toml_blocks(markdown: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (n, line) in markdown.lines().enumerate() {
        let fence = line.trim_start().starts_with("```");
        match (&mut current, fence) {
            (None, true) if line.trim_start().trim_start_matches('`').trim() == "toml" => {
                current = Some((n + 2, String::new()))
            }
            (Some(_), true) => out.extend(current.take()),
            (Some((_, text)), false) => {
                text.push_str(line);
                text.push('\n');
            }
            _ => {}
        }
    }
    out
}

#[test]
fn every_key_in_the_shipped_configs_and_the_docs_exists() {
    let items = read_items();
    let keys = all_keys(&items);
    let root = repo_root();
    let mut problems = Vec::new();
    let mut files = vec![root.join("connector.toml")];
    files_with_ext(&root.join("pipelines"), "toml", &mut files);
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read a config");
        let place = file
            .strip_prefix(&root)
            .unwrap_or(file)
            .display()
            .to_string();
        problems.extend(unknown_keys(&text, &place, &keys));
    }
    let mut docs = vec![root.join("README.md")];
    files_with_ext(&root.join("docs"), "md", &mut docs);
    // The history of experiments is a record of its time, not a manual.
    docs.retain(|d| !d.ends_with("benchmarks-history.md"));
    for doc in &docs {
        let text = std::fs::read_to_string(doc).expect("read a doc");
        let place = doc.strip_prefix(&root).unwrap_or(doc).display().to_string();
        problems.extend(unknown_dotted_keys(&text, &place, &keys));
        for (line, block) in toml_blocks(&text) {
            let offset = |p: String| {
                // Block lines are counted from the block's first line.
                let (head, rest) = p.split_once(": ").expect("place: message");
                let n: usize = head.rsplit(':').next().unwrap().parse().unwrap();
                format!("{place}:{}: {rest}", line + n - 1)
            };
            problems.extend(
                unknown_keys(&block, "block:0", &keys)
                    .into_iter()
                    .map(offset),
            );
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn files_with_ext(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    found.sort();
    out.extend(found);
}

#[test]
fn the_key_checker_finds_a_bogus_key_also_in_a_comment() {
    let items = read_items();
    let keys = all_keys(&items);
    let text = "log_level = \"info\"\n[source]\ninterval = \"1s\"\n# intervall = \"2s\"\n\
                [[source.sites]]\nurl = \"https://a.example/\"\n# regex = \"x\"\n\
                [kafka.options]\n\"linger.ms\" = \"5\"\n# see the docs: a = b for details\n\
                [sink]\n# [kafka] and [source] (prose, not a header)\ngroup_id = \"g\"\nbogus = 1\n";
    assert_eq!(
        unknown_keys(text, "t.toml", &keys),
        [
            "t.toml:4: `source.intervall` is not a configuration key",
            "t.toml:14: `sink.bogus` is not a configuration key",
        ]
    );
}
