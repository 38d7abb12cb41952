//! The scrub: a slow pass over every object record that checks its
//! checksum, as Garage's scrub does. Anti-entropy's trees hold the digest
//! each version had when it was written, so rot in a value nobody reads is
//! invisible to them; the scrub finds it. A corrupt record is moved aside
//! as a read would (counted, logged, a new actor epoch), which drops its
//! partition's tree: the next exchange rebuilds it without the key, finds
//! the key missing here and fetches it from a healthy replica. A set kept
//! split is checked whole: each element record, and the elements against
//! what its header counted (their number and hashes), so a lost element
//! record is found as well as a rotten one; its elements count against the
//! pass's rate.

use std::sync::atomic::{AtomicU64, Ordering};

use quorra_core::crdt::SplitHeader;

use super::{decode_record, ObjectStore, StoreError};
use crate::storage::Space;

/// What the scrub has done since the store opened.
#[derive(Debug, Default)]
pub(crate) struct ScrubCounters {
    checked: AtomicU64,
    corrupt: AtomicU64,
    passes: AtomicU64,
}

/// The scrub's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScrubStats {
    /// Records checked.
    pub checked: u64,
    /// Corrupt records found.
    pub corrupt: u64,
    /// Complete passes over every record.
    pub passes: u64,
}

impl ObjectStore {
    /// Checks up to `max` records after the storage key `after` (`None`:
    /// from the first); returns where to go on from (`None`: the pass
    /// ended).
    pub fn scrub(&self, after: Option<&[u8]>, max: usize) -> Result<Option<Vec<u8>>, StoreError> {
        let start = after.map_or_else(Vec::new, |a| [a, &[0]].concat());
        let mut seen = 0usize;
        let mut last = None;
        let mut corrupt = Vec::new();
        let mut sets = Vec::new();
        self.engine
            .scan_from(Space::Objects, b"", &start, &mut |k, v| {
                if seen >= max.max(1) {
                    return false;
                }
                seen += 1;
                last = Some(k.to_vec());
                match decode_record(v) {
                    Err(_) => corrupt.push(k.to_vec()),
                    Ok(o) => {
                        if let Some(Ok(split)) = SplitHeader::of_object(&o) {
                            seen = seen
                                .saturating_add(usize::try_from(split.count).unwrap_or(usize::MAX));
                            sets.push(k.to_vec());
                        }
                    }
                }
                true
            })?;
        for skey in sets {
            if self.scrub_set(&skey)? {
                self.scrub.corrupt.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(crate::metric_names::SCRUB_CORRUPT_FOUND).increment(1);
            }
        }
        self.scrub.checked.fetch_add(seen as u64, Ordering::Relaxed);
        metrics::counter!(crate::metric_names::SCRUB_RECORDS_CHECKED).increment(seen as u64);
        for skey in corrupt {
            // A read moves it aside (under the key's lock, so a write that
            // replaced it meanwhile is kept).
            if let Some((bucket, key)) = Self::parse_object_key(&skey) {
                let before = self.corruptions();
                self.get(&bucket, &key)?;
                if self.corruptions() > before {
                    self.scrub.corrupt.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!(crate::metric_names::SCRUB_CORRUPT_FOUND).increment(1);
                }
            }
        }
        if seen < max.max(1) {
            self.scrub.passes.fetch_add(1, Ordering::Relaxed);
            return Ok(None);
        }
        Ok(last)
    }

    /// What the scrub has done since the store opened.
    pub fn scrub_stats(&self) -> ScrubStats {
        ScrubStats {
            checked: self.scrub.checked.load(Ordering::Relaxed),
            corrupt: self.scrub.corrupt.load(Ordering::Relaxed),
            passes: self.scrub.passes.load(Ordering::Relaxed),
        }
    }
}
