//! `quorra gateway`: the same HTTP API from a process that stores nothing,
//! for deployments that want a separate front tier.
//!
//! Keys and data types go through the token-aware client
//! ([`quorra_client::Client`], a [`KvService`]): straight to a replica of
//! the key over QUIC, the gateway checking the caller's token and grants
//! itself (it connects with a cluster admin certificate, so the nodes send
//! it the access policy, and act on its behalf). Every other route
//! (cluster views, buckets, layout and access administration) is
//! forwarded over HTTP to a reachable node, with the caller's
//! `Authorization` header, so the node checks it as if called directly.
//! `/health`, `/ready`, `/metrics` and `/openapi.json` are the gateway's
//! own; the document is the node's, as the API is.
//!
//! The gateway learns the cluster (members, bucket properties, tokens)
//! from the nodes and looks again every second, so a change reaches it
//! within about a second; it never takes an older layout than it has (a
//! revoked token does not come back from a node behind), and it fails
//! closed: without the policy (a certificate that is not a cluster
//! admin's) it does not start, and with a view older than 10 s (no node
//! answered) it refuses every request that needs a token.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRef, Request, State};
use axum::http::{header, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use clap::Args;
use quorra_core::{ErrorCode, Limits};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::error::ApiError;
use super::{crdt, kv, openapi, Guard, KvRoutes};
use crate::service::KvService;

/// Settings for `quorra gateway`.
#[derive(Debug, Clone, Args)]
pub struct GatewayArgs {
    /// Peer (QUIC) addresses of nodes to learn the cluster from, comma
    /// separated.
    #[arg(long, value_delimiter = ',', required = true, env = "QUORRA_SEEDS")]
    pub seeds: Vec<SocketAddr>,
    /// The directory with the cluster's `ca.pem` and the gateway's
    /// certificate.
    #[arg(long, value_name = "DIR", env = "QUORRA_CERT_DIR")]
    pub cert_dir: PathBuf,
    /// The gateway's certificate: a cluster admin's (`quorra certs --admins
    /// NAME`), since it acts for every caller and checks their tokens.
    #[arg(long, default_value = "gateway")]
    pub name: String,
    /// Where to serve HTTP.
    #[arg(long, default_value = "127.0.0.1:8080", env = "QUORRA_HTTP_ADDR")]
    pub http_addr: SocketAddr,
    /// Log filter, as `RUST_LOG`.
    #[arg(long, default_value = "info", env = "QUORRA_LOG")]
    pub log: String,
}

/// What the gateway's handlers reach.
#[derive(Clone)]
struct GatewayState {
    client: quorra_client::Client,
    routes: KvRoutes,
    http: reqwest::Client,
}

impl FromRef<GatewayState> for KvRoutes {
    fn from_ref(state: &GatewayState) -> Self {
        state.routes.clone()
    }
}

/// Runs a gateway until `shutdown` completes. Prints one line to stdout
/// once it serves: `ready gateway http=http://ADDR`.
pub async fn run(
    args: GatewayArgs,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // The recorder first, so the first requests count too.
    let _ = crate::server::metrics_handle();
    let config = quorra_client::ClientConfig::new(args.seeds.clone(), &args.cert_dir, &args.name);
    let client = quorra_client::Client::connect(config).await?;
    // Fail closed: without the policy it could not tell a closed cluster
    // from an open one.
    anyhow::ensure!(
        client.access_policy().is_some(),
        "the nodes did not send the gateway the access policy: its certificate {:?} must be a cluster admin's with no narrowing entry (quorra certs --out DIR --admins NAME)",
        args.name
    );
    let listener = TcpListener::bind(args.http_addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.http_addr))?;
    let addr = listener.local_addr()?;
    let refresher = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                if let Err(e) = client.refresh().await {
                    tracing::warn!("cannot refresh the view of the cluster: {e}");
                }
            }
        })
    };
    let app = router(client, crate::config::NodeConfig::default().limits);
    println!("ready gateway http=http://{addr}");
    tracing::info!(%addr, "gateway serving");
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    refresher.abort();
    served?;
    Ok(())
}

