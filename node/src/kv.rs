//! The request path: any node takes any request and coordinates it over the
//! key's replicas.
//!
//! - **Writes** are coordinated by a node in the key's preference list (a
//!   node outside it forwards the write to one inside). The coordinator
//!   versions the write with its own actor, stores it, sends the new object to
//!   the other replicas and answers after `w` acknowledgements, `dw` of them
//!   durable and `pw` of them from primaries. A primary this node believes
//!   down, or one that fails, is replaced by the next node on the ring with a
//!   hint naming it (sloppy quorum). Replication carries on in the
//!   background after the answer, so every replica gets the write.
//! - **Reads** ask the replicas, answer after `r` replies (`pr` from
//!   primaries) with their merge, then wait for the rest and send the merged
//!   object to every replica that was missing part of it (read repair).
//! - **Deletes** are writes: a tombstone goes through the same write round.
//!   A delete without a context first reads the key at the read quorum and
//!   deletes everything that read saw, so a coordinator that lacks the key
//!   still deletes it everywhere.
//! - A quorum that cannot be met is `quorum_unavailable`, saying what
//!   answered. A cluster smaller than `n_val` stores `n_val` = its size, and
//!   quorums are capped to match.
//! - **Entry points.** Client requests (HTTP and QUIC alike) come in through
//!   [`Kv::client_get`] and [`Kv::client_write`]: one permission check
//!   ([`quorra_core::auth::authorize`]), one validation of names, values and
//!   contexts against the node's limits, and contexts authenticated under the
//!   cluster secret. Peer requests come in through [`Kv::handle_peer`], only
//!   from node certificates.
//!
//! Replica choice, quorum counting and read-repair choice are the pure
//! [`quorra_core::quorum`] and [`quorra_core::round`]; this module only moves
//! bytes between them, the store and the network.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use futures::stream::{FuturesUnordered, StreamExt};
use quorra_core::auth::{authorize, Access, Denied, Principal};
use quorra_core::bucket::{NameError, PropsError};
use quorra_core::context::{CausalContext, ContextError, ContextKey};
use quorra_core::proto::{ClientRequest, Operation, PeerRequest, PeerResponse};
use quorra_core::quorum::{self, Needs, Plan, Shortfall, Target};
use quorra_core::round::{merge_all, ReadRound, WriteRound};
use quorra_core::{
    BucketName, BucketProps, ConflictMode, Content, ErrorCode, Key, Object, QuorumOverrides,
    VersionVector,
};
use thiserror::Error;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use crate::cluster::Cluster;
use crate::config::NodeConfig;
use crate::net::transport::NetError;
use crate::storage::Durability;
use crate::store::{HintBudget, ObjectStore, StoreError};

