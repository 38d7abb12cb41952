//! The simulated world: a seeded event queue over virtual time, a network
//! that drops, delays, duplicates and reorders messages and can be cut,
//! nodes that crash, restart, lose their disks, get slow or failing disks
//! and skewed clocks, and clients running the set and register workloads.
//!
//! Everything is driven by one seed, and nothing iterates a hash map, so a
//! run is a pure function of its [`Config`]: the same seed gives the same
//! trace digest.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use quorra_core::membership::GossipConfig;
use quorra_core::{Object, VersionVector};

use crate::check::{check, check_strong_reads, FinalRead, StrongRead};
use crate::disk::Disk;
use crate::history::{decode, encode, History, Op, OpKind, Outcome};
use crate::node::{
    node_id, peer_addr, ClientReq, ClientResult, OpId, Out, Packet, SimNode, Timeouts,
};
use crate::rng::Rng;
use crate::schedule::{Fault, LayoutChange, Schedule};
use crate::{Config, RunResult};
use quorra_core::layout::{Change, Role};
use quorra_core::node::{CallId, InboundId, StoreFailure, Stored};
use quorra_core::proto::{Message, Request};

const GOSSIP_TICK_MS: u64 = 50;
const HANDOFF_TICK_MS: u64 = 200;
/// Between anti-entropy exchanges of a node (virtual ms).
const ANTI_ENTROPY_MS: u64 = 200;
/// Tombstones are reaped this long after their delete (virtual ms), once
/// every replica holds them: short, so runs reap while faults still hit.
const TOMBSTONE_GRACE_MS: u64 = 1_000;
/// After the replicas converge: at most this long for every partition's
/// reaping pass (about an exchange cycle).
const REAP_PHASE_MS: u64 = 12_000;
const CLIENT_TIMEOUT_MS: u64 = 2_000;
/// How long the cluster may take to form, to settle after the faults heal,
/// and to answer the final reads (virtual ms).
const SETTLE_BOUND_MS: u64 = 60_000;

/// Gossip timings scaled for the simulation.
pub(crate) fn gossip_config() -> GossipConfig {
    GossipConfig {
        probe_interval_ms: 100,
        probe_timeout_ms: 60,
        suspect_timeout_ms: 500,
        push_pull_interval_ms: 600,
        indirect_probes: 2,
        piggyback: 8,
    }
}

#[derive(Debug)]
enum Event {
    Deliver {
        from: usize,
        to: usize,
        to_life: u64,
        msg: Packet,
    },
    /// A node's timer.
    Wake {
        node: usize,
        life: u64,
        at: u64,
    },
    /// A slow storage operation finished.
    Stored {
        node: usize,
        life: u64,
        id: u64,
        result: Result<Stored, StoreFailure>,
    },
    ClientNext {
        client: usize,
    },
    ToNode {
        node: usize,
        op: OpId,
        req: ClientReq,
    },
    Answer {
        op: OpId,
        result: ClientResult,
    },
    ClientTimeout {
        op: OpId,
    },
    Fault(Fault),
}

impl Event {
    fn tag(&self) -> u64 {
        match self {
            Self::Deliver { from, to, msg, .. } => {
                (*from as u64) << 32 | (*to as u64) << 8 | msg.tag()
            }
            Self::Wake { node, .. } => 0x100 + *node as u64,
            Self::Stored { node, id, .. } => 0x300 + *node as u64 + (*id << 16),
            Self::ClientNext { client } => 0x400 + *client as u64,
            Self::ToNode { node, op, .. } => 0x500 + *node as u64 + (*op << 16),
            Self::Answer { op, .. } => 0x600 + (*op << 16),
            Self::ClientTimeout { op } => 0x700 + (*op << 16),
            Self::Fault(_) => 0x800,
        }
    }
}

/// A final read under way: the node, the key, and its answer once in.
type FinalSlot = (usize, String, Option<Result<Vec<Option<Vec<u64>>>, String>>);

/// What a client is in the middle of.
#[derive(Debug, Clone)]
struct ClientOp {
    request: OpId,
    node: usize,
    key: String,
    register: bool,
    /// A register delete (with the context read) instead of a write.
    delete: bool,
    /// A set read that needs every primary (r = pr = n).
    strong: bool,
    unique: u64,
    invoked_ms: u64,
    /// `None` while reading; the values the read saw once writing.
    observed: Option<Vec<u64>>,
}

#[derive(Debug, Default)]
struct Client {
    current: Option<ClientOp>,
    done: usize,
}

/// Network conditions.
#[derive(Debug, Clone, Copy)]
struct Net {
    drop_per_mille: u64,
    dup_per_mille: u64,
    base_delay_ms: u64,
    tail_per_mille: u64,
    tail_ms: u64,
}

