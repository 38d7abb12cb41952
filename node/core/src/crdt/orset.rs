//! The data-type set, kept so that an operation touches only the elements
//! it names: an add-wins OR-set without tombstones (the rules of the `crdts`
//! crate's [`crdts::Orswot`]), split into a small [`SetHeader`] and one
//! entry per element, and changed by operations that can travel as deltas.
//!
//! Why split it: a set of 100,000 elements is megabytes, and an add that
//! decodes, changes and rewrites all of it costs in proportion to the set.
//! An operation ([`SetDelta`], the crate's `orswot::Op`) names a dot and
//! members (an add) or a read's context and members (a remove). Applying
//! one ([`SetHeader::apply`]) reads and writes the header and the entries
//! of [`SetHeader::touched_by`] only, so a store that keeps one record per
//! element ([`Entries`]) changes a few hundred bytes per add, whatever the
//! set's size, and a replica can be sent the operation instead of the set.
//!
//! The crate's Orswot needs an actor's operations in the order it made
//! them: its clock is a version vector, and an add above the next counter
//! would claim its actor's earlier adds as seen. Here the clock is a
//! version vector *and a dot cloud*: an add that arrives ahead of its
//! actor's earlier ones applies at once, and its dot waits in the cloud
//! until the ones before it arrive and the vector can take it. So every
//! operation applies on its own, and an acknowledged add shows even when
//! an earlier, unacknowledged one was lost with its coordinator's disk (a
//! gap that never fills). A remove whose context names dots not seen yet
//! waits as the crate's do (`deferred`). Deltas may then arrive late, twice
//! or out of order, and mix with full-state merges ([`Merge`] for
//! [`OrSet`]): every path ends where the crate's Orswot ends with every
//! operation applied in order (the property tests in `crdt/orset/tests.rs`
//! check it against the crate).
//! The read context is the version vector, as for every other type (a
//! remove's context cannot name the cloud: an element whose add sits in it
//! is not removed until the dots before it arrive).

use std::collections::{BTreeMap, BTreeSet};

use crdts::orswot::Op;
use crdts::{CmRDT, CvRDT, ResetRemove, VClock};
use serde::{Deserialize, Serialize};

use super::{Clock, CrdtError};
use crate::merge::Merge;
use crate::Actor;

/// An operation on a set, as it travels to replicas.
pub type SetDelta = Op<String, Actor>;

/// A clock as an ordered map key (the crate's clock is only partially
/// ordered).
type ClockKey = BTreeMap<Actor, u64>;

fn key_of(clock: &Clock) -> ClockKey {
    clock.iter().map(|d| (d.actor.clone(), d.counter)).collect()
}

fn clock_of(key: &ClockKey) -> Clock {
    key.iter()
        .map(|(a, c)| crdts::Dot::new(a.clone(), *c))
        .collect()
}

/// Where a set's element entries live: all in memory ([`OrSet`]), or the
/// ones an operation touches, loaded from one record each.
pub trait Entries {
    /// The dots that hold `element` in the set (`None`: not in it).
    fn entry(&self, element: &str) -> Option<&Clock>;
    /// Sets `element`'s dots (`None`: it leaves the set).
    fn set(&mut self, element: &str, dots: Option<Clock>);
}

impl Entries for BTreeMap<String, Clock> {
    fn entry(&self, element: &str) -> Option<&Clock> {
        self.get(element)
    }

    fn set(&mut self, element: &str, dots: Option<Clock>) {
        match dots {
            Some(c) => {
                self.insert(element.to_owned(), c);
            }
            None => {
                self.remove(element);
            }
        }
    }
}

/// The entries an operation touches, as loaded from their records, and
/// what it changed: what a store writes back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Loaded {
    before: BTreeMap<String, Option<Clock>>,
    now: BTreeMap<String, Option<Clock>>,
}

impl Loaded {
    /// The entries of `elements`, as stored (`None`: no record).
    pub fn new(elements: impl IntoIterator<Item = (String, Option<Clock>)>) -> Self {
        let before: BTreeMap<_, _> = elements.into_iter().collect();
        Self {
            now: before.clone(),
            before,
        }
    }

    /// The entries that changed, with their dots before and now (`None`:
    /// no record; now `None`: delete the record).
    pub fn changes(&self) -> impl Iterator<Item = (&str, Option<&Clock>, Option<&Clock>)> + '_ {
        self.now.iter().filter_map(|(e, now)| {
            let before = self.before.get(e).and_then(Option::as_ref);
            (before != now.as_ref()).then_some((e.as_str(), before, now.as_ref()))
        })
    }
}

