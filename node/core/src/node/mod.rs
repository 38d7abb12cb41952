//! The node as a sans-IO state machine: every decision a Quorra node makes,
//! with no sockets, no disk, no clock and no async in it.
//!
//! The real node (`quorra-node`) and the deterministic simulator
//! (`quorra-sim`) are both thin drivers of this one machine, as quinn drives
//! `quinn-proto` and raft-rs drives `RawNode`: they feed it events and carry
//! out the effects it asks for, so the simulator tests the node itself.
//!
//! - **Events in:** [`Node::handle_client`] (a client's read or write),
//!   [`Node::handle_peer`] (a peer's request), [`Node::handle_reply`] (the
//!   answer to a request this node sent), [`Node::handle_stored`] (a storage
//!   operation finished) and [`Node::handle_timeout`] (a timer is due).
//! - **Effects out:** [`Node::poll_effect`] yields what to send, what to
//!   store, whom to answer ([`Effect`]); [`Node::poll_timeout`] says when to
//!   call [`Node::handle_timeout`] next.
//!
//! What it decides:
//! - forward a write or coordinate it ([`coordinator`]); the replicas and
//!   stand-ins ([`crate::quorum`]); the read and write rounds
//!   ([`crate::round`]); read repair; a delete without context reads first;
//!   hints the coordinator keeps for primaries that missed a write;
//! - serving peers: a replica's read, hint-or-merge, coordinating a
//!   forwarded write ([`serve`]);
//! - gossip dispatch, the ring, saving the member table ([`gossip`]);
//! - hint delivery, its rate, backoff and the delete rule ([`handoff`]);
//! - readiness: only a node that founded or joined a cluster places keys.
//!
//! Storage is an effect too ([`StoreOp`]), so RocksDB stays on blocking
//! threads; the rules a replica applies to its copy are the pure functions
//! of [`crate::write`], shared by the real store and the simulator's disk.

mod antientropy;
mod commit;
mod coordinator;
mod gossip;
mod handoff;
mod io;
mod reap;
mod serve;
#[cfg(test)]
mod tests;
mod transfer;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

pub use antientropy::{AntiEntropySettings, AntiEntropyStats, AntiEntropyStatus};
pub use commit::CommitFailure;
pub use io::{
    CallFailure, CallId, ClientId, Effect, Event, Failure, Hint, InboundId, Now, Request,
    StoreFailure, StoreId, StoreOp, Stored, Transmit,
};
pub use reap::{ReapStats, ReapStatus, TombstoneSettings};
pub use transfer::{CopyProgress, PartitionCopy, TransferStatus};

use crate::membership::Gossip;
use crate::membership::{Membership, Status};
use crate::proto::{
    Ask, Coordinate, Decide, IndirectPing, PeerRequest, Pull, Refusal, ReplicaGet, ReplicaPut,
    ReplicaStored, Reply,
};
use crate::ring::Ring;

use coordinator::{Forward, ReadState, ReplyTo, WriteState};
use handoff::Handoff;

/// Hinted handoff settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandoffSettings {
    /// Time between delivery rounds (ms).
    pub interval_ms: u64,
    /// Most hints delivered per second.
    pub rate_per_second: u32,
    /// Hints older than this (wall ms since first taken) are dropped; 0
    /// keeps them until delivered.
    pub max_hint_age_ms: u64,
}

/// A deliberate bug, planted by tests to prove the simulator catches what
/// it claims to. Never set outside them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Planted {
    /// A fallback's answer is counted as a primary's (`pr`/`pw`).
    FallbackCountedAsPrimary,
    /// A hint is deleted when it is sent, before its owner stored it.
    HintDeletedBeforeDelivery,
    /// Every coordinator versions writes with one shared actor (a single
    /// clock), not its own.
    ClockAsOnlyActor,
    /// The coordinator resolves the write last-write-wins, dropping the
    /// concurrent siblings the client did not see.
    CoordinatorDropsSiblings,
    /// While a partition moves, a write counts only the acknowledgements
    /// of the replicas after the change, not those before it.
    WriteCountsOnlyNewReplicas,
    /// A move copies without waiting for every live member to acknowledge
    /// its layout version, so a write from a coordinator that has not
    /// heard of the move can land behind the copy on the old replicas only.
    CopyBeforeAcknowledged,
    /// Tombstone reaping deletes what it lists without asking the other
    /// replicas whether they hold the tombstone.
    ReapWithoutAsking,
}

