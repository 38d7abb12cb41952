//! Sets kept split: the key's record in [`Space::Objects`] holds the set's
//! header ([`SplitHeader`], under its state dot), and each element's dots
//! live in a record of their own in [`Space::Elements`], keyed
//! `object key's hash, bucket length and bucket | key length (u32 BE) |
//! key | element` (so a partition is one range there too).
//!
//! Why: an add to a set of 100,000 elements that rewrote the whole set
//! wrote megabytes. Here a set operation, on the coordinator
//! ([`ObjectStore::coordinate`]) and on each replica it is sent to as a
//! [`SetUpdate`] ([`ObjectStore::merge_replica`]), reads and writes the
//! header and the entries the operation touches: a few hundred bytes.
//! Every other path (client and replica reads, anti-entropy, transfers,
//! merges of whole states) reads the set whole ([`ObjectStore::assemble`])
//! and writes it back whole ([`ObjectStore::write_whole_set`]), which also
//! turns a set stored whole by an earlier build into a split one.
//!
//! Invariant: a key with no header record has no element records (a
//! header is deleted with its elements, in one batch), so a set operation
//! on a missing key starts from an empty set.
//!
//! Each element record is `format (u8) | xxh3-64 of payload (u64 BE) |
//! payload (msgpack dots)`; a corrupt one makes the whole key corrupt
//! (moved aside, read as missing, repaired from the other replicas).

use quorra_core::crdt::CrdtOp;
use quorra_core::crdt::{self, Clock, Loaded, OrSet, SetDelta, SetUpdate, SplitHeader};
use quorra_core::write::{check_context, Refused};
use quorra_core::{BucketName, Key, Object, VersionVector};

use super::{
    applied, encode_record, framed, trees, unframed, CorruptRecord, ObjectStore, StoreError,
    RECORD_HEADER,
};
use crate::storage::{Durability, Space, WriteOp};

/// The element record format written by this build.
const ENTRY_FORMAT_V1: u8 = 1;

