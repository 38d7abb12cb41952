//! The cluster layout: which cluster a node belongs to, and its members.
//!
//! A cluster is created once. Its [`ClusterId`] is fixed at bootstrap from
//! an explicit setting, the initial member list (as etcd's
//! `initial-cluster`), and every node keeps it for good: it is persisted
//! with the member table, carried in every gossip message, and a node never
//! talks membership with a node of another cluster. So a node cannot found
//! a cluster of its own by accident (the split Cassandra's self-seeding
//! nodes are known for), and a wiped node rejoins its cluster instead of
//! founding a new one.
//!
//! The founding rule is in [`crate::membership`]: a node listed in the
//! initial members founds only once it has heard, from each of them, that
//! none has a layout yet and all would found the same cluster. Every
//! founder computes the same id and the same first layout from the same
//! list, so founders that never met cannot disagree.
//!
//! The layout is versioned. Today it holds the members admitted to the
//! cluster, a set that only grows (each joining node adds itself); merging
//! two layouts of one cluster is their union, so concurrent joins cannot
//! lose each other. Issue C extends this structure with partitions, zones,
//! weights and bucket properties, changed by operators.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::access::{AccessChange, AccessPolicy, PolicyError};
use crate::bucket::{BucketProps, BucketTable, ConflictMode};
use crate::placement::{assign, Assignment, Candidate, Transfer};

/// Bytes of the hash kept in a cluster id.
const ID_BYTES: usize = 16;

/// A cluster's identity: 32 hex digits, derived from the initial member list.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(try_from = "String", into = "String")]
pub struct ClusterId(String);

impl ClusterId {
    /// The id of the cluster founded by `initial` (order and duplicates do
    /// not matter) with `shape`: founders configured with another shape
    /// would found another cluster, so they never agree to found one.
    /// (Founders also agree on bucket properties before they found, see
    /// [`BucketTable::digest`], but those are not the cluster's identity:
    /// a founder that lost its disk rejoins whatever its configuration
    /// says of them now.)
    pub fn founded_by<'a>(initial: impl IntoIterator<Item = &'a String>, shape: Shape) -> Self {
        let sorted: BTreeSet<&String> = initial.into_iter().collect();
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(b"quorra-cluster-v2");
        ctx.update(&shape.partitions.to_be_bytes());
        ctx.update(&shape.tokens.to_be_bytes());
        for id in sorted {
            // Length-prefixed, so ["ab","c"] and ["a","bc"] differ.
            ctx.update(&(id.len() as u64).to_be_bytes());
            ctx.update(id.as_bytes());
        }
        let digest = ctx.finish();
        let hex: String = digest.as_ref()[..ID_BYTES]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Self(hex)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ClusterId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for ClusterId {
    type Error = LayoutError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        if s.len() == 2 * ID_BYTES && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Self(s.to_ascii_lowercase()))
        } else {
            Err(LayoutError::BadId)
        }
    }
}

impl From<ClusterId> for String {
    fn from(id: ClusterId) -> Self {
        id.0
    }
}

/// Layout errors.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LayoutError {
    /// Not 32 hex digits.
    #[error("a cluster id is 32 hex digits")]
    BadId,
    /// The two layouts belong to different clusters.
    #[error("layout of cluster {theirs} cannot merge into cluster {ours}")]
    OtherCluster {
        /// This node's cluster.
        ours: ClusterId,
        /// The other layout's cluster.
        theirs: ClusterId,
    },
}

/// How the cluster cuts and spreads keys, fixed when it is founded: every
/// node must place keys by the same shape, so it is part of the cluster's
/// identity and of its layout, and a node configured otherwise neither
/// founds with the others nor joins (it says why, loudly).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Shape {
    /// Partitions of the key space (a power of two).
    pub partitions: u32,
    /// Tokens per node on the ring (they pick the fallbacks after the
    /// assigned replicas).
    pub tokens: u16,
}

impl Default for Shape {
    fn default() -> Self {
        Self {
            partitions: 256,
            tokens: crate::ring::DEFAULT_TOKENS,
        }
    }
}

/// What a node's configuration says of a cluster it founds: its shape and
/// its bucket properties. In a cluster, the cluster's layout rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bootstrap {
    /// The shape.
    pub shape: Shape,
    /// The bucket properties.
    pub buckets: BucketTable,
}

impl From<Shape> for Bootstrap {
    fn from(shape: Shape) -> Self {
        Self {
            shape,
            buckets: BucketTable::default(),
        }
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} partitions, {} tokens", self.partitions, self.tokens)
    }
}

/// Which cluster, at which layout version: what every gossip message says
/// about its sender.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayoutStamp {
    /// The cluster.
    pub cluster: ClusterId,
    /// Its layout version.
    pub version: u64,
}

/// Replica slots per partition in a new cluster's assignment: the default
/// `n_val`. Buckets with a larger `n_val` take their extra replicas from
/// the ring's fallback order.
pub const DEFAULT_REPLICAS: u8 = 3;
/// The most partitions a cluster may have.
pub const MAX_PARTITIONS: u32 = 65_536;
/// The most a node's weight may be.
pub const MAX_WEIGHT: u32 = 1_000;
/// The longest zone name.
pub const MAX_ZONE_LEN: usize = 64;