/// What the node is configured with.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Partitions of the ring.
    pub partitions: u32,
    /// Tokens per node.
    pub tokens: u16,
    /// How long a replica may take to answer (ms).
    pub replica_timeout_ms: u64,
    /// How long a forwarded write may take (ms).
    pub request_timeout_ms: u64,
    /// How often the failure detector runs (ms).
    pub gossip_tick_ms: u64,
    /// Hinted handoff.
    pub handoff: HandoffSettings,
    /// Most reads and writes under way at once (replication and read repair
    /// go on after the answer); a client request past it is refused
    /// `overloaded`, so a slow replica cannot grow a node's memory.
    pub max_rounds: usize,
    /// Most bytes copied per second when partitions move (0: no limit).
    pub transfer_bytes_per_second: u64,
    /// How long after a handover reaches this node it deletes the
    /// partitions it gave away (ms): time for the version to reach every
    /// node, so none still reads them here.
    pub cleanup_grace_ms: u64,
    /// Active anti-entropy.
    pub anti_entropy: AntiEntropySettings,
    /// Tombstone reaping.
    pub tombstones: TombstoneSettings,
    /// A planted bug (tests only).
    pub planted: Option<Planted>,
}

/// An outgoing request and what its answer is for.
#[derive(Debug)]
struct Outgoing {
    call: Call,
    /// The node that must answer (`None`: whoever is at the address).
    node: Option<String>,
    deadline: u64,
}

/// What a peer request was sent for.
#[derive(Debug)]
enum Call {
    Probe {
        target: String,
    },
    IndirectOrigin {
        target: String,
    },
    IndirectHelper {
        inbound: InboundId,
    },
    PushPull,
    Read {
        round: u64,
        target: crate::quorum::Target,
    },
    Write {
        round: u64,
        target: crate::quorum::Target,
    },
    Repair,
    Forward(Forward),
    Handoff(Hint),
    /// A proposal to a voter, for commit `commit`.
    Decide {
        commit: u64,
    },
    /// A chunk of a gained partition, from a replica before the change.
    Pull {
        partition: u32,
        source: String,
    },
    /// A step of an anti-entropy exchange.
    AntiEntropy {
        run: u64,
        step: antientropy::Step,
    },
    /// A check or delete of a tombstone reaping pass.
    Reap {
        pass: u64,
        step: reap::ReapStep,
    },
}

impl Call {
    /// Whether it is background upkeep (failure detection, anti-entropy),
    /// not a request's work.
    fn is_background(&self) -> bool {
        matches!(
            self,
            Self::Probe { .. }
                | Self::IndirectOrigin { .. }
                | Self::IndirectHelper { .. }
                | Self::PushPull
                | Self::AntiEntropy { .. }
                | Self::Reap { .. }
        )
    }
}

impl Wait {
    /// Whether it is anti-entropy's (background upkeep, never done).
    fn is_background(&self) -> bool {
        matches!(
            self,
            Self::AntiEntropy { .. }
                | Self::ServeAntiEntropy { .. }
                | Self::Reap { .. }
                | Self::ServeReap { .. }
        )
    }
}

/// What a storage operation was run for.
#[derive(Debug)]
enum Wait {
    ReadLocal {
        round: u64,
        target: crate::quorum::Target,
    },
    Coordinate {
        round: u64,
    },
    Repair,
    ServeRead {
        inbound: InboundId,
    },
    ServePut {
        inbound: InboundId,
        durable: bool,
    },
    HandoffHints,
    HandoffRehomed,
    HandoffDelete {
        expired: bool,
    },
    /// A hint the coordinator keeps for a primary that missed a write.
    MissedHint,
    /// A planted bug's early delete: its result changes nothing.
    Ignore,
    /// A peer's proposal was voted on; answer once the vote is saved.
    Vote {
        inbound: InboundId,
        answer: Option<crate::decide::Message<crate::layout::Layout>>,
    },
    /// This node's own vote for its commit, counted once saved.
    OwnVote {
        commit: u64,
        answer: Option<crate::decide::Message<crate::layout::Layout>>,
    },
    /// A copied chunk was merged.
    Copied(transfer::CopiedChunk),
    /// A peer's pull was scanned.
    ServePull {
        inbound: InboundId,
    },
    /// Partitions given away were dropped.
    Dropped,
    /// The copy progress was saved.
    ProgressSaved(Box<transfer::CopyProgress>),
    /// The table holding this layout version was saved: acknowledge it.
    LayoutSaved(u64),
    /// A step of this node's anti-entropy exchange.
    AntiEntropy {
        run: u64,
        step: antientropy::Step,
    },
    /// A peer's anti-entropy request was served by storage.
    ServeAntiEntropy {
        inbound: InboundId,
        served: antientropy::Served,
    },
    /// A step of this node's tombstone reaping pass.
    Reap {
        pass: u64,
        step: reap::ReapStep,
    },
    /// A reaper's check or delete was run.
    ServeReap {
        inbound: InboundId,
    },
}

