//! The ring: which nodes hold which partitions, in which order.
//!
//! The key space is cut into `Q` partitions (a power of two, see
//! [`crate::hash::partition_of`]). Every member owns [`DEFAULT_TOKENS`]
//! virtual-node tokens on a consistent-hash ring (the `hashring` crate, with
//! the seed-fixed [`StableHashBuilder`]), and each partition sits at the
//! middle of its hash range on that ring. Walking clockwise from a partition
//! gives its candidate nodes; the partition's **order** picks from them rank
//! by rank:
//!
//! 1. a node not already in the order (replicas are distinct nodes);
//! 2. from the zone least used so far (replicas in one failure domain are
//!    not redundancy);
//! 3. from a node still under its share for this rank — consistent hashing
//!    with bounded loads (Mirrokni, Thorup and Zadimoghaddam), which keeps
//!    every node within [`LOAD_BOUND`] of its fair share where plain random
//!    tokens would leave some 30% over;
//! 4. otherwise the first clockwise.
//!
//! The first `n_val` nodes of a partition's order are its preference list;
//! the rest are its fallbacks for sloppy quorum, nearest first. The whole
//! table is built once per membership change, so a lookup is O(1), and it is a
//! pure function of the member list: every node with the same members
//! computes the same ring.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;

use hashring::HashRing;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::hash::{key_hash, partition_of};

/// Tokens per node unless configured otherwise.
pub const DEFAULT_TOKENS: u16 = 64;
/// No node takes more than this multiple of its fair share of any rank
/// (unless zones or distinctness leave no other choice).
pub const LOAD_BOUND: f64 = 1.1;
/// Ranks computed per partition: the longest preference list plus
/// fallbacks a request can use.
pub const MAX_RANKS: usize = 16;

/// Seed of the token hash. Changing it moves every partition: never do it.
const RING_SEED: u64 = 0x5155_4f52_5241_5249; // "QUORRARI"
const TOKEN_TAG: u8 = 1;
const POINT_TAG: u8 = 2;

/// A member as the ring sees it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RingMember {
    /// The node id.
    pub id: String,
    /// The failure domain (rack, availability zone), if declared.
    pub zone: Option<String>,
}

impl RingMember {
    /// A member without a zone.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            zone: None,
        }
    }

    /// A member in `zone`.
    pub fn in_zone(id: impl Into<String>, zone: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            zone: Some(zone.into()),
        }
    }
}

/// The seed-fixed hasher the ring uses: XXH3 over the bytes written, except
/// that a partition point hashes to its own position.
#[derive(Debug, Clone, Copy, Default)]
pub struct StableHashBuilder;

/// See [`StableHashBuilder`].
#[derive(Debug, Default)]
pub struct StableHasher {
    bytes: Vec<u8>,
}

impl BuildHasher for StableHashBuilder {
    type Hasher = StableHasher;
    fn build_hasher(&self) -> StableHasher {
        StableHasher::default()
    }
}

impl Hasher for StableHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.bytes.extend_from_slice(bytes);
    }

    fn finish(&self) -> u64 {
        match self.bytes.split_first() {
            Some((&POINT_TAG, pos)) if pos.len() == 8 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(pos);
                u64::from_be_bytes(b)
            }
            _ => xxh3_64_with_seed(&self.bytes, RING_SEED),
        }
    }
}

/// A virtual-node token: `(member, index)`, hashed from its bytes.
#[derive(Debug, Clone)]
struct Token {
    bytes: Arc<[u8]>,
    member: usize,
}

impl Token {
    fn new(id: &str, index: u16, member: usize) -> Self {
        let mut b = Vec::with_capacity(id.len() + 4);
        b.push(TOKEN_TAG);
        b.extend_from_slice(id.as_bytes());
        b.push(0);
        b.extend_from_slice(&index.to_be_bytes());
        Self {
            bytes: b.into(),
            member,
        }
    }
}

impl Hash for Token {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(&self.bytes);
    }
}

/// A position on the ring.
struct Point(u64);

impl Hash for Point {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let mut b = [0u8; 9];
        b[0] = POINT_TAG;
        b[1..].copy_from_slice(&self.0.to_be_bytes());
        state.write(&b);
    }
}

