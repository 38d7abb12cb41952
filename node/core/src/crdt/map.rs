//! The map data type: named fields, each a CRDT of the type its name ends
//! in, kept as a DVV set per field (as Riak's `riak_dt_map` keeps a dot set
//! per field).
//!
//! Each update of a field happens under a fresh dot of the coordinator and
//! stores the field's whole new value under that dot, replacing the
//! versions of the field the coordinator held (its new value is built on
//! their merge). A replica keeps a version of a field unless the other side
//! has seen its dot and no longer holds it, exactly the DVV merge; the
//! field's value is the merge of its versions. A remove with a read's
//! context drops the versions that read saw, so a concurrent update (a
//! version the read did not see) keeps the field, with the value its
//! updater built.
//!
//! The crdts crate's `Map` keeps one clock per entry instead of a dot set,
//! and loses that a field was removed when it is written again: a merge
//! with an older state then brings back what the remove took (property
//! tests found it), so the map is Quorra's own; the values in it are the
//! crate's sets and registers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{field_type, Counter, CrdtError, CrdtOp, Datatype, Field};
use crate::merge::Merge;
use crate::{Actor, Dot, VersionVector};

/// A map of named CRDT fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrdtMap {
    clock: VersionVector,
    fields: BTreeMap<String, BTreeMap<Dot, Field>>,
}

impl CrdtMap {
    /// Every update this map has seen.
    pub fn clock(&self) -> &VersionVector {
        &self.clock
    }

    /// The value of field `name`: the merge of its versions.
    pub fn get(&self, name: &str) -> Option<Field> {
        let versions = self.fields.get(name)?;
        let mut it = versions.values();
        let mut value = it.next()?.clone();
        for v in it {
            value.merge(v);
        }
        Some(value)
    }

    /// The fields and their values, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Field)> {
        self.fields
            .keys()
            .filter_map(|k| self.get(k).map(|v| (k.as_str(), v)))
    }

    /// Applies the updates under a fresh dot of `actor` each (a top-level
    /// map), then the removes.
    pub(super) fn apply(
        &mut self,
        update: &BTreeMap<String, CrdtOp>,
        remove: &[String],
        actor: &Actor,
        ctx: &VersionVector,
        now_ms: u64,
    ) -> Result<(), CrdtError> {
        for (name, op) in update {
            let counter = self
                .clock
                .get(actor)
                .checked_add(1)
                .ok_or_else(|| CrdtError::Overflow(actor.clone()))?;
            let dot = Dot {
                actor: actor.clone(),
                counter,
            };
            self.update(name, op, &dot, ctx, now_ms)?;
        }
        self.remove(remove, ctx);
        Ok(())
    }

    /// Applies the updates of a map nested in a field, all under the dot
    /// of the outer update, then the removes.
    pub(super) fn apply_nested(
        &mut self,
        update: &BTreeMap<String, CrdtOp>,
        remove: &[String],
        dot: &Dot,
        ctx: &VersionVector,
        now_ms: u64,
    ) -> Result<(), CrdtError> {
        for (name, op) in update {
            self.update(name, op, dot, ctx, now_ms)?;
        }
        self.remove(remove, ctx);
        Ok(())
    }

    fn update(
        &mut self,
        name: &str,
        op: &CrdtOp,
        dot: &Dot,
        ctx: &VersionVector,
        now_ms: u64,
    ) -> Result<(), CrdtError> {
        let mut value = match self.get(name) {
            Some(v) => v,
            None => Field::empty_of(field_type(name)?),
        };
        value.apply(op, dot, ctx, now_ms)?;
        self.fields
            .insert(name.to_owned(), BTreeMap::from([(dot.clone(), value)]));
        self.clock.witness(&dot.actor, dot.counter);
        Ok(())
    }

    /// Drops the versions of `names` the read `ctx` saw.
    fn remove(&mut self, names: &[String], ctx: &VersionVector) {
        for name in names {
            if let Some(versions) = self.fields.get_mut(name) {
                versions.retain(|d, _| !ctx.covers(d));
                if versions.is_empty() {
                    self.fields.remove(name);
                }
            }
        }
    }
}

impl Merge for CrdtMap {
    fn merge(&mut self, other: &Self) {
        let names: Vec<String> = self
            .fields
            .keys()
            .chain(other.fields.keys())
            .cloned()
            .collect();
        let empty = BTreeMap::new();
        for name in names {
            let mine = self.fields.get(&name).unwrap_or(&empty);
            let theirs = other.fields.get(&name).unwrap_or(&empty);
            let kept = merge_versions(mine, &self.clock, theirs, &other.clock, |a, b| {
                let mut both = a.clone();
                both.merge(b);
                both
            });
            if kept.is_empty() {
                self.fields.remove(&name);
            } else {
                self.fields.insert(name, kept);
            }
        }
        self.clock.join(&other.clock);
    }
}

/// The DVV merge of two sides' versions (values by the dot that wrote
/// them): a version survives when both sides hold it (`join` merges the
/// two copies, equal but for a bug) or the other side has not seen its
/// dot.
pub(super) fn merge_versions<V: Clone>(
    mine: &BTreeMap<Dot, V>,
    my_clock: &VersionVector,
    theirs: &BTreeMap<Dot, V>,
    their_clock: &VersionVector,
    join: impl Fn(&V, &V) -> V,
) -> BTreeMap<Dot, V> {
    let mut kept = BTreeMap::new();
    for (d, v) in mine {
        match theirs.get(d) {
            Some(t) => {
                kept.insert(d.clone(), join(v, t));
            }
            None if !their_clock.covers(d) => {
                kept.insert(d.clone(), v.clone());
            }
            None => {}
        }
    }
    for (d, v) in theirs {
        if !mine.contains_key(d) && !my_clock.covers(d) {
            kept.insert(d.clone(), v.clone());
        }
    }
    kept
}

impl Field {
    /// The value of a field of type `t` nothing was written to.
    pub(super) fn empty_of(t: Datatype) -> Self {
        match t {
            Datatype::Counter => Self::Counter(Counter::default()),
            Datatype::Set => Self::Set(super::FieldSet::default()),
            Datatype::Register => Self::Register(super::LwwRegister::default()),
            Datatype::Flag => Self::Flag(super::Flag::default()),
            Datatype::Map => Self::Map(Box::default()),
        }
    }
}