/// One node's state machine.
#[derive(Debug)]
pub struct Node {
    settings: Settings,
    membership: Membership,
    ring: Arc<Ring>,
    /// The digest of the layout the ring was built from.
    ring_digest: Option<String>,
    /// The membership version last saved.
    saved_version: u64,
    /// The incarnation each peer had when last seen.
    incarnations: BTreeMap<String, u64>,
    next_id: u64,
    effects: VecDeque<Effect>,
    calls: BTreeMap<CallId, Outgoing>,
    deadlines: BTreeSet<(u64, CallId)>,
    stores: BTreeMap<StoreId, Wait>,
    reads: BTreeMap<u64, ReadState>,
    writes: BTreeMap<u64, WriteState>,
    handoff: Handoff,
    next_gossip: u64,
    next_handoff: u64,
    /// Layout commits under way.
    commits: BTreeMap<u64, commit::Commit>,
    /// The highest ballot round seen.
    max_round: u64,
    /// Partitions being copied.
    transfers: transfer::Transfers,
    /// Anti-entropy exchanges.
    ae: antientropy::AntiEntropy,
    /// Tombstone reaping.
    reaper: reap::Reaper,
}

/// The ring of the membership's layout; empty until the node has one.
fn ring_of(membership: &Membership, partitions: u32) -> Ring {
    match membership.layout() {
        Some(layout) => Ring::build(layout),
        None => Ring::empty(partitions),
    }
}

impl Node {
    /// A node with `membership` (built and restored by the driver, which
    /// owns the seeds and the saved table), at `now`. `first_id` starts
    /// the ids it names requests with: a driver that restarts a node on a
    /// network that may still carry its old requests starts past them.
    pub fn new(settings: Settings, mut membership: Membership, now: Now, first_id: u64) -> Self {
        let ring = Arc::new(ring_of(&membership, settings.partitions));
        let ring_digest = membership.layout().map(crate::layout::Layout::digest);
        let mut effects: VecDeque<Effect> = membership
            .take_notices()
            .into_iter()
            .map(Effect::Notice)
            .collect();
        // Founded at start (the only initial member): saved at once.
        if membership.layout().is_some() {
            effects.push_back(Effect::SaveTable {
                version: membership.version(),
                table: Box::new(membership.saved()),
                done: None,
            });
        }
        let incarnations = membership
            .members()
            .map(|m| (m.id.clone(), m.incarnation))
            .collect();
        Self {
            next_gossip: now.mono_ms,
            next_handoff: now.mono_ms + settings.handoff.interval_ms,
            handoff: Handoff::default(),
            saved_version: membership.version(),
            settings,
            membership,
            ring,
            ring_digest,
            incarnations,
            next_id: first_id.max(1),
            effects,
            calls: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            stores: BTreeMap::new(),
            reads: BTreeMap::new(),
            writes: BTreeMap::new(),
            commits: BTreeMap::new(),
            max_round: 0,
            transfers: transfer::Transfers::default(),
            ae: antientropy::AntiEntropy::default(),
            reaper: reap::Reaper::default(),
        }
    }

    // ---- the driver's interface ----

