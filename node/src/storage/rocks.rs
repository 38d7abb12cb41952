//! The RocksDB engine: one database per node, one column family per [`Space`].
//!
//! Every write goes through RocksDB's write-ahead log. [`Durability::Fsync`]
//! sets `sync` on the write, so the WAL is fsynced before the call returns
//! (RocksDB groups concurrent synced writes into one fsync); the node itself
//! writes through [`super::commit::GroupCommit`], which appends and then
//! shares one [`Engine::sync`] among every durable write waiting.
//!
//! **Memory.** One LRU block cache holds the whole budget
//! ([`RocksOptions::memory_budget_bytes`]); a write buffer manager charges
//! the memtables of every column family to that cache and flushes when
//! they pass half of it (stalling writers until the flush catches up),
//! and index and filter blocks live in the cache too, so RocksDB's memory
//! stays near the budget however many keys the node holds (by default
//! RocksDB gives each column family 64 MiB memtables and keeps every
//! table's index outside any cache). The cache has few shards
//! ([`cache_shard_bits`]): the write buffer manager charges memtables in
//! 256 KiB entries that cannot be evicted, and in RocksDB's default
//! 512 KiB shards a few of them land together and push their shard, and
//! so the whole cache, past its capacity.

use std::path::Path;

use rocksdb::statistics::{StatsLevel, Ticker};
use rocksdb::{
    properties, BlockBasedOptions, BottommostLevelCompaction, Cache, ColumnFamily,
    ColumnFamilyDescriptor, CompactOptions, DBCompressionType, Direction, IteratorMode,
    LruCacheOptions, Options, WriteBatch, WriteBufferManager, WriteOptions, DB,
};

use super::{Durability, Engine, EngineError, MemoryUsage, Space, SyncCounts, WriteOp};

/// The default memory budget: sized for a small machine running a few
/// nodes (see the node config's `memory_budget_mb`).
pub const DEFAULT_MEMORY_BUDGET_BYTES: usize = 256 << 20;

/// The smallest block-cache shard: 128 of the write buffer manager's
/// 256 KiB charges, so however they fall among the shards none holds a
/// large part of its capacity in charges it cannot evict.
const MIN_CACHE_SHARD_BYTES: usize = 32 << 20;

/// The block cache is cut into `2^bits` shards (each with its own lock and
/// its own share of the capacity): as many as keep every shard at least
/// [`MIN_CACHE_SHARD_BYTES`], at most 64 (RocksDB's own ceiling).
pub fn cache_shard_bits(budget_bytes: usize) -> i32 {
    let shards = (budget_bytes / MIN_CACHE_SHARD_BYTES).max(1);
    (shards.ilog2() as i32).min(6)
}

/// How to open a [`RocksEngine`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RocksOptions {
    /// Block cache and memtables together, in bytes.
    pub memory_budget_bytes: usize,
    /// Crash-test mode (tests only: see [`RocksEngine`]).
    pub lose_unsynced: bool,
}

impl Default for RocksOptions {
    fn default() -> Self {
        Self {
            memory_budget_bytes: DEFAULT_MEMORY_BUDGET_BYTES,
            lose_unsynced: false,
        }
    }
}

/// A RocksDB database with the column families `objects`, `hints`, `meta` and
/// `elements`.
pub struct RocksEngine {
    db: DB,
    /// Holds the database's statistics (its tickers count WAL syncs).
    opts: Options,
    /// Writes made with [`Durability::Fsync`].
    durable_writes: std::sync::atomic::AtomicU64,
    /// Crash-test mode: the write-ahead log is buffered in the process and
    /// written only by a sync, so killing the process loses every write not
    /// yet synced, as a power loss does (a plain kill keeps the OS cache).
    lose_unsynced: bool,
    /// The block cache, memtables charged to it.
    cache: Cache,
    /// The budget it was opened with.
    budget: usize,
}

impl std::fmt::Debug for RocksEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksEngine")
            .field("path", &self.db.path())
            .finish()
    }
}

fn rocks(e: rocksdb::Error) -> EngineError {
    EngineError::Rocks(e.into_string())
}

impl RocksEngine {
    /// Opens (or creates) the database at `path`, with the default options.
    pub fn open(path: &Path) -> Result<Self, EngineError> {
        Self::open_with(path, RocksOptions::default())
    }

