//! The Grafana dashboard (`grafana/dashboards/website-monitor.json`) against
//! the real PostgreSQL: a fresh schema gets the sink's migrations, partitions
//! and a synthetic set of rollups (known counts and latency histograms at the
//! minute, hour and day levels, consistent with each other); then every
//! panel's SQL and every variable's query is expanded the way Grafana's
//! PostgreSQL data source expands it (the frontend's template variables, then
//! the backend's `$__interval`/`$__unixEpoch*` and macros such as
//! `$__timeFilter` and `$__timeGroupAlias`), run with the schema on the
//! search_path, and its rows are compared with the figures the data set
//! implies. A panel without expected results fails the test
//! `every_panel_and_variable_has_expectations`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, UNIX_EPOCH};

use regex::{Captures, Regex};
use serde_json::{json, Value};
use website_monitor_tests::{fresh_schema, pg, repo_root, stack};

const A: &str = "https://a.example/";
const B: &str = "https://b.example/";
const C: &str = "https://c.example/";
/// A url with a quote: variable values must be quoted as SQL literals.
const D: &str = "https://d.example/o'neil";
const SITES: [(i64, &str); 4] = [(1, A), (2, B), (3, C), (4, D)];
const PROBES: [(i32, &str); 2] = [(1, "eu"), (2, "us")];
const NO_PROBE: &str = "(no probe)";

/// Site status transitions: (site id, seq, from, to, seconds from n, reason).
const TRANSITIONS: [(i64, i64, &str, &str, i64, &str); 10] = [
    (1, 1, "unknown", "up", -10 * HOUR, "first successes"),
    (1, 2, "up", "down", -5 * HOUR, "2 of 3 voting probes down"),
    (1, 3, "down", "up", -5 * HOUR + 30 * MINUTE, "recovered"),
    (2, 1, "unknown", "up", -20 * HOUR, "first successes"),
    (2, 2, "up", "degraded", -3 * HOUR, "eu: flapping"),
    // C: degraded, then down through a maintenance window and a silent
    // spell: one incident, down, from its first entry until up.
    (3, 1, "unknown", "up", -30 * HOUR, "first successes"),
    (3, 2, "up", "degraded", -4 * HOUR, "slow"),
    (3, 3, "degraded", "down", -4 * HOUR + 10 * MINUTE, "down"),
    (
        3,
        4,
        "down",
        "maintenance",
        -4 * HOUR + 20 * MINUTE,
        "window",
    ),
    (
        3,
        5,
        "maintenance",
        "down",
        -4 * HOUR + 30 * MINUTE,
        "still down",
    ),
];
/// C's last transitions, after the range the timeline and incidents use:
/// silent, then up (its incident ends at the unknown, not at the up), then
/// down into a window with nothing after (an incident still open).
const C_LATER: [(i64, i64, &str, &str, i64, &str); 4] = [
    (3, 6, "down", "unknown", -90 * MINUTE, "silent"),
    (3, 7, "unknown", "up", -80 * MINUTE, "recovered"),
    (3, 8, "up", "down", -60 * MINUTE, "refused"),
    (3, 9, "down", "maintenance", -50 * MINUTE, "window"),
];
/// D's transitions, all before the timeline's range (it is unknown there):
/// down from 200 days back to 40 (older than the 90-day look-back), then
/// degraded and down with a silent spell that ends in down (one incident),
/// down through a window until up, and down until it went silent for good.
const D_EARLIER: [(i64, i64, &str, &str, i64, &str); 12] = [
    (4, 1, "unknown", "down", -200 * DAY, "dns"),
    (4, 2, "down", "up", -40 * DAY, "recovered"),
    (4, 3, "up", "degraded", -30 * DAY, "flapping"),
    (4, 4, "degraded", "down", -30 * DAY + 30 * MINUTE, "timeout"),
    (4, 5, "down", "unknown", -30 * DAY + HOUR, "silent"),
    (
        4,
        6,
        "unknown",
        "down",
        -30 * DAY + 2 * HOUR,
        "timeout again",
    ),
    (4, 7, "down", "up", -30 * DAY + 3 * HOUR, "recovered"),
    (4, 8, "up", "down", -20 * DAY, "refused"),
    (4, 9, "down", "maintenance", -20 * DAY + HOUR, "window"),
    (
        4,
        10,
        "maintenance",
        "up",
        -20 * DAY + 2 * HOUR,
        "window over",
    ),
    (4, 11, "up", "down", -10 * DAY, "status 503"),
    (4, 12, "down", "unknown", -10 * DAY + HOUR, "silent"),
];

