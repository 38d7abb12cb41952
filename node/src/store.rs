//! The object store: versioned objects on top of an [`Engine`].
//!
//! It owns three things the engine knows nothing about:
//!
//! - **Layout.** An object lives in [`Space::Objects`] under
//!   `partition (u32 BE) | bucket length (u8) | bucket | key`, so one
//!   partition is one contiguous range for handoff and anti-entropy scans.
//! - **Integrity.** Each record is `format (u8) | xxh3-64 of payload (u64 BE) |
//!   payload (msgpack Object)`. The checksum is verified on every read; a
//!   corrupt record is logged, counted (`quorra_corrupt_objects_total`) and
//!   treated as missing, never returned.
//! - **Identity.** The node's [`Actor`] (node id + random epoch) lives in
//!   [`Space::Meta`]. A new or wiped data dir gets a new epoch; so does a node
//!   that finds a corrupt object, since it can no longer know which of its own
//!   dots it issued for that key (Riak's kv679).
//!
//! Read-modify-write of one key is serialised by a striped lock, so two puts
//! through this node with the same context both survive as siblings.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use quorra_core::hash::{checksum, key_hash, partition_of};
use quorra_core::{Actor, BucketName, ConflictMode, Content, Key, Object, VersionVector};
use thiserror::Error;

use crate::storage::{Durability, Engine, EngineError, Space};

/// The object record format written by this build.
const RECORD_FORMAT_V1: u8 = 1;
/// Bytes before the payload: format + checksum.
const RECORD_HEADER: usize = 1 + 8;
/// Lock stripes for read-modify-write.
const LOCK_STRIPES: usize = 1024;

const META_NODE_ID: &[u8] = b"node_id";
const META_EPOCH: &[u8] = b"actor_epoch";
const META_PARTITIONS: &[u8] = b"partitions";

/// What can go wrong in the store.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The data dir belongs to another node.
    #[error("the data dir belongs to node {found:?}, not {configured:?}; use that node id or another data dir")]
    WrongNode {
        /// The node id stored in the data dir.
        found: String,
        /// The node id in the configuration.
        configured: String,
    },
    /// The partition count differs from the one the data was written with.
    #[error("the data dir was created with {found} partitions, but the configuration says {configured}; the partition count is fixed when a cluster is created")]
    PartitionsChanged {
        /// Stored count.
        found: u32,
        /// Configured count.
        configured: u32,
    },
    /// Stored metadata cannot be read.
    #[error("node metadata {key} is unreadable; the data dir may be damaged")]
    BadMeta {
        /// The metadata key.
        key: &'static str,
    },
    /// The write would leave too many siblings.
    #[error("the object would have {count} siblings; the limit is {limit}: read it, resolve the siblings and write back with the context")]
    TooManySiblings {
        /// Siblings after the write.
        count: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The hint budget is used up.
    #[error("the hint budget of {0} hints is full")]
    HintBudgetFull(u64),
    /// An object could not be encoded.
    #[error("cannot encode object: {0}")]
    Encode(String),
}

/// Why a stored record was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CorruptRecord {
    /// Shorter than its header.
    #[error("record of {0} bytes is shorter than its header")]
    Truncated(usize),
    /// Written by a format this build does not know.
    #[error("unknown record format {0}")]
    UnknownFormat(u8),
    /// The checksum does not match the payload.
    #[error("checksum mismatch: stored {stored:016x}, computed {computed:016x}")]
    Checksum {
        /// Stored checksum.
        stored: u64,
        /// Checksum of the bytes read.
        computed: u64,
    },
    /// The payload does not decode.
    #[error("payload does not decode: {0}")]
    Decode(String),
}

