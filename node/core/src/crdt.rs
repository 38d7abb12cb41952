//! Data-type buckets: counters, sets, maps, registers and flags that merge
//! themselves, as Riak's data types do, so an application never resolves
//! siblings.
//!
//! A bucket gets a [`Datatype`] through its properties (in the cluster's
//! layout, so every node merges it alike). A client sends an *operation*
//! ([`CrdtOp`]: increment, add, remove, set, enable, map updates); the
//! coordinator, always a replica of the key, applies it to its own copy
//! with its own actor (`node@epoch`), so the actors a value holds are
//! bounded by the replicas' incarnations, never by the clients.
//!
//! **How the state travels.** The coordinator stores the resulting state
//! as the value of an ordinary DVV write whose context is everything it
//! holds for the key ([`crate::write::apply_client_write`]): its copy then
//! has one sibling, and replication, read repair, hinted handoff and
//! anti-entropy carry it as any object. Two coordinators that applied
//! operations concurrently leave two siblings; each sibling's state
//! contains every state its write superseded, so a reader merges the live
//! siblings' states ([`collapse`]) and the next operation starts from that
//! merge. No write is ever dropped, and the merge of CRDT states is
//! idempotent, so states shared by two siblings count once.
//!
//! Sets travel differently where it pays ([`split`]): a store keeps a set
//! split into a header and one record per element, under a *state dot*
//! named by a digest of the state, and a set operation sends replicas the
//! operations it applied ([`SetUpdate`]), which a replica keeping the set
//! split applies to the entries they touch, and every other path reads as
//! the state they make from nothing. So an add costs the same at 100
//! elements and at 100,000.
//!
//! The types:
//!
//! - **counter**: a PN-counter that keeps, per actor, the totals it added
//!   and subtracted and the count of its changes (Riak's embedded
//!   counter); the actors are the replicas that coordinated changes.
//! - **set**: an OR-set without tombstones on the rules of the `crdts`
//!   crate's [`crdts::Orswot`], kept as a header and one entry per element
//!   ([`OrSet`]) so that an operation touches only the elements it names;
//!   a concurrent add and remove of one element keeps it (add wins). Sets
//!   inside maps are the crate's Orswot itself ([`FieldSet`]).
//! - **map**: fields named `<name>_<type>`, each a CRDT of that type
//!   (`_counter`, `_set`, `_register`, `_flag`, `_map`), kept as a DVV set
//!   of versions per field ([`CrdtMap`]): a remove drops the versions its
//!   read saw, so a concurrent update of a removed field keeps it.
//! - **register**: at the top level a multi-value register ([`MvRegister`],
//!   a DVV set: concurrent writes are all kept until a write with their
//!   context replaces them); in a map, last-writer-wins by (time, dot),
//!   on the crate's [`crdts::LWWReg`].
//! - **flag**: enable-wins (an [`crdts::Orswot`] of one element).
//!
//! Removes (set elements, map fields, disabling a flag) take the context
//! of a read: they remove what that read saw.

use std::collections::BTreeMap;

use crdts::ctx::{AddCtx, RmCtx};
use crdts::{CmRDT, CvRDT, VClock};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::merge::Merge;
use crate::{Actor, Content, ErrorCode, Object, VersionVector};

mod json;
mod map;
mod orset;
mod register;
pub mod split;

pub use json::{parse_op, render};
pub use map::CrdtMap;
pub use orset::{Entries, Loaded, OrSet, SetDelta, SetHeader};
pub use register::MvRegister;
pub use split::{
    entry_hash, joined_set, joined_set_state, read_clock, set_ops, state_object, whole_set_object,
    SetUpdate, SplitHeader, STATE_ACTOR, UPDATE_ACTOR,
};

/// The media type of a sibling that holds a CRDT state.
pub const CONTENT_TYPE: &str = "application/vnd.quorra.crdt";

/// The first byte of an encoded state: its format. Version 1 held sets as
/// the crate's Orswot; version 2 holds them as [`OrSet`]s.
const FORMAT_V1: u8 = 1;
const FORMAT_V2: u8 = 2;
/// A set update ([`SetUpdate`]): operations, read as the state they make.
const FORMAT_SET_UPDATE: u8 = 3;
/// A split set's header ([`SplitHeader`]): only ever inside a store.
const FORMAT_SET_HEADER: u8 = 4;

