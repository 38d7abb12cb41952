//! The driver: moves bytes between the network, the disk and the node's
//! state machine ([`quorra_core::node::Node`]), which makes every decision.
//!
//! It feeds the machine client requests, peer requests, replies, finished
//! storage operations and timer ticks, and carries out what it asks for:
//! peer requests over QUIC (through the injected faults, when a test turned
//! them on), storage operations on blocking threads against the
//! [`ObjectStore`], answers to waiting clients and peers, the member table
//! to disk, and metrics and logs. The deterministic simulator drives the
//! same machine over a simulated network and disk.
//!
//! The work a step starts (its replica calls and storage operations, and
//! the steps their results drive) runs in the step's tracing span: the
//! work of a client request logs with the request's id.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tracing::Instrument as _;

use quorra_core::layout::Change;
use quorra_core::layout::Layout;
use quorra_core::membership::LayoutChangeError;
use quorra_core::membership::MemberInfo;
use quorra_core::node::{
    CallFailure, CommitFailure, Effect, Event, Failure, HandoffSettings, Node, Now, Request,
    Settings, StoreFailure, StoreOp, Stored,
};
use quorra_core::proto::{PeerRequest, Reply};
use quorra_core::ring::Ring;
use quorra_core::write::read_with_hint;
use quorra_core::Object;
use tokio::sync::oneshot;

use crate::cluster::{self, SaveQueue};
use crate::config::NodeConfig;
use crate::faults::{Faults, Outgoing};
use crate::net::transport::{NetError, Transport};
use crate::storage::Durability;
use crate::store::{HintBudget, ObjectStore, StoreError};

/// Longest wait between timer ticks (ms): the failure detector's period.
const GOSSIP_TICK_MS: u64 = 50;

/// Who waits for an answer from the machine.
type Waiters<T> = Mutex<HashMap<u64, oneshot::Sender<T>>>;

/// A waiter's entry, removed when its request ends however it ends (a
/// caller that gave up drops it), so the map holds only live requests.
struct Waiting<'a, T> {
    waiters: &'a Waiters<T>,
    id: u64,
}

impl<'a, T> Waiting<'a, T> {
    fn new(waiters: &'a Waiters<T>, id: u64) -> (Self, oneshot::Receiver<T>) {
        let (tx, rx) = oneshot::channel();
        lock(waiters).insert(id, tx);
        (Self { waiters, id }, rx)
    }
}

impl<T> Drop for Waiting<'_, T> {
    fn drop(&mut self) {
        lock(self.waiters).remove(&self.id);
    }
}

/// One node's driver.
pub struct Driver {
    me: String,
    config: Arc<NodeConfig>,
    machine: Mutex<Node>,
    store: Arc<ObjectStore>,
    transport: Option<Arc<Transport>>,
    faults: Arc<Faults>,
    /// Member tables to save, on a thread of their own (none for a node
    /// running alone).
    saver: Option<SaveQueue>,
    started: Instant,
    next_id: AtomicU64,
    clients: Waiters<Result<Option<Object>, Failure>>,
    peers: Waiters<Reply>,
    commits: Waiters<Result<Layout, CommitFailure>>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The machine's settings from the node's configuration.
fn settings(config: &NodeConfig) -> Settings {
    Settings {
        partitions: config.partitions,
        tokens: config.tokens,
        replica_timeout_ms: config.replica_timeout_ms,
        request_timeout_ms: config.request_timeout_ms,
        gossip_tick_ms: GOSSIP_TICK_MS,
        handoff: HandoffSettings {
            interval_ms: config.handoff.interval_ms,
            rate_per_second: config.handoff.rate_per_second,
            max_hint_age_ms: config.handoff.max_hint_age_ms,
        },
        max_rounds: config.max_background_tasks,
        transfer_bytes_per_second: config.transfer_bytes_per_second,
        cleanup_grace_ms: config.cleanup_grace_ms,
        anti_entropy: quorra_core::node::AntiEntropySettings {
            interval_ms: config.anti_entropy.interval_ms,
        },
        tombstones: quorra_core::node::TombstoneSettings {
            grace_ms: config.tombstones.grace_ms,
        },
        planted: None,
    }
}

impl Driver {
    /// A driver for this node. `peer_addr` and `http_addr` are the bound
    /// addresses; without a transport the node is a cluster of one.
    pub fn new(
        config: Arc<NodeConfig>,
        store: Arc<ObjectStore>,
        transport: Option<Arc<Transport>>,
        peer_addr: SocketAddr,
        http_addr: SocketAddr,
        faults: Arc<Faults>,
    ) -> Arc<Self> {
        let clustered = transport.is_some();
        let boot = now_ms();
        let membership = cluster::boot_membership(&config, clustered, peer_addr, http_addr, boot);
        let started = Instant::now();
        let now = Now {
            mono_ms: 0,
            wall_ms: faults.now_ms(),
        };
        // Request ids and ballots start past any of an earlier run of this
        // node (the boot time in ms, shifted): a restarted node never
        // reuses a ballot, nor an id its peers may still answer.
        let machine = Node::new(settings(&config), membership, now, boot << 20);
        let saver = clustered.then(|| cluster::spawn_saver(cluster::table_path(&config)));
        let driver = Arc::new(Self {
            me: config.node_id.clone(),
            config,
            machine: Mutex::new(machine),
            store,
            transport,
            faults,
            saver,
            started,
            next_id: AtomicU64::new(1),
            clients: Mutex::new(HashMap::new()),
            peers: Mutex::new(HashMap::new()),
            commits: Mutex::new(HashMap::new()),
        });
        // What the machine said at boot (founded alone, saved table).
        driver.step(|_, _| {});
        driver
    }