/// A node's part in a layout version: its failure domain and how much it
/// holds relative to the others. A member without a role holds no data.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Role {
    /// Failure domain; a node without one is a zone of its own.
    pub zone: Option<String>,
    /// Relative capacity, 1 to [`MAX_WEIGHT`].
    pub weight: u32,
}

/// A change an operator stages for the next layout version.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Give the node this role: a join, or a new zone or weight.
    Set(Role),
    /// Take the node's role away (`leave`, `remove`): its replicas move to
    /// the others.
    Remove,
    /// Hand the node's role and every replica it holds to another member
    /// in one move (Cassandra's replace: the new node takes the dead one's
    /// place instead of the cluster rebalancing twice).
    ReplaceBy(String),
    /// Undo what was staged for the node.
    Keep,
}

/// One staged change: to a node ([`Change`]), or a bucket's `n_val`.
/// Staged changes spread by gossip; of two for one node or bucket the
/// later wins (`seq`, then the author), on every node alike.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Staged<C = Change> {
    /// Above every staged change this node had seen.
    pub seq: u64,
    /// The node that staged it.
    pub by: String,
    /// The change.
    pub change: C,
}

impl<C: Ord> Staged<C> {
    fn wins_over(&self, other: &Self) -> bool {
        (self.seq, &self.by, &self.change) > (other.seq, &other.by, &other.change)
    }
}

/// The cluster's layout: its identity, its members, and the committed
/// version that says which nodes hold which partitions.
///
/// Two parts merge differently. The **admitted members** are a set that
/// only grows (each joining node adds itself), merged by union, and the
/// **staged changes** merge per node by [`Staged::seq`]: neither needs
/// agreement. The **committed version** (`version`, `shape`, `roles`,
/// `assignment`, `applied`) changes only by a commit that the voters of the
/// version before decided (see [`crate::decide`]), so of two layouts the
/// higher version's committed part wins, and two different committed parts
/// of one version are a bug that [`Layout::merge`] reports, never resolves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Layout {
    /// The cluster, fixed at bootstrap.
    pub cluster: ClusterId,
    /// The committed version, raised by each commit.
    pub version: u64,
    /// Node ids admitted to the cluster.
    pub members: BTreeSet<String>,
    /// The cluster's shape.
    #[serde(default)]
    pub shape: Option<Shape>,
    /// The nodes that hold data in this version, and how.
    #[serde(default)]
    pub roles: BTreeMap<String, Role>,
    /// Replica slots per partition.
    #[serde(default = "default_replicas")]
    pub replicas: u8,
    /// Which nodes hold each partition (computed from the version before
    /// when committed, see [`crate::placement`]).
    #[serde(default)]
    pub assignment: Option<Assignment>,
    /// Staged changes numbered up to this are in this version (or were
    /// dropped by it): the changes a commit took.
    #[serde(default)]
    pub applied: u64,
    /// Changes staged for the next version, by node.
    #[serde(default)]
    pub staged: BTreeMap<String, Staged>,
    /// `n_val` changes staged for the next version, by bucket: they move
    /// data, so they go through plan and commit like a node's.
    #[serde(default)]
    pub staged_n_val: BTreeMap<String, Staged<u8>>,
    /// Which commit made this version (the proposing node and its
    /// commit's number): two commits of the same changes are still two
    /// proposals, and only one of them becomes the version.
    #[serde(default)]
    pub committed_by: Option<String>,
    /// While partitions move: the assignment before the change. Its
    /// replicas keep serving reads, and a write needs its quorum from them
    /// as well as from the new ones, until every node has copied the
    /// partitions it gains and a handover version drops it.
    #[serde(default)]
    pub moving: Option<Assignment>,
    /// While partitions move: the bucket properties before the change
    /// (their `n_val` says how many of the replicas before hold a
    /// bucket's keys). `None`: the same as now.
    #[serde(default)]
    pub moving_buckets: Option<BucketTable>,
    /// Per node, the highest version whose gained partitions it has copied
    /// (not part of the committed version: gossip merges it by maximum).
    #[serde(default)]
    pub synced: BTreeMap<String, u64>,
    /// Per node, the highest version it saved with no write still in
    /// flight that it began under a version before (merged by maximum,
    /// like `synced`). A move copies only once every live member
    /// acknowledged its version: a coordinator that did not know of the
    /// move would write to the replicas before it alone, after a copy
    /// might already have passed the key (Garage's layout sync rule).
    #[serde(default)]
    pub acked: BTreeMap<String, u64>,
    /// Every bucket's properties, the cluster's (founded from the
    /// founders' configuration; `None` in a layout saved before buckets
    /// were kept, where each node's configuration still rules). Changed
    /// by a commit of their own ([`Layout::with_bucket`]), which moves no
    /// data.
    #[serde(default)]
    pub buckets: Option<BucketTable>,
    /// Tokens and certificate grants (see [`crate::access`]); `None`: no
    /// policy was ever set, and the HTTP API is open. Changed by a commit
    /// of its own ([`Layout::with_access`]), which moves no data. Left out
    /// of the encoding while `None` (the last field), so a layout without
    /// a policy keeps the bytes of builds before policies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<AccessPolicy>,
}

