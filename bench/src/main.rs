//! `quorra-bench`: the YCSB-style load generator (issue H).
//!
//! Not built yet: it needs the cluster (issue B) and the client (issue F).

use clap::Parser;

/// YCSB-style benchmark for Quorra and its peers (not implemented yet).
#[derive(Debug, Parser)]
#[command(name = "quorra-bench", version, about)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    Cli::parse();
    anyhow::bail!("quorra-bench is not implemented yet (issue H); nothing was measured")
}
