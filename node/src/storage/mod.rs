//! The storage engine seam: a small key-value trait with column spaces, atomic
//! batches and an explicit durability choice.
//!
//! The product and every integration test use [`rocks::RocksEngine`]; the
//! in-memory [`memory::MemEngine`] exists for unit tests of the layers above.
//! Both pass the same [`conformance`] suite. Framing, checksums and versioning
//! live one layer up, in [`crate::store`]: an engine stores opaque bytes.

pub mod commit;
pub mod faulty;
pub mod memory;
pub mod rocks;

#[cfg(test)]
pub(crate) mod conformance;

use thiserror::Error;

/// A keyspace of the engine (a RocksDB column family).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Space {
    /// Objects, keyed by partition, bucket and key.
    Objects,
    /// Hints for hinted handoff, keyed by owner.
    Hints,
    /// Node metadata: identity, actor epoch, format.
    Meta,
    /// The element entries of sets kept split, keyed by their key's object
    /// key and the element (see `crate::store::sets`).
    Elements,
}

impl Space {
    /// Every space, in a fixed order.
    pub const ALL: [Self; 4] = [Self::Objects, Self::Hints, Self::Meta, Self::Elements];

    /// The column family name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Objects => "objects",
            Self::Hints => "hints",
            Self::Meta => "meta",
            Self::Elements => "elements",
        }
    }
}

/// When a write may be acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// In the write-ahead log in the OS cache: survives a process crash, not
    /// a power loss.
    Buffered,
    /// Write-ahead log fsynced before returning: survives a power loss.
    Fsync,
}

/// Durable writes against the WAL syncs they took: concurrent durable
/// writes share a sync (group commit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SyncCounts {
    /// Writes made with [`Durability::Fsync`].
    pub durable_writes: u64,
    /// WAL syncs.
    pub wal_syncs: u64,
    /// Bytes of keys and values written (what a write costs the engine,
    /// before compaction rewrites it).
    pub bytes_written: u64,
}

/// What the engine holds in memory against its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemoryUsage {
    /// The budget: block cache and memtables together.
    pub budget_bytes: u64,
    /// The block cache's use, the memtables' reservations in it included.
    pub block_cache_bytes: u64,
    /// Memtables (active, immutable and pinned), every space together.
    pub memtable_bytes: u64,
}

/// What the engine reports about one space (for `/metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpaceStats {
    /// Keys, as the engine estimates them.
    pub estimated_keys: u64,
    /// Bytes of live table files on disk.
    pub table_bytes: u64,
    /// Bytes compaction still has to rewrite (the backlog).
    pub pending_compaction_bytes: u64,
}

/// One change in an atomic batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    /// Set `key` to `value`.
    Put {
        /// The space.
        space: Space,
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Remove `key`.
    Delete {
        /// The space.
        space: Space,
        /// The key.
        key: Vec<u8>,
    },
}

/// A failure of the storage engine itself.
#[derive(Debug, Error)]
pub enum EngineError {
    /// RocksDB reported an error.
    #[error("rocksdb: {0}")]
    Rocks(String),
    /// A disk fault injected by a test (see `crate::faults`).
    #[error("injected disk fault: the disk is failing")]
    Injected,
    /// A durable write reached the engine (readers see it) but the sync
    /// that makes it durable failed, so a crash may lose it: the caller
    /// keeps its own bookkeeping of the write, and reports the failure.
    #[error("written but not made durable: {0}")]
    Unsynced(Box<Self>),
    /// The engine could not be opened.
    #[error("cannot open storage at {path}: {reason}")]
    Open {
        /// The data path.
        path: String,
        /// What went wrong.
        reason: String,
    },
}

/// A key-value engine with named spaces.
///
/// Implementations must be safe to share between threads; every call may
/// block on disk, so async callers run them on a blocking thread.
pub trait Engine: Send + Sync + 'static {
    /// Reads `key` from `space`.
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError>;

    /// Applies `ops` atomically: all or none are visible, and after a crash
    /// all or none survive.
    fn write(&self, ops: Vec<WriteOp>, durability: Durability) -> Result<(), EngineError>;

    /// Visits the entries of `space` whose key starts with `prefix` and is
    /// at least `start`, in ascending key order, until `visit` returns
    /// `false`. (A scan that goes on from a cursor seeks to it, rather than
    /// reading past everything before.)
    fn scan_from(
        &self,
        space: Space,
        prefix: &[u8],
        start: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), EngineError>;

    /// Visits the entries of `space` whose key starts with `prefix`, in
    /// ascending key order, until `visit` returns `false`.
    fn scan(
        &self,
        space: Space,
        prefix: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), EngineError> {
        self.scan_from(space, prefix, prefix, visit)
    }

    /// Makes every write so far durable (fsyncs the write-ahead log).
    fn sync(&self) -> Result<(), EngineError>;

    /// Compacts `space` down to its last level, so what was deleted leaves
    /// the disk (an engine that keeps no deletion markers has nothing to do).
    fn compact(&self, _space: Space) -> Result<(), EngineError> {
        Ok(())
    }

    /// Memory held against the engine's budget (`None`: not tracked).
    fn memory(&self) -> Option<MemoryUsage> {
        None
    }

    /// Durable writes and the WAL syncs that made them durable (`None`:
    /// the engine does not count them).
    fn sync_counts(&self) -> Option<SyncCounts> {
        None
    }

    /// What the engine reports about `space` (`None`: nothing).
    fn space_stats(&self, _space: Space) -> Option<SpaceStats> {
        None
    }

    /// Microseconds writers were stalled by the engine so far (`None`:
    /// not counted).
    fn write_stall_micros(&self) -> Option<u64> {
        None
    }

    /// How many deletion markers `space` still holds, in memory and on
    /// disk (`None`: the engine keeps none).
    fn deletion_markers(&self, _space: Space) -> Result<Option<u64>, EngineError> {
        Ok(None)
    }

    /// Sets one key.
    fn put(
        &self,
        space: Space,
        key: &[u8],
        value: &[u8],
        durability: Durability,
    ) -> Result<(), EngineError> {
        self.write(
            vec![WriteOp::Put {
                space,
                key: key.to_vec(),
                value: value.to_vec(),
            }],
            durability,
        )
    }

    /// Removes one key.
    fn delete(&self, space: Space, key: &[u8], durability: Durability) -> Result<(), EngineError> {
        self.write(
            vec![WriteOp::Delete {
                space,
                key: key.to_vec(),
            }],
            durability,
        )
    }
}
