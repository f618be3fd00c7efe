//! Table names and versioned schema migrations.
//!
//! Migrations are the SQL files in `sink-connector/migrations/`, compiled into
//! the binary and applied in order at start (and after every reconnect), each
//! recorded in `<table>_migrations`. That table is read first, and when every
//! version is recorded no DDL runs (a least-privilege role can start on tables
//! a DBA created). Otherwise the run holds a transaction-scoped PostgreSQL
//! advisory lock keyed on the schema, so sinks starting at once queue behind
//! each other: the first applies, the others find the versions recorded and
//! apply nothing.
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
    /// Probe names and their ids (`<table>_probe`).
    pub probe: String,
    /// Rollups per minute (`<table>_per_minute`).
    pub per_minute: String,
    /// Rollups per hour (`<table>_per_hour`).
    pub per_hour: String,
    /// Rollups per UTC day (`<table>_per_day`).
    pub per_day: String,
    /// Every site's rollups together per minute (`<table>_fleet_per_minute`).
    pub fleet_per_minute: String,
    /// … per hour (`<table>_fleet_per_hour`).
    pub fleet_per_hour: String,
    /// … per UTC day (`<table>_fleet_per_day`).
    pub fleet_per_day: String,
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
            probe: q("_probe"),
            per_minute: q("_per_minute"),
            per_hour: q("_per_hour"),
            per_day: q("_per_day"),
            fleet_per_minute: q("_fleet_per_minute"),
            fleet_per_hour: q("_fleet_per_hour"),
            fleet_per_day: q("_fleet_per_day"),
            base: table.to_owned(),
            schema_raw: schema.to_owned(),
        }
    }

    /// Replaces every `{{name}}` placeholder in `sql` with its quoted
    /// identifier (`{{name:lit}}`: as an SQL string literal, for a
    /// `::regclass` argument), in one left-to-right pass: text already
    /// inserted (a table name may itself contain braces) is never looked at
    /// again. An unknown placeholder is left as it is.
    pub fn substitute(&self, sql: &str) -> String {
        let lookup = |name: &str| -> Option<String> {
            match name.strip_suffix(":lit") {
                Some(inner) => self
                    .placeholder(inner)
                    .map(|v| format!("'{}'", v.replace('\'', "''"))),
                None => self.placeholder(name),
            }
        };
        let mut out = String::with_capacity(sql.len() + 64);
        let mut rest = sql;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            match after.find("}}") {
                Some(end) => match lookup(&after[..end]) {
                    Some(v) => {
                        out.push_str(&v);
                        rest = &after[end + 2..];
                    }
                    None => {
                        out.push_str("{{");
                        rest = after;
                    }
                },
                None => {
                    out.push_str("{{");
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        out
    }

    /// A function (or view) of the sink's named `<table><suffix>`, schema-qualified and quoted.
    pub fn function(&self, suffix: &str) -> String {
        format!(
            "{}.{}",
            self.schema,
            quote_ident(&format!("{}{suffix}", self.base))
        )
    }

    /// The quoted identifier a placeholder stands for.
    fn placeholder(&self, name: &str) -> Option<String> {
        let local = |suffix: &str| quote_ident(&format!("{}{suffix}", self.base));
        let qualified = |suffix: &str| self.function(suffix);
        Some(match name {
            "schema" => self.schema.clone(),
            "site" => self.site.clone(),
            "check" => self.check.clone(),
            "rejected" => self.rejected.clone(),
            "offsets" => self.offsets.clone(),
            "check_position_key" => local("_check_position_key"),
            "check_site_time_idx" => local("_check_site_time_idx"),
            // PostgreSQL's own name for 0001's inline foreign key.
            "check_site_fkey" => local("_check_site_id_fkey"),
            "rejected_position_key" => local("_rejected_position_key"),
            // 0006: the tables renamed out of the way, unqualified (RENAME TO) and qualified.
            "check_legacy_name" => local("_check_legacy"),
            "check_legacy_idx_name" => local("_check_legacy_site_time_idx"),
            "rejected_legacy_name" => local("_rejected_legacy"),
            "rejected_legacy" => qualified("_rejected_legacy"),
            "check_site_idx" => local("_check_site_idx"),
            "check_time_brin" => local("_check_time_brin"),
            "rejected_position_idx" => local("_rejected_position_idx"),
            "probe" => self.probe.clone(),
            "per_minute" => self.per_minute.clone(),
            "per_hour" => self.per_hour.clone(),
            "per_day" => self.per_day.clone(),
            "fleet_per_minute" => self.fleet_per_minute.clone(),
            "fleet_per_hour" => self.fleet_per_hour.clone(),
            "fleet_per_day" => self.fleet_per_day.clone(),
            "fleet_rollup" => qualified("_fleet_rollup"),
            "fleet" => qualified("_fleet"),
            "fleet_fill" => qualified("_fleet_fill"),
            "counts_add" => qualified("_counts_add"),
            "error_kind" => qualified("_error_kind"),
            "make_partitions" => qualified("_make_partitions"),
            "drop_partitions" => qualified("_drop_partitions"),
            "make_partition" => qualified("_make_partition"),
            "partition_covers" => qualified("_partition_covers"),
            "partitioned_check" => qualified("_partitioned_check"),
            "check_record" => qualified("_check_record"),
            "rollup" => qualified("_rollup"),
            "percentile" => qualified("_percentile"),
            "uptime" => qualified("_uptime"),
            "latency" => qualified("_latency"),
            "errors" => qualified("_errors"),
            "summary" => qualified("_summary"),
            // 0009: site status and incidents.
            "probe_state" => qualified("_probe_state"),
            "status" => qualified("_status"),
            "status_wake_idx" => local("_status_wake_idx"),
            "transition" => qualified("_transition"),
            "transition_at_idx" => local("_transition_at_idx"),
            "transition_unpublished_idx" => local("_transition_unpublished_idx"),
            "maintenance" => qualified("_maintenance"),
            "maintenance_ends_idx" => local("_maintenance_ends_idx"),
            // 0010: the dead-letter topic.
            "rejected_undelivered_idx" => local("_rejected_undelivered_idx"),
            // 0011: maintenance counted apart, time per state.
            "state_time" => qualified("_state_time"),
            // 0015: the bounds of the rollup levels.
            "rollup_levels" => qualified("_rollup_levels"),
            _ => return None,
        })
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
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../../migrations/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "history_without_foreign_key",
        sql: include_str!("../../migrations/0002_history_without_foreign_key.sql"),
    },
    Migration {
        version: 3,
        name: "latest_fillfactor",
        sql: include_str!("../../migrations/0003_latest_fillfactor.sql"),
    },
    Migration {
        version: 4,
        name: "history_keyed_by_position",
        sql: include_str!("../../migrations/0004_history_keyed_by_position.sql"),
    },
    Migration {
        version: 5,
        name: "rejects_bounded",
        sql: include_str!("../../migrations/0005_rejects_bounded.sql"),
    },
    Migration {
        version: 6,
        name: "partitions_and_rollups",
        sql: include_str!("../../migrations/0006_partitions_and_rollups.sql"),
    },
    Migration {
        version: 7,
        name: "sql_api",
        sql: include_str!("../../migrations/0007_sql_api.sql"),
    },
    Migration {
        version: 8,
        name: "compact_rows_and_fleet",
        sql: include_str!("../../migrations/0008_compact_rows_and_fleet.sql"),
    },
    Migration {
        version: 9,
        name: "status",
        sql: include_str!("../../migrations/0009_status.sql"),
    },
    Migration {
        version: 10,
        name: "dead_letters",
        sql: include_str!("../../migrations/0010_dead_letters.sql"),
    },
    Migration {
        version: 11,
        name: "maintenance_counts",
        sql: include_str!("../../migrations/0011_maintenance_counts.sql"),
    },
    Migration {
        version: 12,
        name: "probe_recent",
        sql: include_str!("../../migrations/0012_probe_recent.sql"),
    },
    Migration {
        version: 13,
        name: "history_interval",
        sql: include_str!("../../migrations/0013_history_interval.sql"),
    },
    Migration {
        version: 14,
        name: "probe_heard",
        sql: include_str!("../../migrations/0014_probe_heard.sql"),
    },
    Migration {
        version: 15,
        name: "rollup_levels",
        sql: include_str!("../../migrations/0015_rollup_levels.sql"),
    },
    Migration {
        version: 16,
        name: "retention_detach",
        sql: include_str!("../../migrations/0016_retention_detach.sql"),
    },
    Migration {
        version: 17,
        name: "rollup_fillfactor",
        sql: include_str!("../../migrations/0017_rollup_fillfactor.sql"),
    },
];

/// Advisory-lock class for the sink's migrations (first key of the two-key form).
const LOCK_CLASS: i32 = 0x5715_0001;

/// What [`migrate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Versions applied by this call (empty when the schema was up to date).
    pub versions: Vec<i32>,
}