impl Entries for Loaded {
    fn entry(&self, element: &str) -> Option<&Clock> {
        // Reading an entry that was not loaded as absent would overwrite its
        // record: every caller loads `touched_by`, so this is a bug, loudly.
        assert!(
            self.now.contains_key(element),
            "set entry {element:?} read but not loaded"
        );
        self.now.get(element).and_then(Option::as_ref)
    }

    fn set(&mut self, element: &str, dots: Option<Clock>) {
        self.now.insert(element.to_owned(), dots);
    }
}

/// What a set keeps besides its entries: its clock (a version vector and
/// the dots seen ahead of it), and removes waiting for the adds they name.
/// Its size follows the actors and what is in flight, not the set's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetHeader {
    clock: Clock,
    /// Dots seen above `clock` (each more than one past it).
    cloud: BTreeSet<(Actor, u64)>,
    deferred: BTreeMap<ClockKey, BTreeSet<String>>,
}

impl SetHeader {
    /// The operations this set has applied up to its first gap: a read's
    /// context.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Whether the set has applied the add of `dot`.
    fn seen(&self, actor: &Actor, counter: u64) -> bool {
        counter <= self.clock.get(actor) || self.cloud.contains(&(actor.clone(), counter))
    }

    /// The dots of `dots` this set has not seen.
    fn unseen(&self, dots: &Clock) -> Clock {
        dots.iter()
            .filter(|d| !self.seen(d.actor, d.counter))
            .map(|d| crdts::Dot::new(d.actor.clone(), d.counter))
            .collect()
    }

    /// Records `dot` as seen: into the vector when it is next, else into
    /// the cloud; then moves into the vector what the cloud holds next.
    fn witness(&mut self, dot: crdts::Dot<Actor>) {
        if dot.counter > self.clock.get(&dot.actor) {
            self.cloud.insert((dot.actor, dot.counter));
        }
        self.compact();
    }

    fn compact(&mut self) {
        loop {
            let clock = &self.clock;
            self.cloud.retain(|(a, n)| *n > clock.get(a));
            let next = self
                .cloud
                .iter()
                .find(|(a, n)| Some(*n) == self.clock.get(a).checked_add(1))
                .cloned();
            let Some((a, n)) = next else { return };
            self.cloud.remove(&(a.clone(), n));
            self.clock.apply(crdts::Dot::new(a, n));
        }
    }

    /// The elements whose entries applying `op` may read or change: its
    /// members and those of the removes and adds waiting in the header.
    pub fn touched_by(&self, op: &SetDelta) -> BTreeSet<String> {
        self.touched_by_all(std::slice::from_ref(op))
    }

    /// The elements whose entries applying `ops` in turn may read or
    /// change: applying one only moves its own members into or out of
    /// what waits, so the members of all and what waits now are enough.
    pub fn touched_by_all(&self, ops: &[SetDelta]) -> BTreeSet<String> {
        let members = ops.iter().flat_map(|op| match op {
            Op::Add { members, .. } | Op::Rm { members, .. } => members,
        });
        members
            .chain(self.deferred.values().flatten())
            .cloned()
            .collect()
    }

    /// The add of `members` as `actor`, under its next dot (past any of
    /// its dots the cloud holds).
    pub fn add_op(
        &self,
        actor: &Actor,
        members: impl IntoIterator<Item = String>,
    ) -> Result<SetDelta, CrdtError> {
        let mut clock = self.clock.clone();
        if let Some((a, n)) = self.cloud.iter().rev().find(|(a, _)| a == actor) {
            clock.apply(crdts::Dot::new(a.clone(), *n));
        }
        Ok(Op::Add {
            dot: super::next_dot(&clock, actor)?.dot,
            members: members.into_iter().collect(),
        })
    }

    /// Applies `op` to this header and `entries` (holding at least
    /// [`Self::touched_by`]). Idempotent, and any order of a set's
    /// operations ends in the same state.
    pub fn apply(&mut self, entries: &mut impl Entries, op: SetDelta) {
        match op {
            Op::Add { dot, members } => {
                if !self.seen(&dot.actor, dot.counter) {
                    self.add_now(entries, dot, members);
                }
            }
            Op::Rm { clock, members } => {
                self.apply_rm(entries, &clock, members.into_iter().collect());
            }
        }
    }

    fn add_now(
        &mut self,
        entries: &mut impl Entries,
        dot: crdts::Dot<Actor>,
        members: impl IntoIterator<Item = String>,
    ) {
        for m in members {
            let mut dots = entries.entry(&m).cloned().unwrap_or_default();
            dots.apply(dot.clone());
            entries.set(&m, Some(dots));
        }
        self.witness(dot);
        self.apply_deferred(entries);
    }

