//! Membership and failure detection: SWIM-style gossip as a pure state
//! machine.
//!
//! The driver (in the node) feeds it time and the outcome of the exchanges it
//! asked for, and carries out the [`Action`]s it returns; nothing here does
//! I/O or reads a clock, so whole clusters are simulated in tests.
//!
//! - Every `probe_interval` the node probes the next peer in a shuffled
//!   round-robin. A probe that fails is retried through `indirect_probes`
//!   other members; if none reaches the target it becomes **suspect**.
//! - A suspect not heard from within `suspect_timeout` becomes **down**.
//!   Down is each node's opinion, used for routing; only an operator removes
//!   a node from the ring.
//! - Every record carries an **incarnation**. A node that hears itself
//!   suspected or declared down at its incarnation or above refutes it by
//!   taking a higher incarnation, so a live node is never kept out. Nodes
//!   start with their boot time as incarnation, so a restarted node is newer
//!   than anything said about its previous life.
//! - Changes ride on every ping and ack (piggyback), and every
//!   `push_pull_interval` the node exchanges its full table with a random
//!   peer or seed, so membership converges even after partitions. Every
//!   message also carries the sender's own record.
//! - **Who may say what.** Every message comes with its sender's node id,
//!   taken from its certificate by the driver. A member's own record
//!   (address, incarnation, up or leaving) is taken only from that member.
//!   From anyone else, only two things: a member not known yet (how a join
//!   spreads), and a suspicion or down verdict about a member *at the
//!   incarnation this node knows it by*, with its address unchanged (how
//!   SWIM spreads failures). So no node can move, revive or silence
//!   another, and an accusation at a forged incarnation (say `u64::MAX`)
//!   goes nowhere; the accused refutes past its own incarnation, never past
//!   the accuser's number. Records refused are counted in
//!   [`Membership::refused`].
//! - **One cluster, founded once.** Every message says which cluster its
//!   sender is in ([`Standing`]); full-table exchanges carry its
//!   [`Layout`]. A node never takes records from a node of another cluster
//!   (counted in [`Membership::foreign`], reported as a [`Notice`]). A node
//!   without a layout is joining: it joins the first cluster whose member
//!   sends it the layout. It founds one only if it is listed in the initial
//!   members and has heard each of them say that it has no layout and would
//!   found the same cluster; having heard of an existing cluster it never
//!   founds. So a restarted or wiped node rejoins, and nodes started
//!   together form one cluster, never one each.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::bucket::BucketTable;
use crate::decide::{Acceptor, Message as Vote};
pub use crate::layout::Bootstrap;
use crate::layout::{Change, ClusterId, Layout, LayoutStamp, Shape, StageError};

/// A member's state, as one node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Started, not yet in contact with the cluster.
    Joining,
    /// Reachable.
    Up,
    /// Missed a direct and indirect probe.
    Suspect,
    /// Suspect for longer than the suspicion timeout.
    Down,
    /// Leaving the cluster at an operator's request.
    Leaving,
    /// Taken out of the ring by an operator.
    Removed,
}

impl Status {
    /// Precedence between two records with the same incarnation.
    fn rank(self) -> u8 {
        match self {
            Self::Joining => 0,
            Self::Up => 1,
            Self::Leaving => 2,
            Self::Suspect => 3,
            Self::Down => 4,
            Self::Removed => 5,
        }
    }

    /// Whether requests may be routed to a member in this state.
    pub fn is_reachable(self) -> bool {
        matches!(self, Self::Joining | Self::Up | Self::Leaving)
    }
}

/// What the cluster knows about one member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Node id.
    pub id: String,
    /// Peer (QUIC) address.
    pub peer_addr: SocketAddr,
    /// HTTP address.
    pub http_addr: SocketAddr,
    /// Failure domain, if declared.
    pub zone: Option<String>,
    /// Version of this record, raised by the member itself.
    pub incarnation: u64,
    /// State.
    pub status: Status,
}

impl MemberInfo {
    /// Whether this record should replace `old`.
    pub fn supersedes(&self, old: &Self) -> bool {
        if old.status == Status::Removed {
            return false;
        }
        if self.status == Status::Removed {
            return true;
        }
        self.incarnation > old.incarnation
            || (self.incarnation == old.incarnation && self.status.rank() > old.status.rank())
    }
}

/// Timings of failure detection, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GossipConfig {
    /// Time between probes.
    pub probe_interval_ms: u64,
    /// How long a probe (direct or indirect) may take.
    pub probe_timeout_ms: u64,
    /// How long a suspect has to refute before it is down.
    pub suspect_timeout_ms: u64,
    /// Time between full-state exchanges.
    pub push_pull_interval_ms: u64,
    /// Members asked to probe on our behalf after a failed probe.
    pub indirect_probes: usize,
    /// Most changes attached to one ping or ack.
    pub piggyback: usize,
}

impl Default for GossipConfig {
    fn default() -> Self {
        Self {
            probe_interval_ms: 500,
            probe_timeout_ms: 400,
            suspect_timeout_ms: 2_000,
            push_pull_interval_ms: 2_000,
            indirect_probes: 2,
            piggyback: 8,
        }
    }
}

impl GossipConfig {
    /// The longest a dead node can take to be marked down by a node that
    /// probes it: a full probe round, the probe and indirect probe, and the
    /// suspicion timeout.
    pub fn detection_bound_ms(&self, members: usize) -> u64 {
        self.probe_interval_ms * members.max(1) as u64
            + 2 * self.probe_timeout_ms
            + self.suspicion_ms(members)
    }

