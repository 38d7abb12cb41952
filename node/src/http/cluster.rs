//! Cluster endpoints: `/v1/cluster/members`, `/v1/cluster/ring`,
//! `/v1/cluster/layout`,
//! `/v1/cluster/locate/{bucket}/{key}`, `/v1/cluster/status`, and
//! `/v1/debug/replica/{bucket}/{key}` (this node's own copy of a key, for
//! operators and tests checking replicas one by one), and `/v1/debug/faults`
//! (fault injection, on test nodes only).

use axum::extract::{Query, Request, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use quorra_core::{ErrorCode, Object};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::kv::parse_path;
use super::AppState;
use crate::faults::FaultState;

/// `GET /v1/cluster/members`: this node's view of every member.
pub(super) async fn members(State(state): State<AppState>) -> Json<Value> {
    let cluster = state.kv.cluster();
    let members: Vec<Value> = cluster
        .members()
        .into_iter()
        .map(|m| {
            json!({
                "id": m.id,
                "status": m.status,
                "incarnation": m.incarnation,
                "peer_addr": m.peer_addr.to_string(),
                "http_addr": m.http_addr.to_string(),
                "zone": m.zone,
            })
        })
        .collect();
    Json(json!({ "node": cluster.me(), "members": members }))
}

/// Options of `GET /v1/cluster/ring`.
#[derive(Debug, Deserialize)]
pub(super) struct RingQuery {
    /// Ranks to list per partition (default: the default `n_val`).
    n: Option<usize>,
}

/// `GET /v1/cluster/ring`: members, ownership, and each partition's nodes.
pub(super) async fn ring(State(state): State<AppState>, Query(q): Query<RingQuery>) -> Json<Value> {
    let ring = state.kv.cluster().ring();
    let defaults = state.kv.cluster().bucket_table().defaults;
    let n = q.n.unwrap_or(defaults.n_val as usize);
    let partitions: Vec<Value> = (0..ring.partitions())
        .map(|p| json!({ "partition": p, "nodes": ring.preference_list(p, n) }))
        .collect();
    Json(json!({
        "partitions": ring.partitions(),
        "members": ring.members(),
        "primary_ownership": ring.ownership(1),
        "table": partitions,
    }))
}

/// `GET /v1/cluster/layout`: the committed layout itself, the structure
/// every node and client builds its ring from, so that tools
/// (`ring-tools plan --url`, `locate --url`) compute on exactly what the
/// node routes by. `503 quorum_unavailable` until the node has joined.
pub(super) async fn layout(State(state): State<AppState>) -> Response {
    match state.kv.cluster().public_layout() {
        Some(l) => Json(l).into_response(),
        None => ApiError::new(
            ErrorCode::QuorumUnavailable,
            "this node has not joined its cluster yet; ask another node",
        )
        .into_response(),
    }
}

/// `GET /v1/cluster/locate/{bucket}/{key}`: where a key lives.
pub(super) async fn locate(State(state): State<AppState>, req: Request) -> Response {
    let path = req
        .uri()
        .path()
        .replacen("/v1/cluster/locate/", "/v1/kv/", 1);
    let (bucket, key) = match parse_path(&path, &state.config.limits) {
        Ok(bk) => bk,
        Err(e) => return e.into_response(),
    };
    let ring = state.kv.cluster().ring();
    let n = state.kv.cluster().bucket_props(&bucket).n_val as usize;
    let (p, preference_list, fallbacks) =
        ring.locate(bucket.as_str().as_bytes(), key.as_bytes(), n);
    Json(json!({
        "bucket": bucket.as_str(),
        "partition": p,
        "preference_list": preference_list,
        "fallbacks": fallbacks,
    }))
    .into_response()
}

/// `GET /v1/cluster/status`: this node's health, including its hint backlog.
pub(super) async fn status(State(state): State<AppState>) -> Response {
    let store = state.kv.store().clone();
    let counts = match tokio::task::spawn_blocking(move || store.hint_counts()).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return ApiError::new(ErrorCode::StorageError, e.to_string()).into_response(),
        Err(e) => return ApiError::new(ErrorCode::Internal, e.to_string()).into_response(),
    };
    let cluster = state.kv.cluster();
    let defaults = cluster.bucket_table().defaults;
    let effective = defaults.for_ring(cluster.ring().members().len());
    let down: Vec<String> = cluster
        .members()
        .into_iter()
        .filter(|m| !cluster.is_reachable(&m.id))
        .map(|m| m.id)
        .collect();
    // `null` until the node has founded or joined its cluster.
    let layout = cluster.layout().map(|l| {
        json!({
            "cluster_id": l.cluster,
            "version": l.version,
            "digest": l.digest(),
            "members": l.members,
            "holding_data": l.roles.keys().collect::<Vec<_>>(),
            "staged": l.staged.len(),
            "moving": l.moving.is_some(),
        })
    });
    let transfers = cluster.transfer_status();
    let anti_entropy = anti_entropy_json(&state);
    let tombstones = tombstones_json(&state);
    metrics::gauge!(crate::metric_names::TRANSFER_PARTITIONS_PENDING)
        .set(transfers.gaining.saturating_sub(transfers.copied) as f64);
    Json(json!({
        "node": cluster.me(),
        "actor": state.kv.store().actor().to_string(),
        "cluster_id": cluster.layout().map(|l| l.cluster),
        "layout": layout,
        "transfers": transfers,
        "anti_entropy": anti_entropy,
        "tombstones": tombstones,
        "storage": storage_json(&state),
        "joined": cluster.has_joined(),
        "foreign_gossip_refused": cluster.foreign_messages(),
        "members": cluster.members().len(),
        "unreachable": down,
        "hints_pending": counts.values().map(|c| c.0).sum::<u64>(),
        "hint_bytes": counts.values().map(|c| c.1).sum::<u64>(),
        "hints_by_owner": counts
            .iter()
            .map(|(owner, c)| (owner.clone(), c.0))
            .collect::<std::collections::BTreeMap<_, _>>(),
        "corrupt_objects_found": state.kv.store().corruptions(),
        // A cluster smaller than n_val caps the bucket defaults (an explicit
        // request option past the cluster is refused instead).
        "bucket_defaults": {
            "configured": defaults,
            "effective": effective,
            "capped": effective != defaults,
        },
    }))
    .into_response()
}

