//! The client: token-aware routing over a pool of QUIC connections, with
//! retries, and an API that makes sibling resolution explicit.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use quorra_core::access::AccessPolicy;
use quorra_core::bucket::{BucketProps, BucketTable};
use quorra_core::membership::MemberInfo;
use quorra_core::proto::{Ask, ClientObject, ClusterInfo, ClusterShape, Get, Operation, Write};
use quorra_core::ring::Ring;
use quorra_core::{BucketName, Content, Key, Limits, Object, QuorumOverrides};

use crate::error::ClientError;
use crate::tls::Identity;
use crate::transport::{NetError, Transport};

/// How to reach and authenticate to a cluster.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Peer addresses of one or more nodes.
    pub seeds: Vec<SocketAddr>,
    /// The certificate dir (`ca.pem`, `NAME.pem`, `NAME-key.pem`).
    pub cert_dir: PathBuf,
    /// The certificate name to present (`quorra certs --clients NAME`).
    pub name: String,
    /// Default time one attempt may take.
    pub timeout: Duration,
    /// Attempts per operation (1 = no retry).
    pub attempts: u32,
    /// First backoff between attempts; doubles each time, with jitter.
    pub backoff: Duration,
    /// How often the client refreshes its view of the ring.
    pub refresh: Duration,
}

impl ClientConfig {
    /// A config with sensible defaults: 5 s per attempt, 4 attempts, 50 ms
    /// first backoff, ring refreshed every 2 s.
    pub fn new(
        seeds: Vec<SocketAddr>,
        cert_dir: impl Into<PathBuf>,
        name: impl Into<String>,
    ) -> Self {
        Self {
            seeds,
            cert_dir: cert_dir.into(),
            name: name.into(),
            timeout: Duration::from_secs(5),
            attempts: 4,
            backoff: Duration::from_millis(50),
            refresh: Duration::from_secs(2),
        }
    }
}

/// Per-request consistency and timeout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Quorum overrides (`r`, `w`, `dw`, `pr`, `pw`).
    pub quorum: QuorumOverrides,
    /// Time one attempt may take (default: the client's).
    pub timeout: Option<Duration>,
}

/// The opaque causal context of a read, to hand back with the next write.
///
/// The cluster authenticates it (for that key), so it is only ever one a
/// node handed out; the client never looks inside.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context(pub(crate) Option<String>);

/// Longest context the client accepts from a caller.
const MAX_CONTEXT_LEN: usize = 64 * 1024;

impl Context {
    /// The context as the HTTP API's `X-Quorra-Context` header value (empty
    /// for no context).
    pub fn encode(&self) -> String {
        self.0.clone().unwrap_or_default()
    }

    /// A context from an `X-Quorra-Context` header value. Only its shape is
    /// checked here; the cluster checks that it issued it.
    pub fn decode(s: &str) -> Result<Self, ClientError> {
        let s = s.trim();
        let ok = !s.is_empty()
            && s.len() <= MAX_CONTEXT_LEN
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(ClientError::BadRequest {
                code: quorra_core::ErrorCode::InvalidContext,
                message: "a context is URL-safe base64, as a read returned it".into(),
            });
        }
        Ok(Self(Some(s.to_owned())))
    }
}

/// One concurrent value of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    /// The bytes.
    pub bytes: Vec<u8>,
    /// The media type.
    pub content_type: String,
}

/// What a read returns: every live sibling (none when the key has no value)
/// and the one context that covers them all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fetched {
    /// The siblings: one value normally, several after concurrent writes.
    pub values: Vec<Value>,
    /// Hand this to the next write to replace every value read.
    pub context: Context,
}

impl Fetched {
    fn from_object(o: Option<Object>, context: Option<String>) -> Self {
        let Some(o) = o else {
            return Self {
                values: Vec::new(),
                context: Context(context),
            };
        };
        // Identical siblings (a retried write applied twice) read as one:
        // the context still covers both, so the next write replaces both.
        let mut values: Vec<Value> = Vec::new();
        for s in o.live_siblings() {
            let v = Value {
                bytes: s.content.value.clone(),
                content_type: s.content.content_type.clone(),
            };
            if !values.contains(&v) {
                values.push(v);
            }
        }
        Self {
            values,
            context: Context(context),
        }
    }