/// How deep maps may nest in an operation.
pub const MAX_DEPTH: usize = 8;

/// The longest map field name, in bytes.
pub const MAX_FIELD_BYTES: usize = 1024;

/// A bucket's data type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Datatype {
    /// A PN-counter.
    Counter,
    /// An add-wins OR-set of strings.
    Set,
    /// A map of named CRDT fields.
    Map,
    /// A multi-value register (last-writer-wins inside maps).
    Register,
    /// An enable-wins flag.
    Flag,
}

impl Datatype {
    /// Every type, in order.
    pub const ALL: [Self; 5] = [
        Self::Counter,
        Self::Set,
        Self::Map,
        Self::Register,
        Self::Flag,
    ];

    /// The name as properties and the API spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Set => "set",
            Self::Map => "map",
            Self::Register => "register",
            Self::Flag => "flag",
        }
    }

    /// The type of map field `name`, from its suffix (`visits_counter`).
    pub fn of_field(name: &str) -> Option<Self> {
        let (_, suffix) = name.rsplit_once('_')?;
        Self::ALL.into_iter().find(|t| t.as_str() == suffix)
    }
}

impl std::fmt::Display for Datatype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an operation or a stored state cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CrdtError {
    /// The operation does not fit the bucket's (or field's) type.
    #[error("{what} is a {expected}: {got}")]
    WrongType {
        /// What was addressed (`bucket counters`, `field tags_set`).
        what: String,
        /// Its type.
        expected: Datatype,
        /// What does not fit.
        got: String,
    },
    /// A data-type operation on a bucket of plain values.
    #[error("bucket {0} holds plain values, not a data type: give it one first (PUT /v1/buckets/{0}/props with {{\"datatype\": ...}})")]
    Plain(String),
    /// A plain read or write of a data-type bucket.
    #[error("bucket {bucket} holds {datatype} values: read and change them through /v1/crdt/{bucket}/KEY (or the client's data-type calls)")]
    NotPlain {
        /// The bucket.
        bucket: String,
        /// Its type.
        datatype: Datatype,
    },
    /// A remove names no context: it would remove nothing, or what the
    /// coordinator happens to hold.
    #[error("{0} needs the context of a read (GET the key and send its \"context\")")]
    ContextRequired(&'static str),
    /// An operation that cannot be applied as written.
    #[error("{0}")]
    Invalid(String),
    /// A stored sibling is no state of a data type (the bucket held plain
    /// values before it got its type), or does not decode.
    #[error("the key holds a value that is not a {0} state: it was written before the bucket got its data type")]
    NotAState(String),
    /// An actor's count would pass its maximum (its totals of additions
    /// and subtractions are each below 2^64).
    #[error("a counter of actor {0} cannot go further: its total of additions or subtractions is at its limit")]
    Overflow(Actor),
}

impl CrdtError {
    /// The stable code a client sees.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::WrongType { .. }
            | Self::NotAState(_)
            | Self::Plain(_)
            | Self::NotPlain { .. } => ErrorCode::WrongDatatype,
            Self::ContextRequired(_) => ErrorCode::ContextRequired,
            Self::Invalid(_) | Self::Overflow(_) => ErrorCode::InvalidParameter,
        }
    }
}

/// An operation on a data-type key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CrdtOp {
    /// Add to a counter (negative: subtract).
    Increment(i64),
    /// Add and remove set elements (removes need a context).
    Set {
        /// Elements to add.
        add: Vec<String>,
        /// Elements to remove.
        remove: Vec<String>,
    },
    /// Write a register: a JSON document, as text.
    Register(String),
    /// Enable (`true`) or disable (`false`, needs a context) a flag.
    Flag(bool),
    /// Update fields of a map and remove fields (removes need a context).
    Map {
        /// Operations on fields, by field name.
        update: BTreeMap<String, Self>,
        /// Fields to remove.
        remove: Vec<String>,
    },
}