fn default_replicas() -> u8 {
    DEFAULT_REPLICAS
}

/// How a [`Layout::merge`] went.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Merged {
    /// Whether this layout changed.
    pub changed: bool,
    /// Set when the other layout has this one's version with another
    /// committed part: `(version, our digest, their digest)`. Ours is kept.
    pub diverged: Option<(u64, String, String)>,
}

/// Why a change cannot be staged or committed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StageError {
    /// The node never joined the cluster.
    #[error("{0} is not a member of the cluster (start it with this cluster's seeds first)")]
    NotAMember(String),
    /// The node holds nothing to take away.
    #[error("{0} holds no data in layout version {1}")]
    NoRole(String, u64),
    /// A weight out of range.
    #[error("weight {0} is out of range (1 to {MAX_WEIGHT})")]
    BadWeight(u32),
    /// A zone name too long or empty.
    #[error("a zone is 1 to {MAX_ZONE_LEN} bytes")]
    BadZone,
    /// `replace` onto a node that holds data already, or onto itself.
    #[error("{0} cannot take {1}'s place: it must be a member that holds no data")]
    BadReplacement(String, String),
    /// Nothing is staged.
    #[error("nothing is staged")]
    NothingStaged,
    /// The change would leave no node holding data.
    #[error("the change would leave no node holding data")]
    NoneLeft,
    /// The layout predates assignments (not upgraded).
    #[error("the layout has no assignment")]
    NoAssignment,
    /// No transfer is under way.
    #[error("no partitions are moving")]
    NothingMoving,
    /// Nodes still copying the partitions they gain.
    #[error("still copying partitions: {0:?}")]
    StillCopying(Vec<String>),
    /// An `n_val` that does not fit the bucket.
    #[error("bucket {0}: {1}")]
    BadNVal(String, String),
    /// An `n_val` change on a layout without bucket properties.
    #[error("this layout predates bucket properties in the layout: set any bucket's properties first (PUT /v1/buckets/{{bucket}}/props)")]
    NoBucketTable,
    /// An `n_val` change while partitions move.
    #[error("partitions are moving; commit an n_val change after the handover (see `ring-tools status`), or clear it")]
    NValWhileMoving,
}

/// Why bucket properties cannot be changed so.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BucketChangeError {
    /// Properties out of range, or too many buckets.
    #[error("{0}")]
    Invalid(String),
    /// Partitions are moving: their transfer counts on the version.
    #[error("partitions are moving; change bucket properties after the handover (see `ring-tools status`)")]
    Moving,
    /// The bucket's conflict mode is set for good.
    #[error("bucket {bucket} resolves conflicts as {}, fixed since the cluster was founded: its stored objects were merged that way (a new bucket of another mode needs bucket types, not built yet)", mode.as_str())]
    ModeFixed {
        /// The bucket.
        bucket: String,
        /// Its mode.
        mode: ConflictMode,
    },
    /// The bucket's data type is set for good.
    #[error("bucket {bucket} holds {} values: a bucket's data type is set once and then fixed (its stored states merge by it); use a new bucket", datatype.as_str())]
    DatatypeFixed {
        /// The bucket.
        bucket: String,
        /// Its type.
        datatype: crate::crdt::Datatype,
    },
    /// A direct `n_val` change would leave keys with too few or stray
    /// copies.
    #[error("bucket {bucket} has n_val {n_val}: changing it moves data, so it is staged and committed like a node's change (`ring-tools n-val {bucket} N`, then `ring-tools commit`)")]
    NValMovesData {
        /// The bucket.
        bucket: String,
        /// Its n_val.
        n_val: u8,
    },
}

/// A layout whose fields contradict each other (a bug, or forged).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid layout: {0}")]
pub struct InvalidLayout(pub String);

impl Layout {
    /// The first layout of the cluster `initial` founds with `shape`
    /// (version 1), every member in a zone of its own.
    pub fn found(initial: &BTreeSet<String>, bootstrap: impl Into<Bootstrap>) -> Self {
        let zones = initial.iter().map(|id| (id.clone(), None)).collect();
        Self::found_in_zones(&zones, bootstrap)
    }

    /// The first layout of the cluster the keys of `initial` found with
    /// `shape` (version 1): each of them holds data, in the zone it maps
    /// to, with weight 1.
    pub fn found_in_zones(
        initial: &BTreeMap<String, Option<String>>,
        bootstrap: impl Into<Bootstrap>,
    ) -> Self {
        let roles: BTreeMap<String, Role> = initial
            .iter()
            .map(|(id, zone)| {
                let role = Role {
                    zone: zone.clone(),
                    weight: 1,
                };
                (id.clone(), role)
            })
            .collect();
        Self::found_with_roles(roles, bootstrap)
    }

