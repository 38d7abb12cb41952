//! The HTTP API every node serves (axum).
//!
//! - `/v1/kv/{bucket}/{key}`: GET, PUT, DELETE (see [`kv`]).
//! - `/v1/cluster/...`: members, ring, key location, status (see
//!   [`cluster`]).
//! - `/v1/admin/layout/...`: stage, plan and commit layout changes (see
//!   [`admin`]).
//! - `/v1/buckets/{bucket}/props`: the cluster's bucket properties (see
//!   [`buckets`]).
//! - `/v1/admin/tokens`, `/v1/admin/certs/{name}`: bearer tokens and
//!   certificate grants (see [`access`]).
//! - `/health` (the process is up), `/ready` (it has joined the cluster and
//!   serves requests),
//!   `/metrics` (Prometheus text), `/openapi.json` (this API's OpenAPI
//!   document, made from the same annotations as the router; see
//!   [`openapi`]).
//!
//! Every request passes tower's layers, outermost first: a request id
//! (`X-Request-Id`, the caller's or a new UUID, on the answer and on every
//! log line of the request, through its tracing span), a count and timing by
//! method and status, JSON error bodies for every refusal, a body size
//! limit, load shedding over the client permits HTTP and QUIC share (past
//! them a request is refused at once with `overloaded`), and the request
//! timeout. Then [`auth`] finds who it acts as (a bearer token once the
//! cluster has any) and checks the route's class.

pub mod access;
pub mod admin;
pub mod auth;
pub mod buckets;
pub mod cluster;
pub mod crdt;
pub mod error;
pub mod gateway;
pub mod kv;
pub mod multipart;
pub mod openapi;
pub mod tls;

use std::sync::Arc;
use std::time::Instant;

use axum::error_handling::HandleErrorLayer;
use axum::extract::{FromRef, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{BoxError, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use quorra_core::ErrorCode;
use serde::Serialize;
use tokio::sync::Semaphore;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;
use tower::timeout::TimeoutLayer;
use tower::ServiceBuilder;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::NodeConfig;
use crate::kv::Kv;
use crate::service::KvService;
use error::ApiError;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The key-value service.
    pub kv: Kv,
    /// The node's configuration.
    pub config: Arc<NodeConfig>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Permits for requests in flight.
    pub in_flight: Arc<Semaphore>,
    /// What the key and data-type routes read and write through: the
    /// node's own [`Kv`] here.
    pub service: Arc<dyn KvService>,
}

/// What the key and data-type routes need ([`kv`], [`crdt`]): a service
/// to read and write through, and the limits on names and values. A node
/// and a gateway each make one from their own state.
#[derive(Clone)]
pub struct KvRoutes {
    /// Reads and writes for the caller.
    pub service: Arc<dyn KvService>,
    /// Limits on client input.
    pub limits: quorra_core::Limits,
}

impl FromRef<AppState> for KvRoutes {
    fn from_ref(state: &AppState) -> Self {
        Self {
            service: state.service.clone(),
            limits: state.config.limits,
        }
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("kv", &self.kv)
            .finish_non_exhaustive()
    }
}

/// Every route with its documentation: the router and `/openapi.json`
/// both come from these annotations, so neither can list what the other
/// does not.
fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(
            kv::get_value,
            kv::put_value,
            kv::post_value,
            kv::delete_value
        ))
        .routes(routes!(crdt::read, crdt::update))
        .routes(routes!(cluster::members))
        .routes(routes!(cluster::ring))
        .routes(routes!(cluster::layout))
        .routes(routes!(cluster::status))
        .routes(routes!(cluster::locate))
        .routes(routes!(admin::show))
        .routes(routes!(admin::plan))
        .routes(routes!(admin::commit))
        .routes(routes!(admin::stage))
        .routes(routes!(admin::repair))
        .routes(routes!(admin::compact))
        .routes(routes!(access::list, access::create))
        .routes(routes!(access::revoke))
        .routes(routes!(access::put_cert, access::delete_cert))
        .routes(routes!(buckets::get_props, buckets::put_props))
        .routes(routes!(cluster::replica))
        .routes(routes!(cluster::get_faults, cluster::put_faults))
        .routes(routes!(health))
        .routes(routes!(ready))
        .routes(routes!(render_metrics))
        .routes(routes!(openapi::serve))
}

/// The OpenAPI document of every route, as `/openapi.json` serves it.
pub fn openapi_document() -> serde_json::Value {
    let (_, doc) = api().split_for_parts();
    openapi::finish(doc)
}

/// The node's HTTP router.
pub fn router(state: AppState) -> Router {
    let (routes, _) = api().split_for_parts();
    let guard = Guard {
        gate: state.kv.cluster().clone(),
        permits: state.in_flight.clone(),
        timeout_ms: state.config.request_timeout_ms,
        body_limit: body_limit(&state.config),
    };
    guarded(
        routes
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .with_state(state),
        guard,
    )
}

