//! What goes into the node state machine and what comes out of it: the
//! requests it takes, the effects it asks its driver to carry out, and the
//! results the driver feeds back.

use std::net::SocketAddr;

use thiserror::Error;

use crate::membership::{Notice, SavedTable};
use crate::proto::{Operation, PeerRequest, Refusal, Reply};
use crate::quorum::Shortfall;
use crate::{Actor, VersionVector};
use crate::{BucketName, ConflictMode, ErrorCode, Key, Object, QuorumOverrides};

/// An outgoing peer request, named by the node.
pub type CallId = u64;
/// A client request, named by the driver.
pub type ClientId = u64;
/// A request from a peer, named by the driver.
pub type InboundId = u64;
/// A storage operation, named by the node.
pub type StoreId = u64;

/// The time, as the driver reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// A monotonic clock (ms): timers and failure detection.
    pub mono_ms: u64,
    /// The wall clock (ms since the Unix epoch): write timestamps, hint age.
    pub wall_ms: u64,
}

/// A client's request, already authorised and validated by the driver
/// (names, value sizes, and the context authenticated and decoded).
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// Read a key.
    Get {
        /// Bucket.
        bucket: BucketName,
        /// Key.
        key: Key,
        /// Quorum options.
        quorum: QuorumOverrides,
    },
    /// Write or delete a key.
    Write {
        /// Bucket.
        bucket: BucketName,
        /// Key.
        key: Key,
        /// The clock the client read (empty for a blind write).
        context: VersionVector,
        /// The write.
        operation: Operation,
        /// Quorum options.
        quorum: QuorumOverrides,
    },
}

/// A request to send to a peer. The driver sends `request` to `addr` and
/// feeds the outcome back with [`super::Node::handle_reply`], naming the
/// node whose certificate answered; the node itself enforces `timeout_ms`
/// too, so the driver may also just drop a request it cannot send.
#[derive(Debug, Clone, PartialEq)]
pub struct Transmit {
    /// Names the reply.
    pub call: CallId,
    /// Where to send it.
    pub addr: SocketAddr,
    /// The node expected to answer (`None` for an address only known as a
    /// seed or a probe target): an answer from anyone else is a failure.
    pub node: Option<String>,
    /// The request.
    pub request: PeerRequest,
    /// How long to wait for the answer.
    pub timeout_ms: u64,
}

/// Why a peer request got no answer.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CallFailure {
    /// It was never sent (no connection): the peer did not see it.
    #[error("{0}")]
    NotSent(String),
    /// Sent, but no answer came (lost, timed out, the link failed): the
    /// peer may have acted on it.
    #[error("{0}")]
    Lost(String),
}

/// A hint: an object held for a primary that could not take it.
#[derive(Debug, Clone, PartialEq)]
pub struct Hint {
    /// The node the object belongs to.
    pub owner: String,
    /// Bucket.
    pub bucket: BucketName,
    /// Key.
    pub key: Key,
    /// The state to deliver.
    pub object: Object,
    /// When the first write of this hint was taken (wall ms).
    pub created_ms: u64,
}

