//! QUIC between peers (quinn over rustls with mutual TLS).
//!
//! One connection per peer, reused from a pool and replaced when it dies; one
//! bidirectional stream per request. A frame is a 4-byte big-endian length
//! and an msgpack [`Envelope`] holding a [`Message`]: a request with its id
//! one way, the [`Reply`] with the same id back. Frames over the size limit,
//! frames that do not decode and unknown protocol versions get a refusal on
//! their stream; the connection and the node carry on.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use quorra_core::auth::Principal;
use quorra_core::proto::{Ask, Envelope, Message, Refusal, Reply, Request, PROTOCOL_VERSION};
use quorra_core::ErrorCode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

use crate::tls::{peer_principal, Identity, TlsError, SERVER_NAME};

/// Transport failures.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum NetError {
    /// The endpoint could not be set up.
    #[error("cannot listen for peers on {addr}: {reason}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// TLS material is unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Connecting failed (unreachable, or refused by TLS).
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// The peer.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The request or its answer failed in flight.
    #[error("request to {addr} failed: {reason}")]
    Request {
        /// The peer.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// No answer in time.
    #[error("request to {addr} timed out after {after:?}")]
    Timeout {
        /// The peer.
        addr: SocketAddr,
        /// The limit.
        after: Duration,
    },
    /// A frame was too large or malformed.
    #[error("bad frame: {0}")]
    Frame(String),
    /// A frame could not be read whole (the stream failed or stalled).
    #[error("incomplete frame: {0}")]
    Stream(String),
}

/// How long a peer may take to send one whole request frame.
pub const REQUEST_READ_DEADLINE: Duration = Duration::from_secs(30);

/// Handles one incoming request from the principal its certificate names.
pub type Handler =
    Arc<dyn Fn(Principal, Request) -> Pin<Box<dyn Future<Output = Reply> + Send>> + Send + Sync>;

/// A node's QUIC endpoint: server and client on one UDP socket.
pub struct Transport {
    endpoint: quinn::Endpoint,
    pool: Mutex<HashMap<SocketAddr, (quinn::Connection, Principal)>>,
    max_frame: usize,
    next_id: AtomicU64,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("local", &self.endpoint.local_addr().ok())
            .finish_non_exhaustive()
    }
}

fn transport_config() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(Duration::from_secs(2)));
    if let Ok(idle) = quinn::IdleTimeout::try_from(Duration::from_secs(10)) {
        t.max_idle_timeout(Some(idle));
    }
    Arc::new(t)
}

