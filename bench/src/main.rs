//! `quorra-bench`: YCSB-style workloads against Quorra (client library or
//! HTTP) and its peers (Redis, etcd), with HDR latency histograms.
//!
//! `quorra-bench run …` loads records, warms up, measures for a bounded
//! number of operations or seconds, and writes a JSON report;
//! `quorra-bench report DIR` turns every report in DIR into a markdown
//! table and SVG plots. `bench/compare.sh` runs the side-by-side comparison.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use quorra_bench::report;

/// YCSB-style benchmark for Quorra and its peers.
#[derive(Debug, Parser)]
#[command(name = "quorra-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load, warm up and measure one store with one workload.
    Run(Box<quorra_bench::RunArgs>),
    /// Summarise every report in a directory (summary.md, *.svg).
    Report {
        /// The directory of JSON reports.
        dir: PathBuf,
    },
    /// One table of repeated runs: every report in DIRS (one directory
    /// per repetition) grouped by name, with medians, ranges and ratios.
    Table {
        /// Print only this run's median ops/s (for scripts).
        #[arg(long)]
        median_of: Option<String>,
        /// The directories of JSON reports.
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run(args) => {
            let report = quorra_bench::run(*args).await?;
            println!("{}", report::MARKDOWN_HEADER);
            for row in report.markdown_rows() {
                println!("{row}");
            }
            Ok(())
        }
        Command::Table { median_of, dirs } => {
            let groups = quorra_bench::table::load(&dirs)?;
            match median_of {
                Some(label) => {
                    let g = groups.get(&label).ok_or_else(|| {
                        anyhow::anyhow!("no run named {label} in those directories")
                    })?;
                    println!("{:.0}", g.median());
                }
                None => print!("{}", quorra_bench::table::markdown(&groups)),
            }
            Ok(())
        }
        Command::Report { dir } => {
            print!("{}", report::summarize(&dir)?);
            eprintln!(
                "wrote {}/summary.md, throughput.svg, latency.svg",
                dir.display()
            );
            Ok(())
        }
    }
}
