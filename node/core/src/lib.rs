//! Quorra's pure core: the distributed-systems logic with no I/O in it.
//!
//! Nothing in this crate touches a socket, a disk, a clock or a runtime: time
//! and randomness are passed in, so every rule here is tested with plain
//! `#[test]`s and property tests.
//!
//! # Layout
//!
//! - [`auth`]: certificate roles and the one permission check.
//! - [`version`]: causal versions, dotted version vectors (DVV sets), siblings,
//!   tombstones and the merge rules.
//! - [`crdt`]: data types (counters, sets, maps, registers, flags) for
//!   data-type buckets, carried as the values of DVV writes.
//! - [`merge`]: the one merge trait of DVV objects and CRDT states.
//! - [`context`]: the opaque causal context handed to clients, and its codec.
//! - [`bucket`]: bucket and key names, bucket properties, request limits.
//! - [`hash`]: the stable, seed-fixed key hash and partition function.
//! - [`hashtree`]: per-partition hash trees for anti-entropy (not wired
//!   to the node yet).
//! - [`ring`]: tokens, partitions and preference lists.
//! - [`layout`]: the cluster's identity and layout (its members, version).
//! - [`membership`]: SWIM-style gossip and failure detection, and how a
//!   cluster is founded and joined.
//! - [`quorum`]: replica choice (sloppy quorum) and quorum counting.
//! - [`round`]: one request's round over its replicas (what to send, when
//!   to answer, what to repair), driven by the node and by the simulator.
//! - [`proto`]: the messages nodes exchange.
//! - [`write`]: what a replica does to its stored copy: a client write
//!   as coordinator, a replica's merge (shared with the simulator's disk).
//! - [`error`]: stable error codes shared by the server and the client.

pub mod access;
pub mod auth;
pub mod bucket;
pub mod context;
pub mod crdt;
pub mod decide;
pub mod error;
pub mod hash;
pub mod hashtree;
pub mod layout;
pub mod membership;
pub mod merge;
pub mod node;
pub mod placement;
pub mod proto;
pub mod quorum;
pub mod ring;
pub mod round;
pub mod version;
pub mod write;

pub use bucket::{BucketName, BucketProps, ConflictMode, Key, Limits, QuorumOverrides};
pub use context::CausalContext;
pub use error::ErrorCode;
pub use version::{Actor, Content, Dot, Object, Sibling, VersionVector};
