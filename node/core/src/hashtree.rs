//! Per-partition hash trees for active anti-entropy (issue AE): every
//! replica of a partition keeps one, updated on each write, merge and
//! delete, so two replicas find the keys they disagree on by comparing a
//! few hundred bytes of hashes instead of their key lists (Riak's AAE,
//! Cassandra's Merkle-tree repair).
//!
//! A tree has [`SEGMENTS`] leaves. A key falls in the segment named by the
//! [`SEGMENT_BITS`] bits of its hash just below the partition's bits, so a
//! segment is one contiguous range of the store's hash-prefixed keys and
//! its keys are listed by a range scan ([`segment_range`]). A segment is
//! the XOR of its entries' hashes
//! (an entry is a key and the digest of its stored version), so an update
//! costs O(1) and reads nothing: XOR the old entry out and the new one in.
//! Above the segments sit [`FANOUT`]-wide levels; an inner node hashes its
//! children. Two in-sync replicas compare the root's children (256 bytes);
//! replicas that differ descend only into the branches that differ, then
//! list the keys of the segments that differ.
//!
//! [`Exchange`] is one side of a comparison as messages (ask for a node's
//! children, descend where they differ), so the node can run it over the
//! network against the other side's [`HashTree::children`].
//!
//! The tree is plain data: the node persists it, and a rebuild from a scan
//! ([`HashTree::from_entries`]) gives the same tree as the updates did.

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Children per inner node.
pub const FANOUT: usize = 32;
/// Leaves (segments) per tree: two levels of [`FANOUT`] below the root.
pub const SEGMENTS: usize = FANOUT * FANOUT;
/// Levels below the root: the root's children, then the segments.
pub const DEPTH: u8 = 2;
/// Bits of a key's hash that name its segment (`2^SEGMENT_BITS` is
/// [`SEGMENTS`]).
pub const SEGMENT_BITS: u32 = 10;

const ENTRY_SEED: u64 = 0x4145_454e_5452_5931; // "AEENTRY1"
const NODE_SEED: u64 = 0x4145_4e4f_4445_5331; // "AENODES1"

/// One partition's tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashTree {
    segments: Vec<u64>,
}

impl Default for HashTree {
    fn default() -> Self {
        Self::new()
    }
}

impl HashTree {
    /// The tree of an empty partition.
    pub fn new() -> Self {
        Self {
            segments: vec![0; SEGMENTS],
        }
    }

    /// The tree of these entries: (segment, key, version digest).
    pub fn from_entries<'a>(entries: impl IntoIterator<Item = (usize, &'a [u8], u64)>) -> Self {
        let mut tree = Self::new();
        for (segment, key, digest) in entries {
            tree.update(segment, key, None, Some(digest));
        }
        tree
    }

    /// Records that the key (`key`: the storage key, unique in the
    /// partition) of `segment` ([`segment_of`]) went from version digest
    /// `old` to `new` (`None`: absent).
    pub fn update(&mut self, segment: usize, key: &[u8], old: Option<u64>, new: Option<u64>) {
        let Some(segment) = self.segments.get_mut(segment) else {
            return;
        };
        for digest in [old, new].into_iter().flatten() {
            *segment ^= entry(key, digest);
        }
    }

    /// The hashes of level `depth` under node `index` of the level above
    /// (depth 1: the root's children, `index` 0; depth 2: the segments
    /// under child `index`). `None` for a level or index out of range.
    pub fn children(&self, depth: u8, index: usize) -> Option<Vec<u64>> {
        match depth {
            1 if index == 0 => Some((0..FANOUT).map(|i| self.inner(i)).collect()),
            2 if index < FANOUT => {
                Some(self.segments[index * FANOUT..(index + 1) * FANOUT].to_vec())
            }
            _ => None,
        }
    }

    /// The root: equal on two replicas exactly when (up to hash
    /// collisions) they hold the same versions of the same keys.
    pub fn root(&self) -> u64 {
        let children: Vec<u64> = (0..FANOUT).map(|i| self.inner(i)).collect();
        node_hash(&children)
    }

    /// Compares this tree with `theirs` as an exchange between two
    /// replicas does, question by question (both trees at hand: for tests
    /// and for a node comparing trees it holds).
    pub fn compare(&self, theirs: &Self) -> Exchange {
        let (mut x, first) = Exchange::start();
        let mut questions = vec![first];
        while let Some((depth, index)) = questions.pop() {
            let answer = theirs.children(depth, index);
            questions.extend(x.answer(self, (depth, index), answer.as_deref()));
        }
        x
    }

    /// Inner node `i` of the level below the root.
    fn inner(&self, i: usize) -> u64 {
        node_hash(&self.segments[i * FANOUT..(i + 1) * FANOUT])
    }
}

