//! The QUIC transport, shared with the client library: one implementation
//! of connections, streams and frames for nodes and clients alike.

pub use quorra_client::transport::*;
