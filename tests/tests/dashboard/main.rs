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

mod data;
mod expectations;
mod grafana;

use data::*;
use expectations::*;
use grafana::*;

/// The dashboard file.
fn dashboard() -> Value {
    let path = repo_root().join("grafana/dashboards/website-monitor.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
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
