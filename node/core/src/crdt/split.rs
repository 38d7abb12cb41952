//! A set as a store keeps it split and as replicas are sent it: the
//! pieces that let an add to a set of 100,000 elements cost a header and
//! one entry, on the coordinator and on every replica.
//!
//! - **Stored split.** A store keeps a set's [`SetHeader`] in the key's
//!   object record and each element's dots in a record of its own. The
//!   header travels with the entry count and the XOR of the entries'
//!   hashes ([`SplitHeader`]), so the state's digest ([`SplitHeader::digest`])
//!   follows every change without reading the entries.
//! - **One version per state.** The object a store keeps for a split set
//!   carries one sibling under a *state dot*, `~set@<digest>` counter 1
//!   ([`state_object`]), not a dot of the coordinator. Two replicas that
//!   hold the same state hold the same version, so anti-entropy's trees and
//!   read repair see them agree; two different states are two concurrent
//!   siblings, which [`super::collapse`] joins.
//! - **Operations as the replicated value.** A coordinator sends replicas
//!   the operations it applied ([`SetUpdate`], a few hundred bytes), under
//!   an *update dot* `~op@<hash>`. A replica that keeps the set split
//!   applies them to the entries they touch; every other path (hints, a
//!   replica holding an older whole state, a reader) decodes them as the
//!   state they make from nothing ([`SetUpdate::state`]), and merging that
//!   state into a set is applying them (the law
//!   `crdt/orset/tests.rs` checks for [`OrSet::of_op`]).
//!
//! The update also names the coordinator's set after it (its clock and
//! size): what a client's write is answered, since a set's elements are
//! read, never returned by every add.

use serde::{Deserialize, Serialize};

use super::{to_clock, to_vv, Clock, CrdtError, CrdtOp, CrdtValue, OrSet, SetDelta, SetHeader};
use super::{CONTENT_TYPE, FORMAT_SET_HEADER, FORMAT_SET_UPDATE};
use crate::hash::checksum;
use crate::merge::Merge;
use crate::{Actor, ConflictMode, Content, Object, VersionVector};

/// The node name of state dots (never a node's: ids cannot hold `~`).
pub const STATE_ACTOR: &str = "~set";
/// The node name of update dots.
pub const UPDATE_ACTOR: &str = "~op";

/// A split set's header as stored: the CRDT header, how many entries the
/// set has, their size and the XOR of their hashes ([`entry_hash`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitHeader {
    /// Clock, waiting removes and adds.
    pub header: SetHeader,
    /// Elements in the set.
    pub count: u64,
    /// Bytes of the elements and their dots, encoded: about what the
    /// whole set takes in a read's answer.
    pub bytes: u64,
    /// XOR of every entry's [`entry_hash`].
    pub xor: u64,
}

/// The hash of one element's entry, as [`SplitHeader::xor`] sums them.
pub fn entry_hash(element: &str, dots: &Clock) -> u64 {
    checksum(&entry_bytes(element, dots))
}

fn entry_bytes(element: &str, dots: &Clock) -> Vec<u8> {
    rmp_serde::to_vec(&(element, dots)).unwrap_or_default()
}

impl SplitHeader {
    /// The header of a whole set.
    pub fn of(set: &OrSet) -> Self {
        let mut out = Self {
            header: set.header().clone(),
            ..Self::default()
        };
        for (e, d) in set.entries() {
            out.changed(e, None, Some(d));
        }
        out
    }

    /// Notes that `element`'s entry went from `before` to `after` (`None`:
    /// no entry).
    pub fn changed(&mut self, element: &str, before: Option<&Clock>, after: Option<&Clock>) {
        for (dots, added) in [(before, false), (after, true)] {
            if let Some(d) = dots {
                let bytes = entry_bytes(element, d);
                self.xor ^= checksum(&bytes);
                let len = bytes.len() as u64;
                if added {
                    self.count += 1;
                    self.bytes += len;
                } else {
                    self.count = self.count.saturating_sub(1);
                    self.bytes = self.bytes.saturating_sub(len);
                }
            }
        }
    }

    /// The state's digest: equal on two replicas exactly when they hold
    /// the same set (up to a 64-bit hash collision).
    pub fn digest(&self) -> u64 {
        checksum(&rmp_serde::to_vec(self).unwrap_or_default())
    }