    fn apply_rm(&mut self, entries: &mut impl Entries, clock: &Clock, members: BTreeSet<String>) {
        for m in &members {
            if let Some(dots) = entries.entry(m) {
                let mut dots = dots.clone();
                dots.reset_remove(clock);
                entries.set(m, (!dots.is_empty()).then_some(dots));
            }
        }
        if matches!(
            clock.partial_cmp(&self.clock),
            None | Some(std::cmp::Ordering::Greater)
        ) {
            self.deferred
                .entry(key_of(clock))
                .or_default()
                .extend(members);
        }
    }

    fn apply_deferred(&mut self, entries: &mut impl Entries) {
        for (clock, members) in std::mem::take(&mut self.deferred) {
            self.apply_rm(entries, &clock_of(&clock), members);
        }
    }
}

/// A whole set in memory: a header and every entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrSet {
    header: SetHeader,
    entries: BTreeMap<String, Clock>,
}

impl OrSet {
    /// Its header.
    pub fn header(&self) -> &SetHeader {
        &self.header
    }

    /// Every operation it has applied: a read's context.
    pub fn clock(&self) -> &Clock {
        &self.header.clock
    }

    /// Its elements, in order.
    pub fn members(&self) -> impl Iterator<Item = &String> + '_ {
        self.entries.keys()
    }

    /// Each element with the dots that hold it.
    pub fn entries(&self) -> impl Iterator<Item = (&String, &Clock)> + '_ {
        self.entries.iter()
    }

    /// A set from its parts, as stored.
    pub fn from_parts(header: SetHeader, entries: BTreeMap<String, Clock>) -> Self {
        Self { header, entries }
    }

    /// The add of `members` as `actor`, under its next dot.
    pub fn add_op(
        &self,
        actor: &Actor,
        members: impl IntoIterator<Item = String>,
    ) -> Result<SetDelta, CrdtError> {
        self.header.add_op(actor, members)
    }

    /// The remove of `members` as a read with context `clock` saw them.
    pub fn rm_op(clock: Clock, members: impl IntoIterator<Item = String>) -> SetDelta {
        Op::Rm {
            clock,
            members: members.into_iter().collect(),
        }
    }

    /// Applies `op` (see [`SetHeader::apply`]).
    pub fn apply(&mut self, op: SetDelta) {
        self.header.apply(&mut self.entries, op);
    }

    /// `op` as a state of its own: what an empty set becomes by it (an
    /// add waiting for its actor's earlier ones, or a remove waiting for
    /// what it names). Merging it into a set is applying `op` there, so a
    /// replica can be sent this state, a few hundred bytes, instead of the
    /// whole set, through every path that carries states.
    pub fn of_op(op: SetDelta) -> Self {
        let mut s = Self::default();
        s.apply(op);
        s
    }

    /// A set with an Orswot's clock, entries and deferred removes (states
    /// stored before sets were split).
    pub(super) fn from_orswot(
        clock: Clock,
        entries: impl IntoIterator<Item = (String, Clock)>,
        deferred: impl IntoIterator<Item = (Clock, BTreeSet<String>)>,
    ) -> Self {
        let mut header = SetHeader {
            clock,
            ..SetHeader::default()
        };
        for (c, members) in deferred {
            header
                .deferred
                .entry(key_of(&c))
                .or_default()
                .extend(members);
        }
        Self {
            header,
            entries: entries.into_iter().collect(),
        }
    }
}

/// The crate's Orswot merge, entry by entry (with "seen" meaning the
/// vector or the cloud), then the waiting removes of both sides.
impl Merge for OrSet {
    fn merge(&mut self, other: &Self) {
        let (mine, theirs) = (&self.header, &other.header);
        let mut out = BTreeMap::new();
        for (e, dots) in &self.entries {
            match other.entries.get(e) {
                // Both hold it: keep the dots both hold and those the other
                // side has not seen (it cannot have dropped them).
                Some(their) => {
                    let mut common = VClock::intersection(dots, their);
                    common.merge(theirs.unseen(dots));
                    common.merge(mine.unseen(their));
                    if !common.is_empty() {
                        out.insert(e.clone(), common);
                    }
                }
                // Only here: the other side dropped what it saw of it.
                None => {
                    let d = theirs.unseen(dots);
                    if !d.is_empty() {
                        out.insert(e.clone(), d);
                    }
                }
            }
        }
        for (e, their) in &other.entries {
            if !self.entries.contains_key(e) {
                let d = mine.unseen(their);
                if !d.is_empty() {
                    out.insert(e.clone(), d);
                }
            }
        }
        self.entries = out;
        for (clock, members) in &other.header.deferred {
            self.header
                .apply_rm(&mut self.entries, &clock_of(clock), members.clone());
        }
        self.header.clock.merge(other.header.clock.clone());
        self.header.cloud.extend(other.header.cloud.iter().cloned());
        self.header.compact();
        self.header.apply_deferred(&mut self.entries);
    }
}

#[cfg(test)]
mod tests;
