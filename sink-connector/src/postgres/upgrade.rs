//! Upgrading a deployment from the history of migrations 0001–0005 (one
//! unpartitioned table, each record whole as `jsonb`): migration 0006 renames
//! it `<table>_check_legacy`; this moves its rows into the new history and
//! the rollups, with the same conversion as live records
//! ([`crate::row::Compact`]), then drops it.
//!
//! Rows move in chunks, each in its own transaction that deletes them from
//! the old table and writes them to the new ones: a chunk is moved whole or
//! not at all, a kill between chunks loses and doubles nothing (the next
//! start goes on), and sinks started together move different rows (a row
//! deleted by one is not returned to another). Every row is kept, whatever
//! the retention (the next retention run applies it).

use std::time::{Duration, SystemTime};

use tokio_postgres::{Client, GenericClient};

use crate::postgres::history::{self, Check};
use crate::postgres::migrate::Tables;
use crate::postgres::partitions::{Layout, Retention};
use crate::postgres::sql::Conn;

/// Rows moved per transaction.
const CHUNK: i64 = 5_000;

/// Moves every row of the old history table, if there is one, within
/// `budget`; returns how many were moved and whether the old table is gone.
pub async fn move_legacy_history(
    conn: &mut Conn,
    tables: &Tables,
    budget: Duration,
) -> Result<(u64, bool), tokio_postgres::Error> {
    let legacy = tables.function("_check_legacy");
    if !exists(&conn.client, &legacy).await? {
        return Ok((0, true));
    }
    let started = std::time::Instant::now();
    // Every row is kept: retention applies later, to whole partitions.
    let keep_all = Retention {
        history: crate::config::MAX_RETENTION,
        rejects: crate::config::MAX_RETENTION,
        minute: crate::config::MAX_RETENTION,
        hour: crate::config::MAX_RETENTION,
        day: crate::config::MAX_RETENTION,
        history_partition: conn.layout.history.span,
        hold_undelivered: false,
    };
    let layout = Layout::new(tables, keep_all);
    let take = format!(
        "DELETE FROM {legacy} WHERE ctid = ANY (ARRAY(SELECT ctid FROM {legacy} LIMIT {CHUNK} FOR UPDATE SKIP LOCKED))
         RETURNING site_id, checked_at, \"partition\", data::text"
    );
    let mut moved = 0u64;
    while started.elapsed() < budget {
        let n = move_chunk(conn, &layout, &take).await?;
        moved += n;
        if n == 0 && drop_if_empty(&mut conn.client, &legacy).await? {
            tracing::info!(moved, "the old history table is converted and dropped");
            return Ok((moved, true));
        }
    }
    tracing::info!(
        moved,
        "converting the old history table; going on at the next start of a writer"
    );
    Ok((moved, false))
}

/// Moves one chunk in one transaction; returns how many rows.
async fn move_chunk(
    conn: &mut Conn,
    layout: &Layout,
    take: &str,
) -> Result<u64, tokio_postgres::Error> {
    let now = SystemTime::now();
    let tx = conn.client.transaction().await?;
    let rows = tx.query(take, &[]).await?;
    let checks: Vec<Check<'_>> = rows
        .iter()
        .map(|r| Check::of_text(r.get(3), r.get(2), r.get(0), r.get(1)))
        .collect();
    let mut needs = Layout::needs(&layout.history, checks.iter().map(|c| c.at));
    for (_, table) in layout.rollup_tables() {
        needs.extend(Layout::needs(table, checks.iter().map(|c| c.at)));
    }
    layout.make_in(&tx, &needs).await?;
    let st = &conn.statements;
    let written = history::write(&tx, st, layout, &checks, now).await?;
    // Which old checks fell in a maintenance window was never recorded.
    let none = std::collections::HashSet::new();
    history::add_rollups(&tx, st, layout, &checks, &written, &none, now).await?;
    tx.commit().await?;
    Ok(rows.len() as u64)
}

/// Drops the old table if it is empty, under a lock that waits for every
/// sink still moving a chunk of it (an empty chunk only says that no row was
/// free); returns whether it is gone.
async fn drop_if_empty(client: &mut Client, legacy: &str) -> Result<bool, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    if !exists(&tx, legacy).await? {
        return Ok(true);
    }
    tx.batch_execute(&format!("LOCK TABLE {legacy} IN ACCESS EXCLUSIVE MODE"))
        .await?;
    let empty: bool = tx
        .query_one(&format!("SELECT NOT EXISTS (SELECT FROM {legacy})"), &[])
        .await?
        .get(0);
    if empty {
        tx.batch_execute(&format!("DROP TABLE {legacy}")).await?;
    }
    tx.commit().await?;
    Ok(empty)
}

async fn exists(client: &impl GenericClient, table: &str) -> Result<bool, tokio_postgres::Error> {
    let row = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
        .await?;
    Ok(row.get(0))
}
