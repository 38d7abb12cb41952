//! The Quorra node: storage, the HTTP API and the `quorra` command line.
//!
//! # Layout
//!
//! - [`storage`]: the engine trait, with RocksDB and in-memory engines.
//! - [`store`]: versioned, checksummed objects and the node's actor identity.
//! - [`kv`]: the request path: coordination, quorums, read repair.
//! - [`cluster`]: membership, the ring, calls to peers.
//! - [`handoff`]: delivering hints to returning nodes.
//! - [`faults`]: fault injection for tests (off unless configured).
//! - [`net`]: certificates and the QUIC peer transport.
//! - [`http`]: the HTTP API (axum).
//! - [`config`]: the TOML configuration and its validation.
//! - [`server`]: starting and stopping a node.
//! - [`cli`], [`devcluster`]: the `quorra` command line.
//!
//! The distributed-systems rules (versions, merges, names, limits) live in
//! the pure crate `quorra-core`.

pub mod cli;
pub mod cluster;
pub mod config;
pub mod devcluster;
pub mod faults;
pub mod handoff;
pub mod http;
pub mod kv;
pub mod net;
pub mod server;
pub mod storage;
pub mod store;
