//! The object store: versioned objects on top of an [`Engine`].
//!
//! It owns three things the engine knows nothing about:
//!
//! - **Layout.** An object lives in [`Space::Objects`] under
//!   `key hash, top 32 bits (u32 BE) | bucket length (u8) | bucket | key`.
//!   A partition is a range of the hash's top bits, so whatever the
//!   cluster's partition count, one partition is one contiguous range for
//!   transfers and anti-entropy scans, and a node adopts its cluster's
//!   count without rewriting a byte. (Data dirs from before, keyed by
//!   partition number, are rewritten once when opened.)
//! - **Integrity.** Each record is `format (u8) | xxh3-64 of payload (u64 BE) |
//!   payload (msgpack Object)`. The checksum is verified on every read, on
//!   every path (client reads, coordination, replica merges, hints); a
//!   corrupt record is logged, counted (`quorra_corrupt_objects_total`),
//!   moved aside as evidence (`quarantine/` in [`Space::Meta`]) and treated
//!   as missing, never returned.
//! - **Identity.** The node's [`Actor`] (node id + random epoch) lives in
//!   [`Space::Meta`]. A new or wiped data dir gets a new epoch; so does a node
//!   that finds a corrupt object, or meets evidence that it lost its own
//!   writes (a context or replica state naming its actor with a counter above
//!   what it holds for the key), since it can no longer know which of its own
//!   dots it issued for that key (Riak's kv679).
//! - **Dots never repeat.** A clean stop leaves a marker (fsynced after the
//!   final sync); a start that finds none (a crash, a power loss) takes a new
//!   epoch before it issues a dot. Writes not yet synced at a crash may be
//!   gone from this node while other replicas hold them, so the old actor's
//!   next counters may already be taken: the new actor cannot collide, even
//!   on a key whose last writes were lost with no context to tell. (A
//!   counter jump within the old actor would not do: a clock entry covers
//!   every counter below it.)
//! - **Size.** A write or merge that would make an object larger than the
//!   object limit is refused (`object_too_large`), so every stored object
//!   fits a peer frame.
//!
//! Read-modify-write of one key is serialised by a striped lock, so two puts
//! through this node with the same context both survive as siblings.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use quorra_core::crdt::{self, Datatype, SetUpdate, SplitHeader};
use quorra_core::hash::{checksum, key_hash, partition_of};
use quorra_core::layout::Scope;
use quorra_core::node::Hint;
use quorra_core::proto::{Chunk, Pulled};
use quorra_core::write::{apply_client_write, merge_replica, Change, Merged, Refused};
use quorra_core::{Actor, BucketName, ConflictMode, Key, Limits, Object, VersionVector};
use thiserror::Error;

use crate::storage::{Durability, Engine, EngineError, Space, WriteOp};

/// The object record format written by this build.
const RECORD_FORMAT_V1: u8 = 1;
/// Bytes before the payload: format + checksum.
const RECORD_HEADER: usize = 1 + 8;
/// Lock stripes for read-modify-write.
const LOCK_STRIPES: usize = 1024;

