//! What a replica does to its stored copy of a key: apply a client write as
//! coordinator, or merge another replica's state. Pure functions over the
//! stored object, so the node's RocksDB store and the simulator's disk
//! model run the same rules, including the actor-epoch defence (Riak's
//! kv679) and the limits.
//!
//! Both detect a **stale actor**: evidence that this node lost writes it
//! made (a context or a replica's clock names this node's actor with a
//! counter above what it holds for the key). The caller must then take a
//! new actor epoch, durably, and apply again: a dot the old actor issued
//! may be taken already.

use thiserror::Error;

use crate::context::{CausalContext, MAX_CONTEXT_ACTORS};
use crate::crdt::{self, CrdtError, CrdtOp, CrdtValue, Datatype};
use crate::version::VersionError;
use crate::{Actor, ConflictMode, Content, ErrorCode, Limits, Object, VersionVector};

/// What a client write changes.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A value (or a tombstone) replacing the siblings its context saw.
    Put(Content),
    /// An operation on a data-type key, applied to the merge of the stored
    /// states; the result replaces every sibling this replica holds.
    Crdt {
        /// The operation (checked against the bucket's type).
        op: CrdtOp,
        /// The bucket's type.
        datatype: Datatype,
        /// The clock of the client's read (what its removes saw).
        context: VersionVector,
        /// The coordinator's wall time (ms).
        timestamp_ms: u64,
    },
}

impl From<Content> for Change {
    fn from(c: Content) -> Self {
        Self::Put(c)
    }
}

/// Why a write or merge was not applied.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Refused {
    /// This node lost writes it made under `actor`: take a new epoch and
    /// apply again.
    #[error("writes of actor {0} are missing here: a new actor epoch is needed")]
    StaleActor(Actor),
    /// The write would leave too many siblings.
    #[error("the object would have {count} siblings; the limit is {limit}: read it, resolve the siblings and write back with the context")]
    TooManySiblings {
        /// Siblings after the write.
        count: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The key's clock would outgrow what a context can carry.
    #[error("the write would give the key's context {actors} actors ({bytes} bytes encoded); the limits are {max_actors} actors and {max_bytes} bytes")]
    ContextTooLarge {
        /// Actors after the write.
        actors: usize,
        /// Encoded context length after the write.
        bytes: usize,
        /// Most actors.
        max_actors: usize,
        /// Longest context.
        max_bytes: usize,
    },
    /// The write cannot be versioned (a counter at its maximum).
    #[error(transparent)]
    Version(#[from] VersionError),
    /// A data-type operation that does not apply to the stored state.
    #[error(transparent)]
    Crdt(#[from] CrdtError),
    /// A data-type state past the value limit (each sibling holds a whole
    /// state, so two concurrent ones must fit an object together).
    #[error("the {datatype} would be {bytes} bytes encoded; the limit is {limit} (limits.max_value_bytes)")]
    StateTooLarge {
        /// The key's type.
        datatype: Datatype,
        /// Its encoded size after the operation.
        bytes: usize,
        /// The value limit.
        limit: usize,
    },
}

impl Refused {
    /// The stable code a client sees.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::TooManySiblings { .. } => ErrorCode::TooManySiblings,
            Self::ContextTooLarge { .. } => ErrorCode::ContextTooLarge,
            // Only a forged context can run a counter to its end.
            Self::Version(_) => ErrorCode::BadContext,
            Self::Crdt(e) => e.code(),
            Self::StateTooLarge { .. } => ErrorCode::ValueTooLarge,
            // Handled by the store (a new epoch), never shown.
            Self::StaleActor(_) => ErrorCode::Internal,
        }
    }
}

