//! The connector binaries as child processes: built by `cargo build` once
//! per test process (cargo decides what is stale), started without the
//! seed's environment overrides, stopped with SIGTERM or SIGKILL.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use crate::stack::repo_root;

/// The binaries [`binary`] finds and builds.
pub const BINARIES: [&str; 2] = ["website-monitor-source", "website-monitor-sink"];

/// The seed's environment variables that override a connector's file; a
/// connector started by [`connector`] or [`Proc::spawn`] runs without them so
/// the file alone decides.
pub const SEED_ENV: [&str; 7] = connector_common::config::SEED_ENV_VARS;

/// Where cargo puts binaries for this test process: the target folder and the
/// profile's folder in it (`debug`, `release`, …). A test binary runs from
/// `<target>/<profile>/deps/`; anything else (the bench) falls back to
/// `CARGO_TARGET_DIR` (or `target/`) and the profile it was built with.
fn build_dirs() -> (PathBuf, PathBuf) {
    let from_exe = std::env::current_exe().ok().and_then(|exe| {
        let deps = exe.parent()?;
        (deps.file_name()? == "deps").then_some(())?;
        let profile = deps.parent()?;
        Some((profile.parent()?.to_path_buf(), profile.to_path_buf()))
    });
    from_exe.unwrap_or_else(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_root().join("target"));
        let profile = if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        };
        (target.clone(), target.join(profile))
    })
}

/// Runs `cargo build` of the connector binaries, with the target folder and
/// profile of this test process, in this checkout — once per process
/// ([`OnceLock`]). Always: cargo alone knows what makes a binary stale
/// (sources, `Cargo.toml`, `Cargo.lock`, profile, flags, another checkout
/// sharing the target folder); when nothing changed it is a no-op of about a
/// second. Cargo's lock on the target folder serialises concurrent test
/// processes.
fn ensure_built() -> &'static Result<(), String> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    BUILT.get_or_init(|| {
        let (target, profile_dir) = build_dirs();
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => "dev".to_owned(),
            Some(other) => other.to_owned(),
        };
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = std::process::Command::new(&cargo)
            .current_dir(repo_root())
            .args(["build", "--bins", "--profile", &profile, "--target-dir"])
            .arg(&target)
            .args(BINARIES.iter().flat_map(|b| ["-p", b]))
            .output()
            .map_err(|e| format!("running {}: {e}", cargo.to_string_lossy()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "cargo build of {} failed ({}):\n{}",
                BINARIES.join(", "),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    })
}

/// Path of a connector binary (`website-monitor-source` or
/// `website-monitor-sink`) for tests that need a real process (kill -9,
/// SIGTERM, exit codes). The first call in a process runs `cargo build` of
/// both in this checkout, with this test run's target folder and profile (a
/// no-op when they are current), so no `cargo build` is needed before
/// `cargo test` and no stale or foreign binary is ever run.
pub fn binary(name: &str) -> PathBuf {
    if let Err(e) = ensure_built() {
        panic!("{e}");
    }
    let path = build_dirs().1.join(name);
    assert!(path.is_file(), "{} is missing", path.display());
    path
}

/// A connector binary (`website-monitor-source` or `-sink`) on `config`, killed
/// when dropped, with the seed's overriding environment variables
/// ([`SEED_ENV`]) removed so the file alone decides.
pub fn connector(name: &str, config: &Path) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(binary(name));
    c.arg("--config").arg(config).kill_on_drop(true);
    for var in SEED_ENV {
        c.env_remove(var);
    }
    c
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
        Self::spawn_with_files(name, config, &[])
    }

    /// [`Proc::spawn`], with `files` (name, text) written beside its
    /// connector.toml first (a `sites_file`, say).
    pub fn spawn_with_files(name: &str, config: &str, files: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temporary folder");
        for (file, text) in files {
            std::fs::write(dir.path().join(file), text).expect("write a file");
        }
        let path = dir.path().join("connector.toml");
        std::fs::write(&path, config).expect("write the config");
        let log = dir.path().join(format!("{name}.log"));
        let mut command = std::process::Command::new(binary(&format!("website-monitor-{name}")));
        command
            .arg("--config")
            .arg(&path)
            .current_dir(repo_root())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        for var in SEED_ENV {
            command.env_remove(var);
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start website-monitor-{name}: {e}"));
        Self {
            child,
            log,
            _dir: dir,
        }
    }

    /// The path of `file` in its folder, beside its connector.toml.
    pub fn file(&self, file: &str) -> PathBuf {
        self._dir.path().join(file)
    }

    /// Sends it `signal` (a name `kill` knows: `HUP`, `TERM`, …).
    pub fn signal(&self, signal: &str) {
        let sent = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(sent.success(), "kill -{signal} failed");
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

/// Sends SIGTERM to `pid`.
pub async fn sigterm(pid: u32) {
    let killed = tokio::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await
        .expect("kill");
    assert!(killed.success());
}

/// A free TCP port on 127.0.0.1 (free when asked; for a child's metrics address).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}
