//! Tombstone reaping: a deleted key's tombstone is removed once every
//! replica of the key holds that exact tombstone and the grace period has
//! passed since the delete. Without it, deleted data grows without bound.
//!
//! The rule, as Cassandra's `gc_grace_seconds` but checked rather than
//! assumed:
//! - A pass runs over one partition after anti-entropy has compared it
//!   with every other replica, on the partition's first replica only (so
//!   one node, not `n`, does the work).
//! - It lists this node's tombstones older than the grace period, then
//!   asks every other replica of each key whether it holds exactly that
//!   tombstone version. A replica that is down, does not answer, or holds
//!   anything else (an older value it missed the delete of, a newer write)
//!   keeps the key: nothing is reaped while a replica lacks the tombstone,
//!   so that replica cannot bring the value back when it returns.
//! - Only then does each replica delete the key, and only if it still
//!   holds that version (a write in between keeps it). Each keeps a small
//!   marker of the tombstone for one more grace period: a replica or a
//!   late hint that brings a value the tombstone had deleted is counted
//!   and logged as a resurrection, and the marker's tombstone deletes it
//!   again ([`crate::write::resurrected`]).
//!
//! The operator's duty: a node that comes back after the grace period
//! from outside the cluster (removed while down, or restored from a
//! backup) must be wiped first, since its replicas were no longer asked.

use super::{Call, InboundId, Node, Now, StoreFailure, StoreOp, Stored, Wait};
use crate::proto::{KeyDigest, Reap, Reply};
use crate::ErrorCode;

/// Tombstone reaping settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TombstoneSettings {
    /// How long after a delete its tombstone may be reaped (ms), once
    /// every replica holds it; 0 keeps tombstones for ever.
    pub grace_ms: u64,
}

/// Tombstones listed per pass.
const KEYS_PER_PASS: usize = 256;
/// Most keys a peer's reap request may carry.
const MAX_KEYS_PER_REQUEST: usize = 1024;
/// How long a replica may take to answer.
const REAP_TIMEOUT_MS: u64 = 10_000;

/// What reaping did since this node started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReapStats {
    /// Passes over a partition that ended.
    pub passes: u64,
    /// Tombstones past the grace period looked at.
    pub listed: u64,
    /// Those deleted here, every replica holding them.
    pub reaped: u64,
    /// Passes that stopped early (local storage failed).
    pub failed: u64,
}

/// Reaping as the status shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReapStatus {
    /// The grace period (0: never reaped).
    pub grace_ms: u64,
    /// The counters.
    pub stats: ReapStats,
    /// The partition being reaped now, if any.
    pub running: Option<u32>,
}

/// The reaping state of a node.
#[derive(Debug, Default)]
pub(super) struct Reaper {
    pass: Option<Pass>,
    next_id: u64,
    stats: ReapStats,
}

/// One pass over a partition.
#[derive(Debug)]
struct Pass {
    id: u64,
    partition: u32,
    /// This node's tombstones past the grace period.
    keys: Vec<KeyDigest>,
    /// Whether every replica asked so far holds each one.
    agreed: Vec<bool>,
    /// Every other replica, with the keys (indices) it holds.
    peers: Vec<(String, Vec<usize>)>,
    /// The replica being asked.
    asking: usize,
    /// The keys it was asked about.
    sent: Vec<usize>,
    /// Deletes sent and not answered yet.
    pending: usize,
    reaped: u64,
    failed: Option<String>,
}

/// What a pass waits on.
#[derive(Debug)]
pub(super) enum ReapStep {
    /// This node's tombstones.
    List,
    /// A replica's check.
    Check,
    /// A replica's delete.
    Commit,
    /// This node's delete.
    CommitHere,
}

impl Node {
    /// What reaping did and is doing.
    pub fn reap_status(&self) -> ReapStatus {
        ReapStatus {
            grace_ms: self.settings.tombstones.grace_ms,
            stats: self.reaper.stats.clone(),
            running: self.reaper.pass.as_ref().map(|p| p.partition),
        }
    }

    /// Whether a pass is under way (anti-entropy waits for it).
    pub(super) fn reaping(&self) -> bool {
        self.reaper.pass.is_some()
    }

