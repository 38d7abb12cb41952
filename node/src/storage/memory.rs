//! An in-memory engine for unit tests of the layers above storage. Never used
//! by a running node.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{Durability, Engine, EngineError, Space, WriteOp};

/// Every entry of every space, keyed by (space tag, key).
type Entries = BTreeMap<(u8, Vec<u8>), Vec<u8>>;

/// One ordered map for all spaces behind one lock.
#[derive(Debug, Default)]
pub struct MemEngine {
    spaces: Mutex<Entries>,
}

impl MemEngine {
    /// An empty engine.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // A panic while holding the lock cannot leave the map half-changed.
        self.spaces
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn tag(space: Space) -> u8 {
    match space {
        Space::Objects => 0,
        Space::Hints => 1,
        Space::Meta => 2,
        Space::Elements => 3,
    }
}

impl Engine for MemEngine {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        Ok(self.lock().get(&(tag(space), key.to_vec())).cloned())
    }

    fn write(&self, ops: Vec<WriteOp>, _durability: Durability) -> Result<(), EngineError> {
        let mut map = self.lock();
        for op in ops {
            match op {
                WriteOp::Put { space, key, value } => {
                    map.insert((tag(space), key), value);
                }
                WriteOp::Delete { space, key } => {
                    map.remove(&(tag(space), key));
                }
            }
        }
        Ok(())
    }

    fn scan_from(
        &self,
        space: Space,
        prefix: &[u8],
        start: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), EngineError> {
        let map = self.lock();
        let t = tag(space);
        for ((space_tag, k), v) in map.range((t, prefix.max(start).to_vec())..) {
            if *space_tag != t || !k.starts_with(prefix) {
                break;
            }
            if !visit(k, v) {
                break;
            }
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), EngineError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn conformance() {
        super::super::conformance::run(&super::MemEngine::new());
    }
}
