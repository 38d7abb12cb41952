//! `ring-tools locate`: where a key lives, computed as a node computes it
//! (core's key hash, partition and [`Ring::build`] of the layout, the
//! bucket's `n_val` from the layout's bucket table).

use std::fmt::Write as _;

use quorra_core::hash::key_hash;
use quorra_core::layout::Layout;
use quorra_core::ring::Ring;
use serde::Serialize;

/// A key's place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Location {
    /// The bucket.
    pub bucket: String,
    /// The key.
    pub key: String,
    /// The key's 64-bit hash, in hex.
    pub hash: String,
    /// Its partition.
    pub partition: u32,
    /// Its replicas, first (the coordinator a token-aware client picks)
    /// first.
    pub preference_list: Vec<String>,
    /// The nodes that take its writes when replicas are down, nearest
    /// first.
    pub fallbacks: Vec<String>,
}

/// Where `bucket/key` lives on `ring`, a ring of `layout`.
pub fn locate(layout: &Layout, ring: &Ring, bucket: &str, key: &str) -> Location {
    let n = crate::describe::n_val_for(layout, Some(bucket));
    let (partition, preference_list, fallbacks) = ring.locate(bucket.as_bytes(), key.as_bytes(), n);
    let owned = |v: Vec<&str>| v.into_iter().map(str::to_owned).collect();
    Location {
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        hash: format!("{:016x}", key_hash(bucket.as_bytes(), key.as_bytes())),
        partition,
        preference_list: owned(preference_list),
        fallbacks: owned(fallbacks),
    }
}

impl Location {
    /// The location as text.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "bucket={} key={} hash={} partition={}",
            self.bucket, self.key, self.hash, self.partition
        );
        let _ = writeln!(out, "preference list: {}", self.preference_list.join(" "));
        let fallbacks = if self.fallbacks.is_empty() {
            "none (every node is a replica)".to_owned()
        } else {
            self.fallbacks.join(" ")
        };
        let _ = writeln!(out, "fallbacks: {fallbacks}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::describe::{found, numbered, Params};

    #[test]
    fn a_key_has_n_val_replicas_then_every_other_node() {
        let layout = found(&numbered(1, 5), Params::default()).expect("layout");
        let ring = Ring::build(&layout);
        let l = locate(&layout, &ring, "users", "alice");
        assert_eq!(l.preference_list.len(), 3);
        assert_eq!(l.fallbacks.len(), 2);
        assert_eq!(
            l.partition,
            quorra_core::hash::partition_of(key_hash(b"users", b"alice"), 256)
        );
        let mut all: Vec<&String> = l.preference_list.iter().chain(&l.fallbacks).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 5, "replicas and fallbacks are distinct nodes");
    }
}
