//! Fixtures for tests of the sink's batch writer against the real PostgreSQL.

use std::time::Duration;

use crate::{fresh_schema, pg, Stack};

/// A fresh schema with the sink's tables, and a prepared batch connection to it.
pub async fn batch_conn(
    s: &Stack,
    prefix: &str,
) -> (
    tokio_postgres::Client,
    String,
    website_monitor_sink::sql::Conn,
) {
    let db = pg(&s.postgres_uri).await;
    let schema = fresh_schema(&db, prefix).await;
    let conn = batch_conn_on(s, &schema).await;
    (db, schema, conn)
}

/// A new prepared batch connection to `schema` (its tables created when missing).
pub async fn batch_conn_on(s: &Stack, schema: &str) -> website_monitor_sink::sql::Conn {
    use website_monitor_sink::migrate::{migrate, Tables};
    use website_monitor_sink::sql::{Conn, Sql};
    let tables = Tables::new(schema, "site");
    let mut client = pg(&s.postgres_uri).await;
    migrate(&mut client, &tables).await.expect("migrate");
    Conn::prepare(client, &Sql::new(&tables))
        .await
        .expect("prepare")
}

/// A consumed record at `offset` of partition 0 of `topic`, decoded with
/// `max_record_bytes` 1 MiB and `max_url_bytes` 2048.
pub fn batch_msg(topic: &str, offset: i64, json: &str) -> website_monitor_sink::batch::Msg {
    batch_msg_bytes(topic, offset, json.as_bytes())
}

/// [`batch_msg`] for any bytes.
pub fn batch_msg_bytes(topic: &str, offset: i64, value: &[u8]) -> website_monitor_sink::batch::Msg {
    use website_monitor_sink::decode::{decode, Limits};
    website_monitor_sink::batch::Msg {
        topic: topic.into(),
        partition: 0,
        offset,
        key: None,
        timestamp: Some(std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
        payload: Some(value.to_vec()),
        decoded: decode(
            Some(value),
            Limits {
                max_record_bytes: 1 << 20,
                max_url_bytes: 2048,
            },
        ),
    }
}
