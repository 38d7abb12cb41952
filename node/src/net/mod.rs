//! Peer networking: the cluster's certificates and the QUIC transport.
//!
//! - [`certs`]: the cluster CA and node certificates (`quorra certs`), and
//!   the mutual-TLS configurations built from them.
//! - [`transport`]: one QUIC connection per peer, one bidirectional stream
//!   per request, size-limited msgpack frames.

pub mod certs;
pub mod transport;
