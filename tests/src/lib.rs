//! Test harness for the website-monitor pair: the real Kafka and PostgreSQL of
//! `make up` (never a mock), unique names per test, and small helpers to
//! produce, consume and query.
//!
//! The stack is described by `.stack/env`, written by `scripts/stack.sh up`;
//! `WM_*` variables in the environment take precedence, so the same tests run
//! against another Kafka/PostgreSQL. Test files live in `tests/tests/`:
//! `smoke.rs` (the harness reaches the services), `source.rs`, `sink.rs`,
//! `pipeline.rs` (the pair end to end), `sasl.rs` (the pair over SASL_SSL
//! with SCRAM) and `outage.rs` (a 60 s broker outage: it stops and restarts
//! the local broker, alone in its test binary). Child processes of the
//! connector binaries: [`Proc`]; stopping a service of the stack and starting
//! it again: [`stack_script`], [`RestartOnDrop`].

pub mod hostile;
pub mod http;
pub mod sink;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

/// Where the local stack's services are.
#[derive(Debug, Clone)]
pub struct Stack {
    /// PLAINTEXT bootstrap address.
    pub brokers: String,
    /// mTLS bootstrap address.
    pub ssl_brokers: String,
    /// SASL_SSL (SCRAM) bootstrap address; its TLS is verified with `ca.pem`.
    pub sasl_brokers: String,
    /// The SCRAM user that listener accepts.
    pub sasl_username: String,
    /// Its password.
    pub sasl_password: String,
    /// Folder with `ca.pem`, `client.pem`, `client.key`.
    pub tls_dir: PathBuf,
    /// PostgreSQL connection string (database `website_monitor`).
    pub postgres_uri: String,
    /// Whether the PostgreSQL is the one `scripts/stack.sh` started (and may restart).
    pub pg_ours: bool,
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Reads `.stack/env` (and `WM_*` overrides). Panics with a clear message when
/// the stack is not up, since every caller needs it.
pub fn stack() -> Stack {
    let file = repo_root().join(".stack/env");
    let mut vars: HashMap<String, String> = std::fs::read_to_string(&file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
        .collect();
    for (k, v) in std::env::vars() {
        if k.starts_with("WM_") {
            vars.insert(k, v);
        }
    }
    let get = |k: &str| {
        vars.get(k).cloned().unwrap_or_else(|| {
            panic!(
                "{k} is not known: run `make up` first ({} is missing or incomplete)",
                file.display()
            )
        })
    };
    Stack {
        brokers: get("WM_KAFKA_BROKERS"),
        ssl_brokers: get("WM_KAFKA_SSL_BROKERS"),
        sasl_brokers: get("WM_KAFKA_SASL_BROKERS"),
        sasl_username: get("WM_KAFKA_SASL_USERNAME"),
        sasl_password: get("WM_KAFKA_SASL_PASSWORD"),
        tls_dir: PathBuf::from(get("WM_TLS_DIR")),
        postgres_uri: get("WM_POSTGRES_URI"),
        pg_ours: vars.get("WM_PG_OURS").is_some_and(|v| v == "1"),
    }
}

/// A name no other test or earlier run uses: `prefix-<pid>-<time>-<n>`.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis();
    format!(
        "{prefix}-{}-{t}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A PostgreSQL-safe identifier (lowercase letters, digits, `_`) unique like [`unique`].
pub fn unique_ident(prefix: &str) -> String {
    unique(prefix).replace('-', "_").to_ascii_lowercase()
}

/// Whether `topic` is a name from [`unique`] made before `cutoff_ms`
/// (milliseconds since the epoch): `<prefix>-<pid>-<13-digit time>-<n>`.
pub fn made_by_unique_before(topic: &str, cutoff_ms: u128) -> bool {
    let mut parts = topic.rsplitn(4, '-');
    let (Some(n), Some(t), Some(pid), Some(prefix)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    !prefix.is_empty()
        && digits(n)
        && digits(pid)
        && t.len() == 13
        && digits(t)
        && t.parse::<u128>().is_ok_and(|t| t < cutoff_ms)
}

/// Whether the process whose pid a [`unique`] name holds still runs here (a
/// bench or test run longer than the sweep's age keeps its topics).
fn maker_alive(topic: &str) -> bool {
    topic
        .rsplit('-')
        .nth(2)
        .is_some_and(|pid| Path::new("/proc").join(pid).exists())
}

/// Deletes the topics that tests and benchmarks made (names from [`unique`])
/// more than `age` ago by a process that is no longer running, and returns
/// how many. A long-lived local stack
/// otherwise keeps every test run's topics (about 80 MB per `make test`).
pub async fn delete_stale_topics(brokers: &str, age: Duration) -> Result<usize, String> {
    let cutoff = SystemTime::now()
        .checked_sub(age)
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis());
    let brokers_owned = brokers.to_owned();
    let names = tokio::task::spawn_blocking(move || -> Result<Vec<String>, String> {
        let consumer: rdkafka::consumer::BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers_owned)
            .create()
            .map_err(|e| format!("metadata client for {brokers_owned}: {e}"))?;
        let metadata = consumer
            .fetch_metadata(None, Duration::from_secs(10))
            .map_err(|e| format!("listing topics on {brokers_owned}: {e}"))?;
        Ok(metadata
            .topics()
            .iter()
            .map(|t| t.name().to_owned())
            .collect())
    })
    .await
    .map_err(|e| format!("listing topics: {e}"))??;
    let stale: Vec<String> = names
        .into_iter()
        .filter(|name| made_by_unique_before(name, cutoff) && !maker_alive(name))
        .collect();
    delete_topics(brokers, &stale).await?;
    Ok(stale.len())
}

/// Creates `topic` with `partitions` partitions and waits until it exists.
/// The first call in a process first deletes the topics earlier runs left
/// behind more than an hour ago ([`delete_stale_topics`]; a failure there is
/// only printed).
pub async fn create_topic(brokers: &str, topic: &str, partitions: i32) {
    static SWEPT: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    SWEPT
        .get_or_init(|| async {
            if let Err(e) = delete_stale_topics(brokers, Duration::from_secs(3600)).await {
                eprintln!("warning: old test topics were not deleted: {e}");
            }
        })
        .await;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("create_topics request");
    for r in results {
        if let Err((name, code)) = r {
            if code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists {
                panic!("creating topic {name}: {code}");
            }
        }
    }
}

/// Deletes `topics` (those that exist); a failure is returned, not a panic,
/// so a caller cleaning up can report it and go on.
pub async fn delete_topics(brokers: &str, topics: &[String]) -> Result<(), String> {
    if topics.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .map_err(|e| format!("admin client for {brokers}: {e}"))?;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let results = admin
        .delete_topics(
            &names,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .map_err(|e| format!("deleting topics {names:?}: {e}"))?;
    let failed: Vec<String> = results
        .into_iter()
        .filter_map(Result::err)
        .filter(|(_, code)| *code != rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition)
        .map(|(name, code)| format!("{name}: {code}"))
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("deleting topics: {}", failed.join(", ")))
    }
}

/// A reqwest client builder for tests and the bench (loopback HTTP, no
/// proxy).
pub fn http_client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder().no_proxy()
}

