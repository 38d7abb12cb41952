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
