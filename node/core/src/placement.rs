//! Placement: which nodes hold each partition's replicas.
//!
//! A layout change (a join, a leave, a new weight) should move only what it
//! must. Placement by hashing tokens cannot promise that once loads are
//! bounded: the bound pushes partitions onto other nodes, and a new member
//! shifts those pushes around the ring (on a 5 → 6 join up to half of all
//! primaries moved, where 1/6 is the ideal). So, as Garage's layout does,
//! the assignment is computed once when a layout is committed, from the
//! previous one, and carried in the layout: every node then reads the same
//! table.
//!
//! [`assign`] keeps every replica that may stay, and moves only as many as
//! the new shares need:
//!
//! 1. **Shares.** Each node's share of the `Q × R` replica slots is
//!    proportional to its weight, within what zones allow: a zone takes at
//!    most what still lets every partition span as many zones as it can,
//!    and, when there are no more zones than replicas, at least one replica
//!    of every partition. The shares are rounded to whole slots that sum to
//!    `Q × R`.
//! 2. **Keep.** Every replica of the previous assignment on a node that is
//!    still a member stays in its slot (same partition, same rank).
//! 3. **Fill.** Empty slots (new cluster, departed node, more replicas) go
//!    to the node furthest below its share that is not already in the
//!    partition and keeps it able to span its zones.
//! 4. **Balance.** While one node is over its share and another under, a
//!    replica moves from the first to the second, in a partition where that
//!    keeps the zone rule. Each move is one slot changing owner, so a join
//!    of the `(n+1)`-th node moves about `1/(n+1)` of the slots: what the
//!    new node must take.
//!
//! Everything iterates in a fixed order, with ties broken by a seed-fixed
//! hash, so the same inputs give the same table on every node.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Seed of the tie-break hash. Changing it changes fresh assignments.
const TIE_SEED: u64 = 0x504c_4143_454d_4e54; // "PLACEMNT"

/// A node that may hold replicas.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Candidate {
    /// The node id.
    pub id: String,
    /// Its failure domain; a node without one is a zone of its own.
    pub zone: Option<String>,
    /// Its capacity relative to the others (0 holds nothing).
    pub weight: u32,
}

impl Candidate {
    /// A candidate of weight 1 in `zone`.
    pub fn new(id: impl Into<String>, zone: Option<&str>) -> Self {
        Self {
            id: id.into(),
            zone: zone.map(str::to_owned),
            weight: 1,
        }
    }
}

/// The replicas of every partition, by rank.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Assignment {
    /// The nodes, sorted by id; the table holds indexes into this list.
    pub nodes: Vec<String>,
    /// For each partition, its replicas' node indexes by rank.
    pub table: Vec<Vec<u16>>,
}

impl Assignment {
    /// An assignment of `partitions` partitions with no replicas.
    pub fn empty(partitions: u32) -> Self {
        Self {
            nodes: Vec::new(),
            table: vec![Vec::new(); partitions as usize],
        }
    }

    /// The number of partitions.
    pub fn partitions(&self) -> u32 {
        self.table.len() as u32
    }