    fn now(&self) -> Now {
        Now {
            mono_ms: self.started.elapsed().as_millis() as u64,
            wall_ms: self.faults.now_ms(),
        }
    }

    /// Runs `f` on the machine, then carries out what it asked for.
    fn step(self: &Arc<Self>, f: impl FnOnce(&mut Node, Now)) {
        let effects: Vec<Effect> = {
            let mut machine = lock(&self.machine);
            f(&mut machine, self.now());
            std::iter::from_fn(|| machine.poll_effect()).collect()
        };
        for effect in effects {
            self.carry_out(effect);
        }
    }

    /// A client's request (authorised and validated by the caller).
    pub async fn request(self: &Arc<Self>, request: Request) -> Result<Option<Object>, Failure> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (_waiting, rx) = Waiting::new(&self.clients, id);
        self.step(|m, now| m.handle_client(id, request, now));
        rx.await.unwrap_or_else(|_| {
            Err(Failure::MaybeTaken(
                "the node stopped before answering".into(),
            ))
        })
    }

    /// Stages a layout change (an operator's, authorised by the caller).
    pub fn stage(
        self: &Arc<Self>,
        node: &str,
        change: Change,
    ) -> Result<Layout, LayoutChangeError> {
        let mut out = Err(LayoutChangeError::NotJoined);
        self.step(|m, _| out = m.stage(node, change));
        out
    }

    /// Stages a bucket's `n_val` change (an operator's, authorised by the
    /// caller).
    pub fn stage_n_val(
        self: &Arc<Self>,
        bucket: &str,
        n_val: u8,
    ) -> Result<Layout, LayoutChangeError> {
        let mut out = Err(LayoutChangeError::NotJoined);
        self.step(|m, _| out = m.stage_n_val(bucket, n_val));
        out
    }