/// A storage operation for the driver to run (RocksDB runs them on
/// blocking threads). Each read-modify-write is atomic per key.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreOp {
    /// Apply a client write as coordinator
    /// ([`crate::write::apply_client_write`] with this node's actor);
    /// answered with [`Stored::Written`].
    Coordinate {
        /// Bucket.
        bucket: BucketName,
        /// Key.
        key: Key,
        /// The client's context (empty for a data-type operation, whose
        /// read clock rides in the change).
        context: VersionVector,
        /// The value or tombstone, stamped, or the data-type operation.
        change: crate::write::Change,
        /// How the bucket resolves conflicts.
        mode: ConflictMode,
        /// Fsync before answering.
        durable: bool,
        /// Tests only (a planted bug): version with this actor instead of
        /// the node's own. Always `None` otherwise.
        actor: Option<Actor>,
    },
    /// Read the local copy, merged with the hint held for `hint_for`;
    /// answered with [`Stored::Read`].
    Read {
        /// Bucket.
        bucket: BucketName,
        /// Key.
        key: Key,
        /// The primary this node stands in for, if any.
        hint_for: Option<String>,
        /// How the bucket resolves conflicts.
        mode: ConflictMode,
    },
    /// Merge a replica's state into the local copy
    /// ([`crate::write::merge_replica`]); answered with [`Stored::Done`].
    Merge {
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
    },
    /// Keep `object` for `owner`, merged with what is held for it, within
    /// the hint budget; answered with [`Stored::Done`].
    Hint {
        /// The primary it belongs to.
        owner: String,
        /// Bucket.
        bucket: BucketName,
        /// Key.
        key: Key,
        /// The state to keep.
        object: Object,
        /// How the bucket resolves conflicts.
        mode: ConflictMode,
        /// Fsync before answering.
        durable: bool,
        /// Now (wall ms), the hint's age if it is new.
        created_ms: u64,
    },
    /// Up to `limit` hints held for `owner`; answered with
    /// [`Stored::Hints`].
    HintsFor {
        /// The owner.
        owner: String,
        /// Most hints.
        limit: usize,
    },
    /// Delete a delivered (or expired) hint, unless it changed since it was
    /// read; answered with [`Stored::HintDeleted`].
    DeleteHint(Hint),
    /// Read the objects of `partition` after `after` (storage order), about
    /// `max_bytes` of them (at least one); answered with
    /// [`Stored::Scanned`].
    Scan {
        /// The partition.
        partition: u32,
        /// Of how many (the layout's count).
        partitions: u32,
        /// Where the last scan ended.
        after: Option<Vec<u8>>,
        /// About how many bytes.
        max_bytes: usize,
    },
    /// Merge copied objects into the local copies (as
    /// [`StoreOp::Merge`] each); answered with [`Stored::Done`].
    MergeAll {
        /// The objects, each with its bucket's conflict mode.
        objects: Vec<(crate::proto::Pulled, ConflictMode)>,
        /// Fsync before answering.
        durable: bool,
    },
    /// Hand a hint held for a member that no longer holds data to the
    /// key's current replicas: keep it as a hint for each of `owners`,
    /// merge it into the local copy when `local`, make that durable, then
    /// delete the old hint if it did not change meanwhile; answered with
    /// [`Stored::HintDeleted`].
    Rehome {
        /// The hint.
        hint: Hint,
        /// The key's current replicas to hold it for (not this node).
        owners: Vec<String>,
        /// Whether this node is one of them.
        local: bool,
        /// The bucket's conflict mode.
        mode: ConflictMode,
    },
    /// This node's hash tree of `partition` (built from a scan first if it
    /// has none: after a crash, or a corrupt record); answered with
    /// [`Stored::Tree`].
    Tree {
        /// The partition.
        partition: u32,
        /// Of how many.
        partitions: u32,
    },
    /// The keys of these segments of `partition` with their version
    /// digests; answered with [`Stored::Keys`].
    SegmentKeys {
        /// The partition.
        partition: u32,
        /// Of how many.
        partitions: u32,
        /// The segments.
        segments: Vec<u16>,
    },
    /// Merge `objects` (as [`StoreOp::MergeAll`], fsynced), then read
    /// `wanted` from the first, until about `max_bytes` are read (at
    /// least one); answered with [`Stored::Objects`].
    Exchange {
        /// The objects, each with its bucket's conflict mode.
        objects: Vec<(crate::proto::Pulled, ConflictMode)>,
        /// The keys to read.
        wanted: Vec<(BucketName, Key)>,
        /// About how many bytes to read.
        max_bytes: usize,
    },
    /// Up to `limit` keys of `partition` that hold only tombstones, the
    /// newest written before `before_ms` (wall ms), with their version
    /// digests; markers of keys reaped before `before_ms` are forgotten
    /// on the way. Answered with [`Stored::Keys`].
    Tombstones {
        /// The partition.
        partition: u32,
        /// Of how many.
        partitions: u32,
        /// Tombstones written before this are listed.
        before_ms: u64,
        /// Most keys.
        limit: usize,
    },
    /// For each key, whether it is held as exactly that tombstone version;
    /// with `commit`, each one that is is deleted, and a marker of it kept
    /// (see [`crate::write::resurrected`]). Answered with
    /// [`Stored::Reaped`].
    Reap {
        /// The keys and tombstone versions.
        keys: Vec<crate::proto::KeyDigest>,
        /// Delete, rather than check.
        commit: bool,
        /// Now (wall ms): when a marker was made.
        now_ms: u64,
    },
    /// Delete the objects of these partitions' buckets in scope (they
    /// moved to other nodes, or a bucket's `n_val` no longer reaches this
    /// node); answered with [`Stored::Done`].
    DropPartitions {
        /// The partitions given away, and which buckets of each.
        dropped: Vec<(u32, crate::layout::Scope)>,
        /// Of how many (the layout's count).
        partitions: u32,
    },
}

