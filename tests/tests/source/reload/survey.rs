//! A reload that changes a `[source]` default changes every site: it is
//! surveyed (every site checked, only url hashes kept) and applied a chunk
//! at a time ([`website_monitor_source::sites::CHUNK`]) — the counts add up
//! over the chunks, the sites not kept stop, the new ones start, and an
//! unchanged interval keeps every site's cadence.

use std::time::Duration;

use website_monitor_source::sites::CHUNK;
use website_monitor_tests::http::TestServer;
use website_monitor_tests::source::{consume, records};
use website_monitor_tests::{free_port, http_post, unique};

use super::{checks_by_url, config, now, start, Reloaded};

#[tokio::test]
async fn a_changed_default_is_applied_to_every_site_in_chunks_and_keeps_their_cadence() {
    let s = TestServer::http().await;
    let topic = unique("src-reload-survey");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let [keep, gone, new] = ["keep", "gone", "new"].map(|p| s.url(&format!("/text/{p}")));
    // More sites than one chunk holds; checked once an hour, at a port
    // nothing listens on (loopback), so they cost the test nothing.
    let fillers: Vec<String> = (0..CHUNK + 100)
        .map(|i| format!("{{\"url\": \"http://127.0.0.1:9/f/{i}\", \"interval\": \"1h\"}}"))
        .collect();
    let config = config(&topic, port, "1s").set("timeout", "5s");
    let before: Vec<String> = [keep.clone(), gone.clone()]
        .into_iter()
        .chain(fillers.iter().cloned())
        .collect();
    let mut proc = start(&topic, &config, &before).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let after: Vec<String> = [keep.clone(), new.clone()]
        .into_iter()
        .chain(fillers.iter().cloned())
        .collect();
    std::fs::write(proc.file("sites.txt"), after.join("\n")).unwrap();
    std::fs::write(
        proc.file("connector.toml"),
        config.clone().set("timeout", "4s").text(),
    )
    .unwrap();
    let asked = now();
    let (status, body) = http_post(&addr, "/-/reload").await.unwrap();
    let applied = now();
    assert_eq!(status, 200, "{body}");
    let every = fillers.len() + 1;
    for want in [
        "added=1 ".to_owned(),
        "removed=1 ".to_owned(),
        format!("changed={every} "),
        "unchanged=0 ".to_owned(),
        format!("sites={} ", every + 1),
        "how=survey".to_owned(),
    ] {
        assert!(body.contains(&want), "{want} in {body}");
    }
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(proc.term(), Some(0), "log:\n{}", proc.log());

    let by = checks_by_url(records(&consume(&topic).await));
    // The kept site changed only its timeout: its cadence holds.
    Reloaded { asked, applied }.assert_kept_removed_added(&by, [&keep, &gone, &new]);
}
