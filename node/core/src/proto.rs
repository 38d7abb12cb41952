//! The wire protocol: every message nodes and clients exchange over QUIC,
//! in one place, so the format has a single definition.
//!
//! Each request travels on its own bidirectional stream as one frame (a
//! 4-byte big-endian length, then an msgpack [`Envelope`] holding a
//! [`Message`]); the answer comes back the same way. The envelope carries
//! [`PROTOCOL_VERSION`]; a peer refuses versions it does not speak with an
//! error, never a crash.
//!
//! Requests come in two kinds, each with its own type: [`PeerRequest`]
//! (only node certificates may send them) and [`ClientRequest`] (any client
//! role). Cluster administration is not on this protocol: it is the HTTP
//! API's `/v1/cluster/...` and `/v1/admin/...`, under the admin role.
//!
//! Every request has exactly one answer type, named by the [`Ask`] trait:
//! a [`ReplicaGet`] is answered by an `Option<Object>`, a [`ReplicaPut`] by
//! a [`ReplicaStored`], and so on. A [`Reply`] carries
//! `Result<Answer, Refusal>` encoded, and the asker decodes it as the
//! answer of the request it sent, so no code path matches an answer of the
//! wrong kind: an answer that does not decode as the expected type is a
//! malformed reply, like a garbled frame.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::bucket::{BucketName, ConflictMode, Key, QuorumOverrides};
use crate::error::ErrorCode;
use crate::membership::{Gossip, MemberInfo};
use crate::quorum::Shortfall;
use crate::version::{Content, Object, VersionVector};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 6;

/// Names a request; its answer carries the same id.
pub type RequestId = u64;

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

/// Every message, either way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Message {
    /// A request.
    Request {
        /// Names it.
        id: RequestId,
        /// What is asked.
        request: Request,
    },
    /// The answer to request `id` (`None`: to a request that could not be
    /// read, so whose id is unknown).
    Response {
        /// The request answered.
        id: Option<RequestId>,
        /// The answer.
        reply: Reply,
    },
}

/// A request: from a node, or from a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Only node certificates may send these.
    Peer(PeerRequest),
    /// Any client role may send these (a node coordinates them).
    Client(ClientRequest),
}

/// A request with one answer type.
pub trait Ask: Into<Request> {
    /// What answers it.
    type Answer: Serialize + DeserializeOwned;
}

/// What one node asks another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PeerRequest {
    /// Membership gossip.
    Gossip(Gossip),
    /// Ping a peer on the sender's behalf.
    IndirectPing(IndirectPing),
    /// Read a replica.
    ReplicaGet(ReplicaGet),
    /// Store a replica's object.
    ReplicaPut(ReplicaPut),
    /// Coordinate a client's write.
    Coordinate(Coordinate),
    /// A proposer's message deciding the next layout version.
    Decide(Decide),
    /// A chunk of one partition's objects, for a new replica copying it.
    Pull(Pull),
    /// Anti-entropy: hashes of a partition's tree.
    TreeHashes(TreeHashes),
    /// Anti-entropy: the keys and version digests of tree segments.
    SegmentKeys(SegmentKeys),
    /// Anti-entropy: merge these objects and send back those.
    Exchange(Exchange),
    /// Tombstone reaping: check, or delete, tombstones.
    Reap(Reap),
}

/// Anti-entropy: ask a replica for hashes of its tree of `partition` (see
/// [`crate::hashtree`]): for each question `(depth, index)`, the children
/// of that node; answered with one entry per question (`None`: out of
/// range).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeHashes {
    /// The partition.
    pub partition: u32,
    /// Of how many (both sides must cut the ring the same way).
    pub partitions: u32,
    /// The questions.
    pub questions: Vec<(u8, u16)>,
}

/// Anti-entropy: ask a replica for the keys it holds in these segments of
/// `partition`, each with its version digest; answered with the
/// [`KeyDigest`]s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentKeys {
    /// The partition.
    pub partition: u32,
    /// Of how many.
    pub partitions: u32,
    /// The segments.
    pub segments: Vec<u16>,
}

/// A key and the digest of the version a replica holds
/// ([`crate::Object::version_digest`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct KeyDigest {
    /// Bucket.
    pub bucket: BucketName,
    /// Key.
    pub key: Key,
    /// Its version digest.
    pub digest: u64,
}

/// Anti-entropy's repair: merge `objects` (the sender's copies of keys the
/// two disagree on; those the receiver does not replicate are ignored) and
/// answer with this replica's copies of `wanted`, as [`Fetched`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exchange {
    /// The sender's objects.
    pub objects: Vec<Pulled>,
    /// The keys the sender wants.
    pub wanted: Vec<(BucketName, Key)>,
}

/// Objects read for an [`Exchange`]: about a chunk's worth, so the answer
/// fits a frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fetched {
    /// The objects found (a key not held is left out).
    pub objects: Vec<Pulled>,
    /// How many of the wanted keys, from the first, were looked at: ask
    /// again for the rest.
    pub answered: u32,
}

