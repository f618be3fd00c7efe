//! The figures of a run: one table on stdout, one JSON file.

use std::path::{Path, PathBuf};

use anyhow::Result;

/// One measured figure and, where it has one, the baseline it is held to.
#[derive(Debug, Clone)]
pub struct Figure {
    /// What was measured, e.g. `source.fresh.checks_per_s`.
    pub name: String,
    /// The value.
    pub value: f64,
    /// Its unit.
    pub unit: &'static str,
    /// The baseline's value, measured in the same run.
    pub baseline: Option<f64>,
    /// What the baseline is.
    pub baseline_name: Option<String>,
    /// The target, as text (e.g. `ratio >= 0.7`).
    pub target: Option<String>,
}

impl Figure {
    /// A figure without a baseline.
    pub fn plain(name: &str, value: f64, unit: &'static str) -> Self {
        Self {
            name: name.to_owned(),
            value,
            unit,
            baseline: None,
            baseline_name: None,
            target: None,
        }
    }

    /// A figure held to `baseline` (measured in this run).
    pub fn against(
        name: &str,
        value: f64,
        unit: &'static str,
        baseline: f64,
        baseline_name: &str,
        target: &str,
    ) -> Self {
        Self {
            baseline: Some(baseline),
            baseline_name: Some(baseline_name.to_owned()),
            target: Some(target.to_owned()),
            ..Self::plain(name, value, unit)
        }
    }

    /// A figure with a target but no baseline (e.g. a latency bound).
    pub fn with_target(mut self, target: &str) -> Self {
        self.target = Some(target.to_owned());
        self
    }

    /// value / baseline.
    pub fn ratio(&self) -> Option<f64> {
        self.baseline.filter(|b| *b > 0.0).map(|b| self.value / b)
    }
}

/// Prints the figures as an aligned table.
pub fn print_table(figures: &[Figure]) {
    println!(
        "\n{:<48} {:>14} {:<10} {:>14} {:>7}  {:<30} target",
        "figure", "value", "unit", "baseline", "ratio", "baseline is"
    );
    for f in figures {
        println!(
            "{:<48} {:>14.3} {:<10} {:>14} {:>7}  {:<30} {}",
            f.name,
            f.value + 0.0, // no "-0.000"
            f.unit,
            f.baseline.map(|b| format!("{b:.3}")).unwrap_or_default(),
            f.ratio().map(|r| format!("{r:.2}")).unwrap_or_default(),
            f.baseline_name.clone().unwrap_or_default(),
            f.target.clone().unwrap_or_default()
        );
    }
}

/// Writes `target/bench/results.json` with the machine and the date.
pub fn write_json(root: &Path, figures: &[Figure]) -> Result<PathBuf> {
    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("results.json");
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("unknown")
        .trim()
        .to_owned();
    let mem_kb: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0);
    let date = std::process::Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%dT%H:%M:%SZ")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let json = serde_json::json!({
        "date": date,
        "machine": {
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "cpu_model": cpu,
            "memory_bytes": mem_kb * 1024,
        },
        "figures": figures.iter().map(|f| serde_json::json!({
            "name": f.name,
            "value": f.value,
            "unit": f.unit,
            "baseline": f.baseline,
            "baseline_name": f.baseline_name,
            "ratio": f.ratio(),
            "target": f.target,
        })).collect::<Vec<_>>(),
    });
    std::fs::write(&path, serde_json::to_string_pretty(&json)?)?;
    Ok(path)
}