/// A failed key-value request.
#[derive(Debug, Error)]
pub enum KvError {
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The request's quorum options do not fit the bucket.
    #[error("invalid quorum options: {0}")]
    Quorum(#[from] PropsError),
    /// Not enough replicas answered.
    #[error("{0}")]
    Unavailable(Shortfall),
    /// No node of the preference list could coordinate a forwarded write.
    #[error("no replica of this key could coordinate the write: {0}")]
    NoCoordinator(String),
    /// A forwarded write was refused by one coordinator after an earlier
    /// one did not answer: that one may have taken it, so the refusal is
    /// not the write's outcome.
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
    /// This node has not founded or joined its cluster yet.
    #[error("this node is not in a cluster yet (founding with its initial members or joining through its seeds), so it cannot place keys; retry through another node")]
    NotJoined,
    /// A blocking storage task died.
    #[error("storage task failed: {0}")]
    Task(String),
    /// The caller may not make this request.
    #[error(transparent)]
    Forbidden(#[from] Denied),
    /// The context is unusable (malformed, or not this cluster's).
    #[error(transparent)]
    Context(#[from] ContextError),
    /// A name or value is refused by the limits.
    #[error(transparent)]
    Invalid(#[from] NameError),
    /// No room for the work a request starts, within its timeout.
    #[error("this node has too much replication and repair in flight; retry shortly")]
    Busy,
}

impl KvError {
    /// The stable code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Store(StoreError::TooManySiblings { .. }) => ErrorCode::TooManySiblings,
            Self::Store(StoreError::ObjectTooLarge { .. }) => ErrorCode::ObjectTooLarge,
            Self::Store(StoreError::ContextTooLarge { .. }) => ErrorCode::ContextTooLarge,
            // Only a forged context can run a counter to its end.
            Self::Store(StoreError::Version(_)) => ErrorCode::BadContext,
            Self::Store(_) => ErrorCode::StorageError,
            Self::Forbidden(d) => d.code(),
            Self::Context(e) => e.code(),
            Self::Invalid(e) => e.code,
            Self::Busy => ErrorCode::Overloaded,
            Self::Quorum(_) => ErrorCode::InvalidParameter,
            Self::Unavailable(_) | Self::NoCoordinator(_) | Self::NotJoined => {
                ErrorCode::QuorumUnavailable
            }
            Self::MaybeTaken(_) => ErrorCode::Timeout,
            Self::Remote { code, .. } => *code,
            Self::Task(_) => ErrorCode::Internal,
        }
    }
}

/// Why a call to a replica failed.
#[derive(Debug, Clone, Error)]
pub enum CallError {
    /// The replica answered, refusing.
    #[error("{code}: {message}")]
    Refused {
        /// Its code.
        code: ErrorCode,
        /// Its message.
        message: String,
    },
    /// No answer: unreachable, timed out, or the link failed.
    #[error("{0}")]
    Failed(String),
}

/// The node's key-value service.
#[derive(Debug, Clone)]
pub struct Kv {
    store: Arc<ObjectStore>,
    config: Arc<NodeConfig>,
    cluster: Arc<Cluster>,
    context_key: ContextKey,
    permits: Arc<Permits>,
}

/// The bounds on work in flight.
#[derive(Debug)]
struct Permits {
    /// Client requests, HTTP and QUIC alike.
    clients: Arc<Semaphore>,
    /// Requests from peers.
    peers: Arc<Semaphore>,
    /// Replication and read repair after the answer.
    background: Arc<Semaphore>,
}

/// One replica's answer to a read.
type ReadReply = (Target, Result<Option<Object>, String>);

impl Kv {
    /// A service over `store`, coordinating through `cluster`, handing out
    /// contexts authenticated with `context_key`.
    pub fn new(
        store: Arc<ObjectStore>,
        config: Arc<NodeConfig>,
        cluster: Arc<Cluster>,
        context_key: ContextKey,
    ) -> Self {
        let permits = Arc::new(Permits {
            clients: Arc::new(Semaphore::new(config.max_concurrent_requests)),
            peers: Arc::new(Semaphore::new(config.max_concurrent_peer_requests)),
            background: Arc::new(Semaphore::new(config.max_background_tasks)),
        });
        Self {
            store,
            config,
            cluster,
            context_key,
            permits,
        }
    }

    /// Permits for client requests in flight (HTTP and QUIC share them).
    pub fn client_permits(&self) -> &Arc<Semaphore> {
        &self.permits.clients
    }

    /// A permit for background work, waiting for one if need be.
    async fn background_permit(&self) -> Result<OwnedSemaphorePermit, KvError> {
        let sem = self.permits.background.clone();
        match sem.clone().try_acquire_owned() {
            Ok(p) => Ok(p),
            Err(_) => {
                metrics::counter!("quorra_background_full_total").increment(1);
                // Waiting for room is bounded by the request timeout, on
                // every path (HTTP has its own; QUIC requests have this).
                match tokio::time::timeout(self.config.request_timeout(), sem.acquire_owned()).await
                {
                    Ok(Ok(p)) => Ok(p),
                    Ok(Err(_)) => Err(KvError::Task("background permits closed".into())),
                    Err(_) => Err(KvError::Busy),
                }
            }
        }
    }

    /// A client's read: checked, then coordinated. Returns the object and
    /// its authenticated context.
    pub async fn client_get(
        &self,
        who: &Principal,
        bucket: BucketName,
        key: Key,
        q: QuorumOverrides,
    ) -> Result<(Option<Object>, Option<String>), KvError> {
        authorize(who, Access::Client)?;
        self.config.limits.check_names(&bucket, &key)?;
        let object = self.get(bucket.clone(), key.clone(), q).await?;
        let context = self.context_for(&bucket, &key, object.as_ref());
        Ok((object, context))
    }

    /// A client's write or delete, with the context token it read (if
    /// any): checked, then coordinated. Returns the object after the write
    /// and its authenticated context.
    pub async fn client_write(
        &self,
        who: &Principal,
        bucket: BucketName,
        key: Key,
        context: Option<&str>,
        op: Operation,
        q: QuorumOverrides,
    ) -> Result<(Option<Object>, Option<String>), KvError> {
        authorize(who, Access::Client)?;
        let limits = &self.config.limits;
        limits.check_names(&bucket, &key)?;
        if let Operation::Put(content) = &op {
            limits.check_content(content)?;
        }
        let ctx = match context {
            None => VersionVector::new(),
            Some(raw) => {
                CausalContext::decode(
                    raw,
                    limits.max_context_bytes,
                    &self.context_key,
                    &bucket,
                    &key,
                )?
                .0
            }
        };
        let object = self
            .write(bucket.clone(), key.clone(), ctx, op, q, false)
            .await?;
        let context = self.context_for(&bucket, &key, object.as_ref());
        Ok((object, context))
    }

    /// The authenticated context a client gets with `object`.
    fn context_for(
        &self,
        bucket: &BucketName,
        key: &Key,
        object: Option<&Object>,
    ) -> Option<String> {
        object.map(|o| CausalContext(o.clock().clone()).encode(&self.context_key, bucket, key))
    }

    /// The store underneath.
    pub fn store(&self) -> &Arc<ObjectStore> {
        &self.store
    }

    /// The node's configuration.
    pub fn config(&self) -> &Arc<NodeConfig> {
        &self.config
    }

    /// The cluster view.
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// What coordinating a request on a key starts from: the bucket's
    /// properties with the request's overrides, and the key's ranked nodes.
    /// Only a node with the cluster's member table may coordinate: with a
    /// partial ring it would pick the wrong replicas and cap the quorums.
    fn route(
        &self,
        bucket: &BucketName,
        key: &Key,
        q: &QuorumOverrides,
    ) -> Result<(BucketProps, Vec<String>), KvError> {
        if !self.cluster.has_joined() {
            return Err(KvError::NotJoined);
        }
        Ok((self.props(bucket, q)?, self.order(bucket, key)))
    }

    /// Bucket properties with the request's overrides, capped to the ring.
    fn props(&self, bucket: &BucketName, q: &QuorumOverrides) -> Result<BucketProps, KvError> {
        let members = self.cluster.ring().members().len();
        // Options that do not fit the bucket are invalid whatever the
        // cluster; options that fit it but not the cluster are a shortfall.
        let props = self.config.bucket_props(bucket).with_overrides(q)?;
        if let Some(short) = quorum::beyond_cluster(q, members) {
            return Err(KvError::Unavailable(short));
        }
        Ok(props.for_ring(members))
    }

    /// The ranked nodes of a key: preference list first, then fallbacks.
    fn order(&self, bucket: &BucketName, key: &Key) -> Vec<String> {
        let ring = self.cluster.ring();
        let p = ring.partition_of(bucket.as_str().as_bytes(), key.as_bytes());
        ring.order(p).map(str::to_owned).collect()
    }

    fn plan(&self, order: &[String], n: u8) -> Plan {
        let refs: Vec<&str> = order.iter().map(String::as_str).collect();
        quorum::plan(&refs, n as usize, |id| self.cluster.is_reachable(id))
    }

    /// Reads a key (tombstones included; the caller decides what a deleted
    /// object looks like).
    pub async fn get(
        &self,
        bucket: BucketName,
        key: Key,
        q: QuorumOverrides,
    ) -> Result<Option<Object>, KvError> {
        let (props, order) = self.route(&bucket, &key, &q)?;
        let needs = Needs {
            total: props.r,
            durable: 0,
            primary: props.pr,
        };
        let mut round = ReadRound::new(self.plan(&order, props.n_val), needs, props.conflict_mode)
            .map_err(KvError::Unavailable)?;
        let (done_tx, done_rx) = oneshot::channel();
        let this = self.clone();
        // The round carries on after the answer (read repair): bounded.
        let permit = self.background_permit().await?;
        tokio::spawn(async move {
            let _permit = permit;
            let mut inflight: FuturesUnordered<_> = round
                .start()
                .into_iter()
                .map(|t| this.read_replica(&bucket, &key, t))
                .collect();
            let mut done_tx = Some(done_tx);
            while let Some((target, result)) = inflight.next().await {
                let result = result.map_err(|e| {
                    tracing::debug!(node = %target.node, "replica read failed: {e}");
                });
                let step = round.reply(target, result);
                if let Some(sub) = step.send {
                    inflight.push(this.read_replica(&bucket, &key, sub));
                }
                if let Some(answer) = step.answer {
                    if let Some(tx) = done_tx.take() {
                        let _ = tx.send(answer.map_err(KvError::Unavailable));
                    }
                }
            }
            // Every replica has answered or timed out: repair the stale ones.
            if let Some((merged, stale)) = round.repairs() {
                this.read_repair(&bucket, &key, &merged, stale, props.conflict_mode)
                    .await;
            }
        });
        done_rx
            .await
            .map_err(|_| KvError::Task("read coordinator ended early".into()))?
    }

    fn read_replica(
        &self,
        bucket: &BucketName,
        key: &Key,
        target: Target,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ReadReply> + Send>> {
        let (this, bucket, key) = (self.clone(), bucket.clone(), key.clone());
        Box::pin(async move {
            let result = if target.node == this.cluster.me() {
                this.local_read(bucket, key, target.hint_for.clone())
                    .await
                    .map_err(|e| e.to_string())
            } else {
                let req = PeerRequest::ReplicaGet {
                    bucket,
                    key,
                    hint_for: target.hint_for.clone(),
                };
                match this.call_replica(&target.node, &req).await {
                    Ok(PeerResponse::Object(o)) => Ok(o),
                    Ok(other) => Err(format!("unexpected answer {other:?}")),
                    Err(e) => Err(e.to_string()),
                }
            };
            (target, result)
        })
    }

    async fn read_repair(
        &self,
        bucket: &BucketName,
        key: &Key,
        merged: &Object,
        stale: Vec<Target>,
        mode: ConflictMode,
    ) {
        for target in stale {
            metrics::counter!("quorra_read_repairs_total").increment(1);
            tracing::debug!(node = %target.node, "read repair");
            let result = self
                .write_replica(bucket, key, merged, mode, false, &target)
                .await;
            if let Err(e) = result {
                tracing::debug!(node = %target.node, "read repair failed: {e}");
            }
        }
    }

    /// Coordinates a write, forwarding it first when this node is not in the
    /// key's preference list (`forwarded` writes are never forwarded again).
    pub async fn write(
        &self,
        bucket: BucketName,
        key: Key,
        ctx: VersionVector,
        op: Operation,
        q: QuorumOverrides,
        forwarded: bool,
    ) -> Result<Option<Object>, KvError> {
        let (props, order) = self.route(&bucket, &key, &q)?;
        let n = props.n_val as usize;
        let me = self.cluster.me().to_owned();
        if !forwarded && !order.iter().take(n).any(|id| *id == me) {
            return self
                .forward(bucket, key, ctx, op, q, &order[..n.min(order.len())])
                .await;
        }
        // A delete without a context deletes what a quorum read sees, so
        // a coordinator that lacks the key still deletes it everywhere.
        let ctx = match (&op, ctx.is_empty()) {
            (Operation::Delete, true) => self
                .get(bucket.clone(), key.clone(), q)
                .await?
                .map(|o| o.clock().clone())
                .unwrap_or_default(),
            _ => ctx,
        };
        let needs = Needs {
            total: props.w,
            durable: props.dw,
            primary: props.pw,
        };
        let me_primary = order.iter().take(n).any(|id| *id == me);
        let mut round = WriteRound::new(self.plan(&order, props.n_val), needs, &me, me_primary)
            .map_err(KvError::Unavailable)?;
        let durable = props.dw > 0;
        let durability = if durable {
            Durability::Fsync
        } else {
            Durability::Buffered
        };
        let store = self.store.clone();
        let mode = props.conflict_mode;
        let (b, k) = (bucket.clone(), key.clone());
        let now = self.cluster.faults().now_ms();
        let content = match op {
            Operation::Put(mut content) => {
                content.timestamp_ms = now;
                content
            }
            Operation::Delete => Content::tombstone(now),
        };
        let object =
            blocking(move || store.coordinate(&b, &k, &ctx, content, mode, durability)).await?;
        let early = round.stored_locally(me_primary, durable);
        let (tx, rx) = oneshot::channel();
        let this = self.clone();
        let obj = object.clone();
        // Replication carries on after the answer: bounded.
        let permit = self.background_permit().await?;
        tokio::spawn(async move {
            let _permit = permit;
            this.replicate(bucket, key, obj, mode, durable, round, tx)
                .await
        });
        // With w=1 (and dw, pw met locally) the answer is already known:
        // replication goes on behind it.
        let answer = match early {
            Some(answer) => answer,
            None => rx
                .await
                .map_err(|_| KvError::Task("replication ended early".into()))?,
        };
        answer.map(|()| Some(object)).map_err(KvError::Unavailable)
    }

    /// Sends `object` to every replica of the round, substituting fallbacks
    /// for failures; reports the quorum outcome on `done` as soon as it is
    /// known, then carries on until every replica has answered.
    #[allow(clippy::too_many_arguments)]
    async fn replicate(
        &self,
        bucket: BucketName,
        key: Key,
        object: Object,
        mode: ConflictMode,
        durable: bool,
        mut round: WriteRound,
        done: oneshot::Sender<Result<(), Shortfall>>,
    ) {
        let send = |t: Target| {
            let (this, bucket, key, object) =
                (self.clone(), bucket.clone(), key.clone(), object.clone());
            async move {
                let r = this
                    .write_replica(&bucket, &key, &object, mode, durable, &t)
                    .await;
                (t, r)
            }
        };
        let mut inflight: FuturesUnordered<_> = round.start().into_iter().map(send).collect();
        let mut done = Some(done);
        while let Some((target, result)) = inflight.next().await {
            let result = result.map_err(|e| {
                tracing::debug!(node = %target.node, "replica write failed: {e}");
            });
            let step = round.reply(&target, result);
            if let Some(sub) = step.send {
                inflight.push(send(sub));
            }
            if let Some(answer) = step.answer {
                if let Some(tx) = done.take() {
                    let _ = tx.send(answer);
                }
            }
        }
        if let Some(answer) = round.finish() {
            if let Some(tx) = done.take() {
                let _ = tx.send(answer);
            }
        }
    }

    /// Stores `object` on one replica (locally or over the network).
    /// Returns whether it was made durable.
    async fn write_replica(
        &self,
        bucket: &BucketName,
        key: &Key,
        object: &Object,
        mode: ConflictMode,
        durable: bool,
        target: &Target,
    ) -> Result<bool, String> {
        if target.node == self.cluster.me() {
            return self
                .store_replica(
                    bucket.clone(),
                    key.clone(),
                    object.clone(),
                    mode,
                    durable,
                    target.hint_for.clone(),
                )
                .await
                .map_err(|e| e.to_string());
        }
        let req = PeerRequest::ReplicaPut {
            bucket: bucket.clone(),
            key: key.clone(),
            object: object.clone(),
            mode,
            durable,
            hint_for: target.hint_for.clone(),
        };
        match self
            .call_replica(&target.node, &req)
            .await
            .map_err(|e| e.to_string())?
        {
            PeerResponse::Stored { durable } => Ok(durable),
            other => Err(format!("unexpected answer {other:?}")),
        }
    }

    /// Sends a replica request to `node` within the replica timeout.
    pub async fn call_replica(
        &self,
        node: &str,
        req: &PeerRequest,
    ) -> Result<PeerResponse, CallError> {
        match self
            .cluster
            .call(node, req, self.config.replica_timeout())
            .await
        {
            Ok(PeerResponse::Error { code, message }) => Err(CallError::Refused { code, message }),
            Ok(answer) => Ok(answer),
            Err(e) => Err(CallError::Failed(e.to_string())),
        }
    }

    /// Merges a replica's object locally, or keeps it as a hint for
    /// `hint_for`. Returns whether it was made durable.
    pub async fn store_replica(
        &self,
        bucket: BucketName,
        key: Key,
        object: Object,
        mode: ConflictMode,
        durable: bool,
        hint_for: Option<String>,
    ) -> Result<bool, KvError> {
        let durability = if durable {
            Durability::Fsync
        } else {
            Durability::Buffered
        };
        let store = self.store.clone();
        let me = self.cluster.me().to_owned();
        let handoff = self.config.handoff;
        let budget = HintBudget {
            max_hints: handoff.max_hints,
            max_bytes: handoff.max_hint_bytes,
        };
        let now = now_ms();
        blocking(move || match hint_for {
            Some(owner) if owner != me => {
                let stored = store.store_hint(
                    &owner, &bucket, &key, &object, mode, durability, budget, now,
                );
                if let Err(StoreError::HintBudgetFull { hints, bytes }) = &stored {
                    metrics::counter!("quorra_hints_dropped_total").increment(1);
                    tracing::warn!(
                        owner,
                        hints,
                        bytes,
                        "hint budget full: hint dropped; anti-entropy must repair"
                    );
                }
                stored
            }
            _ => store
                .merge_replica(&bucket, &key, &object, mode, durability)
                .map(|_| ()),
        })
        .await?;
        Ok(durable)
    }

    /// Reads the local replica, plus the hint held for `hint_for`.
    pub async fn local_read(
        &self,
        bucket: BucketName,
        key: Key,
        hint_for: Option<String>,
    ) -> Result<Option<Object>, KvError> {
        let store = self.store.clone();
        let mode = self.config.bucket_props(&bucket).conflict_mode;
        blocking(move || {
            let local = store.get(&bucket, &key)?;
            let hint = match &hint_for {
                Some(owner) => store.get_hint(owner, &bucket, &key)?,
                None => None,
            };
            Ok(merge_all([&local, &hint], mode))
        })
        .await
    }

    async fn forward(
        &self,
        bucket: BucketName,
        key: Key,
        ctx: VersionVector,
        op: Operation,
        q: QuorumOverrides,
        prefs: &[String],
    ) -> Result<Option<Object>, KvError> {
        let req = PeerRequest::Coordinate {
            bucket,
            key,
            context: ctx,
            operation: op,
            quorum: q,
        };
        let mut last = String::from("no reachable node in the preference list");
        // A coordinator that got the request and did not answer may have
        // taken the write: a later refusal is then no definite outcome.
        let mut maybe_taken: Option<String> = None;
        // Only to members that may coordinate: a joining node would refuse.
        for node in prefs.iter().filter(|id| self.cluster.can_coordinate(id)) {
            match self
                .cluster
                .call(node, &req, self.config.request_timeout())
                .await
            {
                Ok(PeerResponse::Coordinated(o)) => {
                    metrics::counter!("quorra_forwarded_writes_total").increment(1);
                    return Ok(o);
                }
                Ok(PeerResponse::Error { code, message }) => {
                    return Err(match maybe_taken {
                        Some(earlier) => KvError::MaybeTaken(format!(
                            "{node} refused it ({code}: {message}), but {earlier} may have taken it"
                        )),
                        None => KvError::Remote { code, message },
                    })
                }
                Ok(PeerResponse::Unavailable(s)) => return Err(KvError::Unavailable(s)),
                Ok(other) => last = format!("{node}: unexpected answer {other:?}"),
                // Never sent: nothing taken.
                Err(e @ NetError::Connect { .. }) => last = format!("{node}: {e}"),
                Err(e) => {
                    last = format!("{node}: {e}");
                    maybe_taken.get_or_insert_with(|| node.clone());
                }
            }
        }
        Err(KvError::NoCoordinator(last))
    }

    /// Answers a request from `from` (the principal its certificate names):
    /// client requests from any role that may make them, everything else
    /// only from node certificates.
    pub async fn handle_peer(&self, from: Principal, req: PeerRequest) -> PeerResponse {
        let access = match &req {
            PeerRequest::Client(_) => Access::Client,
            _ => Access::Peer,
        };
        if let Err(denied) = authorize(&from, access) {
            metrics::counter!("quorra_forbidden_requests_total").increment(1);
            tracing::warn!(%from, "refused: {denied}");
            return PeerResponse::Error {
                code: denied.code(),
                message: denied.to_string(),
            };
        }
        // Failure detection is never refused for load: a busy node that
        // stopped answering probes would be declared down, and its traffic
        // would pile onto others as hints.
        let req = match req {
            PeerRequest::Gossip(msg) => return self.cluster.handle_gossip(&from.name, msg),
            PeerRequest::IndirectPing { target } => {
                return self.cluster.indirect_ping(target).await
            }
            other => other,
        };
        let permits = match access {
            Access::Client => &self.permits.clients,
            _ => &self.permits.peers,
        };
        let Ok(_permit) = permits.clone().try_acquire_owned() else {
            metrics::counter!("quorra_overloaded_total", "from" => if access == Access::Client { "client" } else { "peer" }).increment(1);
            return PeerResponse::Error {
                code: ErrorCode::Overloaded,
                message: "this node is at its limit of requests in flight; retry shortly".into(),
            };
        };
        let result = match req {
            PeerRequest::Client(ClientRequest::Get {
                bucket,
                key,
                quorum,
            }) => {
                metrics::counter!("quorra_client_requests_total", "op" => "get").increment(1);
                self.client_get(&from, bucket, key, quorum)
                    .await
                    .map(|(object, context)| PeerResponse::ClientObject { object, context })
            }
            PeerRequest::Client(ClientRequest::Write {
                bucket,
                key,
                context,
                operation,
                quorum,
            }) => {
                let p = self
                    .cluster
                    .ring()
                    .partition_of(bucket.as_str().as_bytes(), key.as_bytes());
                let n = self
                    .props(&bucket, &quorum)
                    .map(|p| p.n_val as usize)
                    .unwrap_or(1);
                let replica = self
                    .cluster
                    .ring()
                    .order(p)
                    .take(n)
                    .any(|id| id == self.cluster.me());
                let at = if replica { "replica" } else { "other" };
                metrics::counter!("quorra_client_writes_total", "at" => at).increment(1);
                self.client_write(&from, bucket, key, context.as_deref(), operation, quorum)
                    .await
                    .map(|(object, context)| PeerResponse::ClientObject { object, context })
            }
            PeerRequest::Client(ClientRequest::ClusterInfo) => {
                return PeerResponse::ClusterInfo {
                    partitions: self.config.partitions,
                    tokens: self.config.tokens,
                    node: self.cluster.me().to_owned(),
                    members: self.cluster.members(),
                }
            }
            // Answered above, before the permits.
            PeerRequest::Gossip(_) | PeerRequest::IndirectPing { .. } => return PeerResponse::Ok,
            PeerRequest::ReplicaGet {
                bucket,
                key,
                hint_for,
            } => self
                .local_read(bucket, key, hint_for)
                .await
                .map(PeerResponse::Object),
            PeerRequest::ReplicaPut {
                bucket,
                key,
                object,
                mode,
                durable,
                hint_for,
            } => self
                .store_replica(bucket, key, object, mode, durable, hint_for)
                .await
                .map(|durable| PeerResponse::Stored { durable }),
            PeerRequest::Coordinate {
                bucket,
                key,
                context,
                operation,
                quorum,
            } => self
                .write(bucket, key, context, operation, quorum, true)
                .await
                .map(PeerResponse::Coordinated),
        };
        result.unwrap_or_else(|e| match e {
            KvError::Unavailable(s) => PeerResponse::Unavailable(s),
            e => PeerResponse::Error {
                code: e.code(),
                message: e.to_string(),
            },
        })
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, KvError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| KvError::Task(e.to_string()))?
        .map_err(KvError::from)
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
