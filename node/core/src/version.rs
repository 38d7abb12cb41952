//! Causal versions: dotted version vectors in the DVV-set form (as Riak 2.x's
//! `dvvset`), with the coordinating replica as the actor.
//!
//! An [`Object`] is everything stored under one key: a version vector
//! (`clock`) that summarises every write the object has seen, and the
//! [`Sibling`]s still alive, each tagged with the [`Dot`] of the write that made
//! it. Two rules drive everything:
//!
//! - **Update** ([`Object::update`]): a put with client context `C`
//!   coordinated by actor `a` takes the fresh dot `(a, n)` with `n` one past
//!   the highest counter known for `a`; it drops the siblings whose dots `C`
//!   covers, keeps the rest, adds the new value, and joins `C` into the clock.
//!   Two clients that read the same context and write through the same
//!   coordinator therefore get two different dots and both survive.
//! - **Merge** ([`Object::merge`]): a sibling survives when the other side has
//!   it too or has not seen its dot. Merge is commutative, associative and
//!   idempotent (property-tested below), so replicas converge whatever order
//!   states arrive in.
//!
//! The clock may only claim what it has seen: an actor's counters must never
//! repeat. A replica that lost its data (a wiped dir, a corrupt object) takes
//! a new [`Actor`] epoch, which is the fix for Riak's kv679 data loss.
//!
//! Buckets in [`ConflictMode::Lww`] keep at most one sibling: the greatest by
//! (timestamp, dot). That is a max-register, so its merge obeys the same laws.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use crate::bucket::ConflictMode;

/// The identity that issues dots: a node in one incarnation of its data.
///
/// `epoch` is chosen at random when a data dir is created (and again when a
/// node finds it has lost data), so a node whose disk was wiped can never
/// issue a dot it issued before.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Actor {
    /// The node's configured id (`n1`, `db-3`, …).
    pub node: String,
    /// The data incarnation of that node.
    pub epoch: u64,
}

impl Actor {
    /// An actor for `node` in incarnation `epoch`.
    pub fn new(node: impl Into<String>, epoch: u64) -> Self {
        Self {
            node: node.into(),
            epoch,
        }
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{:016x}", self.node, self.epoch)
    }
}

/// One event: the `counter`-th write coordinated by `actor` on a key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Dot {
    /// Who coordinated the write.
    pub actor: Actor,
    /// Its position in that actor's history for this key (from 1).
    pub counter: u64,
}

/// A version vector: for each actor, the highest counter seen.
///
/// Encoded as a sequence of `(actor, counter)` pairs so that any msgpack or
/// JSON reader can decode it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VersionVector {
    entries: BTreeMap<Actor, u64>,
}

impl VersionVector {
    /// The empty vector: a write with it is concurrent with everything.
    pub fn new() -> Self {
        Self::default()
    }

    /// The counter seen for `actor` (0 when none).
    pub fn get(&self, actor: &Actor) -> u64 {
        self.entries.get(actor).copied().unwrap_or(0)
    }

    /// Whether this vector has seen `dot`.
    pub fn covers(&self, dot: &Dot) -> bool {
        self.get(&dot.actor) >= dot.counter
    }

    /// Raises `actor`'s entry to at least `counter`.
    pub fn witness(&mut self, actor: &Actor, counter: u64) {
        if counter == 0 {
            return;
        }
        let entry = self.entries.entry(actor.clone()).or_insert(0);
        *entry = (*entry).max(counter);
    }

    /// Pointwise maximum with `other`.
    pub fn join(&mut self, other: &Self) {
        for (actor, &counter) in &other.entries {
            self.witness(actor, counter);
        }
    }

    /// Whether this vector has seen everything `other` has.
    pub fn descends(&self, other: &Self) -> bool {
        other.entries.iter().all(|(a, &c)| self.get(a) >= c)
    }

    /// Whether the vector is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Number of actors in the vector.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The `(actor, counter)` entries in actor order.
    pub fn iter(&self) -> impl Iterator<Item = (&Actor, u64)> {
        self.entries.iter().map(|(a, &c)| (a, c))
    }
}

impl FromIterator<(Actor, u64)> for VersionVector {
    fn from_iter<T: IntoIterator<Item = (Actor, u64)>>(iter: T) -> Self {
        let mut vv = Self::new();
        for (actor, counter) in iter {
            vv.witness(&actor, counter);
        }
        vv
    }
}