    /// How long a suspect has to refute in a cluster of `members`:
    /// `suspect_timeout_ms` up to 10 members, scaled by log10 of the size
    /// beyond (twice at 100), as memberlist does. A refutation needs about
    /// log(n) gossip rounds to reach everyone; a fixed timeout that fits a
    /// small cluster declares live members down in a large one.
    pub fn suspicion_ms(&self, members: usize) -> u64 {
        let scale = (members.max(1) as f64).log10().max(1.0);
        (self.suspect_timeout_ms as f64 * scale).round() as u64
    }
}

/// A gossip message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GossipMsg {
    /// A direct probe, with recent changes.
    Ping {
        /// Recent changes.
        updates: Vec<MemberInfo>,
    },
    /// The answer to a ping, with recent changes.
    Ack {
        /// Recent changes.
        updates: Vec<MemberInfo>,
    },
    /// A full table, sent and answered in kind.
    PushPull {
        /// Every record the sender has.
        members: Vec<MemberInfo>,
    },
}

/// What a gossip message says about its sender's cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Standing {
    /// A member of this cluster, at this layout version.
    Member(LayoutStamp),
    /// In no cluster yet.
    Unjoined {
        /// The cluster it would found: set when it is one of its own
        /// initial members.
        founding: Option<ClusterId>,
        /// The digest of the bucket properties it would found with (see
        /// [`BucketTable::digest`]): founders must agree on them too.
        #[serde(default)]
        buckets: Option<u64>,
    },
}

/// A gossip message as it travels: the message, its sender's standing, and
/// on full-table exchanges from a member, the sender's layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gossip {
    /// The sender's cluster.
    pub standing: Standing,
    /// The sender's layout (full-table exchanges only).
    pub layout: Option<Box<Layout>>,
    /// The message.
    pub msg: GossipMsg,
}

impl From<GossipMsg> for Gossip {
    /// `msg` from a node in no cluster that founds none.
    fn from(msg: GossipMsg) -> Self {
        Self {
            standing: Standing::Unjoined {
                founding: None,
                buckets: None,
            },
            layout: None,
            msg,
        }
    }
}

/// Something about the cluster the driver should tell the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// This node founded `cluster` with its initial members.
    Founded {
        /// The new cluster.
        cluster: ClusterId,
    },
    /// This node joined `cluster` on `via`'s layout.
    Joined {
        /// The cluster.
        cluster: ClusterId,
        /// The member whose layout it took.
        via: String,
    },
    /// `peer` is in another cluster: nothing it said was taken.
    ForeignCluster {
        /// The peer (its certificate's node id).
        peer: String,
        /// Its cluster.
        theirs: ClusterId,
        /// This node's cluster (or the one it would found or is joining).
        ours: Option<ClusterId>,
    },
    /// `peer`'s cluster (or this node's saved one) has another shape than
    /// this node's configuration: the configuration only bootstraps a new
    /// cluster, so the node follows its cluster's shape, and says so once.
    ShapeDiffers {
        /// Who said it (`None`: this node's saved table).
        peer: Option<String>,
        /// The cluster.
        cluster: ClusterId,
        /// The cluster's shape.
        theirs: Shape,
        /// This node's configuration.
        ours: Shape,
    },
    /// The cluster's bucket properties differ from this node's
    /// configuration: the configuration only bootstraps a new cluster, so
    /// the node follows the cluster's, and says so once.
    BucketsDiffer {
        /// The cluster.
        cluster: ClusterId,
        /// The buckets whose properties differ (`*`: the defaults).
        buckets: Vec<String>,
    },
    /// `peer` has this node's committed layout version with another
    /// committed part: two commits were decided for one version, a bug.
    /// Each node keeps its own; an operator must look.
    LayoutsDiverge {
        /// The peer.
        peer: String,
        /// The version both claim.
        version: u64,
        /// This node's digest of it.
        ours: String,
        /// The peer's.
        theirs: String,
    },
    /// `peer` sent a layout whose fields contradict each other: not taken.
    InvalidLayout {
        /// The peer.
        peer: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `peer`, an initial member, would found this cluster with other
    /// bucket properties: this node does not found.
    FoundersBucketsDiffer {
        /// The peer.
        peer: String,
    },
    /// `peer`, an initial member, would found another cluster or none: the
    /// initial member lists differ, so this node does not found.
    InitialMembersDiffer {
        /// The peer.
        peer: String,
        /// What it would found.
        theirs: Option<ClusterId>,
        /// What this node would found.
        ours: ClusterId,
    },
}

/// How far past the incarnation a node knows of a member a relayed "up"
/// record of that member may be (a member raises its own by one per
/// refutation, so relays rarely need more than a few).
pub const MAX_RELAYED_STEP: u64 = 16;

impl Notice {
    /// The kind of notice, so each kind is reported once per peer.
    fn kind(&self) -> &'static str {
        match self {
            Self::Founded { .. } => "founded",
            Self::Joined { .. } => "joined",
            Self::ForeignCluster { .. } => "foreign",
            Self::ShapeDiffers { .. } => "shape",
            Self::BucketsDiffer { .. } => "buckets",
            Self::InitialMembersDiffer { .. } => "initial",
            Self::FoundersBucketsDiffer { .. } => "founders-buckets",
            Self::LayoutsDiverge { .. } => "diverge",
            Self::InvalidLayout { .. } => "invalid_layout",
        }
    }
}

/// Why a layout change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutChangeError {
    /// This node is in no cluster yet.
    #[error("this node has not joined its cluster yet")]
    NotJoined,
    /// The change itself is refused.
    #[error(transparent)]
    Stage(#[from] StageError),
}

/// Most notices kept until the driver takes them.
const MAX_NOTICES: usize = 64;

