//! Anti-entropy's hash trees, one per partition, kept by the store in step
//! with the objects (see [`quorra_core::hashtree`]).
//!
//! - **Updated with every write.** A write of an object (coordination,
//!   merge, copy, repair) knows the version it replaces, so it XORs the
//!   old entry out and the new one in, under the same gate as the engine
//!   write.
//! - **Built once, by a scan, only when missing:** at the first exchange
//!   after a start that found no saved trees (a crash), after a corrupt
//!   record was moved aside (its old digest is unreadable), or after
//!   partitions were dropped. The build holds its partition's gates
//!   exclusively while it scans, so no write lands half inside it; writes
//!   hold one gate shared, so they never wait on each other.
//!   [`ObjectStore::tree_builds`] counts builds: repeated exchanges leave it
//!   flat.
//! - **Saved on a clean stop** with the clean-stop marker and loaded (then
//!   deleted) at the next open; a crash leaves none, so nothing stale is
//!   ever loaded.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use quorra_core::hash::partition_of;
use quorra_core::hashtree::{segment_of, segment_range, HashTree};
use quorra_core::proto::{Fetched, KeyDigest, Pulled};
use quorra_core::{BucketName, ConflictMode, Key, Object};

use super::{decode_record, ObjectStore, StoreError};
use crate::storage::{Durability, Space, WriteOp};

/// Gate stripes, by the top bits of a key's hash.
const GATE_BITS: u32 = 8;
/// Where saved trees live in [`Space::Meta`]: the prefix, then the
/// partition count and the partition (u32 BE each).
const SAVED_PREFIX: &[u8] = b"aae_tree/";

/// The trees of one partition count.
#[derive(Debug, Default)]
pub(crate) struct TreeTable {
    partitions: u32,
    trees: HashMap<u32, HashTree>,
}

/// The store's trees and the gates that keep them in step with writes.
#[derive(Debug)]
pub(crate) struct Trees {
    gates: Vec<RwLock<()>>,
    table: Mutex<TreeTable>,
    builds: std::sync::atomic::AtomicU64,
}

