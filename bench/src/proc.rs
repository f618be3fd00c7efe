//! Running a connector as a real process and reading what it reports:
//! `/metrics` (Prometheus text), peak RSS and CPU time from `/proc`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// A connector process started from a config file.
pub struct Connector {
    child: Child,
    /// Its `metrics_address`.
    pub metrics: String,
}

impl Connector {
    /// Starts `binary --config config`, logs to `log`, and waits until `/healthz` answers.
    pub fn start(binary: &Path, config: &Path, metrics: &str, log: &Path) -> Result<Self> {
        Self::start_with(binary, config, &[], metrics, log)
    }

    /// Like [`Connector::start`], with extra flags (e.g. `--stdout`; stdout goes to /dev/null).
    pub fn start_with(
        binary: &Path,
        config: &Path,
        flags: &[&str],
        metrics: &str,
        log: &Path,
    ) -> Result<Self> {
        let log_file = std::fs::File::create(log)?;
        let child = Command::new(binary)
            .arg("--config")
            .arg(config)
            .args(flags)
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let c = Self {
            child,
            metrics: metrics.to_owned(),
        };
        for _ in 0..300 {
            if http_get(&c.metrics, "/healthz").is_ok() {
                return Ok(c);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "{} did not serve /healthz on {} within 30 s; see {}",
            binary.display(),
            metrics,
            log.display()
        )
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `/metrics` right now.
    pub fn scrape(&self) -> Result<String> {
        http_get(&self.metrics, "/metrics")
    }

    /// Resident memory now (VmRSS), in bytes.
    pub fn rss(&self) -> u64 {
        proc_status_kb(self.pid(), "VmRSS:") * 1024
    }

    /// Peak resident memory so far (VmHWM), in bytes.
    pub fn peak_rss(&self) -> u64 {
        proc_status_kb(self.pid(), "VmHWM:") * 1024
    }

    /// User + system CPU seconds used so far.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.pid())
    }

    /// SIGKILL (a crash), and wait for it.
    pub fn kill9(mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// SIGTERM, then wait (SIGKILL after 30 s).
    pub fn stop(mut self) -> Result<()> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        for _ in 0..300 {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

/// A connector a failed scenario did not stop is killed, so it cannot keep
/// loading the machine (or re-create a deleted topic) after the bench.
impl Drop for Connector {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A plain HTTP/1.0 GET on loopback; returns the body of a 200.
pub fn http_get(addr: &str, path: &str) -> Result<String> {
    http_request(addr, "GET", path)
}

/// A plain HTTP/1.0 POST without a body on loopback; returns the body of a 200.
pub fn http_post(addr: &str, path: &str) -> Result<String> {
    http_request(addr, "POST", path)
}

fn http_request(addr: &str, method: &str, path: &str) -> Result<String> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n"
    )?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let (head, body) = buf.split_once("\r\n\r\n").context("no HTTP header end")?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        bail!(
            "{method} {path}: {} {body}",
            head.lines().next().unwrap_or("")
        );
    }
    Ok(body.to_owned())
}

/// Sum of every sample of metric `name` (all label sets) in Prometheus text.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The `q` quantile of histogram `name` (buckets summed over label sets),
/// interpolated linearly inside the bucket, as Prometheus'
/// `histogram_quantile` does. `None` without samples.
pub fn histogram_quantile(text: &str, name: &str, q: f64) -> Option<f64> {
    quantile(&buckets(text, name)?, q)
}

/// [`histogram_quantile`] of what was recorded between the scrapes
/// `before` and `after` (the buckets' increase), as Prometheus'
/// `histogram_quantile(q, increase(...))`.
pub fn histogram_quantile_between(before: &str, after: &str, name: &str, q: f64) -> Option<f64> {
    let earlier = buckets(before, name).unwrap_or_default();
    let mut later = buckets(after, name)?;
    for (le, count) in &mut later {
        let old = earlier
            .iter()
            .find(|(b, _)| b == le)
            .map_or(0.0, |(_, c)| *c);
        *count -= old;
    }
    quantile(&later, q)
}

/// The cumulative buckets `(le, count)` of histogram `name`, summed over
/// label sets, by `le`.
fn buckets(text: &str, name: &str) -> Option<Vec<(f64, f64)>> {
    let bucket = format!("{name}_bucket{{");
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    for line in text.lines().filter(|l| l.starts_with(&bucket)) {
        let le = line.split("le=\"").nth(1)?.split('"').next()?;
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().ok()?
        };
        let count: f64 = line.rsplit(' ').next()?.parse().ok()?;
        match buckets.iter_mut().find(|(b, _)| *b == le) {
            Some((_, c)) => *c += count,
            None => buckets.push((le, count)),
        }
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    Some(buckets)
}

fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(prev.0);
            }
            let width = count - prev.1;
            let frac = if width > 0.0 {
                (rank - prev.1) / width
            } else {
                1.0
            };
            return Some(prev.0 + (le - prev.0) * frac);
        }
        prev = (le, count);
    }
    None
}