    /// Commits the changes staged against layout version `against`.
    pub async fn commit(self: &Arc<Self>, against: u64) -> Result<Layout, CommitFailure> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (_waiting, rx) = Waiting::new(&self.commits, id);
        self.step(|m, now| m.handle_commit(id, against, now));
        rx.await.unwrap_or(Err(CommitFailure::Contended))
    }

    /// A request from the peer whose node certificate names `from`.
    pub async fn peer(self: &Arc<Self>, from: &str, request: PeerRequest) -> Reply {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (_waiting, rx) = Waiting::new(&self.peers, id);
        self.step(|m, now| m.handle_peer(id, from, request, now));
        // It may have acted (stored, coordinated) before it stopped.
        rx.await.unwrap_or_else(|_| {
            Reply::error(
                quorra_core::ErrorCode::Timeout,
                "the node stopped before answering; the request may have taken effect",
            )
        })
    }

    /// Starts the machine's timers: failure detection, handoff rounds,
    /// request deadlines.
    pub fn spawn_timer(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                let due = lock(&this.machine).poll_timeout();
                let wait = due
                    .saturating_sub(this.now().mono_ms)
                    .clamp(1, GOSSIP_TICK_MS);
                tokio::time::sleep(Duration::from_millis(wait)).await;
                this.step(|m, now| m.handle_timeout(now));
                let foreign = lock(&this.machine).membership().foreign();
                metrics::gauge!(crate::metric_names::GOSSIP_FOREIGN_MESSAGES).set(foreign as f64);
            }
        })
    }

    fn carry_out(self: &Arc<Self>, effect: Effect) {
        match effect {
            Effect::Transmit(t) => {
                let this = self.clone();
                tokio::spawn(
                    async move {
                        let timeout = Duration::from_millis(t.timeout_ms);
                        let request = t.request.into();
                        let (from, result) = this.send(t.addr, &request, timeout).await;
                        this.step(|m, now| m.handle_reply(t.call, from.as_deref(), result, now));
                    }
                    .in_current_span(),
                );
            }
            Effect::Store { id, op } => {
                let this = self.clone();
                tokio::spawn(
                    async move {
                        let store = this.store.clone();
                        let budget = HintBudget {
                            max_hints: this.config.handoff.max_hints,
                            max_bytes: this.config.handoff.max_hint_bytes,
                        };
                        let result =
                            tokio::task::spawn_blocking(move || execute(&store, op, budget))
                                .await
                                .unwrap_or_else(|e| {
                                    Err(StoreFailure {
                                        code: quorra_core::ErrorCode::Internal,
                                        message: format!("storage task failed: {e}"),
                                    })
                                });
                        this.step(|m, now| m.handle_stored(id, result, now));
                    }
                    .in_current_span(),
                );
            }
            Effect::Answer { client, result } => {
                if let Some(tx) = lock(&self.clients).remove(&client) {
                    let _ = tx.send(result);
                }
            }
            Effect::Respond { inbound, reply } => {
                if let Some(tx) = lock(&self.peers).remove(&inbound) {
                    let _ = tx.send(reply);
                }
            }
            Effect::SaveTable {
                version,
                table,
                done,
            } => {
                let refused = lock(&self.machine).membership().refused();
                metrics::gauge!(crate::metric_names::MEMBERSHIP_VERSION).set(version as f64);
                metrics::gauge!(crate::metric_names::GOSSIP_REFUSED_RECORDS).set(refused as f64);
                let done = done.map(|id| {
                    let this = self.clone();
                    let runtime = tokio::runtime::Handle::current();
                    Box::new(move |result: Result<(), String>| {
                        let result =
                            result
                                .map(|()| Stored::Done)
                                .map_err(|message| StoreFailure {
                                    code: quorra_core::ErrorCode::StorageError,
                                    message,
                                });
                        runtime.spawn(async move {
                            this.step(|m, now| m.handle_stored(id, result, now));
                        });
                    }) as cluster::Saved
                });
                match (&self.saver, done) {
                    (Some(saver), done) => {
                        let job = cluster::SaveJob {
                            version,
                            table: *table,
                            done,
                        };
                        if let Err(failed) = saver.send(job) {
                            if let Some(done) = failed.0.done {
                                done(Err("the table saver stopped".into()));
                            }
                        }
                    }
                    // A node alone keeps no table: nothing to wait for.
                    (None, Some(done)) => done(Ok(())),
                    (None, None) => {}
                }
            }
            Effect::Committed { client, result } => {
                if let Some(tx) = lock(&self.commits).remove(&client) {
                    let _ = tx.send(result);
                }
            }
            Effect::Notice(notice) => cluster::report(std::slice::from_ref(&notice)),
            Effect::PeerRestarted(addr) => {
                // Its pooled connection may belong to its previous life.
                if let Some(t) = &self.transport {
                    t.forget(addr);
                }
            }
            Effect::Event(event) => self.record(event),
        }
    }

    /// Sends one peer request through the injected faults (none unless the
    /// node enables fault injection). Returns the node id the answering
    /// certificate names, and the answer.
    async fn send(
        &self,
        addr: SocketAddr,
        request: &quorra_core::proto::Request,
        timeout: Duration,
    ) -> (Option<String>, Result<Reply, CallFailure>) {
        let Some(t) = &self.transport else {
            return (None, Err(CallFailure::NotSent("no peer transport".into())));
        };
        match self.faults.outgoing(addr) {
            Outgoing::Drop => {
                tokio::time::sleep(timeout).await;
                return (None, Err(CallFailure::Lost(format!("{addr}: dropped"))));
            }
            Outgoing::Send { delay } if !delay.is_zero() => tokio::time::sleep(delay).await,
            Outgoing::Send { .. } => {}
        }
        match t.request_from(addr, request, timeout).await {
            Ok((peer, answer)) => (peer.node_id().map(str::to_owned), Ok(answer)),
            // Never sent: the peer did not see it.
            Err(e @ NetError::Connect { .. }) => (None, Err(CallFailure::NotSent(e.to_string()))),
            Err(e) => (None, Err(CallFailure::Lost(e.to_string()))),
        }
    }

    /// Metrics and logs for what the machine did.
    fn record(&self, event: Event) {
        match event {
            Event::ReadRepair { node } => {
                metrics::counter!(crate::metric_names::READ_REPAIRS).increment(1);
                tracing::debug!(node, "read repair");
            }
            Event::Forwarded => {
                metrics::counter!(crate::metric_names::FORWARDED_WRITES).increment(1)
            }
            Event::RingRebuilt { members } => tracing::info!(members, "ring rebuilt"),
            Event::HintDelivered => {
                metrics::counter!(crate::metric_names::HINTS_DELIVERED).increment(1)
            }
            Event::HintRehomed => {
                metrics::counter!(crate::metric_names::HINTS_REHOMED).increment(1)
            }
            Event::MissedWriteHinted { owner } => {
                metrics::counter!(crate::metric_names::HINTS_FOR_MISSED_WRITES).increment(1);
                tracing::debug!(owner, "hint kept for a primary that missed a write");
            }
            Event::HintExpired { owner } => {
                metrics::counter!(crate::metric_names::HINTS_EXPIRED).increment(1);
                tracing::warn!(owner, "hint older than handoff.max_hint_age_ms dropped");
            }
            Event::HintRefused {
                owner,
                code,
                message,
                wait_ms,
            } => {
                metrics::counter!(crate::metric_names::HINTS_REFUSED).increment(1);
                tracing::warn!(owner, %code, wait_ms, "hint refused: {message}");
            }
            Event::HandoffRound { delivered } => {
                metrics::gauge!(crate::metric_names::HINTS_PENDING)
                    .set(self.store.hints_held() as f64);
                metrics::gauge!(crate::metric_names::HINT_BYTES)
                    .set(self.store.hint_bytes() as f64);
                if delivered > 0 {
                    let pending = self.store.hints_held();
                    tracing::info!(delivered, pending, "hinted handoff");
                }
            }
            Event::StoreFailed { what, message } => tracing::warn!("{what} failed: {message}"),
            Event::Handover { result } => match result {
                Ok(version) => tracing::info!(
                    version,
                    "handover committed: reads moved to the new replicas"
                ),
                Err(e) => tracing::info!("handover not committed by this node: {e}"),
            },
            Event::TransferSynced { version } => {
                metrics::gauge!(crate::metric_names::TRANSFER_PARTITIONS_PENDING).set(0.0);
                tracing::info!(version, "copied every partition this node gains");
            }
            Event::PartitionCopied {
                partition,
                keys,
                pending,
            } => {
                metrics::gauge!(crate::metric_names::TRANSFER_PARTITIONS_PENDING)
                    .set(pending as f64);
                metrics::counter!(crate::metric_names::PARTITIONS_COPIED).increment(1);
                metrics::counter!(crate::metric_names::OBJECTS_COPIED).increment(keys);
                tracing::debug!(partition, keys, "partition copied");
            }
            Event::PartitionsDropped { partitions } => {
                tracing::info!(partitions, "dropping what this node no longer holds");
            }
            Event::Exchanged {
                partition,
                peer,
                bytes_compared,
                keys_differing,
                keys_fetched,
                keys_pushed,
                failed,
            } => {
                metrics::counter!(crate::metric_names::AAE_EXCHANGES).increment(1);
                metrics::counter!(crate::metric_names::AAE_BYTES_COMPARED)
                    .increment(bytes_compared);
                metrics::counter!(crate::metric_names::AAE_KEYS_REPAIRED, "direction" => "fetched")
                    .increment(keys_fetched);
                metrics::counter!(crate::metric_names::AAE_KEYS_REPAIRED, "direction" => "pushed")
                    .increment(keys_pushed);
                metrics::gauge!(crate::metric_names::AAE_TREES_BUILT)
                    .set(self.store.tree_builds() as f64);
                match failed {
                    Some(why) => {
                        metrics::counter!(crate::metric_names::AAE_EXCHANGES_FAILED).increment(1);
                        tracing::debug!(partition, peer, "anti-entropy exchange stopped: {why}");
                    }
                    None if keys_differing > 0 => tracing::info!(
                        partition,
                        peer,
                        keys_differing,
                        keys_fetched,
                        keys_pushed,
                        "anti-entropy repaired a partition"
                    ),
                    None => {}
                }
            }
            Event::Reaped {
                partition,
                listed,
                reaped,
                failed,
            } => {
                metrics::counter!(crate::metric_names::REAP_PASSES).increment(1);
                let counts = self.store.tombstone_counts();
                metrics::gauge!(crate::metric_names::TOMBSTONES_HELD).set(counts.held as f64);
                metrics::gauge!(crate::metric_names::TOMBSTONE_MARKERS).set(counts.markers as f64);
                match failed {
                    Some(why) => tracing::warn!(partition, "tombstone reaping stopped: {why}"),
                    None if listed > 0 => tracing::info!(
                        partition,
                        listed,
                        reaped,
                        kept = listed - reaped,
                        "tombstones past the grace period reaped (kept: some replica lacks them)"
                    ),
                    None => {}
                }
            }
        }
    }

    /// What tombstone reaping did and is doing.
    pub fn reap_status(&self) -> quorra_core::node::ReapStatus {
        lock(&self.machine).reap_status()
    }

    /// What anti-entropy did and is doing.
    pub fn anti_entropy_status(&self) -> quorra_core::node::AntiEntropyStatus {
        lock(&self.machine).anti_entropy_status()
    }

    /// The partitions this node replicates, each with its replicas.
    pub fn partitions_held(&self) -> Vec<u32> {
        lock(&self.machine).partitions_held()
    }

    /// Asks for an anti-entropy exchange of `partition` (`None`: of every
    /// partition this node replicates) ahead of the cycle; returns how many
    /// partitions were queued.
    pub fn request_repair(self: &Arc<Self>, partition: Option<u32>) -> usize {
        let mut queued = 0;
        self.step(|m, now| queued = m.request_repair(partition, now));
        queued
    }

    /// Where this node's partition transfers stand.
    pub fn transfer_status(&self) -> quorra_core::node::TransferStatus {
        lock(&self.machine).transfer_status()
    }

    // ---- what the HTTP API shows ----

    /// This node's id.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// The current ring.
    pub fn ring(&self) -> Arc<Ring> {
        lock(&self.machine).ring().clone()
    }

    /// Every bucket's properties in force: the cluster's (this node's
    /// configuration until it is in one).
    pub fn bucket_table(&self) -> quorra_core::bucket::BucketTable {
        lock(&self.machine).bucket_table().clone()
    }

    /// The properties of `bucket` in force.
    pub fn bucket_props(&self, bucket: &quorra_core::BucketName) -> quorra_core::BucketProps {
        lock(&self.machine).bucket_props(bucket)
    }

    /// Whether this node holds a replica of `key` (its first `n_val`
    /// ranks, with `q`'s overrides): one look at the machine, on the
    /// request path.
    pub fn is_replica(
        &self,
        bucket: &quorra_core::BucketName,
        key: &quorra_core::Key,
        q: &quorra_core::QuorumOverrides,
    ) -> bool {
        let machine = lock(&self.machine);
        let n = machine
            .bucket_props(bucket)
            .with_overrides(q)
            .map_or(1, |p| usize::from(p.n_val));
        let ring = machine.ring();
        let p = ring.partition_of(bucket.as_str().as_bytes(), key.as_bytes());
        let replica = ring.order(p).take(n).any(|id| id == self.me);
        replica
    }

    /// Sets what `patch` names of `bucket`'s properties (a layout version
    /// of its own).
    pub async fn set_bucket_props(
        self: &Arc<Self>,
        bucket: &quorra_core::BucketName,
        patch: quorra_core::bucket::PropsPatch,
    ) -> Result<Layout, CommitFailure> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (_waiting, rx) = Waiting::new(&self.commits, id);
        self.step(|m, now| m.handle_bucket_props(id, bucket, patch, now));
        rx.await.unwrap_or(Err(CommitFailure::Contended))
    }

    /// Makes `change` to the cluster's access policy (a layout version of
    /// its own, decided by the voters).
    pub async fn set_access(
        self: &Arc<Self>,
        change: quorra_core::access::AccessChange,
    ) -> Result<Layout, CommitFailure> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (_waiting, rx) = Waiting::new(&self.commits, id);
        self.step(|m, now| m.handle_access(id, &change, now));
        rx.await.unwrap_or(Err(CommitFailure::Contended))
    }

    /// Looks at the cluster's access policy (`None`: never set) without
    /// copying it.
    pub fn with_access_policy<T>(
        &self,
        f: impl FnOnce(Option<&quorra_core::access::AccessPolicy>) -> T,
    ) -> T {
        f(lock(&self.machine).access_policy())
    }

    /// The layout as clients and HTTP callers see it: without the access
    /// policy (token hashes and grants are for admins, through
    /// `/v1/admin/tokens`).
    pub fn public_layout(&self) -> Option<Layout> {
        let mut layout = self.layout()?;
        layout.access = None;
        Some(layout)
    }

    /// This node's cluster layout (`None` until it has founded or joined).
    pub fn layout(&self) -> Option<Layout> {
        lock(&self.machine).membership().layout().cloned()
    }

    /// Every member this node knows, with its status.
    pub fn members(&self) -> Vec<MemberInfo> {
        lock(&self.machine)
            .membership()
            .members()
            .cloned()
            .collect()
    }

    /// Whether this node has founded or joined its cluster (readiness).
    pub fn has_joined(&self) -> bool {
        lock(&self.machine).has_joined()
    }

    /// Whether requests may go to `id`.
    pub fn is_reachable(&self, id: &str) -> bool {
        lock(&self.machine).is_reachable(id)
    }

    /// Gossip messages refused because their sender is in another cluster.
    pub fn foreign_messages(&self) -> u64 {
        lock(&self.machine).membership().foreign()
    }

    /// The node's fault switches.
    pub fn faults(&self) -> &Arc<Faults> {
        &self.faults
    }

    /// The store underneath.
    pub fn store(&self) -> &Arc<ObjectStore> {
        &self.store
    }

    /// Closes the peer transport.
    pub fn close(&self) {
        if let Some(t) = &self.transport {
            t.close();
        }
    }
}