/// The middle of partition `p`'s hash range.
fn partition_point(p: u32, partitions: u32) -> u64 {
    let bits = partitions.trailing_zeros();
    if bits == 0 {
        return 1 << 63;
    }
    let shift = 64 - bits;
    ((p as u64) << shift) | (1u64 << (shift - 1))
}

/// Each member's zone as a small integer, numbered in the members' order,
/// and how many zones there are; a member without a zone is a zone of its
/// own. Shared by the ring and by [`crate::placement`].
pub(crate) fn zone_numbers<'a>(
    members: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
) -> (Vec<usize>, usize) {
    let mut ids: BTreeMap<String, usize> = BTreeMap::new();
    let numbers = members
        .into_iter()
        .map(|(id, zone)| {
            let name = zone.map_or_else(|| format!("\0{id}"), str::to_owned);
            let next = ids.len();
            *ids.entry(name).or_insert(next)
        })
        .collect();
    (numbers, ids.len())
}

/// The partition → order table for one membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ring {
    partitions: u32,
    members: Vec<RingMember>,
    /// For each partition, member indexes by rank.
    table: Vec<Vec<u16>>,
    /// While partitions move: each partition's replicas before the change
    /// (member indexes), which serve reads until the handover.
    before: Option<Vec<Vec<u16>>>,
    /// Replicas per partition in the assignment (0: none, a token ring).
    replicas: usize,
}

impl Ring {
    /// The ring of a layout: each partition's first ranks are the
    /// replicas its committed assignment names, the ranks after them (the
    /// fallbacks) the other nodes holding data, by the token walk. Members
    /// without a role hold nothing and are in no partition's order. This is
    /// the only ring a node or a client routes by.
    pub fn build(layout: &crate::layout::Layout) -> Self {
        let shape = layout.shape();
        let members: Vec<RingMember> = layout
            .roles
            .iter()
            .map(|(id, role)| RingMember {
                id: id.clone(),
                zone: role.zone.clone(),
            })
            .collect();
        let mut ring = match &layout.assignment {
            Some(a) if a.partitions() == shape.partitions => {
                Self::from_assignment(a, &members, shape.tokens)
            }
            _ => Self::by_tokens(&members, shape.partitions, shape.tokens),
        };
        ring.replicas = usize::from(layout.replicas);
        if let Some(before) = layout
            .moving
            .as_ref()
            .filter(|m| m.partitions() == shape.partitions)
        {
            // Replicas before the change that hold no role now (leaving)
            // join the member list, at the end of no partition's order.
            for id in &before.nodes {
                if !ring.members.iter().any(|m| m.id == *id) {
                    ring.members.push(RingMember::new(id.clone()));
                }
            }
            let index: BTreeMap<&str, u16> = ring
                .members
                .iter()
                .enumerate()
                .map(|(i, m)| (m.id.as_str(), i as u16))
                .collect();
            let table = (0..shape.partitions)
                .map(|p| {
                    before
                        .replicas(p)
                        .filter_map(|id| index.get(id).copied())
                        .collect()
                })
                .collect();
            ring.before = Some(table);
        }
        ring
    }

    /// A ring with no nodes (a node that has not joined yet).
    pub fn empty(partitions: u32) -> Self {
        Self::by_tokens(&[], partitions.max(1).next_power_of_two(), 1)
    }

    /// The ring of `members` by tokens alone (order and duplicates do not
    /// matter): what placement did before assignments, kept to compare
    /// against.
    pub fn by_tokens(members: &[RingMember], partitions: u32, tokens: u16) -> Self {
        Self::around(members, partitions, tokens, |_| Vec::new())
    }

    /// The ring whose first ranks are `assignment`'s replicas (placement
    /// computed when a layout is committed, see [`crate::placement`]); the
    /// ranks after them, the fallbacks, are the other `members` by the
    /// token walk as [`Self::build`] picks them. An assigned node missing
    /// from `members` is left out.
    pub fn from_assignment(
        assignment: &crate::placement::Assignment,
        members: &[RingMember],
        tokens: u16,
    ) -> Self {
        let mut sorted = members.to_vec();
        sorted.sort();
        sorted.dedup_by(|a, b| a.id == b.id);
        let index: BTreeMap<&str, u16> = sorted
            .iter()
            .enumerate()
            .map(|(i, m)| (m.id.as_str(), i as u16))
            .collect();
        Self::around(members, assignment.partitions(), tokens, |p| {
            assignment
                .replicas(p)
                .filter_map(|id| index.get(id).copied())
                .collect()
        })
    }