/// What a node saves of its membership between runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedTable {
    /// Its layout, once it has one: the node is then a member for good.
    pub layout: Option<Layout>,
    /// Every record it had.
    pub members: Vec<MemberInfo>,
    /// What it promised and accepted for the next layout version.
    #[serde(default)]
    pub vote: Option<Acceptor<Layout>>,
    /// How far its copy of the partitions it gains has come.
    #[serde(default)]
    pub transfer: Option<crate::node::CopyProgress>,
}

/// Where a record comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source<'a> {
    /// This node's own saved table.
    Local,
    /// The peer whose certificate names this node id.
    Peer(&'a str),
}

/// Something the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send `msg` (a ping) to `target`; report with [`Membership::probe_result`].
    Probe {
        /// The member probed.
        target: String,
        /// Where it listens.
        addr: SocketAddr,
        /// The ping.
        msg: Gossip,
    },
    /// Ask `via` to ping `target`; report with [`Membership::indirect_result`].
    IndirectProbe {
        /// The helper.
        via: SocketAddr,
        /// The member probed.
        target: String,
        /// Where the target listens.
        target_addr: SocketAddr,
    },
    /// Exchange full tables with `addr`; hand the answer to
    /// [`Membership::handle_push_pull_reply`].
    PushPull {
        /// The peer.
        addr: SocketAddr,
        /// Our table.
        msg: Gossip,
    },
}

#[derive(Debug, Clone)]
struct Probe {
    target: String,
    indirect_pending: usize,
    indirect: bool,
}

/// One node's membership view and failure detector.
#[derive(Debug, Clone)]
pub struct Membership {
    me: String,
    config: GossipConfig,
    seeds: Vec<SocketAddr>,
    members: BTreeMap<String, MemberInfo>,
    /// When each suspect became suspect (local time).
    suspect_since: BTreeMap<String, u64>,
    /// Recent changes still to piggyback, with sends left.
    gossip_queue: VecDeque<(MemberInfo, u32)>,
    probe_order: Vec<String>,
    probe: Option<Probe>,
    next_probe_at: u64,
    next_push_pull_at: u64,
    rng: u64,
    /// Raised on every change of any record.
    version: u64,
    /// Records refused because their sender may not say them.
    refused: u64,
    /// Members whose record we hold came from the member itself (or from
    /// a suspicion of that record). A record learned second-hand (an
    /// introduction) is replaced by the member's own word whatever its
    /// incarnation, so a forged introduction cannot pin a member.
    firsthand: std::collections::BTreeSet<String>,
    /// Per member, the incarnation relays of its "up" are measured from:
    /// the highest it said itself (or, before it spoke to us, the one it
    /// was introduced at). Relays never move it, so a chain of relayed
    /// records cannot walk a member's incarnation up.
    relay_base: BTreeMap<String, u64>,
    /// The initial members this node was configured with.
    initial: std::collections::BTreeSet<String>,
    /// The cluster this node would found: set when it is an initial member.
    founding: Option<ClusterId>,
    /// The shape this node is configured with (it founds with it).
    shape: Shape,
    /// The bucket properties it is configured with (it founds with them).
    buckets: BucketTable,
    /// Their digest, which founders compare.
    buckets_digest: u64,
    /// This node's cluster, once founded or joined.
    layout: Option<Layout>,
    /// Its vote on the next layout version (see [`crate::decide`]).
    vote: Acceptor<Layout>,
    /// Its copy of gained partitions (kept here to be saved with the
    /// table; the node machine drives it).
    transfer: Option<crate::node::CopyProgress>,
    /// While unjoined: what each peer last said it would found.
    heard_unjoined: BTreeMap<String, (Option<ClusterId>, Option<u64>)>,
    /// While unjoined: the existing cluster heard of (then it never founds).
    cluster_seen: Option<ClusterId>,
    /// Messages refused because their sender is in another cluster.
    foreign: u64,
    /// For the driver to report, oldest first.
    notices: VecDeque<Notice>,
    /// The last notice about each peer (each is reported once).
    noted: BTreeMap<(String, &'static str), Notice>,
}

impl Membership {
    /// A node's view at start: only itself, `Joining`, at incarnation
    /// `boot_ms`. `initial` is the configured initial member list: a node
    /// listed in it may found the cluster (at once when it is the only one
    /// listed), any other node joins an existing one. Seeds may include the
    /// node's own address (the same list on every node). `bootstrap` is
    /// what the node's configuration says of a cluster (its shape, its
    /// bucket properties): the node founds with it; in a cluster, the
    /// cluster's layout rules.
    pub fn new(
        me: MemberInfo,
        seeds: Vec<SocketAddr>,
        initial: std::collections::BTreeSet<String>,
        bootstrap: impl Into<Bootstrap>,
        config: GossipConfig,
        now: u64,
        seed: u64,
    ) -> Self {
        let Bootstrap { shape, buckets } = bootstrap.into();
        let mut me = me;
        let seeds: Vec<SocketAddr> = seeds.into_iter().filter(|s| *s != me.peer_addr).collect();
        me.status = Status::Joining;
        let founding = initial
            .contains(&me.id)
            .then(|| ClusterId::founded_by(&initial, shape));
        let id = me.id.clone();
        let mut m = Self {
            me: id.clone(),
            config,
            seeds,
            members: BTreeMap::from([(id, me.clone())]),
            suspect_since: BTreeMap::new(),
            gossip_queue: VecDeque::new(),
            probe_order: Vec::new(),
            probe: None,
            next_probe_at: now,
            next_push_pull_at: now,
            rng: seed | 1,
            version: 1,
            refused: 0,
            firsthand: std::collections::BTreeSet::new(),
            relay_base: BTreeMap::new(),
            initial,
            founding,
            shape,
            buckets_digest: buckets.digest(),
            buckets,
            layout: None,
            vote: Acceptor::new(0),
            transfer: None,
            heard_unjoined: BTreeMap::new(),
            cluster_seen: None,
            foreign: 0,
            notices: VecDeque::new(),
            noted: BTreeMap::new(),
        };
        m.enqueue(me);
        m.try_found();
        m
    }

