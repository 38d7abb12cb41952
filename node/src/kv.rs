//! The node's request edge: client requests (HTTP and QUIC alike) and peer
//! requests come in here, are checked, and go to the node's state machine
//! through the [`Driver`].
//!
//! - **Client requests** come in through [`Kv::client_get`] and
//!   [`Kv::client_write`]: one permission check
//!   ([`quorra_core::auth::authorize_bucket`]: the role, and the
//!   principal's grants on the bucket), one validation of names, values and
//!   contexts against the node's limits, and contexts authenticated under
//!   the cluster secret. How a read or write is then coordinated (forward
//!   or coordinate, quorums, stand-ins, read repair, deletes) is the state
//!   machine's: see [`quorra_core::node`].
//! - **Requests over QUIC** come in through [`Kv::handle_request`]: peer
//!   requests only from node
//!   certificates, within the peer concurrency limit (failure detection is
//!   never refused for load).

use std::sync::Arc;

use quorra_core::auth::{authorize, authorize_bucket, Access, Denied, Perm, Principal, Role};
use quorra_core::bucket::NameError;
use quorra_core::context::{CausalContext, ContextError, ContextKey};
use quorra_core::crdt::{self, CrdtError};
use quorra_core::node::{Failure, Request};
use quorra_core::proto::{
    ClientObject, ClientRequest, ClusterInfo, ClusterShape, Get, Operation, PeerRequest, Refusal,
    Reply, Request as WireRequest, Write,
};
use quorra_core::{BucketName, ErrorCode, Key, Object, QuorumOverrides, VersionVector};
use thiserror::Error;
use tokio::sync::Semaphore;

use crate::config::NodeConfig;
use crate::driver::Driver;
use crate::store::ObjectStore;

pub use crate::driver::now_ms;