const MINUTE: i64 = 60;
const HOUR: i64 = 3600;
const DAY: i64 = 86400;

/// The dashboard file.
fn dashboard() -> Value {
    let path = repo_root().join("grafana/dashboards/website-monitor.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// The latency bucket of a duration: floor(8·log2(µs)).
fn bucket_of(us: i64) -> i64 {
    (8.0 * (us as f64).log2()).floor() as i64
}

/// The geometric middle of a latency bucket, in milliseconds (what `_percentile` returns).
fn mid_ms(bucket: i64) -> f64 {
    2f64.powf((bucket as f64 + 0.5) / 8.0) / 1000.0
}

/// One rollup row's figures (or a sum of rows).
#[derive(Clone, Debug, Default)]
struct Agg {
    checks: i64,
    ok: i64,
    failed: i64,
    responses: i64,
    dmin: Option<i64>,
    dmax: Option<i64>,
    dsum: i64,
    cert: Option<i64>,
    latency: BTreeMap<i64, i64>,
    failures: BTreeMap<i64, i64>,
}

impl Agg {
    /// `checks` checks of which `ok` succeeded; `failures` are (error kind
    /// code, count); `responses` are (count, µs): that many responses took
    /// that long.
    fn one(
        checks: i64,
        ok: i64,
        failures: &[(i64, i64)],
        responses: &[(i64, i64)],
        cert: Option<i64>,
    ) -> Self {
        let mut latency = BTreeMap::new();
        for (n, us) in responses {
            *latency.entry(bucket_of(*us)).or_default() += n;
        }
        Self {
            checks,
            ok,
            failed: failures.iter().map(|f| f.1).sum(),
            responses: responses.iter().map(|r| r.0).sum(),
            dmin: responses.iter().map(|r| r.1).min(),
            dmax: responses.iter().map(|r| r.1).max(),
            dsum: responses.iter().map(|(n, us)| n * us).sum(),
            cert,
            latency,
            failures: failures.iter().copied().collect(),
        }
    }

    fn add(&mut self, o: &Agg) {
        self.checks += o.checks;
        self.ok += o.ok;
        self.failed += o.failed;
        self.responses += o.responses;
        let opt = |a: Option<i64>, b: Option<i64>, f: fn(i64, i64) -> i64| match (a, b) {
            (Some(a), Some(b)) => Some(f(a, b)),
            (a, b) => a.or(b),
        };
        self.dmin = opt(self.dmin, o.dmin, i64::min);
        self.dmax = opt(self.dmax, o.dmax, i64::max);
        self.cert = opt(self.cert, o.cert, i64::min);
        self.dsum += o.dsum;
        for (k, n) in &o.latency {
            *self.latency.entry(*k).or_default() += n;
        }
        for (k, n) in &o.failures {
            *self.failures.entry(*k).or_default() += n;
        }
    }

    fn uptime(&self) -> Option<f64> {
        let d = self.ok + self.failed;
        (d > 0).then(|| self.ok as f64 / d as f64)
    }

    /// The middle of the first bucket where the running count reaches p of the total.
    fn percentile(&self, p: f64) -> Option<f64> {
        let total: i64 = self.latency.values().sum();
        let mut below = 0;
        for (k, n) in &self.latency {
            below += n;
            if below as f64 >= p * total as f64 {
                return Some(mid_ms(*k));
            }
        }
        None
    }

    fn avg_ms(&self) -> Option<f64> {
        (self.responses > 0).then(|| self.dsum as f64 / self.responses as f64 / 1e3)
    }

    /// `latency` or `failures` as the rollup column stores it (NULL when empty).
    fn sql_array(m: &BTreeMap<i64, i64>) -> String {
        if m.is_empty() {
            return "NULL".into();
        }
        let items: Vec<String> = m.iter().map(|(k, n)| ((k << 32) | n).to_string()).collect();
        format!("'{{{}}}'::int8[]", items.join(","))
    }
}

/// The checks of each (site, probe) in the hour that starts at `h` (epoch
/// seconds); `n` is the test's current hour. Site A: two probes, 99 of 100
/// checks ok (1 timeout), probe eu answers in 10 ms in even hours and 30 ms
/// in odd ones, probe us in 50 ms, certificate days left 30 + the hour's age
/// in days. Site B: probe eu, 90 of 100 ok (6 dns, 4 status), 85 responses
/// in 200 ms and 9 in 800 ms (so p90 and p95 differ), 12 days left. Site C: no probe (probe id 0), 60 of 60 ok, 5 ms, no TLS.
/// Site D: no checks.
fn model(h: i64, n: i64) -> Vec<(i64, i32, Agg)> {
    let cert_a = Some(30 + (n - h) / DAY);
    let eu_a = if (h / HOUR) % 2 == 0 { 10_000 } else { 30_000 };
    vec![
        (1, 1, Agg::one(100, 99, &[(4, 1)], &[(99, eu_a)], cert_a)),
        (1, 2, Agg::one(100, 99, &[(4, 1)], &[(99, 50_000)], cert_a)),
        (
            2,
            1,
            Agg::one(
                100,
                90,
                &[(1, 6), (6, 4)],
                &[(85, 200_000), (9, 800_000)],
                Some(12),
            ),
        ),
        (3, 0, Agg::one(60, 60, &[], &[(60, 5_000)], None)),
    ]
}

/// Rows keyed by (bucket, site id, probe id).
type Rows = BTreeMap<(i64, i64, i32), Agg>;

/// The synthetic data set: the model's hours from 90 days before `n`'s day
/// up to `n`, and the rollup rows each level holds of them (like the default
/// retentions: minutes for the last 47 hours, hours for 35 days, days for
/// all). A minute row holds its hour's checks at minute 10.
struct Data {
    n: i64,
    hours: Rows,
    minute: Rows,
    hour: Rows,
    day: Rows,
}

fn floor_to(t: i64, step: i64) -> i64 {
    t.div_euclid(step) * step
}

impl Data {
    fn new(n: i64) -> Self {
        let today = floor_to(n, DAY);
        let mut d = Data {
            n,
            hours: Rows::new(),
            minute: Rows::new(),
            hour: Rows::new(),
            day: Rows::new(),
        };
        let mut h = today - 90 * DAY;
        while h < n {
            for (site, probe, agg) in model(h, n) {
                d.hours.insert((h, site, probe), agg.clone());
                d.day
                    .entry((floor_to(h, DAY), site, probe))
                    .or_default()
                    .add(&agg);
                if h >= today - 35 * DAY {
                    d.hour.insert((h, site, probe), agg.clone());
                }
                if h >= n - 47 * HOUR {
                    d.minute.insert((h + 10 * MINUTE, site, probe), agg);
                }
            }
            h += HOUR;
        }
        d
    }

    /// The model's checks per site over the hours in [from, to).
    fn per_site(&self, from: i64, to: i64) -> BTreeMap<i64, Agg> {
        let mut out: BTreeMap<i64, Agg> = BTreeMap::new();
        for ((h, site, _), agg) in self.hours.range((from, 0, 0)..(to, 0, 0)) {
            let _ = h;
            out.entry(*site).or_default().add(agg);
        }
        out
    }
}

/// What Grafana sends with a query: the time range (milliseconds), the
/// interval and the variables' selections (`None`: "All").
#[derive(Clone, Debug)]
struct Ctx {
    from_ms: i64,
    to_ms: i64,
    interval: &'static str,
    site: Option<Vec<&'static str>>,
    probe: Option<Vec<&'static str>>,
}

impl Ctx {
    fn new(from_s: i64, to_s: i64) -> Self {
        Self {
            from_ms: from_s * 1000,
            to_ms: to_s * 1000,
            interval: "1m",
            site: None,
            probe: None,
        }
    }
    fn interval(mut self, interval: &'static str) -> Self {
        self.interval = interval;
        self
    }
    fn sites(mut self, sites: &[&'static str]) -> Self {
        self.site = Some(sites.to_vec());
        self
    }
    fn probes(mut self, probes: &[&'static str]) -> Self {
        self.probe = Some(probes.to_vec());
        self
    }
    fn interval_s(&self) -> i64 {
        parse_interval(self.interval)
    }
}

/// Go's `gtime.ParseInterval` for the units a dashboard uses.
fn parse_interval(s: &str) -> i64 {
    let s = s.trim_matches('\'');
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: i64 = n.parse().unwrap_or_else(|_| panic!("interval {s:?}"));
    n * match unit {
        "s" => 1,
        "m" => MINUTE,
        "h" => HOUR,
        "d" => DAY,
        "w" => 7 * DAY,
        _ => panic!("interval unit of {s:?} not supported by this test"),
    }
}

/// A time as Go's `time.RFC3339Nano` writes it in UTC (no trailing zeros).
fn rfc3339_nano(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).expect("after 1970"));
    let s = humantime::format_rfc3339_millis(t).to_string(); // 2026-11-28T00:00:00.500Z
    let (secs, frac) = s.trim_end_matches('Z').split_once('.').expect("millis");
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        format!("{secs}Z")
    } else {
        format!("{secs}.{frac}Z")
    }
}

/// The frontend's pass (Grafana's template service with the SQL data
/// sources' `interpolateVariable`): `$var`, `${var}`, `[[var]]`. A multi-value
/// or include-All variable's values become quoted literals joined by commas;
/// "All" with a custom all value is that value, raw; without one, every
/// option. Unknown names (the backend's macros) stay as written.
fn frontend(sql: &str, dash: &Value, ctx: &Ctx, options: &BTreeMap<String, Vec<String>>) -> String {
    let re = Regex::new(
        r"\$([A-Za-z0-9_]+)|\[\[([A-Za-z0-9_]+?)(?::([A-Za-z0-9_]+))?\]\]|\$\{([A-Za-z0-9_]+)(?:\.([^:^\}]+))?(?::([^\}]+))?\}",
    )
    .expect("regex");
    let vars = dash["templating"]["list"].as_array().expect("variables");
    re.replace_all(sql, |c: &Captures<'_>| {
        let whole = c[0].to_string();
        let name = c.get(1).or(c.get(2)).or(c.get(4)).expect("a name").as_str();
        assert!(
            c.get(3).is_none() && c.get(5).is_none() && c.get(6).is_none(),
            "{whole}: formats and field paths are not expanded by this test"
        );
        let quote = |v: &str| format!("'{}'", v.replace('\'', "''"));
        match name {
            "__interval" => ctx.interval.to_string(),
            "__interval_ms" => (ctx.interval_s() * 1000).to_string(),
            _ => {
                let Some(var) = vars.iter().find(|v| v["name"] == name) else {
                    return whole;
                };
                let multi = var["multi"] == true || var["includeAll"] == true;
                let selection = match name {
                    "site" => &ctx.site,
                    "probe" => &ctx.probe,
                    _ => panic!("variable {name} is not known to this test"),
                };
                match selection {
                    None => {
                        assert!(var["includeAll"] == true, "{name} has no All");
                        match var["allValue"].as_str() {
                            Some(all) if !all.is_empty() => all.to_string(),
                            _ => options[name]
                                .iter()
                                .map(|v| quote(v))
                                .collect::<Vec<_>>()
                                .join(","),
                        }
                    }
                    Some(values) if multi => values
                        .iter()
                        .map(|v| quote(v))
                        .collect::<Vec<_>>()
                        .join(","),
                    Some(values) => {
                        assert_eq!(values.len(), 1, "{name} takes one value");
                        values[0].replace('\'', "''")
                    }
                }
            }
        }
    })
    .into_owned()
}