    /// This node's layout, once it has founded or joined its cluster.
    pub fn layout(&self) -> Option<&Layout> {
        self.layout.as_ref()
    }

    /// What this node's messages say about its cluster.
    pub fn standing(&self) -> Standing {
        match &self.layout {
            Some(l) => Standing::Member(l.stamp()),
            None => Standing::Unjoined {
                founding: self.founding.clone(),
                buckets: self.founding.as_ref().map(|_| self.buckets_digest),
            },
        }
    }

    /// `msg` as this node sends it.
    pub fn envelope(&self, msg: GossipMsg) -> Gossip {
        Gossip {
            standing: self.standing(),
            layout: None,
            msg,
        }
    }

    /// This node's full table, with its layout.
    fn full_table(&self) -> Gossip {
        Gossip {
            standing: self.standing(),
            layout: self.layout.clone().map(Box::new),
            msg: GossipMsg::PushPull {
                members: self.members.values().cloned().collect(),
            },
        }
    }

    /// What to save for the next run (see [`Self::restore`]).
    pub fn saved(&self) -> SavedTable {
        SavedTable {
            layout: self.layout.clone(),
            members: self.members.values().cloned().collect(),
            vote: self.layout.is_some().then(|| self.vote.clone()),
            transfer: self.transfer.clone(),
        }
    }

    /// How many messages were refused because their sender is in another
    /// cluster.
    pub fn foreign(&self) -> u64 {
        self.foreign
    }

    /// The notices since the last call, oldest first.
    pub fn take_notices(&mut self) -> Vec<Notice> {
        self.notices.drain(..).collect()
    }

    fn notify(&mut self, peer: Option<&str>, notice: Notice) {
        if let Some(peer) = peer {
            let key = (peer.to_owned(), notice.kind());
            if self.noted.get(&key) == Some(&notice) {
                return;
            }
            self.noted.insert(key, notice.clone());
        }
        if self.notices.len() >= MAX_NOTICES {
            self.notices.pop_front();
        }
        self.notices.push_back(notice);
    }

    /// Whether a message with `standing` from `from` may be taken; records
    /// what it says about founding.
    fn admit(&mut self, from: &str, standing: &Standing) -> bool {
        let theirs = match (&self.layout, standing) {
            (Some(ours), Standing::Member(s)) => {
                if s.cluster == ours.cluster {
                    return true;
                }
                s.cluster.clone()
            }
            // Joins, and members that lost their disk, come unjoined.
            (Some(_), Standing::Unjoined { .. }) => return true,
            (None, Standing::Member(s)) => {
                match self.founding.as_ref().or(self.cluster_seen.as_ref()) {
                    Some(expected) if *expected != s.cluster => s.cluster.clone(),
                    _ => {
                        self.cluster_seen = Some(s.cluster.clone());
                        return true;
                    }
                }
            }
            (None, Standing::Unjoined { founding, buckets }) => {
                if let Some(ours) = &self.founding {
                    if self.initial.contains(from) && founding.as_ref() != Some(ours) {
                        let notice = Notice::InitialMembersDiffer {
                            peer: from.to_owned(),
                            theirs: founding.clone(),
                            ours: ours.clone(),
                        };
                        self.notify(Some(from), notice);
                    } else if self.initial.contains(from) && *buckets != Some(self.buckets_digest) {
                        let notice = Notice::FoundersBucketsDiffer {
                            peer: from.to_owned(),
                        };
                        self.notify(Some(from), notice);
                    }
                }
                self.heard_unjoined
                    .insert(from.to_owned(), (founding.clone(), *buckets));
                return true;
            }
        };
        self.foreign += 1;
        let ours = match &self.layout {
            Some(l) => Some(l.cluster.clone()),
            None => self.founding.clone().or(self.cluster_seen.clone()),
        };
        let notice = Notice::ForeignCluster {
            peer: from.to_owned(),
            theirs,
            ours,
        };
        self.notify(Some(from), notice);
        false
    }

    /// Takes a member's layout: joins its cluster, or merges it.
    fn take_layout(&mut self, from: &str, layout: Layout) {
        if let Err(e) = layout.check() {
            let notice = Notice::InvalidLayout {
                peer: from.to_owned(),
                reason: e.0,
            };
            return self.notify(Some(from), notice);
        }
        match &mut self.layout {
            Some(ours) => {
                let Ok(merged) = ours.merge(&layout) else {
                    return;
                };
                if merged.changed {
                    self.version += 1;
                }
                self.vote.advance(ours.version);
                if let Some((version, ours, theirs)) = merged.diverged {
                    let notice = Notice::LayoutsDiverge {
                        peer: from.to_owned(),
                        version,
                        ours,
                        theirs,
                    };
                    self.notify(Some(from), notice);
                }
            }
            None => {
                if let Some(theirs) = layout.shape.filter(|s| *s != self.shape) {
                    let notice = Notice::ShapeDiffers {
                        peer: Some(from.to_owned()),
                        cluster: layout.cluster.clone(),
                        theirs,
                        ours: self.shape,
                    };
                    self.notify(Some(from), notice);
                }
                let mut layout = layout;
                layout.admit(&self.me);
                let cluster = layout.cluster.clone();
                // A node that joins holding a role past the first version
                // lost its disk: it cannot know what it voted on the
                // version being decided, so it sits that one out. (A
                // founder that took a peer's first layout never voted.)
                self.vote = if layout.version > 1 && layout.roles.contains_key(&self.me) {
                    Acceptor::abstaining(layout.version)
                } else {
                    Acceptor::new(layout.version)
                };
                self.layout = Some(layout);
                self.version += 1;
                self.mark_joined();
                self.note_buckets();
                self.notify(
                    None,
                    Notice::Joined {
                        cluster,
                        via: from.to_owned(),
                    },
                );
            }
        }
    }

