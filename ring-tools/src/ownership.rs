//! What a layout gives each node, and what a loss would do: the numbers
//! behind `ring-tools plan`.
//!
//! - **Balance**: each node's replica slots (its partitions among the
//!   first `n_val` ranks) against its fair share by weight.
//! - **Zone spread**: how many failure domains each preference list spans,
//!   with a warning for every partition whose replicas share one where
//!   they need not.
//! - **Failure load** (`--fail NODE|ZONE --load PCT`): the N+1 check. While
//!   a node is down, its replicas' work goes to the partition's first
//!   fallback (sloppy quorum and hinted handoff), or, when there is none
//!   (fewer nodes than `n_val` left outside the partition), to the
//!   partition's surviving replicas; a node's load grows by the work it
//!   takes over its capacity (its weight).
//!
//! Everything here is computed from core's [`Ring::build`] of the layout,
//! the ring the nodes route by.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use quorra_core::layout::Layout;
use quorra_core::ring::Ring;
use serde::Serialize;

use crate::describe::{n_val_of, zones_of};

/// One node's part of the replica slots.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeShare {
    /// The node.
    pub id: String,
    /// Its zone (`(id)` when it names none).
    pub zone: String,
    /// Its weight.
    pub weight: u32,
    /// Partitions it is a replica of (among the first `n_val` ranks).
    pub slots: usize,
    /// Partitions it is the first replica of.
    pub primaries: usize,
    /// Its fair share of the slots by weight.
    pub fair: f64,
}

impl NodeShare {
    /// Slots over the fair share, minus one: +0.02 is 2% over.
    pub fn deviation(&self) -> f64 {
        if self.fair > 0.0 {
            self.slots as f64 / self.fair - 1.0
        } else {
            0.0
        }
    }
}

/// How far the shares are from fair.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Balance {
    /// The fewest slots any node holds.
    pub min: usize,
    /// The most.
    pub max: usize,
    /// The largest deviation below the fair share (≤ 0).
    pub min_deviation: f64,
    /// The largest deviation above it (≥ 0).
    pub max_deviation: f64,
    /// Standard deviation of `slots - fair`, in slots.
    pub stddev_slots: f64,
}

/// How many zones the preference lists span.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ZoneSpread {
    /// Zones among the nodes holding data (a node without one is its own).
    pub zones: usize,
    /// The zones each preference list should span: `min(n_val, zones)`.
    pub wanted: usize,
    /// Partitions by the number of zones their preference list spans.
    pub spans: BTreeMap<usize, usize>,
    /// Partitions that span fewer zones than `wanted`.
    pub short: usize,
}

/// The balance and spread of a layout.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ownership {
    /// Layout version.
    pub version: u64,
    /// Partitions.
    pub partitions: u32,
    /// Replicas per key (the default bucket's `n_val`).
    pub n_val: usize,
    /// Replica slots in all: partitions × the replicas each has.
    pub slots: usize,
    /// Every node holding data.
    pub nodes: Vec<NodeShare>,
    /// Balance against the fair shares.
    pub balance: Balance,
    /// Zone spread of the preference lists.
    pub zone_spread: ZoneSpread,
    /// What an operator should know.
    pub warnings: Vec<String>,
}

/// The balance and spread of `layout`.
pub fn ownership(layout: &Layout) -> Ownership {
    ownership_on(layout, &Ring::build(layout))
}