    /// Opens the database with `options`.
    pub fn open_with(path: &Path, options: RocksOptions) -> Result<Self, EngineError> {
        let RocksOptions {
            memory_budget_bytes: budget,
            lose_unsynced,
        } = options;
        let open_err = |reason: String| EngineError::Open {
            path: path.display().to_string(),
            reason,
        };
        std::fs::create_dir_all(path).map_err(|e| open_err(e.to_string()))?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_max_background_jobs(2);
        opts.set_keep_log_file_num(4);
        opts.set_manual_wal_flush(lose_unsynced);
        // Tickers only (no timers or histograms): WAL syncs and write
        // groups, for the status and the group-commit test.
        opts.enable_statistics();
        opts.set_statistics_level(StatsLevel::ExceptHistogramOrTimers);
        let mut cache_opts = LruCacheOptions::default();
        cache_opts.set_capacity(budget);
        cache_opts.set_num_shard_bits(cache_shard_bits(budget));
        let cache = Cache::new_lru_cache_opts(&cache_opts);
        // Writers stall while the memtables are past half the budget and
        // their flush has not caught up: without that, a burst of writes
        // outruns the background flushes and the memtables, which the
        // cache cannot evict, push it past its capacity.
        let buffers = WriteBufferManager::new_write_buffer_manager_with_cache(
            budget / 2,
            true,
            cache.clone(),
        );
        // Database-wide: every column family's memtables together.
        opts.set_write_buffer_manager(&buffers);
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&cache);
        table.set_cache_index_and_filter_blocks(true);
        table.set_pin_l0_filter_and_index_blocks_in_cache(true);
        // A memtable is a quarter of the budget (RocksDB's 64 MiB at the
        // default): the write buffer manager flushes before the spaces'
        // memtables together pass half of it.
        let memtable = (budget / 4).max(1 << 20);
        // The default column family (unused) on the same cache.
        opts.set_block_based_table_factory(&table);
        opts.set_write_buffer_size(memtable);
        let cfs = Space::ALL.iter().map(|s| {
            let mut cf = Options::default();
            cf.set_compression_type(DBCompressionType::Lz4);
            cf.set_block_based_table_factory(&table);
            cf.set_write_buffer_size(memtable);
            ColumnFamilyDescriptor::new(s.name(), cf)
        });
        let db =
            DB::open_cf_descriptors(&opts, path, cfs).map_err(|e| open_err(e.into_string()))?;
        Ok(Self {
            db,
            opts,
            durable_writes: std::sync::atomic::AtomicU64::new(0),
            lose_unsynced,
            cache,
            budget,
        })
    }

    fn cf(&self, space: Space) -> Result<&ColumnFamily, EngineError> {
        self.db
            .cf_handle(space.name())
            .ok_or_else(|| EngineError::Rocks(format!("column family {} missing", space.name())))
    }
}