const META_NODE_ID: &[u8] = b"node_id";
const META_EPOCH: &[u8] = b"actor_epoch";
/// The object key format: absent in data dirs keyed by partition number.
const META_KEY_FORMAT: &[u8] = b"object_key_format";
const KEY_FORMAT_HASH_PREFIX: u8 = 2;
/// The partition count the first format kept (removed by the rewrite).
const META_PARTITIONS_V1: &[u8] = b"partitions";
const META_CLEAN_STOP: &[u8] = b"clean_stop";
const META_CONTEXT_SECRET: &[u8] = b"context_secret";
const QUARANTINE_PREFIX: &[u8] = b"quarantine/";

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
    /// Stored metadata cannot be read.
    #[error("node metadata {key} is unreadable; the data dir may be damaged")]
    BadMeta {
        /// The metadata key.
        key: &'static str,
    },
    /// The write or merge was refused by the rules of the replica (too
    /// many siblings, a context too large, a counter at its end).
    #[error(transparent)]
    Refused(#[from] Refused),
    /// The object would be larger than the object limit.
    #[error("the object would be {size} bytes with all its siblings; the limit is {limit}: resolve the siblings or write a smaller value")]
    ObjectTooLarge {
        /// Encoded size after the write or merge.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The hint budget is used up.
    #[error("the hint budget is full ({hints} hints, {bytes} bytes held)")]
    HintBudgetFull {
        /// Hints held.
        hints: u64,
        /// Bytes held.
        bytes: u64,
    },
    /// An object could not be encoded.
    #[error("cannot encode object: {0}")]
    Encode(String),
}

impl StoreError {
    /// The stable code a client sees.
    pub fn code(&self) -> quorra_core::ErrorCode {
        match self {
            Self::Refused(r) => r.code(),
            Self::ObjectTooLarge { .. } => quorra_core::ErrorCode::ObjectTooLarge,
            _ => quorra_core::ErrorCode::StorageError,
        }
    }
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

/// The outcome of an engine write, after `bookkeeping` ran for it if the
/// write was applied: when it succeeded, and when only its sync failed
/// ([`EngineError::Unsynced`]: readers see the write, so the in-memory
/// state that mirrors the engine must count it too).
fn applied(result: Result<(), EngineError>, bookkeeping: impl FnOnce()) -> Result<(), StoreError> {
    if matches!(result, Ok(()) | Err(EngineError::Unsynced(_))) {
        bookkeeping();
    }
    Ok(result?)
}

/// Encodes an object as a checksummed record.
pub fn encode_record(object: &Object) -> Result<Vec<u8>, StoreError> {
    let payload = rmp_serde::to_vec(object).map_err(|e| StoreError::Encode(e.to_string()))?;
    Ok(framed(RECORD_FORMAT_V1, &payload))
}

/// Decodes and verifies a record.
pub fn decode_record(bytes: &[u8]) -> Result<Object, CorruptRecord> {
    let payload = unframed(bytes, RECORD_FORMAT_V1)?;
    rmp_serde::from_slice(payload).map_err(|e| CorruptRecord::Decode(e.to_string()))
}

/// `format (u8) | xxh3-64 of payload (u64 BE) | payload`: how every
/// record the store writes is framed.
fn framed(format: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(RECORD_HEADER + payload.len());
    out.push(format);
    out.extend_from_slice(&checksum(payload).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The payload of a record framed as `format`, its checksum verified.
fn unframed(bytes: &[u8], format: u8) -> Result<&[u8], CorruptRecord> {
    if bytes.len() < RECORD_HEADER {
        return Err(CorruptRecord::Truncated(bytes.len()));
    }
    if bytes[0] != format {
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
    Ok(payload)
}

/// Versioned objects over an engine, with the node's actor identity.
pub struct ObjectStore {
    engine: Arc<dyn Engine>,
    node_id: String,
    actor: RwLock<Actor>,
    locks: Vec<Mutex<()>>,
    corruptions: AtomicU64,
    hints_held: AtomicU64,
    hint_bytes: AtomicU64,
    /// Held while a hint is checked against the budget and stored, so racing
    /// writers of different keys cannot overshoot it together.
    hint_budget: Mutex<()>,
    limits: Limits,
    /// Anti-entropy's hash trees, kept in step with every write.
    trees: trees::Trees,
    scrub: scrub::ScrubCounters,
    tombstones: tombstones::TombstoneCounters,
}

impl std::fmt::Debug for ObjectStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStore")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl ObjectStore {
    /// Opens the store: checks the data dir belongs to `node_id`, brings
    /// its keys to this build's format, and loads or creates the actor
    /// epoch.
    pub fn open(engine: Arc<dyn Engine>, node_id: &str) -> Result<Self, StoreError> {
        let mut fresh = false;
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
                match engine.get(Space::Meta, META_KEY_FORMAT)?.as_deref() {
                    Some([KEY_FORMAT_HASH_PREFIX]) => {}
                    None => rekey_by_hash(engine.as_ref(), node_id)?,
                    Some(_) => {
                        return Err(StoreError::BadMeta {
                            key: "object_key_format",
                        })
                    }
                }
                <[u8; 8]>::try_from(epoch.as_slice())
                    .map(u64::from_be_bytes)
                    .map_err(|_| StoreError::BadMeta { key: "actor_epoch" })?
            }
            // A new data dir, or one whose identity was lost: a new epoch, so
            // no dot issued before can ever be issued again.
            _ => {
                if engine.get(Space::Meta, META_KEY_FORMAT)?.is_none() {
                    // Objects may outlive the identity: in the first
                    // format, rewrite them (nothing to do when empty).
                    rekey_by_hash(engine.as_ref(), node_id)?;
                }
                let epoch = fresh_epoch();
                engine.write(
                    vec![
                        meta_put(META_NODE_ID, node_id.as_bytes()),
                        meta_put(META_KEY_FORMAT, &[KEY_FORMAT_HASH_PREFIX]),
                        meta_put(META_EPOCH, &epoch.to_be_bytes()),
                    ],
                    Durability::Fsync,
                )?;
                tracing::info!(
                    node = node_id,
                    epoch = format!("{epoch:016x}"),
                    "new data dir: new actor epoch"
                );
                fresh = true;
                epoch
            }
        };
        let clean = engine.get(Space::Meta, META_CLEAN_STOP)?.is_some();
        let store = Self {
            engine,
            node_id: node_id.to_owned(),
            actor: RwLock::new(Actor::new(node_id, epoch)),
            locks: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            corruptions: AtomicU64::new(0),
            hints_held: AtomicU64::new(0),
            hint_bytes: AtomicU64::new(0),
            hint_budget: Mutex::new(()),
            limits: Limits::default(),
            trees: trees::Trees::default(),
            scrub: scrub::ScrubCounters::default(),
            tombstones: tombstones::TombstoneCounters::default(),
        };
        store.load_trees(clean)?;
        store.open_tombstones()?;
        if clean {
            // Running from here on: the next stop must leave it anew.
            store
                .engine
                .delete(Space::Meta, META_CLEAN_STOP, Durability::Fsync)?;
        } else if !fresh {
            store.rotate_actor(
                "the last run did not stop cleanly (writes not yet synced may be lost)",
            )?;
        }
        let (held, bytes) = store
            .hint_counts()?
            .values()
            .fold((0, 0), |(h, b), (h2, b2)| (h + h2, b + b2));
        store.hints_held.store(held, Ordering::Relaxed);
        store.hint_bytes.store(bytes, Ordering::Relaxed);
        Ok(store)
    }

    /// The same store, holding objects to `limits` (sibling count, object
    /// size, context size).
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The limits objects are held to.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The engine, for raw access by tools and tests.
    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.engine
    }

    /// The secret a node running alone authenticates contexts with: made
    /// once, kept in the data dir.
    pub fn local_secret(&self) -> Result<Vec<u8>, StoreError> {
        if let Some(s) = self.engine.get(Space::Meta, META_CONTEXT_SECRET)? {
            return Ok(s);
        }
        let secret: [u8; quorra_core::context::SECRET_LEN] = rand::random();
        self.engine
            .put(Space::Meta, META_CONTEXT_SECRET, &secret, Durability::Fsync)?;
        Ok(secret.to_vec())
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

    /// The storage key of an object.
    pub fn object_key(&self, bucket: &BucketName, key: &Key) -> Vec<u8> {
        object_key(bucket.as_str().as_bytes(), key.as_bytes())
    }

    /// Reads an object. A corrupt record reads as missing.
    pub fn get(&self, bucket: &BucketName, key: &Key) -> Result<Option<Object>, StoreError> {
        // Under the key's lock: a corrupt record found here is moved aside,
        // which must not race a write of the same key.
        let _guard = self.lock(bucket, key);
        Ok(self.read(bucket, key)?.object())
    }

    /// Applies a client write (a value, a tombstone for a delete, or a
    /// data-type operation) as coordinator: a new dot from this node's
    /// actor, with `ctx` the context the client read. Returns the new
    /// object (what replicas merge).
    pub fn coordinate(
        &self,
        bucket: &BucketName,
        key: &Key,
        ctx: &VersionVector,
        change: impl Into<Change>,
        mode: ConflictMode,
        durability: Durability,
    ) -> Result<Object, StoreError> {
        let _guard = self.lock(bucket, key);
        let change = change.into();
        if let Change::Crdt {
            op,
            datatype: Datatype::Set,
            context: seen,
            ..
        } = &change
        {
            if let Some(update) = self.coordinate_set(bucket, key, op, seen, durability)? {
                return Ok(update);
            }
        }
        let stored = self.read(bucket, key)?.object();
        // A reaped key's write starts from its tombstone: the clock it
        // makes covers every value the delete removed.
        let marker = self.marker_if_missing(bucket, key, stored.as_ref())?;
        let base = stored.as_ref().or(marker.as_ref());
        let object = loop {
            match apply_client_write(base, ctx, &self.actor(), change.clone(), mode, &self.limits) {
                Ok(object) => break object,
                // A context that saw more of this node's writes than it
                // holds means it lost them (unsynced writes, a restored
                // backup): new epoch.
                Err(Refused::StaleActor(_)) => self
                    .rotate_actor("a context names writes of this node that it no longer holds")?,
                Err(e) => return Err(e.into()),
            }
        };
        self.write(
            bucket,
            key,
            stored.as_ref(),
            &object,
            marker.is_some(),
            durability,
        )?;
        Ok(object)
    }

    /// The marker of a reaped key that holds nothing now.
    fn marker_if_missing(
        &self,
        bucket: &BucketName,
        key: &Key,
        stored: Option<&Object>,
    ) -> Result<Option<Object>, StoreError> {
        // No lookup on an insert while no key was reaped: the count is
        // changed under the key's lock, which the caller holds.
        if stored.is_some() || self.tombstone_counts().markers == 0 {
            return Ok(None);
        }
        self.marker(&self.object_key(bucket, key))
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
        if let Some(update) = SetUpdate::of_object(incoming) {
            if let Some(stored) = self.merge_set_update(bucket, key, &update, durability)? {
                return Ok(stored);
            }
        }
        let stored = self.read(bucket, key)?.object();
        // Over a reaped key: what its tombstone had deleted stays deleted.
        let marker = self.marker_if_missing(bucket, key, stored.as_ref())?;
        if let Some(m) = &marker {
            self.check_resurrection(bucket, key, m, incoming);
        }
        let base = stored.as_ref().or(marker.as_ref());
        let Merged { object, collisions } = loop {
            match merge_replica(base, incoming, &self.actor(), mode) {
                Ok(merged) => break merged,
                Err(Refused::StaleActor(_)) => self.rotate_actor(
                    "another replica holds writes of this node that it no longer holds",
                )?,
                Err(e) => return Err(e.into()),
            }
        };
        // Nothing new (anti-entropy and read repair often send what is
        // held): no write, which for a split set would read every element.
        if marker.is_none() && stored.as_ref() == Some(&object) {
            if durability == Durability::Fsync {
                // What the caller counts on being durable may be held but
                // not yet synced.
                self.engine.sync()?;
            }
            return Ok(object);
        }
        if collisions > 0 {
            metrics::counter!(crate::metric_names::DOT_COLLISIONS).increment(collisions as u64);
            tracing::error!(
                bucket = %bucket,
                key = %String::from_utf8_lossy(key.as_bytes()),
                collisions,
                "a merge met one dot with two contents: both kept"
            );
        }
        self.write(
            bucket,
            key,
            stored.as_ref(),
            &object,
            marker.is_some(),
            durability,
        )?;
        Ok(object)
    }

    /// Makes every write durable and leaves the clean-stop marker: the
    /// next start keeps this actor. Call it last, when nothing else writes.
    pub fn close(&self) -> Result<(), StoreError> {
        self.engine.sync()?;
        // The trees go with the marker: the next start loads them only
        // when it finds both. Every gate is held, so no write is half
        // done (in the engine, not yet in its tree).
        let _gates = self.close_all_gates();
        let mut ops = self.saved_trees();
        ops.push(meta_put(META_CLEAN_STOP, b"1"));
        self.engine.write(ops, Durability::Fsync)?;
        Ok(())
    }

    fn lock(&self, bucket: &BucketName, key: &Key) -> MutexGuard<'_, ()> {
        let h = key_hash(bucket.as_str().as_bytes(), key.as_bytes());
        // The lock guards no data of its own, so a poisoned one is still fine.
        self.locks[(h % LOCK_STRIPES as u64) as usize]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn read(&self, bucket: &BucketName, key: &Key) -> Result<Stored, StoreError> {
        Ok(match self.read_held(bucket, key)? {
            Held::Missing => Stored::Missing,
            Held::Corrupt => Stored::Corrupt,
            Held::Whole(o) => Stored::Found(o),
            Held::Split(header, split) => {
                let skey = self.object_key(bucket, key);
                match self.assemble(&skey, split)? {
                    Ok(o) => Stored::Found(o),
                    Err(why) => {
                        self.quarantine(bucket, key, &skey, encode_record(&header)?, &why)?;
                        Stored::Corrupt
                    }
                }
            }
        })
    }

    /// The key's record as stored: a split set's header is not read whole.
    fn read_held(&self, bucket: &BucketName, key: &Key) -> Result<Held, StoreError> {
        let skey = self.object_key(bucket, key);
        let Some(bytes) = self.engine.get(Space::Objects, &skey)? else {
            return Ok(Held::Missing);
        };
        let why = match decode_record(&bytes) {
            Ok(o) => match SplitHeader::of_object(&o) {
                None => return Ok(Held::Whole(o)),
                Some(Ok(split)) => return Ok(Held::Split(o, split)),
                Some(Err(e)) => CorruptRecord::Decode(e.to_string()),
            },
            Err(why) => why,
        };
        self.quarantine(bucket, key, &skey, bytes, &why)?;
        Ok(Held::Corrupt)
    }

    /// A corrupt record (`evidence`, the bytes found) of the key `skey`:
    /// logged, counted, kept aside as evidence, and the key's records
    /// (its set elements too) deleted, out of the way of the next write;
    /// and this node stops issuing dots from the actor that may have
    /// written them.
    fn quarantine(
        &self,
        bucket: &BucketName,
        key: &Key,
        skey: &[u8],
        evidence: Vec<u8>,
        why: &CorruptRecord,
    ) -> Result<(), StoreError> {
        self.corruptions.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(crate::metric_names::CORRUPT_OBJECTS).increment(1);
        tracing::error!(
            bucket = %bucket,
            key = %String::from_utf8_lossy(key.as_bytes()),
            error = %why,
            "corrupt object: kept aside as evidence, treated as missing"
        );
        let mut aside = QUARANTINE_PREFIX.to_vec();
        aside.extend_from_slice(skey);
        let hash = trees::hash_of_key(skey).unwrap_or_default();
        let _gate = self.trees.gate(hash);
        let mut ops = vec![
            WriteOp::Put {
                space: Space::Meta,
                key: aside,
                value: evidence,
            },
            WriteOp::Delete {
                space: Space::Objects,
                key: skey.to_vec(),
            },
        ];
        self.element_deletes(skey, &mut ops)?;
        let indexed = self.unindex(skey, &mut ops)?;
        let mut set_aside = false;
        let moved = applied(self.engine.write(ops, Durability::Fsync), || {
            self.count_tombstones(-i64::from(indexed), 0);
            // Its digest at write time is unreadable: the partition's
            // tree is built anew at its next exchange.
            self.trees.invalidate(hash);
            set_aside = true;
        });
        drop(_gate);
        if set_aside {
            // Durably or not, the record is gone: its dots must not be
            // issued again.
            self.rotate_actor("a record of this node was corrupt")?;
        }
        moved
    }

    /// Writes `object` over `old` (what the key held; `forget_marker`:
    /// over a reaped key's marker), and updates the partition's tree and
    /// the tombstone index with the change.
    fn write(
        &self,
        bucket: &BucketName,
        key: &Key,
        old: Option<&Object>,
        object: &Object,
        forget_marker: bool,
        durability: Durability,
    ) -> Result<(), StoreError> {
        // A set (its states and updates joined) is kept split.
        if let Some(set) = crdt::joined_set_state(object) {
            self.write_whole_set(bucket, key, old, &set, forget_marker, durability)?;
            return Ok(());
        }
        let skey = self.object_key(bucket, key);
        let mut ops = Vec::new();
        // (Checked by content type, not by decoding the old set whole.)
        let was_crdt = |o: &Object| {
            o.siblings()
                .iter()
                .any(|s| s.content.content_type == crdt::CONTENT_TYPE)
        };
        if old.is_some_and(was_crdt) {
            // A split set replaced by something else: its elements go.
            self.element_deletes(&skey, &mut ops)?;
        }
        self.put_record(
            &skey,
            bucket,
            key,
            old,
            object,
            forget_marker,
            ops,
            durability,
        )
    }

    /// Takes a new actor epoch, durably, before any dot is issued with it.
    fn rotate_actor(&self, why: &str) -> Result<(), StoreError> {
        let mut actor = self.actor.write().unwrap_or_else(PoisonError::into_inner);
        let epoch = fresh_epoch();
        self.engine.put(
            Space::Meta,
            META_EPOCH,
            &epoch.to_be_bytes(),
            Durability::Fsync,
        )?;
        metrics::counter!(crate::metric_names::ACTOR_EPOCHS).increment(1);
        tracing::warn!(old = %actor, epoch = format!("{epoch:016x}"), "{why}: new actor epoch");
        *actor = Actor::new(self.node_id.clone(), epoch);
        Ok(())
    }
}

/// How much a node may hold for others: hints past any of these are
/// dropped (and counted), never a reason to refuse a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HintBudget {
    /// Most hints.
    pub max_hints: u64,
    /// Most bytes of hints.
    pub max_bytes: u64,
}

/// Bytes before a hint's record: when it was first taken.
const HINT_HEADER: usize = 8;

fn encode_hint(created_ms: u64, object: &Object) -> Result<Vec<u8>, StoreError> {
    let mut out = created_ms.to_be_bytes().to_vec();
    out.extend(encode_record(object)?);
    Ok(out)
}

fn decode_hint(raw: &[u8]) -> Option<(u64, Object)> {
    let created = u64::from_be_bytes(raw.get(..HINT_HEADER)?.try_into().ok()?);
    Some((created, decode_record(&raw[HINT_HEADER..]).ok()?))
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
        let any = Limits::hard();
        Some((
            BucketName::parse(bucket, &any).ok()?,
            Key::parse(key, &any).ok()?,
        ))
    }

    /// Keeps `incoming` for `owner`, merged with what is already held. The
    /// budget is checked and reserved under one lock, so racing writers cannot
    /// overshoot it; past it the hint is refused with `HintBudgetFull`.
    #[allow(clippy::too_many_arguments)]
    pub fn store_hint(
        &self,
        owner: &str,
        bucket: &BucketName,
        key: &Key,
        incoming: &Object,
        mode: ConflictMode,
        durability: Durability,
        budget: HintBudget,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let _guard = self.lock(bucket, key);
        let hkey = Self::hint_key(owner, &self.object_key(bucket, key));
        let existing = self.engine.get(Space::Hints, &hkey)?;
        let old_len = existing.as_ref().map_or(0, Vec::len) as u64;
        let (created, mut object) = existing
            .as_deref()
            .and_then(decode_hint)
            .unwrap_or((now_ms, Object::new()));
        object.merge(incoming, mode);
        // A set's updates held for a peer are joined into one state, so
        // a long outage leaves one sibling, not one per update.
        if let Some(joined) = crdt::joined_set(&object) {
            object = joined;
        }
        let raw = encode_hint(created, &object)?;
        let size = raw.len() - HINT_HEADER - RECORD_HEADER;
        if size > self.limits.object_limit() {
            return Err(StoreError::ObjectTooLarge {
                size,
                limit: self.limits.object_limit(),
            });
        }
        let _budget = self
            .hint_budget
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let held = self.hints_held.load(Ordering::Relaxed);
        let bytes = self.hint_bytes.load(Ordering::Relaxed);
        let new_bytes = bytes
            .saturating_sub(old_len)
            .saturating_add(raw.len() as u64);
        if (existing.is_none() && held >= budget.max_hints) || new_bytes > budget.max_bytes {
            return Err(StoreError::HintBudgetFull { hints: held, bytes });
        }
        applied(
            self.engine.put(Space::Hints, &hkey, &raw, durability),
            || {
                if existing.is_none() {
                    self.hints_held.fetch_add(1, Ordering::Relaxed);
                }
                // Deltas, not a store: writers of other keys update it
                // concurrently.
                self.hint_bytes
                    .fetch_add(raw.len() as u64, Ordering::Relaxed);
                let _ = self
                    .hint_bytes
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                        Some(b.saturating_sub(old_len))
                    });
            },
        )
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
            .and_then(|raw| decode_hint(&raw))
            .map(|(_, o)| o))
    }

    /// About `max_bytes` of partition `partition`'s objects after the
    /// storage key `after` (at least one, when there is one), and where to
    /// go on from (`None`: the partition ends). Corrupt records are
    /// skipped (counted and logged by the read path elsewhere).
    pub fn scan_partition(
        &self,
        partition: u32,
        partitions: u32,
        after: Option<&[u8]>,
        max_bytes: usize,
    ) -> Result<Chunk, StoreError> {
        // Just past the cursor (the smallest key above it).
        let start = after.map(|a| [a, &[0]].concat()).unwrap_or_default();
        let mut objects = Vec::new();
        let mut bytes = 0usize;
        let mut last: Option<Vec<u8>> = None;
        let mut more = false;
        self.each_in_partition(partition, partitions, &start, &mut |k, v| {
            if bytes >= max_bytes && last.is_some() {
                more = true;
                return false;
            }
            last = Some(k.to_vec());
            bytes += k.len() + v.len();
            if let (Some((bucket, key)), Ok(object)) = (Self::parse_object_key(k), decode_record(v))
            {
                // A split set goes whole: its elements count too.
                let split = SplitHeader::of_object(&object);
                if let Some(Ok(s)) = &split {
                    bytes += usize::try_from(s.bytes).unwrap_or(usize::MAX);
                }
                objects.push((
                    split.is_some(),
                    Pulled {
                        bucket,
                        key,
                        object,
                    },
                ));
            }
            true
        })?;
        // Split sets are read whole after the scan, each under its key's
        // lock (the header and the elements of one state).
        let mut objects_whole = Vec::with_capacity(objects.len());
        for (split, mut pulled) in objects {
            if split {
                match self.get(&pulled.bucket, &pulled.key)? {
                    Some(whole) => pulled.object = whole,
                    // Gone since, or corrupt (moved aside).
                    None => continue,
                }
            }
            objects_whole.push(pulled);
        }
        let objects = objects_whole;
        Ok(Chunk {
            objects,
            next: last.filter(|_| more).map(quorra_core::proto::ByteBuf::from),
        })
    }

    /// Calls `f` with each record of `partition` (of `partitions`) from
    /// the storage key `from` on (the partition's first key at the
    /// earliest), in storage order, until `f` returns false. A key too
    /// short to name a partition is not an object's: skipped, never the
    /// end of the scan.
    fn each_in_partition(
        &self,
        partition: u32,
        partitions: u32,
        from: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        let first = partition_start(partition, partitions);
        let start = if from > first.as_slice() {
            from.to_vec()
        } else {
            first.to_vec()
        };
        self.engine.scan_from(
            Space::Objects,
            b"",
            &start,
            &mut |k, v| match partition_of_key(k, partitions) {
                Some(p) if p == partition => f(k, v),
                None => true,
                Some(_) => false,
            },
        )?;
        Ok(())
    }

    /// Merges copied objects, each as a replica's (then one sync when
    /// `durability` asks for it).
    pub fn merge_all(
        &self,
        objects: &[(quorra_core::proto::Pulled, ConflictMode)],
        durability: Durability,
    ) -> Result<(), StoreError> {
        for (o, mode) in objects {
            self.merge_replica(&o.bucket, &o.key, &o.object, *mode, Durability::Buffered)?;
        }
        if durability == Durability::Fsync {
            self.engine.sync()?;
        }
        Ok(())
    }

    /// Deletes every object of `dropped` (given away to other nodes), of
    /// the `partitions` the cluster has.
    pub fn drop_partitions(
        &self,
        dropped: &[(u32, Scope)],
        partitions: u32,
    ) -> Result<u64, StoreError> {
        let mut count = 0;
        for (p, scope) in dropped {
            let p = *p;
            let mut keys = Vec::new();
            self.each_in_partition(p, partitions, b"", &mut |k, _| {
                if bucket_of_key(k).is_some_and(|b| scope.covers(b)) {
                    keys.push(k.to_vec());
                }
                true
            })?;
            if !keys.is_empty() && count == 0 {
                // This node may coordinate these keys again (the partition
                // comes back): its next dots must not repeat the ones the
                // replicas hold.
                self.rotate_actor("dropping partitions it no longer replicates")?;
            }
            // Each key goes with its set elements (if it is a split set,
            // or became one since the scan, or its record is unreadable),
            // one key at a time under its lock: never elements without a
            // header.
            for k in &keys {
                count += u64::from(self.drop_key(k)?);
            }
        }
        for (p, scope) in dropped {
            let covers = |skey: &[u8]| bucket_of_key(skey).is_some_and(|b| scope.covers(b));
            self.drop_tombstones(*p, partitions, &covers)?;
        }
        self.recount_tombstones()?;
        let dropped: Vec<u32> = dropped.iter().map(|(p, _)| *p).collect();
        self.trees.invalidate_partitions(partitions, &dropped);
        Ok(count)
    }

    /// Keys and bytes this node holds per partition (a full scan of the
    /// objects: for plans, not for the request path).
    pub fn partition_usage(
        &self,
        partitions: u32,
    ) -> Result<std::collections::BTreeMap<u32, (u64, u64)>, StoreError> {
        let mut out: std::collections::BTreeMap<u32, (u64, u64)> = Default::default();
        self.engine.scan(Space::Objects, b"", &mut |k, v| {
            if let Some(p) = partition_of_key(k, partitions) {
                let entry = out.entry(p).or_default();
                entry.0 += 1;
                entry.1 += (k.len() + v.len()) as u64;
            }
            true
        })?;
        // Split sets' elements count as bytes of their keys.
        self.engine.scan(Space::Elements, b"", &mut |k, v| {
            if let Some(p) = partition_of_key(k, partitions) {
                out.entry(p).or_default().1 += (k.len() + v.len()) as u64;
            }
            true
        })?;
        Ok(out)
    }

    /// Up to `limit` hints held for `owner`, in storage order.
    pub fn hints_for(&self, owner: &str, limit: usize) -> Result<Vec<Hint>, StoreError> {
        let prefix = Self::hint_key(owner, b"");
        let mut out = Vec::new();
        self.engine.scan(Space::Hints, &prefix, &mut |k, v| {
            let object_key = &k[prefix.len()..];
            match (Self::parse_object_key(object_key), decode_hint(v)) {
                (Some((bucket, key)), Some((created_ms, object))) => out.push(Hint {
                    owner: owner.to_owned(),
                    bucket,
                    key,
                    object,
                    created_ms,
                }),
                _ => {
                    metrics::counter!(crate::metric_names::CORRUPT_HINTS).increment(1);
                    tracing::error!(owner, "corrupt hint skipped");
                }
            }
            out.len() < limit
        })?;
        Ok(out)
    }

    /// Hands `hint` (held for a member that holds no data any more) to its
    /// key's current replicas: a hint for each of `owners`, a merge into
    /// this node's copy when `local`, all made durable (one fsync) before
    /// the old hint is deleted, unless it changed meanwhile (then it is
    /// handed over again next round). Returns whether it was deleted.
    ///
    /// Not held to the hint budget: it replaces a hint the budget already
    /// counts, and a node full of hints for a dead peer must still be able
    /// to hand them on.
    pub fn rehome_hint(
        &self,
        hint: &Hint,
        owners: &[String],
        local: bool,
        mode: ConflictMode,
    ) -> Result<bool, StoreError> {
        let budget = HintBudget {
            max_hints: u64::MAX,
            max_bytes: u64::MAX,
        };
        for owner in owners {
            self.store_hint(
                owner,
                &hint.bucket,
                &hint.key,
                &hint.object,
                mode,
                Durability::Buffered,
                budget,
                hint.created_ms,
            )?;
        }
        if local {
            self.merge_replica(
                &hint.bucket,
                &hint.key,
                &hint.object,
                mode,
                Durability::Buffered,
            )?;
        }
        self.engine.sync()?;
        self.delete_hint(hint)
    }

    /// Deletes a delivered (or expired) hint, unless it changed since it
    /// was read (then the newer state is delivered next round). Returns
    /// whether it was deleted.
    pub fn delete_hint(&self, hint: &Hint) -> Result<bool, StoreError> {
        let _guard = self.lock(&hint.bucket, &hint.key);
        let hkey = Self::hint_key(&hint.owner, &self.object_key(&hint.bucket, &hint.key));
        let Some(raw) = self.engine.get(Space::Hints, &hkey)? else {
            return Ok(false);
        };
        // Compared as values, not bytes: the same hint reads back equal
        // whatever the encoder does.
        if decode_hint(&raw) != Some((hint.created_ms, hint.object.clone())) {
            return Ok(false);
        }
        self.engine
            .delete(Space::Hints, &hkey, Durability::Buffered)?;
        self.hints_held.fetch_sub(1, Ordering::Relaxed);
        let _ = self
            .hint_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(raw.len() as u64))
            });
        Ok(true)
    }

    /// How many hints are held in all.
    pub fn hints_held(&self) -> u64 {
        self.hints_held.load(Ordering::Relaxed)
    }

    /// How many bytes of hints are held in all.
    pub fn hint_bytes(&self) -> u64 {
        self.hint_bytes.load(Ordering::Relaxed)
    }

    /// How many hints and bytes are held, per owner (a full scan).
    pub fn hint_counts(
        &self,
    ) -> Result<std::collections::BTreeMap<String, (u64, u64)>, StoreError> {
        let mut counts = std::collections::BTreeMap::new();
        self.engine.scan(Space::Hints, b"", &mut |k, v| {
            let owner = k.split(|&b| b == 0).next().unwrap_or_default();
            let e: &mut (u64, u64) = counts
                .entry(String::from_utf8_lossy(owner).into_owned())
                .or_insert((0, 0));
            e.0 += 1;
            e.1 += v.len() as u64;
            true
        })?;
        Ok(counts)
    }
}