    /// Whether the key has no value.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

struct View {
    ring: Arc<Ring>,
    members: HashMap<String, MemberInfo>,
    /// Bucket properties, the cluster's.
    buckets: BucketTable,
    /// The access policy: only an admin certificate is sent it (empty
    /// while the cluster is open); `None`: not sent.
    access: Option<Arc<AccessPolicy>>,
    /// The layout version the view is of (it never goes back).
    version: u64,
    fetched: Instant,
}

struct Inner {
    config: ClientConfig,
    transport: Arc<Transport>,
    view: RwLock<View>,
    /// Nodes that failed recently, and until when to avoid them.
    avoid: Mutex<HashMap<String, Instant>>,
}

/// A connection to a Quorra cluster. Cheap to clone; clones share the pool.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("seeds", &self.inner.config.seeds)
            .finish_non_exhaustive()
    }
}

fn net_error(e: NetError) -> ClientError {
    match e {
        NetError::Timeout { .. } => ClientError::Timeout(e.to_string()),
        NetError::Connect { ref reason, .. }
            if reason.contains("certificate")
                || reason.contains("tls")
                || reason.contains("TLS") =>
        {
            ClientError::Unauthorized(e.to_string())
        }
        other => ClientError::Refused(other.to_string()),
    }
}

impl Client {
    /// Connects: loads the identity, reaches a seed and learns the ring.
    pub async fn connect(config: ClientConfig) -> Result<Self, ClientError> {
        let identity = Identity::load(&config.cert_dir, &config.name)?;
        let local: SocketAddr = if config.seeds.iter().all(|s| s.ip().is_loopback()) {
            SocketAddr::from(([127, 0, 0, 1], 0))
        } else {
            SocketAddr::from(([0, 0, 0, 0], 0))
        };
        let transport = Transport::bind(local, &identity, 64 * 1024 * 1024).map_err(net_error)?;
        let client = Self {
            inner: Arc::new(Inner {
                config,
                transport,
                view: RwLock::new(View {
                    ring: Arc::new(Ring::empty(1)),
                    members: HashMap::new(),
                    buckets: BucketTable::default(),
                    access: None,
                    version: 0,
                    fetched: Instant::now(),
                }),
                avoid: Mutex::new(HashMap::new()),
            }),
        };
        client.refresh().await?;
        Ok(client)
    }

    /// Refreshes the view of the ring from any reachable node.
    pub async fn refresh(&self) -> Result<(), ClientError> {
        let mut addrs: Vec<SocketAddr> = {
            let view = self
                .inner
                .view
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            view.members
                .values()
                .filter(|m| m.status.is_reachable())
                .map(|m| m.peer_addr)
                .collect()
        };
        addrs.extend(self.inner.config.seeds.iter().copied());
        let mut last = ClientError::Refused("no seed given".into());
        for addr in addrs {
            match self
                .inner
                .transport
                .ask(addr, ClusterInfo, self.inner.config.timeout)
                .await
            {
                Ok(Ok(ClusterShape {
                    layout: None, node, ..
                })) => {
                    last = ClientError::Refused(format!("{node} has not joined its cluster yet"));
                }
                Ok(Ok(ClusterShape {
                    layout: Some(layout),
                    node,
                    ..
                })) if layout.check().is_err() => {
                    last = ClientError::Refused(format!("{node} sent an invalid layout"));
                }
                Ok(Ok(ClusterShape {
                    layout: Some(layout),
                    members,
                    node,
                })) => {
                    let mut view = self
                        .inner
                        .view
                        .write()
                        .unwrap_or_else(PoisonError::into_inner);
                    if layout.version < view.version {
                        // A node behind the others: the view stays (a
                        // revoked token must not come back).
                        last = ClientError::Refused(format!(
                            "{node} is behind (layout {} < {})",
                            layout.version, view.version
                        ));
                        continue;
                    }
                    view.ring = Arc::new(Ring::build(&layout));
                    view.version = layout.version;
                    view.members = members.into_iter().map(|m| (m.id.clone(), m)).collect();
                    view.buckets = layout.buckets.unwrap_or_default();
                    view.access = layout.access.map(Arc::new);
                    view.fetched = Instant::now();
                    return Ok(());
                }
                Ok(Err(refusal)) => last = ClientError::from(refusal),
                Err(e) => last = net_error(e),
            }
        }
        Err(last)
    }

