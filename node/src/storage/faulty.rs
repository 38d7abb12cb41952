//! An engine wrapper that makes the disk slow or failing on command
//! ([`crate::faults`]), so tests can see what a node does when its disk
//! stalls or errors: it must answer with `storage_error`, keep serving, and
//! lose nothing it acknowledged.

use std::sync::Arc;

use super::{Durability, Engine, EngineError, Space, WriteOp};
use crate::faults::Faults;

/// `inner`, subject to the disk faults in force.
pub struct FaultyEngine {
    inner: Arc<dyn Engine>,
    faults: Arc<Faults>,
}

impl FaultyEngine {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Engine>, faults: Arc<Faults>) -> Self {
        Self { inner, faults }
    }

    fn check(&self) -> Result<(), EngineError> {
        let (delay, failing) = self.faults.disk();
        if !delay.is_zero() {
            // Storage calls run on blocking threads: this is the stall a
            // slow disk causes.
            std::thread::sleep(delay);
        }
        if failing {
            return Err(EngineError::Injected);
        }
        Ok(())
    }
}

impl Engine for FaultyEngine {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        self.check()?;
        self.inner.get(space, key)
    }

    fn write(&self, ops: Vec<WriteOp>, durability: Durability) -> Result<(), EngineError> {
        self.check()?;
        let durability = if self.faults.skip_sync() {
            Durability::Buffered
        } else {
            durability
        };
        self.inner.write(ops, durability)
    }

    fn scan_from(
        &self,
        space: Space,
        prefix: &[u8],
        start: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), EngineError> {
        self.check()?;
        self.inner.scan_from(space, prefix, start, visit)
    }

    fn sync(&self) -> Result<(), EngineError> {
        self.check()?;
        if self.faults.skip_sync() {
            return Ok(());
        }
        self.inner.sync()
    }

    fn compact(&self, space: Space) -> Result<(), EngineError> {
        self.check()?;
        self.inner.compact(space)
    }

    fn deletion_markers(&self, space: Space) -> Result<Option<u64>, EngineError> {
        self.inner.deletion_markers(space)
    }

    fn space_stats(&self, space: Space) -> Option<super::SpaceStats> {
        self.inner.space_stats(space)
    }

    fn write_stall_micros(&self) -> Option<u64> {
        self.inner.write_stall_micros()
    }

    fn sync_counts(&self) -> Option<super::SyncCounts> {
        self.inner.sync_counts()
    }

    fn memory(&self) -> Option<super::MemoryUsage> {
        self.inner.memory()
    }
}