/// The backend's pass: `sqleng.Interpolate` (`$__interval_ms`, `$__interval`,
/// `$__unixEpochFrom()`, `$__unixEpochTo()`), then the PostgreSQL macro
/// engine (TimescaleDB off): every `$name(args)` is a macro.
fn backend(sql: &str, ctx: &Ctx) -> String {
    let sql = sql
        .replace("$__interval_ms", &(ctx.interval_s() * 1000).to_string())
        .replace("$__interval", ctx.interval)
        .replace("$__unixEpochFrom()", &(ctx.from_ms / 1000).to_string())
        .replace("$__unixEpochTo()", &(ctx.to_ms / 1000).to_string());
    let re = Regex::new(r"\$([_a-zA-Z0-9]+)\(([^\)]*)\)").expect("regex");
    let from = rfc3339_nano(ctx.from_ms);
    let to = rfc3339_nano(ctx.to_ms);
    re.replace_all(&sql, |c: &Captures<'_>| {
        let mut name = c[1].to_string();
        // Grafana: `$__timeGroup(...)` directly followed by ',' (its first
        // occurrence in the query) gets the alias, as before 5.3.
        if name == "__timeGroup" {
            if let Some(i) = sql.find(&c[0]) {
                if sql[i + c[0].len()..].starts_with(',') {
                    name = "__timeGroupAlias".into();
                }
            }
        }
        let args: Vec<&str> = c[2].split(',').map(str::trim).collect();
        let group = |args: &[&str]| {
            assert!(
                args.len() == 2,
                "{}: fill modes are not expanded by this test",
                &c[0]
            );
            let secs = parse_interval(args[1]);
            format!("floor(extract(epoch from {})/{secs})*{secs}", args[0])
        };
        match name.as_str() {
            "__time" => format!("{} AS \"time\"", args[0]),
            "__timeEpoch" => format!("extract(epoch from {}) as \"time\"", args[0]),
            "__timeFilter" => format!("{} BETWEEN '{from}' AND '{to}'", args[0]),
            "__timeFrom" => format!("'{from}'"),
            "__timeTo" => format!("'{to}'"),
            "__timeGroup" => group(&args),
            "__timeGroupAlias" => format!("{} AS \"time\"", group(&args)),
            "__unixEpochFilter" => format!(
                "{c} >= {} AND {c} <= {}",
                ctx.from_ms / 1000,
                ctx.to_ms / 1000,
                c = args[0]
            ),
            other => panic!("macro {other} is not expanded by this test"),
        }
    })
    .into_owned()
}

