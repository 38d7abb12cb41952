//! The store's side of tombstone reaping (the rule is the node's, in
//! `quorra_core::node`'s reap module):
//!
//! - **An index of tombstones**, `tombstone/` + storage key → when the
//!   newest tombstone was written, in [`Space::Meta`], kept in the same
//!   batch as every write of the object. A reaping pass reads the index of
//!   one partition, not the partition.
//! - **The conditional delete**: a key is reaped only if it still holds
//!   exactly the tombstone version every replica was found to hold.
//! - **Markers**: a reaped key leaves `reaped/` + storage key → (when,
//!   the tombstone) for one more grace period. A merge that brings a
//!   value the tombstone had deleted is a resurrection: counted, logged,
//!   and deleted again by merging with the marker's tombstone. A write
//!   over a marker starts from its tombstone, so the clock it makes covers
//!   every value the delete had removed.

use std::sync::atomic::{AtomicU64, Ordering};

use quorra_core::proto::KeyDigest;
use quorra_core::write::resurrected;
use quorra_core::{BucketName, Key, Object};

use super::{decode_record, encode_record, partition_of_key, partition_start, trees};
use super::{ObjectStore, StoreError};
use crate::storage::{Durability, Space, WriteOp};

const INDEX_PREFIX: &[u8] = b"tombstone/";
const MARKER_PREFIX: &[u8] = b"reaped/";
/// Set once the index covers every object (data dirs from before it are
/// indexed when opened).
const META_INDEXED: &[u8] = b"tombstone_index";

/// Tombstone counts, kept in step with the index and the markers.
#[derive(Debug, Default)]
pub(super) struct TombstoneCounters {
    held: AtomicU64,
    markers: AtomicU64,
    resurrections: AtomicU64,
}

/// Tombstones and reaping as the status shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TombstoneCounts {
    /// Keys that hold only tombstones.
    pub held: u64,
    /// Markers of reaped keys still kept.
    pub markers: u64,
    /// Values a merge brought back after their tombstone was reaped.
    pub resurrections: u64,
}

fn prefixed(prefix: &[u8], skey: &[u8]) -> Vec<u8> {
    [prefix, skey].concat()
}

fn meta_put(key: Vec<u8>, value: Vec<u8>) -> WriteOp {
    WriteOp::Put {
        space: Space::Meta,
        key,
        value,
    }
}

fn meta_delete(key: Vec<u8>) -> WriteOp {
    WriteOp::Delete {
        space: Space::Meta,
        key,
    }
}

fn time_of(v: &[u8]) -> u64 {
    v.get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_be_bytes)
}

impl ObjectStore {
    /// Indexes every tombstone if this data dir was never indexed, then
    /// counts tombstones and markers.
    pub(super) fn open_tombstones(&self) -> Result<(), StoreError> {
        if self.engine.get(Space::Meta, META_INDEXED)?.is_none() {
            let mut ops = Vec::new();
            self.engine.scan(Space::Objects, b"", &mut |k, v| {
                if let Some(at) = decode_record(v).ok().and_then(|o| o.deleted_at()) {
                    ops.push(meta_put(
                        prefixed(INDEX_PREFIX, k),
                        at.to_be_bytes().to_vec(),
                    ));
                }
                true
            })?;
            tracing::info!(tombstones = ops.len(), "tombstone index built");
            ops.push(meta_put(META_INDEXED.to_vec(), b"1".to_vec()));
            self.engine.write(ops, Durability::Fsync)?;
        }
        self.recount_tombstones()
    }

