//! What every writer shares, made once at start ([`Shared`]: settings,
//! table names, statements, the PostgreSQL target, readiness, the shutdown
//! budget), and how a writer opens its connection (`open`: connect, bound
//! abandoned transactions, migrate, prepare, move an old history table).

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres_rustls::MakeRustlsConnect;
use tokio_util::sync::CancellationToken;

use crate::config::SinkConfig;
use crate::error::SinkError;
use crate::metrics::SiteStates;
use crate::postgres::error::{db_message, is_connection_error};
use crate::postgres::migrate::{migrate, Tables};
use crate::postgres::partitions::Retention;
use crate::postgres::sql::{connect, Conn, Sql};
use crate::postgres::upgrade::move_legacy_history;
use crate::readiness::Readiness;
use crate::status::Policy;
use crate::uri::PgTarget;

/// What is left of `shutdown_timeout` once shutdown has begun (one budget
/// for all writers).
#[derive(Debug, Clone)]
pub(crate) struct Budget {
    shutdown: CancellationToken,
    timeout: Duration,
    at: Arc<OnceLock<tokio::time::Instant>>,
}

impl Budget {
    /// When the budget ends, once shutdown has fired. The clock starts at the
    /// signal ([`Budget::start_clock_on_shutdown`]); failing that, the first
    /// time it is asked.
    pub(crate) fn end(&self) -> Option<tokio::time::Instant> {
        self.shutdown.is_cancelled().then(|| {
            *self
                .at
                .get_or_init(|| tokio::time::Instant::now() + self.timeout)
        })
    }

    pub(crate) fn passed(&self) -> bool {
        self.end()
            .is_some_and(|at| tokio::time::Instant::now() >= at)
    }

    /// `limit`, cut to what is left of the budget after shutdown.
    pub(crate) fn limit(&self, limit: Duration) -> Duration {
        match self.end() {
            Some(at) => limit.min(at.saturating_duration_since(tokio::time::Instant::now())),
            None => limit,
        }
    }

    /// Starts the clock the moment shutdown fires.
    pub(crate) async fn start_clock_on_shutdown(self) {
        self.shutdown.cancelled().await;
        self.end();
    }

    /// Resolves when shutdown has fired and the budget is spent.
    pub(crate) async fn ended(self) {
        self.shutdown.cancelled().await;
        if let Some(at) = self.end() {
            tokio::time::sleep_until(at).await;
        }
    }
}

/// What every writer reads, made once at start.
pub struct Shared {
    /// The `[sink]` settings.
    pub cfg: SinkConfig,
    /// The quoted table names.
    pub tables: Tables,
    pub(crate) sql: Sql,
    pub(crate) target: PgTarget,
    pub(crate) tls: MakeRustlsConnect,
    pub(crate) readiness: Readiness,
    /// The per-site state gauge writer 0 refreshes (`per_site_gauge`).
    pub(crate) site_states: Arc<SiteStates>,
    /// Fires on SIGTERM.
    pub shutdown: CancellationToken,
    pub(crate) budget: Budget,
    /// Set after the first successful connect of any writer: from then on a
    /// migration or prepare error is retried (an operator may be mid-change),
    /// not fatal.
    pub(crate) started: AtomicBool,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("target", &self.target.describe())
            .field("tables", &self.tables)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Builds the shared state (no I/O).
    pub fn new(
        cfg: SinkConfig,
        target: PgTarget,
        tls: MakeRustlsConnect,
        readiness: Readiness,
        site_states: Arc<SiteStates>,
        shutdown: CancellationToken,
    ) -> Self {
        let tables = Tables::new(&cfg.schema, &cfg.table);
        let mut sql = Sql::with_retention(&tables, Retention::of(&cfg));
        // Validated at load; a policy refused here all the same (a config
        // built in code) falls back to the defaults, said in the log.
        match Policy::from_config(&cfg.status) {
            Ok(p) => {
                for w in p.warnings() {
                    tracing::warn!("{w}");
                }
                sql.policy = Arc::new(p);
            }
            Err(e) => {
                tracing::error!(problems = ?e, "[sink.status] is invalid; using the default status policy")
            }
        }
        let budget = Budget {
            shutdown: shutdown.clone(),
            timeout: cfg.shutdown_timeout,
            at: Arc::new(OnceLock::new()),
        };
        Self {
            cfg,
            tables,
            sql,
            target,
            tls,
            readiness,
            site_states,
            shutdown,
            budget,
            started: AtomicBool::new(false),
        }
    }
}

