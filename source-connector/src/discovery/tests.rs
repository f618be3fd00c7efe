//! Unit tests of the sources of sites from outside: a sites topic record
//! read into a change, a revoked partition's sites removed, and which
//! definition of a url runs.

use std::path::Path;
use std::time::Duration;

use connector_common::config::{load_str, Loaded, Section};

use super::catalog::Catalog;
use super::topic::{definition, Assignment, State};
use super::{Change, Origin};
use crate::config::{Shard, SiteConfig, SourceConfig};

fn load(text: &str) -> Loaded<SourceConfig> {
    load_str(text, Path::new("c.toml"), Section::Source, &|_| None).unwrap()
}

fn put(url: &str, json: &str) -> Change {
    let site: SiteConfig = serde_json::from_str(json).unwrap();
    Change::Put(url.into(), Box::new(site))
}

#[test]
fn a_record_is_a_definition_a_tombstone_or_a_refusal_under_its_key() {
    let key = Some(&b"https://example.com/"[..]);
    let good = br#"{"url": "https://example.com/", "interval": "30s"}"#;
    match definition(key, Some(good)) {
        Some((url, Change::Put(u, site))) => {
            assert_eq!(
                (&*url, &*u),
                ("https://example.com/", "https://example.com/")
            );
            assert_eq!(site.interval, Some(Duration::from_secs(30)));
        }
        other => panic!("{other:?}"),
    }
    for value in [None, Some(&b""[..])] {
        assert!(matches!(
            definition(key, value),
            Some((_, Change::Remove(_)))
        ));
    }
    // Bad values are refused (the catalog removes what an earlier record
    // defined: the latest counts).
    for bad in [
        &b"not json"[..],
        br#"{"url": "https://example.com/", "interval": "soon"}"#,
        br#"{"url": "https://other.example/"}"#,
        br#"{"url": "https://example.com/", "colour": "red"}"#,
    ] {
        assert!(
            matches!(definition(key, Some(bad)), Some((u, Change::Refused(..))) if &*u == "https://example.com/"),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    // A key that is no url, or another spelling of one (Kafka partitions and
    // compacts by the key's bytes: one url, one key), is refused under the
    // key's own text, never the url's; its tombstone clears that.
    for spelling in [
        "not a url",
        "https://Example.com",
        "HTTPS://example.com/",
        "https://example.com:443/",
    ] {
        match definition(Some(spelling.as_bytes()), Some(good)) {
            Some((u, Change::Refused(r, why))) => {
                assert_eq!((&*u, &*r, why.key.as_str()), (spelling, spelling, "key"));
            }
            other => panic!("{spelling}: {other:?}"),
        }
        assert!(matches!(
            definition(Some(spelling.as_bytes()), None),
            Some((_, Change::Remove(u))) if &*u == spelling
        ));
    }
    assert!(definition(None, Some(good)).is_none());
}

#[test]
fn a_revoked_partition_removes_only_its_own_sites_at_once() {
    let mut state = State::default();
    state.assigned(vec![0, 1]);
    let (a, b) = (b"http://a.example/", b"http://b.example/");
    state.record(0, Some(a), Some(br#"{"url": "http://a.example/"}"#));
    state.record(1, Some(b), Some(br#"{"url": "http://b.example/"}"#));
    // Not read to their ends yet: nothing is due.
    assert!(!state.due(true, false));
    state.pending.clear();
    assert!(state.due(true, false));
    state.batch.clear();
    assert!(state.rebalanced(Assignment::Revoked(vec![1])));
    let removed: Vec<&str> = state
        .batch
        .iter()
        .map(|c| match c {
            Change::Remove(u) => &**u,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(removed, ["http://b.example/"]);
    assert!(state.due(false, true));
}

#[test]
fn the_configuration_wins_then_the_topic_then_http_sd_and_shard_applies_without_a_group() {
    let config = load(
        "[source]\nsites_topic = \"t\"\nhttp_sd_url = \"http://sd.example/\"\n\
         [[source.sites]]\nurl = \"http://both.example/\"\n",
    );
    let file = crate::sites::resolve(&config).unwrap();
    let mut catalog = Catalog::new(file);
    catalog.apply(
        Origin::Topic,
        vec![
            put(
                "http://both.example/",
                r#"{"url": "http://both.example/", "interval": "30s"}"#,
            ),
            put(
                "http://topic.example/",
                r#"{"url": "http://topic.example/", "interval": "20s"}"#,
            ),
        ],
        &config,
    );
    catalog.apply(
        Origin::HttpSd,
        vec![
            put(
                "http://topic.example/",
                r#"{"url": "http://topic.example/"}"#,
            ),
            put("http://sd.example/x", r#"{"url": "http://sd.example/x"}"#),
        ],
        &config,
    );
    let all = catalog.combined(&config.section);
    let got: Vec<(&str, u64)> = all
        .iter()
        .map(|s| (s.url.as_str(), s.interval.as_secs()))
        .collect();
    assert_eq!(
        got,
        [
            ("http://both.example/", 1),
            ("http://topic.example/", 20),
            ("http://sd.example/x", 1)
        ]
    );
    // With a shard, the outside sites are sharded too, but not the group's.
    let mut sharded = config.clone();
    let theirs = crate::hash::shard_of("http://topic.example/", 2);
    sharded.section.shard = Some(Shard::try_from(format!("{}/2", 3 - theirs)).unwrap());
    let has_topic = |sites: &[crate::sites::SiteSpec]| {
        sites
            .iter()
            .any(|s| s.url.as_str() == "http://topic.example/")
    };
    assert!(!has_topic(&catalog.combined(&sharded.section)));
    sharded.section.sites_group = Some("g".into());
    assert!(has_topic(&catalog.combined(&sharded.section)));
}

#[test]
fn the_sites_consumer_sees_added_partitions_within_the_metadata_refresh() {
    let config = load("[source]\nsites_topic = \"t\"\nsites_group = \"g\"\n");
    let c = super::topic_client::client_config(&config.kafka, &config.section);
    assert_eq!(
        c.get("topic.metadata.refresh.interval.ms"),
        Some("30000"),
        "librdkafka's default (5 minutes) leaves added partitions unread that long"
    );
}

#[test]
fn settings_that_change_what_is_sent_or_trusted_need_outside_settings() {
    let definitions = || {
        vec![
            put(
                "http://plain.example/",
                r#"{"url": "http://plain.example/", "interval": "30s", "regex": "ok", "keep_alive": true}"#,
            ),
            put(
                "http://method.example/",
                r#"{"url": "http://method.example/", "method": "DELETE"}"#,
            ),
            put(
                "http://body.example/",
                r#"{"url": "http://body.example/", "body": "x"}"#,
            ),
            put(
                "http://headers.example/",
                r#"{"url": "http://headers.example/", "headers": {"Authorization": "x"}}"#,
            ),
            put(
                "http://ca.example/",
                r#"{"url": "http://ca.example/", "tls_ca": "/etc/shadow"}"#,
            ),
            put(
                "http://verify.example/",
                r#"{"url": "http://verify.example/", "tls_verify": false}"#,
            ),
            put(
                "http://***@creds.example/",
                r#"{"url": "http://u@creds.example/"}"#,
            ),
        ]
    };
    let urls = |catalog: &mut Catalog, config: &Loaded<SourceConfig>| -> Vec<String> {
        catalog
            .combined(&config.section)
            .iter()
            .map(|s| s.url.as_str().to_owned())
            .collect()
    };
    let config = load("[source]\nsites_topic = \"t\"\n");
    let mut catalog = Catalog::new(Vec::new());
    catalog.apply(Origin::Topic, definitions(), &config);
    assert_eq!(urls(&mut catalog, &config), ["http://plain.example/"]);
    // Listed: allowed (and a reload applies the list to what was read).
    let allowed = load(
        "[source]\nsites_topic = \"t\"\n\
         outside_settings = [\"method\", \"body\", \"headers\", \"tls_verify\", \"url_credentials\"]\n",
    );
    catalog.reload(Vec::new(), &allowed);
    let mut got = urls(&mut catalog, &allowed);
    got.sort();
    assert_eq!(
        got,
        [
            "http://***@creds.example/",
            "http://body.example/",
            "http://headers.example/",
            "http://method.example/",
            "http://plain.example/",
            "http://verify.example/"
        ]
    );
    // A name that is no guarded setting is refused by the loader.
    assert!(load_str::<SourceConfig>(
        "[source]\noutside_settings = [\"interval\"]\n",
        Path::new("c.toml"),
        Section::Source,
        &|_| None
    )
    .is_err());
}
