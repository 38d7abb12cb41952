//! The nemesis: faults for real node processes, each with its end.
//!
//! - kill -9 and restart, by the PID this harness started;
//! - pause and resume (SIGSTOP / SIGCONT);
//! - partitions, symmetric or one-way, through the nodes' transport fault
//!   layer (`PUT /v1/debug/faults`, on nodes started with
//!   `fault_injection = true`);
//! - a slow or failing disk, and a skewed clock, through the same switch;
//! - a wiped disk: kill, delete the data dir, restart (the node must come
//!   back with a new actor epoch: Riak's kv679).
//!
//! Faults are chosen by a seeded generator, so a failing run names the seed
//! that drew its schedule.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use anyhow::Context;
use quorra_sim::rng::Rng;
use serde_json::json;

use crate::cluster::TestCluster;

/// One fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// kill -9; healed by a restart.
    Kill(usize),
    /// SIGSTOP; healed by SIGCONT.
    Pause(usize),
    /// These nodes cut off from the others, both ways.
    Partition(Vec<usize>),
    /// Traffic from the first node to the second dropped.
    OneWay(usize, usize),
    /// Every storage operation of a node takes this many ms longer.
    SlowDisk(usize, u64),
    /// Every storage operation of a node fails.
    FailingDisk(usize),
    /// A node's clock runs this many ms off.
    ClockSkew(usize, i64),
    /// kill -9, the data dir deleted; healed by a restart on an empty disk.
    Wipe(usize),
}

/// Draws and applies faults.
#[derive(Debug)]
pub struct Nemesis {
    rng: Rng,
    /// Faults so far, for the report.
    pub log: Vec<String>,
    /// Whether a disk was wiped (then only reads of every replica are sure
    /// to see everything: Quorra has no anti-entropy yet).
    pub wiped: bool,
}

impl Nemesis {
    /// A nemesis drawing from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: Rng::new(seed),
            log: Vec::new(),
            wiped: false,
        }
    }

    /// The fault of round `round` for a cluster of `n`: the first eight
    /// rounds go through every kind once, later ones draw at random. At
    /// most one disk is wiped, never the first node's (everyone's seed).
    pub fn draw(&mut self, n: usize, round: usize) -> Fault {
        let i = 1 + self.rng.below(n as u64 - 1) as usize;
        let other = (i + 1 + self.rng.below(n as u64 - 1) as usize) % n;
        let kind = if round < 8 {
            round as u64
        } else {
            self.rng.below(8)
        };
        match kind {
            0 => Fault::Kill(i),
            1 => Fault::Partition(self.side(n, i)),
            2 => Fault::Pause(i),
            3 => Fault::OneWay(i, other),
            4 => Fault::SlowDisk(i, 50 + self.rng.below(400)),
            5 => Fault::FailingDisk(i),
            6 => Fault::ClockSkew(i, self.rng.below(20_000) as i64 - 10_000),
            _ if !self.wiped => {
                self.wiped = true;
                Fault::Wipe(i)
            }
            _ => Fault::Partition(self.side(n, i)),
        }
    }

    /// A minority holding node `i`.
    fn side(&mut self, n: usize, i: usize) -> Vec<usize> {
        let size = 1 + self.rng.below((n.saturating_sub(1) / 2) as u64) as usize;
        let mut side = BTreeSet::from([i]);
        while side.len() < size {
            side.insert(self.rng.below(n as u64) as usize);
        }
        side.into_iter().collect()
    }

    /// Applies `fault`.
    pub async fn inject(&mut self, cluster: &mut TestCluster, fault: &Fault) -> anyhow::Result<()> {
        self.log.push(format!("{fault:?}"));
        match fault {
            Fault::Kill(i) => cluster.nodes[*i].kill9(),
            Fault::Pause(i) => cluster.nodes[*i].pause()?,
            Fault::Partition(side) => {
                let peers = peers(cluster);
                for (i, _) in peers.iter().enumerate() {
                    let inside = side.contains(&i);
                    let cut: Vec<SocketAddr> = peers
                        .iter()
                        .enumerate()
                        .filter(|(j, _)| side.contains(j) != inside)
                        .map(|(_, a)| *a)
                        .collect();
                    set_faults(cluster, i, json!({ "drop_to": cut })).await?;
                }
            }
            Fault::OneWay(from, to) => {
                let to = peers(cluster)[*to];
                set_faults(cluster, *from, json!({ "drop_to": [to] })).await?;
            }
            Fault::SlowDisk(i, ms) => {
                set_faults(cluster, *i, json!({ "disk_delay_ms": ms })).await?
            }
            Fault::FailingDisk(i) => {
                set_faults(cluster, *i, json!({ "disk_failing": true })).await?
            }
            Fault::ClockSkew(i, ms) => {
                set_faults(cluster, *i, json!({ "clock_skew_ms": ms })).await?
            }
            Fault::Wipe(i) => {
                let node = &mut cluster.nodes[*i];
                node.kill9();
                std::fs::remove_dir_all(&node.data_dir)
                    .with_context(|| format!("wipe {}", node.data_dir.display()))?;
            }
        }
        Ok(())
    }

    /// Ends `fault`.
    pub async fn heal(&mut self, cluster: &mut TestCluster, fault: &Fault) -> anyhow::Result<()> {
        match fault {
            Fault::Kill(i) | Fault::Wipe(i) => cluster.nodes[*i].restart()?,
            Fault::Pause(i) => cluster.nodes[*i].resume()?,
            Fault::Partition(_) => {
                for i in 0..cluster.nodes.len() {
                    set_faults(cluster, i, json!({})).await?;
                }
            }
            Fault::OneWay(i, _)
            | Fault::SlowDisk(i, _)
            | Fault::FailingDisk(i)
            | Fault::ClockSkew(i, _) => set_faults(cluster, *i, json!({})).await?,
        }
        Ok(())
    }
}

fn peers(cluster: &TestCluster) -> Vec<SocketAddr> {
    cluster
        .nodes
        .iter()
        .map(|n| n.peer.expect("cluster nodes have peer addresses"))
        .collect()
}

async fn set_faults(
    cluster: &TestCluster,
    i: usize,
    state: serde_json::Value,
) -> anyhow::Result<()> {
    let a = cluster
        .client(i)
        .put_json("/v1/debug/faults", &state)
        .await
        .with_context(|| format!("set faults on node {i}"))?;
    anyhow::ensure!(
        a.status == 200,
        "set faults on node {i}: {} {}",
        a.status,
        a.text()
    );
    Ok(())
}