    /// Counts tombstones and markers from the index (after a change that
    /// does not track them one by one).
    pub(super) fn recount_tombstones(&self) -> Result<(), StoreError> {
        for (prefix, counter) in [
            (INDEX_PREFIX, &self.tombstones.held),
            (MARKER_PREFIX, &self.tombstones.markers),
        ] {
            let mut n = 0;
            self.engine.scan(Space::Meta, prefix, &mut |_, _| {
                n += 1;
                true
            })?;
            counter.store(n, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Tombstone counts.
    pub fn tombstone_counts(&self) -> TombstoneCounts {
        TombstoneCounts {
            held: self.tombstones.held.load(Ordering::Relaxed),
            markers: self.tombstones.markers.load(Ordering::Relaxed),
            resurrections: self.tombstones.resurrections.load(Ordering::Relaxed),
        }
    }

    /// The index changes of writing `new` over `old`, and the change in
    /// the count of tombstones held.
    pub(super) fn index_ops(
        skey: &[u8],
        old: Option<&Object>,
        new: &Object,
        ops: &mut Vec<WriteOp>,
    ) -> i64 {
        let was = old.and_then(Object::deleted_at).is_some();
        match new.deleted_at() {
            Some(at) => {
                ops.push(meta_put(
                    prefixed(INDEX_PREFIX, skey),
                    at.to_be_bytes().to_vec(),
                ));
                i64::from(!was)
            }
            None if was => {
                ops.push(meta_delete(prefixed(INDEX_PREFIX, skey)));
                -1
            }
            None => 0,
        }
    }

    /// Applies a change in the counts after its batch was written.
    pub(super) fn count_tombstones(&self, held: i64, markers: i64) {
        for (delta, counter) in [
            (held, &self.tombstones.held),
            (markers, &self.tombstones.markers),
        ] {
            if delta > 0 {
                counter.fetch_add(delta.unsigned_abs(), Ordering::Relaxed);
            } else if delta < 0 {
                let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                    Some(c.saturating_sub(delta.unsigned_abs()))
                });
            }
        }
    }

    /// The tombstone a reaped key left, if its marker is still kept.
    pub(super) fn marker(&self, skey: &[u8]) -> Result<Option<Object>, StoreError> {
        let raw = self
            .engine
            .get(Space::Meta, &prefixed(MARKER_PREFIX, skey))?;
        Ok(raw.and_then(|r| decode_record(r.get(8..)?).ok()))
    }

    /// The marker's delete, when a write replaces it.
    pub(super) fn forget_marker(skey: &[u8], ops: &mut Vec<WriteOp>) {
        ops.push(meta_delete(prefixed(MARKER_PREFIX, skey)));
    }

    /// A merge of `incoming` over a reaped key's `marker`: counts and logs
    /// the values it would have brought back.
    pub(super) fn check_resurrection(
        &self,
        bucket: &BucketName,
        key: &Key,
        marker: &Object,
        incoming: &Object,
    ) {
        let back = resurrected(marker, incoming);
        if back > 0 {
            self.tombstones
                .resurrections
                .fetch_add(back as u64, Ordering::Relaxed);
            metrics::counter!(crate::metric_names::RESURRECTIONS).increment(back as u64);
            tracing::error!(
                bucket = %bucket,
                key = %String::from_utf8_lossy(key.as_bytes()),
                values = back,
                "a replica brought back values of a key whose tombstone was reaped: deleted again; \
                 a node out of the cluster for longer than the tombstone grace period must be \
                 wiped before it rejoins"
            );
        }
    }

    /// Up to `limit` keys of `partition` holding only tombstones written
    /// before `before_ms`, with their version digests; markers made before
    /// `before_ms` are dropped on the way.
    pub fn tombstones(
        &self,
        partition: u32,
        partitions: u32,
        before_ms: u64,
        limit: usize,
    ) -> Result<Vec<KeyDigest>, StoreError> {
        let mut due = Vec::new();
        self.each_indexed(INDEX_PREFIX, partition, partitions, &mut |skey, v| {
            if time_of(v) <= before_ms {
                due.push(skey.to_vec());
            }
            due.len() < limit
        })?;
        let mut out = Vec::new();
        for skey in due {
            let Some((bucket, key)) = Self::parse_object_key(&skey) else {
                continue;
            };
            // Read again: a write may have come since the index said so.
            if let Some(object) = self.get(&bucket, &key)? {
                if object.deleted_at().is_some_and(|at| at <= before_ms) {
                    let digest = object.version_digest();
                    out.push(KeyDigest {
                        bucket,
                        key,
                        digest,
                    });
                }
            }
        }
        let mut expired = Vec::new();
        self.each_indexed(MARKER_PREFIX, partition, partitions, &mut |skey, v| {
            if time_of(v) < before_ms {
                expired.push(meta_delete(prefixed(MARKER_PREFIX, skey)));
            }
            true
        })?;
        if !expired.is_empty() {
            let n = expired.len() as i64;
            self.engine.write(expired, Durability::Buffered)?;
            self.count_tombstones(0, -n);
        }
        Ok(out)
    }

    /// For each key, whether it holds exactly that tombstone version; with
    /// `commit`, each one that does is deleted and leaves a marker.
    pub fn reap(
        &self,
        keys: &[KeyDigest],
        commit: bool,
        now_ms: u64,
    ) -> Result<Vec<bool>, StoreError> {
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            let _guard = self.lock(&k.bucket, &k.key);
            let held = self
                .read(&k.bucket, &k.key)?
                .object()
                .filter(|o| o.deleted_at().is_some() && o.version_digest() == k.digest);
            let Some(tombstone) = held else {
                out.push(false);
                continue;
            };
            if commit {
                let skey = self.object_key(&k.bucket, &k.key);
                let mut marker = now_ms.to_be_bytes().to_vec();
                marker.extend(encode_record(&tombstone)?);
                let ops = vec![
                    WriteOp::Delete {
                        space: Space::Objects,
                        key: skey.clone(),
                    },
                    meta_delete(prefixed(INDEX_PREFIX, &skey)),
                    meta_put(prefixed(MARKER_PREFIX, &skey), marker),
                ];
                let hash = trees::hash_of_key(&skey).unwrap_or_default();
                let _gate = self.trees.gate(hash);
                self.engine.write(ops, Durability::Buffered)?;
                self.trees.update(hash, &skey, Some(&tombstone), None);
                self.count_tombstones(-1, 1);
                metrics::counter!(crate::metric_names::TOMBSTONES_REAPED).increment(1);
            }
            out.push(true);
        }
        // A replica says it holds a tombstone only once it would still hold
        // it after a power loss: it may be reaped everywhere else next.
        if !commit && out.contains(&true) {
            self.engine.sync()?;
        }
        Ok(out)
    }

