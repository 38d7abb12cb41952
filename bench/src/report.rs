//! Results: HDR histograms per operation, a per-second timeline, and the
//! JSON, markdown and SVG a run leaves behind.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Latencies are recorded in microseconds, up to a minute.
const MAX_MICROS: u64 = 60_000_000;

/// A histogram for latencies in microseconds.
pub fn histogram() -> Histogram<u64> {
    // 3 significant figures over 1 µs ..= 60 s cannot fail to construct.
    Histogram::new_with_bounds(1, MAX_MICROS, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()))
}

/// What one worker measured.
#[derive(Debug)]
pub struct Recorder {
    /// Per operation: latencies and errors.
    pub ops: BTreeMap<&'static str, (Histogram<u64>, u64)>,
    /// Per second of the run: operations and their latencies.
    pub seconds: Vec<Histogram<u64>>,
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Self {
            ops: BTreeMap::new(),
            seconds: Vec::new(),
        }
    }

    /// Records one operation, `second` into the run.
    pub fn record(&mut self, op: &'static str, micros: u64, ok: bool, second: usize) {
        let entry = self.ops.entry(op).or_insert_with(|| (histogram(), 0));
        if ok {
            let _ = entry.0.record(micros.clamp(1, MAX_MICROS));
        } else {
            entry.1 += 1;
        }
        while self.seconds.len() <= second {
            self.seconds.push(histogram());
        }
        let _ = self.seconds[second].record(micros.clamp(1, MAX_MICROS));
    }

    /// Adds another worker's measurements.
    pub fn merge(&mut self, other: Self) {
        for (op, (h, errors)) in other.ops {
            let entry = self.ops.entry(op).or_insert_with(|| (histogram(), 0));
            let _ = entry.0.add(&h);
            entry.1 += errors;
        }
        for (i, h) in other.seconds.into_iter().enumerate() {
            while self.seconds.len() <= i {
                self.seconds.push(histogram());
            }
            let _ = self.seconds[i].add(&h);
        }
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

/// Latency summary of one operation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpStats {
    /// Successful operations.
    pub count: u64,
    /// Failed operations.
    pub errors: u64,
    /// Percentiles and max, in microseconds.
    pub p50_us: u64,
    /// 95th percentile.
    pub p95_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Slowest.
    pub max_us: u64,
}

/// One second of the run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Second {
    /// Seconds since measuring began.
    pub second: usize,
    /// Operations completed in it.
    pub ops: u64,
    /// Their 99th percentile latency.
    pub p99_us: u64,
}

/// Everything a run reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    /// Name of the run (target and settings).
    pub label: String,
    /// The store.
    pub target: String,
    /// What durability the store was run with, in words.
    pub durability: String,
    /// YCSB workload.
    pub workload: String,
    /// Key distribution.
    pub distribution: String,
    /// Records loaded.
    pub records: u64,
    /// Concurrent workers.
    pub concurrency: usize,
    /// Bytes per value.
    pub value_size: usize,
    /// Measured time.
    pub seconds: f64,
    /// Operations per second over the measured time.
    pub throughput: f64,
    /// Per operation.
    pub ops: BTreeMap<String, OpStats>,
    /// Per second.
    pub timeline: Vec<Second>,
    /// CPU time the store's processes spent per operation (µs), when
    /// `--server-pid` named them.
    #[serde(default)]
    pub server_cpu_us_per_op: Option<f64>,
    /// CPU time the load generator spent per operation (µs).
    #[serde(default)]
    pub client_cpu_us_per_op: Option<f64>,
}

impl RunReport {
    /// Summarises a recorder.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        label: String,
        target: String,
        durability: String,
        workload: String,
        distribution: String,
        records: u64,
        concurrency: usize,
        value_size: usize,
        seconds: f64,
        rec: &Recorder,
    ) -> Self {
        let ops: BTreeMap<String, OpStats> = rec
            .ops
            .iter()
            .map(|(op, (h, errors))| {
                (
                    (*op).to_owned(),
                    OpStats {
                        count: h.len(),
                        errors: *errors,
                        p50_us: h.value_at_quantile(0.50),
                        p95_us: h.value_at_quantile(0.95),
                        p99_us: h.value_at_quantile(0.99),
                        p999_us: h.value_at_quantile(0.999),
                        max_us: h.max(),
                    },
                )
            })
            .collect();
        let total: u64 = ops.values().map(|s| s.count).sum();
        let timeline = rec
            .seconds
            .iter()
            .enumerate()
            .map(|(second, h)| Second {
                second,
                ops: h.len(),
                p99_us: h.value_at_quantile(0.99),
            })
            .collect();
        Self {
            label,
            target,
            durability,
            workload,
            distribution,
            records,
            concurrency,
            value_size,
            seconds,
            throughput: total as f64 / seconds.max(1e-9),
            ops,
            timeline,
            server_cpu_us_per_op: None,
            client_cpu_us_per_op: None,
        }
    }

    /// Adds the CPU seconds the server and the client spent in the
    /// measured window, as µs per operation.
    pub fn with_cpu(mut self, server_secs: Option<f64>, client_secs: f64) -> Self {
        // Failed operations were served too.
        let ops: u64 = self.ops.values().map(|s| s.count + s.errors).sum();
        if ops > 0 {
            let per_op = |secs: f64| secs * 1e6 / ops as f64;
            self.server_cpu_us_per_op = server_secs.map(per_op);
            self.client_cpu_us_per_op = Some(per_op(client_secs));
        }
        self
    }

    /// Markdown table rows, one per operation.
    pub fn markdown_rows(&self) -> Vec<String> {
        self.ops
            .iter()
            .map(|(op, s)| {
                format!(
                    "| {} | {} | {} | {:.0} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
                    self.label,
                    self.durability,
                    op,
                    self.throughput,
                    cpu_cell(self.server_cpu_us_per_op),
                    cpu_cell(self.client_cpu_us_per_op),
                    s.count,
                    s.p50_us as f64 / 1000.0,
                    s.p95_us as f64 / 1000.0,
                    s.p99_us as f64 / 1000.0,
                    s.p999_us as f64 / 1000.0,
                    s.max_us as f64 / 1000.0,
                    s.errors
                )
            })
            .collect()
    }
}

