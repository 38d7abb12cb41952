//! `ring-tools simulate`: what a sequence of joins and removals would move.
//!
//! Each step is staged on the layout and committed exactly as a node does
//! it ([`Layout::plan`], then the handover), and measured three ways: the
//! replica slots that change owner, the partitions whose preference list
//! changes, and a sample of keys whose replicas change. Each is set against
//! the ideal: the least any placement must move, which is the share the
//! nodes that gain must take (`k/(n+k)` for `k` nodes joining `n`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use quorra_core::layout::{Change, Layout, Role};
use quorra_core::ring::Ring;
use serde::Serialize;

use crate::describe::{n_val_of, DescribeError, NodeSpec};
use crate::ownership::{ownership_on, Ownership};

/// One change of the sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// These nodes join (with data).
    Add(Vec<NodeSpec>),
    /// These nodes leave.
    Remove(Vec<String>),
}

impl Step {
    fn label(&self) -> String {
        match self {
            Self::Add(nodes) => format!(
                "add {}",
                nodes
                    .iter()
                    .map(|n| n.id.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            Self::Remove(ids) => format!("remove {}", ids.join(",")),
        }
    }
}

/// What one step moves.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepReport {
    /// The step.
    pub step: String,
    /// Nodes holding data before and after.
    pub nodes: (usize, usize),
    /// Replica slots in all (after).
    pub slots: usize,
    /// Replica slots that change owner.
    pub slots_moved: usize,
    /// Their share of the slots.
    pub slots_share: f64,
    /// The least share any placement must move.
    pub ideal_share: f64,
    /// Partitions whose preference list changes.
    pub partitions_moved: u32,
    /// Their share of the partitions.
    pub partitions_share: f64,
    /// Keys sampled.
    pub keys: usize,
    /// Sampled keys with at least one new replica.
    pub keys_moved: usize,
    /// Their share.
    pub keys_share: f64,
    /// Slots of the node furthest over its fair share after, over that
    /// share (1.0 is fair).
    pub max_over_fair: f64,
}

/// The whole sequence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Simulation {
    /// Partitions.
    pub partitions: u32,
    /// Replicas per key.
    pub n_val: usize,
    /// Each step in order.
    pub steps: Vec<StepReport>,
}

/// Applies `steps` to `layout` in order; `keys` keys are sampled per step.
pub fn simulate(layout: &Layout, steps: &[Step], keys: usize) -> Result<Simulation, DescribeError> {
    let n = n_val_of(layout);
    // A live layout may hold changes an operator staged: they are not this
    // simulation's steps.
    let mut current = layout.clone();
    current.staged.clear();
    current.staged_n_val.clear();
    let mut reports = Vec::new();
    for step in steps {
        let mut next = current.clone();
        match step {
            Step::Add(nodes) => {
                for node in nodes {
                    if next.roles.contains_key(&node.id) {
                        return Err(DescribeError::Duplicate(node.id.clone()));
                    }
                    next.admit(&node.id);
                    let role = Role {
                        zone: node.zone.clone(),
                        weight: node.weight,
                    };
                    stage(&mut next, &node.id, Change::Set(role))?;
                }
            }
            Step::Remove(ids) => {
                for id in ids {
                    if !next.roles.contains_key(id) {
                        return Err(DescribeError::Unknown(id.clone()));
                    }
                    stage(&mut next, id, Change::Remove)?;
                }
            }
        }
        let committed = commit(&next)?;
        reports.push(measure(&current, &committed, step, n, keys));
        current = committed;
    }
    Ok(Simulation {
        partitions: layout.shape().partitions,
        n_val: n,
        steps: reports,
    })
}

fn stage(layout: &mut Layout, node: &str, change: Change) -> Result<(), DescribeError> {
    layout
        .stage("ring-tools", node, change)
        .map_err(|e| DescribeError::Nodes(e.to_string()))
}

/// The layout after the staged changes are committed and handed over.
fn commit(layout: &Layout) -> Result<Layout, DescribeError> {
    let why = |e: quorra_core::layout::StageError| DescribeError::Nodes(e.to_string());
    let mut next = layout.plan().map_err(why)?.next;
    if next.moving.is_none() {
        return Ok(next);
    }
    for id in next.copying() {
        let version = next.version;
        next.mark_synced(&id, version);
    }
    next.handover().map_err(why)
}

