//! A simulated node: the node's own state machine
//! ([`quorra_core::node::Node`]) driven over the simulated disk, network and
//! clock. This module holds no request-path, gossip or handoff logic: it
//! carries the machine's effects out, as `quorra-node`'s driver does over
//! RocksDB and QUIC, and models what RocksDB would do with each storage
//! operation (through the same pure rules, [`quorra_core::write`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use quorra_core::hash::{key_hash, partition_of};
use quorra_core::hashtree::{segment_of, HashTree};
use quorra_core::membership::{GossipConfig, MemberInfo, Membership, Status};
use quorra_core::node::{
    AntiEntropySettings, CallId, ClientId, Effect, Failure, HandoffSettings, Hint, InboundId, Node,
    Now, Request, Settings, StoreFailure, StoreOp, Stored, TombstoneSettings,
};
use quorra_core::proto::{self, Chunk, Message, Operation, PeerRequest, Pulled, Reply};
use quorra_core::write::{apply_client_write, merge_replica, read_with_hint, resurrected, Refused};
use quorra_core::{
    Actor, BucketName, BucketProps, ConflictMode, Content, ErrorCode, Key, Limits, Object,
    QuorumOverrides, VersionVector,
};

use crate::disk::{Corrupt, Disk};
use crate::Bug;

/// A client operation id, unique per run.
pub(crate) type OpId = u64;

/// Partitions of the simulated ring.
const PARTITIONS: u32 = 64;
/// Tokens per node.
const TOKENS: u16 = 16;

/// Timeouts of the simulated node, in virtual ms.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub(crate) replica_ms: u64,
    pub(crate) forward_ms: u64,
    pub(crate) gossip_tick_ms: u64,
    pub(crate) handoff_ms: u64,
    /// Between anti-entropy exchanges (0: off).
    pub(crate) anti_entropy_ms: u64,
    /// Tombstone reaping's grace period (0: never reaped).
    pub(crate) tombstone_grace_ms: u64,
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

/// A message on the simulated network: the node's own protocol
/// ([`Message`]), with what the world needs to route it.
#[derive(Debug, Clone)]
pub(crate) struct Packet {
    /// The sender's life when it sent it: an answer goes back to that life.
    pub(crate) from_life: u64,
    /// Whether it carries replica data or a write (not failure detection):
    /// the world waits for these to settle.
    pub(crate) data: bool,
    /// The message.
    pub(crate) message: Message,
}

