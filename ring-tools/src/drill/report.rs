//! The drill's findings: RTO (the longest window in which requests failed
//! and none succeeded), RPO (acknowledged writes missing after recovery),
//! latency by phase, and the plot of latency and errors over time.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use super::faults::Fault;
use super::workload::{Record, Sample};
use super::Plan;

/// Latency percentiles of one phase (ms).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latency {
    /// Requests in the phase.
    pub requests: usize,
    /// Of those, failed.
    pub failed: usize,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Slowest.
    pub max: f64,
}

fn latency(samples: &[&Sample]) -> Latency {
    let mut ms: Vec<f64> = samples.iter().map(|s| s.latency_ms).collect();
    ms.sort_by(f64::total_cmp);
    let pick = |q: f64| {
        if ms.is_empty() {
            0.0
        } else {
            ms[((ms.len() - 1) as f64 * q).round() as usize]
        }
    };
    Latency {
        requests: samples.len(),
        failed: samples.iter().filter(|s| !s.ok).count(),
        p50: pick(0.5),
        p99: pick(0.99),
        max: pick(1.0),
    }
}

/// The longest error window: from the start of a failed request to the
/// end of the next successful one that started after it (to the end of
/// the run if none did), in ms; and how many windows there were.
pub fn error_windows(samples: &[Sample]) -> (f64, usize) {
    let mut sorted: Vec<&Sample> = samples.iter().collect();
    sorted.sort_by(|a, b| a.at_ms.total_cmp(&b.at_ms));
    let end = sorted
        .iter()
        .map(|s| s.at_ms + s.latency_ms)
        .fold(0.0, f64::max);
    let (mut longest, mut windows) = (0.0f64, 0);
    let mut open: Option<f64> = None;
    for s in &sorted {
        match (open, s.ok) {
            (None, false) => {
                open = Some(s.at_ms);
                windows += 1;
            }
            (Some(start), true) => {
                longest = longest.max(s.at_ms + s.latency_ms - start);
                open = None;
            }
            _ => {}
        }
    }
    if let Some(start) = open {
        longest = longest.max(end - start);
    }
    (longest, windows)
}

/// What the drill found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// The node taken out.
    pub node: String,
    /// How.
    pub fault: Fault,
    /// Requests sent.
    pub requests: usize,
    /// Requests that failed (client-visible errors, after the client's
    /// own retries).
    pub failed: usize,
    /// The longest window of client-visible errors (ms): the RTO.
    pub rto_ms: f64,
    /// Separate error windows.
    pub error_windows: usize,
    /// Writes acknowledged.
    pub writes_acked: usize,
    /// Writes that failed (they may or may not have landed).
    pub writes_unknown: usize,
    /// Acknowledged writes missing after recovery: the RPO, which must be 0.
    pub rpo: usize,
    /// The first missing keys.
    pub missing: Vec<String>,
    /// Acknowledged writes that could not be read back at all.
    pub unreadable: usize,
    /// When the node went down, came back, served, and the cluster
    /// converged (ms from the start).
    pub timeline_ms: Timeline,
    /// Latency before the fault, while the node was out, and after.
    pub latency: Phases,
    /// What went wrong besides the requests (no convergence, no plot).
    pub warnings: Vec<String>,
}

/// The drill's moments, in ms from its start.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Timeline {
    /// The node was taken out.
    pub down: f64,
    /// It was brought back.
    pub up: f64,
    /// It served again.
    pub serving: f64,
    /// Every member alive and no hint pending (none: not within the
    /// timeout).
    pub converged: Option<f64>,
}

/// Latency by phase.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Phases {
    /// Before the fault.
    pub before: Latency,
    /// From the fault until the node served again.
    pub during: Latency,
    /// After.
    pub after: Latency,
}

impl Report {
    /// The report of a run.
    pub fn new(
        plan: &Plan,
        record: &Record,
        [down, up, serving]: [f64; 3],
        converged: Option<f64>,
        missing: Vec<String>,
        unreadable: Vec<String>,
    ) -> Self {
        let (rto_ms, error_windows) = error_windows(&record.samples);
        let phase = |from: f64, to: f64| {
            let s: Vec<&Sample> = record
                .samples
                .iter()
                .filter(|s| s.at_ms >= from && s.at_ms < to)
                .collect();
            latency(&s)
        };
        Self {
            node: plan.node.clone(),
            fault: plan.fault,
            requests: record.samples.len(),
            failed: record.samples.iter().filter(|s| !s.ok).count(),
            rto_ms,
            error_windows,
            writes_acked: record.acked.len(),
            writes_unknown: record.unknown,
            rpo: missing.len(),
            missing: missing.into_iter().take(20).collect(),
            unreadable: unreadable.len(),
            timeline_ms: Timeline {
                down,
                up,
                serving,
                converged,
            },
            latency: Phases {
                before: phase(0.0, down),
                during: phase(down, serving),
                after: phase(serving, f64::INFINITY),
            },
            warnings: Vec::new(),
        }
    }