fn cpu_cell(us: Option<f64>) -> String {
    us.map_or_else(|| "-".into(), |us| format!("{us:.0}"))
}

/// The markdown table header.
pub const MARKDOWN_HEADER: &str = "| run | durability | op | ops/s (all ops) | server CPU µs/op (run) | client CPU µs/op (run) | count | p50 ms | p95 ms | p99 ms | p99.9 ms | max ms | errors |\n|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|";

/// A table of each run's throughput as a multiple of each peer's (Redis,
/// etcd and Garage runs of the same workload in the same directory, so the
/// same run).
pub fn ratios(runs: &[RunReport]) -> String {
    let peers: Vec<&RunReport> = runs
        .iter()
        .filter(|r| matches!(r.target.as_str(), "redis" | "etcd" | "garage"))
        .collect();
    if peers.is_empty() {
        return String::new();
    }
    let mut md = String::from("\n| run | workload | ops/s |");
    for p in &peers {
        md.push_str(&format!(" vs {} |", p.label));
    }
    md.push_str("\n|---|---|---:|");
    md.push_str(&"---:|".repeat(peers.len()));
    md.push('\n');
    for r in runs {
        md.push_str(&format!(
            "| {} | {} | {:.0} |",
            r.label, r.workload, r.throughput
        ));
        for p in &peers {
            if p.workload == r.workload && p.throughput > 0.0 {
                md.push_str(&format!(" {:.2}x |", r.throughput / p.throughput));
            } else {
                md.push_str(" - |");
            }
        }
        md.push('\n');
    }
    md
}

/// Writes the JSON and the markdown of a run into `dir`.
pub fn write_run(dir: &Path, report: &RunReport) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let name = report
        .label
        .replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "_");
    std::fs::write(
        dir.join(format!("{name}.json")),
        serde_json::to_string_pretty(report)?,
    )?;
    Ok(())
}

/// Every run report (`*.json`) in `dir`.
pub fn load_runs(dir: &Path) -> anyhow::Result<Vec<RunReport>> {
    let mut runs = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path)?;
            runs.push(
                serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))?,
            );
        }
    }
    Ok(runs)
}

/// Reads every run report in `dir`, writes `summary.md`, `throughput.svg`
/// (operations per second over time) and `latency.svg` (p99 over time).
pub fn summarize(dir: &Path) -> anyhow::Result<String> {
    let mut runs = load_runs(dir)?;
    runs.sort_by(|a, b| a.label.cmp(&b.label));
    let mut md = String::from(MARKDOWN_HEADER);
    md.push('\n');
    for r in &runs {
        for row in r.markdown_rows() {
            md.push_str(&row);
            md.push('\n');
        }
    }
    md.push_str(&ratios(&runs));
    std::fs::write(dir.join("summary.md"), &md)?;
    crate::plot::lines(
        &dir.join("throughput.svg"),
        "operations per second",
        &runs
            .iter()
            .map(|r| {
                (
                    r.label.clone(),
                    r.timeline.iter().map(|s| s.ops as f64).collect(),
                )
            })
            .collect::<Vec<_>>(),
    )?;
    crate::plot::lines(
        &dir.join("latency.svg"),
        "p99 latency (ms)",
        &runs
            .iter()
            .map(|r| {
                (
                    r.label.clone(),
                    r.timeline
                        .iter()
                        .map(|s| s.p99_us as f64 / 1000.0)
                        .collect(),
                )
            })
            .collect::<Vec<_>>(),
    )?;
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(label: &str, target: &str, throughput: f64) -> RunReport {
        let mut r = RunReport::new(
            label.into(),
            target.into(),
            "d".into(),
            "a".into(),
            "zipfian".into(),
            1,
            1,
            1,
            1.0,
            &Recorder::new(),
        );
        r.throughput = throughput;
        r
    }

    #[test]
    fn ratios_against_each_peer_of_the_same_workload() {
        let runs = vec![
            run("etcd-a", "etcd", 1000.0),
            run("quorra-a", "quorra", 1500.0),
            run("redis-a", "redis", 30000.0),
        ];
        let table = ratios(&runs);
        let quorra = table
            .lines()
            .find(|l| l.starts_with("| quorra-a"))
            .expect("row");
        assert_eq!(quorra, "| quorra-a | a | 1500 | 1.50x | 0.05x |");
        assert_eq!(ratios(&runs[1..2]), "", "no peer, no table");
    }

    #[test]
    fn recorder_counts_errors_apart_and_merges() {
        let mut a = Recorder::new();
        a.record("read", 100, true, 0);
        a.record("read", 300, false, 1);
        let mut b = Recorder::new();
        b.record("read", 200, true, 2);
        a.merge(b);
        let r = RunReport::new(
            "x".into(),
            "t".into(),
            "d".into(),
            "a".into(),
            "u".into(),
            1,
            1,
            1,
            3.0,
            &a,
        );
        let s = &r.ops["read"];
        assert_eq!((s.count, s.errors), (2, 1));
        assert_eq!(r.timeline.len(), 3);
        assert!((r.throughput - 2.0 / 3.0).abs() < 1e-9);
    }
}
