//! The peer protocol: every message nodes exchange over QUIC, in one place,
//! so the wire format has a single definition.
//!
//! Each request travels on its own bidirectional stream as one frame (a
//! 4-byte big-endian length, then an msgpack [`Envelope`]); the answer comes
//! back the same way. The envelope carries [`PROTOCOL_VERSION`]; a peer
//! refuses versions it does not speak with an error, never a crash.

use serde::{Deserialize, Serialize};

use crate::bucket::{BucketName, ConflictMode, Key, QuorumOverrides};
use crate::error::ErrorCode;
use crate::membership::Gossip;
use crate::version::{Content, Object, VersionVector};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 1;

/// A framed message with its protocol version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<T> {
    /// The sender's protocol version.
    pub version: u16,
    /// The message.
    pub body: T,
}

impl<T> Envelope<T> {
    /// Wraps `body` with this build's version.
    pub fn new(body: T) -> Self {
        Self {
            version: PROTOCOL_VERSION,
            body,
        }
    }
}

/// A client operation forwarded to a node in the key's preference list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Operation {
    /// Write a value.
    Put(Content),
    /// Write a tombstone.
    Delete,
}

/// What one node asks another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PeerRequest {
    /// Membership gossip; answered with [`PeerResponse::Gossip`] (or
    /// [`PeerResponse::Ok`] when there is nothing to say).
    Gossip(Gossip),
    /// Ping `target` on the sender's behalf; answered with
    /// [`PeerResponse::Reached`].
    IndirectPing {
        /// The peer address to ping.
        target: std::net::SocketAddr,
    },
    /// Read the local replica (or, for a fallback, the hint held for
    /// `hint_for`); answered with [`PeerResponse::Object`].
    ReplicaGet {
        /// Bucket.
        bucket: BucketName,
        /// Key.
        key: Key,
        /// The primary this node stands in for, if any.
        hint_for: Option<String>,
    },
    /// Merge `object` into the local replica, or keep it as a hint for
    /// `hint_for`; answered with [`PeerResponse::Stored`].
    ReplicaPut {
        /// Bucket.
        bucket: BucketName,
        /// Key.
        key: Key,
        /// The state to merge.
        object: Object,
        /// How the bucket resolves conflicts.
        mode: ConflictMode,
        /// Fsync before answering.
        durable: bool,
        /// The primary this node stands in for, if any.
        hint_for: Option<String>,
    },
    /// A client's request.
    Client(ClientRequest),
    /// Coordinate a client write (this node is in the key's preference list);
    /// answered with [`PeerResponse::Coordinated`].
    Coordinate {
        /// Bucket.
        bucket: BucketName,
        /// Key.
        key: Key,
        /// The client's causal context.
        context: VersionVector,
        /// The write.
        operation: Operation,
        /// The client's quorum options.
        quorum: QuorumOverrides,
    },
}

/// A client's request (any node takes it and coordinates it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ClientRequest {
    /// Read a key with the given quorum; answered with
    /// [`PeerResponse::ClientObject`].
    Get {
        /// Bucket.
        bucket: BucketName,
        /// Key.
        key: Key,
        /// Quorum options.
        quorum: QuorumOverrides,
    },
    /// Write or delete a key; answered with [`PeerResponse::ClientObject`].
    Write {
        /// Bucket.
        bucket: BucketName,
        /// Key.
        key: Key,
        /// The opaque, authenticated causal context the client read (none
        /// for a blind write).
        context: Option<String>,
        /// The write.
        operation: Operation,
        /// Quorum options.
        quorum: QuorumOverrides,
    },
    /// The cluster's shape, for token-aware routing; answered with
    /// [`PeerResponse::ClusterInfo`].
    ClusterInfo,
}

/// What a node answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PeerResponse {
    /// Done, nothing to return.
    Ok,
    /// A gossip reply.
    Gossip(Gossip),
    /// Whether an indirect ping reached its target.
    Reached(bool),
    /// A replica's state of a key.
    Object(Option<Object>),
    /// The replica merged (or hinted) the object.
    Stored {
        /// Whether it was fsynced.
        durable: bool,
    },
    /// A forwarded write was coordinated; the object after it (`None` for a
    /// delete of nothing).
    Coordinated(Option<Object>),
    /// A client's read or write: the object (none when the key has no
    /// value) and its opaque causal context, to send back with a write.
    ClientObject {
        /// The object.
        object: Option<Object>,
        /// Its authenticated context.
        context: Option<String>,
    },
    /// The cluster's shape.
    ClusterInfo {
        /// Partitions of the ring.
        partitions: u32,
        /// Tokens per node.
        tokens: u16,
        /// The answering node.
        node: String,
        /// Every member the answering node knows.
        members: Vec<crate::membership::MemberInfo>,
    },
    /// Not enough replicas answered: what was needed and what came back.
    Unavailable(crate::quorum::Shortfall),
    /// The request failed.
    Error {
        /// Stable code.
        code: ErrorCode,
        /// For a person.
        message: String,
    },
}