/// The gateway's router over `client`, with the node's guard layers.
pub fn router(client: quorra_client::Client, limits: Limits) -> Router {
    let defaults = crate::config::NodeConfig::default();
    let guard = Guard {
        gate: Arc::new(client.clone()),
        permits: Arc::new(Semaphore::new(defaults.max_concurrent_requests)),
        timeout_ms: defaults.request_timeout_ms,
        body_limit: limits.max_value_bytes.saturating_add(64 << 10),
    };
    let state = GatewayState {
        routes: KvRoutes {
            service: Arc::new(client.clone()) as Arc<dyn KvService>,
            limits,
        },
        client,
        // Straight to the nodes: never through a proxy from the
        // environment (the requests carry bearer tokens).
        http: reqwest::Client::builder()
            .timeout(Duration::from_millis(defaults.request_timeout_ms))
            .no_proxy()
            .build()
            .unwrap_or_default(),
    };
    let routes = Router::new()
        .route(
            "/v1/kv/{bucket}/{*key}",
            get(kv::get_value)
                .put(kv::put_value)
                .post(kv::post_value)
                .delete(kv::delete_value),
        )
        .route(
            "/v1/crdt/{bucket}/{*key}",
            get(crdt::read).post(crdt::update),
        )
        .route("/health", get(super::health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi::serve))
        .fallback(forward)
        .with_state(state);
    super::guarded(routes, guard)
}

/// Ready while its view of the cluster is current and shows a node up.
async fn ready(State(state): State<GatewayState>) -> Response {
    let age = state.client.view_age();
    if age >= super::auth::MAX_POLICY_AGE || state.client.http_addrs().is_empty() {
        let why = format!(
            "no node reachable (the view of the cluster is {} ms old)",
            age.as_millis()
        );
        return ApiError::new(ErrorCode::QuorumUnavailable, why).into_response();
    }
    axum::Json(super::Ready {
        status: "ready".to_owned(),
        node_id: "gateway".to_owned(),
        actor: "gateway".to_owned(),
    })
    .into_response()
}

async fn metrics() -> impl IntoResponse {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::server::metrics_handle().render(),
    )
}

/// Headers that belong to one connection, not to the request.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
    )
}

/// Any other route: to a reachable node over HTTP, the next one if a node
/// cannot be reached (the request was not sent to it).
async fn forward(State(state): State<GatewayState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let limit = state.routes.limits.max_value_bytes.saturating_add(64 << 10);
    let body = match kv::read_body(body, limit).await {
        Ok(b) => bytes::Bytes::from(b),
        Err(e) => return e.into_response(),
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let mut last = String::from("no node is reachable");
    for addr in state.client.http_addrs() {
        let mut outbound = state
            .http
            .request(parts.method.clone(), format!("http://{addr}{path}"))
            .body(body.clone());
        for (name, value) in &parts.headers {
            if !hop_by_hop(name) {
                outbound = outbound.header(name, value);
            }
        }
        match outbound.send().await {
            Ok(answer) => return relay(answer).await,
            Err(e) if e.is_connect() => last = format!("{addr}: {e}"),
            Err(e) => {
                // Sent: it may have taken effect, so it is not sent again.
                return ApiError::new(ErrorCode::Timeout, format!("{addr}: {e}")).into_response();
            }
        }
    }
    ApiError::new(ErrorCode::QuorumUnavailable, last).into_response()
}

/// A node's answer, as the gateway's.
async fn relay(answer: reqwest::Response) -> Response {
    let status = answer.status();
    let headers = answer.headers().clone();
    let body = match answer.bytes().await {
        Ok(b) => b,
        Err(e) => {
            return ApiError::new(
                ErrorCode::Timeout,
                format!("the node's answer broke off: {e}"),
            )
            .into_response()
        }
    };
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    for (name, value) in &headers {
        // The node's request id stays the gateway's (its own layer sets it).
        if !hop_by_hop(name) && name.as_str() != "x-request-id" {
            resp.headers_mut().append(name.clone(), value.clone());
        }
    }
    resp
}