    /// The properties of `bucket` in the cluster's layout, as of the last
    /// refresh.
    pub fn bucket_props(&self, bucket: &str) -> BucketProps {
        self.view().buckets.props(bucket)
    }

    /// The cluster's access policy as of the last refresh: nodes send it
    /// to cluster admin certificates only (a gateway checks the callers'
    /// tokens with it), empty while the cluster is open; any other
    /// certificate gets `None`.
    pub fn access_policy(&self) -> Option<Arc<AccessPolicy>> {
        self.view().access.clone()
    }

    /// How long ago the view was last refreshed.
    pub fn view_age(&self) -> Duration {
        self.view().fetched.elapsed()
    }

    /// The HTTP addresses of the members reachable as of the last
    /// refresh, in id order (a node listening on every interface is
    /// reached at its peer address's IP).
    pub fn http_addrs(&self) -> Vec<SocketAddr> {
        let view = self.view();
        let mut members: Vec<&MemberInfo> = view
            .members
            .values()
            .filter(|m| m.status.is_reachable())
            .collect();
        members.sort_by(|a, b| a.id.cmp(&b.id));
        members
            .iter()
            .map(|m| {
                let mut addr = m.http_addr;
                if addr.ip().is_unspecified() {
                    addr.set_ip(m.peer_addr.ip());
                }
                addr
            })
            .collect()
    }

    fn view(&self) -> std::sync::RwLockReadGuard<'_, View> {
        self.inner
            .view
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The nodes to try for a key, best first: its preference list in ring
    /// order (the first is the key's primary coordinator), then every other
    /// node. Nodes that failed recently or are known down go last.
    pub fn route(&self, bucket: &str, key: &[u8]) -> Vec<(String, SocketAddr)> {
        let view = self
            .inner
            .view
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let p = view.ring.partition_of(bucket.as_bytes(), key);
        let now = Instant::now();
        let avoid = self
            .inner
            .avoid
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut good = Vec::new();
        let mut bad = Vec::new();
        for id in view.ring.order(p) {
            let Some(m) = view.members.get(id) else {
                continue;
            };
            let shunned =
                !m.status.is_reachable() || avoid.get(id).is_some_and(|until| *until > now);
            if shunned {
                bad.push((id.to_owned(), m.peer_addr))
            } else {
                good.push((id.to_owned(), m.peer_addr))
            }
        }
        good.extend(bad);
        good
    }