/// Versions recorded in `<table>_migrations`, or `None` when that table does
/// not exist. Needs only `SELECT` on it.
async fn applied_versions(
    client: &(impl tokio_postgres::GenericClient + Sync),
    tables: &Tables,
) -> Result<Option<Vec<i32>>, tokio_postgres::Error> {
    // A plain catalog query (its own MVCC snapshot) rather than to_regclass,
    // which may miss a table another session just committed.
    let exists: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c
                            JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                            WHERE n.nspname = $1 AND c.relname = $2)",
            &[&tables.schema_raw, &format!("{}_migrations", tables.base)],
        )
        .await?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let rows = client
        .query(&format!("SELECT version FROM {}", tables.migrations), &[])
        .await?;
    Ok(Some(rows.iter().map(|r| r.get(0)).collect()))
}

fn pending(done: &[i32]) -> impl Iterator<Item = &'static Migration> + '_ {
    MIGRATIONS.iter().filter(|m| !done.contains(&m.version))
}

/// Creates the schema when missing and applies every migration not yet
/// recorded, in one transaction under an advisory lock.
///
/// `<table>_migrations` is read first: when every migration is recorded no
/// DDL runs at all, so a role that may only read and write tables a DBA
/// created (no `CREATE` on the database or schema) can start.
pub async fn migrate(
    client: &mut Client,
    tables: &Tables,
) -> Result<Applied, tokio_postgres::Error> {
    if let Some(done) = applied_versions(&*client, tables).await? {
        if pending(&done).next().is_none() {
            return Ok(Applied {
                versions: Vec::new(),
            });
        }
    }
    let tx = client.transaction().await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[&LOCK_CLASS, &tables.schema_raw],
    )
    .await?;
    // Under the lock, look again: another sink may have just applied them.
    let done = match applied_versions(&tx, tables).await? {
        Some(done) => done,
        None => {
            let schema_exists: bool = tx
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
                    &[&tables.schema_raw],
                )
                .await?
                .get(0);
            if !schema_exists {
                tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {}", tables.schema))
                    .await?;
            }
            tx.batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {m} (
                     version    integer PRIMARY KEY,
                     name       text NOT NULL,
                     applied_at timestamptz NOT NULL DEFAULT now()
                 );",
                m = tables.migrations
            ))
            .await?;
            Vec::new()
        }
    };
    let mut applied = Vec::new();
    for m in pending(&done) {
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

    #[test]
    fn the_status_migration_names_its_tables() {
        let status = MIGRATIONS.iter().find(|m| m.version == 9).expect("0009");
        let sql = Tables::new("s", "site").substitute(status.sql);
        assert!(sql.contains("CREATE TABLE \"s\".\"site_probe_state\""));
        assert!(sql.contains("CREATE INDEX \"site_status_wake_idx\""));
    }

    #[test]
    fn substitution_is_one_pass_and_never_expands_inserted_names() {
        // A hostile name (the configuration refuses braces, but the
        // substitution must not depend on that).
        let t = Tables::new("s{{site}}", "a{{rejected}}\"b");
        let sql =
            t.substitute("CREATE TABLE {{site}} (); ALTER TABLE {{rejected}}; {{unknown}} {{");
        assert_eq!(
            sql,
            "CREATE TABLE \"s{{site}}\".\"a{{rejected}}\"\"b\" (); ALTER TABLE \"s{{site}}\".\"a{{rejected}}\"\"b_rejected\"; {{unknown}} {{"
        );
        assert_eq!(
            t.substitute("{{check_position_key}}"),
            "\"a{{rejected}}\"\"b_check_position_key\""
        );
    }
}
