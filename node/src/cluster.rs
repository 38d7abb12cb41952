//! The node's view of the cluster: membership, the ring, and calls to peers.
//!
//! It drives the pure [`Membership`] state machine from a timer and the peer
//! transport, and rebuilds the [`Ring`] whenever the member list changes. It
//! keeps the member table and the cluster's layout (its identity) on disk,
//! and reports what the membership notices (founding, joining, a node of
//! another cluster) in the log. A node configured without a peer address is
//! a cluster of one: no transport, a ring of itself.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use quorra_core::layout::Layout;
use quorra_core::membership::{
    Action, Gossip, GossipMsg, MemberInfo, Membership, Notice, SavedTable, Status,
};
use quorra_core::proto::{PeerRequest, PeerResponse};
use quorra_core::ring::Ring;

use crate::config::NodeConfig;
use crate::faults::{Faults, Outgoing};
use crate::net::transport::{NetError, Transport};

/// How often the failure detector is driven.
const GOSSIP_TICK: Duration = Duration::from_millis(50);

/// Where a node keeps its layout and member table between runs.
const TABLE_FILE: &str = "cluster.json";

/// The layout and member table saved by a previous run (empty if none or
/// unreadable: the node then joins through its seeds like a new one; it
/// never founds a cluster its peers already have).
fn load_table(data_dir: &std::path::Path) -> SavedTable {
    let path = data_dir.join(TABLE_FILE);
    let Ok(bytes) = std::fs::read(&path) else {
        return SavedTable::default();
    };
    serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        tracing::warn!(path = %path.display(), "unreadable member table, joining afresh: {e}");
        SavedTable::default()
    })
}