impl CrdtOp {
    /// The type this operation applies to.
    pub fn datatype(&self) -> Datatype {
        match self {
            Self::Increment(_) => Datatype::Counter,
            Self::Set { .. } => Datatype::Set,
            Self::Register(_) => Datatype::Register,
            Self::Flag(_) => Datatype::Flag,
            Self::Map { .. } => Datatype::Map,
        }
    }

    /// Checks the operation fits a key of `datatype` (named `what` in
    /// errors) and carries a context where it removes something.
    pub fn check(&self, datatype: Datatype, has_context: bool) -> Result<(), CrdtError> {
        self.check_at(datatype, has_context, "the bucket", 0)
    }

    fn check_at(
        &self,
        datatype: Datatype,
        has_context: bool,
        what: &str,
        depth: usize,
    ) -> Result<(), CrdtError> {
        if depth > MAX_DEPTH {
            return Err(CrdtError::Invalid(format!(
                "maps nest at most {MAX_DEPTH} deep"
            )));
        }
        if self.datatype() != datatype {
            return Err(CrdtError::WrongType {
                what: what.to_owned(),
                expected: datatype,
                got: format!("a {} operation does not apply", self.datatype()),
            });
        }
        match self {
            Self::Set { add, remove } => {
                if add.is_empty() && remove.is_empty() {
                    return Err(CrdtError::Invalid(
                        "a set operation adds or removes at least one element".into(),
                    ));
                }
                if !remove.is_empty() && !has_context {
                    return Err(CrdtError::ContextRequired("removing set elements"));
                }
            }
            Self::Flag(false) if !has_context => {
                return Err(CrdtError::ContextRequired("disabling a flag"));
            }
            Self::Map { update, remove } => {
                if update.is_empty() && remove.is_empty() {
                    return Err(CrdtError::Invalid(
                        "a map operation updates or removes at least one field".into(),
                    ));
                }
                if !remove.is_empty() && !has_context {
                    return Err(CrdtError::ContextRequired("removing map fields"));
                }
                for name in update.keys().chain(remove) {
                    field_type(name)?;
                }
                if let Some(name) = update.keys().find(|n| remove.contains(n)) {
                    return Err(CrdtError::Invalid(format!(
                        "field {name} is both updated and removed"
                    )));
                }
                for (name, op) in update {
                    op.check_at(
                        field_type(name)?,
                        has_context,
                        &format!("field {name}"),
                        depth + 1,
                    )?;
                }
            }
            Self::Increment(_) | Self::Register(_) | Self::Flag(_) => {}
        }
        Ok(())
    }
}

/// Checks `op` fits a bucket of type `datatype` (`None`: plain values),
/// with `has_context` whether it names the context of a read.
pub fn check_op(
    datatype: Option<Datatype>,
    bucket: &crate::BucketName,
    op: &CrdtOp,
    has_context: bool,
) -> Result<(), CrdtError> {
    match datatype {
        Some(t) => op.check(t, has_context),
        None => Err(CrdtError::Plain(bucket.to_string())),
    }
}

fn field_type(name: &str) -> Result<Datatype, CrdtError> {
    if name.len() > MAX_FIELD_BYTES {
        return Err(CrdtError::Invalid(format!(
            "map field names are at most {MAX_FIELD_BYTES} bytes"
        )));
    }
    Datatype::of_field(name).ok_or_else(|| {
        CrdtError::Invalid(format!(
            "map field {name:?} does not end in _counter, _set, _register, _flag or _map"
        ))
    })
}

/// The crdts crate's vector clock over Quorra's actors.
pub type Clock = VClock<Actor>;

/// A clock as a version vector (a read's context).
pub fn to_vv(clock: &Clock) -> VersionVector {
    clock.iter().map(|d| (d.actor.clone(), d.counter)).collect()
}

fn to_clock(vv: &VersionVector) -> Clock {
    vv.iter()
        .map(|(a, c)| crdts::Dot::new(a.clone(), c))
        .collect()
}

