//! The systemd units in `deploy/systemd/` (issue 16): `systemd-analyze
//! verify` accepts them, and the command line each starts is one its
//! binary accepts.

use std::path::{Path, PathBuf};
use std::process::Command;

use website_monitor_tests::source::offline_config;
use website_monitor_tests::{binary, ConfigBuilder};

/// The repository's `deploy/systemd/` folder.
fn units_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd")
}

/// The unit file of `kind` (`source`, `sink`).
fn unit(kind: &str) -> String {
    std::fs::read_to_string(units_dir().join(format!("website-monitor-{kind}.service")))
        .expect("the unit file")
}

/// The words of the unit's `ExecStart=` line.
fn exec_start(unit: &str) -> Vec<String> {
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("an ExecStart line");
    line.split_whitespace().map(str::to_owned).collect()
}

#[test]
fn systemd_analyze_verifies_both_units() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for kind in ["source", "sink"] {
        // The binaries as built here stand in for /usr/bin's.
        let name = format!("website-monitor-{kind}");
        let text = unit(kind).replace(
            &format!("/usr/bin/{name}"),
            &binary(&name).display().to_string(),
        );
        let path = dir.path().join(format!("{name}.service"));
        std::fs::write(&path, text).unwrap();
        files.push(path);
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&files)
        .output()
        .expect("systemd-analyze runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {stderr}");
    // Warnings (an unknown key, a bad value) go to stderr with success.
    let own: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("website-monitor"))
        .collect();
    assert!(own.is_empty(), "warnings about the units: {own:?}");
}

#[test]
fn each_unit_starts_its_binary_with_flags_it_accepts() {
    let dir = tempfile::tempdir().unwrap();
    for (kind, config) in [
        (
            "source",
            offline_config().site(website_monitor_tests::Site::new("http://127.0.0.1:1/")),
        ),
        (
            "sink",
            ConfigBuilder::sink()
                .brokers("127.0.0.1:1")
                .set("topic", "checks")
                .set("postgres_uri", "postgres://monitor@127.0.0.1:1/monitor"),
        ),
    ] {
        let words = exec_start(&unit(kind));
        assert_eq!(words[0], format!("/usr/bin/website-monitor-{kind}"));
        let config_at = words
            .iter()
            .position(|w| w == "--config")
            .expect("a --config flag");
        let path = config.write(dir.path());
        let mut args: Vec<String> = words[1..].to_vec();
        args[config_at] = path.display().to_string();
        let mut command = Command::new(binary(&format!("website-monitor-{kind}")));
        for var in website_monitor_tests::process::SEED_ENV {
            command.env_remove(var);
        }
        let out = command
            .args(&args)
            .arg("--check-config")
            .output()
            .expect("the binary runs");
        assert!(
            out.status.success(),
            "{kind} {args:?} --check-config: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
