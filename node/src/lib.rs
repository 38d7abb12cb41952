//! The Quorra node: storage, the HTTP API and the `quorra` command line.
//!
//! # Layout
//!
//! - [`storage`]: the engine trait, with RocksDB and in-memory engines.
//! - [`store`]: versioned, checksummed objects and the node's actor identity.
//! - [`driver`]: the driver of the node's state machine
//!   ([`quorra_core::node`]): network, disk and timers in, effects out.
//! - [`kv`]: the request edge: permission checks, validation, contexts.
//! - [`service`]: what the HTTP key routes read and write through (the
//!   node's [`kv::Kv`], or a gateway's client).
//! - [`cluster`]: the member table between runs, and membership notices.
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
pub mod driver;
pub mod faults;
pub mod http;
pub mod kv;
pub mod metric_names;
pub mod net;
pub mod server;
pub mod service;
pub mod storage;
pub mod store;