fn failure(e: StoreError) -> StoreFailure {
    StoreFailure {
        code: e.code(),
        message: e.to_string(),
    }
}

/// Runs one storage operation (on a blocking thread).
fn execute(store: &ObjectStore, op: StoreOp, budget: HintBudget) -> Result<Stored, StoreFailure> {
    let durability = |durable| {
        if durable {
            Durability::Fsync
        } else {
            Durability::Buffered
        }
    };
    match op {
        // `actor` is a simulator-only planted bug; a node never sets it.
        StoreOp::Coordinate {
            bucket,
            key,
            context,
            change,
            mode,
            durable,
            actor: _,
        } => store
            .coordinate(&bucket, &key, &context, change, mode, durability(durable))
            .map(Stored::Written),
        StoreOp::Read {
            bucket,
            key,
            hint_for,
            mode,
        } => {
            let local = store.get(&bucket, &key).map_err(failure)?;
            let hint = match &hint_for {
                Some(owner) => store.get_hint(owner, &bucket, &key).map_err(failure)?,
                None => None,
            };
            Ok(Stored::Read(read_with_hint(local, hint, mode)))
        }
        StoreOp::Merge {
            bucket,
            key,
            object,
            mode,
            durable,
        } => store
            .merge_replica(&bucket, &key, &object, mode, durability(durable))
            .map(|_| Stored::Done),
        StoreOp::Hint {
            owner,
            bucket,
            key,
            object,
            mode,
            durable,
            created_ms,
        } => {
            let stored = store.store_hint(
                &owner,
                &bucket,
                &key,
                &object,
                mode,
                durability(durable),
                budget,
                created_ms,
            );
            if let Err(StoreError::HintBudgetFull { hints, bytes }) = &stored {
                metrics::counter!(crate::metric_names::HINTS_DROPPED).increment(1);
                tracing::warn!(
                    owner,
                    hints,
                    bytes,
                    "hint budget full: hint dropped; anti-entropy must repair"
                );
            }
            stored.map(|()| Stored::Done)
        }
        StoreOp::HintsFor { owner, limit } => {
            if store.hints_held() == 0 {
                return Ok(Stored::Hints(Vec::new()));
            }
            store.hints_for(&owner, limit).map(Stored::Hints)
        }
        StoreOp::DeleteHint(hint) => store.delete_hint(&hint).map(Stored::HintDeleted),
        StoreOp::Rehome {
            hint,
            owners,
            local,
            mode,
        } => store
            .rehome_hint(&hint, &owners, local, mode)
            .map(Stored::HintDeleted),
        StoreOp::Scan {
            partition,
            partitions,
            after,
            max_bytes,
        } => store
            .scan_partition(partition, partitions, after.as_deref(), max_bytes)
            .map(Stored::Scanned),
        StoreOp::Tree {
            partition,
            partitions,
        } => store
            .tree(partition, partitions)
            .map(|t| Stored::Tree(Box::new(t))),
        StoreOp::SegmentKeys {
            partition,
            partitions,
            segments,
        } => store
            .segment_keys(partition, partitions, &segments)
            .map(Stored::Keys),
        StoreOp::Exchange {
            objects,
            wanted,
            max_bytes,
        } => store
            .exchange(&objects, &wanted, max_bytes)
            .map(Stored::Objects),
        StoreOp::Tombstones {
            partition,
            partitions,
            before_ms,
            limit,
        } => store
            .tombstones(partition, partitions, before_ms, limit)
            .map(Stored::Keys),
        StoreOp::Reap {
            keys,
            commit,
            now_ms,
        } => store.reap(&keys, commit, now_ms).map(Stored::Reaped),
        StoreOp::MergeAll { objects, durable } => store
            .merge_all(&objects, durability(durable))
            .map(|()| Stored::Done),
        StoreOp::DropPartitions {
            dropped,
            partitions,
        } => store.drop_partitions(&dropped, partitions).map(|n| {
            tracing::info!(
                partitions = dropped.len(),
                objects = n,
                "dropped what this node no longer holds (partitions given away, keys past a lowered n_val)"
            );
            metrics::counter!(crate::metric_names::OBJECTS_DROPPED).increment(n);
            Stored::Done
        }),
    }
    .map_err(failure)
}

/// The rest between two scrub passes (a small store would otherwise be
/// re-read many times a second).
const SCRUB_PASS_PAUSE: Duration = Duration::from_secs(10);

/// Runs the scrub forever at `per_second` records a second, in steps of a
/// tenth of a second's records, on a blocking thread; a pass that ends
/// starts over after [`SCRUB_PASS_PAUSE`].
pub fn spawn_scrub(store: Arc<ObjectStore>, per_second: u64) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let step = (per_second / 10).max(1) as usize;
        let pause = Duration::from_millis(1_000 * step as u64 / per_second.max(1));
        let mut cursor: Option<Vec<u8>> = None;
        loop {
            tokio::time::sleep(pause.max(Duration::from_millis(10))).await;
            let s = store.clone();
            let after = cursor.take();
            match tokio::task::spawn_blocking(move || s.scrub(after.as_deref(), step)).await {
                Ok(Ok(None)) => tokio::time::sleep(SCRUB_PASS_PAUSE).await,
                Ok(Ok(next)) => cursor = next,
                Ok(Err(e)) => tracing::warn!("scrub step failed: {e}"),
                Err(e) => tracing::warn!("scrub step failed: {e}"),
            }
        }
    })
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