/// A fresh dot for `actor` after `clock`, refusing a counter at its end.
fn next_dot(clock: &Clock, actor: &Actor) -> Result<AddCtx<Actor>, CrdtError> {
    let counter = clock
        .get(actor)
        .checked_add(1)
        .ok_or_else(|| CrdtError::Overflow(actor.clone()))?;
    let dot = crdts::Dot::new(actor.clone(), counter);
    let mut clock = clock.clone();
    clock.apply(dot.clone());
    Ok(AddCtx { clock, dot })
}

/// What of a read's context `ctx` a set or flag inside a map has seen: a
/// remove there removes only that. The context is the map's clock, which
/// names updates of other fields too; a remove naming dots the set never
/// sees would wait in it for ever (deferred). So a remove of an element the
/// coordinator has not received yet does not remove it: an element added
/// elsewhere and read before it reached the coordinator stays.
fn within(own: Clock, ctx: &Clock) -> Clock {
    let mut c = ctx.clone();
    c.glb(&own);
    c
}

/// One actor's share of a counter: what it added and subtracted, and the
/// dot of its last change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CounterEntry {
    /// The dot counter of the actor's last change.
    pub dot: u64,
    /// Everything the actor added.
    pub added: u64,
    /// Everything the actor subtracted.
    pub subtracted: u64,
}

/// A PN-counter, per actor (Riak's embedded counter).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counter {
    entries: BTreeMap<Actor, CounterEntry>,
}

/// A change of one actor's counter entry: its new state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterOp {
    actor: Actor,
    entry: CounterEntry,
}

impl Counter {
    /// The counter's value.
    pub fn value(&self) -> i128 {
        self.entries
            .values()
            .map(|e| i128::from(e.added) - i128::from(e.subtracted))
            .sum()
    }

    /// Actors that changed it.
    pub fn actors(&self) -> usize {
        self.entries.len()
    }

    /// The change `by` of `actor` at dot counter `dot` (the next one of the
    /// counter's own when `None`).
    fn op(&self, actor: &Actor, by: i64, dot: Option<u64>) -> Result<CounterOp, CrdtError> {
        if i64::try_from(self.value() + i128::from(by)).is_err() {
            return Err(CrdtError::Invalid(format!(
                "the counter is {}: adding {by} would leave the range of a 64-bit integer",
                self.value()
            )));
        }
        let mut entry = self.entries.get(actor).copied().unwrap_or_default();
        let overflow = || CrdtError::Overflow(actor.clone());
        entry.dot = match dot {
            Some(d) => d,
            None => entry.dot.checked_add(1).ok_or_else(overflow)?,
        };
        let side = if by >= 0 {
            &mut entry.added
        } else {
            &mut entry.subtracted
        };
        *side = side.checked_add(by.unsigned_abs()).ok_or_else(overflow)?;
        Ok(CounterOp {
            actor: actor.clone(),
            entry,
        })
    }

    fn apply(&mut self, op: CounterOp) {
        let e = self.entries.entry(op.actor).or_default();
        *e = (*e).max(op.entry);
    }

    fn clock(&self) -> Clock {
        self.entries
            .iter()
            .map(|(a, e)| crdts::Dot::new(a.clone(), e.dot))
            .collect()
    }
}

impl Merge for Counter {
    fn merge(&mut self, other: &Self) {
        for (actor, entry) in &other.entries {
            let e = self.entries.entry(actor.clone()).or_default();
            *e = (*e).max(*entry);
        }
    }
}

/// An add-wins OR-set of strings inside a map.
pub type FieldSet = crdts::Orswot<String, Actor>;
/// An enable-wins flag: an OR-set of one element.
pub type Flag = crdts::Orswot<(), Actor>;

impl Merge for FieldSet {
    fn merge(&mut self, other: &Self) {
        CvRDT::merge(self, other.clone());
    }
}

impl Merge for Flag {
    fn merge(&mut self, other: &Self) {
        CvRDT::merge(self, other.clone());
    }
}

/// When a map's register was written: later wins, by wall time, then dot.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Stamp {
    /// Wall time at the coordinator (ms), at least one past the value it
    /// replaced, so a write wins over every write it saw.
    pub ms: u64,
    /// The map dot of the write.
    pub counter: u64,
    /// Its actor.
    pub actor: Actor,
}

