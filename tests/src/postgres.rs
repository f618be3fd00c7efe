//! PostgreSQL for tests: connections, fresh schemas, row counts and waits,
//! and connection strings derived from the stack's.

use crate::stack::unique_ident;
use crate::wait::{eventually, WAIT};

/// Connects to PostgreSQL at `uri` (plain TCP) and drives the connection in the background.
pub async fn pg(uri: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(uri, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to {uri}: {e}; is `make up` running?"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// The first column of every row `sql` returns (no parameters).
pub async fn column<T>(client: &tokio_postgres::Client, sql: &str) -> Vec<T>
where
    T: for<'a> tokio_postgres::types::FromSql<'a>,
{
    client
        .query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Creates a fresh schema named like [`unique_ident`] and returns its name.
pub async fn fresh_schema(client: &tokio_postgres::Client, prefix: &str) -> String {
    let name = unique_ident(prefix);
    client
        .batch_execute(&format!("CREATE SCHEMA \"{name}\""))
        .await
        .expect("create schema");
    name
}

/// The number of rows of `schema.table` that `filter` (a `WHERE …` clause, or
/// empty) lets through.
pub async fn count(db: &tokio_postgres::Client, schema: &str, table: &str, filter: &str) -> i64 {
    db.query_one(
        &format!("SELECT count(*) FROM \"{schema}\".\"{table}\" {filter}"),
        &[],
    )
    .await
    .unwrap_or_else(|e| panic!("counting {schema}.{table}: {e}"))
    .get(0)
}

/// Whether `schema.table` exists.
pub async fn table_exists(db: &tokio_postgres::Client, schema: &str, table: &str) -> bool {
    db.query_one(
        "SELECT to_regclass($1) IS NOT NULL",
        &[&format!("\"{schema}\".\"{table}\"")],
    )
    .await
    .unwrap()
    .get(0)
}

/// Waits until `schema.table` holds exactly `n` rows (and fails at once if it holds more).
pub async fn wait_rows(db: &tokio_postgres::Client, schema: &str, table: &str, n: i64) {
    eventually(&format!("{n} rows in {schema}.{table}"), WAIT, || async {
        if !table_exists(db, schema, table).await {
            return None;
        }
        let c = count(db, schema, table, "").await;
        assert!(
            c <= n,
            "{schema}.{table} holds {c} rows, more than the {n} records produced"
        );
        (c == n).then_some(())
    })
    .await;
}

/// Waits until `schema.table` exists and holds at least `n` rows; returns the count.
pub async fn rows_at_least(db: &tokio_postgres::Client, schema: &str, table: &str, n: i64) -> i64 {
    eventually(&format!("{n} rows in {schema}.{table}"), WAIT, || async {
        if !table_exists(db, schema, table).await {
            return None;
        }
        let c = count(db, schema, table, "").await;
        (c >= n).then_some(c)
    })
    .await
}

/// `uri` (a URL) with `key=value` added to its query string.
pub fn with_param(uri: &str, key: &str, value: &str) -> String {
    let sep = if uri.contains('?') { '&' } else { '?' };
    format!("{uri}{sep}{key}={value}")
}

/// `uri` as a `key=value` string with `user`, the host name the client
/// believes it talks to (`host`, used for TLS verification) and, when given,
/// the address it really connects to (`hostaddr`) and the port.
pub fn kv_uri(
    uri: &str,
    user: Option<&str>,
    host: Option<&str>,
    hostaddr: Option<&str>,
    port: Option<u16>,
) -> String {
    let c: tokio_postgres::Config = uri.parse().expect("stack postgres_uri parses");
    let orig_host = match c.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".to_owned(),
    };
    let mut out = format!(
        "host={} port={} dbname={} user={}",
        host.unwrap_or(&orig_host),
        port.unwrap_or_else(|| c.get_ports().first().copied().unwrap_or(5432)),
        c.get_dbname().unwrap_or("postgres"),
        user.or(c.get_user()).unwrap_or("postgres"),
    );
    if let Some(a) = hostaddr {
        out.push_str(&format!(" hostaddr={a}"));
    }
    if let Some(pw) = c.get_password() {
        out.push_str(&format!(" password='{}'", String::from_utf8_lossy(pw)));
    }
    out
}

/// The PostgreSQL server's port in the connection string `uri`.
pub fn pg_port(uri: &str) -> u16 {
    let c: tokio_postgres::Config = uri.parse().expect("stack postgres_uri parses");
    c.get_ports().first().copied().unwrap_or(5432)
}