/// The SQL Grafana runs for `sql` in `ctx`.
fn expand(sql: &str, dash: &Value, ctx: &Ctx, options: &BTreeMap<String, Vec<String>>) -> String {
    let out = backend(&frontend(sql, dash, ctx, options), ctx);
    assert!(!out.contains('$'), "not everything was expanded:\n{out}");
    out
}

/// One run of a panel's query and the rows it must return.
struct Case {
    ctx: Ctx,
    rows: Vec<Value>,
    /// Whether the row order counts (tables); a time series is compared sorted.
    ordered: bool,
}

fn table(ctx: Ctx, rows: Vec<Value>) -> Case {
    Case {
        ctx,
        rows,
        ordered: true,
    }
}

/// The p50/p95 series Grafana should draw from `level`'s rows: grouped by
/// `$__timeGroup(bucket, interval)` within the range (BETWEEN, both ends
/// included) and by `metric` (None: the row is filtered out).
fn series(ctx: Ctx, level: &Rows, metric: impl Fn(i64, i32) -> Option<&'static str>) -> Case {
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

fn site_url(id: i64) -> &'static str {
    SITES.iter().find(|s| s.0 == id).expect("site").1
}

fn probe_name(id: i32) -> &'static str {
    PROBES.iter().find(|p| p.0 == id).map_or(NO_PROBE, |p| p.1)
}