fn proc_status_kb(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// User + system CPU seconds of `pid` (Linux `/proc/<pid>/stat`, clock ticks of 1/100 s).
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat; index 11 and 12 here.
    (ticks(11) + ticks(12)) / 100.0
}

/// User + system CPU seconds of this process's children that have exited and
/// been waited for (`cutime` + `cstime` of `/proc/self/stat`): how `ab`'s own
/// CPU is measured.
pub fn waited_children_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // cutime and cstime are fields 16 and 17 of stat; index 13 and 14 here.
    (ticks(13) + ticks(14)) / 100.0
}

/// CPU seconds used so far by every live process, summed per command name
/// (`comm`: "java" is the Kafka broker, "nginx", "postgres", "ab", the
/// connectors...). A process that exits between two samples drops out.
pub fn cpu_by_command() -> std::collections::HashMap<String, f64> {
    let mut out = std::collections::HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let comm = stat
            .split_once('(')
            .and_then(|(_, r)| r.rsplit_once(')'))
            .map(|(c, _)| c.to_owned());
        if let Some(comm) = comm {
            *out.entry(comm).or_insert(0.0) += cpu_seconds(pid);
        }
    }
    out
}

/// (busy, total) CPU seconds of the whole machine so far, all cores
/// (`/proc/stat`, first line; idle and iowait count as not busy).
pub fn machine_cpu() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: f64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0.0) + v.get(4).copied().unwrap_or(0.0);
    ((total - idle) / 100.0, total / 100.0)
}

/// Where the CPU went between two points: per command name and the machine.
#[derive(Debug, Clone)]
pub struct CpuSample {
    by_command: std::collections::HashMap<String, f64>,
    busy: f64,
    total: f64,
}

impl CpuSample {
    /// Now.
    pub fn now() -> Self {
        let (busy, total) = machine_cpu();
        Self {
            by_command: cpu_by_command(),
            busy,
            total,
        }
    }

    /// CPU seconds `command` used since `earlier`.
    pub fn used_by(&self, earlier: &Self, command: &str) -> f64 {
        let get = |s: &Self| s.by_command.get(command).copied().unwrap_or(0.0);
        (get(self) - get(earlier)).max(0.0)
    }

    /// Busy CPU seconds of the whole machine (all cores) since `earlier`.
    pub fn busy_seconds_since(&self, earlier: &Self) -> f64 {
        (self.busy - earlier.busy).max(0.0)
    }

    /// Share of the machine's CPU time that was busy since `earlier` (0..1).
    pub fn busy_since(&self, earlier: &Self) -> f64 {
        let total = self.total - earlier.total;
        if total <= 0.0 {
            0.0
        } else {
            (self.busy - earlier.busy) / total
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# TYPE h histogram\nh_bucket{le=\"0.1\"} 50\nh_bucket{le=\"0.2\"} 100\nh_bucket{le=\"+Inf\"} 100\nh_sum 10\nh_count 100\nc_total{a=\"x\"} 3\nc_total{a=\"y\"} 4\nc_total_other 9\n";

    #[test]
    fn quantile_interpolates_inside_the_bucket() {
        assert_eq!(histogram_quantile(TEXT, "h", 0.5), Some(0.1));
        let p75 = histogram_quantile(TEXT, "h", 0.75).unwrap();
        assert!((p75 - 0.15).abs() < 1e-9, "{p75}");
    }

    #[test]
    fn quantile_between_two_scrapes_counts_only_the_increase() {
        let later = TEXT
            .replace("le=\"0.2\"} 100", "le=\"0.2\"} 200")
            .replace("le=\"+Inf\"} 100", "le=\"+Inf\"} 200");
        // The 100 new samples all fell in (0.1, 0.2]: their median is 0.15.
        let p50 = histogram_quantile_between(TEXT, &later, "h", 0.5).unwrap();
        assert!((p50 - 0.15).abs() < 1e-9, "{p50}");
    }

    #[test]
    fn metric_sum_adds_label_sets_and_ignores_longer_names() {
        assert_eq!(metric_sum(TEXT, "c_total"), 7.0);
    }
}