    /// The ring of `members` whose partition `p` starts with `first(p)`
    /// (member indexes into the sorted, deduplicated list), the remaining
    /// ranks chosen as [`Self::build`] chooses them.
    fn around(
        members: &[RingMember],
        partitions: u32,
        tokens: u16,
        first: impl Fn(u32) -> Vec<u16>,
    ) -> Self {
        assert!(
            partitions.is_power_of_two(),
            "partitions must be a power of two"
        );
        let mut members = members.to_vec();
        members.sort();
        members.dedup_by(|a, b| a.id == b.id);
        let n = members.len();
        if n == 0 {
            return Self {
                partitions,
                members,
                table: vec![Vec::new(); partitions as usize],
                before: None,
                replicas: 0,
            };
        }
        let mut ring: HashRing<Token, StableHashBuilder> = HashRing::with_hasher(StableHashBuilder);
        ring.batch_add(
            members
                .iter()
                .enumerate()
                .flat_map(|(m, member)| {
                    (0..tokens.max(1)).map(move |i| Token::new(&member.id, i, m))
                })
                .collect(),
        );
        let (zone_of, zone_count) =
            zone_numbers(members.iter().map(|m| (m.id.as_str(), m.zone.as_deref())));

        // Distinct members clockwise from each partition's point.
        let clockwise: Vec<Vec<usize>> = (0..partitions)
            .map(|p| {
                let walk = ring
                    .get_with_replicas(&Point(partition_point(p, partitions)), ring.len())
                    .unwrap_or_default();
                let mut seen = vec![false; n];
                let mut out = Vec::with_capacity(n);
                for t in walk {
                    if !seen[t.member] {
                        seen[t.member] = true;
                        out.push(t.member);
                    }
                }
                out
            })
            .collect();

        let ranks = n.min(MAX_RANKS);
        let cap = ((partitions as f64) * LOAD_BOUND / n as f64).ceil() as usize;
        let mut table: Vec<Vec<u16>> = (0..partitions)
            .map(|p| {
                let mut row = first(p);
                row.truncate(ranks);
                row.reserve(ranks - row.len());
                row
            })
            .collect();
        let mut zone_use: Vec<Vec<usize>> = table
            .iter()
            .map(|row| {
                let mut used = vec![0; zone_count];
                for &m in row {
                    used[zone_of[m as usize]] += 1;
                }
                used
            })
            .collect();
        let given = table.iter().map(Vec::len).min().unwrap_or(0);
        for _rank in given..ranks {
            let mut load = vec![0usize; n];
            for p in 0..partitions as usize {
                if table[p].len() >= ranks {
                    continue;
                }
                let chosen = clockwise[p]
                    .iter()
                    .enumerate()
                    .filter(|(_, &m)| !table[p].iter().any(|&t| t as usize == m))
                    .min_by_key(|&(pos, &m)| (zone_use[p][zone_of[m]], load[m] >= cap, pos))
                    .map(|(_, &m)| m);
                if let Some(m) = chosen {
                    table[p].push(m as u16);
                    load[m] += 1;
                    zone_use[p][zone_of[m]] += 1;
                }
            }
        }
        Self {
            partitions,
            members,
            table,
            before: None,
            replicas: 0,
        }
    }

    /// The number of partitions.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// The members, sorted by id.
    pub fn members(&self) -> &[RingMember] {
        &self.members
    }

    /// Replica slots of each partition: the largest `n_val` of any bucket.
    pub fn replicas(&self) -> usize {
        self.replicas
    }

    /// The partition of a key.
    pub fn partition_of(&self, bucket: &[u8], key: &[u8]) -> u32 {
        partition_of(key_hash(bucket, key), self.partitions)
    }

