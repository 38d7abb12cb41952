//! The Quorra node: storage, the HTTP API and the `quorra` command line.
//!
//! # Layout
//!
//! - [`storage`]: the engine trait, RocksDB and in-memory engines.
//! - [`store`]: versioned, checksummed objects and the node's actor identity.
pub mod storage;
pub mod store;
