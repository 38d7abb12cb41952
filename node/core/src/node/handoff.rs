//! Hinted handoff: delivering the writes this node took for an unreachable
//! primary once that primary is reachable again.
//!
//! Each round goes owner by owner, one hint at a time; a reachable owner
//! gets at most `rate_per_second` hints a second, so a returning node is
//! not flattened. A hint is deleted only after its owner acknowledged it
//! durably, and only if it did not change meanwhile (the store checks). A
//! hint the owner refuses is retried with exponential backoff while the
//! owner's other hints keep flowing, so one bad hint never wedges an
//! owner; an owner that does not answer ends its turn for the round. A hint
//! older than `max_hint_age_ms` (when set) is dropped and left to repair.
//!
//! A hint held for a member that holds no data any more and does not
//! answer (it was removed dead, or left and went away) can never be
//! delivered: it goes to the key's current replicas instead, kept as a
//! hint for each (or merged here, when this node is one), durably, before
//! the old hint is deleted.

use std::collections::{BTreeMap, VecDeque};

use super::Wait;
use super::{Call, CallFailure, Event, Hint, Node, Now, Planted, StoreFailure, StoreOp, Stored};
use crate::proto::{Refusal, ReplicaPut, ReplicaStored};
use crate::{BucketName, Key};

/// First wait before a refused hint is tried again (ms); doubles per failure.
const FIRST_BACKOFF_MS: u64 = 1_000;
/// Longest wait between tries of a refused hint (ms).
const MAX_BACKOFF_MS: u64 = 300_000;

/// When a hint that failed may be tried again.
#[derive(Debug, Clone, Copy)]
struct Retry {
    at: u64,
    failures: u32,
}

type HintKey = (String, BucketName, Key);

fn hint_key(h: &Hint) -> HintKey {
    (h.owner.clone(), h.bucket.clone(), h.key.clone())
}

/// One owner's turn in a round.
#[derive(Debug)]
struct Turn {
    owner: String,
    reachable: bool,
    /// The owner holds no data any more: its hints are re-homed.
    departed: bool,
    hints: VecDeque<Hint>,
}

/// A round under way.
#[derive(Debug)]
struct Round {
    owners: VecDeque<String>,
    budget: usize,
    delivered: usize,
    turn: Option<Turn>,
}

/// Handoff state: the round under way and the backoff of refused hints.
#[derive(Debug, Default)]
pub(super) struct Handoff {
    round: Option<Round>,
    backoff: Backoff,
    /// A round was due while this one ran: the next starts when it ends.
    overdue: bool,
}

/// Hints that failed, with when to try them again.
#[derive(Debug, Default)]
struct Backoff(BTreeMap<HintKey, Retry>);

impl Backoff {
    fn ready(&self, hint: &Hint, now: u64) -> bool {
        self.0.get(&hint_key(hint)).is_none_or(|r| r.at <= now)
    }

    fn failed(&mut self, hint: &Hint, now: u64) -> u64 {
        let r = self.0.entry(hint_key(hint)).or_insert(Retry {
            at: now,
            failures: 0,
        });
        r.failures = r.failures.saturating_add(1);
        let wait = FIRST_BACKOFF_MS
            .saturating_mul(1u64 << r.failures.saturating_sub(1).min(16))
            .min(MAX_BACKOFF_MS);
        r.at = now + wait;
        wait
    }

    fn done(&mut self, hint: &Hint) {
        self.0.remove(&hint_key(hint));
    }
}

impl Node {
    /// Starts a round; one due while another runs starts when that ends.
    pub(super) fn handoff_tick(&mut self, now: Now) {
        if self.handoff.round.is_some() {
            self.handoff.overdue = true;
            return;
        }
        let h = self.settings.handoff;
        // Hints one round may deliver, from the rate.
        let budget = (u64::from(h.rate_per_second) * h.interval_ms / 1000).max(1) as usize;
        let me = self.me().to_owned();
        // Every member, and every node the cluster ever admitted (a
        // removed one may be gone from the member table).
        let admitted = self.membership.layout().map(|l| l.members.clone());
        let owners: std::collections::BTreeSet<String> = self
            .membership
            .members()
            .map(|m| m.id.clone())
            .chain(admitted.into_iter().flatten())
            .filter(|id| *id != me)
            .collect();
        let owners = owners.into_iter().collect();
        self.handoff.round = Some(Round {
            owners,
            budget,
            delivered: 0,
            turn: None,
        });
        self.handoff_next(now);
    }