impl Transport {
    /// Binds `addr` with this node's certificates. Frames larger than
    /// `max_frame` bytes are refused.
    pub fn bind(
        addr: SocketAddr,
        certs: &Identity,
        max_frame: usize,
    ) -> Result<Arc<Self>, NetError> {
        let mut server = certs.server_config()?;
        server.transport_config(transport_config());
        let mut client = certs.client_config()?;
        client.transport_config(transport_config());
        let bind_err = |reason: String| NetError::Bind { addr, reason };
        let socket = std::net::UdpSocket::bind(addr).map_err(|e| bind_err(e.to_string()))?;
        let runtime =
            quinn::default_runtime().ok_or_else(|| bind_err("no async runtime".into()))?;
        let endpoint_config = quinn::EndpointConfig::new(Arc::new(certs.reset_key()));
        let mut endpoint = quinn::Endpoint::new(endpoint_config, Some(server), socket, runtime)
            .map_err(|e| bind_err(e.to_string()))?;
        endpoint.set_default_client_config(client);
        Ok(Arc::new(Self {
            endpoint,
            pool: Mutex::new(HashMap::new()),
            max_frame,
            next_id: AtomicU64::new(1),
        }))
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr, NetError> {
        self.endpoint.local_addr().map_err(|e| NetError::Bind {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            reason: e.to_string(),
        })
    }

    /// Serves incoming connections with `handler` until the endpoint closes.
    pub fn serve(self: &Arc<Self>, handler: Handler) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            while let Some(incoming) = this.endpoint.accept().await {
                let handler = handler.clone();
                let max = this.max_frame;
                tokio::spawn(async move {
                    let remote = incoming.remote_address();
                    match incoming.await {
                        Ok(conn) => serve_connection(conn, handler, max).await,
                        Err(e) => tracing::debug!(%remote, "peer handshake refused: {e}"),
                    }
                });
            }
        })
    }

    /// Closes the endpoint: every connection ends, [`Self::serve`] returns.
    pub fn close(&self) {
        self.endpoint.close(0u32.into(), b"shutdown");
    }

    fn pooled(&self, addr: SocketAddr) -> Option<(quinn::Connection, Principal)> {
        let pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
        pool.get(&addr)
            .filter(|(c, _)| c.close_reason().is_none())
            .cloned()
    }

    async fn connect(&self, addr: SocketAddr) -> Result<(quinn::Connection, Principal), NetError> {
        if let Some(c) = self.pooled(addr) {
            return Ok(c);
        }
        let err = |reason: String| NetError::Connect { addr, reason };
        let conn = self
            .endpoint
            .connect(addr, SERVER_NAME)
            .map_err(|e| err(e.to_string()))?
            .await
            .map_err(|e| err(e.to_string()))?;
        let peer = peer_principal(&conn);
        self.pool
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(addr, (conn.clone(), peer.clone()));
        Ok((conn, peer))
    }

    /// Drops the pooled connection to `addr`; the next request reconnects.
    pub fn forget(&self, addr: SocketAddr) {
        self.pool
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&addr);
    }

    /// Sends `req` to `addr` and waits up to `timeout` for its answer,
    /// decoded as the answer to an `A`.
    pub async fn ask<A: Ask>(
        &self,
        addr: SocketAddr,
        req: A,
        timeout: Duration,
    ) -> Result<Result<A::Answer, Refusal>, NetError> {
        let reply = self.request(addr, &req.into(), timeout).await?;
        reply
            .decode::<A>()
            .map_err(|e| NetError::Frame(e.to_string()))
    }

    /// Sends `req` to `addr` and waits up to `timeout` for the answer.
    pub async fn request(
        &self,
        addr: SocketAddr,
        req: &Request,
        timeout: Duration,
    ) -> Result<Reply, NetError> {
        self.request_from(addr, req, timeout)
            .await
            .map(|(_, answer)| answer)
    }

    /// [`Self::request`], also returning who answered (the principal the
    /// answering peer's certificate names).
    pub async fn request_from(
        &self,
        addr: SocketAddr,
        req: &Request,
        timeout: Duration,
    ) -> Result<(Principal, Reply), NetError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = encode_frame(&Envelope::new(Message::Request {
            id,
            request: req.clone(),
        }))?;
        let attempt = async {
            let (conn, peer) = self.connect(addr).await?;
            let fail = |reason: String| NetError::Request { addr, reason };
            let (mut send, mut recv) = match conn.open_bi().await {
                Ok(s) => s,
                Err(e) => {
                    self.forget(addr);
                    return Err(fail(e.to_string()));
                }
            };
            send.write_all(&frame)
                .await
                .map_err(|e| fail(e.to_string()))?;
            send.finish().map_err(|e| fail(e.to_string()))?;
            let env: Envelope<Message> = read_frame(&mut recv, self.max_frame)
                .await
                .map_err(|e| fail(e.to_string()))?;
            if env.version != PROTOCOL_VERSION {
                return Err(NetError::Frame(format!(
                    "{addr} answered in protocol version {}; this build speaks {PROTOCOL_VERSION}",
                    env.version
                )));
            }
            match env.body {
                Message::Response {
                    id: answered,
                    reply,
                } if answered == Some(id) => Ok((peer, reply)),
                // No id: the peer could not read the request, and may only
                // refuse it.
                Message::Response { id: None, reply } if reply.refused().is_some() => {
                    Ok((peer, reply))
                }
                Message::Response { id: answered, .. } => Err(NetError::Frame(format!(
                    "the answer names request {answered:?}, not {id}"
                ))),
                Message::Request { .. } => Err(NetError::Frame(
                    "a request came back where an answer was due".into(),
                )),
            }
        };
        let result = match tokio::time::timeout(timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(NetError::Timeout {
                addr,
                after: timeout,
            }),
        };
        if result.is_err() {
            // The connection may belong to a peer's previous life: start
            // afresh next time.
            self.forget(addr);
        }
        result
    }
}