    /// Partition `p`'s replicas by rank.
    pub fn replicas(&self, p: u32) -> impl Iterator<Item = &str> + '_ {
        self.table
            .get(p as usize)
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter_map(|&i| self.nodes.get(usize::from(i)).map(String::as_str))
    }

    /// How many replica slots each node holds.
    pub fn loads(&self) -> BTreeMap<&str, usize> {
        let mut out: BTreeMap<&str, usize> = self.nodes.iter().map(|n| (n.as_str(), 0)).collect();
        for p in 0..self.partitions() {
            for id in self.replicas(p) {
                *out.entry(id).or_default() += 1;
            }
        }
        out
    }

    /// Gives every replica `old` holds to `new` (which must hold none),
    /// keeping the node list sorted.
    pub fn rename(&mut self, old: &str, new: &str) {
        let Some(from) = self.nodes.iter().position(|n| n == old) else {
            return;
        };
        let mut nodes = self.nodes.clone();
        nodes[from] = new.to_owned();
        nodes.sort();
        let index: BTreeMap<&str, u16> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i as u16))
            .collect();
        for row in &mut self.table {
            for slot in row.iter_mut() {
                let id = match self.nodes.get(usize::from(*slot)) {
                    Some(id) if id == old => new,
                    Some(id) => id.as_str(),
                    None => continue,
                };
                if let Some(&i) = index.get(id) {
                    *slot = i;
                }
            }
        }
        self.nodes = nodes;
    }

    /// How many (partition, node) replica pairs of `self` are not in
    /// `other`: the replicas a change from `other` to `self` must copy.
    pub fn moved_from(&self, other: &Self) -> usize {
        (0..self.partitions())
            .map(|p| {
                let before: Vec<&str> = other.replicas(p).collect();
                self.replicas(p).filter(|id| !before.contains(id)).count()
            })
            .sum()
    }
}

/// A partition whose replicas change from one assignment to the next: the
/// data to stream (to each of `joining`, from `staying` or `leaving`) and
/// the copies to drop once it has moved (on each of `leaving`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// The partition.
    pub partition: u32,
    /// Replicas in both assignments.
    pub staying: Vec<String>,
    /// Replicas only in the old one.
    pub leaving: Vec<String>,
    /// Replicas only in the new one.
    pub joining: Vec<String>,
}

impl Assignment {
    /// The partitions whose replicas differ in `next`, with who leaves and
    /// who joins (a changed rank alone moves no data and is not listed).
    pub fn transfers(&self, next: &Self) -> Vec<Transfer> {
        (0..next.partitions().max(self.partitions()))
            .filter_map(|p| {
                let old: Vec<&str> = self.replicas(p).collect();
                let new: Vec<&str> = next.replicas(p).collect();
                let owned = |v: Vec<&str>| v.into_iter().map(str::to_owned).collect::<Vec<_>>();
                let staying = owned(old.iter().copied().filter(|id| new.contains(id)).collect());
                let leaving = owned(old.iter().copied().filter(|id| !new.contains(id)).collect());
                let joining = owned(new.iter().copied().filter(|id| !old.contains(id)).collect());
                (!leaving.is_empty() || !joining.is_empty()).then_some(Transfer {
                    partition: p,
                    staying,
                    leaving,
                    joining,
                })
            })
            .collect()
    }
}

/// Assigns `replicas` replicas of each of `partitions` partitions to
/// `members`, moving as few of `previous`'s as the new shares need.
pub fn assign(
    previous: Option<&Assignment>,
    members: &[Candidate],
    partitions: u32,
    replicas: usize,
) -> Assignment {
    let mut members: Vec<Candidate> = members.iter().filter(|c| c.weight > 0).cloned().collect();
    members.sort();
    members.dedup_by(|a, b| a.id == b.id);
    let q = partitions as usize;
    let r = replicas.min(members.len());
    let nodes: Vec<String> = members.iter().map(|m| m.id.clone()).collect();
    if r == 0 {
        return Assignment {
            nodes,
            table: vec![Vec::new(); q],
        };
    }
    let (zone_of, zone_count) = zones(&members);
    let spread = r.min(zone_count);
    let quota = quotas(&members, (&zone_of, zone_count), q, r, spread);
    let mut state = State {
        zone_of,
        zone_count,
        spread,
        quota,
        load: vec![0; members.len()],
        slots: vec![vec![None; r]; q],
    };

    // Keep what may stay.
    if let Some(prev) = previous {
        let index: BTreeMap<&str, usize> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect();
        for (p, row) in state.slots.iter_mut().enumerate().take(prev.table.len()) {
            for (rank, id) in prev.replicas(p as u32).enumerate().take(r) {
                if let Some(&m) = index.get(id) {
                    row[rank] = Some(m);
                    state.load[m] += 1;
                }
            }
        }
        // A partition that lost its zone spread (a zone changed) gives up
        // the replicas that break it, to be placed again.
        for p in 0..q {
            state.repair_spread(p);
        }
    }

    // Fill the empty slots, rank by rank, so each rank is spread too.
    for rank in 0..r {
        for p in 0..q {
            if state.slots[p][rank].is_none() {
                let pick = state.best_for_hole(p, rank, &nodes);
                if let Some(m) = pick {
                    state.slots[p][rank] = Some(m);
                    state.load[m] += 1;
                }
            }
        }
    }

    state.balance(&nodes);

    let table = state
        .slots
        .into_iter()
        .map(|row| row.into_iter().flatten().map(|m| m as u16).collect())
        .collect();
    Assignment { nodes, table }
}