/// What every request passes before its handler, on a node and on a
/// gateway alike.
pub struct Guard {
    /// Who a request acts as.
    pub gate: Arc<dyn auth::Gate>,
    /// Requests in flight (a node's HTTP and QUIC share them).
    pub permits: Arc<Semaphore>,
    /// The request timeout.
    pub timeout_ms: u64,
    /// The largest request body.
    pub body_limit: usize,
}

/// `routes` behind the guard's layers: request id, trace span, count,
/// JSON errors, body limit, load shedding, timeout, then authentication.
pub fn guarded(routes: Router, guard: Guard) -> Router {
    let timeout_ms = guard.timeout_ms;
    routes
        .layer(middleware::from_fn_with_state(
            guard.gate,
            auth::authenticate,
        ))
        .layer(
            // Load shedding over the client permits, and the request
            // timeout; their refusals as JSON errors.
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(move |e: BoxError| {
                    refusal(e, timeout_ms)
                }))
                .layer(LoadShedLayer::new())
                .layer(GlobalConcurrencyLimitLayer::with_semaphore(guard.permits))
                .layer(TimeoutLayer::new(std::time::Duration::from_millis(
                    timeout_ms,
                ))),
        )
        .layer(RequestBodyLimitLayer::new(guard.body_limit))
        .layer(middleware::from_fn(json_errors))
        .layer(middleware::from_fn(count))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_request(())
                .on_response(DefaultOnResponse::new().level(Level::DEBUG))
                .on_failure(()),
        )
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

/// The largest request body: a value at the limit, with room for a JSON
/// operation's framing. Bodies past it are refused (`413`) before they
/// are read; each route also holds its own body to its limit.
pub fn body_limit(config: &NodeConfig) -> usize {
    config.limits.max_value_bytes.saturating_add(64 << 10)
}

/// What the guard's refusals answer: `overloaded` past the client
/// permits, `timeout` past the request timeout.
async fn refusal(e: BoxError, timeout_ms: u64) -> ApiError {
    if e.is::<tower::load_shed::error::Overloaded>() {
        metrics::counter!(crate::metric_names::OVERLOADED, "from" => "http").increment(1);
        ApiError::new(
            ErrorCode::Overloaded,
            "too many requests in flight; retry with backoff",
        )
    } else if e.is::<tower::timeout::error::Elapsed>() {
        ApiError::new(
            ErrorCode::Timeout,
            format!("the request did not finish within {timeout_ms} ms"),
        )
    } else {
        ApiError::new(ErrorCode::Internal, e.to_string())
    }
}

/// The span every log line of a request carries: its id (the caller's
/// `X-Request-Id`, or a new UUID, echoed in the answer), method and path.
fn request_span(req: &Request) -> tracing::Span {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    // At error level, so a filter of `warn` or `error` keeps the id on the
    // lines it lets through.
    tracing::error_span!("request", id = %id, method = %req.method(), path = %req.uri().path())
}

/// Counts every answer by method and status, and times it.
async fn count(req: Request, next: Next) -> Response {
    // Known methods only: any other is "other", so no caller can grow
    // the series without bound.
    let method = match *req.method() {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    };
    let started = Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    metrics::counter!(crate::metric_names::HTTP_REQUESTS, "method" => method, "status" => status)
        .increment(1);
    metrics::histogram!(crate::metric_names::HTTP_REQUEST_SECONDS, "method" => method)
        .record(started.elapsed().as_secs_f64());
    resp
}

/// Every error answer is a JSON error with a stable code, including the
/// ones a layer or an extractor writes as plain text (a body past the
/// limit, a path or query that does not parse).
async fn json_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !status.is_client_error() && !status.is_server_error() || is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text =
        match http_body_util::BodyExt::collect(http_body_util::Limited::new(body, 4096)).await {
            Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
            Err(_) => String::new(),
        };
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::ValueTooLarge,
        StatusCode::UNAUTHORIZED => ErrorCode::Unauthorized,
        StatusCode::FORBIDDEN => ErrorCode::Forbidden,
        StatusCode::PRECONDITION_FAILED => ErrorCode::PreconditionFailed,
        StatusCode::NOT_FOUND => ErrorCode::RouteNotFound,
        StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
        StatusCode::REQUEST_TIMEOUT | StatusCode::GATEWAY_TIMEOUT => ErrorCode::Timeout,
        StatusCode::SERVICE_UNAVAILABLE => ErrorCode::Overloaded,
        s if s.is_client_error() => ErrorCode::InvalidParameter,
        _ => ErrorCode::Internal,
    };
    let message = if text.trim().is_empty() {
        status.canonical_reason().unwrap_or("refused").to_owned()
    } else {
        text.trim().to_owned()
    };
    let mut out = ApiError::new(code, message).into_response();
    // The status and headers stay what the layer said (a 413 stays a 413,
    // an `Allow` stays), but for the body's type and length.
    *out.status_mut() = status;
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}