pub(crate) struct World {
    /// The outcome of the operator's last layout commit.
    committed: Option<Result<u64, String>>,
    /// Times the operator tried its layout change.
    layout_attempts: u32,
    /// Writes acknowledged while their partition moved without `w` of
    /// the replicas before the move holding them.
    dual_quorum_violations: Vec<String>,
    config: Config,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: BTreeMap<u64, Event>,
    rng: Rng,
    nodes: Vec<Option<SimNode>>,
    disks: Vec<Disk>,
    lives: Vec<u64>,
    /// When each node's current life started (virtual ms).
    started_at: Vec<u64>,
    blocked: BTreeSet<(usize, usize)>,
    net: Net,
    clients: Vec<Client>,
    next_op: OpId,
    next_unique: u64,
    history: History,
    finals: BTreeMap<OpId, FinalSlot>,
    workload_over: bool,
    trace: u64,
    processed: u64,
    wiped: bool,
    /// A node killed for good (it never restarts, and is removed).
    dead: Option<usize>,
    /// Reads that heard every primary, to check against acknowledgements.
    strong_reads: Vec<StrongRead>,
    /// Reused dots met by nodes no longer running.
    dot_collisions: usize,
    resurrections: usize,
    reaped: usize,
    /// Reaps while a replica still held a value the tombstone deleted.
    reaped_early: Vec<String>,
    /// Every reaped tombstone's clock, by key: what no value may outlive.
    reaped_clocks: BTreeMap<String, VersionVector>,
    /// Per node: the join of the clocks its store wrote with fsync, by key
    /// (kept across crashes and wipes: what it once acknowledged durably).
    durable: Vec<BTreeMap<String, VersionVector>>,
    /// Hints deleted before their owner durably stored what they held.
    hints_deleted_early: Vec<String>,
    /// Peer requests delivered and not answered yet: who sent each (node,
    /// life, its call id).
    /// Requests being served: whom to answer, and whether it is data.
    routes: BTreeMap<InboundId, (usize, u64, CallId, bool)>,
    next_inbound: InboundId,
    /// When each node's next timer event is scheduled.
    wakes: Vec<u64>,
    /// Replica and coordination messages scheduled and not yet delivered:
    /// the cluster is quiet only when none are left (a delayed read repair
    /// still lands, even after its sender stopped waiting for it).
    data_in_flight: u64,
}

impl World {
    pub(crate) fn new(config: Config) -> Self {
        let mut rng = Rng::new(config.seed);
        let net = Net {
            drop_per_mille: rng.below(50),
            dup_per_mille: rng.below(30),
            base_delay_ms: 1 + rng.below(10),
            tail_per_mille: rng.below(30),
            tail_ms: 50 + rng.below(400),
        };
        let n = config.nodes;
        let mut world = Self {
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            rng,
            nodes: (0..n).map(|_| None).collect(),
            disks: (0..n).map(|i| Disk::new(1 + i as u64)).collect(),
            lives: vec![0; n],
            started_at: vec![0; n],
            blocked: BTreeSet::new(),
            net,
            clients: (0..config.clients).map(|_| Client::default()).collect(),
            next_op: 1,
            next_unique: 1,
            history: History::default(),
            finals: BTreeMap::new(),
            workload_over: false,
            trace: 0xcbf2_9ce4_8422_2325,
            processed: 0,
            wiped: false,
            dead: None,
            dot_collisions: 0,
            resurrections: 0,
            reaped: 0,
            reaped_clocks: BTreeMap::new(),
            reaped_early: Vec::new(),
            committed: None,
            layout_attempts: 0,
            dual_quorum_violations: Vec::new(),
            durable: vec![BTreeMap::new(); n],
            hints_deleted_early: Vec::new(),
            strong_reads: Vec::new(),
            routes: BTreeMap::new(),
            next_inbound: 1,
            wakes: vec![u64::MAX; n],
            data_in_flight: 0,
            config,
        };
        for i in 0..n {
            world.start_node(i);
        }
        world
    }

