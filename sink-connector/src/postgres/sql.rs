//! The SQL of the batch transaction, with the sink's (quoted) table names
//! filled in; connecting to PostgreSQL, and a connection with every
//! statement prepared on it.

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use tokio_postgres::{Client, Statement};

use tokio_postgres_rustls::MakeRustlsConnect;

use crate::postgres::error::db_message;
use crate::postgres::migrate::Tables;
use crate::postgres::partitions::{Layout, Retention};
use crate::postgres::status_rows::{StatusSql, StatusStatements};
use crate::status::settings::StatusConfig;
use crate::status::Policy;
use crate::uri::PgTarget;

/// Connects once to `target` and drives the connection on a background task.
pub async fn connect(
    target: &PgTarget,
    tls: &MakeRustlsConnect,
) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = target.config.connect(tls.clone()).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %db_message(&e), "PostgreSQL connection ended");
        }
    });
    Ok(client)
}

/// Connects like [`connect`] for a connection that holds a session lock
/// (the outbox's): the server ends the session once it stays idle for
/// `idle` (a frozen sink gives the lock up), and this side gives up on a
/// server that stops acknowledging within about 30 seconds (TCP keepalives
/// and `tcp_user_timeout`). A server without `idle_session_timeout`
/// (before PostgreSQL 14) is used without it.
pub async fn connect_outbox(
    target: &PgTarget,
    tls: &MakeRustlsConnect,
    idle: Duration,
) -> Result<Client, tokio_postgres::Error> {
    let mut config = target.config.clone();
    config
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(10))
        .keepalives_interval(Duration::from_secs(5))
        .keepalives_retries(4)
        .tcp_user_timeout(Duration::from_secs(30));
    let (client, connection) = config.connect(tls.clone()).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %db_message(&e), "PostgreSQL connection ended");
        }
    });
    let set = format!("SET idle_session_timeout = {}", idle.as_millis());
    if let Err(e) = client.batch_execute(&set).await {
        if e.as_db_error().is_none() {
            return Err(e);
        }
        tracing::debug!(error = %db_message(&e), "idle_session_timeout not set");
    }
    Ok(client)
}

/// A `jsonb`/`json` parameter from JSON text already validated in Rust:
/// sent as-is, never re-serialised.
#[derive(Debug)]
pub(crate) struct RawJson<'a>(pub(crate) &'a [u8]);

impl ToSql for RawJson<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        if *ty == Type::JSONB {
            out.put_u8(1);
        }
        out.put_slice(self.0);
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        matches!(*ty, Type::JSON | Type::JSONB)
    }

    to_sql_checked!();
}

/// The SQL of the batch transaction, with quoted table names filled in.
#[derive(Debug, Clone)]
pub struct Sql {
    select_offsets: String,
    init_offsets: String,
    upsert_site: String,
    site_ids: String,
    copy_check: String,
    copy_rejected: String,
    update_offsets: String,
    probe_ids: String,
    add_probes: String,
    add_rollups: [String; 3],
    add_fleet: [String; 3],
    layout: Layout,
    pub(crate) status: StatusSql,
    /// The `[sink.status]` policy, compiled once.
    pub(crate) policy: Arc<Policy>,
}

impl Sql {
    /// Builds every statement for `tables`, with the default retentions.
    pub fn new(t: &Tables) -> Self {
        Self::with_retention(t, Retention::default())
    }