impl Shared {
    /// `limit`, cut to what is left of `shutdown_timeout` once shutdown has
    /// begun: for the steps after a write (the Kafka commit, the watermark
    /// check, leaving the group), so stopping stays within the budget.
    pub(crate) fn limit(&self, limit: Duration) -> Duration {
        self.budget.limit(limit)
    }

    /// Resolves once shutdown has fired, after starting the
    /// `shutdown_timeout` clock at that moment (not at the first step that
    /// asks for its limit, which may come a batch later). Run it in its own task.
    /// Resolves when shutdown has fired and `shutdown_timeout` is spent: race
    /// a wait against it so a wait already running at the signal is cut too.
    pub(crate) fn ended(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.budget.clone().ended()
    }

    pub(crate) fn start_clock_on_shutdown(
        &self,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.budget.clone().start_clock_on_shutdown()
    }
}

/// Connects, bounds abandoned transactions on the server side, migrates and
/// prepares. `Ok(Err(message))` is worth retrying; a migration PostgreSQL
/// refuses is fatal unless `started`.
pub(crate) async fn open(
    shared: &Shared,
    started: bool,
) -> Result<Result<Conn, String>, SinkError> {
    let mut client = match connect(&shared.target, &shared.tls).await {
        Ok(c) => c,
        Err(e) => return Ok(Err(format!("unreachable: {}", db_message(&e)))),
    };
    // A transaction whose client vanished half-way (a half-open connection)
    // would keep its row locks until the server notices; let the server end
    // it once the client would have given up anyway.
    let ms = shared
        .cfg
        .write_timeout
        .as_millis()
        .clamp(1_000, i32::MAX as u128);
    if let Err(e) = client
        .batch_execute(&format!("SET idle_in_transaction_session_timeout = {ms}"))
        .await
    {
        if is_connection_error(&e) {
            return Ok(Err(db_message(&e)));
        }
        tracing::warn!(error = %db_message(&e), "cannot set idle_in_transaction_session_timeout; continuing without it");
    }
    // Every writer runs this; it is idempotent, and the first to get the
    // advisory lock applies what is missing.
    match migrate(&mut client, &shared.tables).await {
        Ok(applied) if !applied.versions.is_empty() => {
            tracing::info!(versions = ?applied.versions, "migrations applied");
        }
        Ok(_) => {}
        Err(e) if is_connection_error(&e) || started => {
            return Ok(Err(format!("migrating: {}", db_message(&e))))
        }
        Err(e) => return Err(SinkError::Migrate(db_message(&e))),
    }
    match Conn::prepare(client, &shared.sql).await {
        Ok(mut c) => {
            // An upgrade from the unpartitioned history: move its rows first,
            // within this attempt's time; a later attempt goes on.
            let budget = shared.cfg.write_timeout / 2;
            match move_legacy_history(&mut c, &shared.tables, budget).await {
                Ok((_, true)) => Ok(Ok(c)),
                Ok((_, false)) => Ok(Err("converting the old history table (going on)".to_owned())),
                Err(e) if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => {
                    Err(SinkError::Upgrade {
                        table: shared.tables.function("_check_legacy"),
                        message: db_message(&e),
                    })
                }
                Err(e) => Ok(Err(format!(
                    "converting the old history table: {}",
                    db_message(&e)
                ))),
            }
        }
        Err(e) if is_connection_error(&e) || started => {
            Ok(Err(format!("preparing statements: {}", db_message(&e))))
        }
        Err(e) => Err(SinkError::Migrate(db_message(&e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn after_shutdown_every_limit_is_cut_to_what_is_left_of_shutdown_timeout_counted_from_the_signal(
    ) {
        let shutdown = CancellationToken::new();
        let budget = Budget {
            shutdown: shutdown.clone(),
            timeout: Duration::from_millis(400),
            at: Arc::new(OnceLock::new()),
        };
        let ten = Duration::from_secs(10);
        assert_eq!(budget.limit(ten), ten, "no cut before shutdown");
        tokio::spawn(budget.clone().start_clock_on_shutdown());
        shutdown.cancel();
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Asked for the first time 200 ms after the signal: about 200 ms are
        // left (a clock started by this first ask would leave 400 ms).
        let left = budget.limit(ten);
        assert!(left < Duration::from_millis(300), "{left:?} left");
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(budget.limit(ten), Duration::ZERO);
        assert!(budget.passed());
    }
}
