//! What every panel and variable must return for the data set.

use super::*;

/// One run of a panel's query and the rows it must return.
pub(crate) struct Case {
    pub(crate) ctx: Ctx,
    pub(crate) rows: Vec<Value>,
    /// Whether the row order counts (tables); a time series is compared sorted.
    pub(crate) ordered: bool,
}

pub(crate) fn table(ctx: Ctx, rows: Vec<Value>) -> Case {
    Case {
        ctx,
        rows,
        ordered: true,
    }
}

/// The p50/p95 series Grafana should draw from `level`'s rows: grouped by
/// `$__timeGroup(bucket, interval)` within the range (BETWEEN, both ends
/// included) and by `metric` (None: the row is filtered out).
pub(crate) fn series(
    ctx: Ctx,
    level: &Rows,
    metric: impl Fn(i64, i32) -> Option<&'static str>,
) -> Case {
    let step = ctx.interval_s();
    let mut groups: BTreeMap<(i64, &'static str), Agg> = BTreeMap::new();
    for ((bucket, site, probe), agg) in level {
        if bucket * 1000 < ctx.from_ms || bucket * 1000 > ctx.to_ms {
            continue;
        }
        if let Some(m) = metric(*site, *probe) {
            groups
                .entry((floor_to(*bucket, step), m))
                .or_default()
                .add(agg);
        }
    }
    let rows = groups
        .iter()
        .map(|((t, m), agg)| {
            json!({"time": t, "metric": m, "p50": agg.percentile(0.5), "p95": agg.percentile(0.95)})
        })
        .collect();
    Case {
        ctx,
        rows,
        ordered: false,
    }
}

pub(crate) fn site_url(id: i64) -> &'static str {
    SITES.iter().find(|s| s.0 == id).expect("site").1
}

pub(crate) fn probe_name(id: i32) -> &'static str {
    PROBES.iter().find(|p| p.0 == id).map_or(NO_PROBE, |p| p.1)
}

/// Sorts rows by keys (numbers ascending, NULLs last) as an ORDER BY would.
pub(crate) fn sort_rows(rows: &mut [Value], keys: &[&str]) {
    rows.sort_by(|a, b| {
        for k in keys {
            let o = match (&a[*k], &b[*k]) {
                (Value::Null, Value::Null) => std::cmp::Ordering::Equal,
                (Value::Null, _) => std::cmp::Ordering::Greater,
                (_, Value::Null) => std::cmp::Ordering::Less,
                (Value::String(x), Value::String(y)) => x.cmp(y),
                (x, y) => x
                    .as_f64()
                    .partial_cmp(&y.as_f64())
                    .expect("comparable numbers"),
            };
            if o.is_ne() {
                return o;
            }
        }
        std::cmp::Ordering::Equal
    });
}