    /// Builds every statement for `tables`, whose partitions keep `retention`.
    pub fn with_retention(t: &Tables, retention: Retention) -> Self {
        Self {
            layout: Layout::new(t, retention),
            status: StatusSql::new(t),
            policy: Arc::new(
                Policy::from_config(&StatusConfig::default()).expect("the default policy is valid"),
            ),
            select_offsets: format!(
                "SELECT o.topic, o.\"partition\", o.next_offset
                 FROM {o} o JOIN unnest($1::text[], $2::int4[]) AS k(t, p)
                      ON o.topic = k.t AND o.\"partition\" = k.p
                 ORDER BY o.topic, o.\"partition\"
                 FOR UPDATE OF o",
                o = t.offsets
            ),
            init_offsets: format!(
                "INSERT INTO {o} (topic, \"partition\", next_offset)
                 SELECT k.t, k.p,
                     COALESCE((SELECT max(r.\"offset\") + 1 FROM {r} r WHERE r.topic = k.t AND r.\"partition\" = k.p), 0)
                 FROM unnest($1::text[], $2::int4[]) AS k(t, p)
                 ORDER BY k.t, k.p
                 ON CONFLICT DO NOTHING",
                o = t.offsets,
                r = t.rejected
            ),
            upsert_site: format!(
                "WITH up AS (
                     INSERT INTO {s} AS s (url, data, checked_at, updated_at)
                     SELECT u, d, c, now() FROM unnest($1::text[], $2::jsonb[], $3::timestamptz[]) AS t(u, d, c)
                     ON CONFLICT (url) DO UPDATE
                         SET data = excluded.data, checked_at = excluded.checked_at, updated_at = excluded.updated_at
                         WHERE s.checked_at IS NULL OR excluded.checked_at >= s.checked_at
                     RETURNING s.id, s.url)
                 SELECT id::int8, url, true FROM up
                 UNION ALL
                 SELECT id::int8, url, false FROM {s} WHERE url = ANY($1) AND url NOT IN (SELECT url FROM up)",
                s = t.site
            ),
            site_ids: format!("SELECT id::int8, url FROM {s} WHERE url = ANY($1)", s = t.site),
            copy_check: format!(
                "COPY {c} ({HISTORY_COLUMNS}) FROM STDIN (FORMAT binary)",
                c = t.check
            ),
            copy_rejected: format!(
                "COPY {r} (topic, \"partition\", \"offset\", key, raw, raw_length, raw_sha256, reason, detail, kafka_timestamp) FROM STDIN (FORMAT binary)",
                r = t.rejected
            ),
            update_offsets: format!(
                "UPDATE {o} AS o SET next_offset = GREATEST(o.next_offset, v.n), updated_at = now()
                 FROM unnest($1::text[], $2::int4[], $3::int8[]) AS v(t, p, n)
                 WHERE o.topic = v.t AND o.\"partition\" = v.p",
                o = t.offsets
            ),
            probe_ids: format!("SELECT id, name FROM {p} WHERE name = ANY($1)", p = t.probe),
            add_probes: format!(
                "INSERT INTO {p} (name) SELECT n FROM unnest($1::text[]) AS n ORDER BY n ON CONFLICT (name) DO NOTHING",
                p = t.probe
            ),
            add_rollups: [&t.per_minute, &t.per_hour, &t.per_day]
                .map(|table| add_rollups(table, "site_id")),
            add_fleet: [&t.fleet_per_minute, &t.fleet_per_hour, &t.fleet_per_day]
                .map(|table| add_rollups(table, "shard")),
        }
    }
}

/// The history columns, in the order the COPY writes them.
pub(crate) const HISTORY_COLUMNS: &str = "checked_at, site_id, probe_id, present, \
     duration_us, dns_us, connect_us, tls_us, ttfb_us, transfer_us, response_bytes, status_code, \
     redirects, http_version, tls_version, cert_days_left, schema_version, ok, re_check, \
     cert_not_after, ip, error_kind, error_message, extra, insert_delay_ms, ipv4, interval_ms, cert_after_s";

/// Adds a batch's counts to the rollup rows of `table` (keyed by `key`:
/// `site_id`, or the fleet tables' `shard`): one row per key,
/// given as arrays in key order (the lock order); each row's histogram and
/// failure counts are a slice of one flat array (`$12`, `$13`) between the
/// bounds in `$14..$17`; `$18`: the checks made during maintenance.
fn add_rollups(table: &str, key: &str) -> String {
    let (latency, failures) = (
        counts_add("r.latency", "excluded.latency"),
        counts_add("r.failures", "excluded.failures"),
    );
    format!(
        "INSERT INTO {table} AS r ({key}, probe_id, bucket, checks, ok, failed, responses,
             duration_min_us, duration_max_us, duration_sum_us, cert_days_min, latency, failures,
             maintenance)
         SELECT v.s, v.p, v.b, v.c, v.o, v.f, v.r, v.mn, v.mx, v.sm, v.cd,
                CASE WHEN v.lh > v.ll THEN ($12::int8[])[v.ll + 1 : v.lh] END,
                CASE WHEN v.fh > v.fl THEN ($13::int8[])[v.fl + 1 : v.fh] END, v.mt
         FROM unnest($1::int8[], $2::int4[], $3::timestamptz[], $4::int4[], $5::int4[], $6::int4[],
                     $7::int4[], $8::int4[], $9::int4[], $10::int8[], $11::int2[],
                     $14::int4[], $15::int4[], $16::int4[], $17::int4[], $18::int4[])
              AS v(s, p, b, c, o, f, r, mn, mx, sm, cd, ll, lh, fl, fh, mt)
         ON CONFLICT ({key}, probe_id, bucket) DO UPDATE SET
             checks = r.checks + excluded.checks,
             ok = r.ok + excluded.ok,
             failed = r.failed + excluded.failed,
             maintenance = r.maintenance + excluded.maintenance,
             responses = r.responses + excluded.responses,
             duration_min_us = LEAST(r.duration_min_us, excluded.duration_min_us),
             duration_max_us = GREATEST(r.duration_max_us, excluded.duration_max_us),
             duration_sum_us = r.duration_sum_us + excluded.duration_sum_us,
             cert_days_min = LEAST(r.cert_days_min, excluded.cert_days_min),
             latency = CASE WHEN excluded.latency IS NULL THEN r.latency
                            ELSE {latency} END,
             failures = CASE WHEN excluded.failures IS NULL THEN r.failures
                             ELSE {failures} END"
    )
}

/// SQL adding two sparse count arrays (elements `bucket << 32 | count`, in
/// bucket order; NULL when both are): a subquery in the statement, not a
/// call of an SQL function (PostgreSQL starts an executor for every call of
/// one that it cannot inline, which cost more than the addition; see
/// docs/benchmarks.md, "The sink against COPY: session 12").
fn counts_add(a: &str, b: &str) -> String {
    format!(
        "(SELECT array_agg((k << 32) | n ORDER BY k)
          FROM (SELECT e >> 32 AS k, sum(e & 4294967295)::int8 AS n
                FROM unnest({a} || {b}) AS e GROUP BY 1) AS s)"
    )
}