    /// Founds the cluster if this node is an initial member, has heard of
    /// no existing cluster, and every other initial member has told it
    /// (itself) that it would found the same one.
    fn try_found(&mut self) {
        if self.layout.is_some() || self.cluster_seen.is_some() {
            return;
        }
        let Some(founding) = &self.founding else {
            return;
        };
        let all_agree = self.initial.iter().filter(|id| **id != self.me).all(|id| {
            self.heard_unjoined.get(id)
                == Some(&(Some(founding.clone()), Some(self.buckets_digest)))
        });
        if !all_agree {
            return;
        }
        // Each founder's zone is in its own record, which came with the
        // message that said it would found: every founder sees the same.
        let zones = self
            .initial
            .iter()
            .map(|id| {
                let zone = self.members.get(id).and_then(|m| m.zone.clone());
                (id.clone(), zone)
            })
            .collect();
        let layout = Layout::found_in_zones(&zones, self.bootstrap());
        let cluster = layout.cluster.clone();
        self.vote = Acceptor::new(layout.version);
        self.layout = Some(layout);
        self.heard_unjoined.clear();
        self.version += 1;
        self.mark_joined();
        self.notify(None, Notice::Founded { cluster });
    }

    /// Stages `change` for `node` in this node's layout (gossip spreads it).
    pub fn stage(&mut self, node: &str, change: Change) -> Result<(), LayoutChangeError> {
        let me = self.me.clone();
        let layout = self.layout.as_mut().ok_or(LayoutChangeError::NotJoined)?;
        layout.stage(&me, node, change)?;
        self.version += 1;
        Ok(())
    }

    /// Stages `n_val` for `bucket` in this node's layout.
    pub fn stage_n_val(&mut self, bucket: &str, n_val: u8) -> Result<(), LayoutChangeError> {
        let me = self.me.clone();
        let layout = self.layout.as_mut().ok_or(LayoutChangeError::NotJoined)?;
        layout.stage_n_val(&me, bucket, n_val)?;
        self.version += 1;
        Ok(())
    }

    /// A proposer's message about the next layout version, from `from`:
    /// this node's vote, if it has one to give. The caller must save the
    /// table (see [`Self::saved`]) before the answer leaves the node.
    pub fn decide(&mut self, msg: Vote<Layout>) -> Option<Vote<Layout>> {
        let current = self.layout.as_ref()?;
        if let Vote::Accept { value, .. } = &msg {
            if value.cluster != current.cluster || value.check().is_err() {
                return None;
            }
        }
        let before = self.vote.clone();
        let answer = self.vote.handle(msg, current);
        if self.vote != before {
            self.version += 1;
        }
        answer
    }

    /// The copy progress saved with the table.
    pub fn transfer(&self) -> Option<&crate::node::CopyProgress> {
        self.transfer.as_ref()
    }

    /// Replaces the copy progress (saved with the table).
    pub fn set_transfer(&mut self, progress: Option<crate::node::CopyProgress>) {
        if self.transfer != progress {
            self.transfer = progress;
            self.version += 1;
        }
    }

    /// Records in this node's layout that it copied every partition it
    /// gains in `version`; gossip spreads it.
    pub fn mark_synced(&mut self, version: u64) {
        let me = self.me.clone();
        if let Some(l) = &mut self.layout {
            if l.mark_synced(&me, version) {
                self.version += 1;
            }
        }
    }

    /// Records in this node's layout that it saved `version` and finished
    /// every write begun under a version before; gossip spreads it.
    pub fn mark_acked(&mut self, version: u64) {
        let me = self.me.clone();
        if let Some(l) = &mut self.layout {
            if l.mark_acked(&me, version) {
                self.version += 1;
            }
        }
    }

    /// Takes a layout version the voters decided (or a voter already had).
    pub fn adopt(&mut self, layout: &Layout) {
        if layout.check().is_err() {
            return;
        }
        if let Some(ours) = &mut self.layout {
            if let Ok(merged) = ours.merge(layout) {
                if merged.changed {
                    self.version += 1;
                }
                self.vote.advance(ours.version);
            }
        }
    }

    /// What this node's configuration founds a cluster with.
    fn bootstrap(&self) -> Bootstrap {
        Bootstrap {
            shape: self.shape,
            buckets: self.buckets.clone(),
        }
    }

    /// The bucket properties in force: the cluster's, or this node's
    /// configuration while its layout holds none (or it has none).
    pub fn bucket_table(&self) -> &BucketTable {
        self.layout
            .as_ref()
            .and_then(|l| l.buckets.as_ref())
            .unwrap_or(&self.buckets)
    }

    /// Says which of the cluster's bucket properties this node's
    /// configuration would have set otherwise.
    fn note_buckets(&mut self) {
        let Some(layout) = &self.layout else { return };
        let Some(theirs) = &layout.buckets else {
            return;
        };
        let ours = &self.buckets;
        let named: std::collections::BTreeSet<&String> =
            theirs.named.keys().chain(ours.named.keys()).collect();
        let mut differ: Vec<String> = named
            .into_iter()
            .filter(|b| theirs.props(b) != ours.props(b))
            .cloned()
            .collect();
        if theirs.defaults != ours.defaults {
            differ.insert(0, "*".to_owned());
        }
        if !differ.is_empty() {
            let notice = Notice::BucketsDiffer {
                cluster: layout.cluster.clone(),
                buckets: differ,
            };
            self.notify(None, notice);
        }
    }