fn measure(before: &Layout, after: &Layout, step: &Step, n: usize, keys: usize) -> StepReport {
    let (rb, ra) = (Ring::build(before), Ring::build(after));
    let set = |r: &Ring, p: u32| -> BTreeSet<String> {
        r.preference_list(p, n)
            .into_iter()
            .map(str::to_owned)
            .collect()
    };
    let mut slots_moved = 0;
    let mut partitions_moved = 0;
    let mut moved_partitions = vec![false; ra.partitions() as usize];
    for p in 0..ra.partitions() {
        let (b, a) = (set(&rb, p), set(&ra, p));
        let gained = a.difference(&b).count();
        slots_moved += gained;
        if gained > 0 {
            partitions_moved += 1;
            moved_partitions[p as usize] = true;
        }
    }
    let keys_moved = (0..keys)
        .filter(|i| {
            let key = format!("key-{i}");
            moved_partitions[ra.partition_of(b"simulate", key.as_bytes()) as usize]
        })
        .count();
    // Each node's fair share of the slots, by weight, before and after.
    let (ob, oa) = (ownership_on(before, &rb), ownership_on(after, &ra));
    let slots = oa.slots;
    let fraction = |o: &Ownership| -> BTreeMap<String, f64> {
        o.nodes
            .iter()
            .map(|s| (s.id.clone(), s.fair / o.slots.max(1) as f64))
            .collect()
    };
    let (fb, fa) = (fraction(&ob), fraction(&oa));
    let ideal_share: f64 = fa
        .iter()
        .map(|(id, share)| (share - fb.get(id).copied().unwrap_or(0.0)).max(0.0))
        .sum();
    let max_over_fair = 1.0 + oa.balance.max_deviation;
    let share = |x: usize, of: usize| x as f64 / of.max(1) as f64;
    StepReport {
        step: step.label(),
        nodes: (before.roles.len(), after.roles.len()),
        slots,
        slots_moved,
        slots_share: share(slots_moved, slots),
        ideal_share,
        partitions_moved,
        partitions_share: share(partitions_moved as usize, ra.partitions() as usize),
        keys,
        keys_moved,
        keys_share: share(keys_moved, keys),
        max_over_fair,
    }
}

impl Simulation {
    /// The report as text.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} partitions, n_val {}; moved shares against the ideal (the least any placement moves)",
            self.partitions, self.n_val
        );
        let _ = writeln!(
            out,
            "{:<24} {:>7} {:>13} {:>7} {:>8} {:>11} {:>9} {:>9}",
            "step", "nodes", "slots moved", "ideal", "x ideal", "partitions", "keys", "max/fair"
        );
        for s in &self.steps {
            let ratio = if s.ideal_share > 0.0 {
                format!("{:.2}", s.slots_share / s.ideal_share)
            } else {
                "-".to_owned()
            };
            let _ = writeln!(
                out,
                "{:<24} {:>7} {:>5} {:>6.1}% {:>6.1}% {:>8} {:>10.1}% {:>8.1}% {:>9.3}",
                s.step,
                format!("{}->{}", s.nodes.0, s.nodes.1),
                s.slots_moved,
                s.slots_share * 100.0,
                s.ideal_share * 100.0,
                ratio,
                s.partitions_share * 100.0,
                s.keys_share * 100.0,
                s.max_over_fair
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::describe::{found, numbered, Params};

    fn five() -> Layout {
        let params = Params {
            partitions: 256,
            ..Params::default()
        };
        found(&numbered(1, 5), params).expect("layout")
    }

    #[test]
    fn a_join_moves_about_its_share() {
        let sim = simulate(&five(), &[Step::Add(numbered(6, 1))], 10_000).expect("sim");
        let s = &sim.steps[0];
        assert!((s.ideal_share - 1.0 / 6.0).abs() < 1e-9);
        assert!(s.slots_share >= s.ideal_share - 0.01, "{}", sim.text());
        assert!(s.slots_share <= s.ideal_share * 1.15, "{}", sim.text());
        // A key moves when its partition does, so the sampled share is
        // near the partitions' share.
        assert!(
            (s.keys_share - s.partitions_share).abs() < 0.05,
            "{}",
            sim.text()
        );
    }

    #[test]
    fn a_removal_moves_the_departed_share_and_steps_chain() {
        let steps = [Step::Remove(vec!["n2".into()]), Step::Add(numbered(6, 2))];
        let sim = simulate(&five(), &steps, 1_000).expect("sim");
        assert!((sim.steps[0].ideal_share - 0.2).abs() < 1e-9);
        assert_eq!(sim.steps[0].nodes, (5, 4));
        assert_eq!(sim.steps[1].nodes, (4, 6));
        assert_eq!(sim.steps[0].slots, 256 * 3);
        for s in &sim.steps {
            assert!(s.slots_share <= s.ideal_share * 1.15, "{}", sim.text());
        }
    }

    #[test]
    fn unknown_and_duplicate_nodes_are_refused() {
        assert_eq!(
            simulate(&five(), &[Step::Remove(vec!["x".into()])], 1).unwrap_err(),
            DescribeError::Unknown("x".into())
        );
        assert_eq!(
            simulate(&five(), &[Step::Add(numbered(5, 1))], 1).unwrap_err(),
            DescribeError::Duplicate("n5".into())
        );
    }
}