/// The storage key of `bucket`/`key` in [`Space::Objects`] (for tools and
/// tests that reach the engine's raw API).
pub fn storage_key(bucket: &BucketName, key: &Key) -> Vec<u8> {
    object_key(bucket.as_str().as_bytes(), key.as_bytes())
}

/// The storage key of `bucket`/`key`: the top 32 bits of its hash, then
/// the bucket (with its length) and the key.
fn object_key(bucket: &[u8], key: &[u8]) -> Vec<u8> {
    let prefix = (key_hash(bucket, key) >> 32) as u32;
    let mut out = Vec::with_capacity(5 + bucket.len() + key.len());
    out.extend_from_slice(&prefix.to_be_bytes());
    // BucketName guarantees at most 255 bytes.
    out.push(bucket.len() as u8);
    out.extend_from_slice(bucket);
    out.extend_from_slice(key);
    out
}

/// The bucket a storage key belongs to (`None`: not a key of this format).
fn bucket_of_key(skey: &[u8]) -> Option<&str> {
    let len = usize::from(*skey.get(4)?);
    std::str::from_utf8(skey.get(5..5 + len)?).ok()
}

/// The partition (of `partitions`) a storage key belongs to.
fn partition_of_key(skey: &[u8], partitions: u32) -> Option<u32> {
    let prefix = u32::from_be_bytes(skey.get(..4)?.try_into().ok()?);
    Some(partition_of(u64::from(prefix) << 32, partitions))
}

