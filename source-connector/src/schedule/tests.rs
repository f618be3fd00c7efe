//! The scheduler's unit tests: check tasks, ticks, reloads applied to a lane.

use super::task::{unless_panic, InFlight};
use super::*;
use crate::record::{ErrorKind, Record};
use crate::sites::Changes;
use tokio::sync::oneshot;

fn spec(url: &str) -> SiteSpec {
    SiteSpec::for_test(url, Duration::from_secs(1), Duration::from_secs(1))
}

fn specs(n: usize) -> Vec<SiteSpec> {
    (0..n)
        .map(|i| spec(&format!("http://s{i}.example/")))
        .collect()
}

fn clients(specs: &[SiteSpec]) -> Clients {
    let base = crate::check::tls::TlsBase::load().unwrap();
    Clients::for_sites(specs, &base).unwrap()
}

fn sites(n: usize) -> Vec<Arc<Site>> {
    let specs = specs(n);
    let mut clients = clients(&specs);
    specs
        .into_iter()
        .map(|s| Arc::new(Site::new(s.clone(), clients.get(&s.client).unwrap(), false)))
        .collect()
}

#[tokio::test]
async fn a_panicking_check_task_frees_its_site_and_its_permit() {
    let sites = sites(2);
    let permits = Arc::new(Semaphore::new(2));
    sites[1].running.store(true, Ordering::Release);
    let permit = Arc::clone(&permits).acquire_owned().await.unwrap();
    let task = tokio::spawn({
        let site = Arc::clone(&sites[1]);
        async move {
            let _guard = InFlight::start(site, permit, ::metrics::Gauge::noop());
            panic!("a bug in a check");
        }
    });
    assert!(task.await.unwrap_err().is_panic());
    assert!(!sites[1].is_running(), "the site is checked again");
    assert_eq!(permits.available_permits(), 2, "the permit is back");
}

#[tokio::test]
async fn a_panic_in_a_check_is_a_record_of_kind_http() {
    let sites = sites(1);
    let spec = &sites[0].spec;
    let r = unless_panic(async { panic!("boom at {}", 42) }, spec, "p").await;
    let e = r.error.as_ref().unwrap();
    assert_eq!(e.kind, ErrorKind::Http);
    assert!(e.message.contains("boom at 42"), "{e:?}");
    assert_eq!(
        (r.url.as_str(), r.probe.as_str(), r.ok),
        ("http://s0.example/", "p", false)
    );
    let fine = Record::failure(r.url.clone(), 1.0, 0.0, e.clone(), "p".into(), 1.0);
    let same = unless_panic(async { fine.clone() }, spec, "p").await;
    assert_eq!(same, fine);
}

#[test]
fn next_tick_on_time_and_behind() {
    let t0 = Instant::now();
    let s = Duration::from_secs(1);
    assert_eq!(next_tick(t0, s, t0), (t0 + s, 0));
    assert_eq!(
        next_tick(t0, s, t0 + Duration::from_millis(999)),
        (t0 + s, 0)
    );
    // 2.5 intervals late: the ticks at +1 s and +2 s are missed, the next is +3 s.
    assert_eq!(
        next_tick(t0, s, t0 + Duration::from_millis(2500)),
        (t0 + 3 * s, 2)
    );
    assert_eq!(next_tick(t0, s, t0 + s), (t0 + 2 * s, 1));
}

/// What check tasks share, writing to stdout, with per-url gauges.
fn shared() -> Shared {
    let health = connector_common::telemetry::Health::new();
    Shared {
        publisher: Arc::new(Publisher::Stdout(crate::publish::StdoutPublisher::new(
            &health,
        ))),
        probe: "p".into(),
        per_site_metrics: true,
        series: Arc::default(),
        metrics: metrics::CheckHandles::register(),
        in_flight: ::metrics::Gauge::noop(),
        started: Default::default(),
        finished: Default::default(),
        skipped: Default::default(),
        abort: CancellationToken::new(),
    }
}

fn scheduler(sites: Vec<Arc<Site>>, origin: Instant) -> Scheduler {
    let heap = sites
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let due = origin + offset_in(s.spec.url.as_str(), s.spec.interval);
            Reverse((due, i as u32, 0))
        })
        .collect();
    let specs: Vec<SiteSpec> = sites.iter().map(|s| s.spec.clone()).collect();
    Scheduler {
        slots: Slots::new(sites),
        heap,
        clients: clients(&specs),
        origin,
    }
}

