//! The Rust client library for Quorra.
//!
//! It arrives with issue F: an async, token-aware QUIC client with explicit
//! sibling resolution. Until then it re-exports the shared types, so code
//! written against it already speaks Quorra's one definition of versions,
//! contexts and error codes. It never depends on RocksDB.

pub use quorra_core::{CausalContext, ErrorCode, VersionVector};