    /// The first layout of the cluster the keys of `roles` found (version
    /// 1), each node in its zone with its weight: what `ring-tools plan`
    /// computes for a cluster described on its command line. Weights are
    /// clamped to 1 to [`MAX_WEIGHT`].
    pub fn found_with_roles(
        mut roles: BTreeMap<String, Role>,
        bootstrap: impl Into<Bootstrap>,
    ) -> Self {
        let bootstrap = bootstrap.into();
        let shape = bootstrap.shape;
        let replicas = replicas_for(&bootstrap.buckets);
        for role in roles.values_mut() {
            role.weight = role.weight.clamp(1, MAX_WEIGHT);
        }
        let ids: BTreeSet<String> = roles.keys().cloned().collect();
        let assignment = assign(None, &candidates(&roles), shape.partitions, replicas.into());
        Self {
            cluster: ClusterId::founded_by(&ids, shape),
            version: 1,
            members: ids,
            shape: Some(shape),
            roles,
            replicas,
            assignment: Some(assignment),
            applied: 0,
            staged: BTreeMap::new(),
            staged_n_val: BTreeMap::new(),
            committed_by: None,
            moving: None,
            moving_buckets: None,
            synced: BTreeMap::new(),
            acked: BTreeMap::new(),
            buckets: Some(bootstrap.buckets),
            access: None,
        }
    }

    /// Cluster and version.
    pub fn stamp(&self) -> LayoutStamp {
        LayoutStamp {
            cluster: self.cluster.clone(),
            version: self.version,
        }
    }

    /// The shape (a layout saved before shapes were kept uses the default).
    pub fn shape(&self) -> Shape {
        self.shape.unwrap_or_default()
    }

    /// A layout saved before roles and assignments existed gets them: every
    /// admitted member holds data, in the zone `zone_of` says. Returns
    /// whether it changed. The same members and zones give the same
    /// assignment on every node.
    pub fn upgrade(&mut self, zone_of: impl Fn(&str) -> Option<String>) -> bool {
        if self.assignment.is_some() {
            return false;
        }
        if self.roles.is_empty() {
            self.roles = self
                .members
                .iter()
                .map(|id| {
                    let role = Role {
                        zone: zone_of(id),
                        weight: 1,
                    };
                    (id.clone(), role)
                })
                .collect();
        }
        let shape = self.shape();
        self.shape = Some(shape);
        let assignment = assign(
            None,
            &candidates(&self.roles),
            shape.partitions,
            self.replicas.into(),
        );
        // The data sits where the token ring put it: it moves to the
        // assignment like any other change.
        let members: Vec<crate::ring::RingMember> = self
            .roles
            .iter()
            .map(|(id, r)| crate::ring::RingMember {
                id: id.clone(),
                zone: r.zone.clone(),
            })
            .collect();
        let ring = crate::ring::Ring::by_tokens(&members, shape.partitions, shape.tokens);
        let nodes: Vec<String> = self.roles.keys().cloned().collect();
        let table = (0..shape.partitions)
            .map(|p| {
                ring.order(p)
                    .take(usize::from(self.replicas))
                    .filter_map(|id| nodes.iter().position(|n| n == id))
                    .map(|i| i as u16)
                    .collect()
            })
            .collect();
        let before = Assignment { nodes, table };
        self.moving = (before != assignment).then_some(before);
        self.assignment = Some(assignment);
        true
    }