    /// The header as the stored object's one sibling, under its state dot.
    pub fn to_object(&self) -> Object {
        let mut bytes = vec![FORMAT_SET_HEADER];
        if let Err(e) = rmp_serde::encode::write(&mut bytes, self) {
            unreachable!("encoding a set header into memory failed: {e}");
        }
        state_object(Content::value(bytes, CONTENT_TYPE, 0), self.digest())
    }

    /// The header a stored object holds (`None`: not a split set's).
    pub fn of_object(object: &Object) -> Option<Result<Self, CrdtError>> {
        let content = only_content(object)?;
        match content.value.split_first() {
            Some((&FORMAT_SET_HEADER, body)) => Some(
                rmp_serde::from_slice(body).map_err(|_| CrdtError::NotAState("set header".into())),
            ),
            _ => None,
        }
    }
}

/// The object holding `content` under the state dot of `digest`: one
/// sibling, a clock of that dot alone.
pub fn state_object(content: Content, digest: u64) -> Object {
    dotted(STATE_ACTOR, digest, content)
}

fn dotted(node: &str, id: u64, content: Content) -> Object {
    let mut o = Object::new();
    let actor = Actor::new(node, id);
    if let Err(e) = o.update(
        &VersionVector::new(),
        &actor,
        content,
        ConflictMode::Siblings,
    ) {
        unreachable!("the first dot of a fresh object cannot overflow: {e}");
    }
    o
}

/// The content of an object's one live sibling, if it has exactly one and
/// no tombstone.
fn only_content(object: &Object) -> Option<&Content> {
    match object.siblings() {
        [one] if !one.content.deleted && one.content.content_type == CONTENT_TYPE => {
            Some(&one.content)
        }
        _ => None,
    }
}

/// The operations a coordinator applied to a set, as replicas are sent
/// them, with the coordinator's set after them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetUpdate {
    /// The operations, in the order they were applied.
    pub ops: Vec<SetDelta>,
    /// The coordinator's clock after them: the context its answer hands
    /// out.
    pub clock: Clock,
    /// The coordinator's element count after them.
    pub size: u64,
}

impl SetUpdate {
    /// The state the operations make from an empty set: merged into a
    /// set, it applies them there.
    pub fn state(&self) -> OrSet {
        let mut s = OrSet::default();
        for op in &self.ops {
            s.apply(op.clone());
        }
        s
    }

    /// As the value replicas are sent, under its update dot.
    pub fn to_object(&self) -> Object {
        let mut bytes = vec![FORMAT_SET_UPDATE];
        if let Err(e) = rmp_serde::encode::write(&mut bytes, self) {
            unreachable!("encoding a set update into memory failed: {e}");
        }
        let id = checksum(&bytes);
        dotted(UPDATE_ACTOR, id, Content::value(bytes, CONTENT_TYPE, 0))
    }

    /// The update `object` carries (`None`: it is no set update alone).
    pub fn of_object(object: &Object) -> Option<Self> {
        Self::of_content(only_content(object)?)
    }

    /// The update a content holds (`None`: not one, or undecodable).
    pub(super) fn of_content(content: &Content) -> Option<Self> {
        match content.value.split_first() {
            Some((&FORMAT_SET_UPDATE, body)) => rmp_serde::from_slice(body).ok(),
            _ => None,
        }
    }
}

/// The operations a set operation from a client makes at a coordinator
/// whose set has `header`: the add under `actor`'s next dot, then the
/// remove of what the read (`context`) saw, as [`CrdtValue::apply`] makes
/// them on a whole set.
pub fn set_ops(
    header: &SetHeader,
    op: &CrdtOp,
    actor: &Actor,
    context: &VersionVector,
) -> Result<Vec<SetDelta>, CrdtError> {
    let CrdtOp::Set { add, remove } = op else {
        return Err(CrdtError::WrongType {
            what: "the key".into(),
            expected: super::Datatype::Set,
            got: format!("a {} operation does not apply", op.datatype()),
        });
    };
    let mut ops = Vec::with_capacity(2);
    if !add.is_empty() {
        ops.push(header.add_op(actor, add.iter().cloned())?);
    }
    if !remove.is_empty() {
        ops.push(OrSet::rm_op(to_clock(context), remove.iter().cloned()));
    }
    Ok(ops)
}

/// The context a client is handed with `object` in a data-type bucket:
/// the clock of the coordinator's set after a set write, else the clock
/// of the merged state (`None`: no state).
pub fn read_clock(object: &Object) -> Option<VersionVector> {
    if let Some(u) = SetUpdate::of_object(object) {
        return Some(to_vv(&u.clock));
    }
    super::collapse(object).ok()?.map(|s| s.clock())
}