/// Sorts rows by keys (numbers ascending, NULLs last) as an ORDER BY would.
fn sort_rows(rows: &mut [Value], keys: &[&str]) {
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
fn expectations(d: &Data) -> BTreeMap<String, Vec<Case>> {
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

/// Whether two JSON values agree (numbers within a relative 1e-9).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().expect("f64"), y.as_f64().expect("f64"));
            (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0)
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        (x, y) => x == y,
    }
}

/// The panels (title → SQL) and variables (`variable:<name>` → SQL) of the dashboard.
fn queries(dash: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for p in dash["panels"].as_array().expect("panels") {
        let title = p["title"].as_str().expect("title").to_string();
        let targets = p["targets"].as_array().expect("targets");
        assert_eq!(targets.len(), 1, "{title}: one query per panel");
        let t = &targets[0];
        assert_eq!(t["datasource"]["uid"], "website-monitor-pg", "{title}");
        assert_eq!(t["rawQuery"], true, "{title}");
        let sql = t["rawSql"].as_str().expect("rawSql").to_string();
        assert!(
            out.insert(title.clone(), sql).is_none(),
            "two panels titled {title}"
        );
    }
    for v in dash["templating"]["list"].as_array().expect("variables") {
        let name = v["name"].as_str().expect("name");
        assert_eq!(v["datasource"]["uid"], "website-monitor-pg", "{name}");
        let sql = v["query"].as_str().expect("query").to_string();
        out.insert(format!("variable:{name}"), sql);
    }
    out
}

