//! `--check-live`: beyond `--check-config`, reach what the configuration
//! names — Kafka's brokers and the topic, PostgreSQL with this login, the
//! migration state of the sink's tables, and the rights the sink needs.

use std::time::Duration;

use connector_common::cli::LiveCheck;
use connector_common::kafka::preflight::check_topic;
use connector_common::Loaded;
use tokio_postgres::Client;

use crate::postgres::error::db_message;
use crate::postgres::migrate::{Tables, MIGRATIONS};
use crate::postgres::sql::connect;
use crate::SinkConfig;

/// How long Kafka and PostgreSQL may each take to answer.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The sink's live checks, in order: Kafka and the topic, the topics the
/// sink produces to (each when set), the PostgreSQL login, the migrations,
/// the rights on the tables (the last two only once logged in).
pub async fn check_live(loaded: &Loaded<SinkConfig>) -> Vec<LiveCheck> {
    let kafka = loaded.kafka.clone();
    let topic = loaded.section.topic.clone();
    let found = tokio::task::spawn_blocking(move || check_topic(&kafka, &topic, TIMEOUT))
        .await
        .unwrap_or_else(|e| Err(format!("the Kafka check did not finish: {e}")));
    let mut checks = vec![("kafka", found)];
    let cfg = &loaded.section;
    // The topics the sink produces to must exist too: a producer would
    // create a missing one with the brokers' defaults (when they allow it).
    let produced = [
        ("dead_letter_topic", &cfg.dead_letter_topic),
        ("transitions_topic", &cfg.status.transitions_topic),
    ];
    for (key, topic) in produced {
        let Some(topic) = topic.clone() else { continue };
        let kafka = loaded.kafka.clone();
        let found = tokio::task::spawn_blocking(move || check_topic(&kafka, &topic, TIMEOUT))
            .await
            .unwrap_or_else(|e| Err(format!("the Kafka check did not finish: {e}")));
        checks.push((key, found));
    }
    let client = match login(cfg).await {
        Ok(c) => c,
        Err(e) => {
            checks.push(("postgres", Err(e)));
            return checks;
        }
    };
    checks.push((
        "postgres",
        Ok(format!(
            "logged in to {}",
            cfg.postgres_uri.target().describe()
        )),
    ));
    let tables = Tables::new(&cfg.schema, &cfg.table);
    let late = || {
        format!(
            "no answer within {} (a lock held on the sink's tables?)",
            humantime::format_duration(TIMEOUT)
        )
    };
    let migrated = tokio::time::timeout(TIMEOUT, migrations(&client, &tables, &cfg.schema))
        .await
        .unwrap_or_else(|_| Err(late()));
    let current = matches!(&migrated, Ok(true));
    checks.push(("migrations", migrated.map(|_| migration_note(current))));
    if current {
        let rights = tokio::time::timeout(TIMEOUT, privileges(&client, &tables))
            .await
            .unwrap_or_else(|_| Err(late()));
        checks.push(("privileges", rights));
    }
    checks
}

/// Connects with `postgres_uri`, within [`TIMEOUT`].
async fn login(cfg: &SinkConfig) -> Result<Client, String> {
    let target = cfg.postgres_uri.target();
    let tls = target.tls().map_err(|e| format!("{e}"))?;
    match tokio::time::timeout(TIMEOUT, connect(target, &tls)).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(format!(
            "cannot log in to {}: {}; check postgres_uri",
            target.describe(),
            db_message(&e)
        )),
        Err(_) => Err(format!(
            "no answer from {} within {}; check postgres_uri and that the server is reachable from here",
            target.describe(),
            humantime::format_duration(TIMEOUT)
        )),
    }
}

fn migration_note(current: bool) -> String {
    let latest = MIGRATIONS.last().map_or(0, |m| m.version);
    if current {
        format!("the tables are at migration {latest}, this sink's latest")
    } else {
        format!("migrations up to {latest} are missing; this role may create tables, so the sink applies them at its start")
    }
}

/// `Ok(true)`: every migration is applied; `Ok(false)`: some are missing
/// and this role may apply them; `Err`: it may not, or the tables are newer.
async fn migrations(client: &Client, tables: &Tables, schema: &str) -> Result<bool, String> {
    let latest = MIGRATIONS.last().map_or(0, |m| m.version);
    let exists: bool = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&tables.migrations])
        .await
        .map_err(|e| db_message(&e))?
        .get(0);
    let applied: i32 = if exists {
        client
            .query_one(
                &format!(
                    "SELECT coalesce(max(version), 0) FROM {}",
                    tables.migrations
                ),
                &[],
            )
            .await
            .map_err(|e| db_message(&e))?
            .get(0)
    } else {
        0
    };
    if applied == latest {
        return Ok(true);
    }
    if applied > latest {
        return Err(format!(
            "the tables are at migration {applied}, newer than this sink's {latest}: run the newer sink"
        ));
    }
    let may_create: bool = client
        .query_one(
            "SELECT CASE WHEN EXISTS (SELECT FROM pg_namespace WHERE nspname = $1)
                         THEN has_schema_privilege($1, 'CREATE')
                         ELSE has_database_privilege(current_database(), 'CREATE') END",
            &[&schema],
        )
        .await
        .map_err(|e| db_message(&e))?
        .get(0);
    if may_create {
        Ok(false)
    } else {
        Err(format!(
            "the tables are at migration {applied} of {latest} and this role may not create tables in schema `{schema}`: start the sink once with the owner's postgres_uri (docs/sink.md#migrations)"
        ))
    }
}

/// The rights a running sink needs on every table and the two partition
/// functions (docs/sink.md#least-privilege); `Err` lists what is missing.
async fn privileges(client: &Client, tables: &Tables) -> Result<String, String> {
    let status =
        ["_status", "_probe_state", "_transition", "_maintenance"].map(|t| tables.function(t));
    let names = [
        &status[0],
        &status[1],
        &status[2],
        &status[3],
        &tables.site,
        &tables.check,
        &tables.rejected,
        &tables.offsets,
        &tables.probe,
        &tables.per_minute,
        &tables.per_hour,
        &tables.per_day,
        &tables.fleet_per_minute,
        &tables.fleet_per_hour,
        &tables.fleet_per_day,
    ];
    let mut missing = Vec::new();
    for name in names {
        for right in ["SELECT", "INSERT", "UPDATE"] {
            let has: bool = client
                .query_one("SELECT has_table_privilege($1, $2)", &[name, &right])
                .await
                .map_err(|e| db_message(&e))?
                .get(0);
            if !has {
                missing.push(format!("{right} on {name}"));
            }
        }
    }
    for (function, args) in [
        (
            "_make_partitions",
            "(regclass, timestamptz, timestamptz, interval)",
        ),
        ("_drop_partitions", "(regclass, timestamptz)"),
    ] {
        let signature = format!("{}{args}", tables.function(function));
        let has: bool = client
            .query_one(
                "SELECT has_function_privilege($1, 'EXECUTE')",
                &[&signature],
            )
            .await
            .map_err(|e| db_message(&e))?
            .get(0);
        if !has {
            missing.push(format!("EXECUTE on {signature}"));
        }
    }
    if missing.is_empty() {
        Ok(format!(
            "SELECT, INSERT, UPDATE on the {} tables and EXECUTE on the partition functions",
            names.len()
        ))
    } else {
        Err(format!(
            "this role lacks {}; grant them (docs/sink.md#least-privilege)",
            missing.join(", ")
        ))
    }
}
