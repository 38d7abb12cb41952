//! The one merge every replicated state in Quorra obeys.
//!
//! Replicas converge because whatever order states arrive in, merging them
//! gives the same result: a merge is commutative, associative and
//! idempotent (a join-semilattice). The DVV objects of plain buckets and
//! every CRDT payload of data-type buckets implement [`Merge`], and one
//! generic property test (`crdt/tests.rs`) checks those laws for each of
//! them.

use crate::{ConflictMode, Object};

/// A state that replicas merge.
pub trait Merge {
    /// Joins `other` into `self`: afterwards `self` holds everything either
    /// held, and nothing either side had superseded.
    fn merge(&mut self, other: &Self);
}

/// A DVV object of a `siblings` bucket (the default: no write is dropped).
impl Merge for Object {
    fn merge(&mut self, other: &Self) {
        Self::merge(self, other, ConflictMode::Siblings);
    }
}

/// The merge of two states, as a new value.
pub fn merged<T: Merge + Clone>(a: &T, b: &T) -> T {
    let mut m = a.clone();
    m.merge(b);
    m
}
