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
//! Orswot operations must reach a replica in the order their actor made
//! them (an add below the counter the header holds for its actor is taken
//! as seen). So an add more than one past that counter waits in the header
//! (`pending`) until the ones before it arrive, by another delta or a
//! full-state merge; a remove whose context names dots not seen yet waits
//! as the crate's do (`deferred`). Deltas may then arrive late, twice or out
//! of order, and mix with full-state merges ([`Merge`] for [`OrSet`]): every
//! path ends where the crate's Orswot ends with every operation applied in
//! order (the property tests in `crdt/orset/tests.rs` check it against the
//! crate).
//! The read context is the header's clock, a version vector as for every
//! other type.

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

    /// The entries that changed, with their new dots (`None`: delete the
    /// record).
    pub fn changes(&self) -> impl Iterator<Item = (&str, Option<&Clock>)> + '_ {
        self.now
            .iter()
            .filter(|(e, now)| self.before.get(*e) != Some(*now))
            .map(|(e, now)| (e.as_str(), now.as_ref()))
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

/// What a set keeps besides its entries: its clock, removes waiting for
/// the adds they name, and adds waiting for their actor's earlier ones.
/// Its size follows the actors and what is in flight, not the set's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetHeader {
    clock: Clock,
    deferred: BTreeMap<ClockKey, BTreeSet<String>>,
    pending: BTreeMap<(Actor, u64), BTreeSet<String>>,
}

impl SetHeader {
    /// Every operation this set has applied: a read's context.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The elements whose entries applying `op` may read or change: its
    /// members and those of the removes and adds waiting in the header.
    pub fn touched_by(&self, op: &SetDelta) -> BTreeSet<String> {
        let members = match op {
            Op::Add { members, .. } | Op::Rm { members, .. } => members,
        };
        let waiting = self.deferred.values().chain(self.pending.values());
        members.iter().chain(waiting.flatten()).cloned().collect()
    }

    /// Applies `op` to this header and `entries` (holding at least
    /// [`Self::touched_by`]). Idempotent, and any order of a set's
    /// operations ends in the same state.
    pub fn apply(&mut self, entries: &mut impl Entries, op: SetDelta) {
        match op {
            Op::Add { dot, members } => {
                let seen = self.clock.get(&dot.actor);
                if dot.counter <= seen {
                    return;
                }
                if dot.counter - seen > 1 {
                    self.pending
                        .entry((dot.actor, dot.counter))
                        .or_default()
                        .extend(members);
                    return;
                }
                self.add_now(entries, dot, members);
                self.drain_pending(entries);
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
        self.clock.apply(dot);
        self.apply_deferred(entries);
    }

    /// Applies the waiting adds whose turn has come, and forgets the ones
    /// the clock covers (a full-state merge brought them).
    fn drain_pending(&mut self, entries: &mut impl Entries) {
        loop {
            let clock = &self.clock;
            self.pending.retain(|(a, n), _| *n > clock.get(a));
            let next = self
                .pending
                .keys()
                .find(|(a, n)| Some(*n) == self.clock.get(a).checked_add(1))
                .cloned();
            let Some(k) = next else { return };
            let members = self.pending.remove(&k).unwrap_or_default();
            self.add_now(entries, crdts::Dot::new(k.0, k.1), members);
        }
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
        Ok(Op::Add {
            dot: super::next_dot(&self.header.clock, actor)?.dot,
            members: members.into_iter().collect(),
        })
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

/// Whether `clock` has seen every dot of `dots`.
fn covers(clock: &Clock, dots: &Clock) -> bool {
    matches!(
        clock.partial_cmp(dots),
        Some(std::cmp::Ordering::Greater | std::cmp::Ordering::Equal)
    )
}

/// The crate's Orswot merge, entry by entry, then the waiting removes and
/// adds of both sides.
impl Merge for OrSet {
    fn merge(&mut self, other: &Self) {
        let (mine, theirs) = (&self.header.clock, &other.header.clock);
        let mut out = BTreeMap::new();
        for (e, dots) in &self.entries {
            match other.entries.get(e) {
                // Both hold it: keep the dots both hold and those the other
                // side has not seen (it cannot have dropped them).
                Some(their) => {
                    let mut common = VClock::intersection(dots, their);
                    common.merge(dots.clone_without(theirs));
                    common.merge(their.clone_without(mine));
                    if !common.is_empty() {
                        out.insert(e.clone(), common);
                    }
                }
                // Only here: the other side dropped what it saw of it.
                None => {
                    if !covers(theirs, dots) {
                        let mut d = dots.clone();
                        d.reset_remove(theirs);
                        out.insert(e.clone(), d);
                    }
                }
            }
        }
        for (e, their) in &other.entries {
            if !self.entries.contains_key(e) && !covers(mine, their) {
                let mut d = their.clone();
                d.reset_remove(mine);
                out.insert(e.clone(), d);
            }
        }
        self.entries = out;
        for (clock, members) in &other.header.deferred {
            self.header
                .apply_rm(&mut self.entries, &clock_of(clock), members.clone());
        }
        self.header.clock.merge(other.header.clock.clone());
        self.header.apply_deferred(&mut self.entries);
        for (k, members) in &other.header.pending {
            self.header
                .pending
                .entry(k.clone())
                .or_default()
                .extend(members.iter().cloned());
        }
        self.header.drain_pending(&mut self.entries);
    }
}

#[cfg(test)]
mod tests;