impl Default for Trees {
    fn default() -> Self {
        Self {
            gates: (0..1 << GATE_BITS).map(|_| RwLock::new(())).collect(),
            table: Mutex::new(TreeTable::default()),
            builds: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

fn unpoison<T>(r: Result<T, std::sync::PoisonError<T>>) -> T {
    r.unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Trees {
    /// The gate a write of this key holds (shared) from its engine write
    /// through its tree update.
    pub(crate) fn gate(&self, hash: u64) -> RwLockReadGuard<'_, ()> {
        unpoison(self.gates[(hash >> (64 - GATE_BITS)) as usize].read())
    }

    /// Every gate of `partition`, held exclusively (in order).
    fn close_gates(&self, partition: u32, partitions: u32) -> Vec<RwLockWriteGuard<'_, ()>> {
        let bits = partitions.trailing_zeros();
        let (first, count) = if bits <= GATE_BITS {
            let per = 1usize << (GATE_BITS - bits);
            (partition as usize * per, per)
        } else {
            ((partition >> (bits - GATE_BITS)) as usize, 1)
        };
        self.gates[first..first + count]
            .iter()
            .map(|g| unpoison(g.write()))
            .collect()
    }

    /// Records a write of the key with storage key `skey` from `old` to
    /// `new` (call it holding the key's gate).
    pub(crate) fn update(
        &self,
        hash: u64,
        skey: &[u8],
        old: Option<&Object>,
        new: Option<&Object>,
    ) {
        let mut table = unpoison(self.table.lock());
        if table.trees.is_empty() {
            return;
        }
        let partitions = table.partitions;
        let p = partition_of(hash, partitions);
        if let Some(tree) = table.trees.get_mut(&p) {
            tree.update(
                segment_of(hash, partitions),
                skey,
                old.map(Object::version_digest),
                new.map(Object::version_digest),
            );
        }
    }

    /// Forgets the tree of the partition holding `hash` (its next exchange
    /// rebuilds it): a record whose old version is unreadable went away.
    pub(crate) fn invalidate(&self, hash: u64) {
        let mut table = unpoison(self.table.lock());
        let p = partition_of(hash, table.partitions.max(1));
        table.trees.remove(&p);
    }

    /// Forgets the trees of these partitions.
    pub(crate) fn invalidate_partitions(&self, partitions: u32, dropped: &[u32]) {
        let mut table = unpoison(self.table.lock());
        if table.partitions != partitions {
            return table.trees.clear();
        }
        for p in dropped {
            table.trees.remove(p);
        }
    }
}

impl ObjectStore {
    /// This store's tree of `partition` (of `partitions`), built by a scan
    /// if it has none.
    pub fn tree(&self, partition: u32, partitions: u32) -> Result<HashTree, StoreError> {
        {
            let mut table = unpoison(self.trees.table.lock());
            if table.partitions != partitions {
                // Another ring shape: every tree is of the old one.
                *table = TreeTable {
                    partitions,
                    trees: HashMap::new(),
                };
            }
            if let Some(tree) = table.trees.get(&partition) {
                return Ok(tree.clone());
            }
        }
        let _closed = self.trees.close_gates(partition, partitions);
        // Another build may have finished while this one waited.
        if let Some(tree) = unpoison(self.trees.table.lock()).trees.get(&partition) {
            return Ok(tree.clone());
        }
        let mut tree = HashTree::new();
        self.each_in_partition(partition, partitions, b"", &mut |k, v| {
            // A corrupt record is left out: it reads as missing.
            if let (Some(hash), Ok(object)) = (hash_of_key(k), decode_record(v)) {
                let segment = segment_of(hash, partitions);
                tree.update(segment, k, None, Some(object.version_digest()));
            }
            true
        })?;
        self.trees.builds.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(crate::metric_names::AAE_TREE_BUILDS).increment(1);
        let mut table = unpoison(self.trees.table.lock());
        if table.partitions == partitions {
            table.trees.insert(partition, tree.clone());
        }
        Ok(tree)
    }

    /// How many trees were built by a scan since the store opened.
    pub fn tree_builds(&self) -> u64 {
        self.trees.builds.load(Ordering::Relaxed)
    }

    /// The keys of these segments of `partition`, with their version
    /// digests (range scans: a segment is one range of storage keys).
    pub fn segment_keys(
        &self,
        partition: u32,
        partitions: u32,
        segments: &[u16],
    ) -> Result<Vec<KeyDigest>, StoreError> {
        let mut out = Vec::new();
        for &segment in segments {
            let (start, end) = segment_range(partition, partitions, usize::from(segment));
            let Ok(first) = u32::try_from(start) else {
                continue;
            };
            self.engine
                .scan_from(Space::Objects, b"", &first.to_be_bytes(), &mut |k, v| {
                    let Some(prefix) = k.get(..4).and_then(|p| <[u8; 4]>::try_from(p).ok()) else {
                        return true;
                    };
                    if u64::from(u32::from_be_bytes(prefix)) >= end {
                        return false;
                    }
                    if let (Some((bucket, key)), Ok(object)) =
                        (Self::parse_object_key(k), decode_record(v))
                    {
                        out.push(KeyDigest {
                            bucket,
                            key,
                            digest: object.version_digest(),
                        });
                    }
                    true
                })?;
        }
        Ok(out)
    }

    /// Anti-entropy's repair on this side: merges `objects` (fsynced),
    /// then reads `wanted` from the first until about `max_bytes` are read
    /// (at least one key is looked at).
    pub fn exchange(
        &self,
        objects: &[(Pulled, ConflictMode)],
        wanted: &[(BucketName, Key)],
        max_bytes: usize,
    ) -> Result<Fetched, StoreError> {
        if !objects.is_empty() {
            self.merge_all(objects, Durability::Fsync)?;
        }
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut answered = 0u32;
        for (bucket, key) in wanted {
            if answered > 0 && bytes >= max_bytes {
                break;
            }
            answered += 1;
            if let Some(object) = self.get(bucket, key)? {
                bytes += rmp_serde::to_vec(&object).map_or(0, |b| b.len());
                out.push(Pulled {
                    bucket: bucket.clone(),
                    key: key.clone(),
                    object,
                });
            }
        }
        Ok(Fetched {
            objects: out,
            answered,
        })
    }

    /// Every gate, held exclusively: no write is between its engine write
    /// and its tree update while they are held.
    pub(crate) fn close_all_gates(&self) -> Vec<RwLockWriteGuard<'_, ()>> {
        self.trees
            .gates
            .iter()
            .map(|g| unpoison(g.write()))
            .collect()
    }

    /// The trees to save with a clean stop (call it holding every gate).
    pub(crate) fn saved_trees(&self) -> Vec<WriteOp> {
        let table = unpoison(self.trees.table.lock());
        table
            .trees
            .iter()
            .filter_map(|(p, tree)| {
                Some(WriteOp::Put {
                    space: Space::Meta,
                    key: saved_key(table.partitions, *p),
                    value: rmp_serde::to_vec(tree).ok()?,
                })
            })
            .collect()
    }

    /// Loads the trees a clean stop saved (when `load`), and deletes every
    /// saved tree either way: once writes start, they are stale.
    pub(crate) fn load_trees(&self, load: bool) -> Result<(), StoreError> {
        let mut found = Vec::new();
        self.engine.scan(Space::Meta, SAVED_PREFIX, &mut |k, v| {
            found.push((k.to_vec(), v.to_vec()));
            true
        })?;
        if found.is_empty() {
            return Ok(());
        }
        let mut table = unpoison(self.trees.table.lock());
        let mut deletes = Vec::new();
        for (k, v) in found {
            let parsed = parse_saved_key(&k)
                .zip(rmp_serde::from_slice::<HashTree>(&v).ok())
                .filter(|_| load);
            if let Some(((partitions, p), tree)) = parsed {
                if table.partitions != partitions {
                    *table = TreeTable {
                        partitions,
                        trees: HashMap::new(),
                    };
                }
                table.trees.insert(p, tree);
            }
            deletes.push(WriteOp::Delete {
                space: Space::Meta,
                key: k,
            });
        }
        self.engine.write(deletes, Durability::Fsync)?;
        Ok(())
    }
}

/// The key hash's top 32 bits (all the storage key keeps) as a hash whose
/// partition and segment are the key's.
pub(crate) fn hash_of_key(skey: &[u8]) -> Option<u64> {
    let prefix = u32::from_be_bytes(skey.get(..4)?.try_into().ok()?);
    Some(u64::from(prefix) << 32)
}

fn saved_key(partitions: u32, partition: u32) -> Vec<u8> {
    let mut k = SAVED_PREFIX.to_vec();
    k.extend_from_slice(&partitions.to_be_bytes());
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

fn parse_saved_key(k: &[u8]) -> Option<(u32, u32)> {
    let rest = k.strip_prefix(SAVED_PREFIX)?;
    let partitions = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
    let partition = u32::from_be_bytes(rest.get(4..8)?.try_into().ok()?);
    Some((partitions, partition))
}

#[cfg(test)]
mod tests;