/// Each member's zone as a small integer (sorted members in, so the
/// numbering is fixed), and how many zones there are.
fn zones(members: &[Candidate]) -> (Vec<usize>, usize) {
    crate::ring::zone_numbers(members.iter().map(|m| (m.id.as_str(), m.zone.as_deref())))
}

/// Whole-slot shares: proportional to weight within the zone bounds.
fn quotas(
    members: &[Candidate],
    (zone_of, zone_count): (&[usize], usize),
    q: usize,
    r: usize,
    spread: usize,
) -> Vec<usize> {
    let total = (q * r) as f64;
    // Zones first: a zone holds at most `r - spread + 1` replicas of a
    // partition (so the rest can span the other zones), at most one per
    // node; with no more zones than replicas, at least one.
    let mut zone_weight = vec![0f64; zone_count];
    let mut zone_nodes = vec![0usize; zone_count];
    for (m, c) in members.iter().enumerate() {
        zone_weight[zone_of[m]] += f64::from(c.weight);
        zone_nodes[zone_of[m]] += 1;
    }
    let per_partition = r - spread + 1;
    let hi: Vec<f64> = zone_nodes
        .iter()
        .map(|&n| (q * per_partition.min(n)) as f64)
        .collect();
    let lo: Vec<f64> = vec![if zone_count <= r { q as f64 } else { 0.0 }; zone_count];
    let zone_share = bounded_shares(total, &zone_weight, &lo, &hi);
    // Then nodes within each zone, at most one replica per partition.
    let mut share = vec![0f64; members.len()];
    for (z, &zs) in zone_share.iter().enumerate() {
        let ms: Vec<usize> = (0..members.len()).filter(|&m| zone_of[m] == z).collect();
        let w: Vec<f64> = ms.iter().map(|&m| f64::from(members[m].weight)).collect();
        let s = bounded_shares(zs, &w, &vec![0.0; ms.len()], &vec![q as f64; ms.len()]);
        for (i, &m) in ms.iter().enumerate() {
            share[m] = s[i];
        }
    }
    round_shares(&share, q * r, q)
}

/// Shares of `total` proportional to `weights`, each within `[lo, hi]`:
/// `clamp(λ·w)` for the λ that makes them sum to `total` (found by
/// bisection; the sum only grows with λ).
fn bounded_shares(total: f64, weights: &[f64], lo: &[f64], hi: &[f64]) -> Vec<f64> {
    let at = |l: f64| -> Vec<f64> {
        weights
            .iter()
            .zip(lo.iter().zip(hi))
            .map(|(w, (lo, hi))| (l * w).clamp(*lo, lo.max(*hi)))
            .collect()
    };
    let sum = |v: &[f64]| v.iter().sum::<f64>();
    let (mut a, mut b) = (0f64, 1f64);
    while sum(&at(b)) < total && b < 1e18 {
        b *= 2.0;
    }
    for _ in 0..200 {
        let mid = (a + b) / 2.0;
        if sum(&at(mid)) < total {
            a = mid;
        } else {
            b = mid;
        }
    }
    at(b)
}