/// A last-writer-wins register (inside maps).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LwwRegister(Option<crdts::LWWReg<String, Stamp>>);

impl LwwRegister {
    /// The value, if written.
    pub fn value(&self) -> Option<&str> {
        self.0.as_ref().map(|r| r.val.as_str())
    }

    fn stamp_ms(&self) -> u64 {
        self.0.as_ref().map_or(0, |r| r.marker.ms)
    }

    fn set(&mut self, val: String, marker: Stamp) {
        let new = crdts::LWWReg { val, marker };
        // Equal stamps name one write; the greater value keeps the merge
        // commutative even so.
        let wins = self
            .0
            .as_ref()
            .is_none_or(|r| (&new.marker, &new.val) > (&r.marker, &r.val));
        if wins {
            self.0 = Some(new);
        }
    }
}

impl Merge for LwwRegister {
    fn merge(&mut self, other: &Self) {
        if let Some(r) = &other.0 {
            self.set(r.val.clone(), r.marker.clone());
        }
    }
}

/// A map field: a CRDT of the type its name ends in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Field {
    /// `_counter`.
    Counter(Counter),
    /// `_set`.
    Set(FieldSet),
    /// `_register` (last writer wins).
    Register(LwwRegister),
    /// `_flag`.
    Flag(Flag),
    /// `_map`.
    Map(Box<CrdtMap>),
}

impl Field {
    fn rank(&self) -> u8 {
        match self {
            Self::Counter(_) => 1,
            Self::Set(_) => 2,
            Self::Register(_) => 3,
            Self::Flag(_) => 4,
            Self::Map(_) => 5,
        }
    }

    /// Applies `op` as the map update `dot`: sets and flags add under it,
    /// registers are stamped with it, nested maps update under it.
    fn apply(
        &mut self,
        op: &CrdtOp,
        dot: &crate::Dot,
        ctx: &VersionVector,
        now_ms: u64,
    ) -> Result<(), CrdtError> {
        let actor = &dot.actor;
        let add = |clock: Clock| {
            let d = crdts::Dot::new(actor.clone(), dot.counter);
            let mut clock = clock;
            clock.apply(d.clone());
            AddCtx { clock, dot: d }
        };
        match (self, op) {
            (Self::Counter(c), CrdtOp::Increment(by)) => {
                // The map's dot, not the counter's own count: a field removed
                // and written again starts a new entry above the old one.
                let o = c.op(actor, *by, Some(dot.counter))?;
                c.apply(o);
            }
            (Self::Set(s), CrdtOp::Set { add: adds, remove }) => {
                if !adds.is_empty() {
                    let o = s.add_all(adds.iter().cloned(), add(s.clock()));
                    s.apply(o);
                }
                if !remove.is_empty() {
                    let clock = within(s.clock(), &to_clock(ctx));
                    s.apply(s.rm_all(remove.iter().cloned(), RmCtx { clock }));
                }
            }
            (Self::Register(r), CrdtOp::Register(v)) => {
                let ms = now_ms.max(r.stamp_ms().saturating_add(1));
                let stamp = Stamp {
                    ms,
                    counter: dot.counter,
                    actor: actor.clone(),
                };
                r.set(v.clone(), stamp);
            }
            (Self::Flag(f), CrdtOp::Flag(on)) => {
                let o = if *on {
                    f.add((), add(f.clock()))
                } else {
                    let clock = within(f.clock(), &to_clock(ctx));
                    f.rm((), RmCtx { clock })
                };
                f.apply(o);
            }
            (Self::Map(m), CrdtOp::Map { update, remove }) => {
                m.apply_nested(update, remove, dot, ctx, now_ms)?;
            }
            (me, op) => {
                return Err(CrdtError::Invalid(format!(
                    "a {} operation on a field of rank {}",
                    op.datatype(),
                    me.rank()
                )))
            }
        }
        Ok(())
    }
}