async fn serve_connection(conn: quinn::Connection, handler: Handler, max_frame: usize) {
    let peer = peer_principal(&conn);
    if peer.role.is_none() {
        // A CA certificate with no Quorra role may do nothing: do not let it
        // hold streams and frame buffers either.
        tracing::warn!(%peer, "connection refused: the certificate has no Quorra role");
        conn.close(2u32.into(), b"certificate has no quorra role");
        return;
    }
    loop {
        let (mut send, mut recv) = match conn.accept_bi().await {
            Ok(s) => s,
            Err(_) => return,
        };
        let handler = handler.clone();
        let peer = peer.clone();
        tokio::spawn(async move {
            // A peer that opens a stream and sends nothing (or trickles)
            // does not hold it, and its task, forever.
            let read = tokio::time::timeout(
                REQUEST_READ_DEADLINE,
                read_frame::<Envelope<Message>>(&mut recv, max_frame),
            )
            .await
            .unwrap_or_else(|_| {
                Err(NetError::Stream(format!(
                    "no whole request within {REQUEST_READ_DEADLINE:?}"
                )))
            });
            let (id, reply) = match read {
                Ok(env) if env.version != PROTOCOL_VERSION => (
                    None,
                    Reply::error(
                        ErrorCode::InvalidParameter,
                        format!(
                            "protocol version {} is not supported (this node speaks {PROTOCOL_VERSION})",
                            env.version
                        ),
                    ),
                ),
                Ok(Envelope {
                    body: Message::Request { id, request },
                    ..
                }) => (Some(id), handler(peer, request).await),
                Ok(Envelope {
                    body: Message::Response { .. },
                    ..
                }) => (
                    None,
                    Reply::error(
                        ErrorCode::InvalidParameter,
                        "an answer came where a request was due",
                    ),
                ),
                Err(e) => {
                    let _ = recv.stop(1u32.into());
                    // A frame that is bad is the sender's error; one that
                    // did not arrive whole is worth another try.
                    let code = match e {
                        NetError::Stream(_) => ErrorCode::Timeout,
                        _ => ErrorCode::InvalidParameter,
                    };
                    (None, Reply::error(code, e.to_string()))
                }
            };
            match encode_frame(&Envelope::new(Message::Response { id, reply })) {
                Ok(frame) => {
                    let _ = send.write_all(&frame).await;
                    let _ = send.finish();
                    // Let the peer read the answer before the stream is dropped.
                    let _ = send.stopped().await;
                }
                Err(e) => tracing::warn!("cannot encode a peer response: {e}"),
            }
        });
    }
}

/// Encodes a value as one frame.
pub fn encode_frame<T: Serialize>(value: &T) -> Result<Vec<u8>, NetError> {
    let body = rmp_serde::to_vec(value).map_err(|e| NetError::Frame(e.to_string()))?;
    let len = u32::try_from(body.len()).map_err(|_| NetError::Frame("frame over 4 GiB".into()))?;
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Reads one frame of at most `max` bytes.
pub async fn read_frame<T: DeserializeOwned>(
    recv: &mut quinn::RecvStream,
    max: usize,
) -> Result<T, NetError> {
    let mut len = [0u8; 4];
    recv.read_exact(&mut len)
        .await
        .map_err(|e| NetError::Stream(format!("reading frame length: {e}")))?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(NetError::Frame(format!(
            "frame of {len} bytes exceeds the limit of {max}"
        )));
    }
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body)
        .await
        .map_err(|e| NetError::Stream(format!("reading frame body: {e}")))?;
    rmp_serde::from_slice(&body).map_err(|e| NetError::Frame(format!("undecodable frame: {e}")))
}