impl Packet {
    /// A short name for traces.
    pub(crate) fn tag(&self) -> u64 {
        match &self.message {
            Message::Request { request, .. } => match request {
                proto::Request::Peer(PeerRequest::Gossip(_)) => 1,
                proto::Request::Peer(PeerRequest::IndirectPing(_)) => 3,
                proto::Request::Peer(PeerRequest::ReplicaGet(_)) => 5,
                proto::Request::Peer(PeerRequest::ReplicaPut(_)) => 7,
                proto::Request::Peer(PeerRequest::Coordinate(_)) => 9,
                proto::Request::Peer(PeerRequest::Decide(_)) => 13,
                proto::Request::Peer(PeerRequest::Pull(_)) => 15,
                proto::Request::Peer(PeerRequest::TreeHashes(_)) => 17,
                proto::Request::Peer(PeerRequest::SegmentKeys(_)) => 19,
                proto::Request::Peer(PeerRequest::Exchange(_)) => 21,
                proto::Request::Peer(PeerRequest::Reap(_)) => 23,
                proto::Request::Client(_) => 11,
            },
            Message::Response { .. } => 2,
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

/// A node's answer to a client.
#[derive(Debug, Clone)]
pub(crate) enum ClientResult {
    Got(Result<Option<Object>, ClientError>),
    Put(Result<(), ClientError>),
}

/// What a node asks the world to do.
#[derive(Debug)]
pub(crate) enum Out {
    /// Send a request to node `to`.
    Send { to: usize, packet: Packet },
    /// Answer the peer request the world named `inbound`.
    Respond { inbound: InboundId, reply: Reply },
    /// A storage operation finishes after `after` ms (a slow disk).
    Stored {
        id: u64,
        result: Result<Stored, StoreFailure>,
        after: u64,
    },
    /// Answer a client; for a write acknowledged while its partition
    /// moves, the key, its replicas before the move and the clock written.
    Answer {
        op: OpId,
        result: ClientResult,
        moving: Option<(String, Vec<String>, VersionVector)>,
    },
    /// A layout commit ended: the new version, or why not.
    Committed { result: Result<u64, String> },
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
    /// Values a merge brought back after their key's tombstone was reaped
    /// (each deleted again by the marker's tombstone).
    pub(crate) resurrections: usize,
    /// Tombstones this node's reaping passes deleted.
    pub(crate) reaped: usize,
    /// For the reaping monitor: each key this node's store reaped, with
    /// the tombstone's clock and the key's replicas as this node sees
    /// them, since the world last looked.
    pub(crate) reaps: Vec<(String, VersionVector, Vec<String>)>,
    /// For the handoff monitor: the clock of each object this node's store
    /// wrote with fsync, by key, since the world last looked.
    pub(crate) synced: Vec<(String, VersionVector)>,
    /// For the handoff monitor: the hints this node deleted (owner, key,
    /// clock), since the world last looked.
    pub(crate) hints_deleted: Vec<(String, String, VersionVector)>,
    pub(crate) machine: Node,
    /// Client requests in flight: whether each is a read.
    clients: BTreeMap<ClientId, (bool, String)>,
    /// Epochs taken, to derive the next one.
    rotations: u64,
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
/// Whether key `name` is in `partition` (of `partitions`).
fn in_partition(name: &str, partition: u32, partitions: u32) -> bool {
    let hash = key_hash(crate::BUCKET.as_bytes(), name.as_bytes());
    partition_of(hash, partitions) == partition
}

pub(crate) fn node_id(i: usize) -> String {
    format!("n{i:02}")
}

fn bucket() -> BucketName {
    BucketName::parse(crate::BUCKET, &Limits::default()).expect("the simulated bucket")
}

fn key_of(key: &str) -> Key {
    Key::parse(key.as_bytes().to_vec(), &Limits::default()).expect("simulated keys are valid")
}

fn name_of(key: &Key) -> String {
    String::from_utf8_lossy(key.as_bytes()).into_owned()
}

fn storage_error() -> StoreFailure {
    StoreFailure {
        code: ErrorCode::StorageError,
        message: "storage error".into(),
    }
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
        let props = BucketProps {
            n_val: quorum.n,
            r: quorum.r,
            w: quorum.w,
            dw: quorum.dw,
            pr: 0,
            pw: quorum.pw,
            conflict_mode: quorum.mode,
            datatype: None,
        };
        let mut membership = Membership::new(
            me,
            seeds,
            initial,
            quorra_core::layout::Bootstrap {
                shape: quorra_core::layout::Shape {
                    partitions: PARTITIONS,
                    tokens: TOKENS,
                },
                buckets: quorra_core::bucket::BucketTable {
                    defaults: props,
                    named: BTreeMap::new(),
                },
            },
            gossip,
            now,
            life.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ i as u64,
        );
        membership.restore(disk.table().clone(), now);
        let settings = Settings {
            partitions: PARTITIONS,
            tokens: TOKENS,
            replica_timeout_ms: timeouts.replica_ms,
            request_timeout_ms: timeouts.forward_ms,
            gossip_tick_ms: timeouts.gossip_tick_ms,
            handoff: HandoffSettings {
                interval_ms: timeouts.handoff_ms,
                rate_per_second: 160,
                max_hint_age_ms: 0,
            },
            max_rounds: 4_096,
            transfer_bytes_per_second: 0,
            cleanup_grace_ms: 5_000,
            anti_entropy: AntiEntropySettings {
                interval_ms: timeouts.anti_entropy_ms,
            },
            tombstones: TombstoneSettings {
                grace_ms: timeouts.tombstone_grace_ms,
            },
            planted: match bug {
                Some(Bug::Node(p)) => Some(p),
                _ => None,
            },
        };
        let clock = Now {
            mono_ms: now,
            wall_ms: now,
        };
        // Ids never repeat across lives, so a late answer to a request of
        // a previous life cannot match a new one.
        let machine = Node::new(settings, membership, clock, life << 40);
        Self {
            id,
            disk,
            disk_faults: DiskFaults::default(),
            clock_skew_ms: 0,
            dot_collisions: 0,
            resurrections: 0,
            reaped: 0,
            reaps: Vec::new(),
            synced: Vec::new(),
            hints_deleted: Vec::new(),
            machine,
            clients: BTreeMap::new(),
            rotations: 0,
            bug,
        }
    }

    fn now(&self, now: u64) -> Now {
        Now {
            mono_ms: now,
            wall_ms: now.saturating_add_signed(self.clock_skew_ms),
        }
    }

    /// Whether this node sees every one of `ids` as up.
    pub(crate) fn sees_all_up(&self, ids: &[String]) -> bool {
        ids.iter()
            .all(|id| self.machine.membership().status(id) == Some(Status::Up))
    }

    /// This node's layout, once it has joined.
    pub(crate) fn layout(&self) -> Option<&quorra_core::layout::Layout> {
        self.machine.membership().layout()
    }

    /// An operator stages `changes` through this node and commits them
    /// against its layout version.
    pub(crate) fn commit(
        &mut self,
        changes: &[(String, quorra_core::layout::Change)],
        now: u64,
        out: &mut Vec<Out>,
    ) -> Result<(), String> {
        let layout = self.layout().cloned().ok_or("not joined")?;
        for (id, change) in changes {
            self.machine
                .stage(id, change.clone())
                .map_err(|e| e.to_string())?;
        }
        self.machine.handle_commit(0, layout.version, self.now(now));
        self.drain(now, out);
        Ok(())
    }

    /// Stages the bucket's `n_val` and commits it.
    pub(crate) fn commit_n_val(
        &mut self,
        n_val: u8,
        now: u64,
        out: &mut Vec<Out>,
    ) -> Result<(), String> {
        let layout = self.layout().cloned().ok_or("not joined")?;
        self.machine
            .stage_n_val(crate::BUCKET, n_val)
            .map_err(|e| e.to_string())?;
        self.machine.handle_commit(0, layout.version, self.now(now));
        self.drain(now, out);
        Ok(())
    }

    /// Whether this node holds `key` (or a hint of it for `owner`, when
    /// given) at a version that includes `clock`.
    pub(crate) fn holds(&self, key: &str, clock: &VersionVector, hint_for: Option<&str>) -> bool {
        let object = match hint_for {
            None => self.disk.object(key).ok().flatten(),
            Some(owner) => self.disk.hint(owner, key),
        };
        object.is_some_and(|o| o.clock().descends(clock))
    }

    /// The partitions this node replicates, as its machine sees the ring.
    pub(crate) fn partitions_held(&self) -> BTreeSet<u32> {
        self.machine.partitions_held().into_iter().collect()
    }

    /// The partition `key` falls in (as this node's ring cuts keys).
    pub(crate) fn partition_of(&self, key: &str) -> u32 {
        self.machine
            .ring()
            .partition_of(crate::BUCKET.as_bytes(), key.as_bytes())
    }

    /// Every key this node holds a record of.
    pub(crate) fn key_names(&self) -> Vec<String> {
        self.disk.object_names()
    }

    /// The replicas of `name` in this node's layout: the first `n_val`,
    /// and while its partition moves the first `n_val` before.
    fn holders_of(&self, name: &str) -> Vec<String> {
        let ring = self.machine.ring();
        let members = ring.members().len();
        let n = usize::from(self.machine.bucket_props(&bucket()).for_ring(members).n_val);
        let p = ring.partition_of(crate::BUCKET.as_bytes(), name.as_bytes());
        let mut out: Vec<String> = ring.order(p).take(n).map(str::to_owned).collect();
        for id in ring.moving_from(p).unwrap_or_default().into_iter().take(n) {
            if !out.iter().any(|o| o == id) {
                out.push(id.to_owned());
            }
        }
        out
    }

    /// Whether this node holds a tombstone.
    pub(crate) fn holds_tombstones(&self) -> bool {
        self.disk.holds_tombstones()
    }

    /// This node's own readable copy of `key`.
    pub(crate) fn copy_of(&self, key: &str) -> Option<Object> {
        self.disk.object(key).ok().flatten().cloned()
    }

    /// Whether partitions are still moving in this node's layout.
    pub(crate) fn moving(&self) -> bool {
        self.layout().is_some_and(|l| l.moving.is_some())
    }

    /// Whether requests or rounds are still in flight.
    pub(crate) fn busy(&self) -> bool {
        self.machine.busy()
    }

    /// Hints held.
    pub(crate) fn hints(&self) -> usize {
        self.disk.hints().len()
    }

    /// When the node's next timer is due.
    pub(crate) fn poll_timeout(&self) -> u64 {
        self.machine.poll_timeout()
    }

    // ---- events in ----

    /// A timer is due.
    pub(crate) fn wake(&mut self, now: u64, out: &mut Vec<Out>) {
        self.machine.handle_timeout(self.now(now));
        self.drain(now, out);
    }

    /// A client request arrived.
    pub(crate) fn client(&mut self, op: OpId, req: ClientReq, now: u64, out: &mut Vec<Out>) {
        let n = self.machine.bucket_props(&bucket()).n_val;
        let request = match req {
            ClientReq::Get { key, r } => {
                self.clients.insert(op, (true, key.clone()));
                Request::Get {
                    bucket: bucket(),
                    key: key_of(&key),
                    // The harness's full read (r = n) must hear every
                    // primary: a fallback standing in for a replica it timed
                    // out on would not repair what only that replica holds.
                    quorum: QuorumOverrides {
                        // A full read hears the n_val in force, which an
                        // operator may have raised.
                        r: r.map(|r| r.max(n)),
                        pr: r.map(|_| n),
                        ..QuorumOverrides::default()
                    },
                }
            }
            ClientReq::Put { key, ctx, value } => {
                self.clients.insert(op, (false, key.clone()));
                let operation = match value {
                    Some(v) => Operation::Put(Content::value(v, "application/json", 0)),
                    None => Operation::Delete,
                };
                Request::Write {
                    bucket: bucket(),
                    key: key_of(&key),
                    context: ctx,
                    operation,
                    quorum: QuorumOverrides::default(),
                }
            }
        };
        self.machine.handle_client(op, request, self.now(now));
        self.drain(now, out);
    }

    /// A peer's request, named `inbound` by the world.
    pub(crate) fn request(
        &mut self,
        inbound: InboundId,
        from: usize,
        request: PeerRequest,
        now: u64,
        out: &mut Vec<Out>,
    ) {
        self.machine
            .handle_peer(inbound, &node_id(from), request, self.now(now));
        self.drain(now, out);
    }

    /// The answer to a request this node sent.
    pub(crate) fn reply(
        &mut self,
        call: CallId,
        from: usize,
        reply: Reply,
        now: u64,
        out: &mut Vec<Out>,
    ) {
        let from = node_id(from);
        self.machine
            .handle_reply(call, Some(&from), Ok(reply), self.now(now));
        self.drain(now, out);
    }

    /// A slow storage operation finished.
    pub(crate) fn stored(
        &mut self,
        id: u64,
        result: Result<Stored, StoreFailure>,
        now: u64,
        out: &mut Vec<Out>,
    ) {
        self.machine.handle_stored(id, result, self.now(now));
        self.drain(now, out);
    }

    /// Carries out every effect the machine asks for.
    fn drain(&mut self, now: u64, out: &mut Vec<Out>) {
        while let Some(effect) = self.machine.poll_effect() {
            match effect {
                Effect::Transmit(t) => out.push(Out::Send {
                    to: index_of(t.addr),
                    packet: Packet {
                        from_life: 0,
                        // Failure detection, anti-entropy and reaping never end:
                        // the world does not wait for them to settle.
                        data: !matches!(
                            t.request,
                            PeerRequest::Gossip(_)
                                | PeerRequest::IndirectPing(_)
                                | PeerRequest::TreeHashes(_)
                                | PeerRequest::SegmentKeys(_)
                                | PeerRequest::Exchange(_)
                                | PeerRequest::Reap(_)
                        ),
                        message: Message::Request {
                            id: t.call,
                            request: t.request.into(),
                        },
                    },
                }),
                Effect::Store { id, op } => {
                    let result = self.execute(op);
                    let after = self.disk_faults.slow_ms;
                    if after > 0 {
                        out.push(Out::Stored { id, result, after });
                    } else {
                        self.machine.handle_stored(id, result, self.now(now));
                    }
                }
                Effect::Answer { client, result } => {
                    let (read, key) = self
                        .clients
                        .remove(&client)
                        .unwrap_or((true, String::new()));
                    // A write acknowledged while its partition moves: the
                    // replicas before the move, for the dual-quorum monitor.
                    let moving = match (&result, read) {
                        (Ok(Some(object)), false) => {
                            let ring = self.machine.ring();
                            let p = ring.partition_of(bucket().as_str().as_bytes(), key.as_bytes());
                            let n = usize::from(self.machine.bucket_props(&bucket()).n_val);
                            // The n_val before the move (an operator may
                            // have raised it).
                            let n_before = self
                                .machine
                                .membership()
                                .layout()
                                .and_then(|l| l.moving_buckets.as_ref())
                                .map_or(n, |t| usize::from(t.props(crate::BUCKET).n_val));
                            ring.moving_from(p).and_then(|before| {
                                // The replicas before the move first, then
                                // the fallbacks after them: its first n.
                                let mut order: Vec<String> =
                                    before.iter().map(|s| s.to_string()).collect();
                                for id in ring.order(p) {
                                    if !order.iter().any(|o| o == id) {
                                        order.push(id.to_owned());
                                    }
                                }
                                order.truncate(n_before);
                                let mut was: Vec<&str> = order.iter().map(String::as_str).collect();
                                let mut now: Vec<&str> = ring.order(p).take(n).collect();
                                was.sort_unstable();
                                now.sort_unstable();
                                (was != now)
                                    .then(|| (key.clone(), order.clone(), object.clock().clone()))
                            })
                        }
                        _ => None,
                    };
                    let result = result.map_err(|f: Failure| ClientError {
                        definite: f.definite(),
                        message: f.to_string(),
                    });
                    let result = if read {
                        ClientResult::Got(result)
                    } else {
                        ClientResult::Put(result.map(|_| ()))
                    };
                    out.push(Out::Answer {
                        op: client,
                        result,
                        moving,
                    });
                }
                Effect::Respond { inbound, reply } => out.push(Out::Respond { inbound, reply }),
                Effect::SaveTable { table, done, .. } => {
                    self.disk.save_table(*table);
                    if let Some(id) = done {
                        self.machine
                            .handle_stored(id, Ok(Stored::Done), self.now(now));
                    }
                }
                Effect::Committed { result, .. } => out.push(Out::Committed {
                    result: result.map(|l| l.version).map_err(|e| e.to_string()),
                }),
                Effect::Event(quorra_core::node::Event::Reaped { reaped, .. }) => {
                    self.reaped += reaped as usize;
                }
                Effect::Notice(_) | Effect::PeerRestarted(_) | Effect::Event(_) => {}
            }
        }
    }

    // ---- the store model: what RocksDB does with each operation ----

    fn actor(&self) -> Actor {
        Actor::new(self.id.clone(), self.disk.epoch())
    }

    /// Takes a new actor epoch (durably, as the store does).
    fn rotate(&mut self) {
        self.rotations += 1;
        let epoch = self.disk.epoch();
        let fresh = (epoch ^ self.rotations)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(29)
            | 1 << 63;
        self.disk
            .set_epoch(if fresh == epoch { fresh ^ 1 } else { fresh });
    }

    /// This node's own copy of `key`. A corrupt record is moved aside as
    /// evidence and the node takes a new actor epoch before it writes again
    /// (it may have held dots other replicas have): then the key reads as
    /// missing.
    fn own_object(&mut self, key: &str) -> Option<Object> {
        match self.disk.object(key) {
            Ok(o) => o.cloned(),
            Err(Corrupt) => {
                self.disk.quarantine(key);
                if self.bug != Some(Bug::CorruptionReadAsMissing) {
                    self.rotate();
                }
                None
            }
        }
    }

    /// A replica's merge of `object` into its copy of `key`.
    fn merge(
        &mut self,
        key: &Key,
        object: &Object,
        mode: ConflictMode,
        durable: bool,
    ) -> Result<Stored, StoreFailure> {
        let name = name_of(key);
        let mut stored = self.own_object(&name);
        if stored.is_none() {
            if let Some(marker) = self.disk.marker(&name) {
                let back = resurrected(marker, object);
                if back > 0 && std::env::var_os("QUORRA_SIM_DEBUG").is_some() {
                    eprintln!(
                        "{} resurrection of {name}: marker {marker:?}, incoming {object:?}",
                        self.id
                    );
                }
                self.resurrections += back;
                stored = Some(marker.clone());
            }
        }
        let merged = loop {
            match merge_replica(stored.as_ref(), object, &self.actor(), mode) {
                Ok(m) => break m,
                Err(Refused::StaleActor(_)) => self.rotate(),
                Err(e) => {
                    return Err(StoreFailure {
                        code: e.code(),
                        message: e.to_string(),
                    })
                }
            }
        };
        self.dot_collisions += merged.collisions;
        if durable {
            self.synced
                .push((name.clone(), merged.object.clock().clone()));
        }
        self.disk.forget_marker(&name);
        self.disk.put_object(&name, merged.object, durable);
        Ok(Stored::Done)
    }

    /// The readable objects of `partition` (of `partitions`), by name.
    fn partition_objects(&self, partition: u32, partitions: u32) -> Vec<(String, Object)> {
        self.disk
            .object_names()
            .into_iter()
            .filter(|n| in_partition(n, partition, partitions))
            .filter_map(|n| {
                let object = self.disk.object(&n).ok().flatten()?.clone();
                Some((n, object))
            })
            .collect()
    }

    fn execute(&mut self, op: StoreOp) -> Result<Stored, StoreFailure> {
        if self.disk_faults.failing {
            return Err(storage_error());
        }
        match op {
            StoreOp::Coordinate {
                key,
                context,
                change,
                mode,
                durable,
                actor,
                ..
            } => {
                let name = name_of(&key);
                // A reaped key's write starts from its tombstone, as the
                // store's does.
                let stored = self
                    .own_object(&name)
                    .or_else(|| self.disk.marker(&name).cloned());
                let object = loop {
                    let me = actor.clone().unwrap_or_else(|| self.actor());
                    let limits = Limits::default();
                    match apply_client_write(
                        stored.as_ref(),
                        &context,
                        &me,
                        change.clone(),
                        mode,
                        &limits,
                    ) {
                        Ok(o) => break o,
                        Err(Refused::StaleActor(_)) if actor.is_none() => self.rotate(),
                        Err(e) => {
                            return Err(StoreFailure {
                                code: e.code(),
                                message: e.to_string(),
                            })
                        }
                    }
                };
                if durable {
                    self.synced.push((name.clone(), object.clock().clone()));
                }
                self.disk.forget_marker(&name);
                self.disk.put_object(&name, object.clone(), durable);
                Ok(Stored::Written(object))
            }
            StoreOp::Read {
                key,
                hint_for,
                mode,
                ..
            } => {
                let name = name_of(&key);
                let local = self.own_object(&name);
                let hint = hint_for.and_then(|o| self.disk.hint(&o, &name).cloned());
                Ok(Stored::Read(read_with_hint(local, hint, mode)))
            }
            StoreOp::Merge {
                key,
                object,
                mode,
                durable,
                ..
            } => self.merge(&key, &object, mode, durable),
            StoreOp::MergeAll { objects, durable } => {
                for (pulled, mode) in objects {
                    self.merge(&pulled.key, &pulled.object, mode, durable)?;
                }
                Ok(Stored::Done)
            }
            StoreOp::Scan {
                partition,
                partitions,
                after,
                max_bytes,
            } => {
                let after = after.map(|a| String::from_utf8_lossy(&a).into_owned());
                // The machine's ring cuts keys as the layout it asks by.
                let ring = self.machine.ring().clone();
                assert_eq!(ring.partitions(), partitions, "a scan by another layout");
                let b = bucket();
                let names: Vec<String> = self
                    .disk
                    .object_names()
                    .into_iter()
                    .filter(|n| after.as_ref().is_none_or(|a| n > a))
                    .filter(|n| ring.partition_of(b.as_str().as_bytes(), n.as_bytes()) == partition)
                    .collect();
                let mut objects = Vec::new();
                let mut bytes = 0;
                let mut last = None;
                for name in &names {
                    if bytes >= max_bytes && !objects.is_empty() {
                        break;
                    }
                    last = Some(name.clone());
                    // A corrupt record is skipped, as the store skips it.
                    if let Some(object) = self.own_object(name) {
                        bytes += 100;
                        objects.push(Pulled {
                            bucket: b.clone(),
                            key: key_of(name),
                            object,
                        });
                    }
                }
                let more = last.as_ref().is_some_and(|l| names.last() != Some(l));
                let next = last.filter(|_| more).map(|l| l.into_bytes().into());
                Ok(Stored::Scanned(Chunk { objects, next }))
            }
            StoreOp::Tree {
                partition,
                partitions,
            } => {
                // Built from the disk each time (the store keeps one up to
                // date; both give the same tree). A corrupt record is left
                // out, as a build leaves it out.
                let mut tree = HashTree::new();
                for (name, object) in self.partition_objects(partition, partitions) {
                    let hash = key_hash(crate::BUCKET.as_bytes(), name.as_bytes());
                    let segment = segment_of(hash, partitions);
                    tree.update(
                        segment,
                        name.as_bytes(),
                        None,
                        Some(object.version_digest()),
                    );
                }
                Ok(Stored::Tree(Box::new(tree)))
            }
            StoreOp::SegmentKeys {
                partition,
                partitions,
                segments,
            } => {
                let keys = self
                    .partition_objects(partition, partitions)
                    .into_iter()
                    .filter(|(name, _)| {
                        let hash = key_hash(crate::BUCKET.as_bytes(), name.as_bytes());
                        segments.contains(&(segment_of(hash, partitions) as u16))
                    })
                    .map(|(name, object)| proto::KeyDigest {
                        bucket: bucket(),
                        key: key_of(&name),
                        digest: object.version_digest(),
                    })
                    .collect();
                Ok(Stored::Keys(keys))
            }
            StoreOp::Exchange {
                objects,
                wanted,
                max_bytes: _,
            } => {
                for (pulled, mode) in objects {
                    self.merge(&pulled.key, &pulled.object, mode, true)?;
                }
                let mut found = Vec::new();
                for (b, key) in &wanted {
                    if let Some(object) = self.own_object(&name_of(key)) {
                        found.push(Pulled {
                            bucket: b.clone(),
                            key: key.clone(),
                            object,
                        });
                    }
                }
                Ok(Stored::Objects(proto::Fetched {
                    objects: found,
                    answered: wanted.len() as u32,
                }))
            }
            StoreOp::Tombstones {
                partition,
                partitions,
                before_ms,
                limit,
            } => {
                let keys = self
                    .partition_objects(partition, partitions)
                    .into_iter()
                    .filter(|(_, o)| o.deleted_at().is_some_and(|at| at <= before_ms))
                    .take(limit)
                    .map(|(name, object)| proto::KeyDigest {
                        bucket: bucket(),
                        key: key_of(&name),
                        digest: object.version_digest(),
                    })
                    .collect();
                let in_this = |name: &str| in_partition(name, partition, partitions);
                self.disk.expire_markers(before_ms, &in_this);
                Ok(Stored::Keys(keys))
            }
            StoreOp::Reap {
                keys,
                commit,
                now_ms,
            } => {
                let mut out = Vec::new();
                for k in &keys {
                    let name = name_of(&k.key);
                    let held = self
                        .own_object(&name)
                        .filter(|o| o.deleted_at().is_some() && o.version_digest() == k.digest);
                    if let (Some(tombstone), true) = (&held, commit) {
                        let holders = self.holders_of(&name);
                        if std::env::var_os("QUORRA_SIM_DEBUG").is_some() {
                            eprintln!("{} reaps {name} (replicas {holders:?})", self.id);
                        }
                        self.reaps
                            .push((name.clone(), tombstone.clock().clone(), holders));
                        self.disk.reap(&name, tombstone.clone(), now_ms);
                    }
                    out.push(held.is_some());
                }
                // "Held" is said of what survives a power loss.
                if !commit && out.contains(&true) {
                    self.disk.sync_all();
                }
                Ok(Stored::Reaped(out))
            }
            StoreOp::DropPartitions {
                dropped,
                partitions,
            } => {
                let ring = self.machine.ring().clone();
                assert_eq!(ring.partitions(), partitions, "a drop by another layout");
                let b = bucket();
                let mut removed = false;
                for name in self.disk.object_names() {
                    let p = ring.partition_of(b.as_str().as_bytes(), name.as_bytes());
                    if dropped
                        .iter()
                        .any(|(q, scope)| *q == p && scope.covers(b.as_str()))
                    {
                        self.disk.remove_object(&name);
                        removed = true;
                    }
                }
                // As the store does: dots of dropped keys are not reissued.
                if removed {
                    self.rotate();
                }
                Ok(Stored::Done)
            }
            StoreOp::Hint {
                owner,
                key,
                object,
                mode,
                durable,
                ..
            } => {
                let name = name_of(&key);
                let mut held = self.disk.hint(&owner, &name).cloned().unwrap_or_default();
                self.dot_collisions += held.merge_counting(&object, mode);
                self.disk.put_hint(&owner, &name, held, durable);
                Ok(Stored::Done)
            }
            StoreOp::HintsFor { owner, limit } => {
                let hints = self
                    .disk
                    .hints()
                    .iter()
                    .filter(|((o, _), _)| *o == owner)
                    .take(limit)
                    .map(|((o, k), object)| Hint {
                        owner: o.clone(),
                        bucket: bucket(),
                        key: key_of(k),
                        object: object.clone(),
                        created_ms: 0,
                    })
                    .collect();
                Ok(Stored::Hints(hints))
            }
            StoreOp::Rehome {
                hint,
                owners,
                local,
                mode,
            } => {
                let name = name_of(&hint.key);
                for owner in owners {
                    let mut held = self.disk.hint(&owner, &name).cloned().unwrap_or_default();
                    self.dot_collisions += held.merge_counting(&hint.object, mode);
                    self.disk.put_hint(&owner, &name, held, true);
                }
                if local {
                    self.merge(&hint.key, &hint.object, mode, true)?;
                }
                // Re-homed, not delivered: the handoff monitor's rule is
                // about delivery to the owner, so it is not told.
                let unchanged = self.disk.hint(&hint.owner, &name) == Some(&hint.object);
                if unchanged {
                    self.disk.remove_hint(&hint.owner, &name);
                }
                Ok(Stored::HintDeleted(unchanged))
            }
            StoreOp::DeleteHint(hint) => {
                let name = name_of(&hint.key);
                let unchanged = self.disk.hint(&hint.owner, &name) == Some(&hint.object);
                if unchanged {
                    self.disk.remove_hint(&hint.owner, &name);
                    let clock = hint.object.clock().clone();
                    self.hints_deleted.push((hint.owner, name, clock));
                }
                Ok(Stored::HintDeleted(unchanged))
            }
        }
    }
}
