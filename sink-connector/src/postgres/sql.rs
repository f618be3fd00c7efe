//! The SQL of the batch transaction, with the sink's (quoted) table names
//! filled in; connecting to PostgreSQL, and a connection with every
//! statement prepared on it.

use std::error::Error as StdError;

use bytes::{BufMut, BytesMut};
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use tokio_postgres::{Client, Statement};

use tokio_postgres_rustls::MakeRustlsConnect;

use crate::postgres::error::db_message;
use crate::postgres::migrate::Tables;
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
}

impl Sql {
    /// Builds every statement for `tables`.
    pub fn new(t: &Tables) -> Self {
        Self {
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
                 SELECT k.t, k.p, GREATEST(
                     COALESCE((SELECT max(c.\"offset\") + 1 FROM {c} c WHERE c.topic = k.t AND c.\"partition\" = k.p), 0),
                     COALESCE((SELECT max(r.\"offset\") + 1 FROM {r} r WHERE r.topic = k.t AND r.\"partition\" = k.p), 0))
                 FROM unnest($1::text[], $2::int4[]) AS k(t, p)
                 ORDER BY k.t, k.p
                 ON CONFLICT DO NOTHING",
                o = t.offsets,
                c = t.check,
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
                "COPY {c} (site_id, checked_at, ok, status_code, duration, data, topic, \"partition\", \"offset\") FROM STDIN (FORMAT binary)",
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
        }
    }
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
}

/// A connection with the batch statements prepared on it.
pub struct Conn {
    /// The client.
    pub client: Client,
    pub(crate) statements: Statements,
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
        };
        Ok(Self { client, statements })
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