impl Serialize for VersionVector {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.entries.iter())
    }
}

impl<'de> Deserialize<'de> for VersionVector {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let pairs = Vec::<(Actor, u64)>::deserialize(d)?;
        Ok(pairs.into_iter().collect())
    }
}

/// Why a write cannot be versioned.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum VersionError {
    /// The actor's counter for this key is already at its maximum: only a
    /// forged context or a forged replica state can claim that.
    #[error("the dot counter of {actor} cannot go past {counter}")]
    CounterOverflow {
        /// The actor.
        actor: Actor,
        /// The counter it reached.
        counter: u64,
    },
}

/// What a client wrote: the value and what describes it.
///
/// Ordered (by every field) only so that siblings that share a dot have a
/// fixed order, which keeps merges commutative.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Content {
    /// The value's bytes (empty for a tombstone).
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// The value's media type, as the client sent it.
    pub content_type: String,
    /// User metadata (`X-Quorra-Meta-*` on HTTP).
    pub meta: BTreeMap<String, String>,
    /// Wall-clock time of the write at its coordinator, in milliseconds since
    /// the Unix epoch. Used for `lww` buckets and `Last-Modified`.
    pub timestamp_ms: u64,
    /// Whether this is a tombstone left by a delete.
    pub deleted: bool,
}

impl Content {
    /// A live value.
    pub fn value(value: Vec<u8>, content_type: impl Into<String>, timestamp_ms: u64) -> Self {
        Self {
            value,
            content_type: content_type.into(),
            meta: BTreeMap::new(),
            timestamp_ms,
            deleted: false,
        }
    }

    /// A tombstone.
    pub fn tombstone(timestamp_ms: u64) -> Self {
        Self {
            value: Vec::new(),
            content_type: String::new(),
            meta: BTreeMap::new(),
            timestamp_ms,
            deleted: true,
        }
    }
}

/// One concurrent value of an object, with the dot of the write that made it.
///
/// Ordered by dot, then content.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Sibling {
    /// The write that created this value.
    pub dot: Dot,
    /// The value.
    pub content: Content,
}

/// Everything stored under one key: a DVV set.
///
/// Invariants: siblings are sorted (by dot, then content) with no
/// duplicates, and the clock covers every sibling's dot. Two siblings share a
/// dot only when a node reused a dot (a lost disk before actor epochs, or a
/// forged replica state): both are kept, never one silently.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Object {
    clock: VersionVector,
    siblings: Vec<Sibling>,
}

impl Object {
    /// An object that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// The version vector of everything this object has seen: the causal
    /// context handed to clients.
    pub fn clock(&self) -> &VersionVector {
        &self.clock
    }

    /// All siblings, tombstones included, sorted by dot.
    pub fn siblings(&self) -> &[Sibling] {
        &self.siblings
    }

    /// The siblings that are values, not tombstones.
    pub fn live_siblings(&self) -> impl Iterator<Item = &Sibling> {
        self.siblings.iter().filter(|s| !s.content.deleted)
    }

    /// Whether no live value remains (never written, or deleted).
    pub fn is_deleted(&self) -> bool {
        self.live_siblings().next().is_none()
    }

    /// When the newest of its tombstones was written (wall ms), if it
    /// holds only tombstones: what tombstone reaping's grace period is
    /// counted from. `None` while a value lives (or nothing was written).
    pub fn deleted_at(&self) -> Option<u64> {
        if !self.is_deleted() {
            return None;
        }
        self.siblings.iter().map(|s| s.content.timestamp_ms).max()
    }

    /// Whether the object has never seen a write.
    pub fn is_empty(&self) -> bool {
        self.clock.is_empty() && self.siblings.is_empty()
    }