#[test]
fn every_panel_and_variable_has_expectations() {
    let dash = dashboard();
    let have: BTreeSet<String> = queries(&dash).into_keys().collect();
    let expected: BTreeSet<String> = expectations(&Data::new(1_800_000_000))
        .into_keys()
        .collect();
    assert_eq!(
        have, expected,
        "every panel and variable of the dashboard needs expected results here (and none is stale)"
    );
}

#[test]
fn macros_expand_like_grafana() {
    let dash = dashboard();
    let ctx = Ctx::new(1_764_288_000, 1_764_374_400)
        .interval("5m")
        .sites(&[A, D]);
    let options = BTreeMap::new();
    assert_eq!(
        expand(
            "SELECT $__timeGroupAlias(b, $__interval), $__timeGroup(b, '1h') FROM t \
             WHERE $__timeFilter(b) AND u IN ($site) AND x = ${site} AND $__timeFrom() < $__timeTo() \
             AND $__interval_ms > 0 AND \"site_probe\" IS NOT NULL",
            &dash,
            &ctx,
            &options,
        ),
        "SELECT floor(extract(epoch from b)/300)*300 AS \"time\", floor(extract(epoch from b)/3600)*3600 FROM t \
         WHERE b BETWEEN '2025-11-28T00:00:00Z' AND '2025-11-29T00:00:00Z' \
         AND u IN ('https://a.example/','https://d.example/o''neil') \
         AND x = 'https://a.example/','https://d.example/o''neil' \
         AND '2025-11-28T00:00:00Z' < '2025-11-29T00:00:00Z' AND 300000 > 0 AND \"site_probe\" IS NOT NULL"
    );
    assert_eq!(rfc3339_nano(1_764_288_000_500), "2025-11-28T00:00:00.5Z");
    let all = Ctx::new(0, 1);
    assert_eq!(
        expand("(ARRAY[$site])[1] IS NULL", &dash, &all, &options),
        "(ARRAY[NULL])[1] IS NULL"
    );
}

