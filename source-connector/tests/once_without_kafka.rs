//! `--once` against a Kafka that is not there: the run ends as soon as its
//! records are counted failed (exit code 1), without waiting for the
//! start-up metadata probe, which says nothing once the output has closed.
//! Needs no stack: the broker is a closed loopback port.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Generous: the run itself takes about `flush_timeout` (500 ms).
const EXIT_WITHIN: Duration = Duration::from_secs(60);

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn once_against_a_closed_port_exits_1_without_waiting_for_the_probe() {
    let port = closed_port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("connector.toml");
    std::fs::write(
        &config,
        format!(
            "[kafka]\nbrokers = \"127.0.0.1:{port}\"\n[source]\nmetrics_address = \"127.0.0.1:0\"\nflush_timeout = \"500ms\"\n[[source.sites]]\nurl = \"http://127.0.0.1:{port}/\"\n"
        ),
    )
    .unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_website-monitor-source"));
    let seed = connector_common::config::SEED_ENV_VARS;
    for var in seed.iter().chain(&["WEBSITE_MONITOR_ENVIRONMENT"]) {
        command.env_remove(var);
    }
    let mut child = command
        .env("log_level", "info")
        .arg("--config")
        .arg(&config)
        .arg("--once")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > EXIT_WITHIN {
            let _ = child.kill();
            panic!("--once did not exit within {EXIT_WITHIN:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = reader.join().unwrap();
    assert_eq!(status.code(), Some(1), "undelivered records: exit 1\n{log}");
    let stopped = log
        .find("source stopped")
        .unwrap_or_else(|| panic!("the run ends with its summary:\n{log}"));
    assert!(
        log[stopped..].contains("failed=1"),
        "the record is counted failed:\n{log}"
    );
    // The probe (10 s against a closed port) neither holds the exit up nor
    // speaks once the output has closed.
    assert!(
        !log[stopped..].contains("Kafka does not answer yet"),
        "the probe outlived the run:\n{log}"
    );
}
