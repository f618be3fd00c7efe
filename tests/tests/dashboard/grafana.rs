//! Expanding a panel's SQL the way Grafana's PostgreSQL data source does:
//! the frontend's template variables, then the backend's macros.

use super::*;

/// What Grafana sends with a query: the time range (milliseconds), the
/// interval and the variables' selections (`None`: "All").
#[derive(Clone, Debug)]
pub(crate) struct Ctx {
    pub(crate) from_ms: i64,
    pub(crate) to_ms: i64,
    pub(crate) interval: &'static str,
    pub(crate) site: Option<Vec<&'static str>>,
    pub(crate) probe: Option<Vec<&'static str>>,
}

impl Ctx {
    pub(crate) fn new(from_s: i64, to_s: i64) -> Self {
        Self {
            from_ms: from_s * 1000,
            to_ms: to_s * 1000,
            interval: "1m",
            site: None,
            probe: None,
        }
    }
    pub(crate) fn interval(mut self, interval: &'static str) -> Self {
        self.interval = interval;
        self
    }
    pub(crate) fn sites(mut self, sites: &[&'static str]) -> Self {
        self.site = Some(sites.to_vec());
        self
    }
    pub(crate) fn probes(mut self, probes: &[&'static str]) -> Self {
        self.probe = Some(probes.to_vec());
        self
    }
    pub(crate) fn interval_s(&self) -> i64 {
        parse_interval(self.interval)
    }
}

/// Go's `gtime.ParseInterval` for the units a dashboard uses.
pub(crate) fn parse_interval(s: &str) -> i64 {
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
pub(crate) fn rfc3339_nano(ms: i64) -> String {
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
pub(crate) fn frontend(
    sql: &str,
    dash: &Value,
    ctx: &Ctx,
    options: &BTreeMap<String, Vec<String>>,
) -> String {
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
pub(crate) fn backend(sql: &str, ctx: &Ctx) -> String {
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
pub(crate) fn expand(
    sql: &str,
    dash: &Value,
    ctx: &Ctx,
    options: &BTreeMap<String, Vec<String>>,
) -> String {
    let out = backend(&frontend(sql, dash, ctx, options), ctx);
    assert!(!out.contains('$'), "not everything was expanded:\n{out}");
    out
}