/// Applies a client write (a value, a tombstone for a delete, or a
/// data-type operation) to the stored copy as coordinator: a new dot from
/// `actor`, with `context` the clock the client read. Returns the new
/// object, which replicas merge.
pub fn apply_client_write(
    stored: Option<&Object>,
    context: &VersionVector,
    actor: &Actor,
    change: Change,
    mode: ConflictMode,
    limits: &Limits,
) -> Result<Object, Refused> {
    let mut object = stored.cloned().unwrap_or_default();
    // A context that saw more of this actor's writes than this node holds
    // means it lost them (unsynced writes, a restored backup).
    if context.get(actor) > object.clock().get(actor) {
        return Err(Refused::StaleActor(actor.clone()));
    }
    match change {
        Change::Put(content) => {
            object.update(context, actor, content, mode)?;
        }
        Change::Crdt {
            op,
            datatype,
            context: seen,
            timestamp_ms,
        } => {
            let state = apply_crdt(&object, &op, datatype, &seen, actor, timestamp_ms)?;
            check_context(&state.clock(), limits)?;
            let content = state.to_content(timestamp_ms);
            if content.value.len() > limits.max_value_bytes {
                return Err(Refused::StateTooLarge {
                    datatype,
                    bytes: content.value.len(),
                    limit: limits.max_value_bytes,
                });
            }
            // The new state holds every state this replica has: it
            // replaces all of them.
            let all = object.clock().clone();
            object.update(&all, actor, content, ConflictMode::Siblings)?;
        }
    }
    let count = object.siblings().len();
    if count > limits.max_siblings {
        return Err(Refused::TooManySiblings {
            count,
            limit: limits.max_siblings,
        });
    }
    check_context(object.clock(), limits)?;
    Ok(object)
}

/// The state after `op`: the merge of `object`'s states with the
/// operation applied as `actor`.
fn apply_crdt(
    object: &Object,
    op: &CrdtOp,
    datatype: Datatype,
    seen: &VersionVector,
    actor: &Actor,
    timestamp_ms: u64,
) -> Result<CrdtValue, Refused> {
    let mut state = crdt::collapse(object)?.unwrap_or_else(|| CrdtValue::empty(datatype));
    if state.datatype() != datatype {
        return Err(CrdtError::NotAState(datatype.to_string()).into());
    }
    // The read saw more of this actor's operations than this copy holds:
    // it lost them, and the next dot may be taken.
    if seen.get(actor) > state.clock().get(actor) {
        return Err(Refused::StaleActor(actor.clone()));
    }
    state.apply(op, actor, seen, timestamp_ms)?;
    Ok(state)
}

/// Refuses a clock past what a context may carry.
pub fn check_context(clock: &VersionVector, limits: &Limits) -> Result<(), Refused> {
    let (actors, bytes) = (clock.len(), CausalContext::encoded_len(clock));
    if actors > MAX_CONTEXT_ACTORS || bytes > limits.max_context_bytes {
        return Err(Refused::ContextTooLarge {
            actors,
            bytes,
            max_actors: MAX_CONTEXT_ACTORS,
            max_bytes: limits.max_context_bytes,
        });
    }
    Ok(())
}

/// What a replica's read returns: its own copy merged with the hint it holds
/// for the primary it stands in for (if any).
pub fn read_with_hint(
    local: Option<Object>,
    hint: Option<Object>,
    mode: ConflictMode,
) -> Option<Object> {
    match (local, hint) {
        (Some(mut o), Some(h)) => {
            o.merge(&h, mode);
            Some(o)
        }
        (o, h) => o.or(h),
    }
}

/// The outcome of merging a replica's state.
#[derive(Debug, Clone, PartialEq)]
pub struct Merged {
    /// The stored copy after the merge.
    pub object: Object,
    /// Dots met with two different contents (a reused dot: both kept).
    pub collisions: usize,
}