    fn at(&mut self, delay: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse((self.now + delay, self.seq)));
        self.events.insert(self.seq, event);
    }

    fn timeouts(&self) -> Timeouts {
        Timeouts {
            replica_ms: 300,
            forward_ms: 800,
            gossip_tick_ms: GOSSIP_TICK_MS,
            handoff_ms: HANDOFF_TICK_MS,
            anti_entropy_ms: if self.config.anti_entropy {
                ANTI_ENTROPY_MS
            } else {
                0
            },
            // Reaping rides on anti-entropy's exchanges.
            tombstone_grace_ms: if self.config.anti_entropy {
                TOMBSTONE_GRACE_MS
            } else {
                0
            },
        }
    }

    fn start_node(&mut self, i: usize) {
        self.lives[i] += 1;
        self.started_at[i] = self.now;
        let life = self.lives[i];
        // Either every node is an initial member (each a would-be founder,
        // as `quorra dev-cluster` configures them) and seeds node 0 and the
        // next one, or node 0 founds alone (no seeds, in every life: after
        // a restart its saved layout brings it back) and is everyone's
        // seed. (Seeding only the next node makes discovery walk a ring of
        // n hops: at 100 nodes the founders did not all meet in a minute.)
        let n = self.config.nodes;
        let (seeds, initial) = if self.config.all_founders {
            let mut seeds = vec![peer_addr(0), peer_addr((i + 1) % n)];
            seeds.dedup();
            (seeds, (0..n).map(node_id).collect())
        } else if i == 0 {
            (Vec::new(), BTreeSet::from([node_id(0)]))
        } else {
            (vec![peer_addr(0)], BTreeSet::new())
        };
        let node = SimNode::boot(
            i,
            std::mem::take(&mut self.disks[i]),
            seeds,
            initial,
            // Taken if the disk was not closed (the node crashed).
            1_000 + self.rng.next_u64(),
            gossip_config(),
            self.config.quorum,
            self.timeouts(),
            self.config.bug,
            self.now,
            life,
        );
        self.nodes[i] = Some(node);
        self.wakes[i] = u64::MAX;
        // Nodes do not tick in step.
        let jitter = self.rng.below(GOSSIP_TICK_MS);
        self.wakes[i] = self.now + jitter;
        self.at(
            jitter,
            Event::Wake {
                node: i,
                life,
                at: self.now + jitter,
            },
        );
    }

    /// Schedules node `i`'s next timer, if it is due before the one
    /// scheduled.
    fn schedule_wake(&mut self, i: usize) {
        let Some(node) = self.nodes[i].as_ref() else {
            return;
        };
        let at = node.poll_timeout().max(self.now);
        if at < self.wakes[i] || self.wakes[i] < self.now {
            self.wakes[i] = at;
            let life = self.lives[i];
            self.at(at - self.now, Event::Wake { node: i, life, at });
        }
    }

    fn crash(&mut self, i: usize) {
        if let Some(node) = self.nodes[i].take() {
            // The disk survives a crash; what was only in memory does not.
            self.dot_collisions += node.dot_collisions;
            self.resurrections += node.resurrections;
            self.reaped += node.reaped;
            self.disks[i] = node.disk;
            self.lives[i] += 1;
        }
    }

    fn apply(&mut self, fault: Fault) {
        match fault {
            Fault::Crash(i) => self.crash(i),
            Fault::Layout(change) => self.operate(change),
            Fault::Restart(i) => {
                if self.nodes[i].is_none() && self.dead != Some(i) {
                    self.start_node(i);
                }
            }
            Fault::Wipe(i) => {
                self.crash(i);
                // A new disk: a new actor epoch (the node's kv679 defence).
                self.disks[i] = Disk::new(1_000 + self.rng.next_u64());
                self.wiped = true;
            }
            Fault::PowerLoss(i) => {
                self.crash(i);
                self.disks[i].power_loss();
                self.wiped = true;
            }
            Fault::Corrupt(i, pick) => {
                let disk = match self.nodes[i].as_mut() {
                    Some(node) => &mut node.disk,
                    None => &mut self.disks[i],
                };
                if disk.corrupt(pick).is_some() {
                    self.wiped = true;
                }
            }
            Fault::Partition(side) => {
                let side: BTreeSet<usize> = side.into_iter().collect();
                for a in 0..self.config.nodes {
                    for b in 0..self.config.nodes {
                        if side.contains(&a) != side.contains(&b) {
                            self.blocked.insert((a, b));
                        }
                    }
                }
            }
            Fault::OneWay(from, to) => {
                self.blocked.insert((from, to));
            }
            Fault::Heal => self.blocked.clear(),
            Fault::DiskFailing(i, on) => {
                if let Some(n) = self.nodes[i].as_mut() {
                    n.disk_faults.failing = on;
                }
            }
            Fault::DiskSlow(i, ms) => {
                if let Some(n) = self.nodes[i].as_mut() {
                    n.disk_faults.slow_ms = ms;
                }
            }
            Fault::ClockSkew(i, ms) => {
                if let Some(n) = self.nodes[i].as_mut() {
                    n.clock_skew_ms = ms;
                }
            }
        }
    }

    /// Ends every fault: nodes restarted, links healed, disks working, no
    /// more losses or duplicates.
    fn heal_all(&mut self) {
        self.blocked.clear();
        self.net.drop_per_mille = 0;
        self.net.dup_per_mille = 0;
        for i in 0..self.config.nodes {
            if self.nodes[i].is_none() && self.dead != Some(i) {
                self.start_node(i);
            }
            if let Some(n) = self.nodes[i].as_mut() {
                n.disk_faults = Default::default();
            }
        }
    }

    fn delay(&mut self) -> u64 {
        let mut d = 1 + self.rng.below(self.net.base_delay_ms);
        if self.rng.below(1000) < self.net.tail_per_mille {
            d += self.rng.below(self.net.tail_ms);
        }
        d
    }

    /// The handoff monitor: a hint may be deleted only once its owner has
    /// durably stored everything it held (the rule the README states). It
    /// watches every store, so it needs no lucky loss to notice.
    fn watch_handoff(&mut self, i: usize) {
        let Some(node) = self.nodes[i].as_mut() else {
            return;
        };
        let synced = std::mem::take(&mut node.synced);
        let deleted = std::mem::take(&mut node.hints_deleted);
        let reaps = std::mem::take(&mut node.reaps);
        for (key, clock, holders) in reaps {
            self.watch_reap(i, &key, &clock, &holders);
            self.reaped_clocks.entry(key).or_default().join(&clock);
        }
        for (key, clock) in synced {
            self.durable[i].entry(key).or_default().join(&clock);
        }
        for (owner, key, clock) in deleted {
            let owner_index = owner
                .strip_prefix('n')
                .and_then(|s| s.parse::<usize>().ok());
            let stored = owner_index
                .and_then(|o| self.durable.get(o))
                .and_then(|d| d.get(&key))
                .is_some_and(|c| c.descends(&clock));
            if !stored {
                self.hints_deleted_early.push(format!(
                    "{} deleted its hint for {owner} of {key} at {} ms, before {owner} stored it",
                    node_id(i),
                    self.now
                ));
            }
        }
    }

    fn outputs(&mut self, from: usize, out: Vec<Out>) {
        self.watch_handoff(from);
        let life = self.lives[from];
        for o in out {
            match o {
                Out::Send { to, mut packet } => {
                    packet.from_life = life;
                    if to < self.config.nodes {
                        let to_life = self.lives[to];
                        self.transmit(from, to, to_life, packet);
                    }
                }
                Out::Respond { inbound, reply } => {
                    if let Some((to, to_life, call, data)) = self.routes.remove(&inbound) {
                        let packet = Packet {
                            from_life: life,
                            data,
                            message: Message::Response {
                                id: Some(call),
                                reply,
                            },
                        };
                        self.transmit(from, to, to_life, packet);
                    }
                }
                Out::Stored { id, result, after } => self.at(
                    after,
                    Event::Stored {
                        node: from,
                        life,
                        id,
                        result,
                    },
                ),
                Out::Answer { op, result, moving } => {
                    if let Some((key, before, clock)) = moving {
                        if std::env::var_os("QUORRA_SIM_DEBUG").is_some() {
                            eprintln!("ack of {key} via n{from} clock {clock:?}");
                        }
                        self.check_dual_quorum(&key, &before, &clock);
                    }
                    self.at(1, Event::Answer { op, result });
                }
                Out::Committed { result } => self.committed = Some(result),
            }
        }
        self.schedule_wake(from);
    }

    /// Puts a message on the network: lost, duplicated, delayed.
    fn transmit(&mut self, from: usize, to: usize, to_life: u64, msg: Packet) {
        if msg.data {
            self.data_in_flight += 1;
        }
        if to == from {
            self.at(
                0,
                Event::Deliver {
                    from,
                    to,
                    to_life,
                    msg,
                },
            );
            return;
        }
        if self.blocked.contains(&(from, to)) || self.rng.below(1000) < self.net.drop_per_mille {
            if msg.data {
                self.data_in_flight -= 1;
            }
            return;
        }
        if self.rng.below(1000) < self.net.dup_per_mille {
            if msg.data {
                self.data_in_flight += 1;
            }
            let d = self.delay();
            let event = Event::Deliver {
                from,
                to,
                to_life,
                msg: msg.clone(),
            };
            self.at(d, event);
        }
        let d = self.delay();
        self.at(
            d,
            Event::Deliver {
                from,
                to,
                to_life,
                msg,
            },
        );
    }

    fn step(&mut self) -> bool {
        let Some(Reverse((time, seq))) = self.queue.pop() else {
            return false;
        };
        let Some(event) = self.events.remove(&seq) else {
            return true;
        };
        self.now = time;
        self.processed += 1;
        for v in [time, seq, event.tag()] {
            self.trace = (self.trace ^ v).wrapping_mul(0x0100_0000_01b3);
        }
        let now = self.now;
        match event {
            Event::Deliver {
                from,
                to,
                to_life,
                msg,
            } => {
                if msg.data {
                    self.data_in_flight -= 1;
                }
                if self.lives[to] != to_life || self.blocked.contains(&(from, to)) {
                    return true;
                }
                let mut out = Vec::new();
                let inbound = self.next_inbound;
                if let Some(node) = self.nodes[to].as_mut() {
                    match msg.message {
                        Message::Request {
                            id,
                            request: Request::Peer(request),
                        } => {
                            let route = (from, msg.from_life, id, msg.data);
                            self.routes.insert(inbound, route);
                            self.next_inbound += 1;
                            node.request(inbound, from, request, now, &mut out);
                        }
                        Message::Response {
                            id: Some(call),
                            reply,
                        } => node.reply(call, from, reply, now, &mut out),
                        // Simulated clients call their node directly, and
                        // every simulated request is read whole.
                        Message::Request {
                            request: Request::Client(_),
                            ..
                        }
                        | Message::Response { id: None, .. } => {}
                    }
                }
                self.outputs(to, out);
            }
            Event::Wake { node, life, at } => {
                if self.lives[node] != life || self.wakes[node] != at {
                    return true;
                }
                self.wakes[node] = u64::MAX;
                let mut out = Vec::new();
                if let Some(n) = self.nodes[node].as_mut() {
                    n.wake(now, &mut out);
                }
                self.outputs(node, out);
            }
            Event::Stored {
                node,
                life,
                id,
                result,
            } => {
                if self.lives[node] != life {
                    return true;
                }
                let mut out = Vec::new();
                if let Some(n) = self.nodes[node].as_mut() {
                    n.stored(id, result, now, &mut out);
                }
                self.outputs(node, out);
            }
            Event::ClientNext { client } => self.client_next(client),
            Event::ToNode { node, op, req } => {
                let mut out = Vec::new();
                match self.nodes[node].as_mut() {
                    Some(n) => n.client(op, req, now, &mut out),
                    None => {
                        let refused = crate::node::ClientError {
                            definite: true,
                            message: "connection refused".into(),
                        };
                        let result = match req {
                            ClientReq::Get { .. } => ClientResult::Got(Err(refused)),
                            ClientReq::Put { .. } => ClientResult::Put(Err(refused)),
                        };
                        self.at(1, Event::Answer { op, result });
                    }
                }
                self.outputs(node, out);
            }
            Event::Answer { op, result } => self.answer(op, result),
            Event::ClientTimeout { op } => self.client_timeout(op),
            Event::Fault(f) => self.apply(f),
        }
        true
    }

    // ---- clients ----

    fn client_next(&mut self, client: usize) {
        if self.workload_over || self.clients[client].done >= self.config.ops_per_client {
            return;
        }
        let register = self.rng.below(2) == 1;
        let k = self.rng.below(self.config.keys as u64);
        let key = if register {
            format!("reg-{k}")
        } else {
            format!("set-{k}")
        };
        let node = self.rng.below(self.config.nodes as u64) as usize;
        // One register operation in five deletes what it read; one set
        // operation in four reads from every primary.
        let delete = register && self.rng.below(5) == 0;
        let strong = !register && self.rng.below(4) == 0;
        let op = ClientOp {
            request: self.next_op,
            node,
            key: key.clone(),
            register,
            delete,
            strong,
            unique: self.next_unique,
            invoked_ms: self.now,
            observed: None,
        };
        self.next_op += 1;
        self.next_unique += 1;
        let request = op.request;
        self.clients[client].current = Some(op);
        self.at(
            1,
            Event::ToNode {
                node,
                op: request,
                req: ClientReq::Get {
                    key,
                    r: strong.then_some(self.config.quorum.n),
                },
            },
        );
        self.at(CLIENT_TIMEOUT_MS, Event::ClientTimeout { op: request });
    }

    fn waiting(&self, op: OpId) -> Option<usize> {
        self.clients
            .iter()
            .position(|c| c.current.as_ref().is_some_and(|o| o.request == op))
    }

    fn finish(&mut self, client: usize, outcome: Outcome) {
        let Some(op) = self.clients[client].current.take() else {
            return;
        };
        let kind = if op.delete {
            OpKind::RegDelete {
                observed: op.observed.unwrap_or_default(),
            }
        } else if op.register {
            OpKind::RegWrite {
                value: op.unique,
                observed: op.observed.unwrap_or_default(),
            }
        } else {
            OpKind::SetAdd { element: op.unique }
        };
        self.history.push(Op {
            client,
            key: op.key,
            kind,
            invoked_ms: op.invoked_ms,
            completed_ms: self.now,
            outcome,
        });
        self.clients[client].done += 1;
        let think = self.rng.below(20);
        self.at(think, Event::ClientNext { client });
    }

    fn answer(&mut self, op: OpId, result: ClientResult) {
        if let Some(slot) = self.finals.get_mut(&op) {
            if let ClientResult::Got(r) = result {
                slot.2 = Some(r.map(|o| siblings(o.as_ref())).map_err(|e| e.message));
            }
            return;
        }
        let Some(client) = self.waiting(op) else {
            return; // answered after the client gave up
        };
        match result {
            ClientResult::Got(Err(_)) => self.finish(client, Outcome::Fail),
            ClientResult::Got(Ok(object)) => {
                let Some(mut current) = self.clients[client].current.take() else {
                    return;
                };
                let seen: Vec<Option<Vec<u64>>> = siblings(object.as_ref());
                let observed: Vec<u64> = seen.iter().flatten().flatten().copied().collect();
                // Only while no replica lost data can such a read be held
                // to every earlier acknowledgement.
                if current.strong && !self.wiped {
                    self.strong_reads.push(StrongRead {
                        key: current.key.clone(),
                        invoked_ms: current.invoked_ms,
                        seen: observed.iter().copied().collect(),
                    });
                }
                let value = if current.delete {
                    None
                } else if current.register {
                    Some(encode(&BTreeSet::from([current.unique])))
                } else {
                    let mut set: BTreeSet<u64> = observed.iter().copied().collect();
                    set.insert(current.unique);
                    Some(encode(&set))
                };
                let ctx = object
                    .as_ref()
                    .map(|o| o.clock().clone())
                    .unwrap_or_else(VersionVector::new);
                current.observed = Some(observed);
                current.request = self.next_op;
                self.next_op += 1;
                let (node, key, request) = (current.node, current.key.clone(), current.request);
                self.clients[client].current = Some(current);
                self.at(
                    1,
                    Event::ToNode {
                        node,
                        op: request,
                        req: ClientReq::Put { key, ctx, value },
                    },
                );
                self.at(CLIENT_TIMEOUT_MS, Event::ClientTimeout { op: request });
            }
            ClientResult::Put(Ok(())) => self.finish(client, Outcome::Ok),
            ClientResult::Put(Err(e)) if e.definite => self.finish(client, Outcome::Fail),
            ClientResult::Put(Err(_)) => self.finish(client, Outcome::Unknown),
        }
    }

    fn client_timeout(&mut self, op: OpId) {
        let Some(client) = self.waiting(op) else {
            return;
        };
        let writing = self.clients[client]
            .current
            .as_ref()
            .is_some_and(|o| o.observed.is_some());
        // A read that timed out wrote nothing; a write may have happened.
        let outcome = if writing {
            Outcome::Unknown
        } else {
            Outcome::Fail
        };
        self.finish(client, outcome);
    }

    // ---- phases ----

    /// Every node but one killed for good.
    fn living(&self) -> Vec<usize> {
        (0..self.config.nodes)
            .filter(|&i| self.dead != Some(i))
            .collect()
    }

    fn all_ids(&self) -> Vec<String> {
        self.living().into_iter().map(node_id).collect()
    }

    fn formed(&self) -> bool {
        let ids = self.all_ids();
        self.living()
            .into_iter()
            .all(|i| self.nodes[i].as_ref().is_some_and(|n| n.sees_all_up(&ids)))
    }

    /// Node 0 founded alone and the others joined holding nothing: an
    /// operator stages their joins (all but a node held out to join
    /// later) and commits through node 0, as many times as it takes (a
    /// commit may lose its voters to the network), until every node's
    /// layout gives each of them a role.
    fn commit_joins(&mut self) -> bool {
        let n = self.config.nodes;
        let late = match self.config.layout_change {
            Some(LayoutChange::JoinLate(i)) => Some(node_id(i)),
            _ => None,
        };
        let holders = n - usize::from(late.is_some());
        let all_roles = move |w: &Self| {
            w.nodes.iter().all(|node| {
                node.as_ref()
                    .and_then(|node| node.layout())
                    .is_some_and(|l| l.roles.len() == holders)
            })
        };
        let admitted = |w: &Self| {
            w.nodes[0]
                .as_ref()
                .and_then(|node| node.layout())
                .is_some_and(|l| l.members.len() == n)
        };
        if !self.run_until(SETTLE_BOUND_MS, admitted) {
            return false;
        }
        for _ in 0..5 {
            if all_roles(self) {
                // The first layout moves nothing: the copies are empty.
                return self.run_until(SETTLE_BOUND_MS, |w| !w.any_moving());
            }
            self.committed = None;
            let now = self.now;
            let mut out = Vec::new();
            let started = match self.nodes[0].as_mut() {
                Some(node) => {
                    let changes: Vec<(String, Change)> = node
                        .layout()
                        .map(|l| {
                            l.members
                                .iter()
                                .filter(|id| {
                                    !l.roles.contains_key(*id) && Some(*id) != late.as_ref()
                                })
                                .map(|id| (id.clone(), Change::Set(role())))
                                .collect()
                        })
                        .unwrap_or_default();
                    node.commit(&changes, now, &mut out).is_ok()
                }
                None => false,
            };
            self.outputs(0, out);
            self.schedule_wake(0);
            if started {
                self.run_until(SETTLE_BOUND_MS, |w| w.committed.is_some());
            }
            self.run_until(SETTLE_BOUND_MS, all_roles);
        }
        all_roles(self)
    }

    /// A write acknowledged while its partition moves must be on `w` of
    /// the replicas before the move (or stand-ins holding it for them):
    /// reads go there until the handover.
    fn check_dual_quorum(&mut self, key: &str, before: &[String], clock: &VersionVector) {
        let w = usize::from(self.config.quorum.w);
        let holding = before
            .iter()
            .filter(|b| {
                // A replica down now, or restarted since the write began,
                // may have stored and lost it (a crash, a power loss):
                // given the benefit of the doubt.
                let i = self.index_of_id(b);
                let recent = 2 * CLIENT_TIMEOUT_MS;
                if i.is_none_or(|i| {
                    self.nodes[i].is_none() || self.now < self.started_at[i] + recent
                }) {
                    return true;
                }
                let own = self
                    .nodes
                    .iter()
                    .flatten()
                    .any(|n| n.id == **b && n.holds(key, clock, None));
                own || self
                    .nodes
                    .iter()
                    .flatten()
                    .any(|n| n.holds(key, clock, Some(b.as_str())))
            })
            .count();
        if holding < w && std::env::var_os("QUORRA_SIM_DEBUG").is_some() {
            for b in before {
                let i = self.index_of_id(b);
                let node = i.and_then(|i| self.nodes[i].as_ref());
                eprintln!(
                    "  {b}: alive {} own {} hint-held-by {:?} version {:?}",
                    node.is_some(),
                    node.is_some_and(|n| n.holds(key, clock, None)),
                    self.nodes
                        .iter()
                        .flatten()
                        .filter(|n| n.holds(key, clock, Some(b)))
                        .map(|n| n.id.clone())
                        .collect::<Vec<_>>(),
                    node.and_then(|n| n.layout().map(|l| (l.version, l.moving.is_some())))
                );
            }
        }
        if holding < w {
            self.dual_quorum_violations.push(format!(
                "{key} acknowledged at t={} on {holding} of the replicas before the move {before:?} (w={w})",
                self.now
            ));
        }
    }

    /// The index of the node named `id`.
    fn index_of_id(&self, id: &str) -> Option<usize> {
        (0..self.config.nodes).find(|&i| node_id(i) == id)
    }

    /// Whether partitions are moving in any live node's layout.
    fn any_moving(&self) -> bool {
        self.nodes.iter().flatten().any(SimNode::moving)
    }

    /// The operator's layout change: made through a live node, checked
    /// again every second until some node's layout shows it (bounded).
    fn operate(&mut self, change: LayoutChange) {
        // What the change is, and whether a node's layout shows it done.
        let raised = self.config.quorum.n + 1;
        let (id, want_role) = match change {
            LayoutChange::JoinLate(i) => (node_id(i), true),
            LayoutChange::Leave(i) => (node_id(i), false),
            LayoutChange::RaiseNVal => (String::new(), false),
            LayoutChange::RemoveDead(i) => {
                if self.dead.is_none() {
                    self.crash(i);
                    self.dead = Some(i);
                }
                (node_id(i), false)
            }
        };
        let done = self.nodes.iter().flatten().any(|node| {
            node.layout().is_some_and(|l| match change {
                LayoutChange::RaiseNVal => l
                    .buckets
                    .as_ref()
                    .is_some_and(|t| t.props(crate::BUCKET).n_val == raised),
                _ => l.roles.contains_key(&id) == want_role,
            })
        });
        if done || self.layout_attempts >= 60 {
            return;
        }
        self.layout_attempts += 1;
        let n = self.config.nodes;
        let start = self.rng.below(n as u64) as usize;
        let via = (0..n).map(|k| (start + k) % n).find(|&k| {
            self.nodes[k]
                .as_ref()
                .is_some_and(|node| node.layout().is_some())
        });
        if let Some(via) = via {
            let now = self.now;
            let mut out = Vec::new();
            if let Some(node) = self.nodes[via].as_mut() {
                let _ = match change {
                    LayoutChange::RaiseNVal => node.commit_n_val(raised, now, &mut out),
                    _ => {
                        let c = if want_role {
                            Change::Set(role())
                        } else {
                            Change::Remove
                        };
                        node.commit(&[(id, c)], now, &mut out)
                    }
                };
            }
            self.outputs(via, out);
            self.schedule_wake(via);
        }
        self.at(1_000, Event::Fault(Fault::Layout(change)));
    }

    /// Keys whose replicas (the living nodes whose ring places the key's
    /// partition on them) hold different versions, or a version only some
    /// of them hold.
    fn diverged(&self) -> Vec<String> {
        let living: Vec<&SimNode> = self
            .living()
            .into_iter()
            .filter_map(|i| self.nodes[i].as_ref())
            .collect();
        let held: Vec<BTreeSet<u32>> = living.iter().map(|n| n.partitions_held()).collect();
        let names: BTreeSet<String> = living.iter().flat_map(|n| n.key_names()).collect();
        let Some(first) = living.first() else {
            return Vec::new();
        };
        names
            .into_iter()
            .filter(|name| {
                let p = first.partition_of(name);
                let copies: Vec<Option<Object>> = living
                    .iter()
                    .zip(&held)
                    .filter(|(_, h)| h.contains(&p))
                    .map(|(n, _)| n.copy_of(name))
                    .collect();
                copies.windows(2).any(|w| w[0] != w[1])
            })
            .collect()
    }

    /// The reaping monitor, at each reap: no replica of the key may still
    /// hold a value the tombstone deleted (it would bring it back).
    fn watch_reap(&mut self, reaper: usize, key: &str, clock: &VersionVector, holders: &[String]) {
        for id in holders {
            let Some(i) = self.index_of_id(id) else {
                continue;
            };
            let disk = match self.nodes[i].as_ref() {
                Some(n) => &n.disk,
                None => &self.disks[i],
            };
            let Ok(Some(copy)) = disk.object(key) else {
                continue;
            };
            if copy.live_siblings().any(|s| clock.covers(&s.dot)) {
                self.reaped_early.push(format!(
                    "{} reaped {key} at {} ms while {id} held a value its tombstone deleted",
                    node_id(reaper),
                    self.now
                ));
            }
        }
    }

    /// The reaping monitor: values alive on a replica although a reaped
    /// tombstone of their key had deleted them (their dot is in its clock).
    fn resurrected(&self) -> Vec<String> {
        let mut out = Vec::new();
        for i in self.living() {
            let Some(node) = self.nodes[i].as_ref() else {
                continue;
            };
            for (key, clock) in &self.reaped_clocks {
                let Some(copy) = node.copy_of(key) else {
                    continue;
                };
                for s in copy.live_siblings().filter(|s| clock.covers(&s.dot)) {
                    out.push(format!("{key} on {}: {:?}", node_id(i), s.dot));
                }
            }
        }
        out
    }

    /// Whether no living node holds a tombstone.
    fn reaped_all(&self) -> bool {
        self.living()
            .into_iter()
            .filter_map(|i| self.nodes[i].as_ref())
            .all(|n| !n.holds_tombstones())
    }

    fn quiet(&self) -> bool {
        self.formed()
            && !self.any_moving()
            && self.data_in_flight == 0
            && self
                .nodes
                .iter()
                .flatten()
                .all(|n| n.hints() == 0 && !n.busy())
    }

    /// Runs until `done` holds (checked every 10 virtual ms) or `bound` ms
    /// pass; returns whether it held.
    fn run_until(&mut self, bound: u64, done: impl Fn(&Self) -> bool) -> bool {
        let deadline = self.now + bound;
        let mut checked = self.now;
        while self.now <= deadline {
            if self.now >= checked + 10 || self.now == checked {
                if done(self) {
                    return true;
                }
                checked = self.now.max(checked + 1);
            }
            if !self.step() {
                return done(self);
            }
        }
        done(self)
    }

    fn clients_done(&self) -> bool {
        self.clients.iter().all(|c| c.current.is_none())
            && self
                .clients
                .iter()
                .all(|c| c.done >= self.config.ops_per_client)
    }

    fn read_all(&mut self, via: &[usize], r: Option<u8>) -> Vec<FinalRead> {
        let keys: Vec<String> = (0..self.config.keys)
            .flat_map(|k| [format!("set-{k}"), format!("reg-{k}")])
            .collect();
        self.finals.clear();
        for &node in via {
            for key in &keys {
                let op = self.next_op;
                self.next_op += 1;
                self.finals.insert(op, (node, key.clone(), None));
                let req = ClientReq::Get {
                    key: key.clone(),
                    r,
                };
                self.at(1, Event::ToNode { node, op, req });
            }
        }
        self.run_until(SETTLE_BOUND_MS, |w| {
            w.finals.values().all(|f| f.2.is_some())
        });
        std::mem::take(&mut self.finals)
            .into_values()
            .map(|(node, key, result)| FinalRead {
                via: node_id(node),
                key,
                result: result.unwrap_or_else(|| Err("no answer".into())),
            })
            .collect()
    }

    pub(crate) fn run(mut self) -> RunResult {
        let mut formed = self.run_until(SETTLE_BOUND_MS, Self::formed);
        if !self.config.all_founders {
            formed &= self.commit_joins();
        }
        if !formed && std::env::var_os("QUORRA_SIM_DEBUG").is_some() {
            for (i, n) in self.nodes.iter().enumerate() {
                if let Some(n) = n {
                    eprintln!(
                        "unformed n{i}: layout {:?} acked {:?} stalled {:?}",
                        n.layout().map(|l| (
                            l.version,
                            l.members.len(),
                            l.roles.len(),
                            l.moving.is_some(),
                            l.copying()
                        )),
                        n.layout().map(|l| l.acked.clone()),
                        (
                            n.machine.transfer_status(),
                            n.machine.membership().transfer().map(|t| t.pending.clone())
                        ),
                    );
                }
            }
        }
        let start = self.now;
        let schedule = Schedule::random(&mut self.rng, &self.config);
        for (at, fault) in schedule.faults.iter().cloned() {
            self.at(at, Event::Fault(fault));
        }
        for c in 0..self.config.clients {
            let stagger = self.rng.below(50);
            self.at(stagger, Event::ClientNext { client: c });
        }
        let workload_bound =
            schedule.window_ms + 10 * CLIENT_TIMEOUT_MS * self.config.ops_per_client as u64;
        self.run_until(workload_bound, Self::clients_done);
        self.workload_over = true;
        let end = self.now.max(start + schedule.window_ms);
        self.run_until(end - self.now, |_| false);
        self.heal_all();
        let mut settled = self.run_until(SETTLE_BOUND_MS, Self::quiet);
        if !settled && std::env::var_os("QUORRA_SIM_DEBUG").is_some() {
            for (i, n) in self.nodes.iter().enumerate() {
                if let Some(n) = n {
                    eprintln!(
                        "unsettled n{i}: moving {} hints {} busy {} layout {:?}",
                        n.moving(),
                        n.hints(),
                        n.busy(),
                        n.layout().map(|l| (l.version, l.roles.len(), l.copying()))
                    );
                }
            }
        }
        let q = self.config.quorum;
        let diverged = if self.config.anti_entropy {
            // Anti-entropy brings every replica of every key to one
            // version: a replica that lost its disk, missed a w=1 write or
            // found a corrupt record gets it back with no read (a run fails
            // otherwise).
            settled &= self.run_until(SETTLE_BOUND_MS, |w| w.diverged().is_empty());
            // Then time for tombstones to be reaped everywhere: whatever a
            // reap wrongly deleted is back (or caught by a marker) by then,
            // and the replicas must still agree.
            self.run_until(REAP_PHASE_MS, Self::reaped_all);
            settled &= self.run_until(SETTLE_BOUND_MS, |w| w.diverged().is_empty());
            self.diverged()
        } else {
            // Without it, a replica that lost its disk, or a w=1 write that
            // reached one replica, is found only by reads that reach it: a
            // full read (r = n, every primary; one lost to the network's
            // random loss is asked again) repairs every key first.
            if self.wiped || q.r + q.w <= q.n {
                for _ in 0..5 {
                    let reads = self.read_all(&[0], Some(q.n));
                    settled &= self.run_until(SETTLE_BOUND_MS, Self::quiet);
                    if reads.iter().all(|f| f.result.is_ok()) {
                        break;
                    }
                }
            }
            Vec::new()
        };
        let everyone = self.living();
        let finals = self.read_all(&everyone, None);
        let mut report = check(&self.history, &finals);
        check_strong_reads(&self.history, &self.strong_reads, &mut report);
        // Counted by the nodes alive now, and by those that crashed.
        let living = |count: fn(&SimNode) -> usize| -> usize {
            self.nodes.iter().flatten().map(count).sum()
        };
        let dot_collisions = self.dot_collisions + living(|n| n.dot_collisions);
        let reaped = self.reaped + living(|n| n.reaped);
        let resurrections_caught = self.resurrections + living(|n| n.resurrections);
        let resurrected = self.resurrected();
        RunResult {
            config: self.config.clone(),
            report,
            formed,
            dot_collisions,
            resurrections_caught,
            resurrected,
            reaped_early: self.reaped_early,
            reaped,
            hints_deleted_early: self.hints_deleted_early,
            dual_quorum_violations: self.dual_quorum_violations,
            diverged,
            settled,
            faults: schedule.describe(),
            trace: self.trace,
            events: self.processed,
            virtual_ms: self.now,
            history: self.history,
        }
    }
}

/// The role an operator gives a node: no zone, weight 1.
fn role() -> Role {
    Role {
        zone: None,
        weight: 1,
    }
}

/// Each live sibling's decoded value.
fn siblings(object: Option<&Object>) -> Vec<Option<Vec<u64>>> {
    object
        .map(|o| {
            o.live_siblings()
                .map(|s| decode(&s.content.value))
                .collect()
        })
        .unwrap_or_default()
}