/// A producer to `brokers` with acks=all, for tests.
pub fn producer(brokers: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .create()
        .expect("producer")
}

/// Produces `(key, value)` pairs to `topic` and waits for every acknowledgement.
pub async fn produce(brokers: &str, topic: &str, records: &[(Option<&[u8]>, &[u8])]) {
    let p = producer(brokers);
    let sends = records.iter().map(|(k, v)| {
        let mut r: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).payload(*v);
        if let Some(k) = k {
            r = r.key(*k);
        }
        p.send(r, Duration::from_secs(30))
    });
    for res in futures::future::join_all(sends).await {
        res.unwrap_or_else(|(e, _)| panic!("produce to {topic}: {e}"));
    }
}

/// One consumed message.
#[derive(Debug, Clone)]
pub struct Consumed {
    /// The key, if any.
    pub key: Option<Vec<u8>>,
    /// The value.
    pub payload: Vec<u8>,
    /// The message timestamp in milliseconds, if any.
    pub timestamp_ms: Option<i64>,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Header names.
    pub headers: Vec<String>,
}

impl Consumed {
    /// The value parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).expect("record is JSON")
    }
}

/// Reads `topic` from the beginning until nothing new arrives for `idle`
/// (or `max` passed), returning every message.
pub async fn consume_all(
    brokers: &str,
    topic: &str,
    idle: Duration,
    max: Duration,
) -> Vec<Consumed> {
    let c: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("test-reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    c.subscribe(&[topic]).expect("subscribe");
    let start = Instant::now();
    let mut out = Vec::new();
    while start.elapsed() < max {
        match tokio::time::timeout(idle, c.recv()).await {
            Ok(Ok(m)) => out.push(Consumed {
                key: m.key().map(<[u8]>::to_vec),
                payload: m.payload().unwrap_or_default().to_vec(),
                timestamp_ms: m.timestamp().to_millis(),
                partition: m.partition(),
                offset: m.offset(),
                headers: m
                    .headers()
                    .map(|h| h.iter().map(|x| x.key.to_owned()).collect())
                    .unwrap_or_default(),
            }),
            Ok(Err(e)) => panic!("consuming {topic}: {e}"),
            Err(_) if !out.is_empty() => break,
            Err(_) => {}
        }
    }
    out
}

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

/// Polls `f` every 100 ms until it returns `Some`, or panics after `max` naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, max: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if start.elapsed() > max {
            panic!("timed out after {max:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A source and a sink running in this process, each with its own stop
/// token; the sink starts first, so it is in the group before the first record.
pub struct Pair {
    source: website_monitor_source::Running,
    sink: website_monitor_sink::Running,
    stop_source: tokio_util::sync::CancellationToken,
    stop_sink: tokio_util::sync::CancellationToken,
}

impl Pair {
    /// Starts the sink, then the source.
    pub async fn start(
        source: connector_common::Loaded<website_monitor_source::SourceConfig>,
        sink: connector_common::Loaded<website_monitor_sink::SinkConfig>,
    ) -> Self {
        let stop_source = tokio_util::sync::CancellationToken::new();
        let stop_sink = tokio_util::sync::CancellationToken::new();
        let sink = website_monitor_sink::start(sink, stop_sink.clone())
            .await
            .expect("sink starts");
        let source = website_monitor_source::start(
            source,
            website_monitor_source::RunOptions::default(),
            stop_source.clone(),
        )
        .await
        .expect("source starts");
        Pair {
            source,
            sink,
            stop_source,
            stop_sink,
        }
    }

    /// Stops the source and asserts every record reached Kafka; waits (up to
    /// 30 s) until `schema`'s history table (`site_check`) holds as many rows
    /// as the source had acknowledged, asserts it holds exactly that many
    /// (nothing lost, nothing stored twice); stops the sink.
    pub async fn stop_and_assert_history_holds_every_delivered_record(
        self,
        db: &tokio_postgres::Client,
        schema: &str,
    ) {
        self.stop_source.cancel();
        let summary = self.source.wait().await.expect("source stops cleanly");
        assert_eq!(summary.failed, 0, "every record delivered to Kafka");
        let count_sql = format!("SELECT count(*) FROM \"{schema}\".site_check");
        let delivered = summary.delivered;
        let stored: i64 = eventually(
            "history to hold every delivered record",
            Duration::from_secs(30),
            || async {
                let n: i64 = db.query_one(&count_sql, &[]).await.ok()?.get(0);
                (n as u64 >= delivered).then_some(n)
            },
        )
        .await;
        assert_eq!(
            stored as u64, delivered,
            "history rows == delivered records"
        );
        self.stop_sink.cancel();
        self.sink.wait().await.expect("sink stops cleanly");
    }
}

/// Path of a workspace binary (`website-monitor-source` or `website-monitor-sink`)
/// for tests that need a real process (kill -9, SIGTERM). `make test` builds the
/// binaries before the tests; run `cargo build --bins` first when calling
/// `cargo test` directly.
pub fn binary(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let path = target.join(profile).join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --bins` (make test does) before these tests",
        path.display()
    );
    path
}

/// A connector binary running as a child process (for kill -9, SIGTERM and
/// its exit code), its config in a temporary folder and its stderr in a log
/// file there. Killed (SIGKILL) when dropped.
pub struct Proc {
    child: std::process::Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Proc {
    /// Starts `website-monitor-<name>` (`sink` or `source`) with `config` as
    /// its connector.toml, without the seed's environment overrides.
    pub fn spawn(name: &str, config: &str) -> Self {
        let dir = tempfile::tempdir().expect("temporary folder");
        let path = dir.path().join("connector.toml");
        std::fs::write(&path, config).expect("write the config");
        let log = dir.path().join(format!("{name}.log"));
        let child = std::process::Command::new(binary(&format!("website-monitor-{name}")))
            .arg("--config")
            .arg(&path)
            .current_dir(repo_root())
            .env_remove("kafka_host")
            .env_remove("kafka_topic")
            .env_remove("postgres_uri")
            .env_remove("log_level")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .unwrap_or_else(|e| panic!("start website-monitor-{name}: {e}"));
        Self {
            child,
            log,
            _dir: dir,
        }
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, and wait for it.
    pub fn kill9(&mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("wait after kill -9");
    }

    /// Its exit code if it has exited (`Some(None)`: killed by a signal).
    pub fn exited(&mut self) -> Option<Option<i32>> {
        self.child.try_wait().expect("try_wait").map(|st| st.code())
    }

    /// SIGTERM, then the exit code (SIGKILL and a panic after 60 s).
    pub fn term(&mut self) -> Option<i32> {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        for _ in 0..600 {
            if let Some(code) = self.exited() {
                return code;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.kill9();
        panic!(
            "the connector did not stop within 60 s of SIGTERM; log:\n{}",
            self.log()
        );
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free TCP port on 127.0.0.1 (free when asked; for a child's metrics address).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Runs `scripts/stack.sh <command>` (e.g. `pg-stop`, `kafka-start`) and
/// panics if it fails.
pub fn stack_script(command: &str) {
    let st = std::process::Command::new("bash")
        .arg(repo_root().join("scripts/stack.sh"))
        .arg(command)
        .status()
        .unwrap_or_else(|e| panic!("scripts/stack.sh {command}: {e}"));
    assert!(st.success(), "scripts/stack.sh {command} failed");
}

/// Runs `scripts/stack.sh <command>` when dropped unless disarmed: a test that
/// stopped a shared service (`pg-stop`, `kafka-stop`) starts it again even if
/// it fails while the service is down.
#[must_use = "the service is restarted when this is dropped"]
pub struct RestartOnDrop(Option<&'static str>);

impl RestartOnDrop {
    /// Will run `scripts/stack.sh <command>` on drop.
    pub fn new(command: &'static str) -> Self {
        Self(Some(command))
    }

    /// The service was restarted by the test itself.
    pub fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for RestartOnDrop {
    fn drop(&mut self) {
        if let Some(command) = self.0 {
            let _ = std::process::Command::new("bash")
                .arg(repo_root().join("scripts/stack.sh"))
                .arg(command)
                .status();
        }
    }
}

/// `GET path` on a local HTTP server (a connector's `/readyz`, say): (status, body).
pub async fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// A connector binary (`website-monitor-source` or `-sink`) on `config`, killed
/// when dropped, with the seed's overriding environment variables removed so
/// the file alone decides.
pub fn connector(name: &str, config: &Path) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(binary(name));
    c.arg("--config").arg(config).kill_on_drop(true);
    for var in [
        "kafka_host",
        "kafka_topic",
        "kafka_ssl_ca",
        "kafka_ssl_cert",
        "kafka_ssl_key",
        "postgres_uri",
        "log_level",
    ] {
        c.env_remove(var);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_from_unique_made_before_the_cutoff_are_stale() {
        let name = unique("sink-group");
        assert!(made_by_unique_before(&name, u128::MAX));
        assert!(!made_by_unique_before(&name, 0), "made after the cutoff");
        let old = "bench-source-16273-1795831349266-1";
        assert!(made_by_unique_before(old, 1_795_831_349_267));
        assert!(!made_by_unique_before(old, 1_795_831_349_266));
        for other in [
            "website-monitor",
            "my-topic-1795840943776-3", // no pid
            "a-1-123-4",                // not a millisecond time
            "-1-1795840943776-3",       // no prefix
            "x-1-1795840943776-",       // no counter
        ] {
            assert!(!made_by_unique_before(other, u128::MAX), "{other}");
        }
    }
}