/// The first storage key of `partition` (of `partitions`, a power of two):
/// its hash range starts with the partition number in the top bits.
fn partition_start(partition: u32, partitions: u32) -> [u8; 4] {
    let bits = partitions.trailing_zeros();
    let start = if bits == 0 {
        0
    } else {
        u64::from(partition) << (32 - bits)
    };
    u32::try_from(start).unwrap_or(u32::MAX).to_be_bytes()
}

/// Rewrites a data dir keyed by partition number (the first format) to
/// hash-prefixed keys, objects and hints alike, in batches that each put
/// the new keys and delete the old ones atomically: a crash in between
/// leaves keys of both formats, and the next open goes on (a key already
/// in the new format is left as it is). The format marker is written last.
fn rekey_by_hash(engine: &dyn Engine, node_id: &str) -> Result<(), StoreError> {
    const BATCH: usize = 1024;
    let mut moved = 0u64;
    for space in [Space::Objects, Space::Hints] {
        let mut cursor: Vec<u8> = Vec::new();
        loop {
            let mut ops = Vec::new();
            let mut last = None;
            engine.scan_from(space, b"", &cursor, &mut |k, v| {
                last = Some(k.to_vec());
                // A hint's key is its owner, a 0 byte, then the object key.
                let at = match space {
                    Space::Hints => match k.iter().position(|&b| b == 0) {
                        Some(i) => i + 1,
                        None => return true,
                    },
                    _ => 0,
                };
                let old = &k[at..];
                let Some(len) = old.get(4).map(|&l| usize::from(l)) else {
                    return true;
                };
                let (Some(bucket), Some(key)) = (old.get(5..5 + len), old.get(5 + len..)) else {
                    return true;
                };
                let new = [&k[..at], &object_key(bucket, key)].concat();
                if new != k {
                    ops.push(WriteOp::Put {
                        space,
                        key: new,
                        value: v.to_vec(),
                    });
                    ops.push(WriteOp::Delete {
                        space,
                        key: k.to_vec(),
                    });
                }
                ops.len() < 2 * BATCH
            })?;
            // The scan stopped early only for a full batch.
            let full = ops.len() >= 2 * BATCH;
            let before = moved;
            moved += (ops.len() / 2) as u64;
            if moved / 100_000 > before / 100_000 {
                tracing::info!(
                    node = node_id,
                    keys = moved,
                    "rewriting the data dir to hash-prefixed keys"
                );
            }
            if !ops.is_empty() {
                engine.write(ops, Durability::Buffered)?;
            }
            match last {
                Some(last) if full => cursor = [last.as_slice(), &[0]].concat(),
                _ => break,
            }
        }
    }
    engine.sync()?;
    // The old partition count goes with the marker: a build that keys by
    // partition number refuses this data dir instead of reading it wrong.
    engine.write(
        vec![
            meta_put(META_KEY_FORMAT, &[KEY_FORMAT_HASH_PREFIX]),
            WriteOp::Delete {
                space: Space::Meta,
                key: META_PARTITIONS_V1.to_vec(),
            },
        ],
        Durability::Fsync,
    )?;
    tracing::info!(
        node = node_id,
        keys = moved,
        "data dir rewritten to hash-prefixed keys"
    );
    Ok(())
}

/// A key's record as stored.
enum Held {
    Missing,
    /// Found corrupt (and moved aside).
    Corrupt,
    /// An object kept whole.
    Whole(Object),
    /// A split set's header object and header.
    Split(Object, SplitHeader),
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

mod scrub;
mod sets;
mod tombstones;
mod trees;

pub use scrub::ScrubStats;
pub use tombstones::TombstoneCounts;

#[cfg(test)]
mod tests;