impl Engine for RocksEngine {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        self.db.get_cf(self.cf(space)?, key).map_err(rocks)
    }

    fn write(&self, ops: Vec<WriteOp>, durability: Durability) -> Result<(), EngineError> {
        let mut batch = WriteBatch::default();
        for op in ops {
            match op {
                WriteOp::Put { space, key, value } => batch.put_cf(self.cf(space)?, key, value),
                WriteOp::Delete { space, key } => batch.delete_cf(self.cf(space)?, key),
            }
        }
        let sync = durability == Durability::Fsync;
        if sync {
            self.durable_writes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let mut wo = WriteOptions::default();
        if self.lose_unsynced {
            // The log stays in the process until a sync writes it out.
            self.db.write_opt(batch, &wo).map_err(rocks)?;
            return if sync {
                self.db.flush_wal(true).map_err(rocks)
            } else {
                Ok(())
            };
        }
        wo.set_sync(sync);
        self.db.write_opt(batch, &wo).map_err(rocks)
    }

    fn scan_from(
        &self,
        space: Space,
        prefix: &[u8],
        start: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), EngineError> {
        let iter = self.db.iterator_cf(
            self.cf(space)?,
            IteratorMode::From(prefix.max(start), Direction::Forward),
        );
        for item in iter {
            let (k, v) = item.map_err(rocks)?;
            if !k.starts_with(prefix) || !visit(&k, &v) {
                break;
            }
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), EngineError> {
        self.db.flush_wal(true).map_err(rocks)
    }

    fn compact(&self, space: Space) -> Result<(), EngineError> {
        let cf = self.cf(space)?;
        self.db.flush_cf(cf).map_err(rocks)?;
        let mut opts = CompactOptions::default();
        // The last level too: a deletion marker is dropped only there.
        opts.set_bottommost_level_compaction(BottommostLevelCompaction::Force);
        self.db
            .compact_range_cf_opt(cf, None::<&[u8]>, None::<&[u8]>, &opts);
        Ok(())
    }

    fn sync_counts(&self) -> Option<SyncCounts> {
        Some(SyncCounts {
            durable_writes: self
                .durable_writes
                .load(std::sync::atomic::Ordering::Relaxed),
            wal_syncs: self.opts.get_ticker_count(Ticker::WalFileSynced),
            bytes_written: self.opts.get_ticker_count(Ticker::BytesWritten),
        })
    }

    fn memory(&self) -> Option<MemoryUsage> {
        let memtables = Space::ALL
            .iter()
            .filter_map(|s| {
                let cf = self.db.cf_handle(s.name())?;
                self.db
                    .property_int_value_cf(cf, properties::SIZE_ALL_MEM_TABLES)
                    .ok()
                    .flatten()
            })
            .sum();
        Some(MemoryUsage {
            budget_bytes: self.budget as u64,
            block_cache_bytes: self.cache.get_usage() as u64,
            memtable_bytes: memtables,
        })
    }

    fn space_stats(&self, space: Space) -> Option<super::SpaceStats> {
        let cf = self.cf(space).ok()?;
        let int = |name| {
            self.db
                .property_int_value_cf(cf, name)
                .ok()
                .flatten()
                .unwrap_or_default()
        };
        Some(super::SpaceStats {
            estimated_keys: int(properties::ESTIMATE_NUM_KEYS),
            table_bytes: int(properties::LIVE_SST_FILES_SIZE),
            pending_compaction_bytes: int(properties::ESTIMATE_PENDING_COMPACTION_BYTES),
        })
    }

    fn write_stall_micros(&self) -> Option<u64> {
        Some(self.opts.get_ticker_count(Ticker::StallMicros))
    }

    fn deletion_markers(&self, space: Space) -> Result<Option<u64>, EngineError> {
        let cf = self.cf(space)?;
        let int = |name| {
            self.db
                .property_int_value_cf(cf, name)
                .map(Option::unwrap_or_default)
                .map_err(rocks)
        };
        let in_memory = int(properties::NUM_DELETES_ACTIVE_MEM_TABLE)?
            + int(properties::NUM_DELETES_IMM_MEM_TABLES)?;
        // "# entries=..; # deletions=N; ..." over every table file.
        let tables = self
            .db
            .property_value_cf(cf, properties::AGGREGATED_TABLE_PROPERTIES)
            .map_err(rocks)?
            .unwrap_or_default();
        let on_disk = tables
            .split(';')
            .filter_map(|part| part.trim().strip_prefix("# deletions="))
            .filter_map(|n| n.trim().parse::<u64>().ok())
            .sum::<u64>();
        Ok(Some(in_memory + on_disk))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conformance() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = RocksEngine::open(dir.path()).expect("open");
        crate::storage::conformance::run(&engine);
    }

    /// Concurrent durable writers share WAL syncs (RocksDB's write groups:
    /// the leader appends every queued writer's batch and syncs once), so
    /// fsync is paid per group, not per write.
    #[test]
    fn concurrent_durable_writes_share_wal_syncs() {
        const WRITERS: usize = 32;
        const EACH: usize = 25;
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = std::sync::Arc::new(RocksEngine::open(dir.path()).expect("open"));
        // Alone, each durable write takes a sync of its own.
        let before = engine.sync_counts().expect("counts");
        for i in 0..EACH {
            let key = format!("alone-{i}");
            engine
                .put(Space::Objects, key.as_bytes(), b"v", Durability::Fsync)
                .expect("put");
        }
        let alone = engine.sync_counts().expect("counts");
        assert_eq!(alone.wal_syncs - before.wal_syncs, EACH as u64);
        let before = alone;
        std::thread::scope(|s| {
            for w in 0..WRITERS {
                let engine = engine.clone();
                s.spawn(move || {
                    for i in 0..EACH {
                        let key = format!("w{w}-{i}");
                        engine
                            .put(Space::Objects, key.as_bytes(), b"v", Durability::Fsync)
                            .expect("put");
                    }
                });
            }
        });
        let after = engine.sync_counts().expect("counts");
        let writes = after.durable_writes - before.durable_writes;
        let syncs = after.wal_syncs - before.wal_syncs;
        assert_eq!(writes, (WRITERS * EACH) as u64);
        assert!(syncs > 0, "durable writes sync the WAL");
        assert!(
            syncs < writes / 4,
            "{syncs} WAL syncs for {writes} concurrent durable writes"
        );
    }

    /// A small budget holds: after writing eight times the budget into
    /// every space and reading some back, the block cache and the
    /// memtables stay within it, and the memtables are charged to the
    /// cache. (Each space's memtables alone could grow to half the budget:
    /// only the write buffer manager keeps the three together under it.)
    #[test]
    fn memory_stays_within_the_budget() {
        const BUDGET: usize = 8 << 20;
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = RocksEngine::open_with(
            dir.path(),
            RocksOptions {
                memory_budget_bytes: BUDGET,
                lose_unsynced: false,
            },
        )
        .expect("open");
        let value = vec![7u8; 4096];
        let keys = 8 * BUDGET / value.len();
        for i in 0..keys {
            for space in Space::ALL {
                engine
                    .put(
                        space,
                        format!("k{i:08}").as_bytes(),
                        &value,
                        Durability::Buffered,
                    )
                    .expect("put");
            }
        }
        let m = engine.memory().expect("tracked");
        assert!(m.memtable_bytes > 0, "{m:?}");
        assert!(
            m.block_cache_bytes >= m.memtable_bytes / 2,
            "memtables are charged to the cache: {m:?}"
        );
        for i in (0..keys).step_by(7) {
            let got = engine
                .get(Space::Objects, format!("k{i:08}").as_bytes())
                .expect("get");
            assert_eq!(got.as_deref(), Some(&value[..]), "k{i}");
        }
        let m = engine.memory().expect("tracked");
        assert_eq!(m.budget_bytes, BUDGET as u64);
        assert!(m.block_cache_bytes > 0, "{m:?}");
        // LRU capacity is a soft limit: a block in use may overshoot it
        // briefly, never by the data written.
        assert!(m.block_cache_bytes <= BUDGET as u64 * 11 / 10, "{m:?}");
        assert!(m.memtable_bytes <= BUDGET as u64 * 6 / 10, "{m:?}");
    }

    #[test]
    fn cache_shards_are_large_enough_for_the_memtable_charges() {
        assert_eq!(cache_shard_bits(8 << 20), 0);
        assert_eq!(cache_shard_bits(32 << 20), 0);
        assert_eq!(cache_shard_bits(64 << 20), 1);
        assert_eq!(cache_shard_bits(DEFAULT_MEMORY_BUDGET_BYTES), 3);
        assert_eq!(cache_shard_bits(64 << 30), 6);
        for budget in [1 << 20, 100 << 20, 1 << 30, 3 << 30] {
            let shard = budget >> cache_shard_bits(budget);
            assert!(shard >= MIN_CACHE_SHARD_BYTES.min(budget), "{budget}");
        }
    }

    #[test]
    fn data_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let engine = RocksEngine::open(dir.path()).expect("open");
            engine
                .put(Space::Objects, b"k", b"v", Durability::Fsync)
                .expect("put");
            engine
                .put(Space::Meta, b"m", b"1", Durability::Buffered)
                .expect("put");
        }
        let engine = RocksEngine::open(dir.path()).expect("reopen");
        assert_eq!(
            engine.get(Space::Objects, b"k").expect("get"),
            Some(b"v".to_vec())
        );
        assert_eq!(
            engine.get(Space::Meta, b"m").expect("get"),
            Some(b"1".to_vec())
        );
    }

    #[test]
    fn open_fails_clearly_on_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").expect("write");
        let err = RocksEngine::open(&file).expect_err("must fail");
        assert!(err.to_string().contains("not-a-dir"), "{err}");
    }
}
