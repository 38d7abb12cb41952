//! Per-partition hash trees for active anti-entropy (issue AE): every
//! replica of a partition keeps one, updated on each write, merge and
//! delete, so two replicas find the keys they disagree on by comparing a
//! few hundred bytes of hashes instead of their key lists (Riak's AAE,
//! Cassandra's Merkle-tree repair).
//!
//! A tree has [`SEGMENTS`] leaves. A key falls in the segment its hash's
//! low bits name (the partition takes the high bits, so a partition's keys
//! spread over all segments). A segment is the XOR of its entries' hashes
//! (an entry is a key and the digest of its stored version), so an update
//! costs O(1) and reads nothing: XOR the old entry out and the new one in.
//! Above the segments sit [`FANOUT`]-wide levels; an inner node hashes its
//! children. Two in-sync replicas compare the root's children (256 bytes);
//! replicas that differ descend only into the branches that differ, then
//! list the keys of the segments that differ.
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

    /// The tree of these entries: (key hash, key, version digest).
    pub fn from_entries<'a>(entries: impl IntoIterator<Item = (u64, &'a [u8], u64)>) -> Self {
        let mut tree = Self::new();
        for (hash, key, digest) in entries {
            tree.update(hash, key, None, Some(digest));
        }
        tree
    }

    /// The segment of a key with hash `key_hash`.
    pub fn segment_of(key_hash: u64) -> usize {
        (key_hash % SEGMENTS as u64) as usize
    }

    /// Records that the key (`key_hash`, `key`: the storage key, unique
    /// in the partition) went from version digest `old` to `new` (`None`:
    /// absent).
    pub fn update(&mut self, key_hash: u64, key: &[u8], old: Option<u64>, new: Option<u64>) {
        let segment = &mut self.segments[Self::segment_of(key_hash)];
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

    /// The segments two replicas disagree on, found level by level as an
    /// exchange does: what `theirs` answers for each node asked.
    pub fn differing_segments(&self, theirs: &Self) -> Vec<usize> {
        let mut out = Vec::new();
        let (Some(ours_top), Some(theirs_top)) = (self.children(1, 0), theirs.children(1, 0))
        else {
            return out;
        };
        for branch in differing(&ours_top, &theirs_top) {
            let (Some(a), Some(b)) = (self.children(2, branch), theirs.children(2, branch)) else {
                continue;
            };
            out.extend(differing(&a, &b).into_iter().map(|s| branch * FANOUT + s));
        }
        out
    }

    /// Inner node `i` of the level below the root.
    fn inner(&self, i: usize) -> u64 {
        node_hash(&self.segments[i * FANOUT..(i + 1) * FANOUT])
    }
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

    fn key(i: u32) -> (u64, Vec<u8>) {
        let k = format!("k{i}").into_bytes();
        (crate::hash::key_hash(b"b", &k), k)
    }

    #[test]
    fn in_sync_replicas_agree_on_the_root_and_find_nothing() {
        let keys: Vec<(u64, Vec<u8>)> = (0..10_000).map(key).collect();
        let a = HashTree::from_entries(keys.iter().map(|(h, k)| (*h, k.as_slice(), 7)));
        // Another order, by updates through an older version.
        let mut b = HashTree::new();
        for (h, k) in keys.iter().rev() {
            b.update(*h, k, None, Some(6));
            b.update(*h, k, Some(6), Some(7));
        }
        assert_eq!(a, b);
        assert_eq!(a.root(), b.root());
        assert!(a.differing_segments(&b).is_empty());
        // What in-sync replicas exchange: the root's children, 256 bytes.
        let top = a.children(1, 0).expect("top");
        assert_eq!(top.len() * 8, 256);
    }

    #[test]
    fn one_missing_key_and_one_other_version_are_found_in_their_segments() {
        let keys: Vec<(u64, Vec<u8>)> = (0..10_000).map(key).collect();
        let full = HashTree::from_entries(keys.iter().map(|(h, k)| (*h, k.as_slice(), 1)));
        let mut other = full.clone();
        let (h1, k1) = &keys[17];
        other.update(*h1, k1, Some(1), None);
        let (h2, k2) = &keys[4_242];
        other.update(*h2, k2, Some(1), Some(2));
        let mut want = vec![HashTree::segment_of(*h1), HashTree::segment_of(*h2)];
        want.sort_unstable();
        want.dedup();
        assert_eq!(full.differing_segments(&other), want);
        assert_ne!(full.root(), other.root());
    }

    #[test]
    fn out_of_range_questions_get_no_answer() {
        let t = HashTree::new();
        assert!(t.children(0, 0).is_none());
        assert!(t.children(1, 1).is_none());
        assert!(t.children(2, FANOUT).is_none());
        assert!(t.children(3, 0).is_none());
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
            let keys: Vec<(u64, Vec<u8>, u64)> = state
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