/// Every panel's (by title) and variable's (`variable:<name>`) runs and expected rows.
pub(crate) fn expectations(d: &Data) -> BTreeMap<String, Vec<Case>> {
    let n = d.n;
    let today = floor_to(n, DAY);
    let mut e: BTreeMap<String, Vec<Case>> = BTreeMap::new();
    let mut add = |key: &str, case: Case| e.entry(key.to_string()).or_default().push(case);

    add(
        "variable:site",
        table(
            Ctx::new(n - DAY, n),
            SITES.iter().map(|s| json!(s.1)).collect(),
        ),
    );
    add(
        "variable:probe",
        table(Ctx::new(n - DAY, n), vec![json!("eu"), json!("us")]),
    );

    // Uptime: the 24 h and the 30 days (from a whole hour) before the range's
    // end, which is 30 min 15.5 s after the last data: 23 whole hours (the
    // minute row of the hour before sits before the window) and 720 hours.
    let end_ms = n * 1000 + 30 * 60_000 + 15_500;
    let uptime_ctx = |sites: Option<&[&'static str]>| {
        let mut c = Ctx::new(0, 0);
        c.from_ms = end_ms - DAY * 1000;
        c.to_ms = end_ms;
        if let Some(s) = sites {
            c = c.sites(s);
        }
        c
    };
    let uptime_rows = |sites: &[&'static str]| {
        let day = d.per_site(n - 23 * HOUR, n);
        let month = d.per_site(n - 30 * DAY, n);
        let mut rows: Vec<Value> = SITES
            .iter()
            .filter(|s| sites.contains(&s.1))
            .map(|(id, url)| {
                json!({
                    "site": url,
                    "uptime 24 h": day.get(id).and_then(Agg::uptime),
                    "uptime 30 d": month.get(id).and_then(Agg::uptime),
                    "checks 24 h": day.get(id).map(|a| a.checks),
                    "checks 30 d": month.get(id).map(|a| a.checks),
                })
            })
            .collect();
        sort_rows(&mut rows, &["uptime 30 d", "uptime 24 h", "site"]);
        rows
    };
    let all_rows = uptime_rows(&[A, B, C, D]);
    // The figures, spelled out.
    assert_eq!(
        all_rows,
        vec![
            json!({"site": B, "uptime 24 h": 0.9, "uptime 30 d": 0.9, "checks 24 h": 2300, "checks 30 d": 72000}),
            json!({"site": A, "uptime 24 h": 0.99, "uptime 30 d": 0.99, "checks 24 h": 4600, "checks 30 d": 144000}),
            json!({"site": C, "uptime 24 h": 1.0, "uptime 30 d": 1.0, "checks 24 h": 1380, "checks 30 d": 43200}),
            json!({"site": D, "uptime 24 h": null, "uptime 30 d": null, "checks 24 h": null, "checks 30 d": null}),
        ]
    );
    let uptime = "Uptime per site (24 h and 30 d before the range's end)";
    add(uptime, table(uptime_ctx(None), all_rows));
    add(
        uptime,
        table(uptime_ctx(Some(&[D, A])), uptime_rows(&[A, D])),
    );

    // Latency per site: each level, picked by the interval or the range's age.
    let per_site = |s: i64, _p: i32| Some(site_url(s));
    let recent = |iv| Ctx::new(n - 3 * HOUR, n).interval(iv);
    let mut minute = series(recent("5m"), &d.minute, per_site);
    minute.ctx.to_ms = end_ms;
    assert_eq!(minute.rows.len(), 9, "3 hours of minute rows of 3 sites");
    let lat_site = "Latency p50 / p95 per site";
    add(lat_site, minute);
    add(
        lat_site,
        series(Ctx::new(n - 6 * HOUR, n).interval("1h"), &d.hour, per_site),
    );
    add(
        lat_site,
        series(Ctx::new(n - 6 * HOUR, n).interval("2h"), &d.hour, per_site),
    );
    add(
        lat_site,
        series(
            Ctx::new(n - 10 * DAY, n - 9 * DAY).interval("10m"),
            &d.hour,
            per_site,
        ),
    );
    let only_b = series(
        Ctx::new(today - 60 * DAY, today - 40 * DAY)
            .interval("1h")
            .sites(&[B]),
        &d.day,
        |s, _| (s == 2).then_some(B),
    );
    assert_eq!(only_b.rows.len(), 21);
    assert!(only_b
        .rows
        .iter()
        .all(|r| r["p50"] == json!(mid_ms(bucket_of(200_000)))
            && r["p95"] == json!(mid_ms(bucket_of(800_000)))));
    add(lat_site, only_b);
    add(
        lat_site,
        series(Ctx::new(n - 5 * DAY, n).interval("1d"), &d.day, per_site),
    );
    // A whole day of site A: 10 ms (12 h of eu), 30 ms (12 h), 50 ms (24 h of us).
    let a_day = series(
        Ctx::new(today - 50 * DAY, today - 50 * DAY).interval("1d"),
        &d.day,
        |s, _| (s == 1).then_some(A),
    );
    assert_eq!(
        a_day.rows,
        vec![json!({"time": today - 50 * DAY, "metric": A,
                    "p50": mid_ms(bucket_of(30_000)), "p95": mid_ms(bucket_of(50_000))})]
    );
    add(
        lat_site,
        Case {
            ctx: a_day.ctx.sites(&[A]),
            ..a_day
        },
    );

    // Latency per probe.
    let lat_probe = "Latency p50 / p95 per probe";
    let mut probes_minute = series(recent("5m"), &d.minute, |_, p| Some(probe_name(p)));
    probes_minute.ctx.to_ms = end_ms;
    add(lat_probe, probes_minute);
    add(
        lat_probe,
        series(
            Ctx::new(n - 10 * DAY, n - 9 * DAY)
                .interval("10m")
                .sites(&[A])
                .probes(&["eu"]),
            &d.hour,
            |s, p| (s == 1 && p == 1).then_some("eu"),
        ),
    );
    add(
        lat_probe,
        series(
            Ctx::new(n - 6 * HOUR, n)
                .interval("1h")
                .sites(&[B])
                .probes(&["eu"]),
            &d.hour,
            |s, p| (s == 2 && p == 1).then_some("eu"),
        ),
    );
    add(
        lat_probe,
        series(
            Ctx::new(n - 6 * HOUR, n)
                .interval("1h")
                .probes(&["us", "eu"]),
            &d.hour,
            |_, p| (p != 0).then(|| probe_name(p)),
        ),
    );

    // Errors by kind over the last 24 hours.
    let errors = "Errors by kind";
    add(
        errors,
        table(
            Ctx::new(n - DAY, n),
            vec![
                json!({"kind": "dns", "failures": 144}),
                json!({"kind": "status", "failures": 96}),
                json!({"kind": "timeout", "failures": 48}),
            ],
        ),
    );
    add(
        errors,
        table(
            Ctx::new(n - DAY, n).sites(&[A]),
            vec![json!({"kind": "timeout", "failures": 48})],
        ),
    );

    // Certificates: A's days left grow with the hour's age.
    let cert = "Certificate days left (lowest per site)";
    add(
        cert,
        table(
            Ctx::new(n - DAY, n),
            vec![
                json!({"site": B, "cert days left": 12}),
                json!({"site": A, "cert days left": 30}),
            ],
        ),
    );
    add(
        cert,
        table(
            Ctx::new(n - 10 * DAY, n - 9 * DAY),
            vec![
                json!({"site": B, "cert days left": 12}),
                json!({"site": A, "cert days left": 39}),
            ],
        ),
    );

    // Slowest sites over the last 24 hours.
    let day = d.per_site(n - DAY, n);
    let lat_row = |id: i64| {
        let a = &day[&id];
        json!({"site": site_url(id), "p95": a.percentile(0.95), "p50": a.percentile(0.5),
               "p99": a.percentile(0.99), "avg": a.avg_ms(), "responses": a.responses})
    };
    let slowest = vec![lat_row(2), lat_row(1), lat_row(3)];
    assert_eq!(slowest[1]["avg"], json!(35.0));
    assert_eq!(slowest[1]["p50"], json!(mid_ms(bucket_of(30_000))));
    assert_eq!(slowest[1]["p95"], json!(mid_ms(bucket_of(50_000))));
    assert_eq!(slowest[1]["responses"], json!(4752));
    add(
        "Slowest sites (by p95)",
        table(Ctx::new(n - DAY, n), slowest),
    );
    add(
        "Slowest sites (by p95)",
        table(
            Ctx::new(n - DAY, n).sites(&[C, A]),
            vec![lat_row(1), lat_row(3)],
        ),
    );

    // The state timeline and the incidents, from TRANSITIONS.
    let ts = |t: i64| json!(rfc3339_nano(t * 1000).replace('Z', "+00:00"));
    let state = |url: &str, t: i64, st: &str| json!({"time": ts(t), "site": url, "state": st});
    let (from, to) = (n - 6 * HOUR, n - 2 * HOUR);
    let b = [state(B, from, "up"), state(B, n - 3 * HOUR, "degraded")];
    let mut all = vec![
        state(A, from, "up"),
        state(A, n - 5 * HOUR, "down"),
        state(A, n - 5 * HOUR + 30 * MINUTE, "up"),
    ];
    all.extend(b.iter().cloned());
    all.extend([
        state(C, from, "up"),
        state(C, n - 4 * HOUR, "degraded"),
        state(C, n - 4 * HOUR + 10 * MINUTE, "down"),
        state(C, n - 4 * HOUR + 20 * MINUTE, "maintenance"),
        state(C, n - 4 * HOUR + 30 * MINUTE, "down"),
        state(D, from, "unknown"),
    ]);
    add("Site state timeline", table(Ctx::new(from, to), all));
    add(
        "Site state timeline",
        table(Ctx::new(from, to).sites(&[B]), b.to_vec()),
    );
    let a_down = json!({"site": A, "state": "down", "started": ts(n - 5 * HOUR),
                        "ended": ts(n - 5 * HOUR + 30 * MINUTE), "duration": 1800.0,
                        "reason": "2 of 3 voting probes down"});
    // Degraded, down, a window, down again: one incident; it ends when the
    // site goes silent (unknown, followed by up rather than down or degraded).
    let c_down = json!({"site": C, "state": "down", "started": ts(n - 4 * HOUR),
                        "ended": ts(n - 90 * MINUTE), "duration": 9000.0, "reason": "slow"});
    // Still open: it lasts until the range's end (before now).
    let b_degraded = json!({"site": B, "state": "degraded", "started": ts(n - 3 * HOUR),
                            "ended": null, "duration": 3600.0, "reason": "eu: flapping"});
    add(
        "Incidents",
        table(
            Ctx::new(from, to),
            vec![b_degraded, c_down.clone(), a_down.clone()],
        ),
    );
    add(
        "Incidents",
        table(
            Ctx::new(n - 4 * HOUR, to),
            vec![
                json!({"site": B, "state": "degraded",
                "started": ts(n - 3 * HOUR), "ended": null, "duration": 3600.0,
                "reason": "eu: flapping"}),
                c_down.clone(),
            ],
        ),
    );
    add(
        "Incidents",
        table(Ctx::new(from, to).sites(&[A]), vec![a_down]),
    );
    // Up to now: C down into a window with nothing after is still open; its
    // earlier incident ended at the unknown, inside the range.
    add(
        "Incidents",
        table(
            Ctx::new(n - 2 * HOUR, n),
            vec![
                json!({"site": C, "state": "down", "started": ts(n - 60 * MINUTE),
                       "ended": null, "duration": 3600.0, "reason": "refused"}),
                json!({"site": B, "state": "degraded", "started": ts(n - 3 * HOUR),
                       "ended": null, "duration": 10800.0, "reason": "eu: flapping"}),
                c_down.clone(),
            ],
        ),
    );
    // D: silent for good ends at the unknown; a window then up ends at the
    // up; down, unknown, down is one incident (from its degraded start).
    let d_silent = json!({"site": D, "state": "down", "started": ts(n - 10 * DAY),
                          "ended": ts(n - 10 * DAY + HOUR), "duration": 3600.0,
                          "reason": "status 503"});
    let d_window = json!({"site": D, "state": "down", "started": ts(n - 20 * DAY),
                          "ended": ts(n - 20 * DAY + 2 * HOUR), "duration": 7200.0,
                          "reason": "refused"});
    let d_spell = |state: &str| {
        json!({"site": D, "state": state, "started": ts(n - 30 * DAY),
               "ended": ts(n - 30 * DAY + 3 * HOUR), "duration": 10800.0, "reason": "flapping"})
    };
    add(
        "Incidents",
        table(
            Ctx::new(n - 31 * DAY, n - DAY).sites(&[D]),
            vec![d_silent, d_window, d_spell("down")],
        ),
    );
    // The range ends between the unknown and the down after it: still one
    // incident, ended by the up after the range.
    add(
        "Incidents",
        table(
            Ctx::new(n - 30 * DAY - HOUR, n - 30 * DAY + 90 * MINUTE),
            vec![d_spell("down")],
        ),
    );
    // The range ends while D is degraded: the state is the range's, the end
    // the incident's.
    add(
        "Incidents",
        table(
            Ctx::new(n - 30 * DAY - HOUR, n - 30 * DAY + 15 * MINUTE).sites(&[D]),
            vec![d_spell("degraded")],
        ),
    );
    // Down since before the 90-day look-back: shown from the look-back.
    add(
        "Incidents",
        table(
            Ctx::new(n - 50 * DAY, n - 49 * DAY),
            vec![
                json!({"site": D, "state": "down", "started": ts(n - 140 * DAY),
                        "ended": ts(n - 40 * DAY), "duration": 8_640_000.0, "reason": "dns"}),
            ],
        ),
    );

    // Status: the latest-state rows and the last 24 hours.
    let last = rfc3339_nano((n - 60) * 1000).replace('Z', "+00:00");
    add(
        "Status",
        table(
            Ctx::new(n - DAY, n),
            vec![
                json!({"site": D, "last check": null, "ok": null, "status": null,
                       "uptime": null, "p95": null, "cert days left": null}),
                json!({"site": B, "last check": last, "ok": false, "status": 503,
                       "uptime": 0.9, "p95": mid_ms(bucket_of(800_000)), "cert days left": 12}),
                json!({"site": A, "last check": last, "ok": true, "status": 200,
                       "uptime": 0.99, "p95": mid_ms(bucket_of(50_000)), "cert days left": 30}),
                json!({"site": C, "last check": last, "ok": true, "status": 200,
                       "uptime": 1.0, "p95": mid_ms(bucket_of(5_000)), "cert days left": null}),
            ],
        ),
    );
    e
}