/// Replaces `path` with `bytes` so that a crash leaves the old or the new
/// file, never a torn one: a temp file, fsynced, renamed, and the directory
/// fsynced so the rename itself is durable.
fn write_durably(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Tables waiting to be saved, with their membership version.
type SaveQueue = std::sync::mpsc::Sender<(u64, SavedTable)>;

/// The thread that writes tables to `path`: the newest first (an older
/// table never replaces a newer one), each durably. It ends when the
/// cluster view is dropped.
fn spawn_saver(path: std::path::PathBuf) -> SaveQueue {
    let (tx, rx) = std::sync::mpsc::channel::<(u64, SavedTable)>();
    std::thread::spawn(move || {
        let mut saved = 0;
        while let Ok(mut next) = rx.recv() {
            // Only the newest of what queued up meanwhile is worth writing.
            while let Ok(newer) = rx.try_recv() {
                if newer.0 > next.0 {
                    next = newer;
                }
            }
            let (version, records) = next;
            if version <= saved {
                continue;
            }
            let result = serde_json::to_vec(&records)
                .map_err(std::io::Error::other)
                .and_then(|b| write_durably(&path, &b));
            match result {
                Ok(()) => saved = version,
                Err(e) => tracing::warn!("cannot save the member table: {e}"),
            }
        }
    });
    tx
}

/// Membership, ring and transport of one node.
pub struct Cluster {
    me: String,
    config: Arc<NodeConfig>,
    transport: Option<Arc<Transport>>,
    membership: Mutex<Membership>,
    ring: RwLock<Arc<Ring>>,
    started: Instant,
    /// The incarnation each peer had when this node last connected to it.
    incarnations: Mutex<HashMap<String, u64>>,
    faults: Arc<Faults>,
    /// Member tables to save, handed to a thread of their own so that the
    /// fsyncs stay off the async path (none for a node running alone).
    saver: Option<SaveQueue>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// A cluster view for this node. `peer_addr` and `http_addr` are the
    /// bound addresses.
    pub fn new(
        config: Arc<NodeConfig>,
        transport: Option<Arc<Transport>>,
        peer_addr: SocketAddr,
        http_addr: SocketAddr,
        faults: Arc<Faults>,
    ) -> Arc<Self> {
        let boot = crate::kv::now_ms();
        let me = MemberInfo {
            id: config.node_id.clone(),
            peer_addr,
            http_addr,
            zone: config.zone.clone(),
            incarnation: boot,
            status: Status::Up,
        };
        // A node that was a member before a restart takes its saved layout
        // and table back (it is a member at once, with the ring it knew);
        // its peers serve as seeds too, so even a node with no seeds of its
        // own finds its way back.
        let saved = if transport.is_some() {
            load_table(&config.data_dir)
        } else {
            SavedTable::default()
        };
        let seeds = if transport.is_some() {
            let mut seeds = config.seeds.clone();
            for m in &saved.members {
                if m.id != config.node_id && !seeds.contains(&m.peer_addr) {
                    seeds.push(m.peer_addr);
                }
            }
            seeds
        } else {
            Vec::new()
        };
        // Without a peer transport the node is a cluster of its own.
        let initial = if transport.is_some() {
            config.initial_members.iter().cloned().collect()
        } else {
            std::collections::BTreeSet::from([config.node_id.clone()])
        };
        let mut membership = Membership::new(
            me,
            seeds,
            initial,
            config.gossip,
            0,
            boot ^ 0x9e37_79b9_7f4a_7c15,
        );
        membership.restore(saved, 0);
        if let Some(layout) = membership.layout() {
            tracing::info!(cluster = %layout.cluster, version = layout.version, "member of cluster");
        } else {
            tracing::info!(
                initial_members = ?config.initial_members,
                "not in a cluster yet: founding with the initial members or joining through the seeds"
            );
        }
        let notices = membership.take_notices();
        let ring = Ring::build(&membership.ring_members(), config.partitions, config.tokens);
        let saver = transport
            .is_some()
            .then(|| spawn_saver(config.data_dir.join(TABLE_FILE)));
        if let Some(saver) = &saver {
            // Founded at start (the only initial member): saved at once.
            if membership.layout().is_some() {
                let _ = saver.send((membership.version(), membership.saved()));
            }
        }
        report(&notices);
        Arc::new(Self {
            me: config.node_id.clone(),
            config,
            transport,
            membership: Mutex::new(membership),
            ring: RwLock::new(Arc::new(ring)),
            started: Instant::now(),
            incarnations: Mutex::new(HashMap::new()),
            faults,
            saver,
        })
    }

    /// This node's id.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// Milliseconds since this node started (the failure detector's clock).
    fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn membership(&self) -> MutexGuard<'_, Membership> {
        self.membership
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The current ring.
    pub fn ring(&self) -> Arc<Ring> {
        self.ring
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Rebuilds the ring if the member list changed.
    fn refresh_ring(&self, members: Vec<quorra_core::ring::RingMember>) {
        let mut sorted = members;
        sorted.sort();
        if self.ring().members() == sorted.as_slice() {
            return;
        }
        let ring = Ring::build(&sorted, self.config.partitions, self.config.tokens);
        tracing::info!(members = sorted.len(), "ring rebuilt");
        *self.ring.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(ring);
    }

    /// Runs `f` on the membership state, then rebuilds the ring if needed,
    /// saves what changed and reports what it noticed.
    fn with_membership<T>(&self, f: impl FnOnce(&mut Membership) -> T) -> T {
        let (out, version, changed, notices, foreign) = {
            let mut m = self.membership();
            let before = m.version();
            let out = f(&mut m);
            let changed = (m.version() != before).then(|| (m.ring_members(), m.saved()));
            (out, m.version(), changed, m.take_notices(), m.foreign())
        };
        report(&notices);
        metrics::gauge!("quorra_gossip_foreign_messages").set(foreign as f64);
        if let Some((members, table)) = changed {
            metrics::gauge!("quorra_membership_version").set(version as f64);
            metrics::gauge!("quorra_gossip_refused_records")
                .set(self.membership().refused() as f64);
            self.refresh_ring(members);
            self.drop_stale_connections(&table.members);
            self.save_table(version, table);
        }
        out
    }

    /// A peer with a new incarnation restarted (or refuted a suspicion):
    /// its pooled connection may belong to its previous life, so the next
    /// request connects afresh instead of timing out on a dead connection.
    fn drop_stale_connections(&self, records: &[MemberInfo]) {
        let Some(t) = &self.transport else { return };
        let mut known = self
            .incarnations
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for r in records {
            if r.id == self.me {
                continue;
            }
            if known
                .insert(r.id.clone(), r.incarnation)
                .is_some_and(|old| old != r.incarnation)
            {
                t.forget(r.peer_addr);
            }
        }
    }

    /// Saves the layout and member table in the data dir (in the
    /// background, fsynced), for the next run: see [`Membership::restore`].
    fn save_table(&self, version: u64, table: SavedTable) {
        if let Some(saver) = &self.saver {
            let _ = saver.send((version, table));
        }
    }

    /// This node's cluster layout (`None` until it has founded or joined).
    pub fn layout(&self) -> Option<Layout> {
        self.membership().layout().cloned()
    }

    /// Every member this node knows, with its status.
    pub fn members(&self) -> Vec<MemberInfo> {
        self.membership().members().cloned().collect()
    }

    /// Whether this node has joined the cluster (has its member table), so
    /// it may coordinate requests.
    pub fn has_joined(&self) -> bool {
        self.membership().has_joined()
    }

    /// Whether `id` is a member that may coordinate (up, not still joining).
    pub fn can_coordinate(&self, id: &str) -> bool {
        id == self.me && self.has_joined() || self.membership().status(id) == Some(Status::Up)
    }

    /// Whether requests may go to `id` (this node always may).
    pub fn is_reachable(&self, id: &str) -> bool {
        id == self.me
            || self
                .membership()
                .status(id)
                .is_some_and(Status::is_reachable)
    }

    /// The gossip timings.
    pub fn gossip_config(&self) -> quorra_core::membership::GossipConfig {
        self.config.gossip
    }

    /// Sends a request to node `id`.
    pub async fn call(
        &self,
        id: &str,
        req: &PeerRequest,
        timeout: Duration,
    ) -> Result<PeerResponse, NetError> {
        let addr = self.membership().get(id).map(|m| m.peer_addr);
        let (Some(transport), Some(addr)) = (self.transport.as_ref(), addr) else {
            return Err(NetError::Connect {
                addr: SocketAddr::from(([0, 0, 0, 0], 0)),
                reason: format!("no peer address known for node {id}"),
            });
        };
        // Only `id`'s own certificate answers for `id`: a record with a
        // wrong address cannot redirect its replica traffic elsewhere.
        match self.request_from(transport, addr, req, timeout).await? {
            (Some(peer), answer) if peer == id => Ok(answer),
            (peer, _) => Err(NetError::Request {
                addr,
                reason: format!(
                    "answered by {}, not by node {id}",
                    peer.as_deref()
                        .unwrap_or("a certificate that is not a node's")
                ),
            }),
        }
    }

    /// Every peer request goes out here, through the injected faults (none
    /// unless the node enables fault injection).
    async fn request(
        &self,
        t: &Transport,
        addr: SocketAddr,
        req: &PeerRequest,
        timeout: Duration,
    ) -> Result<PeerResponse, NetError> {
        self.request_from(t, addr, req, timeout)
            .await
            .map(|(_, answer)| answer)
    }

    /// [`Self::request`], also returning the node id the answering peer's
    /// certificate names (`None` when it is not a node certificate).
    async fn request_from(
        &self,
        t: &Transport,
        addr: SocketAddr,
        req: &PeerRequest,
        timeout: Duration,
    ) -> Result<(Option<String>, PeerResponse), NetError> {
        match self.faults.outgoing(addr) {
            Outgoing::Drop => {
                tokio::time::sleep(timeout).await;
                Err(NetError::Timeout {
                    addr,
                    after: timeout,
                })
            }
            Outgoing::Send { delay } => {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                let (peer, answer) = t.request_from(addr, req, timeout).await?;
                Ok((peer.node_id().map(str::to_owned), answer))
            }
        }
    }

    /// The node's fault switches.
    pub fn faults(&self) -> &Arc<Faults> {
        &self.faults
    }

    /// Answers a gossip message from the peer whose node certificate names
    /// `from`.
    pub fn handle_gossip(&self, from: &str, msg: Gossip) -> PeerResponse {
        let now = self.now();
        match self.with_membership(|m| m.handle_message(from, msg, now)) {
            Some(reply) => PeerResponse::Gossip(reply),
            None => PeerResponse::Ok,
        }
    }

    /// Pings `target` for a peer whose own probe failed.
    pub async fn indirect_ping(&self, target: SocketAddr) -> PeerResponse {
        let Some(t) = &self.transport else {
            return PeerResponse::Reached(false);
        };
        let ping = PeerRequest::Gossip(self.membership().envelope(GossipMsg::Ping {
            updates: Vec::new(),
        }));
        let timeout = Duration::from_millis(self.config.gossip.probe_timeout_ms);
        PeerResponse::Reached(matches!(
            self.request(t, target, &ping, timeout).await,
            Ok(PeerResponse::Gossip(_))
        ))
    }

    /// Starts the failure detector (a no-op for a cluster of one).
    pub fn spawn_gossip(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        self.transport.as_ref()?;
        let this = self.clone();
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(GOSSIP_TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let now = this.now();
                for action in this.with_membership(|m| m.handle_timeout(now)) {
                    tokio::spawn(this.clone().run(action));
                }
            }
        }))
    }

    fn run(
        self: Arc<Self>,
        action: Action,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        Box::pin(async move {
            let Some(t) = self.transport.clone() else {
                return;
            };
            let timeout = Duration::from_millis(self.config.gossip.probe_timeout_ms);
            match action {
                Action::Probe { target, addr, msg } => {
                    // Only the target's own certificate answers for it.
                    let reply = match self
                        .request_from(&t, addr, &PeerRequest::Gossip(msg), timeout)
                        .await
                    {
                        Ok((Some(from), PeerResponse::Gossip(g))) if from == target => Some(g),
                        _ => None,
                    };
                    let now = self.now();
                    let more = self.with_membership(|m| m.probe_result(&target, reply, now));
                    for a in more {
                        tokio::spawn(self.clone().run(a));
                    }
                }
                Action::IndirectProbe {
                    via,
                    target,
                    target_addr,
                } => {
                    let req = PeerRequest::IndirectPing {
                        target: target_addr,
                    };
                    let reached = matches!(
                        self.request(&t, via, &req, timeout * 2).await,
                        Ok(PeerResponse::Reached(true))
                    );
                    let now = self.now();
                    self.with_membership(|m| m.indirect_result(&target, reached, now));
                }
                Action::PushPull { addr, msg } => {
                    if let Ok((Some(from), PeerResponse::Gossip(reply))) = self
                        .request_from(&t, addr, &PeerRequest::Gossip(msg), timeout * 2)
                        .await
                    {
                        let now = self.now();
                        self.with_membership(|m| m.handle_push_pull_reply(&from, reply, now));
                    }
                }
            }
        })
    }

    /// The number of gossip messages refused because their sender is in
    /// another cluster.
    pub fn foreign_messages(&self) -> u64 {
        self.membership().foreign()
    }

    /// Closes the peer transport.
    pub fn close(&self) {
        if let Some(t) = &self.transport {
            t.close();
        }
    }
}