/// [`ownership`], on `ring`, the ring of `layout` already built.
pub fn ownership_on(layout: &Layout, ring: &Ring) -> Ownership {
    let n = n_val_of(layout);
    let zones = zones_of(layout);
    let slots_of = ring.ownership(n);
    let primaries = ring.ownership(1);
    let slots: usize = slots_of.values().sum();
    let total_weight: u64 = layout.roles.values().map(|r| u64::from(r.weight)).sum();
    let nodes: Vec<NodeShare> = layout
        .roles
        .iter()
        .map(|(id, r)| NodeShare {
            id: id.clone(),
            zone: zones.get(id.as_str()).cloned().unwrap_or_default(),
            weight: r.weight,
            slots: slots_of.get(id.as_str()).copied().unwrap_or(0),
            primaries: primaries.get(id.as_str()).copied().unwrap_or(0),
            fair: slots as f64 * f64::from(r.weight) / total_weight.max(1) as f64,
        })
        .collect();
    let balance = balance(&nodes);
    let zone_count = zones.values().collect::<BTreeSet<_>>().len();
    let wanted = n.min(zone_count);
    let mut spans: BTreeMap<usize, usize> = BTreeMap::new();
    for p in 0..ring.partitions() {
        let spanned: BTreeSet<&String> = ring
            .preference_list(p, n)
            .into_iter()
            .filter_map(|id| zones.get(id))
            .collect();
        *spans.entry(spanned.len()).or_default() += 1;
    }
    let short: usize = spans
        .iter()
        .filter(|(k, _)| **k < wanted)
        .map(|(_, v)| v)
        .sum();
    let mut warnings = Vec::new();
    if nodes.len() < n {
        warnings.push(format!(
            "{} node(s) hold data but n_val is {n}: each key has only {} replica(s)",
            nodes.len(),
            nodes.len()
        ));
    }
    let named_zones = layout.roles.values().any(|r| r.zone.is_some());
    if named_zones && zone_count < n {
        warnings.push(format!(
            "{zone_count} zone(s) for n_val {n}: losing one zone loses more than one replica of some keys"
        ));
    }
    if short > 0 {
        warnings.push(format!(
            "{short} partition(s) keep replicas in fewer than {wanted} zones: one failure domain holds two of their replicas"
        ));
    }
    if balance.max_deviation > 0.25 {
        let why = if named_zones {
            format!(
                " (each partition's replicas go to {wanted} different zones first: a zone with less weight than the others gives each of its nodes more)"
            )
        } else {
            String::new()
        };
        warnings.push(format!(
            "a node holds {:.0}% more than its fair share by weight{why}",
            balance.max_deviation * 100.0
        ));
    }
    Ownership {
        version: layout.version,
        partitions: ring.partitions(),
        n_val: n,
        slots,
        nodes,
        balance,
        zone_spread: ZoneSpread {
            zones: zone_count,
            wanted,
            spans,
            short,
        },
        warnings,
    }
}

fn balance(nodes: &[NodeShare]) -> Balance {
    let min = nodes.iter().map(|n| n.slots).min().unwrap_or(0);
    let max = nodes.iter().map(|n| n.slots).max().unwrap_or(0);
    let devs: Vec<f64> = nodes.iter().map(NodeShare::deviation).collect();
    let var = nodes
        .iter()
        .map(|n| (n.slots as f64 - n.fair).powi(2))
        .sum::<f64>()
        / nodes.len().max(1) as f64;
    Balance {
        min,
        max,
        min_deviation: devs.iter().copied().fold(0.0, f64::min),
        max_deviation: devs.iter().copied().fold(0.0, f64::max),
        stddev_slots: var.sqrt(),
    }
}

impl Ownership {
    /// The report as text.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "layout version {}: {} partitions, n_val {}, {} replica slots on {} nodes",
            self.version,
            self.partitions,
            self.n_val,
            self.slots,
            self.nodes.len()
        );
        let _ = writeln!(
            out,
            "{:<16} {:<12} {:>6} {:>6} {:>9} {:>8} {:>8}",
            "node", "zone", "weight", "slots", "primaries", "fair", "vs fair"
        );
        for n in &self.nodes {
            let _ = writeln!(
                out,
                "{:<16} {:<12} {:>6} {:>6} {:>9} {:>8.1} {:>+7.1}%",
                n.id,
                n.zone,
                n.weight,
                n.slots,
                n.primaries,
                n.fair,
                n.deviation() * 100.0
            );
        }
        let b = &self.balance;
        let _ = writeln!(
            out,
            "balance: min {} ({:+.1}%), max {} ({:+.1}%), stddev {:.2} slots",
            b.min,
            b.min_deviation * 100.0,
            b.max,
            b.max_deviation * 100.0,
            b.stddev_slots
        );
        let z = &self.zone_spread;
        let spans: Vec<String> = z
            .spans
            .iter()
            .rev()
            .map(|(k, v)| format!("{v} span {k}"))
            .collect();
        let _ = writeln!(
            out,
            "zones: {} (each preference list should span {}): {} partitions: {}",
            z.zones,
            z.wanted,
            self.partitions,
            spans.join(", ")
        );
        for w in &self.warnings {
            let _ = writeln!(out, "warning: {w}");
        }
        out
    }
}

/// What one survivor carries after a loss.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Survivor {
    /// The node.
    pub id: String,
    /// Its replica slots before the loss.
    pub slots: usize,
    /// Its work after the loss, in slots (fractions where a partition
    /// without a fallback spreads over its surviving replicas).
    pub work: f64,
    /// Its load before, in percent of its capacity.
    pub load_before: f64,
    /// Its load after.
    pub load_after: f64,
}

/// The N+1 check: each survivor's load after losing a node or a zone.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailLoad {
    /// The nodes lost.
    pub failed: Vec<String>,
    /// The cluster's load before, in percent of its capacity.
    pub load: f64,
    /// Every surviving node holding data.
    pub survivors: Vec<Survivor>,
    /// Replica slots of the lost nodes taken by a fallback.
    pub to_fallbacks: usize,
    /// Replica slots with no fallback left, spread on the partition's
    /// surviving replicas.
    pub spread: usize,
    /// Partitions that lost every replica: their keys cannot be read until
    /// one returns (writes go to fallbacks, if any).
    pub unavailable: usize,
    /// Partitions left with fewer nodes to write to (replicas and
    /// fallbacks) than the default write quorum.
    pub below_quorum: usize,
    /// The highest load after.
    pub peak: f64,
}

