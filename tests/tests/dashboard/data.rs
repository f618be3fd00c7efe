//! The synthetic data set: sites, probes, transitions and the rollup rows
//! each level holds, with the figures they add up to.

use super::*;

pub(crate) const A: &str = "https://a.example/";
pub(crate) const B: &str = "https://b.example/";
pub(crate) const C: &str = "https://c.example/";
/// A url with a quote: variable values must be quoted as SQL literals.
pub(crate) const D: &str = "https://d.example/o'neil";
pub(crate) const SITES: [(i64, &str); 4] = [(1, A), (2, B), (3, C), (4, D)];
pub(crate) const PROBES: [(i32, &str); 2] = [(1, "eu"), (2, "us")];
pub(crate) const NO_PROBE: &str = "(no probe)";

/// Site status transitions: (site id, seq, from, to, seconds from n, reason).
pub(crate) const TRANSITIONS: [(i64, i64, &str, &str, i64, &str); 10] = [
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
pub(crate) const C_LATER: [(i64, i64, &str, &str, i64, &str); 4] = [
    (3, 6, "down", "unknown", -90 * MINUTE, "silent"),
    (3, 7, "unknown", "up", -80 * MINUTE, "recovered"),
    (3, 8, "up", "down", -60 * MINUTE, "refused"),
    (3, 9, "down", "maintenance", -50 * MINUTE, "window"),
];
/// D's transitions, all before the timeline's range (it is unknown there):
/// down from 200 days back to 40 (older than the 90-day look-back), then
/// degraded and down with a silent spell that ends in down (one incident),
/// down through a window until up, and down until it went silent for good.
pub(crate) const D_EARLIER: [(i64, i64, &str, &str, i64, &str); 12] = [
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

pub(crate) const MINUTE: i64 = 60;
pub(crate) const HOUR: i64 = 3600;
pub(crate) const DAY: i64 = 86400;

/// The latency bucket of a duration: floor(8·log2(µs)).
pub(crate) fn bucket_of(us: i64) -> i64 {
    (8.0 * (us as f64).log2()).floor() as i64
}

/// The geometric middle of a latency bucket, in milliseconds (what `_percentile` returns).
pub(crate) fn mid_ms(bucket: i64) -> f64 {
    2f64.powf((bucket as f64 + 0.5) / 8.0) / 1000.0
}

/// One rollup row's figures (or a sum of rows).
#[derive(Clone, Debug, Default)]
pub(crate) struct Agg {
    pub(crate) checks: i64,
    pub(crate) ok: i64,
    pub(crate) failed: i64,
    pub(crate) responses: i64,
    pub(crate) dmin: Option<i64>,
    pub(crate) dmax: Option<i64>,
    pub(crate) dsum: i64,
    pub(crate) cert: Option<i64>,
    pub(crate) latency: BTreeMap<i64, i64>,
    pub(crate) failures: BTreeMap<i64, i64>,
}

impl Agg {
    /// `checks` checks of which `ok` succeeded; `failures` are (error kind
    /// code, count); `responses` are (count, µs): that many responses took
    /// that long.
    pub(crate) fn one(
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

    pub(crate) fn add(&mut self, o: &Agg) {
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

    pub(crate) fn uptime(&self) -> Option<f64> {
        let d = self.ok + self.failed;
        (d > 0).then(|| self.ok as f64 / d as f64)
    }

    /// The middle of the first bucket where the running count reaches p of the total.
    pub(crate) fn percentile(&self, p: f64) -> Option<f64> {
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

    pub(crate) fn avg_ms(&self) -> Option<f64> {
        (self.responses > 0).then(|| self.dsum as f64 / self.responses as f64 / 1e3)
    }

    /// `latency` or `failures` as the rollup column stores it (NULL when empty).
    pub(crate) fn sql_array(m: &BTreeMap<i64, i64>) -> String {
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
pub(crate) fn model(h: i64, n: i64) -> Vec<(i64, i32, Agg)> {
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
pub(crate) type Rows = BTreeMap<(i64, i64, i32), Agg>;

/// The synthetic data set: the model's hours from 90 days before `n`'s day
/// up to `n`, and the rollup rows each level holds of them (like the default
/// retentions: minutes for the last 47 hours, hours for 35 days, days for
/// all). A minute row holds its hour's checks at minute 10.
pub(crate) struct Data {
    pub(crate) n: i64,
    pub(crate) hours: Rows,
    pub(crate) minute: Rows,
    pub(crate) hour: Rows,
    pub(crate) day: Rows,
}

pub(crate) fn floor_to(t: i64, step: i64) -> i64 {
    t.div_euclid(step) * step
}

impl Data {
    pub(crate) fn new(n: i64) -> Self {
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
    pub(crate) fn per_site(&self, from: i64, to: i64) -> BTreeMap<i64, Agg> {
        let mut out: BTreeMap<i64, Agg> = BTreeMap::new();
        for ((h, site, _), agg) in self.hours.range((from, 0, 0)..(to, 0, 0)) {
            let _ = h;
            out.entry(*site).or_default().add(agg);
        }
        out
    }
}
