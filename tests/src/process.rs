//! Connector processes for tests that need a real process (`kill -9`, SIGTERM).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{binary, repo_root};

/// A `website-monitor-sink` process run from `target/`, with its own config
/// file and a log file; killed when dropped.
pub struct SinkProcess {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl SinkProcess {
    /// Writes `config` to a fresh `connector.toml` and starts the sink with it
    /// (the seed's environment overrides removed).
    pub fn spawn(config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("connector.toml");
        std::fs::write(&path, config).unwrap();
        let log = dir.path().join("sink.log");
        let child = Command::new(binary("website-monitor-sink"))
            .arg("--config")
            .arg(&path)
            .current_dir(repo_root())
            .env_remove("kafka_host")
            .env_remove("kafka_topic")
            .env_remove("postgres_uri")
            .env_remove("log_level")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start website-monitor-sink");
        Self {
            child,
            log,
            _dir: dir,
        }
    }

    /// What the sink has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `kill -9`, and waits for the process to end.
    pub fn kill9(&mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().unwrap();
    }

    /// SIGTERM, then the exit code.
    pub fn term(&mut self) -> Option<i32> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        for _ in 0..600 {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.kill9();
        panic!(
            "sink did not stop within 60 s of SIGTERM; log:\n{}",
            self.log()
        );
    }
}

impl Drop for SinkProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