/// Rounds shares to whole slots summing to `total`, none over `cap`:
/// floors, then the largest remainders (ties to the lower index).
fn round_shares(share: &[f64], total: usize, cap: usize) -> Vec<usize> {
    let mut out: Vec<usize> = share
        .iter()
        .map(|s| (s.floor() as usize).min(cap))
        .collect();
    let mut order: Vec<usize> = (0..share.len()).collect();
    order.sort_by(|&a, &b| {
        let fa = share[a] - share[a].floor();
        let fb = share[b] - share[b].floor();
        fb.total_cmp(&fa).then(a.cmp(&b))
    });
    let mut left = total.saturating_sub(out.iter().sum());
    while left > 0 {
        let before = left;
        for &m in &order {
            if left == 0 {
                break;
            }
            if out[m] < cap {
                out[m] += 1;
                left -= 1;
            }
        }
        if left == before {
            break; // no room anywhere: fewer slots than asked
        }
    }
    out
}

/// The assignment under construction.
struct State {
    zone_of: Vec<usize>,
    zone_count: usize,
    /// Distinct zones each partition must span.
    spread: usize,
    quota: Vec<usize>,
    load: Vec<usize>,
    /// For each partition, a member index per rank (`None`: to fill).
    slots: Vec<Vec<Option<usize>>>,
}

impl State {
    fn holds(&self, p: usize, m: usize) -> bool {
        self.slots[p].contains(&Some(m))
    }

    /// Whether partition `p` with `m` in place of slot `rank` can still
    /// span its zones once its other empty slots are filled.
    fn zone_ok(&self, p: usize, rank: usize, m: usize) -> bool {
        let mut used = vec![false; self.zone_count];
        let mut holes = 0;
        for (i, s) in self.slots[p].iter().enumerate() {
            let s = if i == rank { Some(m) } else { *s };
            match s {
                Some(x) => used[self.zone_of[x]] = true,
                None => holes += 1,
            }
        }
        used.iter().filter(|u| **u).count() + holes >= self.spread
    }

    /// Empties the slots of `p` that keep it from spanning its zones (the
    /// later ranks of a zone with more replicas than it may hold).
    fn repair_spread(&mut self, p: usize) {
        loop {
            let mut count = vec![0usize; self.zone_count];
            for m in self.slots[p].iter().flatten() {
                count[self.zone_of[*m]] += 1;
            }
            let holes = self.slots[p].iter().filter(|s| s.is_none()).count();
            let spanned = count.iter().filter(|c| **c > 0).count();
            if spanned + holes >= self.spread {
                return;
            }
            // Free the last replica of the most crowded zone.
            let Some(crowded) = (0..self.zone_count).max_by_key(|&z| (count[z], Reverse(z))) else {
                return;
            };
            let Some(rank) = (0..self.slots[p].len())
                .rev()
                .find(|&i| self.slots[p][i].is_some_and(|m| self.zone_of[m] == crowded))
            else {
                return;
            };
            if let Some(m) = self.slots[p][rank].take() {
                self.load[m] -= 1;
            }
        }
    }

    /// The member to put in the empty slot `rank` of partition `p`: the
    /// one furthest below its share of the ranks so far.
    fn best_for_hole(&self, p: usize, rank: usize, nodes: &[String]) -> Option<usize> {
        let r = self.slots[p].len();
        (0..self.quota.len())
            .filter(|&m| !self.holds(p, m) && self.zone_ok(p, rank, m))
            .max_by(|&a, &b| {
                let need =
                    |m: usize| (self.quota[m] * (rank + 1)) as f64 / r as f64 - self.load[m] as f64;
                need(a)
                    .total_cmp(&need(b))
                    .then_with(|| tie(p, &nodes[b]).cmp(&tie(p, &nodes[a])))
            })
    }