/// Anti-entropy in the status: counters, and the age of each held
/// partition's last exchange with all its replicas (`null`: none yet since
/// this node started).
fn anti_entropy_json(state: &AppState) -> Value {
    let cluster = state.kv.cluster();
    let ae = cluster.anti_entropy_status();
    let now = crate::driver::now_ms();
    let held = cluster.partitions_held();
    let ages: std::collections::BTreeMap<u32, Option<u64>> = held
        .iter()
        .map(|p| (*p, ae.last_exchange.get(p).map(|t| now.saturating_sub(*t))))
        .collect();
    let never = ages.values().filter(|a| a.is_none()).count();
    let oldest = if never > 0 {
        None
    } else {
        ages.values().flatten().max().copied()
    };
    let scrub = state.kv.store().scrub_stats();
    json!({
        "enabled": ae.enabled,
        "interval_ms": state.config.anti_entropy.interval_ms,
        "exchanges": ae.stats.exchanges,
        "exchanges_failed": ae.stats.failed,
        "bytes_compared": ae.stats.bytes_compared,
        "keys_fetched": ae.stats.keys_fetched,
        "keys_pushed": ae.stats.keys_pushed,
        "trees_built": state.kv.store().tree_builds(),
        "running": ae.running,
        "requested": ae.requested,
        "partitions_held": held.len(),
        "partitions_never_exchanged": never,
        "oldest_exchange_age_ms": oldest,
        "last_exchange_age_ms": ages,
        "scrub": {
            "records_per_second": state.config.anti_entropy.scrub_records_per_second,
            "records_checked": scrub.checked,
            "corrupt_found": scrub.corrupt,
            "passes": scrub.passes,
        },
    })
}

/// Tombstones in the status: how many this node holds, what reaping did,
/// the markers it keeps and the resurrections they caught, and the
/// engine's own deletion markers (gone after a compaction).
fn tombstones_json(state: &AppState) -> Value {
    let reap = state.kv.cluster().reap_status();
    let store = state.kv.store();
    let counts = store.tombstone_counts();
    let engine_markers = store
        .engine()
        .deletion_markers(crate::storage::Space::Objects)
        .ok()
        .flatten();
    json!({
        "grace_ms": reap.grace_ms,
        "held": counts.held,
        "reap_passes": reap.stats.passes,
        "listed": reap.stats.listed,
        "reaped": reap.stats.reaped,
        "running": reap.running,
        "reaped_markers": counts.markers,
        "resurrections": counts.resurrections,
        "engine_deletion_markers": engine_markers,
    })
}