    /// Calls `f` with each entry under `prefix` whose storage key is in
    /// `partition`, until it returns `false`.
    fn each_indexed(
        &self,
        prefix: &[u8],
        partition: u32,
        partitions: u32,
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        let start = prefixed(prefix, &partition_start(partition, partitions));
        self.engine
            .scan_from(Space::Meta, prefix, &start, &mut |k, v| {
                let skey = &k[prefix.len()..];
                match partition_of_key(skey, partitions) {
                    Some(p) if p == partition => f(skey, v),
                    None => true,
                    Some(_) => false,
                }
            })?;
        Ok(())
    }

    /// Drops the index entries and markers of partitions given away.
    pub(super) fn drop_tombstones(
        &self,
        partition: u32,
        partitions: u32,
        covers: &dyn Fn(&[u8]) -> bool,
    ) -> Result<(), StoreError> {
        for prefix in [INDEX_PREFIX, MARKER_PREFIX] {
            let mut ops = Vec::new();
            self.each_indexed(prefix, partition, partitions, &mut |skey, _| {
                if covers(skey) {
                    ops.push(meta_delete(prefixed(prefix, skey)));
                }
                true
            })?;
            self.engine.write(ops, Durability::Buffered)?;
        }
        Ok(())
    }

    /// Drops the index entry of a record moved aside as corrupt; returns
    /// whether it had one.
    pub(super) fn unindex(&self, skey: &[u8], ops: &mut Vec<WriteOp>) -> Result<bool, StoreError> {
        let key = prefixed(INDEX_PREFIX, skey);
        let indexed = self.engine.get(Space::Meta, &key)?.is_some();
        if indexed {
            ops.push(meta_delete(key));
        }
        Ok(indexed)
    }
}

#[cfg(test)]
mod tests;