#[tokio::test]
async fn every_panel_returns_the_expected_figures() {
    use website_monitor_sink::migrate::{migrate, Tables};
    let s = stack();
    let mut db = pg(&s.postgres_uri).await;
    let schema = fresh_schema(&db, "dash").await;
    migrate(&mut db, &Tables::new(&schema, "site"))
        .await
        .expect("migrate");
    db.batch_execute(&format!(
        "SET search_path TO \"{schema}\"; SET TimeZone TO 'UTC'"
    ))
    .await
    .expect("search_path");
    let n: i64 = db
        .query_one(
            "SELECT extract(epoch FROM date_trunc('hour', now()))::int8",
            &[],
        )
        .await
        .expect("now")
        .get(0);
    let data = Data::new(n);
    let today = floor_to(n, DAY);

    // Partitions through the migrations' function, then the rows.
    for (table, from, span) in [
        ("site_per_minute", n - 2 * DAY, "1 day"),
        ("site_per_hour", today - 36 * DAY, "7 days"),
        ("site_per_day", today - 91 * DAY, "30 days"),
    ] {
        let made: i32 = db
            .query_one(
                &format!(
                    "SELECT \"site_make_partitions\"('{table}'::regclass, \
                     to_timestamp({from}), to_timestamp({}), '{span}')",
                    n + DAY
                ),
                &[],
            )
            .await
            .expect("make partitions")
            .get(0);
        assert!(made > 0, "{table}: partitions made");
    }
    let mut setup = String::new();
    for (id, url) in SITES {
        let (data, at) = match url {
            A | C => (
                "'{\"ok\": true, \"status_code\": 200}'",
                format!("to_timestamp({})", n - 60),
            ),
            B => (
                "'{\"ok\": false, \"status_code\": 503}'",
                format!("to_timestamp({})", n - 60),
            ),
            _ => ("NULL", "NULL".to_string()),
        };
        setup += &format!(
            "INSERT INTO \"site\" (id, url, data, checked_at, updated_at) VALUES ({id}, '{}', {data}, {at}, {at});\n",
            url.replace('\'', "''")
        );
    }
    for (id, name) in PROBES {
        setup += &format!("INSERT INTO \"site_probe\" (id, name) VALUES ({id}, '{name}');\n");
    }
    // Site status transitions ([`TRANSITIONS`], [`C_LATER`], [`D_EARLIER`]): A down for
    // 30 minutes, B degraded since n - 3 h.
    for (site, seq, from, to, at, reason) in TRANSITIONS.into_iter().chain(C_LATER).chain(D_EARLIER)
    {
        setup += &format!(
            "INSERT INTO \"site_transition\" (site_id, seq, from_state, to_state, at, reason, probes) \
             VALUES ({site}, {seq}, '{from}', '{to}', to_timestamp({}), '{reason}', '{{}}');\n",
            n + at
        );
    }
    for (table, rows) in [
        ("site_per_minute", &data.minute),
        ("site_per_hour", &data.hour),
        ("site_per_day", &data.day),
    ] {
        let values: Vec<String> = rows
            .iter()
            .map(|((bucket, site, probe), a)| {
                let opt = |v: Option<i64>| v.map_or("NULL".to_string(), |v| v.to_string());
                format!(
                    "({site}, {probe}, to_timestamp({bucket}), {}, {}, {}, {}, {}, {}, {}, {}, {}, {})",
                    a.checks,
                    a.ok,
                    a.failed,
                    a.responses,
                    opt(a.dmin),
                    opt(a.dmax),
                    a.dsum,
                    opt(a.cert),
                    Agg::sql_array(&a.latency),
                    Agg::sql_array(&a.failures),
                )
            })
            .collect();
        setup += &format!(
            "INSERT INTO \"{table}\" (site_id, probe_id, bucket, checks, ok, failed, responses, \
             duration_min_us, duration_max_us, duration_sum_us, cert_days_min, latency, failures) \
             VALUES {};\n",
            values.join(",\n")
        );
    }
    db.batch_execute(&setup).await.expect("data set");

    let dash = dashboard();
    let queries = queries(&dash);
    let mut expected = expectations(&data);
    // The variables' options first: "All" without a custom value would list them.
    let mut options: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut runs = 0;
    let (vars, panels): (Vec<_>, Vec<_>) = queries
        .iter()
        .partition(|(k, _)| k.starts_with("variable:"));
    for (key, sql) in vars.into_iter().chain(panels) {
        let cases = expected
            .remove(key)
            .unwrap_or_else(|| panic!("{key}: no expected results"));
        for case in cases {
            let run = expand(sql, &dash, &case.ctx, &options);
            let wrapped = format!("SELECT coalesce(json_agg(q), '[]')::text FROM (\n{run}\n) q");
            let text: String = match db.query_one(&wrapped, &[]).await {
                Ok(row) => row.get(0),
                Err(e) => {
                    failures.push(format!("{key} {:?}: {e}\n{run}", case.ctx));
                    continue;
                }
            };
            runs += 1;
            let mut rows: Vec<Value> = serde_json::from_str(&text).expect("json rows");
            if key.starts_with("variable:") {
                rows = rows
                    .into_iter()
                    .map(|r| {
                        r.as_object()
                            .expect("row")
                            .values()
                            .next()
                            .cloned()
                            .expect("a column")
                    })
                    .collect();
                let name = key.trim_start_matches("variable:").to_string();
                options.insert(
                    name,
                    rows.iter()
                        .map(|v| v.as_str().expect("text").to_string())
                        .collect(),
                );
            }
            let mut want = case.rows.clone();
            if !case.ordered {
                sort_rows(&mut rows, &["time", "metric"]);
                sort_rows(&mut want, &["time", "metric"]);
            }
            if !same(&Value::Array(rows.clone()), &Value::Array(want.clone())) {
                failures.push(format!(
                    "{key} {:?}:\n  got      {}\n  expected {}\n{run}",
                    case.ctx,
                    Value::Array(rows),
                    Value::Array(want)
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(
        expected.is_empty(),
        "stale expectations: {:?}",
        expected.keys()
    );
    assert!(runs >= 20, "{runs} runs");
    db.batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .await
        .expect("drop schema");
}

/// `_rollup` picks whole UTC days, hours and minutes whatever the session's
/// time zone (Grafana's sessions use the server's default): across the
/// spring DST change in Europe/Berlin, the hours of 29 March 2026 from 05:00
/// UTC come from the hour level and 30 March from the day level, none lost.
#[tokio::test]
async fn rollup_levels_hold_across_a_dst_change() {
    use website_monitor_sink::migrate::{migrate, Tables};
    let s = stack();
    let mut db = pg(&s.postgres_uri).await;
    let schema = fresh_schema(&db, "dash_dst").await;
    migrate(&mut db, &Tables::new(&schema, "site"))
        .await
        .expect("migrate");
    db.batch_execute(&format!(
        "SET search_path TO \"{schema}\";
         SELECT \"site_make_partitions\"('site_per_hour'::regclass, '2026-03-29Z', '2026-03-30Z', '1 day');
         SELECT \"site_make_partitions\"('site_per_day'::regclass, '2026-03-29Z', '2026-03-30Z', '1 day');
         INSERT INTO \"site\" (id, url) VALUES (1, '{A}');
         INSERT INTO \"site_per_hour\" (site_id, probe_id, bucket, checks, ok, failed, responses, duration_sum_us)
         SELECT 1, 0, h, 10, 10, 0, 0, 0
         FROM generate_series('2026-03-29Z'::timestamptz, '2026-03-30 23:00Z', '1 hour') AS h;
         INSERT INTO \"site_per_day\" (site_id, probe_id, bucket, checks, ok, failed, responses, duration_sum_us)
         VALUES (1, 0, '2026-03-29Z', 240, 240, 0, 0, 0), (1, 0, '2026-03-30Z', 240, 240, 0, 0, 0);"
    ))
    .await
    .expect("data set");
    for tz in ["UTC", "Europe/Berlin", "America/New_York"] {
        db.batch_execute(&format!("SET TimeZone TO '{tz}'"))
            .await
            .expect("time zone");
        let checks: i64 = db
            .query_one(
                "SELECT checks FROM \"site_uptime\"($1, '2026-03-29 05:00Z', '2026-03-31Z')",
                &[&A],
            )
            .await
            .expect("uptime")
            .get(0);
        assert_eq!(checks, 19 * 10 + 240, "session time zone {tz}");
    }
    db.batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .await
        .expect("drop schema");
}
