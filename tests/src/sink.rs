//! The sink under test: the per-test fixture (topic, schema, connection,
//! config), the sink run in this process, the records the tests produce and
//! what "exactly once" means in its tables; and the batch writer called
//! directly against the real PostgreSQL.

use std::time::Duration;

use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use tokio_util::sync::CancellationToken;
use website_monitor_sink::Running;

use crate::config::ConfigBuilder;
use crate::kafka::{create_topic, json_rec, produce_json};
use crate::postgres::{count, fresh_schema, pg, wait_rows};
use crate::stack::{stack, unique, Stack};
use crate::wait::WAIT;

/// The test that stops and restarts PostgreSQL holds this for writing
/// ([`SinkTest::restarting_postgres`]); every other [`SinkTest`] holds it for
/// reading, so nothing else in the test binary runs while the database is down.
pub static PG_RESTART: RwLock<()> = RwLock::const_new(());

enum Hold {
    Shared(#[allow(dead_code)] RwLockReadGuard<'static, ()>),
    Exclusive(#[allow(dead_code)] RwLockWriteGuard<'static, ()>),
}

/// What a sink test starts from: the stack, a connection to its PostgreSQL,
/// a fresh schema and a fresh topic of its own.
pub struct SinkTest {
    /// The local stack.
    pub stack: Stack,
    /// A connection to its PostgreSQL.
    pub db: tokio_postgres::Client,
    /// A schema made for this test (empty).
    pub schema: String,
    /// A topic made for this test.
    pub topic: String,
    _hold: Hold,
}

impl SinkTest {
    /// A schema named like `prefix` and a topic named like it (`_` → `-`) of
    /// `partitions` partitions; holds [`PG_RESTART`] for reading.
    pub async fn new(prefix: &str, partitions: i32) -> Self {
        Self::with(Hold::Shared(PG_RESTART.read().await), prefix, partitions).await
    }

    /// [`SinkTest::new`] for the test that restarts PostgreSQL: holds
    /// [`PG_RESTART`] for writing.
    pub async fn restarting_postgres(prefix: &str, partitions: i32) -> Self {
        Self::with(
            Hold::Exclusive(PG_RESTART.write().await),
            prefix,
            partitions,
        )
        .await
    }

    async fn with(hold: Hold, prefix: &str, partitions: i32) -> Self {
        let stack = stack();
        let db = pg(&stack.postgres_uri).await;
        let (schema, topic) = fresh_pair(&stack, &db, prefix, partitions).await;
        Self {
            stack,
            db,
            schema,
            topic,
            _hold: hold,
        }
    }

    /// Another schema and topic (`(schema, topic)`), for a test that runs
    /// several sinks one after another.
    pub async fn fresh(&self, prefix: &str, partitions: i32) -> (String, String) {
        fresh_pair(&self.stack, &self.db, prefix, partitions).await
    }

    /// The sink's configuration for this test's topic and schema on the
    /// stack's PostgreSQL ([`sink_config`]).
    pub fn config(&self) -> ConfigBuilder {
        sink_config(
            &self.stack,
            &self.topic,
            &self.schema,
            &self.stack.postgres_uri,
        )
    }

    /// Creates the sink's tables in the schema as the stack's (superuser)
    /// role would, as a DBA does before a sink with fewer rights starts.
    pub async fn migrate(&self) {
        let tables = website_monitor_sink::migrate::Tables::new(&self.schema, "site");
        let mut admin = pg(&self.stack.postgres_uri).await;
        website_monitor_sink::migrate::migrate(&mut admin, &tables)
            .await
            .expect("migrate as the DBA");
    }

    /// Applies only the migrations up to `version`, as a deployment of an
    /// older sink has them.
    pub async fn migrate_up_to(&self, version: i32) {
        use website_monitor_sink::migrate::{Tables, MIGRATIONS};
        let (db, schema) = (&self.db, &self.schema);
        let tables = Tables::new(schema, "site");
        db.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS \"{schema}\";
             CREATE TABLE \"{schema}\".site_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now());"
        ))
        .await
        .expect("the migrations table");
        for m in MIGRATIONS.iter().filter(|m| m.version <= version) {
            db.batch_execute(&format!("BEGIN; {} COMMIT;", tables.substitute(m.sql)))
                .await
                .expect("an old migration");
            db.execute(
                &format!(
                    "INSERT INTO \"{schema}\".site_migrations (version, name) VALUES ($1, $2)"
                ),
                &[&m.version, &m.name],
            )
            .await
            .expect("record the migration");
        }
    }

    /// Creates a login role with only what the sink needs to write to the
    /// schema's existing tables (no CREATE, no DELETE, not the owner) and
    /// returns its name; drop it with [`SinkTest::drop_role`].
    pub async fn least_privileged_role(&self) -> String {
        let (db, schema) = (&self.db, &self.schema);
        let role = crate::unique_ident("sink_lp_role");
        db.batch_execute(&format!(
            "CREATE ROLE \"{role}\" LOGIN;
             GRANT USAGE ON SCHEMA \"{schema}\" TO \"{role}\";
             GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA \"{schema}\" TO \"{role}\";
             GRANT USAGE ON ALL SEQUENCES IN SCHEMA \"{schema}\" TO \"{role}\";
             GRANT EXECUTE ON FUNCTION \"{schema}\".site_make_partitions(regclass, timestamptz, timestamptz, interval),
                                       \"{schema}\".site_drop_partitions(regclass, timestamptz) TO \"{role}\";"
        ))
        .await
        .expect("the least-privileged role");
        role
    }