    fn shun(&self, id: &str) {
        let until = Instant::now() + self.inner.config.refresh.max(Duration::from_secs(1));
        self.inner
            .avoid
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.to_owned(), until);
    }

    async fn maybe_refresh(&self) {
        let stale = {
            let view = self
                .inner
                .view
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            view.fetched.elapsed() >= self.inner.config.refresh
        };
        if stale {
            let _ = self.refresh().await;
        }
    }

    /// [`Self::call`] with the request's timeout, or the client's default.
    pub(crate) async fn call_with<A: Ask>(
        &self,
        bucket: &str,
        key: &[u8],
        req: A,
        opts: &Options,
    ) -> Result<A::Answer, ClientError> {
        let timeout = opts.timeout.unwrap_or(self.inner.config.timeout);
        self.call(bucket, key, req, timeout).await
    }

    /// Sends a request for `bucket`/`key` to the best node, moving down the
    /// route and backing off (with jitter) on retryable failures.
    async fn call<A: Ask>(
        &self,
        bucket: &str,
        key: &[u8],
        req: A,
        timeout: Duration,
    ) -> Result<A::Answer, ClientError> {
        self.maybe_refresh().await;
        let req = req.into();
        // A data-type operation is not idempotent: it is sent again only
        // after a failure that says it was applied nowhere.
        let once = matches!(
            &req,
            quorra_core::proto::Request::Client(quorra_core::proto::ClientRequest::Write(w))
                if matches!(w.operation, quorra_core::proto::Operation::Crdt(_))
        );
        let attempts = self.inner.config.attempts.max(1);
        let mut backoff = self.inner.config.backoff;
        let mut last = ClientError::Refused("no node to send to".into());
        for attempt in 0..attempts {
            let route = self.route(bucket, key);
            let Some((id, addr)) = route.get(attempt as usize % route.len().max(1)).cloned() else {
                let _ = self.refresh().await;
                continue;
            };
            let reply = self.inner.transport.request(addr, &req, timeout).await;
            match reply.and_then(|r| r.decode::<A>().map_err(|e| NetError::Frame(e.to_string()))) {
                Ok(Ok(answer)) => return Ok(answer),
                Ok(Err(refusal)) => {
                    let e = ClientError::from(refusal);
                    if !e.is_retryable() || (once && !e.applied_nowhere()) {
                        return Err(e);
                    }
                    last = e;
                }
                Err(e) => {
                    self.shun(&id);
                    let sent = !matches!(e, NetError::Connect { .. });
                    last = net_error(e);
                    if matches!(last, ClientError::Unauthorized(_)) || (once && sent) {
                        return Err(last);
                    }
                }
            }
            if attempt + 1 < attempts {
                let jitter = rand::random_range(0..=backoff.as_millis() as u64);
                tokio::time::sleep(backoff / 2 + Duration::from_millis(jitter / 2)).await;
                backoff *= 2;
            }
        }
        Err(last)
    }

    pub(crate) fn names(bucket: &str, key: &[u8]) -> Result<(BucketName, Key), ClientError> {
        let limits = Limits {
            max_bucket_bytes: 255,
            max_key_bytes: usize::MAX,
            ..Limits::default()
        };
        let b = BucketName::parse(bucket, &limits).map_err(|e| ClientError::BadRequest {
            code: e.code,
            message: e.message,
        })?;
        let k = Key::parse(key.to_vec(), &limits).map_err(|e| ClientError::BadRequest {
            code: e.code,
            message: e.message,
        })?;
        Ok((b, k))
    }

    /// Reads a key: every live sibling and the context covering them.
    pub async fn get(&self, bucket: &str, key: impl AsRef<[u8]>) -> Result<Fetched, ClientError> {
        self.get_with(bucket, key, &Options::default()).await
    }

    /// [`Self::get`] with consistency options.
    pub async fn get_with(
        &self,
        bucket: &str,
        key: impl AsRef<[u8]>,
        opts: &Options,
    ) -> Result<Fetched, ClientError> {
        let (object, context) = self.get_object(bucket, key.as_ref(), opts).await?;
        Ok(Fetched::from_object(object, context))
    }

    /// Reads a key as the node answers it: the object (siblings and
    /// tombstones included) and its context token.
    pub async fn get_object(
        &self,
        bucket: &str,
        key: &[u8],
        opts: &Options,
    ) -> Result<(Option<Object>, Option<String>), ClientError> {
        let (b, k) = Self::names(bucket, key)?;
        let req = Get {
            bucket: b,
            key: k,
            quorum: opts.quorum,
        };
        let ClientObject { object, context } = self.call_with(bucket, key, req, opts).await?;
        Ok((object, context))
    }

    /// Writes a value. Pass the context of the read it replaces (`None`
    /// writes blindly: next to an existing value it becomes a sibling).
    /// Returns the new context.
    ///
    /// A put that timed out may have been applied: retried, it can leave a
    /// duplicate sibling with the same bytes, which a resolver collapses.
    pub async fn put(
        &self,
        bucket: &str,
        key: impl AsRef<[u8]>,
        value: impl Into<Vec<u8>>,
        context: Option<&Context>,
    ) -> Result<Context, ClientError> {
        self.put_with(
            bucket,
            key,
            value,
            "application/octet-stream",
            context,
            &Options::default(),
        )
        .await
    }

    /// [`Self::put`] with a content type and options.
    pub async fn put_with(
        &self,
        bucket: &str,
        key: impl AsRef<[u8]>,
        value: impl Into<Vec<u8>>,
        content_type: &str,
        context: Option<&Context>,
        opts: &Options,
    ) -> Result<Context, ClientError> {
        let content = Content::value(value.into(), content_type, 0);
        let (_, context) = self
            .write(bucket, key.as_ref(), Operation::Put(content), context, opts)
            .await?;
        Ok(Context(context))
    }

    /// Deletes with the context of a read (or, without one, whatever a
    /// quorum of replicas has seen).
    pub async fn delete(
        &self,
        bucket: &str,
        key: impl AsRef<[u8]>,
        context: Option<&Context>,
    ) -> Result<(), ClientError> {
        self.write(
            bucket,
            key.as_ref(),
            Operation::Delete,
            context,
            &Options::default(),
        )
        .await
        .map(|_| ())
    }

    /// Writes `operation` (a put, a delete or a data-type operation) with
    /// the raw context token of a read, if any. Returns the object after
    /// the write (as the coordinator holds it; `None` for a caller that
    /// may write but not read) and its new context token.
    pub async fn write(
        &self,
        bucket: &str,
        key: &[u8],
        operation: Operation,
        context: Option<&Context>,
        opts: &Options,
    ) -> Result<(Option<Object>, Option<String>), ClientError> {
        let (b, k) = Self::names(bucket, key)?;
        let req = Write {
            bucket: b,
            key: k,
            context: context.and_then(|c| c.0.clone()),
            operation,
            quorum: opts.quorum,
        };
        let ClientObject { object, context } = self.call_with(bucket, key, req, opts).await?;
        Ok((object, context))
    }

    /// Read-modify-write: reads the key, merges any siblings with `resolve`,
    /// applies `update`, and writes back with the context it read. Returns
    /// the new context.
    ///
    /// `resolve` gets every sibling (at least two) and returns the merged
    /// value; it must keep what each sibling holds (a union, a sum), since
    /// it is also used to fold in a racing writer. If the write comes back
    /// with siblings (another writer raced this one), they are resolved and
    /// written again, up to a few times; a race past that is left as
    /// siblings for the next read, so nothing is lost either way.
    pub async fn modify<R, U>(
        &self,
        bucket: &str,
        key: impl AsRef<[u8]>,
        resolve: R,
        update: U,
    ) -> Result<Context, ClientError>
    where
        R: Fn(&[Value]) -> Vec<u8>,
        U: FnOnce(Option<Vec<u8>>) -> Vec<u8>,
    {
        const RACE_ATTEMPTS: usize = 8;
        let key = key.as_ref();
        let fetched = self.get(bucket, key).await?;
        let current = match fetched.values.as_slice() {
            [] => None,
            [one] => Some(one.bytes.clone()),
            many => Some(resolve(many)),
        };
        let opts = Options::default();
        let mut value = update(current);
        let mut context = fetched.context;
        for _ in 0..RACE_ATTEMPTS {
            let content = Content::value(value, "application/octet-stream", 0);
            let (object, token) = self
                .write(bucket, key, Operation::Put(content), Some(&context), &opts)
                .await?;
            let after = Fetched::from_object(object, token);
            if after.values.len() <= 1 {
                return Ok(after.context);
            }
            // Raced: fold the other writers' values into ours and try again.
            value = resolve(&after.values);
            context = after.context;
        }
        Ok(context)
    }
}