    /// A digest of the committed part: equal on two nodes exactly when
    /// they agree on where every key lives.
    pub fn digest(&self) -> String {
        let committed = (
            &self.cluster,
            self.version,
            self.shape,
            &self.roles,
            self.replicas,
            &self.assignment,
            self.applied,
            &self.committed_by,
            &self.moving,
            &self.buckets,
            &self.moving_buckets,
        );
        // A layout without a policy digests as layouts did before
        // policies existed, so a mixed-version cluster agrees on it.
        let bytes = match &self.access {
            None => rmp_serde::to_vec(&committed),
            Some(access) => rmp_serde::to_vec(&(committed, access)),
        }
        .unwrap_or_default();
        let d = ring::digest::digest(&ring::digest::SHA256, &bytes);
        d.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Checks what a layout from the network must hold before a node uses
    /// it: a power-of-two partition count the assignment covers, and
    /// assigned nodes that have roles.
    pub fn check(&self) -> Result<(), InvalidLayout> {
        let bad = |s: &str| Err(InvalidLayout(s.to_owned()));
        let shape = self.shape();
        if !shape.partitions.is_power_of_two() || shape.partitions > MAX_PARTITIONS {
            return bad("partitions must be a power of two");
        }
        if self.replicas == 0 || usize::from(self.replicas) > crate::ring::MAX_RANKS {
            return bad("replicas out of range");
        }
        if let Some(a) = &self.assignment {
            if a.partitions() != shape.partitions {
                return bad("the assignment does not cover every partition");
            }
            if a.nodes.iter().any(|n| !self.roles.contains_key(n)) {
                return bad("a node is assigned without a role");
            }
            let nodes = a.nodes.len();
            if a.table.iter().any(|row| {
                row.len() > usize::from(self.replicas)
                    || row.iter().any(|&i| usize::from(i) >= nodes)
            }) {
                return bad("an assignment row is out of range");
            }
        }
        if let Some(m) = &self.moving {
            let nodes = m.nodes.len();
            if m.partitions() != shape.partitions
                || m.table
                    .iter()
                    .any(|row| row.iter().any(|&i| usize::from(i) >= nodes))
            {
                return bad("the assignment before the move is out of range");
            }
        }
        if self.roles.keys().any(|id| !self.members.contains(id)) {
            return bad("a node holds a role without being a member");
        }
        for b in self.buckets.iter().chain(&self.moving_buckets) {
            if let Err(e) = b.validate() {
                return Err(InvalidLayout(format!("bucket properties: {e}")));
            }
        }
        if let Some(Err(e)) = self.access.as_ref().map(AccessPolicy::validate) {
            return Err(InvalidLayout(format!("access policy: {e}")));
        }
        Ok(())
    }

    /// Admits `id`; returns whether the layout changed. Admission changes
    /// no committed version: a new member holds nothing until a commit
    /// gives it a role.
    pub fn admit(&mut self, id: &str) -> bool {
        self.members.insert(id.to_owned())
    }

    /// Merges `other` (of the same cluster) into this layout. The members
    /// are the union and the staged changes the later per node, so the
    /// result is the same whichever node merges; the committed part is the
    /// higher version's.
    pub fn merge(&mut self, other: &Self) -> Result<Merged, LayoutError> {
        if other.cluster != self.cluster {
            return Err(LayoutError::OtherCluster {
                ours: self.cluster.clone(),
                theirs: other.cluster.clone(),
            });
        }
        let mut out = Merged::default();
        if *other == *self {
            return Ok(out);
        }
        for id in &other.members {
            out.changed |= self.members.insert(id.clone());
        }
        if other.version > self.version {
            self.version = other.version;
            self.shape = other.shape;
            self.roles = other.roles.clone();
            self.replicas = other.replicas;
            self.assignment = other.assignment.clone();
            self.applied = other.applied;
            self.committed_by = other.committed_by.clone();
            self.moving = other.moving.clone();
            self.moving_buckets = other.moving_buckets.clone();
            self.buckets = other.buckets.clone();
            self.access = other.access.clone();
            out.changed = true;
        } else if other.version == self.version {
            let (ours, theirs) = (self.digest(), other.digest());
            if ours != theirs {
                out.diverged = Some((self.version, ours, theirs));
            }
        }
        for (id, &v) in &other.synced {
            out.changed |= raise(&mut self.synced, id, v);
        }
        for (id, &v) in &other.acked {
            out.changed |= raise(&mut self.acked, id, v);
        }
        for (id, staged) in &other.staged {
            let newer = self.staged.get(id).is_none_or(|s| staged.wins_over(s));
            if newer && staged.seq > self.applied {
                self.staged.insert(id.clone(), staged.clone());
                out.changed = true;
            }
        }
        for (bucket, staged) in &other.staged_n_val {
            let newer = self
                .staged_n_val
                .get(bucket)
                .is_none_or(|s| staged.wins_over(s));
            if newer && staged.seq > self.applied {
                self.staged_n_val.insert(bucket.clone(), staged.clone());
                out.changed = true;
            }
        }
        let applied = self.applied;
        let before = self.staged.len() + self.staged_n_val.len();
        self.staged.retain(|_, s| s.seq > applied);
        self.staged_n_val.retain(|_, s| s.seq > applied);
        out.changed |= self.staged.len() + self.staged_n_val.len() != before;
        Ok(out)
    }

    /// Stages `change` for `node`, on behalf of `by`.
    pub fn stage(&mut self, by: &str, node: &str, change: Change) -> Result<(), StageError> {
        match &change {
            Change::Set(role) => {
                if !self.members.contains(node) {
                    return Err(StageError::NotAMember(node.to_owned()));
                }
                if !(1..=MAX_WEIGHT).contains(&role.weight) {
                    return Err(StageError::BadWeight(role.weight));
                }
                if role
                    .zone
                    .as_ref()
                    .is_some_and(|z| z.is_empty() || z.len() > MAX_ZONE_LEN)
                {
                    return Err(StageError::BadZone);
                }
            }
            Change::Remove => {
                if !self.roles.contains_key(node) {
                    return Err(StageError::NoRole(node.to_owned(), self.version));
                }
            }
            Change::ReplaceBy(new) => {
                if !self.roles.contains_key(node) {
                    return Err(StageError::NoRole(node.to_owned(), self.version));
                }
                if new == node || !self.members.contains(new) || self.roles.contains_key(new) {
                    return Err(StageError::BadReplacement(new.clone(), node.to_owned()));
                }
            }
            Change::Keep => {}
        }
        let staged = Staged {
            seq: self.next_seq(),
            by: by.to_owned(),
            change,
        };
        self.staged.insert(node.to_owned(), staged);
        Ok(())
    }

    /// Stages `n_val` for the named `bucket`, on behalf of `by` (its
    /// current `n_val` undoes a staged change). Its quorum values must fit
    /// the new `n_val`.
    pub fn stage_n_val(&mut self, by: &str, bucket: &str, n_val: u8) -> Result<(), StageError> {
        let Some(table) = &self.buckets else {
            return Err(StageError::NoBucketTable);
        };
        let mut props = table.props(bucket);
        props.n_val = n_val;
        props
            .validate()
            .map_err(|e| StageError::BadNVal(bucket.to_owned(), e.0))?;
        let staged = Staged {
            seq: self.next_seq(),
            by: by.to_owned(),
            change: n_val,
        };
        self.staged_n_val.insert(bucket.to_owned(), staged);
        Ok(())
    }

    /// The number a change staged now gets: above every one seen.
    fn next_seq(&self) -> u64 {
        self.staged
            .values()
            .map(|s| s.seq)
            .chain(self.staged_n_val.values().map(|s| s.seq))
            .max()
            .unwrap_or(0)
            .max(self.applied)
            .saturating_add(1)
    }

    /// The staged `n_val` changes that change something: bucket, from, to.
    pub fn n_val_changes(&self) -> Vec<(String, u8, u8)> {
        let Some(table) = &self.buckets else {
            return Vec::new();
        };
        self.staged_n_val
            .iter()
            .filter(|(_, s)| s.seq > self.applied)
            .map(|(b, s)| (b.clone(), table.props(b).n_val, s.change))
            .filter(|(_, from, to)| from != to)
            .collect()
    }

    /// The committed version that committing the staged changes makes: the
    /// next version, its roles, and an assignment that moves only what the
    /// changes need. Staged changes are gone from it.
    pub fn next(&self) -> Result<Self, StageError> {
        let Some(previous) = &self.assignment else {
            return Err(StageError::NoAssignment);
        };
        let effective: Vec<(&String, &Change)> = self
            .staged
            .iter()
            .filter(|(_, s)| s.seq > self.applied && s.change != Change::Keep)
            .map(|(id, s)| (id, &s.change))
            .collect();
        let n_vals = self.n_val_changes();
        if effective.is_empty() && n_vals.is_empty() {
            return Err(StageError::NothingStaged);
        }
        if !n_vals.is_empty() && self.moving.is_some() {
            return Err(StageError::NValWhileMoving);
        }
        let mut buckets = self.buckets.clone();
        if let Some(table) = &mut buckets {
            for (bucket, _, n_val) in &n_vals {
                let props = table.props(bucket);
                table.named.insert(
                    bucket.clone(),
                    crate::BucketProps {
                        n_val: *n_val,
                        ..props
                    },
                );
            }
            table
                .validate()
                .map_err(|e| StageError::BadNVal(String::new(), e.0))?;
        }
        // Every rank a bucket keeps copies on is assigned (and so copied
        // when it changes hands).
        let replicas = buckets.as_ref().map_or(self.replicas, replicas_for);
        let mut roles = self.roles.clone();
        let original = previous;
        let mut previous = previous.clone();
        for (id, change) in effective {
            match change {
                Change::Set(role) => {
                    roles.insert(id.clone(), role.clone());
                }
                Change::Remove => {
                    roles.remove(id);
                }
                Change::ReplaceBy(new) => {
                    // Checked when staged, but another change staged since
                    // may have given `new` a place (two replacements by
                    // one node would put it twice in a partition).
                    if roles.contains_key(new) || previous.nodes.contains(new) {
                        return Err(StageError::BadReplacement(new.clone(), id.clone()));
                    }
                    if let Some(role) = roles.remove(id) {
                        roles.insert(new.clone(), role);
                        previous.rename(id, new);
                    }
                }
                Change::Keep => {}
            }
        }
        if roles.is_empty() {
            return Err(StageError::NoneLeft);
        }
        let shape = self.shape();
        let assignment = assign(
            Some(&previous),
            &candidates(&roles),
            shape.partitions,
            replicas.into(),
        );
        let applied = self
            .staged
            .values()
            .map(|s| s.seq)
            .chain(self.staged_n_val.values().map(|s| s.seq))
            .max()
            .unwrap_or(0);
        // Reads stay with the replicas that surely hold the data: those
        // before this change, or, mid-transfer, those before the last.
        let (moving, moving_buckets) = match &self.moving {
            Some(m) => (Some(m.clone()), self.moving_buckets.clone()),
            None if assignment != *original || !n_vals.is_empty() => {
                (Some(original.clone()), self.buckets.clone())
            }
            None => (None, None),
        };
        Ok(Self {
            cluster: self.cluster.clone(),
            version: self.version.saturating_add(1),
            members: self.members.clone(),
            shape: Some(shape),
            roles,
            replicas,
            assignment: Some(assignment),
            applied: applied.max(self.applied),
            staged: BTreeMap::new(),
            staged_n_val: BTreeMap::new(),
            committed_by: None,
            moving,
            moving_buckets,
            synced: self.synced.clone(),
            acked: self.acked.clone(),
            buckets,
            access: self.access.clone(),
        })
    }

    /// The version that gives `bucket` the properties `props`, over
    /// `current` (the table in force: this layout's, or the node's
    /// configuration for a layout that holds none). It moves no data, so
    /// it changes nothing else, and only the quorum defaults may change: a
    /// bucket's conflict mode and `n_val` are its own or the defaults'
    /// since the cluster was founded (any bucket may already hold objects
    /// merged and placed by them).
    pub fn with_bucket(
        &self,
        current: &BucketTable,
        bucket: &str,
        props: BucketProps,
    ) -> Result<Self, BucketChangeError> {
        props
            .validate()
            .map_err(|e| BucketChangeError::Invalid(e.0))?;
        if self.moving.is_some() {
            return Err(BucketChangeError::Moving);
        }
        let was = current.props(bucket);
        if was.conflict_mode != props.conflict_mode {
            return Err(BucketChangeError::ModeFixed {
                bucket: bucket.to_owned(),
                mode: was.conflict_mode,
            });
        }
        if let Some(datatype) = was.datatype.filter(|&t| props.datatype != Some(t)) {
            return Err(BucketChangeError::DatatypeFixed {
                bucket: bucket.to_owned(),
                datatype,
            });
        }
        if was.n_val != props.n_val {
            return Err(BucketChangeError::NValMovesData {
                bucket: bucket.to_owned(),
                n_val: was.n_val,
            });
        }
        let mut table = current.clone();
        table.named.insert(bucket.to_owned(), props);
        table
            .validate()
            .map_err(|e| BucketChangeError::Invalid(e.0))?;
        Ok(Self {
            version: self.version.saturating_add(1),
            committed_by: None,
            buckets: Some(table),
            ..self.clone()
        })
    }

    /// The version that makes `change` to the access policy. It moves no
    /// data and may be committed while partitions move.
    pub fn with_access(&self, change: &AccessChange) -> Result<Self, PolicyError> {
        let current = self.access.clone().unwrap_or_default();
        let access = current.apply(change)?;
        Ok(Self {
            version: self.version.saturating_add(1),
            committed_by: None,
            // An empty policy is none: the layout's encoding is then the
            // one earlier builds read.
            access: (!access.is_empty()).then_some(access),
            ..self.clone()
        })
    }

    /// What `node` holds in this version but did not before the transfer
    /// under way: per partition, the buckets it must copy from the
    /// replicas before. A bucket's keys are on the first `n_val` of a
    /// partition's replicas, so a node gains a bucket where its rank now
    /// is within the bucket's `n_val` and its rank before was not.
    pub fn gains(&self, node: &str) -> BTreeMap<u32, Scope> {
        let (Some(now), Some(before)) = (&self.assignment, &self.moving) else {
            return BTreeMap::new();
        };
        let table_now = self.buckets.as_ref();
        let table_before = self.moving_buckets.as_ref().or(table_now);
        // Without a table (a layout from before buckets were kept), every
        // assigned rank counts.
        let n_of = |t: Option<&BucketTable>, b: Option<&str>| {
            t.map_or(usize::MAX, |t| {
                usize::from(b.map_or(t.defaults, |b| t.props(b)).n_val)
            })
        };
        let named: BTreeSet<&str> = table_now
            .iter()
            .chain(table_before.iter())
            .flat_map(|t| t.named.keys())
            .map(String::as_str)
            .collect();
        let mut out = BTreeMap::new();
        for p in 0..now.partitions() {
            let Some(rank) = now.replicas(p).position(|id| id == node) else {
                continue;
            };
            let was = before.replicas(p).position(|id| id == node);
            let gained = |b: Option<&str>| {
                rank < n_of(table_now, b) && was.is_none_or(|r| r >= n_of(table_before, b))
            };
            let scope = if gained(None) {
                Scope::AllBut(
                    named
                        .iter()
                        .filter(|b| !gained(Some(b)))
                        .map(|b| b.to_string())
                        .collect(),
                )
            } else {
                Scope::Only(
                    named
                        .iter()
                        .filter(|b| gained(Some(b)))
                        .map(|b| b.to_string())
                        .collect(),
                )
            };
            if !scope.is_empty() {
                out.insert(p, scope);
            }
        }
        out
    }

    /// The nodes still copying partitions for this version.
    pub fn copying(&self) -> Vec<String> {
        let Some(now) = &self.assignment else {
            return Vec::new();
        };
        if self.moving.is_none() {
            return Vec::new();
        }
        now.nodes
            .iter()
            .filter(|id| self.synced.get(*id).copied().unwrap_or(0) < self.version)
            .filter(|id| !self.gains(id).is_empty())
            .cloned()
            .collect()
    }

    /// Records that `node` copied every partition it gains in `version`.
    pub fn mark_synced(&mut self, node: &str, version: u64) -> bool {
        raise(&mut self.synced, node, version)
    }

    /// Records that `node` saved `version` and finished every write it
    /// began under a version before.
    pub fn mark_acked(&mut self, node: &str, version: u64) -> bool {
        raise(&mut self.acked, node, version)
    }

    /// The members that have not acknowledged this version, of those
    /// `counted` (the live ones: a node that is down coordinates nothing).
    pub fn unacked(&self, counted: impl Fn(&str) -> bool) -> Vec<String> {
        self.members
            .iter()
            .filter(|id| counted(id))
            .filter(|id| self.acked.get(*id).copied().unwrap_or(0) < self.version)
            .cloned()
            .collect()
    }

    /// The version that ends the transfer under way, once every new
    /// replica has copied its partitions: the same assignment, with reads
    /// moving to it and the replicas before released.
    pub fn handover(&self) -> Result<Self, StageError> {
        if self.moving.is_none() {
            return Err(StageError::NothingMoving);
        }
        let copying = self.copying();
        if !copying.is_empty() {
            return Err(StageError::StillCopying(copying));
        }
        Ok(Self {
            version: self.version.saturating_add(1),
            staged: BTreeMap::new(),
            staged_n_val: BTreeMap::new(),
            committed_by: None,
            moving: None,
            moving_buckets: None,
            ..self.clone()
        })
    }

    /// What committing the staged changes would do.
    pub fn plan(&self) -> Result<Plan, StageError> {
        let next = self.next()?;
        let (Some(before), Some(after)) = (&self.assignment, &next.assignment) else {
            return Err(StageError::NoAssignment);
        };
        let loads = |a: &Assignment| {
            a.loads()
                .into_iter()
                .map(|(id, n)| (id.to_owned(), n))
                .collect()
        };
        Ok(Plan {
            from: self.version,
            to: next.version,
            changes: self
                .staged
                .iter()
                .filter(|(_, s)| s.seq > self.applied && s.change != Change::Keep)
                .map(|(id, s)| (id.clone(), s.change.clone()))
                .collect(),
            n_vals: self.n_val_changes(),
            bucket_copies: next
                .roles
                .keys()
                .flat_map(|id| {
                    next.gains(id)
                        .into_iter()
                        .filter(|(_, scope)| *scope != Scope::default())
                        .map(move |(p, scope)| (p, id.clone(), scope))
                })
                .collect(),
            slots: before.table.iter().map(Vec::len).sum(),
            moved: after.moved_from(before),
            transfers: before.transfers(after),
            loads_before: loads(before),
            loads_after: loads(after),
            next,
        })
    }
}

/// Which buckets of a partition a node copies when it gains it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Every bucket but these.
    AllBut(BTreeSet<String>),
    /// These buckets only.
    Only(BTreeSet<String>),
}