    /// This node's id.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// The timings.
    pub fn config(&self) -> &GossipConfig {
        &self.config
    }

    /// Every record, by id.
    pub fn members(&self) -> impl Iterator<Item = &MemberInfo> {
        self.members.values()
    }

    /// One member's record.
    pub fn get(&self, id: &str) -> Option<&MemberInfo> {
        self.members.get(id)
    }

    /// A member's status (`None` if unknown).
    pub fn status(&self, id: &str) -> Option<Status> {
        self.members.get(id).map(|m| m.status)
    }

    /// Raised on every change; the driver rebuilds what depends on it.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// How many records were refused because their sender may not say
    /// them (another member's address or liveness, a forged incarnation).
    pub fn refused(&self) -> u64 {
        self.refused
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*: small, deterministic, good enough to pick peers.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn enqueue(&mut self, info: MemberInfo) {
        self.gossip_queue.retain(|(m, _)| m.id != info.id);
        // Enough retransmissions to reach everyone with high probability.
        let sends = 3 * (64 - (self.members.len() as u64).leading_zeros()).max(1);
        self.gossip_queue.push_back((info, sends));
    }

    fn piggyback(&mut self) -> Vec<MemberInfo> {
        // Our own record first: only we can vouch for it.
        let mut out = vec![self.members[&self.me].clone()];
        for (info, sends) in self.gossip_queue.iter_mut().take(self.config.piggyback) {
            if info.id != self.me {
                out.push(info.clone());
            }
            *sends = sends.saturating_sub(1);
        }
        self.gossip_queue.retain(|(_, s)| *s > 0);
        // Rotate so that every change gets its turn.
        if let Some(front) = self.gossip_queue.pop_front() {
            self.gossip_queue.push_back(front);
        }
        out
    }

    /// Whether `from` may tell this node `info`.
    fn may_say(&self, info: &MemberInfo, from: Source<'_>) -> bool {
        let Source::Peer(from) = from else {
            return true;
        };
        if from == info.id {
            return true;
        }
        match self.members.get(&info.id) {
            // A member not known yet: how joins spread.
            None => info.status != Status::Removed,
            // Someone else's word on a member, with its addresses and zone
            // as we know them (only the member itself may change those):
            // - a verdict: suspect or down, at the incarnation we know;
            // - the member's own news relayed: up (joined, or refuting a
            //   suspicion) at a later incarnation, at most
            //   [`MAX_RELAYED_STEP`] past the last it said itself (relays do
            //   not move that base). Without relays, a member's
            //   refutation reaches only the nodes it talks to itself while
            //   suspicions spread by gossip; at 100 members views then
            //   never settle. The bound keeps a forger from pushing a member
            //   to the top of the range, where it could no longer refute.
            Some(old) => {
                let same_place = info.peer_addr == old.peer_addr
                    && info.http_addr == old.http_addr
                    && info.zone == old.zone;
                let verdict = matches!(info.status, Status::Suspect | Status::Down)
                    && info.incarnation == old.incarnation;
                let base = self
                    .relay_base
                    .get(&info.id)
                    .copied()
                    .unwrap_or(old.incarnation);
                let relayed_up = info.status == Status::Up
                    && info.incarnation >= old.incarnation
                    && info.incarnation <= base.saturating_add(MAX_RELAYED_STEP);
                same_place && (verdict || relayed_up)
            }
        }
    }

    /// Applies one record from `from`; returns whether anything changed.
    fn apply(&mut self, info: MemberInfo, from: Source<'_>, now: u64) -> bool {
        if info.id == self.me {
            let mine = &self.members[&self.me];
            let accused = matches!(info.status, Status::Suspect | Status::Down);
            if accused && info.incarnation >= mine.incarnation {
                // Refute: a live node is never kept out. Past the
                // accusation when others may know us that far (relays move
                // our incarnation by bounded steps); past our own number
                // for a wilder one, so a forged number cannot push us to
                // the top of the range.
                let reachable = mine.incarnation.saturating_add(MAX_RELAYED_STEP);
                let past = if info.incarnation <= reachable {
                    info.incarnation
                } else {
                    mine.incarnation
                };
                let mut me = mine.clone();
                me.incarnation = past.saturating_add(1);
                self.members.insert(self.me.clone(), me.clone());
                self.enqueue(me);
                self.version += 1;
                return true;
            }
            if info.status == Status::Removed && from == Source::Local {
                self.members.insert(self.me.clone(), info);
                self.version += 1;
                return true;
            }
            return false;
        }
        if !self.may_say(&info, from) {
            self.refused += 1;
            return false;
        }
        let own_word = from == Source::Peer(&info.id);
        let changed = match self.members.get(&info.id) {
            // The member's own word replaces what others said of it.
            Some(old) if own_word && !self.firsthand.contains(&info.id) => *old != info,
            Some(old) => info.supersedes(old),
            None => true,
        };
        if own_word {
            // Its own word replaces an introduction's number, forged or not.
            let first = !self.firsthand.contains(&info.id);
            let base = self.relay_base.entry(info.id.clone()).or_insert(0);
            *base = if first {
                info.incarnation
            } else {
                (*base).max(info.incarnation)
            };
        } else if !self.members.contains_key(&info.id) {
            self.relay_base.insert(info.id.clone(), info.incarnation);
        }
        if own_word && (changed || self.members.get(&info.id) == Some(&info)) {
            self.firsthand.insert(info.id.clone());
        }
        if changed {
            if info.status == Status::Suspect {
                self.suspect_since.entry(info.id.clone()).or_insert(now);
            } else {
                self.suspect_since.remove(&info.id);
            }
            self.members.insert(info.id.clone(), info.clone());
            self.enqueue(info);
            self.version += 1;
        }
        changed
    }

    /// Restores what this node saved before it stopped: with a layout, it
    /// is a member at once, its ring the cluster's as it last knew it, and
    /// gossip brings what changed since. Without one (it stopped while
    /// joining) its peers still serve to find the cluster.
    pub fn restore(&mut self, saved: SavedTable, now: u64) {
        for m in saved.members {
            if m.id == self.me || m.status == Status::Removed {
                continue;
            }
            self.apply(m, Source::Local, now);
        }
        if let Some(layout) = saved.layout {
            // A node reconfigured with another shape since follows its
            // cluster's (the saved layout's), and says so.
            if let Some(theirs) = layout.shape.filter(|s| *s != self.shape) {
                let notice = Notice::ShapeDiffers {
                    peer: None,
                    cluster: layout.cluster.clone(),
                    theirs,
                    ours: self.shape,
                };
                self.notify(None, notice);
            }
            // A layout saved before assignments existed gets one (every
            // admitted member holds data, as it did).
            let mut layout = layout;
            let members = &self.members;
            let me = self.me.clone();
            layout.upgrade(|id| {
                members
                    .get(id)
                    .filter(|m| m.id == me || m.status != Status::Removed)
                    .and_then(|m| m.zone.clone())
            });
            // The saved identity is the node's for good: it wins over a
            // layout founded at start from the config.
            // Saved without a vote: before votes existed, so none was cast.
            self.vote = saved.vote.unwrap_or_else(|| Acceptor::new(layout.version));
            self.vote.advance(layout.version);
            self.transfer = saved.transfer;
            if self.layout.as_ref() != Some(&layout) {
                self.layout = Some(layout);
                self.version += 1;
            }
            self.mark_joined();
            self.note_buckets();
        }
    }

    /// Whether this node has joined: it has founded its cluster or taken
    /// the layout of a member. Until then its ring is partial, and it must
    /// not coordinate requests: it would place keys on the wrong replicas
    /// and cap quorums to the members it happens to know.
    pub fn has_joined(&self) -> bool {
        self.layout.is_some()
    }

    /// Marks this node up once it has its cluster's layout.
    fn mark_joined(&mut self) {
        let me = self.members[&self.me].clone();
        if me.status == Status::Joining {
            let mut up = me;
            up.status = Status::Up;
            self.members.insert(self.me.clone(), up.clone());
            self.enqueue(up);
            self.version += 1;
        }
    }

    /// Takes a message from peer `from` (the node id its certificate
    /// names), unless its sender is in another cluster; returns whether it
    /// was taken.
    fn take(&mut self, from: &str, envelope: Gossip, now: u64) -> bool {
        if !self.admit(from, &envelope.standing) {
            return false;
        }
        let (GossipMsg::Ping { updates }
        | GossipMsg::Ack { updates }
        | GossipMsg::PushPull { members: updates }) = envelope.msg;
        for u in updates {
            self.apply(u, Source::Peer(from), now);
        }
        // Only a member's layout counts, and only with its own stamp.
        if let (Some(layout), Standing::Member(stamp)) = (envelope.layout, &envelope.standing) {
            if layout.cluster == stamp.cluster {
                self.take_layout(from, *layout);
            }
        }
        self.try_found();
        true
    }

    /// Handles a gossip message from peer `from` (the node id its
    /// certificate names); returns the reply to send. A message from
    /// another cluster is answered with nothing but this node's standing,
    /// so its sender refuses it in turn.
    pub fn handle_message(&mut self, from: &str, msg: Gossip, now: u64) -> Option<Gossip> {
        let push_pull = matches!(msg.msg, GossipMsg::PushPull { .. });
        let ping = matches!(msg.msg, GossipMsg::Ping { .. });
        if !self.take(from, msg, now) {
            return if ping {
                Some(self.envelope(GossipMsg::Ack {
                    updates: Vec::new(),
                }))
            } else if push_pull {
                Some(self.envelope(GossipMsg::PushPull {
                    members: Vec::new(),
                }))
            } else {
                None
            };
        }
        if ping {
            let updates = self.piggyback();
            Some(self.envelope(GossipMsg::Ack { updates }))
        } else if push_pull {
            Some(self.full_table())
        } else {
            // An ack is not answered.
            None
        }
    }

    /// Hands the answer of a push-pull this node started back in; a
    /// joining node joins on it when it comes from a member (with its
    /// layout). `sender` is the node id the replying peer's certificate
    /// names.
    pub fn handle_push_pull_reply(&mut self, sender: &str, msg: Gossip, now: u64) {
        if matches!(msg.msg, GossipMsg::PushPull { .. }) {
            self.take(sender, msg, now);
        }
    }

    /// The outcome of a direct probe: the target's own answer (the driver
    /// checks the answer came from the target's certificate), or `None`.
    pub fn probe_result(&mut self, target: &str, reply: Option<Gossip>, now: u64) -> Vec<Action> {
        match self.probe.as_ref() {
            Some(p) if p.target == target && !p.indirect => {}
            _ => return Vec::new(),
        }
        // A suspect that answers refutes through the ack's updates: the
        // ping carried the accusation, and it answers with a higher
        // incarnation. An answer from another cluster is no answer.
        if let Some(msg) = reply {
            let target = target.to_owned();
            if self.take(&target, msg, now) {
                self.probe = None;
                return Vec::new();
            }
        }
        // Ask others to probe it (unless it is down already: no news).
        let Some(target_addr) = self
            .members
            .get(target)
            .filter(|m| m.status != Status::Down)
            .map(|m| m.peer_addr)
        else {
            self.probe = None;
            return Vec::new();
        };
        let mut helpers: Vec<SocketAddr> = self
            .members
            .values()
            .filter(|m| m.id != self.me && m.id != target && m.status == Status::Up)
            .map(|m| m.peer_addr)
            .collect();
        let mut chosen = Vec::new();
        while chosen.len() < self.config.indirect_probes && !helpers.is_empty() {
            let i = (self.next_random() % helpers.len() as u64) as usize;
            chosen.push(helpers.swap_remove(i));
        }
        if chosen.is_empty() {
            self.suspect(target, now);
            self.probe = None;
            return Vec::new();
        }
        self.probe = Some(Probe {
            target: target.to_owned(),
            indirect_pending: chosen.len(),
            indirect: true,
        });
        chosen
            .into_iter()
            .map(|via| Action::IndirectProbe {
                via,
                target: target.to_owned(),
                target_addr,
            })
            .collect()
    }

    /// The outcome of one indirect probe.
    pub fn indirect_result(&mut self, target: &str, reached: bool, now: u64) {
        let Some(p) = self.probe.as_mut() else { return };
        if p.target != target || !p.indirect {
            return;
        }
        if reached {
            self.probe = None;
            return;
        }
        p.indirect_pending = p.indirect_pending.saturating_sub(1);
        if p.indirect_pending == 0 {
            self.probe = None;
            self.suspect(target, now);
        }
    }

    fn suspect(&mut self, id: &str, now: u64) {
        if let Some(m) = self.members.get(id).cloned() {
            if m.status == Status::Up || m.status == Status::Joining || m.status == Status::Leaving
            {
                let mut s = m;
                s.status = Status::Suspect;
                self.apply(s, Source::Local, now);
            }
        }
    }

    /// Advances time: suspicion timeouts, the next probe, the next
    /// push-pull. Call it often (every few tens of milliseconds).
    pub fn handle_timeout(&mut self, now: u64) -> Vec<Action> {
        let mut actions = Vec::new();
        let suspicion = self.config.suspicion_ms(self.members.len());
        let expired: Vec<String> = self
            .suspect_since
            .iter()
            .filter(|(_, &since)| now.saturating_sub(since) >= suspicion)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            self.suspect_since.remove(&id);
            if let Some(m) = self.members.get(&id).cloned() {
                if m.status == Status::Suspect {
                    let mut d = m;
                    d.status = Status::Down;
                    self.apply(d, Source::Local, now);
                }
            }
        }
        if self.probe.is_none() && now >= self.next_probe_at {
            self.next_probe_at = now + self.config.probe_interval_ms;
            if let Some(target) = self.next_probe_target() {
                if let Some(addr) = self.members.get(&target).map(|m| m.peer_addr) {
                    self.probe = Some(Probe {
                        target: target.clone(),
                        indirect_pending: 0,
                        indirect: false,
                    });
                    let mut updates = self.piggyback();
                    // Tell a suspect or down target what we think of it, so
                    // that, alive, it refutes in its ack.
                    if let Some(seen) = self
                        .members
                        .get(&target)
                        .filter(|m| matches!(m.status, Status::Suspect | Status::Down))
                    {
                        updates.push(seen.clone());
                    }
                    let msg = self.envelope(GossipMsg::Ping { updates });
                    actions.push(Action::Probe { target, addr, msg });
                }
            }
        }
        if now >= self.next_push_pull_at {
            self.next_push_pull_at = now + self.config.push_pull_interval_ms;
            if let Some(addr) = self.push_pull_peer() {
                actions.push(Action::PushPull {
                    addr,
                    msg: self.full_table(),
                });
            }
        }
        actions
    }