    /// Partition `p`'s nodes by rank: the preference list, then fallbacks.
    pub fn order(&self, p: u32) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.table
            .get(p as usize)
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|&m| self.members[m as usize].id.as_str())
    }

    /// While partitions move: partition `p`'s replicas before the change,
    /// whether or not they differ from its replicas now (a bucket whose
    /// `n_val` changes keeps its keys on another number of them).
    pub fn moving_from(&self, p: u32) -> Option<Vec<&str>> {
        let row = self.before.as_ref()?.get(p as usize)?;
        Some(
            row.iter()
                .map(|&m| self.members[m as usize].id.as_str())
                .collect(),
        )
    }

    /// While partition `p` moves: its replicas before the change (they
    /// serve its reads, and a write needs its quorum from them too).
    pub fn before(&self, p: u32) -> Option<Vec<&str>> {
        let row = self.before.as_ref()?.get(p as usize)?;
        let now: Vec<&str> = self.order(p).take(self.replicas.max(row.len())).collect();
        let before: Vec<&str> = row
            .iter()
            .map(|&m| self.members[m as usize].id.as_str())
            .collect();
        // A partition whose replicas did not change is not moving.
        let mut a = now.clone();
        let mut b = before.clone();
        a.sort_unstable();
        b.sort_unstable();
        (a != b).then_some(before)
    }

    /// Where a key lives: its partition, its preference list (the first `n`
    /// nodes of the partition's order) and its fallbacks (the rest).
    pub fn locate(&self, bucket: &[u8], key: &[u8], n: usize) -> (u32, Vec<&str>, Vec<&str>) {
        let p = self.partition_of(bucket, key);
        let mut order: Vec<&str> = self.order(p).collect();
        let fallbacks = order.split_off(n.min(order.len()));
        (p, order, fallbacks)
    }

    /// The first `n` nodes of partition `p` (fewer if the ring is smaller).
    pub fn preference_list(&self, p: u32, n: usize) -> Vec<&str> {
        self.order(p).take(n).collect()
    }

    /// How many partitions each member holds among the first `ranks` ranks.
    pub fn ownership(&self, ranks: usize) -> BTreeMap<&str, usize> {
        let mut out: BTreeMap<&str, usize> =
            self.members.iter().map(|m| (m.id.as_str(), 0)).collect();
        for row in &self.table {
            for &m in row.iter().take(ranks) {
                *out.entry(self.members[m as usize].id.as_str()).or_default() += 1;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: usize) -> Vec<RingMember> {
        (1..=n).map(|i| RingMember::new(format!("n{i}"))).collect()
    }

    #[test]
    fn balanced_within_a_quarter_of_fair_share() {
        for n in [3usize, 5, 10] {
            let ring = Ring::by_tokens(&nodes(n), 256, DEFAULT_TOKENS);
            for ranks in [1usize, 3] {
                let fair = 256.0 * ranks.min(n) as f64 / n as f64;
                for (node, owned) in ring.ownership(ranks) {
                    assert!(
                        owned as f64 <= 1.25 * fair,
                        "{n} nodes, {ranks} ranks: {node} owns {owned}, fair share {fair:.1}"
                    );
                }
            }
        }
    }

    #[test]
    fn balanced_for_other_names_and_sizes_too() {
        for n in [4usize, 7, 16] {
            let members: Vec<RingMember> = (0..n)
                .map(|i| RingMember::new(format!("db-{}", i * 7 + 3)))
                .collect();
            for q in [64u32, 1024] {
                let ring = Ring::by_tokens(&members, q, DEFAULT_TOKENS);
                let fair = q as f64 / n as f64;
                for (node, owned) in ring.ownership(1) {
                    assert!(
                        owned as f64 <= (1.25 * fair).ceil(),
                        "{node} owns {owned} of {q}"
                    );
                }
            }
        }
    }

    #[test]
    fn preference_lists_are_distinct_nodes() {
        let ring = Ring::by_tokens(&nodes(5), 256, DEFAULT_TOKENS);
        for p in 0..256 {
            let order: Vec<&str> = ring.order(p).collect();
            assert_eq!(order.len(), 5);
            let mut sorted = order.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted.len(), 5, "partition {p}: {order:?}");
        }
    }

    #[test]
    fn preference_lists_spread_over_zones() {
        let members = vec![
            RingMember::in_zone("a1", "a"),
            RingMember::in_zone("a2", "a"),
            RingMember::in_zone("b1", "b"),
            RingMember::in_zone("b2", "b"),
            RingMember::in_zone("c1", "c"),
            RingMember::in_zone("c2", "c"),
        ];
        let zone = |id: &str| id[..1].to_owned();
        let ring = Ring::by_tokens(&members, 256, DEFAULT_TOKENS);
        for p in 0..256 {
            let mut zones: Vec<String> = ring.preference_list(p, 3).into_iter().map(zone).collect();
            zones.sort();
            assert_eq!(zones, ["a", "b", "c"], "partition {p}");
        }
        // Two zones for three replicas: both zones are always used.
        let two = &members[..4];
        let ring = Ring::by_tokens(two, 256, DEFAULT_TOKENS);
        for p in 0..256 {
            let mut zones: Vec<String> = ring.preference_list(p, 3).into_iter().map(zone).collect();
            zones.dedup();
            zones.sort();
            zones.dedup();
            assert_eq!(zones.len(), 2, "partition {p}");
        }
    }

    #[test]
    fn same_members_same_ring_whatever_the_order() {
        let mut m = nodes(7);
        let a = Ring::by_tokens(&m, 256, DEFAULT_TOKENS);
        m.reverse();
        m.push(RingMember::new("n3"));
        let b = Ring::by_tokens(&m, 256, DEFAULT_TOKENS);
        assert_eq!(a, b);
    }

    #[test]
    fn a_join_moves_a_bounded_share_of_primaries() {
        let before = Ring::by_tokens(&nodes(5), 256, DEFAULT_TOKENS);
        let after = Ring::by_tokens(&nodes(6), 256, DEFAULT_TOKENS);
        let moved = (0..256)
            .filter(|&p| before.preference_list(p, 1) != after.preference_list(p, 1))
            .count();
        // The ideal is 256/6 ≈ 43; bounded loads cost some extra movement.
        assert!(moved <= 256 / 2, "{moved} of 256 primaries moved");
    }

    #[test]
    fn small_rings() {
        let empty = Ring::by_tokens(&[], 8, DEFAULT_TOKENS);
        assert_eq!(empty.preference_list(0, 3), Vec::<&str>::new());
        let one = Ring::by_tokens(&nodes(1), 8, DEFAULT_TOKENS);
        assert_eq!(one.preference_list(5, 3), ["n1"]);
        let q1 = Ring::by_tokens(&nodes(3), 1, DEFAULT_TOKENS);
        assert_eq!(q1.preference_list(0, 3).len(), 3);
    }

    #[test]
    fn a_ring_from_an_assignment_prefers_it_and_falls_back_to_the_others() {
        use crate::placement::{assign, Candidate};
        let zones = ["a", "b", "c"];
        let candidates = |n: usize| -> Vec<Candidate> {
            (1..=n)
                .map(|i| Candidate::new(format!("n{i}"), Some(zones[i % 3])))
                .collect()
        };
        let members = |n: usize| -> Vec<RingMember> {
            (1..=n)
                .map(|i| RingMember::in_zone(format!("n{i}"), zones[i % 3]))
                .collect()
        };
        let a = assign(None, &candidates(5), 256, 3);
        let ring = Ring::from_assignment(&a, &members(5), DEFAULT_TOKENS);
        for p in 0..256 {
            let order: Vec<&str> = ring.order(p).collect();
            let assigned: Vec<&str> = a.replicas(p).collect();
            assert_eq!(&order[..3], &assigned[..], "partition {p}");
            let mut all = order.clone();
            all.sort();
            all.dedup();
            assert_eq!(all.len(), 5, "every member once: {order:?}");
        }
        // A sixth node: the preference lists move by its share, not more.
        let b = assign(Some(&a), &candidates(6), 256, 3);
        let after = Ring::from_assignment(&b, &members(6), DEFAULT_TOKENS);
        let moved: usize = (0..256)
            .map(|p| {
                let before = ring.preference_list(p, 3);
                after
                    .preference_list(p, 3)
                    .iter()
                    .filter(|id| !before.contains(id))
                    .count()
            })
            .sum();
        assert!(
            moved as f64 <= 1.1 * 768.0 / 6.0,
            "{moved} of 768 replica slots moved"
        );
    }

    #[test]
    fn partition_points_are_inside_their_range() {
        for p in [0u32, 1, 100, 255] {
            assert_eq!(partition_of(partition_point(p, 256), 256), p);
        }
    }
}