    /// After anti-entropy compared `partition` with every replica: a pass
    /// over it, if reaping is on and this node is its first replica.
    /// Returns whether one started.
    pub(super) fn start_reap(&mut self, partition: u32, now: Now) -> bool {
        let grace = self.settings.tombstones.grace_ms;
        let first = self.holders(partition).into_iter().next();
        if grace == 0 || self.reaping() || first.as_deref() != Some(self.me()) {
            return false;
        }
        let id = self.reaper.next_id;
        self.reaper.next_id += 1;
        self.reaper.pass = Some(Pass {
            id,
            partition,
            keys: Vec::new(),
            agreed: Vec::new(),
            peers: Vec::new(),
            asking: 0,
            sent: Vec::new(),
            pending: 0,
            reaped: 0,
            failed: None,
        });
        let op = StoreOp::Tombstones {
            partition,
            partitions: self.ring.partitions(),
            before_ms: now.wall_ms.saturating_sub(grace),
            limit: KEYS_PER_PASS,
        };
        self.store(
            op,
            Wait::Reap {
                pass: id,
                step: ReapStep::List,
            },
        );
        true
    }

    /// The pass waiting on `id`, if it is still the current one.
    fn current_pass(&mut self, id: u64) -> Option<&mut Pass> {
        self.reaper.pass.as_mut().filter(|p| p.id == id)
    }

    /// A storage operation of a pass finished.
    pub(super) fn reap_stored(
        &mut self,
        id: u64,
        step: ReapStep,
        result: Result<Stored, StoreFailure>,
        now: Now,
    ) {
        if self.current_pass(id).is_none() {
            return;
        }
        match (step, result) {
            (ReapStep::List, Ok(Stored::Keys(keys))) => self.plan_checks(keys, now),
            (ReapStep::CommitHere, Ok(Stored::Reaped(done))) => {
                if let Some(pass) = self.reaper.pass.as_mut() {
                    pass.reaped = done.iter().filter(|&&d| d).count() as u64;
                }
                self.commit_answered(now);
            }
            (ReapStep::CommitHere, Err(f)) => {
                if let Some(pass) = self.reaper.pass.as_mut() {
                    pass.failed = Some(format!("local storage: {}", f.message));
                }
                self.commit_answered(now);
            }
            (_, Err(f)) => self.end_pass(Some(format!("local storage: {}", f.message)), now),
            (step, Ok(other)) => {
                self.end_pass(Some(format!("storage answered {other:?} to {step:?}")), now);
            }
        }
    }

