//! `--check-live` (issue 16): each binary reaches what its configuration
//! names and says, one line per check, what is wrong — for a deploy
//! pipeline: exit 0 when all is well, 3 when a check failed.

use std::process::Command;

use website_monitor_tests::sink::SinkTest;
use website_monitor_tests::source::source_config;
use website_monitor_tests::{binary, kv_uri, unique, ConfigBuilder, Site};

/// Runs `website-monitor-<name> --config <config> --check-live`: (exit code, stdout).
fn check_live(name: &str, config: &ConfigBuilder) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = config.write(dir.path());
    let mut command = Command::new(binary(&format!("website-monitor-{name}")));
    for var in website_monitor_tests::process::SEED_ENV {
        command.env_remove(var);
    }
    let out = command
        .arg("--config")
        .arg(&path)
        .arg("--check-live")
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.code().unwrap_or(-1), stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_passes_on_a_ready_stack_and_names_each_thing_that_is_not() {
    let t = SinkTest::new("live_sink", 1).await;
    // Not migrated yet, as the superuser: the sink would migrate at start.
    let (code, out) = check_live("sink", &t.config());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok migrations: migrations up to"), "{out}");

    t.migrate().await;
    let (code, out) = check_live("sink", &t.config());
    assert_eq!(code, 0, "{out}");
    for check in ["kafka", "postgres", "migrations", "privileges"] {
        assert!(
            out.contains(&format!("website-monitor-sink: ok {check}: ")),
            "{out}"
        );
    }

    let missing = unique("no-such-topic");
    let (code, out) = check_live("sink", &t.config().set("topic", missing.as_str()));
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains(&format!("FAILED kafka: topic `{missing}` does not exist")),
        "{out}"
    );

    // A topic the sink produces to must exist too (a producer would create
    // it with the brokers' defaults).
    let (code, out) = check_live(
        "sink",
        &t.config().set("dead_letter_topic", missing.as_str()),
    );
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains(&format!(
            "FAILED dead_letter_topic: topic `{missing}` does not exist"
        )),
        "{out}"
    );

    let uri = t
        .stack
        .postgres_uri
        .replace("/website_monitor", "/no_such_database");
    let (code, out) = check_live("sink", &t.config().set("postgres_uri", uri.as_str()));
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("FAILED postgres: cannot log in to"), "{out}");
    assert!(out.contains("no_such_database"), "{out}");

    // A least-privileged role missing one grant: named, with what to do.
    let role = t.least_privileged_role().await;
    let schema = &t.schema;
    t.db.batch_execute(&format!(
        "REVOKE INSERT ON \"{schema}\".site_fleet_per_day FROM \"{role}\""
    ))
    .await
    .unwrap();
    let uri = kv_uri(&t.stack.postgres_uri, Some(&role), None, None, None);
    let (code, out) = check_live("sink", &t.config().set("postgres_uri", uri.as_str()));
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("FAILED privileges: this role lacks INSERT on")
            && out.contains("site_fleet_per_day"),
        "{out}"
    );
    t.drop_role(&role).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_source_passes_with_its_topic_and_fails_without_brokers() {
    let t = SinkTest::new("live_source", 1).await;
    let config = source_config(&t.topic).site(Site::new("http://127.0.0.1:1/"));
    let (code, out) = check_live("source", &config);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("website-monitor-source: ok kafka: "), "{out}");
    assert!(out.contains("ok sites: 1 site(s)"), "{out}");

    let (code, out) = check_live("source", &config.brokers("127.0.0.1:1"));
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("FAILED kafka: no answer from the brokers 127.0.0.1:1"),
        "{out}"
    );
}
