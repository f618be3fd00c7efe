//! Table names and versioned schema migrations.
//!
//! Migrations are the SQL files in `sink-connector/migrations/`, compiled into
//! the binary and applied in order at start (and after every reconnect), each
//! recorded in `<table>_migrations`. The whole run holds a transaction-scoped
//! PostgreSQL advisory lock keyed on the schema, so sinks starting at once
//! queue behind each other: the first applies, the others find the versions
//! recorded and apply nothing.
//!
//! Every identifier that comes from the configuration is quoted by [`quote_ident`]
//! before it reaches SQL; migrations name tables through `{{placeholders}}`.

use tokio_postgres::Client;

/// Quotes `name` as a PostgreSQL identifier: `my "t"` → `"my ""t"""`.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The quoted, schema-qualified names of the sink's tables, derived from
/// `[sink] schema` and `table`.
#[derive(Debug, Clone)]
pub struct Tables {
    /// The schema, quoted.
    pub schema: String,
    /// Latest state per url (`<table>`).
    pub site: String,
    /// History (`<table>_check`).
    pub check: String,
    /// Rejects (`<table>_rejected`).
    pub rejected: String,
    /// Next offset per partition (`<table>_kafka_offsets`).
    pub offsets: String,
    /// Applied migrations (`<table>_migrations`).
    pub migrations: String,
    /// The unquoted base name, for derived index and constraint names.
    base: String,
    /// The unquoted schema name, for the advisory lock key.
    schema_raw: String,
}

impl Tables {
    /// Names for `table` in `schema`.
    pub fn new(schema: &str, table: &str) -> Self {
        let q = |suffix: &str| {
            format!(
                "{}.{}",
                quote_ident(schema),
                quote_ident(&format!("{table}{suffix}"))
            )
        };
        Self {
            schema: quote_ident(schema),
            site: q(""),
            check: q("_check"),
            rejected: q("_rejected"),
            offsets: q("_kafka_offsets"),
            migrations: q("_migrations"),
            base: table.to_owned(),
            schema_raw: schema.to_owned(),
        }
    }

    /// Replaces every `{{name}}` placeholder in `sql` with its quoted identifier.
    pub fn substitute(&self, sql: &str) -> String {
        let local = |suffix: &str| quote_ident(&format!("{}{suffix}", self.base));
        [
            ("{{schema}}", self.schema.clone()),
            ("{{site}}", self.site.clone()),
            ("{{check}}", self.check.clone()),
            ("{{rejected}}", self.rejected.clone()),
            ("{{offsets}}", self.offsets.clone()),
            ("{{check_position_key}}", local("_check_position_key")),
            ("{{check_site_time_idx}}", local("_check_site_time_idx")),
            ("{{rejected_position_key}}", local("_rejected_position_key")),
        ]
        .iter()
        .fold(sql.to_owned(), |acc, (k, v)| acc.replace(k, v))
    }
}

/// One migration file.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Its number; applied in increasing order, each once.
    pub version: i32,
    /// Its name (the file name without number and extension).
    pub name: &'static str,
    /// Its SQL, with placeholders.
    pub sql: &'static str,
}

/// Every migration, in order.
pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "init",
    sql: include_str!("../migrations/0001_init.sql"),
}];

/// Advisory-lock class for the sink's migrations (first key of the two-key form).
const LOCK_CLASS: i32 = 0x5715_0001;

/// What [`migrate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Versions applied by this call (empty when the schema was up to date).
    pub versions: Vec<i32>,
}

/// Creates the schema when missing and applies every migration not yet
/// recorded, in one transaction under an advisory lock.
pub async fn migrate(
    client: &mut Client,
    tables: &Tables,
) -> Result<Applied, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[&LOCK_CLASS, &tables.schema_raw],
    )
    .await?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {m} (
             version    integer PRIMARY KEY,
             name       text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         );",
        schema = tables.schema,
        m = tables.migrations
    ))
    .await?;
    let done: Vec<i32> = tx
        .query(&format!("SELECT version FROM {}", tables.migrations), &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut applied = Vec::new();
    for m in MIGRATIONS.iter().filter(|m| !done.contains(&m.version)) {
        tracing::info!(version = m.version, name = m.name, "applying migration");
        tx.batch_execute(&tables.substitute(m.sql)).await?;
        tx.execute(
            &format!(
                "INSERT INTO {} (version, name) VALUES ($1, $2)",
                tables.migrations
            ),
            &[&m.version, &m.name],
        )
        .await?;
        applied.push(m.version);
    }
    tx.commit().await?;
    Ok(Applied { versions: applied })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_doubles_quotes() {
        assert_eq!(quote_ident("site"), "\"site\"");
        assert_eq!(
            quote_ident("a\"b; DROP TABLE x; --"),
            "\"a\"\"b; DROP TABLE x; --\""
        );
    }

    #[test]
    fn derived_names_are_quoted_and_qualified() {
        let t = Tables::new("my schema", "Site\"x");
        assert_eq!(t.site, "\"my schema\".\"Site\"\"x\"");
        assert_eq!(t.check, "\"my schema\".\"Site\"\"x_check\"");
        assert_eq!(t.offsets, "\"my schema\".\"Site\"\"x_kafka_offsets\"");
    }

    #[test]
    fn migrations_leave_no_placeholder() {
        let t = Tables::new("s", "site");
        for m in MIGRATIONS {
            let sql = t.substitute(m.sql);
            assert!(
                !sql.contains("{{"),
                "migration {} has an unknown placeholder",
                m.version
            );
        }
        let versions: Vec<i32> = MIGRATIONS.iter().map(|m| m.version).collect();
        let mut sorted = versions.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(versions, sorted, "versions increase and are unique");
    }
}
