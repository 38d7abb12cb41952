//! The table of a repeated comparison: the runs of every repetition
//! grouped by name, each group's median throughput with its range, the
//! CPU time per operation, the latency of the median run, and ratios
//! against each peer's median of the same workload (median to median).
//! `bench/full.sh` writes it; bench/README.md quotes it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::report::RunReport;

/// The peers a row is compared with, by target name.
const PEERS: [&str; 3] = ["etcd", "redis", "garage"];

/// The runs of one name over the repetitions.
#[derive(Debug)]
pub struct Group {
    /// Its runs, slowest first.
    pub runs: Vec<RunReport>,
}

impl Group {
    /// The run in the middle (for an even count, the faster of the two).
    pub fn median_run(&self) -> &RunReport {
        &self.runs[self.runs.len() / 2]
    }

    /// The median throughput (for an even count, the mean of the middle
    /// two).
    pub fn median(&self) -> f64 {
        let v: Vec<f64> = self.runs.iter().map(|r| r.throughput).collect();
        median_of_sorted(&v).unwrap_or_default()
    }

    fn median_cpu(&self) -> Option<f64> {
        let mut v: Vec<f64> = self
            .runs
            .iter()
            .filter_map(|r| r.server_cpu_us_per_op)
            .collect();
        v.sort_by(f64::total_cmp);
        median_of_sorted(&v)
    }
}

/// The median of sorted values (for an even count, the mean of the middle
/// two).
fn median_of_sorted(v: &[f64]) -> Option<f64> {
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// Every run report (`*.json`) in `dirs`, grouped by label.
pub fn load(dirs: &[PathBuf]) -> anyhow::Result<BTreeMap<String, Group>> {
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    for dir in dirs {
        for r in crate::report::load_runs(dir)? {
            groups
                .entry(r.label.clone())
                .or_insert_with(|| Group { runs: Vec::new() })
                .runs
                .push(r);
        }
    }
    for g in groups.values_mut() {
        g.runs.sort_by(|a, b| a.throughput.total_cmp(&b.throughput));
    }
    Ok(groups)
}

fn workload_rank(w: &str) -> (usize, &str) {
    let order = ["a", "b", "c", "d", "f", "write"];
    (order.iter().position(|o| *o == w).unwrap_or(order.len()), w)
}

fn thousands(x: f64) -> String {
    let s = format!("{:.0}", x.max(0.0));
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The markdown table of `groups`.
pub fn markdown(groups: &BTreeMap<String, Group>) -> String {
    let peers: BTreeMap<(String, &str), f64> = groups
        .values()
        .filter_map(|g| {
            let r = g.median_run();
            let peer = PEERS.iter().find(|p| r.target == **p)?;
            Some(((r.workload.clone(), *peer), g.median()))
        })
        .collect();
    let mut rows: Vec<&Group> = groups.values().collect();
    rows.sort_by(|a, b| {
        let (ra, rb) = (a.median_run(), b.median_run());
        workload_rank(&ra.workload)
            .cmp(&workload_rank(&rb.workload))
            .then(ra.label.cmp(&rb.label))
    });
    let mut md = String::from(
        "| workload | run | durability | ops/s (median) | range (spread) | runs | server CPU µs/op | p99 / p99.9 ms (median run) | vs etcd | vs Redis | vs Garage |\n|---|---|---|---:|---|---:|---:|---|---:|---:|---:|\n",
    );
    for g in rows {
        let r = g.median_run();
        let (lo, hi) = (g.runs[0].throughput, g.runs[g.runs.len() - 1].throughput);
        let median = g.median();
        let spread = if median > 0.0 {
            ((hi - lo) / 2.0 / median * 100.0).round()
        } else {
            0.0
        };
        let latency: Vec<String> = r
            .ops
            .iter()
            .map(|(op, s)| {
                format!(
                    "{op} {:.1}/{:.1}",
                    s.p99_us as f64 / 1000.0,
                    s.p999_us as f64 / 1000.0
                )
            })
            .collect();
        let ratio = |peer: &str| {
            peers
                .get(&(r.workload.clone(), peer))
                .filter(|p| **p > 0.0)
                .map_or_else(|| "-".to_owned(), |p| format!("{:.2}×", median / p))
        };
        md.push_str(&format!(
            "| {} | {} | {} | {} | {}–{} (±{spread}%) | {} | {} | {} | {} | {} | {} |\n",
            r.workload,
            r.label,
            r.durability,
            thousands(median),
            thousands(lo),
            thousands(hi),
            g.runs.len(),
            g.median_cpu()
                .map_or_else(|| "-".into(), |c| format!("{c:.0}")),
            latency.join(", "),
            ratio("etcd"),
            ratio("redis"),
            ratio("garage"),
        ));
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Recorder;

    fn run(label: &str, target: &str, workload: &str, throughput: f64, cpu: f64) -> RunReport {
        let mut r = RunReport::new(
            label.into(),
            target.into(),
            "d".into(),
            workload.into(),
            "zipfian".into(),
            1,
            1,
            1,
            1.0,
            &Recorder::new(),
        );
        r.throughput = throughput;
        r.server_cpu_us_per_op = Some(cpu);
        r
    }

    #[test]
    fn medians_ranges_and_ratios_of_the_same_workload() {
        let dirs: Vec<tempfile::TempDir> =
            (0..3).map(|_| tempfile::tempdir().expect("dir")).collect();
        let quorra = [900.0, 1500.0, 1200.0];
        let etcd = [500.0, 400.0, 600.0];
        for (i, d) in dirs.iter().enumerate() {
            for r in [
                run("quorra-a", "quorra", "a", quorra[i], 100.0 * (i + 1) as f64),
                run("etcd-a", "etcd", "a", etcd[i], 50.0),
                run("etcd-b", "etcd", "b", 1.0, 50.0),
            ] {
                crate::report::write_run(d.path(), &r).expect("write");
            }
        }
        let paths: Vec<PathBuf> = dirs.iter().map(|d| d.path().to_owned()).collect();
        let groups = load(&paths).expect("load");
        assert_eq!(groups["quorra-a"].median(), 1200.0);
        let md = markdown(&groups);
        let row = md
            .lines()
            .find(|l| l.contains("| quorra-a |"))
            .expect("a row");
        // Median 1,200 over etcd's median 500; range 900–1,500; CPU median 200.
        assert!(
            row.contains("| 1,200 | 900–1,500 (±25%) | 3 | 200 |"),
            "{row}"
        );
        assert!(row.contains("| 2.40× | - | - |"), "{row}");
        // Rows go by workload, then name.
        let order: Vec<&str> = md
            .lines()
            .skip(2)
            .filter_map(|l| l.split(" | ").nth(1))
            .collect();
        assert_eq!(order, ["etcd-a", "quorra-a", "etcd-b"]);
    }
}