/// The engine's write counters: durable writes and the WAL syncs they
/// took (concurrent ones share a sync), and the bytes written; and its
/// memory against the budget.
fn storage_json(state: &AppState) -> Value {
    let engine = state.kv.store().engine();
    let counts = engine.sync_counts();
    let memory = engine.memory();
    json!({
        "durable_writes": counts.map(|c| c.durable_writes),
        "wal_syncs": counts.map(|c| c.wal_syncs),
        "bytes_written": counts.map(|c| c.bytes_written),
        "memory_budget_bytes": memory.map(|m| m.budget_bytes),
        "block_cache_bytes": memory.map(|m| m.block_cache_bytes),
        "memtable_bytes": memory.map(|m| m.memtable_bytes),
    })
}

/// `GET /v1/debug/replica/{bucket}/{key}`: this node's own copy, siblings
/// and tombstones included, never merged with other replicas.
pub(super) async fn replica(State(state): State<AppState>, req: Request) -> Response {
    let path = req
        .uri()
        .path()
        .replacen("/v1/debug/replica/", "/v1/kv/", 1);
    let (bucket, key) = match parse_path(&path, &state.config.limits) {
        Ok(bk) => bk,
        Err(e) => return e.into_response(),
    };
    let store = state.kv.store().clone();
    match tokio::task::spawn_blocking(move || store.get(&bucket, &key)).await {
        Ok(Ok(object)) => Json(object_json(object.as_ref())).into_response(),
        Ok(Err(e)) => ApiError::new(ErrorCode::StorageError, e.to_string()).into_response(),
        Err(e) => ApiError::new(ErrorCode::Internal, e.to_string()).into_response(),
    }
}

/// An object as JSON.
pub fn object_json(object: Option<&Object>) -> Value {
    let Some(o) = object else {
        return json!({ "found": false });
    };
    let siblings: Vec<Value> = o
        .siblings()
        .iter()
        .map(|s| {
            json!({
                "dot": format!("{}:{}", s.dot.actor, s.dot.counter),
                "deleted": s.content.deleted,
                "content_type": s.content.content_type,
                "value": String::from_utf8_lossy(&s.content.value),
                "value_base64": STANDARD.encode(&s.content.value),
                "timestamp_ms": s.content.timestamp_ms,
            })
        })
        .collect();
    let clock: Vec<Value> = o
        .clock()
        .iter()
        .map(|(a, c)| json!({ "actor": a.to_string(), "counter": c }))
        .collect();
    let mut shown = json!({ "found": true, "clock": clock, "siblings": siblings });
    // A data-type key: the value its states make, as a read shows it.
    let crdt = o
        .live_siblings()
        .any(|s| s.content.content_type == quorra_core::crdt::CONTENT_TYPE);
    if crdt {
        shown["crdt_value"] = match quorra_core::crdt::collapse(o) {
            Ok(state) => state.map_or(Value::Null, |s| quorra_core::crdt::render(&s)),
            Err(e) => json!({ "error": e.to_string() }),
        };
    }
    shown
}

/// `GET /v1/debug/faults` and `PUT /v1/debug/faults` (a JSON
/// [`FaultState`]): the injected faults, on a node started with
/// `fault_injection = true`. Without it the route does not exist.
pub(super) async fn faults(State(state): State<AppState>, req: Request) -> Response {
    let faults = state.kv.cluster().faults().clone();
    if !faults.enabled() {
        return ApiError::new(
            ErrorCode::RouteNotFound,
            "fault injection is off on this node (fault_injection = true enables it, for tests only)",
        )
        .into_response();
    }
    if req.method() == axum::http::Method::GET {
        return Json(faults.get()).into_response();
    }
    if req.method() != axum::http::Method::PUT {
        return ApiError::new(ErrorCode::MethodNotAllowed, "use GET or PUT").into_response();
    }
    let body = match axum::body::to_bytes(req.into_body(), 64 * 1024).await {
        Ok(b) => b,
        Err(e) => {
            return ApiError::new(ErrorCode::InvalidParameter, format!("unreadable body: {e}"))
                .into_response()
        }
    };
    match serde_json::from_slice::<FaultState>(&body) {
        Ok(s) => {
            faults.set(s.clone());
            Json(s).into_response()
        }
        Err(e) => ApiError::new(ErrorCode::InvalidParameter, format!("bad fault state: {e}"))
            .into_response(),
    }
}