    /// The report as text.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let t = &self.timeline_ms;
        let _ = writeln!(
            out,
            "drill: {} {} at {:.1} s, back at {:.1} s, serving at {:.1} s, converged {}",
            self.fault.name(),
            self.node,
            t.down / 1e3,
            t.up / 1e3,
            t.serving / 1e3,
            t.converged
                .map_or_else(|| "never".to_owned(), |c| format!("at {:.1} s", c / 1e3))
        );
        let _ = writeln!(
            out,
            "requests: {} sent, {} failed in {} window(s); writes: {} acknowledged, {} unknown",
            self.requests, self.failed, self.error_windows, self.writes_acked, self.writes_unknown
        );
        let _ = writeln!(
            out,
            "{:<8} {:>8} {:>7} {:>9} {:>9} {:>9}",
            "phase", "requests", "failed", "p50 ms", "p99 ms", "max ms"
        );
        for (name, l) in [
            ("before", &self.latency.before),
            ("during", &self.latency.during),
            ("after", &self.latency.after),
        ] {
            let _ = writeln!(
                out,
                "{name:<8} {:>8} {:>7} {:>9.2} {:>9.2} {:>9.2}",
                l.requests, l.failed, l.p50, l.p99, l.max
            );
        }
        let _ = writeln!(
            out,
            "RTO: {:.0} ms (the longest window of client-visible errors)",
            self.rto_ms
        );
        let _ = writeln!(
            out,
            "RPO: {} acknowledged write(s) missing of {}{}",
            self.rpo,
            self.writes_acked,
            match (self.rpo, self.unreadable) {
                (0, 0) => " (none lost)",
                (0, _) => " — UNCHECKED: some could not be read back",
                _ => " — DATA LOST",
            }
        );
        if self.unreadable > 0 {
            let _ = writeln!(
                out,
                "warning: {} acknowledged write(s) could not be read back to check",
                self.unreadable
            );
        }
        for w in &self.warnings {
            let _ = writeln!(out, "warning: {w}");
        }
        out
    }
}

/// Draws latency (successes blue, failures red) over time, with the
/// fault's moments marked, as SVG.
pub fn plot(path: &Path, samples: &[Sample], report: &Report) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let e = |e: &dyn std::fmt::Display| anyhow::anyhow!("cannot draw {}: {e}", path.display());
    let root = SVGBackend::new(path, (960, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let x_max = samples.iter().map(|s| s.at_ms / 1e3).fold(1.0, f64::max) * 1.02;
    let y_max = samples.iter().map(|s| s.latency_ms).fold(1.0, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "drill: {} {} — RTO {:.0} ms, RPO {}",
                report.fault.name(),
                report.node,
                report.rto_ms,
                report.rpo
            ),
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("latency (ms)")
        .draw()
        .map_err(|x| e(&x))?;
    let t = report.timeline_ms;
    for (at, colour) in [(t.down, &RED), (t.up, &GREEN), (t.serving, &BLUE)] {
        chart
            .draw_series(LineSeries::new(
                [(at / 1e3, 0.0), (at / 1e3, y_max)],
                colour.mix(0.5).stroke_width(1),
            ))
            .map_err(|x| e(&x))?;
    }
    chart
        .draw_series(
            samples
                .iter()
                .filter(|s| s.ok)
                .map(|s| Circle::new((s.at_ms / 1e3, s.latency_ms), 2, BLUE.mix(0.5).filled())),
        )
        .map_err(|x| e(&x))?
        .label("ok")
        .legend(|(x, y)| Circle::new((x, y), 3, BLUE.filled()));
    chart
        .draw_series(
            samples
                .iter()
                .filter(|s| !s.ok)
                .map(|s| Cross::new((s.at_ms / 1e3, s.latency_ms), 4, RED.stroke_width(2))),
        )
        .map_err(|x| e(&x))?
        .label("failed")
        .legend(|(x, y)| Cross::new((x, y), 4, RED.stroke_width(2)));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(at_ms: f64, latency_ms: f64, ok: bool) -> Sample {
        Sample {
            at_ms,
            latency_ms,
            ok,
            write: true,
        }
    }

    #[test]
    fn the_rto_is_the_longest_error_window() {
        let samples = [
            s(0.0, 1.0, true),
            s(10.0, 5.0, false),
            s(20.0, 5.0, false),
            s(30.0, 2.0, true), // closes a 22 ms window
            s(40.0, 1.0, false),
            s(45.0, 1.0, true), // a 6 ms window
        ];
        let (rto, windows) = error_windows(&samples);
        assert!((rto - 22.0).abs() < 1e-9, "{rto}");
        assert_eq!(windows, 2);
        assert_eq!(error_windows(&[s(0.0, 1.0, true)]), (0.0, 0));
    }

    #[test]
    fn errors_to_the_end_count_to_the_end() {
        let (rto, _) = error_windows(&[s(0.0, 1.0, true), s(5.0, 3.0, false), s(9.0, 1.0, false)]);
        assert!((rto - 5.0).abs() < 1e-9, "{rto}");
    }

    #[test]
    fn percentiles_come_from_the_samples() {
        let all: Vec<Sample> = (1..=100)
            .map(|i| s(f64::from(i), f64::from(i), true))
            .collect();
        let refs: Vec<&Sample> = all.iter().collect();
        let l = latency(&refs);
        assert_eq!(l.requests, 100);
        // Nearest rank of 99 gaps: the 50th and 99th gap from the fastest.
        assert!((l.p50 - 51.0).abs() < 1e-9, "{l:?}");
        assert!((l.p99 - 99.0).abs() < 1e-9, "{l:?}");
        assert!((l.max - 100.0).abs() < 1e-9);
        assert_eq!(latency(&[]).p99, 0.0);
    }
}