/// Tombstone reaping. Without `commit`: for each key, whether this
/// replica holds exactly that tombstone version (only tombstones, the same
/// version digest). With `commit`: delete each key still held at that
/// version (keeping a marker that catches a resurrection), and say which
/// were. Answered with one `bool` per key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reap {
    /// The keys and the tombstone versions the reaper holds.
    pub keys: Vec<KeyDigest>,
    /// Delete, rather than check.
    pub commit: bool,
}

/// Ask a replica for the next chunk of partition `partition`'s objects, in
/// storage order after `after`; answered with a [`Chunk`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pull {
    /// The partition.
    pub partition: u32,
    /// Where the last chunk ended (`None`: from the start).
    pub after: Option<serde_bytes::ByteBuf>,
    /// About how many bytes to send (at least one object is sent).
    pub max_bytes: u32,
}

/// Bytes as msgpack binary (cursors of [`Pull`] and [`Chunk`]).
pub use serde_bytes::ByteBuf;

/// One object of a [`Chunk`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pulled {
    /// Bucket.
    pub bucket: BucketName,
    /// Key.
    pub key: Key,
    /// The replica's object.
    pub object: Object,
}

/// Objects of one partition, in storage order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chunk {
    /// The objects.
    pub objects: Vec<Pulled>,
    /// Where to go on from (`None`: the partition ends here).
    pub next: Option<serde_bytes::ByteBuf>,
}

/// A proposer's message about the next layout version (see
/// [`crate::decide`]); answered with the voter's reply, or none when it
/// cannot vote (it lags, or lost its disk since).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decide(pub Box<crate::decide::Message<crate::layout::Layout>>);

/// Ping `target` on the sender's behalf; answered with whether it answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndirectPing {
    /// The peer address to ping.
    pub target: std::net::SocketAddr,
}

/// Read the local replica (or, for a fallback, the hint held for
/// `hint_for`); answered with the object, if any.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaGet {
    /// Bucket.
    pub bucket: BucketName,
    /// Key.
    pub key: Key,
    /// The primary this node stands in for, if any.
    pub hint_for: Option<String>,
}

/// Merge `object` into the local replica, or keep it as a hint for
/// `hint_for`; answered with [`ReplicaStored`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaPut {
    /// Bucket.
    pub bucket: BucketName,
    /// Key.
    pub key: Key,
    /// The state to merge.
    pub object: Object,
    /// How the bucket resolves conflicts.
    pub mode: ConflictMode,
    /// Fsync before answering.
    pub durable: bool,
    /// The primary this node stands in for, if any.
    pub hint_for: Option<String>,
}

/// A replica stored (or hinted) an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaStored {
    /// Whether it was fsynced.
    pub durable: bool,
}

/// Coordinate a client write (the receiver is in the key's preference
/// list); answered with the object after it (`None` for a delete of
/// nothing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Coordinate {
    /// Bucket.
    pub bucket: BucketName,
    /// Key.
    pub key: Key,
    /// The client's causal context.
    pub context: VersionVector,
    /// The write.
    pub operation: Operation,
    /// The client's quorum options.
    pub quorum: QuorumOverrides,
}

/// A client operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Operation {
    /// Write a value.
    Put(Content),
    /// Write a tombstone.
    Delete,
    /// Apply an operation to a data-type key (its bucket has a
    /// [`crate::crdt::Datatype`]); the context is the clock of a read.
    Crdt(crate::crdt::CrdtOp),
}

/// A client's request (any node takes it and coordinates it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ClientRequest {
    /// Read a key.
    Get(Get),
    /// Write or delete a key.
    Write(Write),
    /// The cluster's shape.
    ClusterInfo(ClusterInfo),
}

/// Read a key with the given quorum; answered with a [`ClientObject`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Get {
    /// Bucket.
    pub bucket: BucketName,
    /// Key.
    pub key: Key,
    /// Quorum options.
    pub quorum: QuorumOverrides,
}

/// Write or delete a key; answered with a [`ClientObject`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Write {
    /// Bucket.
    pub bucket: BucketName,
    /// Key.
    pub key: Key,
    /// The opaque, authenticated causal context the client read (none for
    /// a blind write).
    pub context: Option<String>,
    /// The write.
    pub operation: Operation,
    /// Quorum options.
    pub quorum: QuorumOverrides,
}

/// Ask for the cluster's shape, for token-aware routing; answered with a
/// [`ClusterShape`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo;

/// A client's read or write: the object (none when the key has no value)
/// and its opaque causal context, to send back with a write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientObject {
    /// The object.
    pub object: Option<Object>,
    /// Its authenticated context.
    pub context: Option<String>,
}

/// The cluster's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterShape {
    /// The answering node's layout (`None` until it has joined): clients
    /// route by [`crate::ring::Ring::build`] of it, as nodes do.
    pub layout: Option<crate::layout::Layout>,
    /// The answering node.
    pub node: String,
    /// Every member the answering node knows.
    pub members: Vec<MemberInfo>,
}