/// The batch statements, prepared on one connection.
#[derive(Debug)]
pub(crate) struct Statements {
    pub(crate) select_offsets: Statement,
    pub(crate) init_offsets: Statement,
    pub(crate) upsert_site: Statement,
    pub(crate) site_ids: Statement,
    pub(crate) copy_check: Statement,
    pub(crate) copy_rejected: Statement,
    pub(crate) update_offsets: Statement,
    pub(crate) probe_ids: Statement,
    pub(crate) add_probes: Statement,
    /// Per rollup level, finest first.
    pub(crate) add_rollups: [Statement; 3],
    /// Per fleet rollup level, finest first.
    pub(crate) add_fleet: [Statement; 3],
    /// The status tables' statements.
    pub(crate) status: StatusStatements,
}

/// A connection with the batch statements prepared on it.
pub struct Conn {
    /// The client.
    pub client: Client,
    pub(crate) statements: Statements,
    /// The partitioned tables, for making partitions before a batch.
    pub(crate) layout: Layout,
    /// Partitions (table, start) this connection has made or found: not
    /// asked for again. A failed attempt drops the connection, and this with
    /// it, so a partition an operator detached is looked for again.
    pub(crate) partitions_known: std::collections::HashSet<(String, std::time::SystemTime)>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").finish_non_exhaustive()
    }
}

impl Conn {
    /// Prepares every statement of `sql` on `client`.
    pub async fn prepare(client: Client, sql: &Sql) -> Result<Self, tokio_postgres::Error> {
        let statements = Statements {
            select_offsets: client.prepare(&sql.select_offsets).await?,
            init_offsets: client.prepare(&sql.init_offsets).await?,
            upsert_site: client.prepare(&sql.upsert_site).await?,
            site_ids: client.prepare(&sql.site_ids).await?,
            copy_check: client.prepare(&sql.copy_check).await?,
            copy_rejected: client.prepare(&sql.copy_rejected).await?,
            update_offsets: client.prepare(&sql.update_offsets).await?,
            probe_ids: client.prepare(&sql.probe_ids).await?,
            add_probes: client.prepare(&sql.add_probes).await?,
            add_rollups: [
                client.prepare(&sql.add_rollups[0]).await?,
                client.prepare(&sql.add_rollups[1]).await?,
                client.prepare(&sql.add_rollups[2]).await?,
            ],
            add_fleet: [
                client.prepare(&sql.add_fleet[0]).await?,
                client.prepare(&sql.add_fleet[1]).await?,
                client.prepare(&sql.add_fleet[2]).await?,
            ],
            status: StatusStatements::prepare(&client, &sql.status, Arc::clone(&sql.policy))
                .await?,
        };
        Ok(Self {
            client,
            statements,
            layout: sql.layout.clone(),
            partitions_known: Default::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_quotes_every_table() {
        let s = Sql::new(&Tables::new("sch", "t\"x"));
        assert!(s.copy_check.contains("\"sch\".\"t\"\"x_check\""));
        assert!(s.upsert_site.contains("\"sch\".\"t\"\"x\""));
    }
}