/// Encodes an object as a checksummed record.
pub fn encode_record(object: &Object) -> Result<Vec<u8>, StoreError> {
    let payload = rmp_serde::to_vec(object).map_err(|e| StoreError::Encode(e.to_string()))?;
    let mut out = Vec::with_capacity(RECORD_HEADER + payload.len());
    out.push(RECORD_FORMAT_V1);
    out.extend_from_slice(&checksum(&payload).to_be_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Decodes and verifies a record.
pub fn decode_record(bytes: &[u8]) -> Result<Object, CorruptRecord> {
    if bytes.len() < RECORD_HEADER {
        return Err(CorruptRecord::Truncated(bytes.len()));
    }
    if bytes[0] != RECORD_FORMAT_V1 {
        return Err(CorruptRecord::UnknownFormat(bytes[0]));
    }
    let mut sum = [0u8; 8];
    sum.copy_from_slice(&bytes[1..RECORD_HEADER]);
    let stored = u64::from_be_bytes(sum);
    let payload = &bytes[RECORD_HEADER..];
    let computed = checksum(payload);
    if stored != computed {
        return Err(CorruptRecord::Checksum { stored, computed });
    }
    rmp_serde::from_slice(payload).map_err(|e| CorruptRecord::Decode(e.to_string()))
}

/// Versioned objects over an engine, with the node's actor identity.
pub struct ObjectStore {
    engine: Arc<dyn Engine>,
    node_id: String,
    partitions: u32,
    actor: RwLock<Actor>,
    locks: Vec<Mutex<()>>,
    corruptions: AtomicU64,
    hints_held: AtomicU64,
}

impl std::fmt::Debug for ObjectStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStore")
            .field("node_id", &self.node_id)
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

impl ObjectStore {
    /// Opens the store: checks the data dir belongs to `node_id` and was made
    /// with `partitions`, and loads or creates the actor epoch.
    pub fn open(
        engine: Arc<dyn Engine>,
        node_id: &str,
        partitions: u32,
    ) -> Result<Self, StoreError> {
        let epoch = match (
            engine.get(Space::Meta, META_NODE_ID)?,
            engine.get(Space::Meta, META_EPOCH)?,
        ) {
            (Some(found), Some(epoch)) => {
                let found = String::from_utf8_lossy(&found).into_owned();
                if found != node_id {
                    return Err(StoreError::WrongNode {
                        found,
                        configured: node_id.to_owned(),
                    });
                }
                let stored = engine
                    .get(Space::Meta, META_PARTITIONS)?
                    .and_then(|b| <[u8; 4]>::try_from(b.as_slice()).ok())
                    .map(u32::from_be_bytes)
                    .ok_or(StoreError::BadMeta { key: "partitions" })?;
                if stored != partitions {
                    return Err(StoreError::PartitionsChanged {
                        found: stored,
                        configured: partitions,
                    });
                }
                <[u8; 8]>::try_from(epoch.as_slice())
                    .map(u64::from_be_bytes)
                    .map_err(|_| StoreError::BadMeta { key: "actor_epoch" })?
            }
            // A new data dir, or one whose identity was lost: a new epoch, so
            // no dot issued before can ever be issued again.
            _ => {
                let epoch = fresh_epoch();
                engine.write(
                    vec![
                        meta_put(META_NODE_ID, node_id.as_bytes()),
                        meta_put(META_PARTITIONS, &partitions.to_be_bytes()),
                        meta_put(META_EPOCH, &epoch.to_be_bytes()),
                    ],
                    Durability::Fsync,
                )?;
                tracing::info!(
                    node = node_id,
                    epoch = format!("{epoch:016x}"),
                    "new data dir: new actor epoch"
                );
                epoch
            }
        };
        let store = Self {
            engine,
            node_id: node_id.to_owned(),
            partitions,
            actor: RwLock::new(Actor::new(node_id, epoch)),
            locks: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            corruptions: AtomicU64::new(0),
            hints_held: AtomicU64::new(0),
        };
        let held: u64 = store.hint_counts()?.values().sum();
        store.hints_held.store(held, Ordering::Relaxed);
        Ok(store)
    }

    /// The engine, for raw access by tools and tests.
    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.engine
    }

    /// The actor this node currently coordinates writes as.
    pub fn actor(&self) -> Actor {
        self.actor
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How many corrupt records this store has found since it opened.
    pub fn corruptions(&self) -> u64 {
        self.corruptions.load(Ordering::Relaxed)
    }

    /// The partition count this store was created with.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// The storage key of an object.
    pub fn object_key(&self, bucket: &BucketName, key: &Key) -> Vec<u8> {
        let b = bucket.as_str().as_bytes();
        let partition = partition_of(key_hash(b, key.as_bytes()), self.partitions);
        let mut out = Vec::with_capacity(5 + b.len() + key.as_bytes().len());
        out.extend_from_slice(&partition.to_be_bytes());
        // BucketName guarantees at most 255 bytes.
        out.push(b.len() as u8);
        out.extend_from_slice(b);
        out.extend_from_slice(key.as_bytes());
        out
    }

    /// Reads an object. A corrupt record reads as missing.
    pub fn get(&self, bucket: &BucketName, key: &Key) -> Result<Option<Object>, StoreError> {
        Ok(self.read(bucket, key)?.object())
    }

    /// Applies a client write as coordinator: a new dot from this node's
    /// actor, with `ctx` the context the client read. Returns the new object
    /// (what replicas merge).
    #[allow(clippy::too_many_arguments)]
    pub fn coordinate(
        &self,
        bucket: &BucketName,
        key: &Key,
        ctx: &VersionVector,
        content: Content,
        mode: ConflictMode,
        max_siblings: usize,
        durability: Durability,
    ) -> Result<Object, StoreError> {
        let _guard = self.lock(bucket, key);
        let mut object = match self.read(bucket, key)? {
            Stored::Found(o) => o,
            Stored::Missing => Object::new(),
            Stored::Corrupt => {
                self.rotate_actor()?;
                Object::new()
            }
        };
        object.update(ctx, &self.actor(), content, mode);
        let count = object.siblings().len();
        if count > max_siblings {
            return Err(StoreError::TooManySiblings {
                count,
                limit: max_siblings,
            });
        }
        self.write(bucket, key, &object, durability)?;
        Ok(object)
    }

    /// Deletes as coordinator: a tombstone with `ctx`, or with everything this
    /// node has seen when `ctx` is empty. Returns `None` when there was
    /// nothing to delete and no context was given.
    pub fn coordinate_delete(
        &self,
        bucket: &BucketName,
        key: &Key,
        ctx: &VersionVector,
        content: Content,
        mode: ConflictMode,
        durability: Durability,
    ) -> Result<Option<Object>, StoreError> {
        let _guard = self.lock(bucket, key);
        let (mut object, ctx) = match self.read(bucket, key)? {
            Stored::Found(o) => {
                let seen = if ctx.is_empty() {
                    o.clock().clone()
                } else {
                    ctx.clone()
                };
                (o, seen)
            }
            Stored::Missing if ctx.is_empty() => return Ok(None),
            Stored::Missing => (Object::new(), ctx.clone()),
            Stored::Corrupt => {
                self.rotate_actor()?;
                (Object::new(), ctx.clone())
            }
        };
        object.update(&ctx, &self.actor(), content, mode);
        self.write(bucket, key, &object, durability)?;
        Ok(Some(object))
    }

    /// Merges another replica's state of an object into the local one.
    pub fn merge_replica(
        &self,
        bucket: &BucketName,
        key: &Key,
        incoming: &Object,
        mode: ConflictMode,
        durability: Durability,
    ) -> Result<Object, StoreError> {
        let _guard = self.lock(bucket, key);
        let mut object = self.read(bucket, key)?.object().unwrap_or_default();
        object.merge(incoming, mode);
        self.write(bucket, key, &object, durability)?;
        Ok(object)
    }

    fn lock(&self, bucket: &BucketName, key: &Key) -> MutexGuard<'_, ()> {
        let h = key_hash(bucket.as_str().as_bytes(), key.as_bytes());
        // The lock guards no data of its own, so a poisoned one is still fine.
        self.locks[(h % LOCK_STRIPES as u64) as usize]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn read(&self, bucket: &BucketName, key: &Key) -> Result<Stored, StoreError> {
        let skey = self.object_key(bucket, key);
        let Some(bytes) = self.engine.get(Space::Objects, &skey)? else {
            return Ok(Stored::Missing);
        };
        match decode_record(&bytes) {
            Ok(o) => Ok(Stored::Found(o)),
            Err(why) => {
                self.corruptions.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("quorra_corrupt_objects_total").increment(1);
                tracing::error!(
                    bucket = %bucket,
                    key = %String::from_utf8_lossy(key.as_bytes()),
                    error = %why,
                    "corrupt object: treated as missing"
                );
                Ok(Stored::Corrupt)
            }
        }
    }

    fn write(
        &self,
        bucket: &BucketName,
        key: &Key,
        object: &Object,
        durability: Durability,
    ) -> Result<(), StoreError> {
        let record = encode_record(object)?;
        self.engine.put(
            Space::Objects,
            &self.object_key(bucket, key),
            &record,
            durability,
        )?;
        Ok(())
    }

    /// Takes a new actor epoch, durably, before any dot is issued with it.
    fn rotate_actor(&self) -> Result<(), StoreError> {
        let mut actor = self.actor.write().unwrap_or_else(PoisonError::into_inner);
        let epoch = fresh_epoch();
        self.engine.put(
            Space::Meta,
            META_EPOCH,
            &epoch.to_be_bytes(),
            Durability::Fsync,
        )?;
        tracing::warn!(old = %actor, epoch = format!("{epoch:016x}"), "lost local data: new actor epoch");
        *actor = Actor::new(self.node_id.clone(), epoch);
        Ok(())
    }
}

/// An object held for a primary that could not take it (hinted handoff).
#[derive(Debug, Clone)]
pub struct Hint {
    /// The node the object belongs to.
    pub owner: String,
    /// Bucket.
    pub bucket: BucketName,
    /// Key.
    pub key: Key,
    /// The state to deliver.
    pub object: Object,
    raw: Vec<u8>,
    storage_key: Vec<u8>,
}

impl ObjectStore {
    fn hint_key(owner: &str, object_key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(owner.len() + 1 + object_key.len());
        k.extend_from_slice(owner.as_bytes());
        k.push(0);
        k.extend_from_slice(object_key);
        k
    }

    /// Bucket and key back from an object's storage key.
    fn parse_object_key(skey: &[u8]) -> Option<(BucketName, Key)> {
        let len = *skey.get(4)? as usize;
        let bucket = std::str::from_utf8(skey.get(5..5 + len)?).ok()?;
        let key = skey.get(5 + len..)?.to_vec();
        let any = quorra_core::Limits {
            max_bucket_bytes: quorra_core::bucket::MAX_BUCKET_LEN_HARD,
            max_key_bytes: usize::MAX,
            ..quorra_core::Limits::default()
        };
        Some((
            BucketName::parse(bucket, &any).ok()?,
            Key::parse(key, &any).ok()?,
        ))
    }

    /// Keeps `incoming` for `owner`, merged with what is already held.
    #[allow(clippy::too_many_arguments)]
    pub fn store_hint(
        &self,
        owner: &str,
        bucket: &BucketName,
        key: &Key,
        incoming: &Object,
        mode: ConflictMode,
        durability: Durability,
    ) -> Result<(), StoreError> {
        let _guard = self.lock(bucket, key);
        let hkey = Self::hint_key(owner, &self.object_key(bucket, key));
        let existing = self.engine.get(Space::Hints, &hkey)?;
        let fresh = existing.is_none();
        let mut object = existing
            .and_then(|raw| decode_record(&raw).ok())
            .unwrap_or_default();
        object.merge(incoming, mode);
        self.engine
            .put(Space::Hints, &hkey, &encode_record(&object)?, durability)?;
        if fresh {
            self.hints_held.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// The hint held for `owner` on one key.
    pub fn get_hint(
        &self,
        owner: &str,
        bucket: &BucketName,
        key: &Key,
    ) -> Result<Option<Object>, StoreError> {
        let hkey = Self::hint_key(owner, &self.object_key(bucket, key));
        Ok(self
            .engine
            .get(Space::Hints, &hkey)?
            .and_then(|raw| decode_record(&raw).ok()))
    }

    /// Up to `limit` hints held for `owner`.
    pub fn hints_for(&self, owner: &str, limit: usize) -> Result<Vec<Hint>, StoreError> {
        let prefix = Self::hint_key(owner, b"");
        let mut out = Vec::new();
        self.engine.scan(Space::Hints, &prefix, &mut |k, v| {
            let object_key = &k[prefix.len()..];
            match (Self::parse_object_key(object_key), decode_record(v)) {
                (Some((bucket, key)), Ok(object)) => out.push(Hint {
                    owner: owner.to_owned(),
                    bucket,
                    key,
                    object,
                    raw: v.to_vec(),
                    storage_key: k.to_vec(),
                }),
                _ => {
                    metrics::counter!("quorra_corrupt_hints_total").increment(1);
                    tracing::error!(owner, "corrupt hint skipped");
                }
            }
            out.len() < limit
        })?;
        Ok(out)
    }

    /// Deletes a delivered hint, unless it changed since it was read (then
    /// the newer state is delivered next round). Returns whether it was
    /// deleted.
    pub fn delete_hint(&self, hint: &Hint) -> Result<bool, StoreError> {
        let _guard = self.lock(&hint.bucket, &hint.key);
        match self.engine.get(Space::Hints, &hint.storage_key)? {
            Some(now) if now == hint.raw => {
                self.engine
                    .delete(Space::Hints, &hint.storage_key, Durability::Buffered)?;
                self.hints_held.fetch_sub(1, Ordering::Relaxed);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// How many hints are held in all.
    pub fn hints_held(&self) -> u64 {
        self.hints_held.load(Ordering::Relaxed)
    }

    /// How many hints are held, per owner (a full scan).
    pub fn hint_counts(&self) -> Result<std::collections::BTreeMap<String, u64>, StoreError> {
        let mut counts = std::collections::BTreeMap::new();
        self.engine.scan(Space::Hints, b"", &mut |k, _| {
            let owner = k.split(|&b| b == 0).next().unwrap_or_default();
            *counts
                .entry(String::from_utf8_lossy(owner).into_owned())
                .or_insert(0u64) += 1;
            true
        })?;
        Ok(counts)
    }
}

/// What a read found.
enum Stored {
    Found(Object),
    Missing,
    Corrupt,
}

impl Stored {
    fn object(self) -> Option<Object> {
        match self {
            Self::Found(o) => Some(o),
            Self::Missing | Self::Corrupt => None,
        }
    }
}

fn meta_put(key: &[u8], value: &[u8]) -> crate::storage::WriteOp {
    crate::storage::WriteOp::Put {
        space: Space::Meta,
        key: key.to_vec(),
        value: value.to_vec(),
    }
}

fn fresh_epoch() -> u64 {
    // Never 0, so an epoch is always visibly set.
    rand::random::<u64>() | 1
}

#[cfg(test)]
mod tests;