    /// The next effect to carry out.
    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    /// When [`Self::handle_timeout`] is due next (monotonic ms).
    pub fn poll_timeout(&self) -> u64 {
        let mut at = self.next_gossip.min(self.next_handoff);
        if let Some((deadline, _)) = self.deadlines.first() {
            at = at.min(*deadline);
        }
        if let Some(retry) = self.next_commit_timer() {
            at = at.min(retry);
        }
        if let Some(exchange) = self.anti_entropy_timer() {
            at = at.min(exchange);
        }
        at
    }

    /// Timers: requests past their deadline fail, the failure detector
    /// runs, a handoff round starts.
    pub fn handle_timeout(&mut self, now: Now) {
        while let Some(&(deadline, call)) = self.deadlines.first() {
            if deadline > now.mono_ms {
                break;
            }
            self.deadlines.remove(&(deadline, call));
            if let Some(out) = self.calls.remove(&call) {
                self.settle(out, None, Err(CallFailure::Lost("timed out".into())), now);
            }
        }
        if now.mono_ms >= self.next_gossip {
            self.next_gossip = now.mono_ms + self.settings.gossip_tick_ms;
            self.gossip_tick(now);
            self.transfer_tick(now);
        }
        if now.mono_ms >= self.next_handoff {
            self.next_handoff = now.mono_ms + self.settings.handoff.interval_ms;
            self.handoff_tick(now);
        }
        self.commit_timers(now);
        self.anti_entropy_tick(now);
        // Probes that timed out may have changed membership.
        self.after_membership();
    }

    /// A client's request. Its answer comes as [`Effect::Answer`].
    pub fn handle_client(&mut self, client: ClientId, request: Request, now: Now) {
        let to = ReplyTo::Client(client);
        if self.at_round_limit() {
            return self.answer(to, Err(Failure::Busy), now);
        }
        match request {
            Request::Get {
                bucket,
                key,
                quorum,
            } => self.read(bucket, key, quorum, to, now),
            Request::Write {
                bucket,
                key,
                context,
                operation,
                quorum,
            } => self.write(
                coordinator::WriteJob {
                    bucket,
                    key,
                    context,
                    operation,
                    quorum,
                    forwarded: false,
                    read_first: false,
                },
                to,
                now,
            ),
        }
    }

    /// A request from the peer whose node certificate names `from` (the
    /// driver has checked it is a node). Its answer comes as
    /// [`Effect::Respond`].
    pub fn handle_peer(&mut self, inbound: InboundId, from: &str, request: PeerRequest, now: Now) {
        self.serve(inbound, from, request, now);
        self.after_membership();
    }

    /// The answer to request `call`, from the node whose certificate named
    /// `from` (`None`: not a node certificate), or why none came.
    pub fn handle_reply(
        &mut self,
        call: CallId,
        from: Option<&str>,
        result: Result<Reply, CallFailure>,
        now: Now,
    ) {
        let Some(out) = self.calls.remove(&call) else {
            return; // late: it timed out already
        };
        self.deadlines.remove(&(out.deadline, call));
        let result = match (&out.node, result) {
            (Some(node), Ok(_)) if from != Some(node.as_str()) => Err(CallFailure::Lost(format!(
                "answered by {}, not by node {node}",
                from.unwrap_or("a certificate that is not a node's")
            ))),
            (_, result) => result,
        };
        self.settle(out, from, result, now);
        self.after_membership();
    }