    /// Forgets a probe the driver could not finish (its task died).
    pub fn abandon_probe(&mut self) {
        self.probe = None;
    }

    fn next_probe_target(&mut self) -> Option<String> {
        if self.probe_order.is_empty() {
            let mut order: Vec<String> = self
                .members
                .values()
                // Down members too: only a member vouches for itself, so a
                // member each side thinks down (both restarted, or a healed
                // partition) must hear from the other directly.
                .filter(|m| m.id != self.me && m.status != Status::Removed)
                .map(|m| m.id.clone())
                .collect();
            // Fisher-Yates with our own generator.
            for i in (1..order.len()).rev() {
                let j = (self.next_random() % (i as u64 + 1)) as usize;
                order.swap(i, j);
            }
            self.probe_order = order;
        }
        self.probe_order.pop()
    }

    fn push_pull_peer(&mut self) -> Option<SocketAddr> {
        // While joining, or now and then, go to a seed; otherwise any other
        // known member, down ones included, so partitions heal.
        let joining = self.members[&self.me].status == Status::Joining;
        let others: Vec<SocketAddr> = self
            .members
            .values()
            .filter(|m| m.id != self.me && m.status != Status::Removed)
            .map(|m| m.peer_addr)
            .collect();
        // A joining node tries its seeds and every member it has heard of, so
        // it joins even while its seeds are down.
        let pool = if joining {
            let mut pool = self.seeds.clone();
            pool.extend(others.into_iter().filter(|a| !self.seeds.contains(a)));
            pool
        } else if !self.seeds.is_empty()
            && (others.is_empty() || self.next_random().is_multiple_of(4))
        {
            self.seeds.clone()
        } else {
            others
        };
        if pool.is_empty() {
            return None;
        }
        let i = (self.next_random() % pool.len() as u64) as usize;
        Some(pool[i])
    }
}

#[cfg(test)]
mod tests;
