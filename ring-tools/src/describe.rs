//! A cluster described on the command line, turned into core's
//! [`Layout`]: the offline commands (`plan`, `simulate`, `locate`, `draw`)
//! then compute on exactly the structure a node routes by, never on a copy
//! of its placement rules.
//!
//! `--nodes` is either a count (`5`: nodes `n1` to `n5`) or a list of
//! `ID[@ZONE][:WEIGHT]`; `--zones a,b,c` puts the nodes that name no zone
//! into those zones in turn.

use std::collections::BTreeMap;

use quorra_core::bucket::{BucketProps, BucketTable};
use quorra_core::layout::{Bootstrap, Layout, Role, Shape, MAX_PARTITIONS, MAX_WEIGHT};
use quorra_core::ring::{DEFAULT_TOKENS, MAX_RANKS};
use thiserror::Error;

/// The most nodes a description may have.
pub const MAX_NODES: usize = 1_000;

/// A description that cannot be a cluster.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DescribeError {
    /// `--nodes` is empty or unreadable.
    #[error("--nodes: {0}")]
    Nodes(String),
    /// The partition count is not a power of two in range.
    #[error("--partitions must be a power of two from 1 to {MAX_PARTITIONS}, got {0}")]
    Partitions(u32),
    /// `n` is out of range.
    #[error("--n must be 1 to {MAX_RANKS}, got {0}")]
    NVal(u8),
    /// A node is named twice.
    #[error("node {0} is named twice")]
    Duplicate(String),
    /// A node to remove is not in the cluster.
    #[error("node {0} is not in the cluster")]
    Unknown(String),
}

/// One node of a description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    /// Its id.
    pub id: String,
    /// Its zone, if named.
    pub zone: Option<String>,
    /// Its weight.
    pub weight: u32,
}

/// Parses `--nodes`: a count, or `ID[@ZONE][:WEIGHT],...`.
pub fn parse_nodes(spec: &str) -> Result<Vec<NodeSpec>, DescribeError> {
    let spec = spec.trim();
    if let Ok(count) = spec.parse::<usize>() {
        if !(1..=MAX_NODES).contains(&count) {
            return Err(DescribeError::Nodes(format!(
                "a count is 1 to {MAX_NODES}, got {count}"
            )));
        }
        return Ok(numbered(1, count));
    }
    let mut out: Vec<NodeSpec> = Vec::new();
    for item in spec.split(',').map(str::trim) {
        let (rest, weight) = match item.rsplit_once(':') {
            Some((rest, w)) => {
                let w: u32 = w.parse().map_err(|_| {
                    DescribeError::Nodes(format!("{item:?}: the weight after ':' is a number"))
                })?;
                if !(1..=MAX_WEIGHT).contains(&w) {
                    return Err(DescribeError::Nodes(format!(
                        "{item:?}: a weight is 1 to {MAX_WEIGHT}"
                    )));
                }
                (rest, w)
            }
            None => (item, 1),
        };
        let (id, zone) = match rest.split_once('@') {
            Some((id, zone)) if !zone.is_empty() => (id, Some(zone.to_owned())),
            Some(_) => return Err(DescribeError::Nodes(format!("{item:?}: empty zone"))),
            None => (rest, None),
        };
        if id.is_empty() || id.len() > 64 || id.contains(char::is_whitespace) {
            return Err(DescribeError::Nodes(format!(
                "{item:?}: a node id is 1 to 64 characters without spaces"
            )));
        }
        if out.iter().any(|n| n.id == id) {
            return Err(DescribeError::Duplicate(id.to_owned()));
        }
        out.push(NodeSpec {
            id: id.to_owned(),
            zone,
            weight,
        });
    }
    if out.len() > MAX_NODES {
        return Err(DescribeError::Nodes(format!("at most {MAX_NODES} nodes")));
    }
    Ok(out)
}

/// Nodes `n{first}` .. `n{first + count - 1}`, weight 1, no zone.
pub fn numbered(first: usize, count: usize) -> Vec<NodeSpec> {
    (first..first + count)
        .map(|i| NodeSpec {
            id: format!("n{i}"),
            zone: None,
            weight: 1,
        })
        .collect()
}

/// Puts the nodes that name no zone into `zones` in turn, continuing the
/// rotation after `offset` nodes already placed that way; returns the new
/// offset.
pub fn spread_zones(nodes: &mut [NodeSpec], zones: &[String], offset: usize) -> usize {
    if zones.is_empty() {
        return offset;
    }
    let mut next = offset;
    for n in nodes.iter_mut().filter(|n| n.zone.is_none()) {
        n.zone = Some(zones[next % zones.len()].clone());
        next += 1;
    }
    next
}

