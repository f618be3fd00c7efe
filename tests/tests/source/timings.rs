//! The phase timings of a check (tls, ttfb, transfer), each against a stall
//! of its own and against `curl -w`.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;
use website_monitor_source::record::Record;
use website_monitor_tests::http::{Pki, TestServer};
use website_monitor_tests::source::offline_config;
use website_monitor_tests::Site;

use crate::source_bin;

/// The stalls of [`timings_match_curl_and_each_phase_sees_only_its_own_stall`]
/// and the phases measured against them, seconds.
#[derive(Debug, Clone, Copy)]
struct Phases {
    tls: f64,
    ttfb: f64,
    transfer: f64,
}

/// What `curl -w` measures for `url`, trusting `ca`: the median of three runs
/// of each phase (tls = appconnect - connect, ttfb = starttransfer -
/// appconnect, transfer = total - starttransfer). Panics, saying to install
/// it, when curl is missing.
async fn curl_phases(url: &str, ca: &Path) -> Phases {
    let mut runs = Vec::new();
    for _ in 0..3 {
        let out = Command::new("curl")
            // -q first: no ~/.curlrc; no proxy from the environment.
            .args(["-q", "-sS", "--noproxy", "*", "-o", "/dev/null", "--cacert"])
            .arg(ca)
            .args([
                "-w",
                "%{time_namelookup} %{time_connect} %{time_appconnect} %{time_starttransfer} %{time_total}",
                url,
            ])
            .output()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run curl ({e}): this test compares the records' timings with `curl -w`; \
                     install curl (apt-get install curl; `make up` installs it)"
                )
            });
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "curl {url}: {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        let t: Vec<f64> = text
            .split_whitespace()
            .map(|v| v.parse().expect("curl -w gives seconds"))
            .collect();
        let [_namelookup, connect, appconnect, starttransfer, total] = t[..] else {
            panic!("curl -w gave {text:?}");
        };
        runs.push(Phases {
            tls: appconnect - connect,
            ttfb: starttransfer - appconnect,
            transfer: total - starttransfer,
        });
    }
    let median = |f: fn(&Phases) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Phases {
        tls: median(|p| p.tls),
        ttfb: median(|p| p.ttfb),
        transfer: median(|p| p.transfer),
    }
}

/// Whether `r`'s phases each saw their own stall and not another's, and agree
/// with curl: each phase more than its stall less 15 ms (a check thread
/// late to read the headers moves a few ms from `transfer` to `ttfb`), less
/// than its stall + 70 ms (the smallest other stall is 100 ms, so a phase
/// that took another's stall is still caught; 40 ms was exceeded by a debug
/// build's TLS handshake under the parallel tests' load) and within
/// max(15 ms, 30 %) of curl's. Tolerances for a shared, noisy 2-core machine.
fn judge(what: &str, r: &Record, curl: Phases, stalls: Phases) -> Result<(), String> {
    let table = format!(
        "{what}: tls {:?} (curl {:.4}, stall {}), ttfb {:?} (curl {:.4}, stall {}), transfer {:?} (curl {:.4}, stall {})",
        r.timings.tls, curl.tls, stalls.tls, r.timings.ttfb, curl.ttfb, stalls.ttfb,
        r.timings.transfer, curl.transfer, stalls.transfer
    );
    eprintln!("{table}");
    if !r.ok {
        return Err(format!("{table}: the check failed: {:?}", r.error));
    }
    let mut wrong = Vec::new();
    for (name, got, curl, stall) in [
        ("tls", r.timings.tls, curl.tls, stalls.tls),
        ("ttfb", r.timings.ttfb, curl.ttfb, stalls.ttfb),
        (
            "transfer",
            r.timings.transfer,
            curl.transfer,
            stalls.transfer,
        ),
    ] {
        let Some(got) = got else {
            wrong.push(format!("{name} is null"));
            continue;
        };
        if got < stall - 0.015 {
            wrong.push(format!(
                "{name} {got:.4} s is 15 ms or more shorter than its own stall"
            ));
        }
        if got >= stall + 0.070 {
            wrong.push(format!(
                "{name} {got:.4} s is 70 ms or more over its stall of {stall} s"
            ));
        }
        if (got - curl).abs() > (0.3 * curl).max(0.015) {
            wrong.push(format!(
                "{name} {got:.4} s is not within max(15 ms, 30 %) of curl's {curl:.4} s"
            ));
        }
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!("{table}: {}", wrong.join("; ")))
    }
}

/// Up to three attempts of `attempt` (a noisy machine can spoil one; a
/// process's start-up work is in every attempt, so no retry hides it).
async fn within_three_attempts<F, Fut>(what: &str, mut attempt: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let mut failures = Vec::new();
    for _ in 0..3 {
        match attempt().await {
            Ok(()) => return,
            Err(e) => failures.push(e),
        }
    }
    panic!("{what}, three attempts:\n{}", failures.join("\n"));
}

#[tokio::test]
async fn timings_match_curl_and_each_phase_sees_only_its_own_stall() {
    let stalls = Phases {
        tls: 0.150,
        ttfb: 0.120,
        transfer: 0.100,
    };
    let ms = |s: f64| (s * 1000.0).round() as u64;
    let pki = Pki::new();
    let server = TestServer::https_stalling_handshake(
        pki.ca_signed.clone(),
        Duration::from_millis(ms(stalls.tls)),
    )
    .await;
    let url = server.url(&format!(
        "/phases/{}/{}",
        ms(stalls.ttfb),
        ms(stalls.transfer)
    ));
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let config = offline_config()
        .site(
            Site::new(url.as_str())
                .set("tls_ca", "ca.pem")
                .set("interval", "1s"),
        )
        .write(dir.path());

    // `--once --stdout`: every record is the first check of its process.
    within_three_attempts("--once --stdout", || async {
        let curl = curl_phases(&url, &ca).await;
        let out = source_bin(&config)
            .args(["--once", "--stdout"])
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        let stdout = String::from_utf8(out.stdout).unwrap();
        let line = stdout.lines().next().expect("one record");
        let r: Record = serde_json::from_str(line).expect("a JSON record");
        judge("--once", &r, curl, stalls)
    })
    .await;

    // A running source: its first check and two later ones.
    within_three_attempts("running source", || async {
        use tokio::io::AsyncBufReadExt;
        let curl = curl_phases(&url, &ca).await;
        let mut child = source_bin(&config)
            .arg("--stdout")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the source");
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut found = Vec::new();
        for n in 0..3 {
            let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
                .await
                .expect("a record within 30 s")
                .unwrap()
                .expect("the source keeps running");
            let r: Record = serde_json::from_str(&line).expect("a JSON record");
            found.push(judge(&format!("running, check {n}"), &r, curl, stalls));
        }
        child.kill().await.unwrap();
        found.into_iter().collect()
    })
    .await;
}