#[tokio::test]
async fn a_reload_keeps_unchanged_sites_and_their_ticks() {
    let t0 = Instant::now();
    let old = sites(3);
    let kept = Arc::clone(&old[0]);
    let running = Arc::clone(&old[2]);
    running.running.store(true, Ordering::Release);
    let mut s = scheduler(old, t0);
    let ticks_before: Vec<_> = s.heap.iter().map(|r| r.0).collect();
    // s0 unchanged, s1 removed, s2 changed (its check still runs), s3 added.
    let mut changed = spec("http://s2.example/");
    changed.interval = Duration::from_millis(500);
    let wanted: Arc<[SiteSpec]> = vec![
        spec("http://s0.example/"),
        changed,
        spec("http://s3.example/"),
    ]
    .into();
    let now = t0 + Duration::from_millis(2500);
    let applied = s.apply(&wanted, &[0, 1, 2], now, &shared());
    assert_eq!(
        (
            applied.added,
            applied.removed,
            applied.changed,
            applied.unchanged,
            applied.running
        ),
        (1, 1, 1, 1, 3)
    );
    assert!(
        Arc::ptr_eq(s.slots.get(0, 0).unwrap(), &kept),
        "s0 kept as it ran"
    );
    assert!(s.slots.get(1, 0).is_none(), "s1's slot emptied");
    assert_eq!(
        s.slots.site(2).unwrap().spec.interval,
        Duration::from_millis(500)
    );
    // The changed site waits for its previous check.
    assert!(s.slots.previous_running(2));
    running.running.store(false, Ordering::Release);
    assert!(!s.slots.previous_running(2));
    // The added site reuses the emptied slot, with a new generation,
    // due on its grid at or after now; the old ticks are all still there.
    let (slot, gen, added) = s
        .slots
        .iter()
        .find(|(_, _, x)| x.spec.url.as_str() == "http://s3.example/")
        .unwrap();
    assert_eq!((slot, gen), (1, 1));
    let offset = offset_in(added.spec.url.as_str(), added.spec.interval);
    let due = s
        .heap
        .iter()
        .find(|r| (r.0 .1, r.0 .2) == (1, 1))
        .unwrap()
        .0
         .0;
    assert_eq!(
        due,
        diff::first_due(t0, offset, Duration::from_secs(1), now)
    );
    assert!(due >= now && due < now + Duration::from_secs(1));
    for t in ticks_before {
        assert!(s.heap.iter().any(|r| r.0 == t), "tick {t:?} kept");
    }
}

#[tokio::test]
async fn a_url_removed_and_added_again_while_its_check_runs_waits_for_that_check() {
    let t0 = Instant::now();
    let old = sites(2);
    let running = Arc::clone(&old[1]);
    running.running.store(true, Ordering::Release);
    let (mut s, shared) = (scheduler(old, t0), shared());
    let all = Arc::new(vec![spec("http://s0.example/"), spec("http://s1.example/")]);
    let now = t0 + Duration::from_millis(500);
    assert_eq!(s.apply(&all[..1], &[0], now, &shared).removed, 1);
    // Claimed by this lane while the removed check runs.
    let (reply, claimed) = oneshot::channel();
    s.command(
        Command::Claim {
            wanted: Arc::clone(&all),
            reply,
        },
        &shared,
    );
    assert_eq!(claimed.await.unwrap(), vec![0, 1]);
    assert_eq!(s.apply(&all, &[0, 1], now, &shared).added, 1);
    let (slot, _, again) = (s.slots.iter())
        .find(|(_, _, x)| x.spec.url.as_str() == "http://s1.example/")
        .unwrap();
    assert!(!Arc::ptr_eq(again, &running));
    assert!(s.slots.previous_running(slot), "its ticks wait");
    running.running.store(false, Ordering::Release);
    assert!(!s.slots.previous_running(slot), "and run once it ended");
}