/// One side of a tree comparison with another replica, as messages: ask
/// for the root's children, then for the segments under each child that
/// differs; what is left are the segments whose keys the two must list
/// and repair. The answers come from the other side's
/// [`HashTree::children`].
#[derive(Debug, Clone, Default)]
pub struct Exchange {
    /// Questions asked and not answered: (depth, index).
    asked: Vec<(u8, usize)>,
    /// Segments found to differ.
    segments: Vec<usize>,
    /// Bytes of hashes received (what the comparison cost).
    pub bytes: u64,
}

impl Exchange {
    /// A new comparison and its first question.
    pub fn start() -> (Self, (u8, usize)) {
        let first = (1, 0);
        let exchange = Self {
            asked: vec![first],
            ..Self::default()
        };
        (exchange, first)
    }

    /// The other side answered question `(depth, index)` with `theirs`
    /// (`None`: it could not); returns the questions to ask next.
    pub fn answer(
        &mut self,
        ours: &HashTree,
        (depth, index): (u8, usize),
        theirs: Option<&[u64]>,
    ) -> Vec<(u8, usize)> {
        let Some(at) = self.asked.iter().position(|q| *q == (depth, index)) else {
            return Vec::new();
        };
        self.asked.swap_remove(at);
        let (Some(theirs), Some(mine)) = (theirs, ours.children(depth, index)) else {
            return Vec::new();
        };
        if theirs.len() != mine.len() {
            return Vec::new();
        }
        self.bytes += 8 * theirs.len() as u64;
        let differ = differing(&mine, theirs);
        if depth == DEPTH {
            self.segments
                .extend(differ.into_iter().map(|s| index * FANOUT + s));
            return Vec::new();
        }
        let next: Vec<(u8, usize)> = differ.into_iter().map(|i| (depth + 1, i)).collect();
        self.asked.extend(next.iter().copied());
        next
    }

    /// Whether every question was answered.
    pub fn done(&self) -> bool {
        self.asked.is_empty()
    }

    /// The segments found to differ so far (in the order found).
    pub fn segments(&self) -> &[usize] {
        &self.segments
    }
}

/// The segment of a key with hash `key_hash` in a ring of `partitions`
/// partitions (a power of two): the bits below the partition's.
pub fn segment_of(key_hash: u64, partitions: u32) -> usize {
    let bits = partitions.trailing_zeros();
    ((key_hash << bits) >> (64 - SEGMENT_BITS)) as usize
}

/// The range of 32-bit key-hash prefixes (the store's key prefix) that
/// segment `segment` of `partition` covers: `start..end`, `end` exclusive
/// (as `u64`, since the last segment ends at `2^32`). Partition counts
/// are at most `2^16`, so partition and segment bits fit in the prefix.
pub fn segment_range(partition: u32, partitions: u32, segment: usize) -> (u64, u64) {
    let bits = partitions.trailing_zeros();
    let width = 1u64 << (32 - bits - SEGMENT_BITS);
    let start = (u64::from(partition) << (32 - bits)) | (segment as u64 * width);
    (start, start + width)
}

/// The positions where two equally long lists of hashes differ.
pub fn differing(ours: &[u64], theirs: &[u64]) -> Vec<usize> {
    ours.iter()
        .zip(theirs)
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, _)| i)
        .collect()
}

/// An entry's hash: the key and its version digest.
fn entry(key: &[u8], digest: u64) -> u64 {
    let mut buf = Vec::with_capacity(key.len() + 8);
    buf.extend_from_slice(key);
    buf.extend_from_slice(&digest.to_be_bytes());
    xxh3_64_with_seed(&buf, ENTRY_SEED)
}