    /// Applies a client write coordinated by `actor`.
    ///
    /// `ctx` is the causal context the client read (empty for a blind write).
    /// Returns the dot of the new sibling. In `lww` mode the object keeps only
    /// the winner by (timestamp, dot), which may not be the new write.
    pub fn update(
        &mut self,
        ctx: &VersionVector,
        actor: &Actor,
        content: Content,
        mode: ConflictMode,
    ) -> Result<Dot, VersionError> {
        // The clock covers every counter up to its entry, so the next dot
        // must be exactly one past what is known: a counter that jumped
        // ahead would claim to have seen dots it never saw.
        let seen = self.clock.get(actor).max(ctx.get(actor));
        let counter = seen
            .checked_add(1)
            .ok_or_else(|| VersionError::CounterOverflow {
                actor: actor.clone(),
                counter: seen,
            })?;
        let dot = Dot {
            actor: actor.clone(),
            counter,
        };
        match mode {
            ConflictMode::Siblings => self.siblings.retain(|s| !ctx.covers(&s.dot)),
            ConflictMode::Lww => {}
        }
        self.clock.join(ctx);
        self.clock.witness(actor, dot.counter);
        let sibling = Sibling {
            dot: dot.clone(),
            content,
        };
        // The new dot is above every dot of this actor the object holds.
        let at = self.siblings.partition_point(|s| *s < sibling);
        self.siblings.insert(at, sibling);
        if mode == ConflictMode::Lww {
            self.keep_lww_winner();
        }
        Ok(dot)
    }

    /// Merges another replica's state of the same key into this one.
    pub fn merge(&mut self, other: &Self, mode: ConflictMode) {
        self.merge_counting(other, mode);
    }

    /// [`Self::merge`], returning how many siblings met another sibling
    /// with the same dot and different content (a reused dot: both are
    /// kept, and the caller counts it).
    pub fn merge_counting(&mut self, other: &Self, mode: ConflictMode) -> usize {
        if mode == ConflictMode::Lww {
            // A max-register over (timestamp, dot): keep the winner of both.
            self.siblings.extend(other.siblings.iter().cloned());
            self.clock.join(&other.clock);
            self.keep_lww_winner();
            return 0;
        }
        let mut merged = Vec::with_capacity(self.siblings.len() + other.siblings.len());
        let (mine, theirs) = (&self.siblings, &other.siblings);
        let has_dot = |side: &[Sibling], dot: &Dot| {
            let at = side.partition_point(|s| s.dot < *dot);
            side.get(at).is_some_and(|s| s.dot == *dot)
        };
        let mut collisions = 0;
        let (mut i, mut j) = (0, 0);
        loop {
            let take_mine = match (mine.get(i), theirs.get(j)) {
                (None, None) => break,
                // Both sides have it: keep it.
                (Some(a), Some(b)) if a == b => {
                    merged.push(a.clone());
                    i += 1;
                    j += 1;
                    continue;
                }
                (Some(a), Some(b)) => a < b,
                (Some(_), None) => true,
                (None, Some(_)) => false,
            };
            // Only one side has it: keep it unless the other side saw its
            // dot (and so superseded it). A dot the other side holds with
            // other content was reused: keep both.
            let (s, other_side, other_clock) = if take_mine {
                i += 1;
                (&mine[i - 1], theirs.as_slice(), &other.clock)
            } else {
                j += 1;
                (&theirs[j - 1], mine.as_slice(), &self.clock)
            };
            let collided = has_dot(other_side, &s.dot);
            if collided {
                collisions += 1;
            }
            if collided || !other_clock.covers(&s.dot) {
                merged.push(s.clone());
            }
        }
        self.siblings = merged;
        self.clock.join(&other.clock);
        collisions
    }

    /// A digest of the version (the clock and each sibling's dot, not the
    /// values): what anti-entropy's hash trees compare. Two replicas of a
    /// key agree on it exactly when they hold the same version.
    pub fn version_digest(&self) -> u64 {
        let dots: Vec<&Dot> = self.siblings.iter().map(|s| &s.dot).collect();
        let bytes = rmp_serde::to_vec(&(&self.clock, dots)).unwrap_or_default();
        crate::hash::checksum(&bytes)
    }

    /// Whether `other` holds nothing this object lacks (merging it would not
    /// change this object).
    pub fn dominates(&self, other: &Self, mode: ConflictMode) -> bool {
        let mut merged = self.clone();
        merged.merge(other, mode);
        &merged == self
    }

    fn keep_lww_winner(&mut self) {
        if let Some(winner) = self
            .siblings
            .iter()
            .max_by(|a, b| {
                (a.content.timestamp_ms, &a.dot, &a.content).cmp(&(
                    b.content.timestamp_ms,
                    &b.dot,
                    &b.content,
                ))
            })
            .cloned()
        {
            self.siblings.clear();
            self.siblings.push(winner);
        }
    }
}

#[cfg(test)]
mod tests;
