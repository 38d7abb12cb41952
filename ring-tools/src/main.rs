//! `ring-tools`: plan, inspect and administer Quorra rings.
//!
//! Today it locates keys (which partition a key lives in); planning,
//! simulation and live-cluster commands grow here as the ring does.

use clap::{Parser, Subcommand};
use quorra_core::hash::{key_hash, partition_of};

/// Ring and cluster tools for Quorra.
#[derive(Debug, Parser)]
#[command(name = "ring-tools", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the hash and partition of a key.
    Locate {
        /// Partitions in the ring (a power of two).
        #[arg(long, default_value_t = 256)]
        partitions: u32,
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Locate {
            partitions,
            bucket,
            key,
        } => {
            anyhow::ensure!(
                partitions.is_power_of_two(),
                "--partitions must be a power of two, got {partitions}"
            );
            let h = key_hash(bucket.as_bytes(), key.as_bytes());
            println!(
                "bucket={bucket} key={key} hash={h:016x} partition={}",
                partition_of(h, partitions)
            );
        }
    }
    Ok(())
}