/// A failed key-value request.
#[derive(Debug, Error)]
pub enum KvError {
    /// The request failed in the cluster (quorum, store, coordinator).
    #[error(transparent)]
    Failed(#[from] Failure),
    /// The caller may not make this request.
    #[error(transparent)]
    Forbidden(#[from] Denied),
    /// The context is unusable (malformed, or not this cluster's).
    #[error(transparent)]
    Context(#[from] ContextError),
    /// A name or value is refused by the limits.
    #[error(transparent)]
    Invalid(#[from] NameError),
    /// No answer within the request timeout (a write may have happened).
    #[error("no answer within {0} ms (a write's outcome is unknown)")]
    Timeout(u64),
    /// A request that does not fit the bucket's data type.
    #[error(transparent)]
    Datatype(#[from] CrdtError),
}

impl KvError {
    /// The stable code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Failed(f) => f.code(),
            Self::Forbidden(d) => d.code(),
            Self::Context(e) => e.code(),
            Self::Invalid(e) => e.code,
            Self::Timeout(_) => ErrorCode::Timeout,
            Self::Datatype(e) => e.code(),
        }
    }
}

/// Counts a client request by operation and outcome, and times it.
async fn observed<T>(
    op: &'static str,
    request: impl std::future::Future<Output = Result<T, KvError>>,
) -> Result<T, KvError> {
    use crate::metric_names as m;
    let started = std::time::Instant::now();
    let result = request.await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => e.code().as_str(),
    };
    if matches!(&result, Err(e) if e.code() == ErrorCode::QuorumUnavailable) {
        metrics::counter!(m::QUORUM_FAILURES, "op" => op).increment(1);
    }
    metrics::counter!(m::KV_REQUESTS, "op" => op, "outcome" => outcome).increment(1);
    metrics::histogram!(m::KV_REQUEST_SECONDS, "op" => op).record(started.elapsed().as_secs_f64());
    result
}

/// The node's key-value service.
#[derive(Debug, Clone)]
pub struct Kv {
    driver: Arc<Driver>,
    config: Arc<NodeConfig>,
    context_key: ContextKey,
    permits: Arc<Permits>,
}

/// The bounds on requests in flight.
#[derive(Debug)]
struct Permits {
    /// Client requests, HTTP and QUIC alike.
    clients: Arc<Semaphore>,
    /// Requests from peers.
    peers: Arc<Semaphore>,
}

impl Kv {
    /// A service over `driver`, handing out contexts authenticated with
    /// `context_key`.
    pub fn new(driver: Arc<Driver>, config: Arc<NodeConfig>, context_key: ContextKey) -> Self {
        let permits = Arc::new(Permits {
            clients: Arc::new(Semaphore::new(config.max_concurrent_requests)),
            peers: Arc::new(Semaphore::new(config.max_concurrent_peer_requests)),
        });
        Self {
            driver,
            config,
            context_key,
            permits,
        }
    }

    /// Permits for client requests in flight (HTTP and QUIC share them).
    pub fn client_permits(&self) -> &Arc<Semaphore> {
        &self.permits.clients
    }

    /// The store underneath.
    pub fn store(&self) -> &Arc<ObjectStore> {
        self.driver.store()
    }

    /// The node's configuration.
    pub fn config(&self) -> &Arc<NodeConfig> {
        &self.config
    }

    /// The driver: the node's view of the cluster.
    pub fn cluster(&self) -> &Arc<Driver> {
        &self.driver
    }

    /// Runs `request` on the state machine, within the request timeout.
    async fn run(&self, request: Request) -> Result<Option<Object>, KvError> {
        // Reads and writes answer within their replica and forwarding
        // timeouts; this bounds a storage operation that hangs.
        let limit = self.config.request_timeout_ms.saturating_mul(2);
        let answer = tokio::time::timeout(
            std::time::Duration::from_millis(limit),
            self.driver.request(request),
        )
        .await
        .map_err(|_| KvError::Timeout(limit))?;
        Ok(answer?)
    }

    /// A client's read: checked, then coordinated. Returns the object and
    /// its authenticated context.
    pub async fn client_get(
        &self,
        who: &Principal,
        bucket: BucketName,
        key: Key,
        quorum: QuorumOverrides,
    ) -> Result<(Option<Object>, Option<String>), KvError> {
        observed("get", async {
            authorize_bucket(who, bucket.as_str(), Perm::Read)?;
            self.config.limits.check_names(&bucket, &key)?;
            let object = self
                .run(Request::Get {
                    bucket: bucket.clone(),
                    key: key.clone(),
                    quorum,
                })
                .await?;
            let context = self.context_for(&bucket, &key, object.as_ref());
            Ok((object, context))
        })
        .await
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
        operation: Operation,
        quorum: QuorumOverrides,
    ) -> Result<(Option<Object>, Option<String>), KvError> {
        let op = match operation {
            Operation::Put(_) => "put",
            Operation::Delete => "delete",
            Operation::Crdt(_) => "crdt",
        };
        observed(op, async {
            authorize_bucket(who, bucket.as_str(), Perm::Write)?;
            let limits = &self.config.limits;
            limits.check_names(&bucket, &key)?;
            let datatype = self.driver.bucket_props(&bucket).datatype;
            match (&operation, datatype) {
                (Operation::Put(content), None) => {
                    limits.check_content(content)?;
                    // Stores read a value of this type as a data type's state.
                    if content.content_type == crdt::CONTENT_TYPE {
                        return Err(NameError {
                            code: ErrorCode::InvalidParameter,
                            message: format!(
                                "the content type {} is reserved for data-type states; use another",
                                crdt::CONTENT_TYPE
                            ),
                        }
                        .into());
                    }
                }
                (Operation::Delete, None) => {}
                (Operation::Put(_) | Operation::Delete, Some(datatype)) => {
                    return Err(CrdtError::NotPlain {
                        bucket: bucket.to_string(),
                        datatype,
                    }
                    .into())
                }
                (Operation::Crdt(op), datatype) => {
                    crdt::check_op(datatype, &bucket, op, context.is_some())?;
                    let size = rmp_serde::to_vec(op).map_or(usize::MAX, |b| b.len());
                    if size > limits.max_value_bytes {
                        return Err(NameError {
                            code: ErrorCode::ValueTooLarge,
                            message: format!(
                                "the operation is {size} bytes encoded; the limit is {}",
                                limits.max_value_bytes
                            ),
                        }
                        .into());
                    }
                }
            }
            let context = match context {
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
                .run(Request::Write {
                    bucket: bucket.clone(),
                    key: key.clone(),
                    context,
                    operation,
                    quorum,
                })
                .await?;
            let context = self.context_for(&bucket, &key, object.as_ref());
            Ok((object, context))
        })
        .await
    }

    /// The authenticated context a client gets with `object`: its clock,
    /// or in a data-type bucket the clock of its state (what a remove
    /// names; after a set write, of the coordinator's set).
    fn context_for(
        &self,
        bucket: &BucketName,
        key: &Key,
        object: Option<&Object>,
    ) -> Option<String> {
        let object = object?;
        let clock = match self.driver.bucket_props(bucket).datatype {
            None => object.clock().clone(),
            Some(_) => crdt::read_clock(object)?,
        };
        Some(CausalContext(clock).encode(&self.context_key, bucket, key))
    }

    /// Answers a request from `from` (the principal its certificate names):
    /// client requests from any role that may make them, peer requests
    /// only from node certificates.
    pub async fn handle_request(&self, from: Principal, req: WireRequest) -> Reply {
        let access = match &req {
            WireRequest::Client(_) => Access::Client,
            WireRequest::Peer(_) => Access::Peer,
        };
        if let Err(denied) = authorize(&from, access) {
            metrics::counter!(crate::metric_names::FORBIDDEN_REQUESTS).increment(1);
            tracing::warn!(%from, "refused: {denied}");
            return Reply::error(denied.code(), denied.to_string());
        }
        match req {
            WireRequest::Peer(peer) => self.handle_peer(&from, peer).await,
            WireRequest::Client(client) => {
                let from = self.certificate_grants(from);
                self.handle_client(&from, client).await
            }
        }
    }

    /// A client or admin certificate's principal, narrowed by the
    /// cluster policy's grants for its name. Without an entry, an admin
    /// certificate keeps every permission, and a client certificate its
    /// role's on every bucket while the cluster is open, and none once it
    /// has tokens (closed): QUIC reaches no more than HTTP does.
    pub fn certificate_grants(&self, from: Principal) -> Principal {
        let role = from.role;
        if !matches!(role, Some(Role::Client | Role::Admin)) {
            return from;
        }
        let grants = self.driver.with_access_policy(|p| {
            let p = p?;
            match p.certs.get(&from.name) {
                Some(g) => Some(g.clone()),
                None if p.closed() && role == Some(Role::Client) => Some(Vec::new()),
                None => None,
            }
        });
        match grants {
            Some(grants) => from.with_grants(grants),
            None => from,
        }
    }

    async fn handle_peer(&self, from: &Principal, req: PeerRequest) -> Reply {
        // Failure detection is never refused for load: a busy node that
        // stopped answering probes would be declared down, and its traffic
        // would pile onto others as hints.
        let failure_detection =
            matches!(req, PeerRequest::Gossip(_) | PeerRequest::IndirectPing(_));
        let _permit = if failure_detection {
            None
        } else {
            match self.permits.peers.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => return overloaded("peer"),
            }
        };
        self.driver.peer(&from.name, req).await
    }

    async fn handle_client(&self, from: &Principal, req: ClientRequest) -> Reply {
        let Ok(_permit) = self.permits.clients.clone().try_acquire_owned() else {
            return overloaded("client");
        };
        let object = |(object, context)| ClientObject { object, context };
        match req {
            ClientRequest::Get(Get {
                bucket,
                key,
                quorum,
            }) => {
                metrics::counter!(crate::metric_names::CLIENT_REQUESTS, "op" => "get").increment(1);
                let got = self.client_get(from, bucket, key, quorum).await;
                Reply::answer::<Get>(got.map(object).map_err(Refusal::from))
            }
            ClientRequest::Write(Write {
                bucket,
                key,
                context,
                operation,
                quorum,
            }) => {
                let at = if self.is_replica(&bucket, &key, &quorum) {
                    "replica"
                } else {
                    "other"
                };
                metrics::counter!(crate::metric_names::CLIENT_WRITES, "at" => at).increment(1);
                // A certificate that may write but not read gets the
                // context alone: the object would show the values.
                let may_read = authorize_bucket(from, bucket.as_str(), Perm::Read).is_ok();
                let written = self
                    .client_write(from, bucket, key, context.as_deref(), operation, quorum)
                    .await
                    .map(|(o, ctx)| (o.filter(|_| may_read), ctx));
                Reply::answer::<Write>(written.map(object).map_err(Refusal::from))
            }
            ClientRequest::ClusterInfo(ClusterInfo) => {
                // A cluster admin's certificate (a gateway's, which checks
                // the callers' tokens itself) gets the layout with the
                // access policy; any other, the layout without it.
                let admin = from.role == Some(quorra_core::auth::Role::Admin)
                    && authorize_bucket(from, "*", Perm::Admin).is_ok();
                // An admin's always carries one (empty while the cluster is
                // open), so a gateway can tell "open" from "withheld".
                let layout = if admin {
                    self.driver.layout().map(|mut l| {
                        l.access.get_or_insert_with(Default::default);
                        l
                    })
                } else {
                    self.driver.public_layout()
                };
                Reply::answer::<ClusterInfo>(Ok(ClusterShape {
                    layout,
                    node: self.driver.me().to_owned(),
                    members: self.driver.members(),
                }))
            }
        }
    }

    /// Whether this node holds a replica of the key (for the metric that
    /// shows how well clients route).
    fn is_replica(&self, bucket: &BucketName, key: &Key, q: &QuorumOverrides) -> bool {
        self.driver.is_replica(bucket, key, q)
    }
}

fn overloaded(from: &'static str) -> Reply {
    metrics::counter!(crate::metric_names::OVERLOADED, "from" => from).increment(1);
    Reply::error(
        ErrorCode::Overloaded,
        "this node is at its limit of requests in flight; retry shortly",
    )
}

impl From<KvError> for Refusal {
    fn from(e: KvError) -> Self {
        match e {
            KvError::Failed(f) => f.into(),
            e => Self::error(e.code(), e.to_string()),
        }
    }
}