    /// Moves replicas from nodes over their share to nodes under it.
    fn balance(&mut self, nodes: &[String]) {
        let q = self.slots.len();
        loop {
            let mut under: Vec<usize> = (0..self.quota.len())
                .filter(|&m| self.load[m] < self.quota[m])
                .collect();
            under.sort_by_key(|&m| (Reverse(self.quota[m] - self.load[m]), m));
            let mut moved = false;
            'find: for &u in &under {
                let mut over: Vec<usize> = (0..self.quota.len())
                    .filter(|&m| self.load[m] > self.quota[m])
                    .collect();
                over.sort_by_key(|&m| (Reverse(self.load[m] - self.quota[m]), m));
                for &o in &over {
                    // The partitions where o may hand a replica to u,
                    // in a fixed but scattered order.
                    let mut ps: Vec<usize> = (0..q)
                        .filter(|&p| self.holds(p, o) && !self.holds(p, u))
                        .collect();
                    ps.sort_by_key(|&p| tie(p, &nodes[u]));
                    for p in ps {
                        let Some(rank) = self.slots[p].iter().position(|s| *s == Some(o)) else {
                            continue;
                        };
                        if self.zone_ok(p, rank, u) {
                            self.slots[p][rank] = Some(u);
                            self.load[o] -= 1;
                            self.load[u] += 1;
                            moved = true;
                            break 'find;
                        }
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }
}

/// A seed-fixed tie-break between members for partition `p`.
fn tie(p: usize, id: &str) -> u64 {
    let mut buf = Vec::with_capacity(8 + id.len());
    buf.extend_from_slice(&(p as u64).to_be_bytes());
    buf.extend_from_slice(id.as_bytes());
    xxh3_64_with_seed(&buf, TIE_SEED)
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q: u32 = 256;
    const R: usize = 3;

    fn cluster(n: usize, zones: usize) -> Vec<Candidate> {
        (1..=n)
            .map(|i| {
                let zone = (zones > 0).then(|| format!("z{}", i % zones));
                Candidate::new(format!("n{i:02}"), zone.as_deref())
            })
            .collect()
    }

    /// Every partition has `r` distinct replicas spanning as many zones as
    /// it can.
    fn check_valid(a: &Assignment, members: &[Candidate], r: usize) {
        let zone: BTreeMap<&str, String> = members
            .iter()
            .map(|m| {
                let z = m.zone.clone().unwrap_or_else(|| m.id.clone());
                (m.id.as_str(), z)
            })
            .collect();
        let zones: std::collections::BTreeSet<&String> = zone.values().collect();
        for p in 0..a.partitions() {
            let reps: Vec<&str> = a.replicas(p).collect();
            assert_eq!(reps.len(), r.min(members.len()), "partition {p}: {reps:?}");
            let distinct: std::collections::BTreeSet<&&str> = reps.iter().collect();
            assert_eq!(distinct.len(), reps.len(), "partition {p} repeats a node");
            let spanned: std::collections::BTreeSet<&String> =
                reps.iter().map(|id| &zone[id]).collect();
            assert_eq!(
                spanned.len(),
                reps.len().min(zones.len()),
                "partition {p} spans too few zones: {reps:?}"
            );
        }
    }

    #[test]
    fn a_join_moves_at_most_a_tenth_over_the_ideal_share() {
        for zones in [0, 2, 3] {
            for n in 3..=10 {
                let before = cluster(n, zones);
                let a = assign(None, &before, Q, R);
                check_valid(&a, &before, R);
                let after = cluster(n + 1, zones);
                let b = assign(Some(&a), &after, Q, R);
                check_valid(&b, &after, R);
                let slots = (Q as usize * R) as f64;
                let moved = b.moved_from(&a) as f64 / slots;
                let ideal = 1.0 / (n + 1) as f64;
                assert!(
                    moved <= 1.1 * ideal,
                    "{zones} zones, {n} -> {}: moved {moved:.3} of the slots, ideal {ideal:.3}",
                    n + 1
                );
            }
        }
    }

    #[test]
    fn without_zones_every_node_holds_its_share() {
        for n in 3..=11 {
            let members = cluster(n, 0);
            let a = assign(None, &members, Q, R);
            let fair = (Q as usize * R) as f64 / n as f64;
            for (id, load) in a.loads() {
                assert!(
                    (load as f64 - fair).abs() <= 1.0,
                    "{n} nodes: {id} holds {load}, fair {fair:.1}"
                );
            }
        }
    }

    #[test]
    fn each_rank_is_spread_too() {
        // The first replica coordinates: no node should coordinate much
        // more than its share.
        let members = cluster(5, 0);
        let a = assign(None, &members, Q, R);
        let mut first: BTreeMap<&str, usize> = BTreeMap::new();
        for p in 0..Q {
            if let Some(id) = a.replicas(p).next() {
                *first.entry(id).or_default() += 1;
            }
        }
        let fair = Q as f64 / 5.0;
        for (id, count) in first {
            assert!(count as f64 <= fair * 1.1, "{id} is first of {count}");
        }
    }

    #[test]
    fn weights_and_zones_bound_the_shares() {
        // Two zones of unequal size: the small zone still holds one replica
        // of every partition (it cannot hold more than r - 1 = 2).
        let mut members = cluster(4, 0);
        members[0].zone = Some("a".into());
        for m in &mut members[1..] {
            m.zone = Some("b".into());
        }
        let a = assign(None, &members, Q, R);
        check_valid(&a, &members, R);
        let loads = a.loads();
        assert_eq!(loads["n01"], Q as usize, "one replica of every partition");
        // A node of weight 2 takes twice the share of weight 1 (while that
        // is under one replica of every partition).
        let mut members = cluster(6, 0);
        members[0].weight = 2;
        let a = assign(None, &members, Q, R);
        let loads = a.loads();
        let ratio = loads["n01"] as f64 / loads["n02"] as f64;
        assert!((1.9..=2.1).contains(&ratio), "{loads:?}");
    }

    #[test]
    fn a_leave_moves_only_the_leavers_replicas() {
        let members = cluster(6, 3);
        let a = assign(None, &members, Q, R);
        let left: Vec<Candidate> = members.iter().filter(|m| m.id != "n03").cloned().collect();
        let b = assign(Some(&a), &left, Q, R);
        check_valid(&b, &left, R);
        let held = a.loads()["n03"];
        // Every replica n03 held moves; a few more may move for balance.
        let moved = b.moved_from(&a);
        assert!(moved >= held, "{moved} < {held}");
        assert!(
            moved as f64 <= held as f64 * 1.1,
            "{moved} moved for {held}"
        );
    }

    #[test]
    fn the_same_inputs_give_the_same_table_and_no_change_moves_nothing() {
        let members = cluster(7, 3);
        let a = assign(None, &members, Q, R);
        assert_eq!(a, assign(None, &members, Q, R));
        let again = assign(Some(&a), &members, Q, R);
        assert_eq!(again.moved_from(&a), 0);
        assert_eq!(again, a);
    }

    #[test]
    fn transfers_name_every_moved_replica_once() {
        let a = assign(None, &cluster(5, 3), Q, R);
        let b = assign(Some(&a), &cluster(6, 3), Q, R);
        let transfers = a.transfers(&b);
        let joining: usize = transfers.iter().map(|t| t.joining.len()).sum();
        let leaving: usize = transfers.iter().map(|t| t.leaving.len()).sum();
        assert_eq!(joining, b.moved_from(&a));
        assert_eq!(leaving, joining, "replica counts stay R per partition");
        for t in &transfers {
            assert_eq!(t.staying.len() + t.joining.len(), R, "{t:?}");
            assert!(!t.joining.iter().any(|j| t.staying.contains(j)));
        }
        // The new node only gains; nobody else both leaves and joins one.
        assert!(transfers
            .iter()
            .all(|t| !t.leaving.contains(&"n06".to_owned())));
        assert!(a.transfers(&a).is_empty());
    }

    #[test]
    fn fewer_nodes_than_replicas_give_every_node_every_partition() {
        let members = cluster(2, 0);
        let a = assign(None, &members, Q, R);
        for p in 0..Q {
            assert_eq!(a.replicas(p).count(), 2);
        }
    }
}