/// Which nodes `what` names: a node holding data, or every node of a zone.
pub fn resolve_failed(layout: &Layout, what: &str) -> Option<Vec<String>> {
    if layout.roles.contains_key(what) {
        return Some(vec![what.to_owned()]);
    }
    let in_zone: Vec<String> = layout
        .roles
        .iter()
        .filter(|(_, r)| r.zone.as_deref() == Some(what))
        .map(|(id, _)| id.clone())
        .collect();
    (!in_zone.is_empty()).then_some(in_zone)
}

/// Each survivor's load after `failed` go down, the cluster at `load`%.
pub fn fail_load(layout: &Layout, failed: &[String], load: f64) -> FailLoad {
    let ring = Ring::build(layout);
    let n = n_val_of(layout);
    let w = layout
        .buckets
        .as_ref()
        .map_or(2, |t| usize::from(t.defaults.w.max(1)));
    let down: BTreeSet<&str> = failed.iter().map(String::as_str).collect();
    let own = ownership_on(layout, &ring);
    let mut work: BTreeMap<&str, f64> = own
        .nodes
        .iter()
        .filter(|s| !down.contains(s.id.as_str()))
        .map(|s| (s.id.as_str(), s.slots as f64))
        .collect();
    let (mut to_fallbacks, mut spread, mut unavailable, mut below_quorum) = (0, 0, 0, 0);
    for p in 0..ring.partitions() {
        let order: Vec<&str> = ring.order(p).collect();
        let list = &order[..n.min(order.len())];
        let lost = list.iter().filter(|id| down.contains(*id)).count();
        if lost == 0 {
            continue;
        }
        let alive: Vec<&str> = list
            .iter()
            .copied()
            .filter(|id| !down.contains(id))
            .collect();
        let mut fallbacks = order[list.len()..]
            .iter()
            .copied()
            .filter(|id| !down.contains(id));
        let mut serving = alive.len();
        for _ in 0..lost {
            match fallbacks.next() {
                Some(f) => {
                    *work.entry(f).or_default() += 1.0;
                    to_fallbacks += 1;
                    serving += 1;
                }
                None if alive.is_empty() => {}
                None => {
                    for a in &alive {
                        *work.entry(a).or_default() += 1.0 / alive.len() as f64;
                    }
                    spread += 1;
                }
            }
        }
        if alive.is_empty() {
            unavailable += 1;
        }
        if serving < w.min(n) {
            below_quorum += 1;
        }
    }
    let survivors: Vec<Survivor> = own
        .nodes
        .iter()
        .filter(|s| !down.contains(s.id.as_str()))
        .map(|s| {
            let after = work.get(s.id.as_str()).copied().unwrap_or(0.0);
            let scale = |x: f64| {
                if s.fair > 0.0 {
                    load * x / s.fair
                } else {
                    0.0
                }
            };
            Survivor {
                id: s.id.clone(),
                slots: s.slots,
                work: after,
                load_before: scale(s.slots as f64),
                load_after: scale(after),
            }
        })
        .collect();
    let peak = survivors.iter().map(|s| s.load_after).fold(0.0, f64::max);
    FailLoad {
        failed: failed.to_vec(),
        load,
        survivors,
        to_fallbacks,
        spread,
        unavailable,
        below_quorum,
        peak,
    }
}