/// A storage operation's result.
#[derive(Debug, Clone, PartialEq)]
pub enum Stored {
    /// The object after a coordinated write.
    Written(Object),
    /// What a read found.
    Read(Option<Object>),
    /// A merge or hint was stored.
    Done,
    /// Hints read.
    Hints(Vec<Hint>),
    /// Whether the hint was deleted (it was unchanged).
    HintDeleted(bool),
    /// A scan's objects.
    Scanned(crate::proto::Chunk),
    /// A partition's hash tree.
    Tree(Box<crate::hashtree::HashTree>),
    /// Keys and their version digests.
    Keys(Vec<crate::proto::KeyDigest>),
    /// Objects read, and how many of the keys asked for were looked at.
    Objects(crate::proto::Fetched),
    /// For each key of a [`StoreOp::Reap`], whether it held that tombstone
    /// (and, on a commit, was deleted).
    Reaped(Vec<bool>),
}

/// Why a storage operation failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{message}")]
pub struct StoreFailure {
    /// Stable code (`too_many_siblings`, `storage_error`, ...).
    pub code: ErrorCode,
    /// For a person.
    pub message: String,
}

/// Why a client request failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Failure {
    /// This node has not founded or joined its cluster yet.
    #[error("this node is not in a cluster yet (founding with its initial members or joining through its seeds), so it cannot place keys; retry through another node")]
    NotJoined,
    /// The request's quorum options do not fit the bucket.
    #[error("invalid quorum options: {0}")]
    InvalidQuorum(String),
    /// Not enough replicas answered.
    #[error("{0}")]
    Unavailable(Shortfall),
    /// No node of the preference list could coordinate a forwarded write.
    #[error("no replica of this key could coordinate the write: {0}")]
    NoCoordinator(String),
    /// A forwarded write was refused by one coordinator after an earlier
    /// one did not answer: that one may have taken it.
    #[error("the write's outcome is unknown: {0}")]
    MaybeTaken(String),
    /// The coordinating peer refused the request.
    #[error("{message}")]
    Remote {
        /// Its code.
        code: ErrorCode,
        /// Its message.
        message: String,
    },
    /// The local store refused or failed.
    #[error(transparent)]
    Store(StoreFailure),
    /// Too many reads and writes under way on this node.
    #[error("this node has too much replication and repair in flight; retry shortly")]
    Busy,
    /// A forwarded write reached a node that is no replica of its key in
    /// its own layout.
    #[error("{0}")]
    NotAReplica(String),
    /// A data-type operation that does not fit the bucket.
    #[error(transparent)]
    Datatype(crate::crdt::CrdtError),
}

impl Failure {
    /// The stable code for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::NotJoined
            | Self::Unavailable(_)
            | Self::NoCoordinator(_)
            | Self::NotAReplica(_) => ErrorCode::QuorumUnavailable,
            Self::InvalidQuorum(_) => ErrorCode::InvalidParameter,
            Self::MaybeTaken(_) => ErrorCode::Timeout,
            Self::Remote { code, .. } => *code,
            Self::Store(f) => f.code,
            Self::Busy => ErrorCode::Overloaded,
            Self::Datatype(e) => e.code(),
        }
    }

    /// Whether a failed write certainly did not happen anywhere. A shortfall
    /// after the coordinator stored the write is not definite: the write is
    /// there and spreads.
    pub fn definite(&self) -> bool {
        match self {
            Self::Unavailable(s) => s.got == 0,
            Self::NoCoordinator(_) | Self::MaybeTaken(_) => false,
            Self::Remote { code, .. } => *code != ErrorCode::Timeout,
            Self::NotJoined
            | Self::InvalidQuorum(_)
            | Self::Store(_)
            | Self::Busy
            | Self::NotAReplica(_)
            | Self::Datatype(_) => true,
        }
    }
}

impl From<Failure> for Refusal {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Unavailable(s) => Self::Unavailable(s),
            f => Self::error(f.code(), f.to_string()),
        }
    }
}