/// Logs what the membership noticed: founding and joining at info, a node
/// of another cluster or a differing initial member list at error (an
/// operator has to act).
fn report(notices: &[Notice]) {
    for n in notices {
        match n {
            Notice::Founded { cluster } => {
                tracing::info!(%cluster, "founded the cluster with its initial members");
            }
            Notice::Joined { cluster, via } => {
                tracing::info!(%cluster, via = %via, "joined the cluster");
            }
            Notice::ForeignCluster { peer, theirs, ours } => {
                let ours = ours
                    .as_ref()
                    .map_or("none yet".to_owned(), |c| c.to_string());
                tracing::error!(
                    peer = %peer,
                    their_cluster = %theirs,
                    our_cluster = %ours,
                    "refused gossip from node {peer}: it belongs to another cluster ({theirs}, ours is {ours}); \
                     check its seeds, or wipe it if it should join this cluster afresh"
                );
            }
            Notice::InitialMembersDiffer { peer, theirs, ours } => {
                let theirs = theirs.as_ref().map_or("none".to_owned(), |c| c.to_string());
                tracing::error!(
                    peer = %peer,
                    "not founding: initial member {peer} would found cluster {theirs}, this node {ours}; \
                     give every initial member the same initial_members"
                );
            }
        }
    }
}