/// `object` with the states of its siblings joined into one, under its
/// state dot, when every sibling is a set's state or update (`None`:
/// otherwise, as for a tombstone or a plain value). What a hint keeps, so
/// updates held for a peer that is down do not pile up as siblings.
pub fn joined_set(object: &Object) -> Option<Object> {
    joined_set_state(object).map(|s| whole_set_object(&s))
}

/// The join of `object`'s sibling states when every sibling (one at
/// least) is a set's state or update (`None`: otherwise).
pub fn joined_set_state(object: &Object) -> Option<OrSet> {
    let mut out = OrSet::default();
    for s in object.siblings() {
        match (s.content.deleted, CrdtValue::from_content(&s.content)) {
            (false, Ok(CrdtValue::Set(set))) => Merge::merge(&mut out, &set),
            _ => return None,
        }
    }
    (!object.siblings().is_empty()).then_some(out)
}

/// A whole set as an object under its state dot (the same version a
/// store keeping it split shows).
pub fn whole_set_object(set: &OrSet) -> Object {
    let digest = SplitHeader::of(set).digest();
    state_object(CrdtValue::Set(set.clone()).to_content(0), digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(i: u64) -> Actor {
        Actor::new(format!("n{i}"), 1)
    }

    fn add(set: &mut OrSet, who: u64, e: &str) -> SetDelta {
        let op = set.add_op(&actor(who), [e.to_owned()]).expect("dot");
        set.apply(op.clone());
        op
    }

    /// An update's state merged into a set applies its operations, in any
    /// order and twice; the answer's context is the coordinator's clock.
    #[test]
    fn an_update_merged_as_a_state_applies_its_operations() {
        let mut coordinator = OrSet::default();
        let mut replica = OrSet::default();
        let mut updates = Vec::new();
        for (i, e) in ["a", "b", "c", "d"].iter().enumerate() {
            let op = add(&mut coordinator, 1, e);
            let ops = if i == 3 {
                let rm = OrSet::rm_op(coordinator.clock().clone(), ["b".to_owned()]);
                coordinator.apply(rm.clone());
                vec![op, rm]
            } else {
                vec![op]
            };
            updates.push(SetUpdate {
                ops,
                clock: coordinator.clock().clone(),
                size: coordinator.members().count() as u64,
            });
        }
        for u in updates.iter().rev().chain(&updates) {
            let object = u.to_object();
            let back = SetUpdate::of_object(&object).expect("an update");
            assert_eq!(&back, u);
            let Ok(Some(CrdtValue::Set(s))) = super::super::collapse(&object) else {
                panic!("an update reads as a set state");
            };
            Merge::merge(&mut replica, &s);
        }
        assert_eq!(replica, coordinator);
        let last = updates.last().expect("some").to_object();
        assert_eq!(read_clock(&last), Some(to_vv(coordinator.clock())));
        assert_eq!(updates.last().map(|u| u.size), Some(3));
    }

    /// Equal sets show equal versions (state dots), different ones
    /// concurrent siblings; a hint's updates join into one sibling.
    #[test]
    fn equal_sets_share_a_version_and_updates_join() {
        let mut one = OrSet::default();
        let mut updates = Object::new();
        for e in ["x", "y", "z"] {
            let op = add(&mut one, 1, e);
            let u = SetUpdate {
                ops: vec![op],
                clock: one.clock().clone(),
                size: 0,
            };
            updates.merge(&u.to_object(), ConflictMode::Siblings);
        }
        assert_eq!(updates.siblings().len(), 3, "updates are concurrent");
        let joined = joined_set(&updates).expect("all set updates");
        assert_eq!(joined, whole_set_object(&one));
        assert_eq!(joined.siblings().len(), 1);
        let mut other = one.clone();
        add(&mut other, 2, "w");
        let (a, b) = (whole_set_object(&one), whole_set_object(&other));
        assert_ne!(a.version_digest(), b.version_digest());
        let mut both = a.clone();
        both.merge(&b, ConflictMode::Siblings);
        assert_eq!(both.siblings().len(), 2, "two states are siblings");
        assert_eq!(
            joined_set(&both).map(|o| o.version_digest()),
            Some(b.version_digest()),
            "their join is the larger"
        );
        // A tombstone or a plain value is no set.
        let mut plain = a;
        plain.merge(
            &state_object(Content::value(b"v".to_vec(), "text/plain", 1), 9),
            ConflictMode::Siblings,
        );
        assert_eq!(joined_set(&plain), None);
    }
}