macro_rules! asks {
    ($($req:ty => $kind:ident :: $variant:ident, $answer:ty;)*) => {$(
        impl From<$req> for $kind {
            fn from(r: $req) -> Self {
                Self::$variant(r)
            }
        }
        impl From<$req> for Request {
            fn from(r: $req) -> Self {
                Self::from($kind::from(r))
            }
        }
        impl Ask for $req {
            type Answer = $answer;
        }
    )*};
}

asks! {
    Gossip => PeerRequest::Gossip, Option<Gossip>;
    IndirectPing => PeerRequest::IndirectPing, bool;
    ReplicaGet => PeerRequest::ReplicaGet, Option<Object>;
    ReplicaPut => PeerRequest::ReplicaPut, ReplicaStored;
    Coordinate => PeerRequest::Coordinate, Option<Object>;
    Decide => PeerRequest::Decide, Option<crate::decide::Message<crate::layout::Layout>>;
    Pull => PeerRequest::Pull, Chunk;
    TreeHashes => PeerRequest::TreeHashes, Vec<Option<Vec<u64>>>;
    SegmentKeys => PeerRequest::SegmentKeys, Vec<KeyDigest>;
    Exchange => PeerRequest::Exchange, Fetched;
    Reap => PeerRequest::Reap, Vec<bool>;
    Get => ClientRequest::Get, ClientObject;
    Write => ClientRequest::Write, ClientObject;
    ClusterInfo => ClientRequest::ClusterInfo, ClusterShape;
}

impl From<PeerRequest> for Request {
    fn from(r: PeerRequest) -> Self {
        Self::Peer(r)
    }
}

impl From<ClientRequest> for Request {
    fn from(r: ClientRequest) -> Self {
        Self::Client(r)
    }
}

/// Why a request was not done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// Not enough replicas answered: what was needed and what came back.
    Unavailable(Shortfall),
    /// The request failed.
    Error {
        /// Stable code.
        code: ErrorCode,
        /// For a person.
        message: String,
    },
}

impl Refusal {
    /// Its stable code and message.
    pub fn parts(self) -> (ErrorCode, String) {
        match self {
            Self::Unavailable(s) => (ErrorCode::QuorumUnavailable, s.to_string()),
            Self::Error { code, message } => (code, message),
        }
    }

    /// A refusal with `code`.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Error {
            code,
            message: message.into(),
        }
    }
}

/// An answer, encoded: `Result<A::Answer, Refusal>` for the request `A` it
/// answers. Only the asker, which knows `A`, decodes it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply(#[serde(with = "serde_bytes")] Vec<u8>);

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Reply({} bytes)", self.0.len())
    }
}

/// A reply that does not decode as the answer to the request it answers.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("malformed answer: {0}")]
pub struct MalformedReply(pub String);

impl Reply {
    /// The answer to an `A`.
    pub fn answer<A: Ask>(result: Result<A::Answer, Refusal>) -> Self {
        Self::encode(&result)
    }

    /// A refusal, whatever was asked (a refusal encodes the same for every
    /// answer type).
    pub fn refusal(refusal: Refusal) -> Self {
        Self::encode(&Err::<(), _>(refusal))
    }

    /// [`Self::refusal`] of an error.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::refusal(Refusal::error(code, message))
    }

    fn encode<T: Serialize>(result: &Result<T, Refusal>) -> Self {
        // These types always encode; if one ever did not, the asker would
        // see a malformed reply, never a wrong one.
        Self(rmp_serde::to_vec(result).unwrap_or_default())
    }

    /// The answer, decoded as the answer to an `A`.
    pub fn decode<A: Ask>(&self) -> Result<Result<A::Answer, Refusal>, MalformedReply> {
        rmp_serde::from_slice(&self.0).map_err(|e| MalformedReply(e.to_string()))
    }

    /// The refusal, if this reply is one, whatever was asked.
    pub fn refused(&self) -> Option<Refusal> {
        match rmp_serde::from_slice::<Result<serde::de::IgnoredAny, Refusal>>(&self.0) {
            Ok(Err(refusal)) => Some(refusal),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_decodes_as_the_answer_to_any_request() {
        let r = Reply::error(ErrorCode::Overloaded, "busy");
        let want = Refusal::error(ErrorCode::Overloaded, "busy");
        assert_eq!(r.decode::<ReplicaGet>(), Ok(Err(want.clone())));
        assert_eq!(r.decode::<ClusterInfo>(), Ok(Err(want.clone())));
        assert_eq!(r.refused(), Some(want));
        let answer = Reply::answer::<ReplicaGet>(Ok(None));
        assert_eq!(answer.refused(), None);
    }

    #[test]
    fn an_answer_of_another_kind_is_malformed_not_misread() {
        let stored = Reply::answer::<ReplicaPut>(Ok(ReplicaStored { durable: true }));
        assert_eq!(
            stored.decode::<ReplicaPut>(),
            Ok(Ok(ReplicaStored { durable: true }))
        );
        assert!(stored.decode::<Get>().is_err());
        assert!(stored.decode::<IndirectPing>().is_err());
    }
}
