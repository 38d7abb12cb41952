//! A simulated node: the real pure core (membership, ring, replica choice,
//! write and read rounds, versions) wired to an in-memory store and a
//! message outbox instead of RocksDB and QUIC.
//!
//! The wiring mirrors `quorra-node`'s `kv`, `cluster` and `handoff` modules
//! step for step: who coordinates, what is stored where, when a hint is
//! deleted. The rules themselves are not copied: they are the same
//! functions the node calls.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use quorra_core::membership::{
    Action, Gossip, GossipConfig, GossipMsg, MemberInfo, Membership, Status,
};
use quorra_core::quorum::{self, Needs, Target};
use quorra_core::ring::{Ring, RingMember};
use quorra_core::round::{merge_all, ReadRound, WriteRound};
use quorra_core::{Actor, BucketProps, ConflictMode, Content, Object, VersionVector};

use crate::disk::{Corrupt, Disk};
use crate::Bug;

/// A request id, unique per node life.
pub(crate) type ReqId = u64;
/// A client operation id, unique per run.
pub(crate) type OpId = u64;

/// Partitions of the simulated ring.
const PARTITIONS: u32 = 64;
/// Tokens per node.
const TOKENS: u16 = 16;
/// Most siblings an object may hold (the node's default).
const MAX_SIBLINGS: usize = 100;
/// Hints one handoff round may send.
const HANDOFF_BUDGET: usize = 32;

/// Timeouts of the simulated node, in virtual ms.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub(crate) replica_ms: u64,
    pub(crate) forward_ms: u64,
}

/// The bucket's quorum settings for a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quorum {
    /// Replicas.
    pub n: u8,
    /// Read quorum.
    pub r: u8,
    /// Write quorum.
    pub w: u8,
    /// Durable acknowledgements.
    pub dw: u8,
    /// Primary acknowledgements.
    pub pw: u8,
    /// Siblings or last-write-wins.
    pub mode: ConflictMode,
}

/// A message between nodes.
#[derive(Debug, Clone)]
pub(crate) enum Msg {
    Gossip {
        req: ReqId,
        msg: Gossip,
    },
    GossipReply {
        req: ReqId,
        msg: Option<Gossip>,
    },
    IndirectPing {
        req: ReqId,
        target: String,
    },
    IndirectReply {
        req: ReqId,
        reached: bool,
    },
    ReplicaGet {
        req: ReqId,
        key: String,
        hint_for: Option<String>,
    },
    ReplicaGetReply {
        req: ReqId,
        result: Result<Option<Object>, ()>,
    },
    ReplicaPut {
        req: ReqId,
        key: String,
        object: Object,
        durable: bool,
        hint_for: Option<String>,
    },
    Stored {
        req: ReqId,
        result: Result<bool, ()>,
    },
    Coordinate {
        req: ReqId,
        key: String,
        ctx: VersionVector,
        value: Option<Vec<u8>>,
    },
    Coordinated {
        req: ReqId,
        result: Result<Object, ClientError>,
    },
}

impl Msg {
    /// Whether it carries replica data or a write (not gossip).
    pub(crate) fn carries_data(&self) -> bool {
        !matches!(
            self,
            Self::Gossip { .. }
                | Self::GossipReply { .. }
                | Self::IndirectPing { .. }
                | Self::IndirectReply { .. }
        )
    }

    /// A short name for traces.
    pub(crate) fn tag(&self) -> u64 {
        match self {
            Self::Gossip { .. } => 1,
            Self::GossipReply { .. } => 2,
            Self::IndirectPing { .. } => 3,
            Self::IndirectReply { .. } => 4,
            Self::ReplicaGet { .. } => 5,
            Self::ReplicaGetReply { .. } => 6,
            Self::ReplicaPut { .. } => 7,
            Self::Stored { .. } => 8,
            Self::Coordinate { .. } => 9,
            Self::Coordinated { .. } => 10,
        }
    }
}

/// A client's request to a node.
#[derive(Debug, Clone)]
pub(crate) enum ClientReq {
    Get {
        key: String,
        r: Option<u8>,
    },
    /// A write, or with no value a delete, with the context read.
    Put {
        key: String,
        ctx: VersionVector,
        value: Option<Vec<u8>>,
    },
}