/// An inner node's hash over its children.
fn node_hash(children: &[u64]) -> u64 {
    let bytes: Vec<u8> = children.iter().flat_map(|c| c.to_be_bytes()).collect();
    xxh3_64_with_seed(&bytes, NODE_SEED)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PARTITIONS: u32 = 64;

    /// Key `i`'s segment and bytes.
    fn key(i: u32) -> (usize, Vec<u8>) {
        let k = format!("k{i}").into_bytes();
        (segment_of(crate::hash::key_hash(b"b", &k), PARTITIONS), k)
    }

    #[test]
    fn in_sync_replicas_agree_on_the_root_and_find_nothing() {
        let keys: Vec<(usize, Vec<u8>)> = (0..10_000).map(key).collect();
        let a = HashTree::from_entries(keys.iter().map(|(h, k)| (*h, k.as_slice(), 7)));
        // Another order, by updates through an older version.
        let mut b = HashTree::new();
        for (h, k) in keys.iter().rev() {
            b.update(*h, k, None, Some(6));
            b.update(*h, k, Some(6), Some(7));
        }
        assert_eq!(a, b);
        assert_eq!(a.root(), b.root());
        assert!(a.compare(&b).segments().is_empty());
        // What in-sync replicas exchange: the root's children, 256 bytes.
        let top = a.children(1, 0).expect("top");
        assert_eq!(top.len() * 8, 256);
    }

    #[test]
    fn one_missing_key_and_one_other_version_are_found_in_their_segments() {
        let keys: Vec<(usize, Vec<u8>)> = (0..10_000).map(key).collect();
        let full = HashTree::from_entries(keys.iter().map(|(h, k)| (*h, k.as_slice(), 1)));
        let mut other = full.clone();
        let (h1, k1) = &keys[17];
        other.update(*h1, k1, Some(1), None);
        let (h2, k2) = &keys[4_242];
        other.update(*h2, k2, Some(1), Some(2));
        let mut want = vec![*h1, *h2];
        want.sort_unstable();
        want.dedup();
        let mut found = full.compare(&other).segments().to_vec();
        found.sort_unstable();
        assert_eq!(found, want);
        assert_ne!(full.root(), other.root());
    }

    #[test]
    fn an_exchange_costs_a_level_in_sync_and_a_branch_per_difference() {
        let keys: Vec<(usize, Vec<u8>)> = (0..10_000).map(key).collect();
        let a = HashTree::from_entries(keys.iter().map(|(h, k)| (*h, k.as_slice(), 1)));
        let x = a.compare(&a.clone());
        assert!(x.segments().is_empty());
        assert_eq!(x.bytes, 256, "two in-sync replicas of 10,000 keys");
        let mut b = a.clone();
        let (h, k) = &keys[99];
        b.update(*h, k, Some(1), None);
        let x = a.compare(&b);
        assert_eq!(x.segments(), [*h]);
        assert_eq!(x.bytes, 512, "the root's children, then one branch");
        // A question nobody asked, or an answer of the wrong size, is
        // ignored.
        let (mut x, _) = Exchange::start();
        assert!(x.answer(&a, (2, 3), Some(&[0; FANOUT])).is_empty());
        assert!(x.answer(&a, (1, 0), Some(&[0; 3])).is_empty());
        assert!(x.done() && x.segments().is_empty());
    }

    #[test]
    fn out_of_range_questions_get_no_answer() {
        let t = HashTree::new();
        assert!(t.children(0, 0).is_none());
        assert!(t.children(1, 1).is_none());
        assert!(t.children(2, FANOUT).is_none());
        assert!(t.children(3, 0).is_none());
    }

    #[test]
    fn a_segment_is_one_prefix_range_inside_its_partition() {
        for partitions in [1u32, 2, 64, 256, 65_536] {
            for i in 0..2_000u32 {
                let k = format!("k{i}").into_bytes();
                let hash = crate::hash::key_hash(b"b", &k);
                let p = crate::hash::partition_of(hash, partitions);
                let s = segment_of(hash, partitions);
                let (start, end) = segment_range(p, partitions, s);
                let prefix = hash >> 32;
                assert!((start..end).contains(&prefix), "{partitions} {i}");
            }
        }
        // Segments tile the partition.
        assert_eq!(segment_range(3, 64, 0).0, 3 << 26);
        assert_eq!(segment_range(3, 64, SEGMENTS - 1).1, 4 << 26);
        assert_eq!(segment_range(0, 1, SEGMENTS - 1).1, 1 << 32);
    }

    proptest! {
        /// Any sequence of writes and deletes leaves the tree a rebuild
        /// from the final state gives.
        #[test]
        fn updates_equal_a_rebuild(ops in proptest::collection::vec((0u32..200, proptest::option::of(0u64..4)), 0..400)) {
            let mut state: std::collections::BTreeMap<u32, u64> = Default::default();
            let mut tree = HashTree::new();
            for (i, new) in ops {
                let (h, k) = key(i);
                let old = state.get(&i).copied();
                tree.update(h, &k, old, new);
                match new {
                    Some(d) => state.insert(i, d),
                    None => state.remove(&i),
                };
            }
            let keys: Vec<(usize, Vec<u8>, u64)> = state
                .iter()
                .map(|(&i, &d)| {
                    let (h, k) = key(i);
                    (h, k, d)
                })
                .collect();
            let rebuilt = HashTree::from_entries(keys.iter().map(|(h, k, d)| (*h, k.as_slice(), *d)));
            prop_assert_eq!(tree, rebuilt);
        }
    }
}