/// Something the node did that is worth a metric or a log line.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A stale replica was sent the merge of a read.
    ReadRepair {
        /// The replica.
        node: String,
    },
    /// A write was forwarded to a replica and coordinated there.
    Forwarded,
    /// The ring was rebuilt for a new member list.
    RingRebuilt {
        /// Members on it.
        members: usize,
    },
    /// A hint reached its owner and was deleted.
    HintDelivered,
    /// A hint for a member that holds no data any more went to its key's
    /// current replicas.
    HintRehomed,
    /// The coordinator kept a hint for a primary that missed a write.
    MissedWriteHinted {
        /// The primary.
        owner: String,
    },
    /// A hint older than the maximum age was dropped.
    HintExpired {
        /// Its owner.
        owner: String,
    },
    /// An owner refused a hint: tried again after `wait_ms`.
    HintRefused {
        /// The owner.
        owner: String,
        /// Its code.
        code: ErrorCode,
        /// Its message.
        message: String,
        /// Until the next try.
        wait_ms: u64,
    },
    /// A handoff round ended.
    HandoffRound {
        /// Hints delivered in it.
        delivered: usize,
    },
    /// This node's handover commit ended: the version it made, or why not.
    Handover {
        /// The outcome.
        result: Result<u64, String>,
    },
    /// This node copied every partition it gains in layout `version`.
    TransferSynced {
        /// The version.
        version: u64,
    },
    /// A gained partition is copied.
    PartitionCopied {
        /// The partition.
        partition: u32,
        /// Objects copied.
        keys: u64,
        /// Gained partitions still to copy.
        pending: usize,
    },
    /// Partitions this node no longer holds were deleted.
    PartitionsDropped {
        /// How many.
        partitions: usize,
    },
    /// An anti-entropy exchange of one partition with one replica ended.
    Exchanged {
        /// The partition.
        partition: u32,
        /// The other replica.
        peer: String,
        /// Bytes of tree hashes received to compare.
        bytes_compared: u64,
        /// Keys found to differ.
        keys_differing: u64,
        /// Objects received and merged here.
        keys_fetched: u64,
        /// Objects sent to the other replica.
        keys_pushed: u64,
        /// Why it stopped early, if it did.
        failed: Option<String>,
    },
    /// A pass of tombstone reaping over one partition ended.
    Reaped {
        /// The partition.
        partition: u32,
        /// Tombstones past the grace period that were looked at.
        listed: u64,
        /// Those every replica held, deleted here.
        reaped: u64,
        /// Why it stopped early, if it did.
        failed: Option<String>,
    },
    /// A storage operation failed outside a client's request.
    StoreFailed {
        /// What failed.
        what: &'static str,
        /// Why.
        message: String,
    },
}

/// What the node asks its driver to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Send a request to a peer.
    Transmit(Transmit),
    /// Run a storage operation; feed the result back with
    /// [`super::Node::handle_stored`].
    Store {
        /// Names the result.
        id: StoreId,
        /// The operation.
        op: StoreOp,
    },
    /// Answer a client: the object (none when the key has no value).
    Answer {
        /// The request.
        client: ClientId,
        /// The outcome.
        result: Result<Option<Object>, Failure>,
    },
    /// Answer a peer's request.
    Respond {
        /// The request.
        inbound: InboundId,
        /// The answer, encoded for the request it answers.
        reply: Reply,
    },
    /// Save the layout and member table (fsynced, off the request path).
    SaveTable {
        /// The membership version it holds: a saver that already wrote a
        /// later one skips it.
        version: u64,
        /// The table.
        table: Box<SavedTable>,
        /// When set, the node waits for it: feed [`Stored::Done`] (or the
        /// failure) back under this id once this version, or a later one,
        /// is on disk.
        done: Option<StoreId>,
    },
    /// Answer a layout commit.
    Committed {
        /// The request.
        client: ClientId,
        /// The new layout, or why there is none.
        result: Result<crate::layout::Layout, super::CommitFailure>,
    },
    /// Something membership noticed (founding, joining, another cluster).
    Notice(Notice),
    /// A peer restarted: a pooled connection to it may be dead.
    PeerRestarted(SocketAddr),
    /// For metrics and logs.
    Event(Event),
}