impl Default for Scope {
    fn default() -> Self {
        Self::AllBut(BTreeSet::new())
    }
}

impl Scope {
    /// Whether the scope takes `bucket`'s keys.
    pub fn covers(&self, bucket: &str) -> bool {
        match self {
            Self::AllBut(not) => !not.contains(bucket),
            Self::Only(only) => only.contains(bucket),
        }
    }

    /// Whether it takes no bucket at all.
    pub fn is_empty(&self) -> bool {
        matches!(self, Self::Only(only) if only.is_empty())
    }
}

/// Replica slots per partition for a bucket table: its largest `n_val`,
/// so every rank any bucket keeps copies on is assigned.
fn replicas_for(table: &BucketTable) -> u8 {
    table.max_n_val().clamp(1, crate::ring::MAX_RANKS as u8)
}

/// Raises `map[node]` to `version`; whether it rose.
fn raise(map: &mut BTreeMap<String, u64>, node: &str, version: u64) -> bool {
    let v = map.entry(node.to_owned()).or_default();
    if version > *v {
        *v = version;
        true
    } else {
        false
    }
}

/// What a commit of the staged changes would do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// The version the changes were staged against.
    pub from: u64,
    /// The version a commit makes.
    pub to: u64,
    /// The staged changes, by node.
    pub changes: BTreeMap<String, Change>,
    /// The staged `n_val` changes: bucket, from, to.
    pub n_vals: Vec<(String, u8, u8)>,
    /// Copies of some buckets only (an `n_val` change): partition, the
    /// node that copies, the buckets.
    pub bucket_copies: Vec<(u32, String, Scope)>,
    /// Replica slots (partitions × replicas).
    pub slots: usize,
    /// Slots whose owner changes: the replicas to copy.
    pub moved: usize,
    /// The partitions that change hands.
    pub transfers: Vec<Transfer>,
    /// Slots per node now.
    pub loads_before: BTreeMap<String, usize>,
    /// Slots per node after the commit.
    pub loads_after: BTreeMap<String, usize>,
    /// The layout a commit proposes.
    #[serde(skip)]
    pub next: Layout,
}

/// The placement candidates of a version's roles.
fn candidates(roles: &BTreeMap<String, Role>) -> Vec<Candidate> {
    roles
        .iter()
        .map(|(id, role)| Candidate {
            id: id.clone(),
            zone: role.zone.clone(),
            weight: role.weight,
        })
        .collect()
}

#[cfg(test)]
mod tests;