#[tokio::test]
async fn a_shorter_interval_applies_at_once_a_longer_one_after_the_next_tick() {
    let t0 = Instant::now();
    let mut long = spec("http://s0.example/");
    long.interval = Duration::from_secs(3600);
    let site = Arc::new(Site::new(
        long.clone(),
        clients(&[long.clone()]).get(&long.client).unwrap(),
        false,
    ));
    let (mut s, shared) = (scheduler(vec![site], t0), shared());
    let now = t0 + Duration::from_secs(7200) + Duration::from_millis(1);
    let mut short = long.clone();
    short.interval = Duration::from_secs(1);
    s.apply(std::slice::from_ref(&short), &[0], now, &shared);
    let due = |s: &Scheduler| {
        let gen = s.slots.iter().next().unwrap().1;
        s.heap
            .iter()
            .filter(|r| r.0 .2 == gen)
            .map(|r| r.0 .0)
            .min()
            .unwrap()
    };
    assert!(
        due(&s) >= now && due(&s) <= now + Duration::from_secs(1),
        "within the new interval"
    );
    // Back to an hour: the tick within a second stays.
    let before = due(&s);
    s.apply(std::slice::from_ref(&long), &[0], now, &shared);
    assert_eq!(due(&s), before);
}

#[tokio::test]
async fn a_reload_of_changed_lines_touches_only_their_sites() {
    let t0 = Instant::now();
    let old = sites(4);
    let kept = Arc::clone(&old[0]);
    let mut s = scheduler(old, t0);
    let shared = shared();
    let ticks_before: Vec<_> = s.heap.iter().map(|r| r.0).collect();
    // s1 removed, s2 changed, s3 put again as it runs, s4 added; s0 untouched.
    let mut changed = spec("http://s2.example/");
    changed.max_redirects = 1;
    let changes = Arc::new(Changes {
        put: vec![
            spec("http://s4.example/"),
            changed,
            spec("http://s3.example/"),
        ],
        removed: vec![crate::hash::fnv1a(b"http://s1.example/")],
        retain: None,
    });
    let (reply, claimed) = oneshot::channel();
    let changes_for = Arc::clone(&changes);
    s.command(
        Command::ClaimChanges {
            changes: changes_for,
            reply,
        },
        &shared,
    );
    assert_eq!(
        claimed.await.unwrap(),
        (vec![1, 2], 4),
        "s2 and s3 run here"
    );
    let now = t0 + Duration::from_millis(2500);
    let applied = s.apply_changes(&changes, &[0, 1, 2], now, &shared);
    assert_eq!(
        (
            applied.added,
            applied.removed,
            applied.changed,
            applied.unchanged,
            applied.running
        ),
        (1, 1, 1, 2, 4)
    );
    assert!(Arc::ptr_eq(s.slots.get(0, 0).unwrap(), &kept), "s0 kept");
    assert_eq!(s.slots.site(2).unwrap().spec.max_redirects, 1);
    let (slot, gen, _) = (s.slots.iter())
        .find(|(_, _, x)| x.spec.url.as_str() == "http://s4.example/")
        .unwrap();
    assert_eq!((slot, gen), (1, 1), "s4 in s1's emptied slot");
    for t in ticks_before {
        assert!(s.heap.iter().any(|r| r.0 == t), "tick {t:?} kept");
    }
}

#[tokio::test]
async fn a_reload_that_names_the_sites_to_retain_removes_every_other_and_keeps_their_ticks() {
    let t0 = Instant::now();
    let old = sites(4);
    let mut s = scheduler(old, t0);
    let shared = shared();
    let ticks_before: Vec<_> = s.heap.iter().map(|r| r.0).collect();
    let mut retain: Vec<u64> = ["http://s0.example/", "http://s2.example/"]
        .iter()
        .map(|u| crate::hash::fnv1a(u.as_bytes()))
        .collect();
    retain.sort_unstable();
    let changes = Changes {
        retain: Some(retain),
        ..Changes::default()
    };
    let now = t0 + Duration::from_millis(2500);
    let applied = s.apply_changes(&changes, &[], now, &shared);
    assert_eq!(
        (applied.removed, applied.unchanged, applied.running),
        (2, 2, 2)
    );
    let mut left: Vec<&str> = (s.slots.iter())
        .map(|(_, _, x)| x.spec.url.as_str())
        .collect();
    left.sort_unstable();
    assert_eq!(left, ["http://s0.example/", "http://s2.example/"]);
    let ticks_after: Vec<_> = s.heap.iter().map(|r| r.0).collect();
    for t in ticks_after {
        assert!(ticks_before.contains(&t), "no new tick {t:?}");
    }
}