impl FailLoad {
    /// The report as text.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "losing {} at {:.0}% load:",
            self.failed.join(","),
            self.load
        );
        let _ = writeln!(
            out,
            "{:<16} {:>6} {:>8} {:>7} {:>7}",
            "survivor", "slots", "work", "before", "after"
        );
        for s in &self.survivors {
            let _ = writeln!(
                out,
                "{:<16} {:>6} {:>8.1} {:>6.0}% {:>6.0}%",
                s.id, s.slots, s.work, s.load_before, s.load_after
            );
        }
        let _ = writeln!(
            out,
            "{} lost replica slots go to fallbacks, {} to the surviving replicas (no fallback left)",
            self.to_fallbacks, self.spread
        );
        if self.unavailable > 0 {
            let _ = writeln!(
                out,
                "warning: {} partition(s) lose every replica: their keys cannot be read until a replica returns",
                self.unavailable
            );
        }
        if self.below_quorum > 0 {
            let _ = writeln!(
                out,
                "warning: {} partition(s) have fewer nodes to write to than the default write quorum",
                self.below_quorum
            );
        }
        if self.survivors.is_empty() {
            let _ = writeln!(out, "warning: no node holding data survives");
        } else if self.unavailable > 0 || self.below_quorum > 0 {
            let _ = writeln!(
                out,
                "warning: the survivors run at up to {:.0}%, but not every key stays available (above)",
                self.peak
            );
        } else if self.peak > 100.0 {
            let _ = writeln!(
                out,
                "warning: a survivor would run at {:.0}%: this cluster cannot lose {} at {:.0}% load",
                self.peak,
                self.failed.join(","),
                self.load
            );
        } else {
            let _ = writeln!(out, "ok: the busiest survivor runs at {:.0}%", self.peak);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::describe::{found, numbered, parse_nodes, Params};

    fn params(partitions: u32, n_val: u8) -> Params {
        Params {
            partitions,
            n_val,
            ..Params::default()
        }
    }

    #[test]
    fn ownership_sums_to_partitions_times_n_val() {
        for (nodes, q, n) in [
            (3, 64, 3),
            (5, 256, 3),
            (7, 128, 2),
            (2, 64, 3),
            (12, 1024, 5),
        ] {
            let layout = found(&numbered(1, nodes), params(q, n)).expect("layout");
            let own = ownership(&layout);
            let want = q as usize * usize::from(n).min(nodes);
            assert_eq!(own.slots, want, "{nodes} nodes, Q={q}, n={n}");
            assert_eq!(own.nodes.iter().map(|s| s.slots).sum::<usize>(), want);
            assert_eq!(
                own.nodes.iter().map(|s| s.primaries).sum::<usize>(),
                q as usize
            );
            let fair: f64 = own.nodes.iter().map(|s| s.fair).sum();
            assert!((fair - want as f64).abs() < 1e-6);
        }
    }

    #[test]
    fn weights_shape_the_shares() {
        let nodes = parse_nodes("a:1,b:1,c:2,d:2").expect("nodes");
        let own = ownership(&found(&nodes, params(256, 3)).expect("layout"));
        let slots = |id: &str| own.nodes.iter().find(|s| s.id == id).map_or(0, |s| s.slots);
        assert!(slots("c") > slots("a") * 3 / 2, "{}", own.text());
        assert!(own.balance.max_deviation < 0.1, "{}", own.text());
    }

    #[test]
    fn two_zones_for_three_replicas_warn() {
        let nodes = parse_nodes("a@z1,b@z1,c@z2,d@z2").expect("nodes");
        let own = ownership(&found(&nodes, params(64, 3)).expect("layout"));
        assert_eq!(own.zone_spread.wanted, 2);
        assert_eq!(own.zone_spread.short, 0, "{}", own.text());
        assert!(own.warnings.iter().any(|w| w.contains("2 zone(s)")));
        let three = parse_nodes("a@z1,b@z2,c@z3,d@z1,e@z2,f@z3").expect("nodes");
        let own = ownership(&found(&three, params(64, 3)).expect("layout"));
        assert_eq!(own.zone_spread.spans.get(&3), Some(&64), "{}", own.text());
        assert!(own.warnings.is_empty(), "{:?}", own.warnings);
    }

    #[test]
    fn losing_one_of_three_puts_the_others_at_one_and_a_half_times() {
        let layout = found(&numbered(1, 3), params(64, 3)).expect("layout");
        let f = fail_load(&layout, &["n3".into()], 80.0);
        assert_eq!(f.to_fallbacks, 0);
        assert_eq!(f.spread, 64);
        for s in &f.survivors {
            assert!((s.load_after - 120.0).abs() < 1e-6, "{}", f.text());
        }
        assert!(f.text().contains("cannot lose n3"));
    }

    #[test]
    fn a_fallback_takes_a_lost_replica_and_work_is_conserved() {
        let layout = found(&numbered(1, 6), params(256, 3)).expect("layout");
        let f = fail_load(&layout, &["n2".into()], 50.0);
        let lost = ownership(&layout)
            .nodes
            .iter()
            .find(|s| s.id == "n2")
            .map_or(0, |s| s.slots);
        assert_eq!(f.to_fallbacks + f.spread, lost);
        let total: f64 = f.survivors.iter().map(|s| s.work).sum();
        assert!((total - 256.0 * 3.0).abs() < 1e-6, "work is conserved");
        assert!(f.peak < 100.0, "{}", f.text());
        assert_eq!(f.unavailable, 0);
    }

    #[test]
    fn a_zone_names_its_nodes() {
        let nodes = parse_nodes("a@z1,b@z2,c@z3,d@z1").expect("nodes");
        let layout = found(&nodes, params(64, 3)).expect("layout");
        assert_eq!(
            resolve_failed(&layout, "z1"),
            Some(vec!["a".into(), "d".into()])
        );
        assert_eq!(resolve_failed(&layout, "b"), Some(vec!["b".into()]));
        assert_eq!(resolve_failed(&layout, "nope"), None);
    }
}