    /// Storage operation `id` finished.
    pub fn handle_stored(&mut self, id: StoreId, result: Result<Stored, StoreFailure>, now: Now) {
        let Some(wait) = self.stores.remove(&id) else {
            return;
        };
        match wait {
            Wait::ReadLocal { round, target } => {
                let result = match result {
                    Ok(Stored::Read(o)) => Ok(o),
                    _ => Err(()),
                };
                self.read_reply(round, target, result, now);
            }
            Wait::Coordinate { round } => self.coordinated(round, result, now),
            Wait::Repair | Wait::Ignore => {}
            Wait::MissedHint => {
                if let Err(f) = result {
                    self.event(Event::StoreFailed {
                        what: "keeping a hint for a replica that missed a write",
                        message: f.message,
                    });
                }
            }
            Wait::ServeRead { inbound } => {
                let answer = match result {
                    Ok(Stored::Read(o)) => Ok(o),
                    other => Err(refusal(other)),
                };
                self.respond(inbound, Reply::answer::<ReplicaGet>(answer));
            }
            Wait::ServePut { inbound, durable } => {
                let answer = match result {
                    Ok(Stored::Done) => Ok(ReplicaStored { durable }),
                    other => Err(refusal(other)),
                };
                self.respond(inbound, Reply::answer::<ReplicaPut>(answer));
            }
            Wait::Vote { inbound, answer } => {
                self.vote_saved(inbound, answer, result.is_ok());
            }
            Wait::OwnVote { commit, answer } => {
                let answer = if result.is_ok() { answer } else { None };
                let me = self.me().to_owned();
                self.vote_answered(commit, &me, answer, now);
            }
            Wait::Copied(chunk) => {
                let result = result.map(|_| ()).map_err(|f| f.message);
                self.copied(chunk, result);
            }
            Wait::ServePull { inbound } => self.scanned(inbound, result),
            Wait::ProgressSaved(progress) => self.progress_saved(*progress, result.is_ok()),
            Wait::LayoutSaved(version) => self.layout_saved(version, result.is_ok()),
            Wait::AntiEntropy { run, step } => self.anti_entropy_stored(run, step, result, now),
            Wait::ServeAntiEntropy { inbound, served } => {
                self.anti_entropy_served(inbound, served, result);
            }
            Wait::Reap { pass, step } => self.reap_stored(pass, step, result, now),
            Wait::ServeReap { inbound } => self.reap_served(inbound, result),
            Wait::Dropped => {
                if let Err(f) = result {
                    self.event(Event::StoreFailed {
                        what: "dropping partitions given away",
                        message: f.message,
                    });
                }
            }
            Wait::HandoffHints => self.handoff_hints(result, now),
            Wait::HandoffRehomed => self.handoff_rehomed(result, now),
            Wait::HandoffDelete { expired } => self.handoff_deleted(expired, result, now),
        }
    }

    // ---- what the driver may look at ----