impl Merge for Field {
    fn merge(&mut self, other: &Self) {
        match (&mut *self, other) {
            (Self::Counter(a), Self::Counter(b)) => a.merge(b),
            (Self::Set(a), Self::Set(b)) => Merge::merge(a, b),
            (Self::Register(a), Self::Register(b)) => a.merge(b),
            (Self::Flag(a), Self::Flag(b)) => Merge::merge(a, b),
            (Self::Map(a), Self::Map(b)) => Merge::merge(&mut **a, b),
            // A field's name fixes its type, so only a bug mixes them: the
            // greater kind wins, which keeps the merge a join.
            (a, b) => {
                if b.rank() > a.rank() {
                    *a = b.clone();
                }
            }
        }
    }
}

/// The state of a data-type key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CrdtValue {
    /// A counter.
    Counter(Counter),
    /// A set.
    Set(OrSet),
    /// A map.
    Map(CrdtMap),
    /// A multi-value register.
    Register(MvRegister),
    /// A flag.
    Flag(Flag),
}

impl CrdtValue {
    /// The state of a key of `datatype` nothing was written to.
    pub fn empty(datatype: Datatype) -> Self {
        match datatype {
            Datatype::Counter => Self::Counter(Counter::default()),
            Datatype::Set => Self::Set(OrSet::default()),
            Datatype::Map => Self::Map(CrdtMap::default()),
            Datatype::Register => Self::Register(MvRegister::default()),
            Datatype::Flag => Self::Flag(Flag::default()),
        }
    }

    /// Its type.
    pub fn datatype(&self) -> Datatype {
        match self {
            Self::Counter(_) => Datatype::Counter,
            Self::Set(_) => Datatype::Set,
            Self::Map(_) => Datatype::Map,
            Self::Register(_) => Datatype::Register,
            Self::Flag(_) => Datatype::Flag,
        }
    }

    /// What the state has seen: the context a read hands out, which a
    /// remove names.
    pub fn clock(&self) -> VersionVector {
        to_vv(&match self {
            Self::Counter(c) => c.clock(),
            Self::Set(s) => s.clock().clone(),
            Self::Map(m) => return m.clock().clone(),
            Self::Register(r) => return r.clock().clone(),
            Self::Flag(f) => f.clock(),
        })
    }

    /// Applies `op` as `actor`, with `context` the clock of the client's
    /// read (empty when it sent none) and `now_ms` the coordinator's wall
    /// time. The caller checked the op ([`CrdtOp::check`]).
    pub fn apply(
        &mut self,
        op: &CrdtOp,
        actor: &Actor,
        context: &VersionVector,
        now_ms: u64,
    ) -> Result<(), CrdtError> {
        let ctx = to_clock(context);
        match (self, op) {
            (Self::Counter(c), CrdtOp::Increment(by)) => {
                let o = c.op(actor, *by, None)?;
                c.apply(o);
            }
            (Self::Set(s), CrdtOp::Set { add, remove }) => {
                if !add.is_empty() {
                    let o = s.add_op(actor, add.iter().cloned())?;
                    s.apply(o);
                }
                if !remove.is_empty() {
                    s.apply(OrSet::rm_op(ctx, remove.iter().cloned()));
                }
            }
            (Self::Flag(f), CrdtOp::Flag(on)) => {
                let o = if *on {
                    f.add((), next_dot(&f.clock(), actor)?)
                } else {
                    f.rm((), RmCtx { clock: ctx })
                };
                f.apply(o);
            }
            (Self::Register(r), CrdtOp::Register(v)) => r.write(v.clone(), actor, context)?,
            (Self::Map(m), CrdtOp::Map { update, remove }) => {
                m.apply(update, remove, actor, context, now_ms)?;
            }
            (me, op) => {
                return Err(CrdtError::WrongType {
                    what: "the key".into(),
                    expected: me.datatype(),
                    got: format!("a {} operation does not apply", op.datatype()),
                })
            }
        }
        Ok(())
    }