/// Why a client request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientError {
    /// Whether nothing was written (so the write certainly did not happen).
    pub(crate) definite: bool,
    pub(crate) message: String,
}

impl ClientError {
    fn definite(message: impl Into<String>) -> Self {
        Self {
            definite: true,
            message: message.into(),
        }
    }
    fn maybe(message: impl Into<String>) -> Self {
        Self {
            definite: false,
            message: message.into(),
        }
    }
}

/// A node's answer to a client.
#[derive(Debug, Clone)]
pub(crate) enum ClientResult {
    Got(Result<Option<Object>, ClientError>),
    Put(Result<(), ClientError>),
}

/// What a node asks the world to do.
#[derive(Debug)]
pub(crate) enum Out {
    /// Send a message; `extra_ms` is added to the network delay (slow disk).
    Send { to: String, msg: Msg, extra_ms: u64 },
    /// Call back with a timeout for `req` after `after` ms.
    Timeout { after: u64, req: ReqId },
    /// Answer a client.
    Answer { op: OpId, result: ClientResult },
}

/// Who waits for a round's answer.
#[derive(Debug, Clone)]
enum ReplyTo {
    Client(OpId),
    Peer { node: String, req: ReqId },
}

#[derive(Debug)]
enum Pending {
    Probe {
        target: String,
    },
    IndirectOrigin {
        target: String,
    },
    IndirectHelper {
        origin: String,
        origin_req: ReqId,
    },
    PushPull,
    Read {
        round: u64,
        target: Target,
    },
    Write {
        round: u64,
        target: Target,
    },
    Repair,
    Handoff {
        owner: String,
        key: String,
        snapshot: Object,
    },
    Forward {
        to: ReplyTo,
        key: String,
        ctx: VersionVector,
        value: Option<Vec<u8>>,
        rest: Vec<String>,
        /// An earlier coordinator timed out: it may have taken the write.
        maybe_taken: bool,
    },
}

struct ReadState {
    round: ReadRound,
    key: String,
    to: Option<ReplyTo>,
}

struct WriteState {
    round: WriteRound,
    key: String,
    object: Object,
    durable: bool,
    to: Option<ReplyTo>,
}

/// Disk faults.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct DiskFaults {
    /// Every storage operation fails.
    pub(crate) failing: bool,
    /// Extra ms on every storage operation.
    pub(crate) slow_ms: u64,
}

/// One simulated node.
pub(crate) struct SimNode {
    pub(crate) id: String,
    pub(crate) disk: Disk,
    pub(crate) disk_faults: DiskFaults,
    pub(crate) clock_skew_ms: i64,
    /// Merges into this node's store that met a reused dot.
    pub(crate) dot_collisions: usize,
    membership: Membership,
    saved_version: u64,
    ring: Ring,
    ring_members: Vec<RingMember>,
    next_req: ReqId,
    pending: BTreeMap<ReqId, Pending>,
    reads: BTreeMap<u64, ReadState>,
    writes: BTreeMap<u64, WriteState>,
    handoff_inflight: BTreeSet<(String, String)>,
    quorum: Quorum,
    timeouts: Timeouts,
    bug: Option<Bug>,
}

/// The fixed address of node `i`.
pub(crate) fn peer_addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 20_000 + i as u16))
}

/// The node index behind an address.
pub(crate) fn index_of(addr: SocketAddr) -> usize {
    usize::from(addr.port().saturating_sub(20_000))
}

/// The id of node `i`.
pub(crate) fn node_id(i: usize) -> String {
    format!("n{i:02}")
}

