//! What clients did and saw, recorded for the checkers.
//!
//! The same history serves the simulator (virtual milliseconds) and the
//! real-process fault suite (milliseconds since the test started). Values
//! are JSON arrays of integers: a set workload keeps a set of elements in
//! one key, a register workload writes one fresh integer per write.

use serde::{Deserialize, Serialize};

/// How an operation ended, in Jepsen's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Acknowledged: it took effect.
    Ok,
    /// Refused before anything was written: it did not take effect.
    Fail,
    /// Timed out or failed part-way: it may or may not have taken effect.
    Unknown,
}

/// What an operation did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpKind {
    /// Set workload: read the key's set (merging siblings), add `element`,
    /// write it back with the context read.
    SetAdd {
        /// The element added; unique in the history.
        element: u64,
    },
    /// Register workload: read the key, write `value` with the context read.
    /// `observed` is every value the read returned (all siblings): the write
    /// supersedes them.
    RegWrite {
        /// The value written; unique in the history.
        value: u64,
        /// Values the read saw.
        observed: Vec<u64>,
    },
    /// Register workload: read the key, delete it with the context read.
    /// The delete supersedes every value the read returned, and only those.
    RegDelete {
        /// Values the read saw.
        observed: Vec<u64>,
    },
}

/// One operation of one client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// The client that ran it.
    pub client: usize,
    /// The key it touched.
    pub key: String,
    /// What it did.
    pub kind: OpKind,
    /// When it started (ms).
    pub invoked_ms: u64,
    /// When it ended (ms).
    pub completed_ms: u64,
    /// How it ended.
    pub outcome: Outcome,
}

/// Every operation of a run, in completion order.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct History {
    /// The operations.
    pub ops: Vec<Op>,
}

impl History {
    /// Records an operation.
    pub fn push(&mut self, op: Op) {
        self.ops.push(op);
    }

    /// Operations that ended with `outcome`.
    pub fn count(&self, outcome: Outcome) -> usize {
        self.ops.iter().filter(|o| o.outcome == outcome).count()
    }
}

/// Encodes a set of integers as a JSON array.
pub fn encode(values: &std::collections::BTreeSet<u64>) -> Vec<u8> {
    serde_json::to_vec(values).unwrap_or_else(|_| b"[]".to_vec())
}

/// Decodes a JSON array of integers; `None` when it is not one (which the
/// checkers count as an unexpected value).
pub fn decode(bytes: &[u8]) -> Option<Vec<u64>> {
    serde_json::from_slice(bytes).ok()
}