    /// The membership state (members, layout, counters).
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// The current ring.
    pub fn ring(&self) -> &Arc<Ring> {
        &self.ring
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// This node's id.
    pub fn me(&self) -> &str {
        self.membership.me()
    }

    /// Whether this node has founded or joined its cluster, so it may
    /// coordinate requests (readiness).
    pub fn has_joined(&self) -> bool {
        self.membership.has_joined()
    }

    /// Whether `id` may coordinate (up, not still joining).
    pub fn can_coordinate(&self, id: &str) -> bool {
        id == self.me() && self.has_joined() || self.membership.status(id) == Some(Status::Up)
    }

    /// Whether requests may go to `id` (this node always may).
    pub fn is_reachable(&self, id: &str) -> bool {
        id == self.me() || self.membership.status(id).is_some_and(Status::is_reachable)
    }

    /// Whether a request's work is still under way: rounds, forwards,
    /// repairs, hint deliveries, storage (failure detection and
    /// anti-entropy, which never end, excluded).
    pub fn busy(&self) -> bool {
        !self.reads.is_empty()
            || !self.writes.is_empty()
            || self.stores.values().any(|w| !w.is_background())
            || self.calls.values().any(|c| !c.call.is_background())
            || !self.commits.is_empty()
    }

    // ---- plumbing ----

    /// Whether as many reads and writes are under way as the node allows.
    fn at_round_limit(&self) -> bool {
        self.reads.len() + self.writes.len() >= self.settings.max_rounds
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn effect(&mut self, e: Effect) {
        self.effects.push_back(e);
    }

    fn event(&mut self, e: Event) {
        self.effects.push_back(Effect::Event(e));
    }

    fn store(&mut self, op: StoreOp, wait: Wait) {
        let id = self.next_id();
        self.stores.insert(id, wait);
        self.effect(Effect::Store { id, op });
    }

    fn respond(&mut self, inbound: InboundId, reply: Reply) {
        self.effect(Effect::Respond { inbound, reply });
    }

    /// Sends `request` to member `node` (expected to answer for itself).
    fn send_to(&mut self, node: &str, request: PeerRequest, timeout_ms: u64, call: Call, now: Now) {
        match self.membership.get(node).map(|m| m.peer_addr) {
            Some(addr) => self.send(addr, Some(node.to_owned()), request, timeout_ms, call, now),
            None => {
                let why = CallFailure::NotSent(format!("no peer address known for node {node}"));
                let out = Outgoing {
                    call,
                    node: Some(node.to_owned()),
                    deadline: now.mono_ms,
                };
                self.settle(out, None, Err(why), now);
            }
        }
    }

    fn send(
        &mut self,
        addr: std::net::SocketAddr,
        node: Option<String>,
        request: PeerRequest,
        timeout_ms: u64,
        call: Call,
        now: Now,
    ) {
        let id = self.next_id();
        let deadline = now.mono_ms + timeout_ms;
        self.deadlines.insert((deadline, id));
        self.calls.insert(
            id,
            Outgoing {
                call,
                node: node.clone(),
                deadline,
            },
        );
        self.effect(Effect::Transmit(Transmit {
            call: id,
            addr,
            node,
            request,
            timeout_ms,
        }));
    }

    /// A request was answered, or got no answer: each kind of call decodes
    /// the answer of the request it sent.
    fn settle(
        &mut self,
        out: Outgoing,
        from: Option<&str>,
        result: Result<Reply, CallFailure>,
        now: Now,
    ) {
        match out.call {
            Call::Probe { target } => {
                let reply = answer::<Gossip>(result).ok().and_then(Result::ok).flatten();
                let more = self.membership.probe_result(&target, reply, now.mono_ms);
                self.run_actions(more, now);
            }
            Call::IndirectOrigin { target } => {
                let reached = matches!(answer::<IndirectPing>(result), Ok(Ok(true)));
                self.membership
                    .indirect_result(&target, reached, now.mono_ms);
            }
            Call::IndirectHelper { inbound } => {
                let reached = matches!(answer::<Gossip>(result), Ok(Ok(Some(_))));
                self.respond(inbound, Reply::answer::<IndirectPing>(Ok(reached)));
            }
            Call::PushPull => {
                if let (Ok(Ok(Some(reply))), Some(from)) = (answer::<Gossip>(result), from) {
                    self.membership
                        .handle_push_pull_reply(from, reply, now.mono_ms);
                }
            }
            Call::Read { round, target } => {
                let got = answer::<ReplicaGet>(result).ok().and_then(Result::ok);
                self.read_reply(round, target, got.ok_or(()), now);
            }
            Call::Write { round, target } => {
                let got = answer::<ReplicaPut>(result).ok().and_then(Result::ok);
                self.write_reply(round, target, got.map(|s| s.durable).ok_or(()), now);
            }
            Call::Repair => {}
            Call::Forward(fwd) => {
                let node = out.node.unwrap_or_default();
                self.forward_answered(fwd, node, answer::<Coordinate>(result), now);
            }
            Call::Handoff(hint) => self.handoff_answered(hint, answer::<ReplicaPut>(result), now),
            Call::Pull { partition, source } => {
                let got = match answer::<Pull>(result) {
                    Ok(Ok(chunk)) => Ok(chunk),
                    Ok(Err(refusal)) => Err(format!("{refusal:?}")),
                    Err(failure) => Err(failure.to_string()),
                };
                self.pulled(partition, source, got, now);
            }
            Call::AntiEntropy { run, step } => self.anti_entropy_answered(run, step, result, now),
            Call::Reap { pass, step } => self.reap_answered(pass, step, result, now),
            Call::Decide { commit } => {
                let got = answer::<Decide>(result).ok().and_then(Result::ok).flatten();
                let voter = out.node.unwrap_or_default();
                self.vote_answered(commit, &voter, got, now);
            }
        }
    }
}

/// A reply decoded as the answer to an `A`; one that does not decode is
/// as good as none (the peer may have acted on the request).
fn answer<A: Ask>(
    result: Result<Reply, CallFailure>,
) -> Result<Result<A::Answer, Refusal>, CallFailure> {
    result.and_then(|r| {
        r.decode::<A>()
            .map_err(|e| CallFailure::Lost(e.to_string()))
    })
}

/// A peer's refusal for a storage failure (or a driver's result of the
/// wrong kind).
fn refusal(result: Result<Stored, StoreFailure>) -> Refusal {
    match result {
        Err(f) => Refusal::error(f.code, f.message),
        Ok(other) => Refusal::error(
            crate::ErrorCode::Internal,
            format!("storage answered {other:?}"),
        ),
    }
}