/// The prefix of every element record of the key whose object key is
/// `skey`: its hash, bucket length and bucket, then the key with its
/// length (so one key's elements never run into a longer key's).
pub(super) fn elements_prefix(skey: &[u8]) -> Vec<u8> {
    let head = skey
        .get(4)
        .map_or(skey.len(), |&l| (5 + usize::from(l)).min(skey.len()));
    let (head, key) = skey.split_at(head);
    let mut out = Vec::with_capacity(skey.len() + 4);
    out.extend_from_slice(head);
    out.extend_from_slice(&u32::try_from(key.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(key);
    out
}

fn element_key(prefix: &[u8], element: &str) -> Vec<u8> {
    [prefix, element.as_bytes()].concat()
}

fn encode_entry(dots: &Clock) -> Result<Vec<u8>, StoreError> {
    let payload = rmp_serde::to_vec(dots).map_err(|e| StoreError::Encode(e.to_string()))?;
    Ok(framed(ENTRY_FORMAT_V1, &payload))
}

fn decode_entry(bytes: &[u8]) -> Result<Clock, CorruptRecord> {
    let payload = unframed(bytes, ENTRY_FORMAT_V1)?;
    rmp_serde::from_slice(payload).map_err(|e| CorruptRecord::Decode(e.to_string()))
}

/// Refuses a set whose elements pass `limit` bytes (a replica's object
/// limit: a set is read, sent and transferred whole, so it must fit a
/// peer frame, as a whole object must).
fn set_within(split: &SplitHeader, limit: usize) -> Result<(), StoreError> {
    let size = usize::try_from(split.bytes).unwrap_or(usize::MAX);
    if size > limit {
        return Err(StoreError::ObjectTooLarge { size, limit });
    }
    Ok(())
}

/// What a set operation found under its key.
pub(super) enum Base {
    /// A split set: its stored object (the header's) and header.
    Split(Object, SplitHeader),
    /// Nothing (and no reaped key's marker): an empty set.
    Empty,
    /// Something else (a set stored whole, a marker, a corrupt element):
    /// the whole-object path handles it.
    Other,
}

impl ObjectStore {
    /// A split set read whole: the header's object with its one sibling
    /// holding the whole state, under the same state dot (O(elements)).
    pub(super) fn assemble(
        &self,
        skey: &[u8],
        split: SplitHeader,
    ) -> Result<Result<Object, CorruptRecord>, StoreError> {
        let digest = split.digest();
        Ok(self
            .assemble_set(skey, split)?
            .map(|set| crdt::state_object(crdt::CrdtValue::Set(set).to_content(0), digest)))
    }

    /// The set a split header names, read from its element records (each
    /// checksum verified).
    fn assemble_set(
        &self,
        skey: &[u8],
        split: SplitHeader,
    ) -> Result<Result<OrSet, CorruptRecord>, StoreError> {
        let prefix = elements_prefix(skey);
        let mut entries = std::collections::BTreeMap::new();
        let mut bad = None;
        self.engine.scan(Space::Elements, &prefix, &mut |k, v| {
            let element = std::str::from_utf8(&k[prefix.len()..]);
            match (element, decode_entry(v)) {
                (Ok(e), Ok(dots)) => {
                    entries.insert(e.to_owned(), dots);
                    true
                }
                (Err(e), _) => {
                    bad = Some(CorruptRecord::Decode(format!("element key: {e}")));
                    false
                }
                (_, Err(e)) => {
                    bad = Some(e);
                    false
                }
            }
        })?;
        if let Some(why) = bad {
            return Ok(Err(why));
        }
        Ok(Ok(OrSet::from_parts(split.header, entries)))
    }

    /// The scrub's check of the split set under `skey` (under its key's
    /// lock): every element record's checksum, and the elements against
    /// what the header counted (their number, size and hashes), so a lost
    /// or stray element record is found too. A set that fails is moved
    /// aside as a corrupt read would move it. Returns whether it failed.
    pub(super) fn scrub_set(&self, skey: &[u8]) -> Result<bool, StoreError> {
        let Some((bucket, key)) = Self::parse_object_key(skey) else {
            return Ok(false);
        };
        let _guard = self.lock(&bucket, &key);
        let super::Held::Split(header, split) = self.read_held(&bucket, &key)? else {
            return Ok(false);
        };
        let why = match self.assemble_set(skey, split.clone())? {
            Err(why) => why,
            Ok(set) if SplitHeader::of(&set) != split => {
                CorruptRecord::Decode("the set's element records disagree with its header".into())
            }
            Ok(_) => return Ok(false),
        };
        self.quarantine(&bucket, &key, skey, encode_record(&header)?, &why)?;
        Ok(true)
    }

    /// Deletes of every element record of the key `skey`.
    pub(super) fn element_deletes(
        &self,
        skey: &[u8],
        ops: &mut Vec<WriteOp>,
    ) -> Result<(), StoreError> {
        self.engine
            .scan(Space::Elements, &elements_prefix(skey), &mut |k, _| {
                ops.push(WriteOp::Delete {
                    space: Space::Elements,
                    key: k.to_vec(),
                });
                true
            })?;
        Ok(())
    }

    /// Deletes the record of the key `skey` and its set elements in one
    /// batch, under the key's lock (so no set operation lands between
    /// them and leaves elements without a header). Returns whether it held
    /// a record.
    pub(super) fn drop_key(&self, skey: &[u8]) -> Result<bool, StoreError> {
        // (A key that names no valid bucket and key has no lock, and no
        // writer either.)
        let names = Self::parse_object_key(skey);
        let _guard = names.as_ref().map(|(bucket, key)| self.lock(bucket, key));
        if self.engine.get(Space::Objects, skey)?.is_none() {
            return Ok(false);
        }
        let mut ops = vec![WriteOp::Delete {
            space: Space::Objects,
            key: skey.to_vec(),
        }];
        self.element_deletes(skey, &mut ops)?;
        self.engine.write(ops, Durability::Buffered)?;
        Ok(true)
    }

    /// What a set operation on `bucket`/`key` starts from (under the key's
    /// lock).
    fn set_base(&self, bucket: &BucketName, key: &Key) -> Result<Base, StoreError> {
        Ok(match self.read_held(bucket, key)? {
            super::Held::Split(object, split) => Base::Split(object, split),
            super::Held::Missing | super::Held::Corrupt => {
                match self.marker_if_missing(bucket, key, None)? {
                    None => Base::Empty,
                    Some(_) => Base::Other,
                }
            }
            super::Held::Whole(_) => Base::Other,
        })
    }

    /// A client's set operation on a split (or missing) set, as
    /// coordinator: applied to the header and the entries it touches.
    /// Returns the update replicas are sent (`None`: the key holds
    /// something else; the caller takes the whole-object path, whose write
    /// splits the set).
    pub(super) fn coordinate_set(
        &self,
        bucket: &BucketName,
        key: &Key,
        op: &CrdtOp,
        seen: &VersionVector,
        durability: Durability,
    ) -> Result<Option<Object>, StoreError> {
        let limits = *self.limits();
        loop {
            let (old, split) = match self.set_base(bucket, key)? {
                Base::Split(o, s) => (Some(o), s),
                Base::Empty => (None, SplitHeader::default()),
                Base::Other => return Ok(None),
            };
            let actor = self.actor();
            // A read that saw more of this actor's operations than this
            // copy holds: it lost them, and the next dot may be taken.
            let held = crdt::to_vv(split.header.clock());
            if seen.get(&actor) > held.get(&actor) {
                self.rotate_actor("a context names writes of this node that it no longer holds")?;
                continue;
            }
            let ops = crdt::set_ops(&split.header, op, &actor, seen).map_err(Refused::from)?;
            let Some(after) =
                self.apply_set_ops(bucket, key, old, split, &ops, durability, |s| {
                    check_context(&crdt::to_vv(s.header.clock()), &limits)?;
                    // A set is read whole: held to the value limit, as a state
                    // stored whole is, so a read's answer (two concurrent
                    // states at most) fits an object.
                    if s.bytes > limits.max_value_bytes as u64 {
                        return Err(Refused::StateTooLarge {
                            datatype: crdt::Datatype::Set,
                            bytes: usize::try_from(s.bytes).unwrap_or(usize::MAX),
                            limit: limits.max_value_bytes,
                        }
                        .into());
                    }
                    Ok(())
                })?
            else {
                // An element record was corrupt: the key was moved aside,
                // and the operation starts again from an empty set.
                continue;
            };
            return Ok(Some(
                SetUpdate {
                    ops,
                    clock: after.header.clock().clone(),
                    size: after.count,
                }
                .to_object(),
            ));
        }
    }

    /// A coordinator's set update merged into a split (or missing) set:
    /// its operations applied to the entries they touch. `None`: the key
    /// holds something else (the caller merges whole).
    pub(super) fn merge_set_update(
        &self,
        bucket: &BucketName,
        key: &Key,
        update: &SetUpdate,
        durability: Durability,
    ) -> Result<Option<Object>, StoreError> {
        loop {
            let (old, split) = match self.set_base(bucket, key)? {
                Base::Split(o, s) => (Some(o), s),
                Base::Empty => (None, SplitHeader::default()),
                Base::Other => return Ok(None),
            };
            let limit = self.limits.object_limit();
            if let Some(after) =
                self.apply_set_ops(bucket, key, old, split, &update.ops, durability, |s| {
                    set_within(s, limit)
                })?
            {
                return Ok(Some(after.to_object()));
            }
        }
    }

    /// Applies `ops` to the split set `split` (stored as `old`, `None`:
    /// nothing stored), reading and writing the header and the touched
    /// entries only, in one batch. `check` may refuse the result before
    /// anything is written. `None`: a touched entry was corrupt, and the
    /// key was moved aside.
    #[allow(clippy::too_many_arguments)]
    fn apply_set_ops(
        &self,
        bucket: &BucketName,
        key: &Key,
        old: Option<Object>,
        mut split: SplitHeader,
        ops: &[SetDelta],
        durability: Durability,
        check: impl Fn(&SplitHeader) -> Result<(), StoreError>,
    ) -> Result<Option<SplitHeader>, StoreError> {
        let skey = self.object_key(bucket, key);
        let prefix = elements_prefix(&skey);
        let mut loaded = Vec::new();
        for element in split.header.touched_by_all(ops) {
            let dots = match self
                .engine
                .get(Space::Elements, &element_key(&prefix, &element))?
            {
                None => None,
                Some(raw) => match decode_entry(&raw) {
                    Ok(d) => Some(d),
                    Err(why) => {
                        self.quarantine(bucket, key, &skey, raw, &why)?;
                        return Ok(None);
                    }
                },
            };
            loaded.push((element, dots));
        }
        let mut entries = Loaded::new(loaded);
        for op in ops {
            split.header.apply(&mut entries, op.clone());
        }
        let mut batch = Vec::new();
        for (element, before, now) in entries.changes() {
            split.changed(element, before, now);
            let key = element_key(&prefix, element);
            batch.push(match now {
                Some(dots) => WriteOp::Put {
                    space: Space::Elements,
                    key,
                    value: encode_entry(dots)?,
                },
                None => WriteOp::Delete {
                    space: Space::Elements,
                    key,
                },
            });
        }
        check(&split)?;
        let object = split.to_object();
        self.put_record(
            &skey,
            bucket,
            key,
            old.as_ref(),
            &object,
            false,
            batch,
            durability,
        )?;
        Ok(Some(split))
    }

    /// Writes a whole set as a split one over what the key held (`old`,
    /// assembled): the header, and the entries that differ from the stored
    /// ones (every entry the first time). O(elements): the path of merges
    /// of whole states and of sets stored whole by earlier builds.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn write_whole_set(
        &self,
        bucket: &BucketName,
        key: &Key,
        old: Option<&Object>,
        set: &OrSet,
        forget_marker: bool,
        durability: Durability,
    ) -> Result<Object, StoreError> {
        let skey = self.object_key(bucket, key);
        let prefix = elements_prefix(&skey);
        let mut stored = std::collections::BTreeMap::new();
        self.engine.scan(Space::Elements, &prefix, &mut |k, v| {
            stored.insert(k.to_vec(), v.to_vec());
            true
        })?;
        let mut batch = Vec::new();
        for (element, dots) in set.entries() {
            let k = element_key(&prefix, element);
            let value = encode_entry(dots)?;
            if stored.remove(&k).as_ref() != Some(&value) {
                batch.push(WriteOp::Put {
                    space: Space::Elements,
                    key: k,
                    value,
                });
            }
        }
        batch.extend(stored.into_keys().map(|key| WriteOp::Delete {
            space: Space::Elements,
            key,
        }));
        let split = SplitHeader::of(set);
        set_within(&split, self.limits.object_limit())?;
        let object = split.to_object();
        self.put_record(
            &skey,
            bucket,
            key,
            old,
            &object,
            forget_marker,
            batch,
            durability,
        )?;
        Ok(object)
    }

    /// Writes `object` as the record of `skey` over `old`, with `extra`
    /// in the same batch, and updates the partition's tree and the
    /// tombstone index with the change.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn put_record(
        &self,
        skey: &[u8],
        bucket: &BucketName,
        key: &Key,
        old: Option<&Object>,
        object: &Object,
        forget_marker: bool,
        mut extra: Vec<WriteOp>,
        durability: Durability,
    ) -> Result<(), StoreError> {
        let record = encode_record(object)?;
        let size = record.len() - RECORD_HEADER;
        let limit = self.limits.object_limit();
        if size > limit {
            return Err(StoreError::ObjectTooLarge { size, limit });
        }
        if size > self.limits.object_warning() {
            metrics::counter!(crate::metric_names::LARGE_OBJECTS).increment(1);
            tracing::warn!(
                bucket = %bucket,
                key = %String::from_utf8_lossy(key.as_bytes()),
                size,
                limit,
                "large object: resolve its siblings"
            );
        }
        let siblings = object.siblings().len();
        let grew = old.is_none_or(|o| o.siblings().len() < siblings);
        if siblings > self.limits.sibling_warning() && grew {
            metrics::counter!(crate::metric_names::SIBLING_WARNINGS).increment(1);
            tracing::warn!(
                bucket = %bucket,
                key = %String::from_utf8_lossy(key.as_bytes()),
                siblings,
                limit = self.limits.max_siblings,
                "many siblings: read the key, merge its values and write back with the context"
            );
        }
        // The storage key holds the hash's top 32 bits: all the gate, the
        // partition and the segment need (no second hash per write).
        let hash = trees::hash_of_key(skey).unwrap_or_default();
        let held = Self::index_ops(skey, old, object, &mut extra);
        if forget_marker {
            Self::forget_marker(skey, &mut extra);
        }
        extra.push(WriteOp::Put {
            space: Space::Objects,
            key: skey.to_vec(),
            value: record,
        });
        let _gate = self.trees.gate(hash);
        applied(self.engine.write(extra, durability), || {
            self.trees.update(hash, skey, old, Some(object));
            self.count_tombstones(held, -i64::from(forget_marker));
        })
    }
}

#[cfg(test)]
mod tests;
