//! The Rust client library for Quorra.
//!
//! # Layout
//!
//! - [`tls`]: mutual-TLS identities from a cluster certificate dir.
//! - [`transport`]: QUIC connections, streams and frames. Nodes use the same
//!   transport for their peer links: there is one implementation.

pub mod tls;
pub mod transport;

pub use quorra_core::{CausalContext, ErrorCode, VersionVector};
