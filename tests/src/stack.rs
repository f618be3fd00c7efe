//! The local stack: where its services are (`.stack/env`, `WM_*`), names no
//! other test uses, and stopping/starting one of its services.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

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
pub(crate) fn maker_alive(topic: &str) -> bool {
    topic
        .rsplit('-')
        .nth(2)
        .is_some_and(|pid| Path::new("/proc").join(pid).exists())
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