/// Merges `incoming` (another replica's state of the key) into the stored
/// copy. Refuses with [`Refused::StaleActor`] when `incoming` holds writes
/// of `actor` this copy lacks.
pub fn merge_replica(
    stored: Option<&Object>,
    incoming: &Object,
    actor: &Actor,
    mode: ConflictMode,
) -> Result<Merged, Refused> {
    let mut object = stored.cloned().unwrap_or_default();
    if incoming.clock().get(actor) > object.clock().get(actor) {
        return Err(Refused::StaleActor(actor.clone()));
    }
    let collisions = object.merge_counting(incoming, mode);
    Ok(Merged { object, collisions })
}

/// The live siblings of `incoming` that the reaped tombstone `reaped` had
/// superseded: a replica that brings them back would resurrect deleted
/// data. Merging with the tombstone drops them again; the caller counts
/// and logs them.
pub fn resurrected(reaped: &Object, incoming: &Object) -> usize {
    incoming
        .live_siblings()
        .filter(|s| reaped.clock().covers(&s.dot))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(stored: Option<&Object>, ctx: &VersionVector, actor: &Actor) -> Object {
        apply_client_write(
            stored,
            ctx,
            actor,
            Change::Put(Content::value(b"v".to_vec(), "text/plain", 1)),
            ConflictMode::Siblings,
            &Limits::default(),
        )
        .expect("write")
    }

    #[test]
    fn a_context_naming_lost_writes_of_this_actor_asks_for_a_new_epoch() {
        let a = Actor::new("n1", 1);
        let o = write(None, &VersionVector::new(), &a);
        let o2 = write(Some(&o), o.clock(), &a);
        // The node lost `o2` (unsynced) and holds `o`; a client read `o2`.
        let e = apply_client_write(
            Some(&o),
            o2.clock(),
            &a,
            Change::Put(Content::tombstone(2)),
            ConflictMode::Siblings,
            &Limits::default(),
        )
        .expect_err("stale");
        assert_eq!(e, Refused::StaleActor(a.clone()));
        // With a new epoch the write goes through and covers both.
        let b = Actor::new("n1", 2);
        let o3 = write(Some(&o), o2.clock(), &b);
        assert!(o3.clock().descends(o2.clock()));
        // A replica's state naming lost writes is refused the same way.
        assert!(matches!(
            merge_replica(Some(&o), &o2, &a, ConflictMode::Siblings),
            Err(Refused::StaleActor(_))
        ));
    }

    #[test]
    fn limits_refuse_siblings_past_the_maximum() {
        let limits = Limits {
            max_siblings: 2,
            ..Limits::default()
        };
        let mut o: Option<Object> = None;
        for i in 0..2 {
            let actor = Actor::new(format!("n{i}"), 1);
            o = Some(
                apply_client_write(
                    o.as_ref(),
                    &VersionVector::new(),
                    &actor,
                    Change::Put(Content::value(vec![i], "text/plain", 1)),
                    ConflictMode::Siblings,
                    &limits,
                )
                .expect("within"),
            );
        }
        let e = apply_client_write(
            o.as_ref(),
            &VersionVector::new(),
            &Actor::new("n9", 1),
            Change::Put(Content::value(vec![9], "text/plain", 1)),
            ConflictMode::Siblings,
            &limits,
        )
        .expect_err("a third sibling");
        assert_eq!(e, Refused::TooManySiblings { count: 3, limit: 2 });
    }

    #[test]
    fn a_merge_counts_reused_dots() {
        let a = Actor::new("n1", 1);
        let x = write(None, &VersionVector::new(), &a);
        let y = apply_client_write(
            None,
            &VersionVector::new(),
            &a,
            Change::Put(Content::value(b"other".to_vec(), "text/plain", 1)),
            ConflictMode::Siblings,
            &Limits::default(),
        )
        .expect("write");
        let other = Actor::new("n2", 1);
        let m = merge_replica(Some(&x), &y, &other, ConflictMode::Siblings).expect("merge");
        assert!(m.collisions > 0, "a reused dot is counted");
        assert_eq!(m.object.siblings().len(), 2, "both kept");
    }
}