    /// Drops a role made by [`SinkTest::least_privileged_role`].
    pub async fn drop_role(&self, role: &str) {
        self.db
            .batch_execute(&format!("DROP OWNED BY \"{role}\"; DROP ROLE \"{role}\";"))
            .await
            .expect("drop the role");
    }

    /// Produces `records` to the topic, keyed by url.
    pub async fn produce(&self, records: &[Vec<u8>]) {
        produce_json(&self.stack.brokers, &self.topic, records).await;
    }

    /// [`count`] in the schema.
    pub async fn count(&self, table: &str, filter: &str) -> i64 {
        count(&self.db, &self.schema, table, filter).await
    }

    /// [`wait_rows`] in the schema.
    pub async fn wait_rows(&self, table: &str, n: i64) {
        wait_rows(&self.db, &self.schema, table, n).await;
    }

    /// [`assert_exactly_once`] in the schema.
    pub async fn assert_exactly_once(&self, n: i64) {
        assert_exactly_once(&self.db, &self.schema, n).await;
    }
}

async fn fresh_pair(
    s: &Stack,
    db: &tokio_postgres::Client,
    prefix: &str,
    partitions: i32,
) -> (String, String) {
    let schema = fresh_schema(db, prefix).await;
    let topic = unique(&prefix.replace('_', "-"));
    create_topic(&s.brokers, &topic, partitions).await;
    (schema, topic)
}

/// A sink configuration reading `topic` from the stack's PLAINTEXT listener
/// into `schema` at `uri`, as a connector.toml would say it: a group of its
/// own, `batch_timeout` 50 ms, metrics on a free port.
pub fn sink_config(s: &Stack, topic: &str, schema: &str, uri: &str) -> ConfigBuilder {
    ConfigBuilder::sink()
        .top("log_level", "info")
        .brokers(&s.brokers)
        .set("topic", topic)
        .set("group_id", unique("sink-group"))
        .set("postgres_uri", uri)
        .set("schema", schema)
        .set("batch_timeout", "50ms")
        .set("metrics_address", "127.0.0.1:0")
}

/// Starts the sink in this process on `config`; returns it and its stop token.
pub async fn start(config: &ConfigBuilder) -> (Running, CancellationToken) {
    connector_common::logging::init("info,website_monitor_sink=debug", Default::default());
    let token = CancellationToken::new();
    let running = website_monitor_sink::start(config.sink_config(), token.clone())
        .await
        .expect("sink starts");
    (running, token)
}

/// Stops a sink [`start`] started; it must stop cleanly within [`WAIT`].
pub async fn stop(running: Running, token: CancellationToken) {
    token.cancel();
    tokio::time::timeout(WAIT, running.wait())
        .await
        .expect("sink stops within a minute")
        .expect("sink stops without error");
}

/// When [`numbered`] records start: an hour before the test process
/// started, whole seconds (inside every retention, never in the future).
pub fn numbered_start() -> f64 {
    static START: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *START.get_or_init(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
        (now - 3600) as f64
    })
}

/// Record `i` of a stream over `urls` urls: url `http://site-{i % urls}/`,
/// `checked_at` growing with `i` (by 10 ms from [`numbered_start`]), and
/// `n = i` to tell records apart.
pub fn numbered(i: usize, urls: usize) -> Vec<u8> {
    json_rec(
        serde_json::json!({"url": format!("http://site-{}/", i % urls), "checked_at": numbered_start() + i as f64 / 100.0, "n": i, "ok": true}),
    )
}

/// `schema`'s history holds `n` rows with `n` distinct `n` values (records
/// from [`numbered`]) and nothing was rejected (a duplicate would be).
pub async fn assert_exactly_once(db: &tokio_postgres::Client, schema: &str, n: i64) {
    let r = db
        .query_one(
            &format!(
                "SELECT count(*), count(DISTINCT (record->>'n')::int) FROM \"{schema}\".site_check_record"
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (r.get::<_, i64>(0), r.get::<_, i64>(1)),
        (n, n),
        "each record exactly once in site_check"
    );
    assert_eq!(
        count(db, schema, "site_rejected", "").await,
        0,
        "no record was rejected (a duplicate would be)"
    );
}

/// A connection holding `ACCESS EXCLUSIVE` on a schema's latest-state table,
/// so every write of the sink waits on it until [`LatestTableLock::release`].
pub struct LatestTableLock(tokio_postgres::Client);

impl LatestTableLock {
    /// Takes the lock on `schema.site`.
    pub async fn take(uri: &str, schema: &str) -> Self {
        let client = pg(uri).await;
        client
            .batch_execute(&format!(
                "BEGIN; LOCK TABLE \"{schema}\".site IN ACCESS EXCLUSIVE MODE"
            ))
            .await
            .unwrap();
        Self(client)
    }

    /// Lets the waiting writes go on.
    pub async fn release(self) {
        self.0.batch_execute("ROLLBACK").await.unwrap();
    }
}

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
/// `max_record_bytes` 1 MiB and `max_url_bytes` 2048, its Kafka timestamp
/// [`numbered_start`] (the check time of a record without `checked_at`).
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
        timestamp: Some(std::time::UNIX_EPOCH + Duration::from_secs_f64(numbered_start())),
        received_at: std::time::SystemTime::now(),
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

/// The value with every number as an f64 (`1` and `1.0` are the same JSON number).
pub fn numbers_as_f64(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Number(n) => serde_json::json!(n.as_f64().unwrap()),
        Value::Array(a) => Value::Array(a.into_iter().map(numbers_as_f64).collect()),
        Value::Object(o) => {
            Value::Object(o.into_iter().map(|(k, v)| (k, numbers_as_f64(v))).collect())
        }
        other => other,
    }
}
