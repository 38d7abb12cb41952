//! Group commit: concurrent durable writes share one WAL sync.
//!
//! [`GroupCommit`] wraps the node's engine. A durable write is appended
//! without a sync, then waits in a commit queue: one waiting writer (the
//! leader) syncs the log, which makes durable every write appended before
//! the sync began, and wakes every writer it covered; writes that arrive
//! while a sync runs are covered by the next one. So fsync is paid per
//! batch, however many writers there are, and a slow disk makes batches
//! larger rather than the queue longer.
//!
//! A writer's ticket is taken after its append, and a sync covers the
//! tickets taken before it started: a write is acknowledged only by a sync
//! that began after it was in the log. A failed sync fails its leader's
//! write; the writers it would have covered try again themselves. A write
//! whose sync failed is in the engine all the same, so it fails with
//! [`EngineError::Unsynced`], which tells the caller it was applied.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};

use super::{Durability, Engine, EngineError, MemoryUsage, Space, SyncCounts, WriteOp};

/// The commit queue's state.
#[derive(Debug, Default)]
struct Queue {
    /// Tickets taken: durable writes appended.
    appended: u64,
    /// Every ticket up to this one is synced.
    synced: u64,
    /// A leader is syncing.
    syncing: bool,
}

/// Makes appended writes durable in batches (see the module docs).
#[derive(Debug, Default)]
pub struct CommitQueue {
    queue: Mutex<Queue>,
    done: Condvar,
    /// Durable writes committed through the queue.
    writes: AtomicU64,
}

impl CommitQueue {
    /// Returns once a sync that began after this call (so after the
    /// caller's append) has completed; runs `sync` itself when no other
    /// writer is syncing.
    pub fn commit(&self, sync: impl Fn() -> Result<(), EngineError>) -> Result<(), EngineError> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        let lock = || self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let mut q = lock();
        q.appended += 1;
        let ticket = q.appended;
        loop {
            if q.synced >= ticket {
                return Ok(());
            }
            if q.syncing {
                q = self.done.wait(q).unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            // Lead: every ticket taken so far is in the log.
            q.syncing = true;
            let covers = q.appended;
            drop(q);
            let lead = Lead(self);
            let result = sync();
            q = lock();
            std::mem::forget(lead);
            q.syncing = false;
            if result.is_ok() {
                q.synced = q.synced.max(covers);
            }
            self.done.notify_all();
            result.map_err(|e| EngineError::Unsynced(Box::new(e)))?;
        }
    }

    /// Durable writes committed through the queue.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }
}

/// A leader's sync under way: if it unwinds, the queue is released so the
/// waiting writers do not wait for it forever (one of them leads next).
struct Lead<'a>(&'a CommitQueue);

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        let mut q = self.0.queue.lock().unwrap_or_else(PoisonError::into_inner);
        q.syncing = false;
        self.0.done.notify_all();
    }
}

/// `inner`, with its durable writes committed in groups.
pub struct GroupCommit {
    inner: std::sync::Arc<dyn Engine>,
    queue: CommitQueue,
}

impl GroupCommit {
    /// Wraps `inner`.
    pub fn new(inner: std::sync::Arc<dyn Engine>) -> Self {
        Self {
            inner,
            queue: CommitQueue::default(),
        }
    }
}

impl Engine for GroupCommit {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        self.inner.get(space, key)
    }

    fn write(&self, ops: Vec<WriteOp>, durability: Durability) -> Result<(), EngineError> {
        self.inner.write(ops, Durability::Buffered)?;
        match durability {
            Durability::Buffered => Ok(()),
            Durability::Fsync => self.queue.commit(|| self.inner.sync()),
        }
    }

    fn scan_from(
        &self,
        space: Space,
        prefix: &[u8],
        start: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), EngineError> {
        self.inner.scan_from(space, prefix, start, visit)
    }

    fn sync(&self) -> Result<(), EngineError> {
        self.inner.sync()
    }

    fn compact(&self, space: Space) -> Result<(), EngineError> {
        self.inner.compact(space)
    }

    fn sync_counts(&self) -> Option<SyncCounts> {
        self.inner.sync_counts().map(|c| SyncCounts {
            durable_writes: c.durable_writes + self.queue.writes(),
            ..c
        })
    }

    fn memory(&self) -> Option<MemoryUsage> {
        self.inner.memory()
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
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::storage::memory::MemEngine;

    /// 32 writers, a sync that takes 5 ms: the writes that arrive during
    /// one sync share the next, so syncs are a small fraction of writes.
    #[test]
    fn concurrent_commits_share_syncs() {
        const WRITERS: usize = 32;
        const EACH: usize = 8;
        let queue = Arc::new(CommitQueue::default());
        let syncs = Arc::new(AtomicU64::new(0));
        std::thread::scope(|s| {
            for _ in 0..WRITERS {
                let (queue, syncs) = (queue.clone(), syncs.clone());
                s.spawn(move || {
                    for _ in 0..EACH {
                        queue
                            .commit(|| {
                                std::thread::sleep(Duration::from_millis(5));
                                syncs.fetch_add(1, Ordering::Relaxed);
                                Ok(())
                            })
                            .expect("commit");
                    }
                });
            }
        });
        let writes = (WRITERS * EACH) as u64;
        assert_eq!(queue.writes(), writes);
        let syncs = syncs.load(Ordering::Relaxed);
        assert!(syncs < writes / 4, "{syncs} syncs for {writes} writes");
    }

    /// A write is never acknowledged by a sync that began before it: with
    /// one writer, every commit runs a sync of its own.
    #[test]
    fn a_lone_writer_syncs_every_write() {
        let queue = CommitQueue::default();
        let syncs = AtomicU64::new(0);
        for _ in 0..10 {
            queue
                .commit(|| {
                    syncs.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                })
                .expect("commit");
        }
        assert_eq!(syncs.load(Ordering::Relaxed), 10);
    }

    /// A failed sync fails its leader's write; the next writer syncs again
    /// rather than being acknowledged by the failure.
    #[test]
    fn a_failed_sync_acknowledges_nothing() {
        let queue = CommitQueue::default();
        let err = queue.commit(|| Err(EngineError::Injected));
        assert!(
            matches!(&err, Err(EngineError::Unsynced(e)) if matches!(**e, EngineError::Injected)),
            "{err:?}"
        );
        assert_eq!(queue.queue.lock().expect("lock").synced, 0);
        let syncs = AtomicU64::new(0);
        queue
            .commit(|| {
                syncs.fetch_add(1, Ordering::Relaxed);
                Ok(())
            })
            .expect("commit");
        assert_eq!(syncs.load(Ordering::Relaxed), 1);
    }

    /// A leader whose sync panics releases the queue: the next writer
    /// leads a sync of its own instead of waiting forever.
    #[test]
    fn a_panicking_sync_releases_the_queue() {
        let queue = CommitQueue::default();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            queue.commit(|| panic!("the sync panicked"))
        }));
        assert!(panicked.is_err());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| tx.send(queue.commit(|| Ok(()))).expect("send"));
            let done = rx.recv_timeout(Duration::from_secs(10));
            assert!(matches!(done, Ok(Ok(()))), "{done:?}");
        });
    }

    #[test]
    fn conformance() {
        let engine = GroupCommit::new(Arc::new(MemEngine::new()));
        crate::storage::conformance::run(&engine);
    }
}