    /// Carries the round on until it waits for something, or ends.
    fn handoff_next(&mut self, now: Now) {
        let max_age = self.settings.handoff.max_hint_age_ms;
        loop {
            let Some(round) = self.handoff.round.as_mut() else {
                return;
            };
            if let Some(turn) = round.turn.as_mut() {
                let Some(hint) = turn.hints.pop_front() else {
                    round.turn = None;
                    continue;
                };
                if max_age > 0 && now.wall_ms.saturating_sub(hint.created_ms) > max_age {
                    self.handoff.backoff.done(&hint);
                    return self.store(
                        StoreOp::DeleteHint(hint),
                        Wait::HandoffDelete { expired: true },
                    );
                }
                let (reachable, departed) = (turn.reachable, turn.departed);
                if !(reachable || departed)
                    || round.budget == 0
                    || !self.handoff.backoff.ready(&hint, now.mono_ms)
                {
                    continue;
                }
                round.budget -= 1;
                if departed {
                    return self.rehome(hint);
                }
                if self.settings.planted == Some(Planted::HintDeletedBeforeDelivery) {
                    self.store(StoreOp::DeleteHint(hint.clone()), Wait::Ignore);
                }
                let request = ReplicaPut {
                    bucket: hint.bucket.clone(),
                    key: hint.key.clone(),
                    object: hint.object.clone(),
                    mode: self.bucket_props(&hint.bucket).conflict_mode,
                    durable: true,
                    hint_for: None,
                }
                .into();
                let owner = hint.owner.clone();
                let timeout = self.settings.replica_timeout_ms;
                return self.send_to(&owner, request, timeout, Call::Handoff(hint), now);
            }
            let Some(owner) = round.owners.pop_front() else {
                let delivered = round.delivered;
                self.handoff.round = None;
                if std::mem::take(&mut self.handoff.overdue) {
                    self.next_handoff = now.mono_ms;
                }
                self.event(Event::HandoffRound { delivered });
                return;
            };
            if round.budget == 0 {
                continue;
            }
            // Hints waiting out a backoff are skipped, not counted against
            // the round: read past them.
            let limit = round.budget.saturating_add(self.handoff.backoff.0.len());
            let reachable = self.is_reachable(&owner);
            let departed = self.departed(&owner);
            // An unreachable owner's hints are read only to expire them.
            if !reachable && !departed && max_age == 0 {
                continue;
            }
            if let Some(round) = self.handoff.round.as_mut() {
                round.turn = Some(Turn {
                    owner: owner.clone(),
                    reachable,
                    departed,
                    hints: VecDeque::new(),
                });
            }
            return self.store(StoreOp::HintsFor { owner, limit }, Wait::HandoffHints);
        }
    }

    /// Whether `owner` holds no data in the layout, none moves from it,
    /// and it does not answer: its hints can only go to the keys' current
    /// replicas. (One that answers takes its hints: harmless for a node
    /// that left, whose keys' new replicas hold what was written, and
    /// right for one that has just gained a role in a layout this node
    /// does not have yet.)
    fn departed(&self, owner: &str) -> bool {
        if self.is_reachable(owner) {
            return false;
        }
        let Some(layout) = self.membership.layout() else {
            return false;
        };
        let moving_from = layout
            .moving
            .as_ref()
            .is_some_and(|m| m.nodes.iter().any(|id| id == owner));
        !layout.roles.contains_key(owner) && !moving_from
    }