    /// Which replicas to ask about which tombstones: a key with a replica
    /// that is not reachable is kept at once.
    fn plan_checks(&mut self, keys: Vec<KeyDigest>, now: Now) {
        let Some(partition) = self.reaper.pass.as_ref().map(|p| p.partition) else {
            return;
        };
        let me = self.me().to_owned();
        let mut agreed = vec![true; keys.len()];
        let mut peers: Vec<(String, Vec<usize>)> = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            let holders = self.key_holders(&k.bucket, partition);
            let unasked = self.settings.planted == Some(super::Planted::ReapWithoutAsking);
            let reachable = unasked || holders.iter().all(|h| self.is_reachable(h));
            if !holders.contains(&me) || !reachable {
                agreed[i] = false;
                continue;
            }
            for h in holders.into_iter().filter(|h| *h != me) {
                match peers.iter_mut().find(|(p, _)| *p == h) {
                    Some((_, held)) => held.push(i),
                    None => peers.push((h, vec![i])),
                }
            }
        }
        let Some(pass) = self.reaper.pass.as_mut() else {
            return;
        };
        pass.keys = keys;
        pass.agreed = agreed;
        pass.peers = peers;
        self.check_next(now);
    }

    /// Asks the next replica about the keys still agreed on, or deletes
    /// them once every replica was asked.
    fn check_next(&mut self, now: Now) {
        if self.settings.planted == Some(super::Planted::ReapWithoutAsking) {
            return self.commit(now);
        }
        let Some(pass) = self.reaper.pass.as_mut() else {
            return;
        };
        while let Some((peer, held)) = pass.peers.get(pass.asking) {
            let sent: Vec<usize> = held.iter().copied().filter(|&i| pass.agreed[i]).collect();
            if sent.is_empty() {
                pass.asking += 1;
                continue;
            }
            let request = Reap {
                keys: sent.iter().map(|&i| pass.keys[i].clone()).collect(),
                commit: false,
            };
            let (peer, id) = (peer.clone(), pass.id);
            pass.sent = sent;
            let call = Call::Reap {
                pass: id,
                step: ReapStep::Check,
            };
            return self.send_to(&peer, request.into(), REAP_TIMEOUT_MS, call, now);
        }
        self.commit(now);
    }

    /// Deletes the tombstones every replica holds, here and on each.
    fn commit(&mut self, now: Now) {
        let Some(pass) = self.reaper.pass.as_mut() else {
            return;
        };
        let agreed: Vec<KeyDigest> = pass
            .keys
            .iter()
            .zip(&pass.agreed)
            .filter(|(_, &a)| a)
            .map(|(k, _)| k.clone())
            .collect();
        if agreed.is_empty() {
            return self.end_pass(None, now);
        }
        let id = pass.id;
        let sends: Vec<(String, Reap)> = pass
            .peers
            .iter()
            .map(|(peer, held)| {
                let keys = held
                    .iter()
                    .filter(|&&i| pass.agreed[i])
                    .map(|&i| pass.keys[i].clone())
                    .collect();
                (peer.clone(), Reap { keys, commit: true })
            })
            .filter(|(_, r)| !r.keys.is_empty())
            .collect();
        pass.pending = 1 + sends.len();
        let op = StoreOp::Reap {
            keys: agreed,
            commit: true,
            now_ms: now.wall_ms,
        };
        self.store(
            op,
            Wait::Reap {
                pass: id,
                step: ReapStep::CommitHere,
            },
        );
        for (peer, request) in sends {
            let call = Call::Reap {
                pass: id,
                step: ReapStep::Commit,
            };
            self.send_to(&peer, request.into(), REAP_TIMEOUT_MS, call, now);
        }
    }

    /// A replica answered a check or a delete (or did not).
    pub(super) fn reap_answered(
        &mut self,
        id: u64,
        step: ReapStep,
        result: Result<Reply, super::CallFailure>,
        now: Now,
    ) {
        let Some(pass) = self.current_pass(id) else {
            return;
        };
        match step {
            ReapStep::Check => {
                let held = match super::answer::<Reap>(result) {
                    Ok(Ok(held)) if held.len() == pass.sent.len() => held,
                    // No answer, a refusal or a garbled one: keep them all.
                    _ => vec![false; pass.sent.len()],
                };
                for (i, h) in std::mem::take(&mut pass.sent).into_iter().zip(held) {
                    pass.agreed[i] &= h;
                }
                pass.asking += 1;
                self.check_next(now);
            }
            // What a replica did not delete, it keeps until the next pass.
            _ => self.commit_answered(now),
        }
    }

    /// One delete of the commit answered: the pass ends with the last.
    fn commit_answered(&mut self, now: Now) {
        let Some(pass) = self.reaper.pass.as_mut() else {
            return;
        };
        pass.pending = pass.pending.saturating_sub(1);
        if pass.pending == 0 {
            let failed = pass.failed.take();
            self.end_pass(failed, now);
        }
    }

    /// The pass ended; anti-entropy goes on.
    fn end_pass(&mut self, failed: Option<String>, now: Now) {
        let Some(pass) = self.reaper.pass.take() else {
            return;
        };
        let stats = &mut self.reaper.stats;
        stats.passes += 1;
        stats.failed += u64::from(failed.is_some());
        stats.listed += pass.keys.len() as u64;
        stats.reaped += pass.reaped;
        self.event(super::Event::Reaped {
            partition: pass.partition,
            listed: pass.keys.len() as u64,
            reaped: pass.reaped,
            failed,
        });
        self.schedule_next(now);
    }

    // ---- serving a reaper ----

    /// A reaper's check or delete: checked, then a storage operation.
    pub(super) fn serve_reap(&mut self, inbound: InboundId, request: Reap, now: Now) {
        if request.keys.len() > MAX_KEYS_PER_REQUEST {
            let why = format!(
                "{} keys to reap at once; the most is {MAX_KEYS_PER_REQUEST}",
                request.keys.len()
            );
            return self.respond(inbound, Reply::error(ErrorCode::InvalidParameter, why));
        }
        let op = StoreOp::Reap {
            keys: request.keys,
            commit: request.commit,
            now_ms: now.wall_ms,
        };
        self.store(op, Wait::ServeReap { inbound });
    }

    /// Answers a reaper with what storage did.
    pub(super) fn reap_served(&mut self, inbound: InboundId, result: Result<Stored, StoreFailure>) {
        let reply = match result {
            Ok(Stored::Reaped(done)) => Reply::answer::<Reap>(Ok(done)),
            other => Reply::refusal(super::refusal(other)),
        };
        self.respond(inbound, reply);
    }
}