/// `/health`: the process is up.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Health {
    /// `ok`.
    pub(super) status: String,
}

/// `/ready`: the node has joined its cluster and serves requests.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Ready {
    /// `ready`.
    pub(super) status: String,
    /// The node's id.
    pub(super) node_id: String,
    /// Its actor id (in version vectors).
    pub(super) actor: String,
}

/// Whether the process is up (no token needed).
#[utoipa::path(get, path = "/health", tag = "node",
    responses((status = 200, description = "Up", body = Health)))]
pub(super) async fn health() -> axum::Json<Health> {
    axum::Json(Health {
        status: "ok".to_owned(),
    })
}

/// Whether the node has joined its cluster and serves requests (`503`
/// before; no token needed).
#[utoipa::path(get, path = "/ready", tag = "node",
    responses((status = 200, description = "Ready", body = Ready)))]
async fn ready(State(state): State<AppState>) -> Response {
    if !state.kv.cluster().has_joined() {
        return ApiError::new(
            ErrorCode::QuorumUnavailable,
            "not ready: this node has not joined the cluster yet",
        )
        .into_response();
    }
    axum::Json(Ready {
        status: "ready".to_owned(),
        node_id: state.config.node_id.clone(),
        actor: state.kv.store().actor().to_string(),
    })
    .into_response()
}

/// The node's metrics in Prometheus text (no token needed).
#[utoipa::path(get, path = "/metrics", tag = "node",
    responses((status = 200, description = "Prometheus text", content_type = "text/plain", body = String)))]
async fn render_metrics(State(state): State<AppState>) -> impl IntoResponse {
    let store = state.kv.store().clone();
    // RocksDB's properties are read at each scrape (a blocking call).
    if let Err(e) = tokio::task::spawn_blocking(move || storage_gauges(store.engine())).await {
        tracing::warn!("storage metrics: {e}");
    }
    member_gauges(&state);
    let store = state.kv.store();
    metrics::gauge!(crate::metric_names::HINTS_PENDING).set(store.hints_held() as f64);
    metrics::gauge!(crate::metric_names::HINT_BYTES).set(store.hint_bytes() as f64);
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

/// Sets the storage gauges from the engine's own counts.
fn storage_gauges(engine: &Arc<dyn crate::storage::Engine>) {
    use crate::metric_names as m;
    for space in crate::storage::Space::ALL {
        let name = space.name();
        if let Some(s) = engine.space_stats(space) {
            metrics::gauge!(m::STORAGE_KEYS, "space" => name).set(s.estimated_keys as f64);
            metrics::gauge!(m::STORAGE_BYTES, "space" => name).set(s.table_bytes as f64);
            metrics::gauge!(m::STORAGE_PENDING_COMPACTION_BYTES, "space" => name)
                .set(s.pending_compaction_bytes as f64);
        }
        if let Ok(Some(markers)) = engine.deletion_markers(space) {
            metrics::gauge!(m::STORAGE_DELETION_MARKERS, "space" => name).set(markers as f64);
        }
    }
    if let Some(micros) = engine.write_stall_micros() {
        metrics::counter!(m::STORAGE_WRITE_STALL_MICROS).absolute(micros);
    }
    if let Some(mem) = engine.memory() {
        for (part, bytes) in [
            ("budget", mem.budget_bytes),
            ("block_cache", mem.block_cache_bytes),
            ("memtables", mem.memtable_bytes),
        ] {
            metrics::gauge!(m::STORAGE_MEMORY_BYTES, "part" => part).set(bytes as f64);
        }
    }
    if let Some(c) = engine.sync_counts() {
        metrics::counter!(m::STORAGE_WAL_SYNCS).absolute(c.wal_syncs);
    }
}

/// Sets the member gauges from this node's view of the cluster.
fn member_gauges(state: &AppState) {
    use quorra_core::membership::Status;
    let members = state.kv.cluster().members();
    for status in [
        Status::Joining,
        Status::Up,
        Status::Suspect,
        Status::Down,
        Status::Leaving,
        Status::Removed,
    ] {
        let n = members.iter().filter(|m| m.status == status).count();
        let label = serde_json::to_value(status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        metrics::gauge!(crate::metric_names::MEMBERS, "status" => label).set(n as f64);
    }
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        ErrorCode::RouteNotFound,
        format!(
            "no such resource: {}; keys live under /v1/kv/{{bucket}}/{{key}}",
            req.uri().path()
        ),
    )
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}