    /// Hands `hint` (for a departed owner) to its key's replicas now: the
    /// preference list, and while the partition moves, the replicas before
    /// the move too.
    fn rehome(&mut self, hint: Hint) {
        let ring = self.ring.clone();
        let p = ring.partition_of(hint.bucket.as_str().as_bytes(), hint.key.as_bytes());
        let props = self.bucket_props(&hint.bucket);
        let mut targets: std::collections::BTreeSet<&str> =
            ring.order(p).take(usize::from(props.n_val)).collect();
        targets.extend(ring.before(p).unwrap_or_default());
        let me = self.me().to_owned();
        let local = targets.remove(me.as_str());
        let owners = targets
            .into_iter()
            .filter(|id| *id != hint.owner)
            .map(str::to_owned)
            .collect();
        let op = StoreOp::Rehome {
            hint,
            owners,
            local,
            mode: props.conflict_mode,
        };
        self.store(op, Wait::HandoffRehomed);
    }

    /// A hint for a departed owner was re-homed (or failed to be).
    pub(super) fn handoff_rehomed(&mut self, result: Result<Stored, StoreFailure>, now: Now) {
        match result {
            Ok(Stored::HintDeleted(true)) => {
                if let Some(r) = self.handoff.round.as_mut() {
                    r.delivered += 1;
                }
                self.event(Event::HintRehomed);
            }
            Ok(_) => {}
            Err(f) => self.event(Event::StoreFailed {
                what: "re-homing a hint",
                message: f.message,
            }),
        }
        self.handoff_next(now);
    }

    /// The hints of the owner whose turn it is.
    pub(super) fn handoff_hints(&mut self, result: Result<Stored, StoreFailure>, now: Now) {
        let Some(turn) = self.handoff.round.as_mut().and_then(|r| r.turn.as_mut()) else {
            return;
        };
        match result {
            Ok(Stored::Hints(hints)) => turn.hints = hints.into(),
            other => {
                let owner = turn.owner.clone();
                if let Some(r) = self.handoff.round.as_mut() {
                    r.turn = None;
                }
                self.event(Event::StoreFailed {
                    what: "reading hints",
                    message: format!("{owner}: {other:?}"),
                });
            }
        }
        self.handoff_next(now);
    }

    /// The owner answered a hint, or did not.
    pub(super) fn handoff_answered(
        &mut self,
        hint: Hint,
        result: Result<Result<ReplicaStored, Refusal>, CallFailure>,
        now: Now,
    ) {
        match result {
            // Only a durable store lets the hint go.
            Ok(Ok(stored)) if stored.durable => {
                self.handoff.backoff.done(&hint);
                // Deleted only now, and only if unchanged since read.
                return self.store(
                    StoreOp::DeleteHint(hint),
                    Wait::HandoffDelete { expired: false },
                );
            }
            // The owner is there but will not take this one: try it again
            // later, and carry on with the others.
            Ok(other) => {
                let (code, message) = match other {
                    Err(refusal) => refusal.parts(),
                    Ok(_) => (
                        crate::ErrorCode::Internal,
                        "stored without fsync: the hint stays".to_owned(),
                    ),
                };
                let wait_ms = self.handoff.backoff.failed(&hint, now.mono_ms);
                self.event(Event::HintRefused {
                    owner: hint.owner.clone(),
                    code,
                    message,
                    wait_ms,
                });
            }
            // No answer: the owner is likely gone again. This hint waits its
            // turn; the owner's others wait for the next round.
            Err(_) => {
                self.handoff.backoff.failed(&hint, now.mono_ms);
                if let Some(r) = self.handoff.round.as_mut() {
                    r.turn = None;
                }
            }
        }
        self.handoff_next(now);
    }

    /// A delivered or expired hint was deleted (or had changed, and stays).
    pub(super) fn handoff_deleted(
        &mut self,
        expired: bool,
        result: Result<Stored, StoreFailure>,
        now: Now,
    ) {
        if result == Ok(Stored::HintDeleted(true)) {
            if expired {
                let owner = self
                    .handoff
                    .round
                    .as_ref()
                    .and_then(|r| r.turn.as_ref())
                    .map(|t| t.owner.clone())
                    .unwrap_or_default();
                self.event(Event::HintExpired { owner });
            } else {
                if let Some(r) = self.handoff.round.as_mut() {
                    r.delivered += 1;
                }
                self.event(Event::HintDelivered);
            }
        }
        self.handoff_next(now);
    }
}