impl SimNode {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn boot(
        i: usize,
        disk: Disk,
        seeds: Vec<SocketAddr>,
        initial: BTreeSet<String>,
        fresh_epoch: u64,
        gossip: GossipConfig,
        quorum: Quorum,
        timeouts: Timeouts,
        bug: Option<Bug>,
        now: u64,
        life: u64,
    ) -> Self {
        let id = node_id(i);
        // A start after a crash may have lost unsynced writes: a new actor
        // epoch, so that no dot is reused (the node's clean-stop marker).
        let mut disk = disk;
        if disk.open() {
            disk.set_epoch(fresh_epoch);
        }
        let me = MemberInfo {
            id: id.clone(),
            peer_addr: peer_addr(i),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 30_000 + i as u16)),
            zone: None,
            incarnation: now + 1,
            status: Status::Up,
        };
        let mut membership = Membership::new(
            me,
            seeds,
            initial,
            gossip,
            now,
            life.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ i as u64,
        );
        membership.restore(disk.table().clone(), now);
        let ring_members = membership.ring_members();
        let ring = Ring::build(&ring_members, PARTITIONS, TOKENS);
        Self {
            id,
            disk,
            disk_faults: DiskFaults::default(),
            clock_skew_ms: 0,
            dot_collisions: 0,
            saved_version: membership.version(),
            membership,
            ring,
            ring_members,
            // Request ids never repeat across lives, so a late answer to a
            // request of a previous life cannot match a new one.
            next_req: (life << 40) + 1,
            pending: BTreeMap::new(),
            reads: BTreeMap::new(),
            writes: BTreeMap::new(),
            handoff_inflight: BTreeSet::new(),
            quorum,
            timeouts,
            bug,
        }
    }

    fn actor(&self) -> Actor {
        Actor::new(self.id.clone(), self.disk.epoch())
    }

    /// Whether this node sees every one of `ids` as up.
    pub(crate) fn sees_all_up(&self, ids: &[String]) -> bool {
        ids.iter()
            .all(|id| self.membership.status(id) == Some(Status::Up))
    }

    /// Whether requests or rounds are still in flight.
    pub(crate) fn busy(&self) -> bool {
        !self.reads.is_empty()
            || !self.writes.is_empty()
            || self.pending.values().any(|p| {
                !matches!(
                    p,
                    Pending::Probe { .. }
                        | Pending::PushPull
                        | Pending::IndirectOrigin { .. }
                        | Pending::IndirectHelper { .. }
                )
            })
    }

    /// Whether `id` may coordinate (up, not still joining), as the node's
    /// `Cluster::can_coordinate`.
    fn can_coordinate(&self, id: &str) -> bool {
        id == self.id && self.membership.has_joined()
            || self.membership.status(id) == Some(Status::Up)
    }

    fn is_reachable(&self, id: &str) -> bool {
        id == self.id || self.membership.status(id).is_some_and(Status::is_reachable)
    }

    fn refresh_ring(&mut self) {
        if self.membership.version() != self.saved_version {
            self.saved_version = self.membership.version();
            self.disk.save_table(self.membership.saved());
        }
        let mut members = self.membership.ring_members();
        members.sort();
        if members != self.ring_members {
            self.ring = Ring::build(&members, PARTITIONS, TOKENS);
            self.ring_members = members;
        }
    }

    fn req(&mut self, pending: Pending) -> ReqId {
        let id = self.next_req;
        self.next_req += 1;
        self.pending.insert(id, pending);
        id
    }

    fn send(&mut self, out: &mut Vec<Out>, to: &str, msg: Msg, timeout: u64) {
        if let Some(req) = request_id(&msg) {
            out.push(Out::Timeout {
                after: timeout,
                req,
            });
        }
        out.push(Out::Send {
            to: to.to_owned(),
            msg,
            extra_ms: 0,
        });
    }

    fn reply(&self, out: &mut Vec<Out>, to: &str, msg: Msg, disk: bool) {
        let extra_ms = if disk { self.disk_faults.slow_ms } else { 0 };
        out.push(Out::Send {
            to: to.to_owned(),
            msg,
            extra_ms,
        });
    }

    fn addr_id(&self, addr: SocketAddr) -> String {
        node_id(index_of(addr))
    }

    // ---- membership (mirrors node::cluster) ----

    /// The gossip tick.
    pub(crate) fn tick(&mut self, now: u64, out: &mut Vec<Out>) {
        let actions = self.membership.handle_timeout(now);
        self.run_actions(actions, out);
        self.refresh_ring();
    }

    fn run_actions(&mut self, actions: Vec<Action>, out: &mut Vec<Out>) {
        let probe = self.membership.config().probe_timeout_ms;
        for action in actions {
            match action {
                Action::Probe { target, addr, msg } => {
                    let to = self.addr_id(addr);
                    let req = self.req(Pending::Probe { target });
                    self.send(out, &to, Msg::Gossip { req, msg }, probe);
                }
                Action::IndirectProbe { via, target, .. } => {
                    let to = self.addr_id(via);
                    let req = self.req(Pending::IndirectOrigin {
                        target: target.clone(),
                    });
                    self.send(out, &to, Msg::IndirectPing { req, target }, probe * 2);
                }
                Action::PushPull { addr, msg } => {
                    let to = self.addr_id(addr);
                    let req = self.req(Pending::PushPull);
                    self.send(out, &to, Msg::Gossip { req, msg }, probe * 2);
                }
            }
        }
    }

    /// A request timed out.
    pub(crate) fn timeout(&mut self, req: ReqId, now: u64, out: &mut Vec<Out>) {
        let Some(p) = self.pending.remove(&req) else {
            return;
        };
        self.fail(p, now, out);
    }

    fn fail(&mut self, p: Pending, now: u64, out: &mut Vec<Out>) {
        match p {
            Pending::Probe { target } => {
                let more = self.membership.probe_result(&target, None, now);
                self.run_actions(more, out);
            }
            Pending::IndirectOrigin { target } => {
                self.membership.indirect_result(&target, false, now)
            }
            Pending::IndirectHelper { origin, origin_req } => self.reply(
                out,
                &origin,
                Msg::IndirectReply {
                    req: origin_req,
                    reached: false,
                },
                false,
            ),
            Pending::PushPull | Pending::Repair => {}
            Pending::Read { round, target } => self.read_reply(round, target, Err(()), now, out),
            Pending::Write { round, target } => self.write_reply(round, target, Err(()), now, out),
            Pending::Handoff { owner, key, .. } => {
                self.handoff_inflight.remove(&(owner, key));
            }
            Pending::Forward {
                to,
                key,
                ctx,
                value,
                rest,
                ..
            } => self.forward(to, key, ctx, value, rest, true, out),
        }
        self.refresh_ring();
    }

    /// A message from `from`.
    pub(crate) fn receive(&mut self, from: &str, msg: Msg, now: u64, out: &mut Vec<Out>) {
        match msg {
            Msg::Gossip { req, msg } => {
                let reply = self.membership.handle_message(from, msg, now);
                self.reply(out, from, Msg::GossipReply { req, msg: reply }, false);
            }
            Msg::GossipReply { req, msg } => match self.pending.remove(&req) {
                Some(Pending::Probe { target }) => {
                    // Only the target answers for itself.
                    let msg = msg.filter(|_| from == target);
                    let more = self.membership.probe_result(&target, msg, now);
                    self.run_actions(more, out);
                }
                Some(Pending::PushPull) => {
                    if let Some(m) = msg {
                        self.membership.handle_push_pull_reply(from, m, now);
                    }
                }
                Some(Pending::IndirectHelper { origin, origin_req }) => self.reply(
                    out,
                    &origin,
                    Msg::IndirectReply {
                        req: origin_req,
                        reached: true,
                    },
                    false,
                ),
                Some(other) => {
                    self.pending.insert(req, other);
                }
                None => {}
            },
            Msg::IndirectPing { req, target } => {
                let probe = self.membership.config().probe_timeout_ms;
                let helper = self.req(Pending::IndirectHelper {
                    origin: from.to_owned(),
                    origin_req: req,
                });
                let ping = self.membership.envelope(GossipMsg::Ping {
                    updates: Vec::new(),
                });
                self.send(
                    out,
                    &target,
                    Msg::Gossip {
                        req: helper,
                        msg: ping,
                    },
                    probe,
                );
            }
            Msg::IndirectReply { req, reached } => {
                if let Some(Pending::IndirectOrigin { target }) = self.pending.remove(&req) {
                    self.membership.indirect_result(&target, reached, now);
                }
            }
            Msg::ReplicaGet { req, key, hint_for } => {
                let result = self.local_read(&key, hint_for.as_deref());
                self.reply(out, from, Msg::ReplicaGetReply { req, result }, true);
            }
            Msg::ReplicaPut {
                req,
                key,
                object,
                durable,
                hint_for,
            } => {
                let result = self
                    .store_replica(&key, &object, hint_for, durable)
                    .map(|()| durable);
                self.reply(out, from, Msg::Stored { req, result }, true);
            }
            Msg::Coordinate {
                req,
                key,
                ctx,
                value,
            } => {
                let to = ReplyTo::Peer {
                    node: from.to_owned(),
                    req,
                };
                if !self.membership.has_joined() {
                    let e = ClientError::definite("not joined");
                    return self.answer_write(to, Err(e), out);
                }
                self.write(to, key, ctx, value, true, now, out);
            }
            Msg::ReplicaGetReply { req, result } => match self.pending.remove(&req) {
                Some(Pending::Read { round, target }) => {
                    self.read_reply(round, target, result, now, out)
                }
                Some(other) => {
                    self.pending.insert(req, other);
                }
                None => {}
            },
            Msg::Stored { req, result } => match self.pending.remove(&req) {
                Some(Pending::Write { round, target }) => {
                    self.write_reply(round, target, result, now, out)
                }
                Some(Pending::Handoff {
                    owner,
                    key,
                    snapshot,
                }) => {
                    let k = (owner, key);
                    self.handoff_inflight.remove(&k);
                    // Deleted only once acknowledged, and only if unchanged.
                    if result.is_ok() && self.disk.hint(&k.0, &k.1) == Some(&snapshot) {
                        self.disk.remove_hint(&k.0, &k.1);
                    }
                }
                Some(Pending::Repair) | None => {}
                Some(other) => {
                    self.pending.insert(req, other);
                }
            },
            Msg::Coordinated { req, result } => match self.pending.remove(&req) {
                Some(Pending::Forward {
                    to, maybe_taken, ..
                }) => {
                    // After a coordinator that may have taken the write, a
                    // refusal is no definite outcome (as the node answers).
                    let result = result.map(|_| ()).map_err(|e| ClientError {
                        definite: e.definite && !maybe_taken,
                        ..e
                    });
                    self.answer_write(to, result, out);
                }
                Some(other) => {
                    self.pending.insert(req, other);
                }
                None => {}
            },
        }
        self.refresh_ring();
    }

    // ---- storage (mirrors node::store) ----

    /// This node's own copy of `key`. A corrupt record is moved aside as
    /// evidence and the node takes a new actor epoch before it writes again
    /// (it may have held dots other replicas have): then the key reads as
    /// missing.
    fn own_object(&mut self, key: &str) -> Option<Object> {
        match self.disk.object(key) {
            Ok(o) => o.cloned(),
            Err(Corrupt) => {
                self.disk.quarantine(key);
                if self.bug == Some(Bug::CorruptionReadAsMissing) {
                    return None;
                }
                let epoch = self.disk.epoch();
                let fresh = (epoch ^ self.next_req)
                    .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                    .rotate_left(29)
                    | 1 << 63;
                self.disk
                    .set_epoch(if fresh == epoch { fresh ^ 1 } else { fresh });
                None
            }
        }
    }

    fn local_read(&mut self, key: &str, hint_for: Option<&str>) -> Result<Option<Object>, ()> {
        if self.disk_faults.failing {
            return Err(());
        }
        let local = self.own_object(key);
        let hint = hint_for.and_then(|o| self.disk.hint(o, key).cloned());
        Ok(merge_all([&local, &hint], self.quorum.mode))
    }

    fn store_replica(
        &mut self,
        key: &str,
        object: &Object,
        hint_for: Option<String>,
        durable: bool,
    ) -> Result<(), ()> {
        if self.disk_faults.failing {
            return Err(());
        }
        let mode = self.quorum.mode;
        match hint_for {
            Some(owner) if owner != self.id => {
                let mut held = self.disk.hint(&owner, key).cloned().unwrap_or_default();
                self.dot_collisions += held.merge_counting(object, mode);
                self.disk.put_hint(&owner, key, held, durable);
            }
            _ => {
                let mut held = self.own_object(key).unwrap_or_default();
                self.dot_collisions += held.merge_counting(object, mode);
                self.disk.put_object(key, held, durable);
            }
        }
        Ok(())
    }

    // ---- the request path (mirrors node::kv) ----

    /// The bucket's properties on the current ring (read quorum `r` when
    /// given), capped as the node caps them.
    fn props(&self, r: Option<u8>) -> BucketProps {
        let q = self.quorum;
        BucketProps {
            n_val: q.n,
            r: r.unwrap_or(q.r),
            w: q.w,
            dw: q.dw,
            // The harness's full read (r = n) must hear every primary: a
            // fallback standing in for a replica it timed out on would not
            // repair what only that replica holds.
            pr: r.filter(|&r| r >= q.n).unwrap_or(0),
            pw: q.pw,
            conflict_mode: q.mode,
        }
        .for_ring(self.ring.members().len())
    }

    fn order(&self, key: &str) -> Vec<String> {
        let p = self
            .ring
            .partition_of(crate::BUCKET.as_bytes(), key.as_bytes());
        self.ring.order(p).map(str::to_owned).collect()
    }

    fn plan(&self, order: &[String], n: u8) -> quorum::Plan {
        let refs: Vec<&str> = order.iter().map(String::as_str).collect();
        quorum::plan(&refs, usize::from(n), |id| self.is_reachable(id))
    }

    /// A client request arrived.
    pub(crate) fn client(&mut self, op: OpId, req: ClientReq, now: u64, out: &mut Vec<Out>) {
        if !self.membership.has_joined() {
            let e = ClientError::definite("not joined");
            let result = match req {
                ClientReq::Get { .. } => ClientResult::Got(Err(e)),
                ClientReq::Put { .. } => ClientResult::Put(Err(e)),
            };
            out.push(Out::Answer { op, result });
            return;
        }
        match req {
            ClientReq::Get { key, r } => self.read(op, key, r, now, out),
            ClientReq::Put { key, ctx, value } => {
                self.write(ReplyTo::Client(op), key, ctx, value, false, now, out)
            }
        }
    }

    fn read(&mut self, op: OpId, key: String, r: Option<u8>, now: u64, out: &mut Vec<Out>) {
        let order = self.order(&key);
        let props = self.props(r);
        let needs = Needs {
            total: props.r,
            durable: 0,
            primary: props.pr,
        };
        let plan = self.plan(&order, props.n_val);
        let mut round = match ReadRound::new(plan, needs, props.conflict_mode) {
            Ok(r) => r,
            Err(s) => {
                let e = ClientError::definite(s.to_string());
                out.push(Out::Answer {
                    op,
                    result: ClientResult::Got(Err(e)),
                });
                return;
            }
        };
        let id = self.next_req;
        self.next_req += 1;
        let targets = round.start();
        self.reads.insert(
            id,
            ReadState {
                round,
                key,
                to: Some(ReplyTo::Client(op)),
            },
        );
        for t in targets {
            self.send_read(id, t, now, out);
        }
    }

    fn send_read(&mut self, round: u64, target: Target, now: u64, out: &mut Vec<Out>) {
        let Some(key) = self.reads.get(&round).map(|s| s.key.clone()) else {
            return;
        };
        if target.node == self.id {
            let result = self.local_read(&key, target.hint_for.as_deref());
            self.read_reply(round, target, result, now, out);
            return;
        }
        let to = target.node.clone();
        let hint_for = target.hint_for.clone();
        let req = self.req(Pending::Read { round, target });
        let timeout = self.timeouts.replica_ms;
        self.send(out, &to, Msg::ReplicaGet { req, key, hint_for }, timeout);
    }

    fn read_reply(
        &mut self,
        round: u64,
        target: Target,
        result: Result<Option<Object>, ()>,
        now: u64,
        out: &mut Vec<Out>,
    ) {
        let Some(state) = self.reads.get_mut(&round) else {
            return;
        };
        let step = state.round.reply(target, result);
        if let Some(answer) = step.answer {
            if let Some(ReplyTo::Client(op)) = state.to.take() {
                let result = answer.map_err(|s| ClientError::definite(s.to_string()));
                out.push(Out::Answer {
                    op,
                    result: ClientResult::Got(result),
                });
            }
        }
        if let Some(sub) = step.send {
            self.send_read(round, sub, now, out);
        }
        let done = self.reads.get(&round).is_some_and(|s| !s.round.pending());
        if done {
            if let Some(state) = self.reads.remove(&round) {
                self.read_repair(state, out);
            }
        }
    }

    fn read_repair(&mut self, state: ReadState, out: &mut Vec<Out>) {
        let Some((merged, stale)) = state.round.repairs() else {
            return;
        };
        for target in stale {
            if target.node == self.id {
                let _ = self.store_replica(&state.key, &merged, target.hint_for.clone(), false);
                continue;
            }
            let req = self.req(Pending::Repair);
            let msg = Msg::ReplicaPut {
                req,
                key: state.key.clone(),
                object: merged.clone(),
                durable: false,
                hint_for: target.hint_for.clone(),
            };
            let timeout = self.timeouts.replica_ms;
            self.send(out, &target.node, msg, timeout);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn write(
        &mut self,
        to: ReplyTo,
        key: String,
        ctx: VersionVector,
        value: Option<Vec<u8>>,
        forwarded: bool,
        now: u64,
        out: &mut Vec<Out>,
    ) {
        let order = self.order(&key);
        let props = self.props(None);
        let n = usize::from(props.n_val);
        let me_primary = order.iter().take(n).any(|id| *id == self.id);
        if !forwarded && !me_primary {
            let prefs: Vec<String> = order.iter().take(n).rev().cloned().collect();
            self.forward(to, key, ctx, value, prefs, false, out);
            return;
        }
        let needs = Needs {
            total: props.w,
            durable: props.dw,
            primary: props.pw,
        };
        let plan = self.plan(&order, props.n_val);
        let mut round = match WriteRound::new(plan, needs, &self.id, me_primary) {
            Ok(r) => r,
            Err(s) => return self.answer_write(to, Err(ClientError::definite(s.to_string())), out),
        };
        if self.disk_faults.failing {
            return self.answer_write(to, Err(ClientError::definite("storage error")), out);
        }
        // The coordinator versions the write with its own actor.
        let mode = match self.bug {
            Some(Bug::CoordinatorDropsSiblings) => ConflictMode::Lww,
            _ => self.quorum.mode,
        };
        let stamp = now.saturating_add_signed(self.clock_skew_ms);
        let mut object = self.own_object(&key).unwrap_or_default();
        // `None` is a delete: a tombstone, versioned like any write.
        let content = match value {
            Some(value) => Content::value(value, "application/json", stamp),
            None => Content::tombstone(stamp),
        };
        object
            .update(&ctx, &self.actor(), content, mode)
            .expect("update");
        if object.siblings().len() > MAX_SIBLINGS {
            return self.answer_write(to, Err(ClientError::definite("too_many_siblings")), out);
        }
        let durable = self.quorum.dw > 0;
        self.disk.put_object(&key, object.clone(), durable);
        let early = round.stored_locally(me_primary, durable);
        let mut to = Some(to);
        if let Some(answer) = early {
            if let Some(to) = to.take() {
                let answer = answer.map_err(|s| ClientError::maybe(s.to_string()));
                self.answer_write(to, answer, out);
            }
        }
        let targets = round.start();
        let id = self.next_req;
        self.next_req += 1;
        self.writes.insert(
            id,
            WriteState {
                round,
                key,
                object,
                durable,
                to,
            },
        );
        for t in targets {
            self.send_write(id, t, now, out);
        }
        // A cluster of one: nothing was sent, the round is over.
        if let Some(mut state) = self.writes.remove(&id) {
            if state.round.pending() {
                self.writes.insert(id, state);
            } else if let (Some(answer), Some(to)) = (state.round.finish(), state.to.take()) {
                let answer = answer.map_err(|s| ClientError::maybe(s.to_string()));
                self.answer_write(to, answer, out);
            }
        }
    }

    fn send_write(&mut self, round: u64, target: Target, now: u64, out: &mut Vec<Out>) {
        let Some(state) = self.writes.get(&round) else {
            return;
        };
        let (key, object, durable) = (state.key.clone(), state.object.clone(), state.durable);
        if target.node == self.id {
            // A stand-in that is the coordinator itself (a read-only path
            // elsewhere; kept for symmetry with the node).
            let result = self
                .store_replica(&key, &object, target.hint_for.clone(), durable)
                .map(|()| durable);
            self.write_reply(round, target, result, now, out);
            return;
        }
        let to = target.node.clone();
        let hint_for = target.hint_for.clone();
        let req = self.req(Pending::Write { round, target });
        let msg = Msg::ReplicaPut {
            req,
            key,
            object,
            durable,
            hint_for,
        };
        let timeout = self.timeouts.replica_ms;
        self.send(out, &to, msg, timeout);
    }

    fn write_reply(
        &mut self,
        round: u64,
        target: Target,
        result: Result<bool, ()>,
        now: u64,
        out: &mut Vec<Out>,
    ) {
        let Some(state) = self.writes.get_mut(&round) else {
            return;
        };
        let step = state.round.reply(&target, result);
        let mut answer = step.answer;
        if !state.round.pending() && step.send.is_none() {
            answer = answer.or_else(|| state.round.finish());
        }
        if let Some(answer) = answer {
            if let Some(to) = state.to.take() {
                let answer = answer.map_err(|s| ClientError::maybe(s.to_string()));
                self.answer_write(to, answer, out);
            }
        }
        if let Some(sub) = step.send {
            self.send_write(round, sub, now, out);
        }
        if self.writes.get(&round).is_some_and(|s| !s.round.pending()) {
            self.writes.remove(&round);
        }
    }

    fn answer_write(&mut self, to: ReplyTo, result: Result<(), ClientError>, out: &mut Vec<Out>) {
        match to {
            ReplyTo::Client(op) => out.push(Out::Answer {
                op,
                result: ClientResult::Put(result),
            }),
            ReplyTo::Peer { node, req } => {
                let result = result.map(|()| Object::new());
                self.reply(out, &node, Msg::Coordinated { req, result }, false);
            }
        }
    }

    /// Forwards a write to the next reachable node of `rest` (a stack, the
    /// nearest last), as a node outside the preference list does.
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &mut self,
        to: ReplyTo,
        key: String,
        ctx: VersionVector,
        value: Option<Vec<u8>>,
        mut rest: Vec<String>,
        maybe_taken: bool,
        out: &mut Vec<Out>,
    ) {
        let next = loop {
            match rest.pop() {
                Some(id) if self.can_coordinate(&id) => break Some(id),
                Some(_) => continue,
                None => break None,
            }
        };
        let Some(node) = next else {
            // A coordinator may have stored it before timing out.
            return self.answer_write(to, Err(ClientError::maybe("no coordinator")), out);
        };
        let msg_ctx = ctx.clone();
        let msg_value = value.clone();
        let msg_key = key.clone();
        let req = self.req(Pending::Forward {
            to,
            key,
            ctx,
            value,
            rest,
            maybe_taken,
        });
        let msg = Msg::Coordinate {
            req,
            key: msg_key,
            ctx: msg_ctx,
            value: msg_value,
        };
        let timeout = self.timeouts.forward_ms;
        self.send(out, &node, msg, timeout);
    }

    // ---- hinted handoff (mirrors node::handoff) ----

    /// One handoff round: hints go to their owners once reachable.
    pub(crate) fn handoff(&mut self, out: &mut Vec<Out>) {
        let mut budget = HANDOFF_BUDGET;
        let keys: Vec<(String, String)> = self
            .disk
            .hints()
            .keys()
            .filter(|(owner, _)| owner != &self.id && self.is_reachable(owner))
            .filter(|k| !self.handoff_inflight.contains(*k))
            .cloned()
            .collect();
        for (owner, key) in keys {
            if budget == 0 {
                break;
            }
            budget -= 1;
            let Some(snapshot) = self.disk.hint(&owner, &key).cloned() else {
                continue;
            };
            if self.bug == Some(Bug::HintDeletedBeforeDelivery) {
                self.disk.remove_hint(&owner, &key);
            } else {
                self.handoff_inflight.insert((owner.clone(), key.clone()));
            }
            let req = self.req(Pending::Handoff {
                owner: owner.clone(),
                key: key.clone(),
                snapshot: snapshot.clone(),
            });
            let msg = Msg::ReplicaPut {
                req,
                key,
                object: snapshot,
                durable: true,
                hint_for: None,
            };
            let timeout = self.timeouts.replica_ms;
            self.send(out, &owner, msg, timeout);
        }
    }

    /// Hints held.
    pub(crate) fn hints(&self) -> usize {
        self.disk.hints().len()
    }
}

/// The request id a message carries when it expects an answer.
fn request_id(msg: &Msg) -> Option<ReqId> {
    match msg {
        Msg::Gossip { req, .. }
        | Msg::IndirectPing { req, .. }
        | Msg::ReplicaGet { req, .. }
        | Msg::ReplicaPut { req, .. }
        | Msg::Coordinate { req, .. } => Some(*req),
        _ => None,
    }
}
