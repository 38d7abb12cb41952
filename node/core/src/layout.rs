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

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Bytes of the hash kept in a cluster id.
const ID_BYTES: usize = 16;

/// A cluster's identity: 32 hex digits, derived from the initial member list.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClusterId(String);

impl ClusterId {
    /// The id of the cluster founded by `initial` (order and duplicates do
    /// not matter) with `shape`: founders configured with another shape
    /// would found another cluster, so they never agree to found one.
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
pub struct Shape {
    /// Partitions of the key space (a power of two).
    pub partitions: u32,
    /// Tokens per node on the ring.
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

/// The cluster's layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    /// The cluster, fixed at bootstrap.
    pub cluster: ClusterId,
    /// Raised on every change.
    pub version: u64,
    /// Node ids admitted to the cluster.
    pub members: BTreeSet<String>,
    /// The cluster's shape (absent in layouts saved before it was kept:
    /// those clusters use each node's configuration, as they always did).
    #[serde(default)]
    pub shape: Option<Shape>,
}

impl Layout {
    /// The first layout of the cluster `initial` founds with `shape`
    /// (version 1).
    pub fn found(initial: &BTreeSet<String>, shape: Shape) -> Self {
        Self {
            cluster: ClusterId::founded_by(initial, shape),
            version: 1,
            members: initial.clone(),
            shape: Some(shape),
        }
    }

    /// Cluster and version.
    pub fn stamp(&self) -> LayoutStamp {
        LayoutStamp {
            cluster: self.cluster.clone(),
            version: self.version,
        }
    }

    /// Admits `id`; returns whether the layout changed.
    pub fn admit(&mut self, id: &str) -> bool {
        if self.members.contains(id) {
            return false;
        }
        self.members.insert(id.to_owned());
        self.version = self.version.saturating_add(1);
        true
    }

    /// Merges `other` (of the same cluster) into this layout; returns
    /// whether it changed. The members are the union; the version is the
    /// higher one, or one above both when the union is new to both, so the
    /// result is the same whichever node merges (a node that has both
    /// versions' members agrees with one that merged them the other way
    /// round). Versions saturate: a forged `u64::MAX` stops raising the
    /// version, never the union.
    pub fn merge(&mut self, other: &Self) -> Result<bool, LayoutError> {
        if other.cluster != self.cluster {
            return Err(LayoutError::OtherCluster {
                ours: self.cluster.clone(),
                theirs: other.cluster.clone(),
            });
        }
        if *other == *self {
            return Ok(false);
        }
        let union: BTreeSet<String> = self.members.union(&other.members).cloned().collect();
        let version = if union == other.members && union == self.members {
            self.version.max(other.version)
        } else if union == other.members && other.version >= self.version {
            other.version
        } else if union == self.members && self.version >= other.version {
            self.version
        } else {
            self.version.max(other.version).saturating_add(1)
        };
        // The shape is fixed at founding (and part of the id); a legacy
        // layout without one learns it from a member that has it.
        let shape = self.shape.or(other.shape);
        let changed = version != self.version || union != self.members || shape != self.shape;
        self.version = version;
        self.members = union;
        self.shape = shape;
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ids(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_id_depends_on_the_member_set_only() {
        let a = ClusterId::founded_by(&ids(&["n1", "n2", "n3"]), Shape::default());
        let b = ClusterId::founded_by(
            &["n3".to_string(), "n1".into(), "n2".into(), "n1".into()],
            Shape::default(),
        );
        assert_eq!(a, b);
        assert_ne!(
            a,
            ClusterId::founded_by(&ids(&["n1", "n2"]), Shape::default())
        );
        assert_ne!(
            ClusterId::founded_by(&ids(&["ab", "c"]), Shape::default()),
            ClusterId::founded_by(&ids(&["a", "bc"]), Shape::default())
        );
        assert_eq!(a.as_str().len(), 32);
        let other_shape = Shape {
            partitions: 128,
            ..Shape::default()
        };
        assert_ne!(
            a,
            ClusterId::founded_by(&ids(&["n1", "n2", "n3"]), other_shape)
        );
    }

    #[test]
    fn ids_from_the_network_are_checked() {
        assert!(ClusterId::try_from("0".repeat(32)).is_ok());
        assert_eq!(ClusterId::try_from("x".repeat(32)), Err(LayoutError::BadId));
        assert_eq!(ClusterId::try_from("0".repeat(33)), Err(LayoutError::BadId));
        let bytes = rmp_serde::to_vec(&"zz".repeat(16)).expect("encode");
        assert!(rmp_serde::from_slice::<ClusterId>(&bytes).is_err());
    }

    #[test]
    fn layouts_of_other_clusters_do_not_merge() {
        let mut a = Layout::found(&ids(&["n1"]), Shape::default());
        let b = Layout::found(&ids(&["n2"]), Shape::default());
        assert!(matches!(a.merge(&b), Err(LayoutError::OtherCluster { .. })));
        assert_eq!(a, Layout::found(&ids(&["n1"]), Shape::default()));
    }

    #[test]
    fn a_saturated_version_still_merges_members() {
        let mut a = Layout::found(&ids(&["n1"]), Shape::default());
        let mut b = a.clone();
        b.version = u64::MAX;
        b.admit("n2");
        assert_eq!(b.version, u64::MAX);
        a.admit("n3");
        assert_eq!(a.merge(&b), Ok(true));
        assert_eq!(a.members, ids(&["n1", "n2", "n3"]));
        assert_eq!(a.version, u64::MAX);
    }

    fn layout() -> impl Strategy<Value = Layout> {
        (
            0u64..6,
            proptest::collection::btree_set(prop_oneof!["n1", "n2", "n3", "n4", "n5"], 0..5),
        )
            .prop_map(|(version, extra)| {
                let mut l = Layout::found(&ids(&["n1"]), Shape::default());
                l.version = version;
                l.members.extend(extra);
                l
            })
    }

    proptest! {
        /// Merging is commutative and idempotent, and keeps every member
        /// either side had: no join is ever lost.
        #[test]
        fn merge_is_a_union_whoever_merges(a in layout(), b in layout()) {
            let mut ab = a.clone();
            ab.merge(&b).expect("same cluster");
            let mut ba = b.clone();
            ba.merge(&a).expect("same cluster");
            prop_assert_eq!(&ab, &ba);
            prop_assert!(ab.members.is_superset(&a.members));
            prop_assert!(ab.members.is_superset(&b.members));
            prop_assert!(ab.version >= a.version.max(b.version));
            let again = ab.clone();
            prop_assert_eq!(ab.merge(&again), Ok(false));
            prop_assert_eq!(ab.merge(&a), Ok(false));
        }
    }
}