/// The cluster's shape and replication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// Partitions (a power of two).
    pub partitions: u32,
    /// Replicas of each key (the default bucket's `n_val`).
    pub n_val: u8,
    /// Tokens per node (they pick the fallbacks).
    pub tokens: u16,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            partitions: Shape::default().partitions,
            n_val: quorra_core::layout::DEFAULT_REPLICAS,
            tokens: DEFAULT_TOKENS,
        }
    }
}

impl Params {
    /// Checks the ranges a node would refuse.
    pub fn check(&self) -> Result<(), DescribeError> {
        if !self.partitions.is_power_of_two() || self.partitions > MAX_PARTITIONS {
            return Err(DescribeError::Partitions(self.partitions));
        }
        if !(1..=MAX_RANKS as u8).contains(&self.n_val) {
            return Err(DescribeError::NVal(self.n_val));
        }
        Ok(())
    }
}

/// The layout a cluster of `nodes` founds with `params`: version 1, as a
/// node computes it.
pub fn found(nodes: &[NodeSpec], params: Params) -> Result<Layout, DescribeError> {
    params.check()?;
    if nodes.is_empty() {
        return Err(DescribeError::Nodes("no nodes".into()));
    }
    let mut roles = BTreeMap::new();
    for n in nodes {
        let role = Role {
            zone: n.zone.clone(),
            weight: n.weight,
        };
        if roles.insert(n.id.clone(), role).is_some() {
            return Err(DescribeError::Duplicate(n.id.clone()));
        }
    }
    let d = BucketProps::default();
    let defaults = BucketProps {
        n_val: params.n_val,
        r: d.r.min(params.n_val),
        w: d.w.min(params.n_val),
        ..d
    };
    let bootstrap = Bootstrap {
        shape: Shape {
            partitions: params.partitions,
            tokens: params.tokens,
        },
        buckets: BucketTable {
            defaults,
            named: BTreeMap::new(),
        },
    };
    Ok(Layout::found_with_roles(roles, bootstrap))
}

/// The default bucket's `n_val` of a layout (what a key without a named
/// bucket gets).
pub fn n_val_of(layout: &Layout) -> usize {
    n_val_for(layout, None)
}

/// The `n_val` of `bucket` (none: the defaults) in a layout's bucket
/// table; a layout from before tables were kept uses its replica count.
pub fn n_val_for(layout: &Layout, bucket: Option<&str>) -> usize {
    layout
        .buckets
        .as_ref()
        .map_or(usize::from(layout.replicas), |t| {
            usize::from(bucket.map_or(t.defaults, |b| t.props(b)).n_val)
        })
}

/// The zone of every node holding data (a node without one is its own).
pub fn zones_of(layout: &Layout) -> BTreeMap<&str, String> {
    layout
        .roles
        .iter()
        .map(|(id, r)| {
            let zone = r.zone.clone().unwrap_or_else(|| format!("({id})"));
            (id.as_str(), zone)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_names_the_nodes() {
        let nodes = parse_nodes("3").expect("count");
        let ids: Vec<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(ids, ["n1", "n2", "n3"]);
    }

    #[test]
    fn a_list_names_zones_and_weights() {
        let nodes = parse_nodes("a@z1:2, b@z2, c:3").expect("list");
        assert_eq!(nodes[0].zone.as_deref(), Some("z1"));
        assert_eq!(nodes[0].weight, 2);
        assert_eq!(nodes[1].weight, 1);
        assert_eq!(nodes[2].zone, None);
        assert_eq!(nodes[2].weight, 3);
    }

    #[test]
    fn bad_lists_are_refused_with_the_reason() {
        for bad in ["", "a,a", "a:0", "a:x", "a@", "0", "1001"] {
            assert!(parse_nodes(bad).is_err(), "{bad:?} was taken");
        }
    }

    #[test]
    fn zones_go_round_robin_to_nodes_without_one() {
        let mut nodes = parse_nodes("a,b@own,c,d").expect("list");
        let next = spread_zones(&mut nodes, &["x".into(), "y".into()], 0);
        let zones: Vec<&str> = nodes.iter().filter_map(|n| n.zone.as_deref()).collect();
        assert_eq!(zones, ["x", "own", "y", "x"]);
        assert_eq!(next, 3);
    }

    #[test]
    fn a_founded_layout_has_every_node_and_the_shape() {
        let params = Params {
            partitions: 64,
            n_val: 3,
            tokens: 16,
        };
        let layout = found(&numbered(1, 4), params).expect("layout");
        assert_eq!(layout.roles.len(), 4);
        assert_eq!(layout.shape().partitions, 64);
        assert_eq!(n_val_of(&layout), 3);
        assert!(layout.check().is_ok());
        let bad = Params {
            partitions: 48,
            ..params
        };
        assert_eq!(
            found(&numbered(1, 4), bad).unwrap_err(),
            DescribeError::Partitions(48)
        );
    }
}