    /// The state as a sibling's content (written at `timestamp_ms`).
    pub fn to_content(&self, timestamp_ms: u64) -> Content {
        // Only sets changed form in format 2: every other type is written as
        // format 1, which nodes of earlier builds read (a rolling upgrade
        // keeps serving them; sets written by this build need it everywhere).
        let format = match self {
            Self::Set(_) => FORMAT_V2,
            _ => FORMAT_V1,
        };
        let mut bytes = vec![format];
        if let Err(e) = rmp_serde::encode::write(&mut bytes, self) {
            unreachable!("encoding a CRDT state into memory failed: {e}");
        }
        Content::value(bytes, CONTENT_TYPE, timestamp_ms)
    }

    /// The state a sibling's content holds.
    pub fn from_content(c: &Content) -> Result<Self, CrdtError> {
        let not = || CrdtError::NotAState("data type".into());
        if c.content_type != CONTENT_TYPE {
            return Err(not());
        }
        match c.value.split_first() {
            Some((&FORMAT_V2, body)) => rmp_serde::from_slice(body).map_err(|_| not()),
            Some((&FORMAT_V1, body)) => rmp_serde::from_slice::<v1::CrdtValueV1>(body)
                .map(Self::from)
                .map_err(|_| not()),
            Some((&FORMAT_SET_UPDATE, _)) => SetUpdate::of_content(c)
                .map(|u| Self::Set(u.state()))
                .ok_or_else(not),
            _ => Err(not()),
        }
    }
}

impl Merge for CrdtValue {
    fn merge(&mut self, other: &Self) {
        match (&mut *self, other) {
            (Self::Counter(a), Self::Counter(b)) => a.merge(b),
            (Self::Set(a), Self::Set(b)) => Merge::merge(a, b),
            (Self::Map(a), Self::Map(b)) => Merge::merge(a, b),
            (Self::Register(a), Self::Register(b)) => Merge::merge(a, b),
            (Self::Flag(a), Self::Flag(b)) => Merge::merge(a, b),
            // A bucket's type is fixed once set, so only a bug mixes
            // types: the greater type wins, which keeps the laws.
            (a, b) => {
                if b.datatype() > a.datatype() {
                    *a = b.clone();
                }
            }
        }
    }
}

/// States as format 1 stored them: sets were the crate's Orswot, read here
/// through a copy of its fields (same order, so the same encoding).
mod v1 {
    use std::collections::{BTreeSet, HashMap, HashSet};

    use serde::Deserialize;

    use super::{Clock, Counter, CrdtMap, CrdtValue, Flag, MvRegister, OrSet};

    #[derive(Deserialize)]
    pub(super) struct OrswotV1 {
        clock: Clock,
        entries: HashMap<String, Clock>,
        deferred: HashMap<Clock, HashSet<String>>,
    }

    #[derive(Deserialize)]
    pub(super) enum CrdtValueV1 {
        Counter(Counter),
        Set(OrswotV1),
        Map(CrdtMap),
        Register(MvRegister),
        Flag(Flag),
    }

    impl From<CrdtValueV1> for CrdtValue {
        fn from(v: CrdtValueV1) -> Self {
            match v {
                CrdtValueV1::Counter(c) => Self::Counter(c),
                CrdtValueV1::Set(s) => Self::Set(OrSet::from_orswot(
                    s.clock,
                    s.entries,
                    s.deferred
                        .into_iter()
                        .map(|(c, m)| (c, m.into_iter().collect::<BTreeSet<_>>())),
                )),
                CrdtValueV1::Map(m) => Self::Map(m),
                CrdtValueV1::Register(r) => Self::Register(r),
                CrdtValueV1::Flag(f) => Self::Flag(f),
            }
        }
    }
}

/// The merge of the states of `object`'s live siblings (`None` when it has
/// none): what a read shows and what the next operation starts from.
/// Plain values (written before the bucket got its type) are no state:
/// they are left out, and the next operation's write replaces them.
pub fn collapse(object: &Object) -> Result<Option<CrdtValue>, CrdtError> {
    let mut out: Option<CrdtValue> = None;
    let states = object
        .live_siblings()
        .filter(|s| s.content.content_type == CONTENT_TYPE);
    for s in states {
        let v = CrdtValue::from_content(&s.content)?;
        match &mut out {
            Some(o) => o.merge(&v),
            None => out = Some(v),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
