//! Layout administration (cluster admins only, see [`super::auth`]): look at the layout, stage
//! joins, leaves, removals, replacements and role changes, see the plan,
//! commit it.
//!
//! - `GET /v1/admin/layout`: the committed version, its roles, the members
//!   holding nothing, and what is staged.
//! - `POST /v1/admin/layout/{join,leave,remove,replace,clear}`: stage one
//!   change (JSON body, see [`StageBody`]); answered with the layout.
//! - `POST /v1/admin/layout/n_val` with `{"bucket": B, "n_val": N}`: stage
//!   a bucket's `n_val` change (it moves data, so it is planned and
//!   committed like a node's; staging the current value clears it).
//! - `GET /v1/admin/layout/plan`: what a commit would do: the partitions
//!   that move, from whom to whom, keys and bytes estimated from this
//!   node's data, and each node's share before and after.
//! - `POST /v1/admin/layout/commit` with `{"version": V}`: commit what was
//!   staged against version `V`; `409 layout_conflict` when another commit
//!   came first or the layout moved on.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use quorra_core::layout::{Change, Layout, Plan, Role};
use quorra_core::membership::LayoutChangeError;
use quorra_core::ErrorCode;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::AppState;

fn layout_of(state: &AppState) -> Result<Layout, ApiError> {
    state.kv.cluster().layout().ok_or_else(|| {
        ApiError::new(
            ErrorCode::QuorumUnavailable,
            "this node has not joined its cluster yet; ask another node",
        )
    })
}

/// The layout as operators read it.
pub(crate) fn describe(layout: &Layout) -> Value {
    let holding: Vec<&String> = layout
        .members
        .iter()
        .filter(|id| !layout.roles.contains_key(*id))
        .collect();
    let loads = layout
        .assignment
        .as_ref()
        .map(|a| {
            a.loads()
                .into_iter()
                .map(|(id, n)| (id.to_owned(), n))
                .collect::<BTreeMap<_, _>>()
        })
        .unwrap_or_default();
    let roles: BTreeMap<&String, Value> = layout
        .roles
        .iter()
        .map(|(id, r)| {
            let slots = loads.get(id).copied().unwrap_or(0);
            (
                id,
                json!({"zone": r.zone, "weight": r.weight, "slots": slots}),
            )
        })
        .collect();
    let staged: BTreeMap<&String, Value> = layout
        .staged
        .iter()
        .map(|(id, s)| (id, json!({"change": s.change, "by": s.by})))
        .collect();
    let staged_n_val: BTreeMap<&String, Value> = layout
        .staged_n_val
        .iter()
        .filter(|(_, s)| s.seq > layout.applied)
        .map(|(bucket, s)| (bucket, json!({"n_val": s.change, "by": s.by})))
        .collect();
    let shape = layout.shape();
    json!({
        "cluster": layout.cluster,
        "version": layout.version,
        "digest": layout.digest(),
        "partitions": shape.partitions,
        "replicas": layout.replicas,
        "roles": roles,
        "members_without_data": holding,
        "staged": staged,
        "staged_n_val": staged_n_val,
    })
}

/// `GET /v1/admin/layout`.
pub(super) async fn show(State(state): State<AppState>) -> Response {
    match layout_of(&state) {
        Ok(layout) => Json(describe(&layout)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The body of a staging request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StageBody {
    /// The node the change is about (`leave` without one: this node).
    node: Option<String>,
    /// `join` and role changes: its zone (default: the zone it reports).
    zone: Option<String>,
    /// `join` and role changes: its weight (default 1, or its current).
    weight: Option<u32>,
    /// `replace`: the node taking `node`'s place.
    with: Option<String>,
    /// `n_val`: the bucket.
    bucket: Option<String>,
    /// `n_val`: its new `n_val`.
    n_val: Option<u8>,
}

/// A JSON body (`None` when empty), refused with `invalid_parameter`
/// when it does not parse.
fn json_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<Option<T>, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(bytes).map(Some).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidParameter,
            format!("invalid JSON body: {e}"),
        )
    })
}

/// `POST /v1/admin/layout/{action}`.
pub(super) async fn stage(
    State(state): State<AppState>,
    Path(action): Path<String>,
    body: Bytes,
) -> Response {
    let staged = json_body::<StageBody>(&body).and_then(|b| stage_change(&state, &action, b));
    match staged {
        Ok(layout) => Json(describe(&layout)).into_response(),
        Err(e) => e.into_response(),
    }
}

fn stage_change(
    state: &AppState,
    action: &str,
    body: Option<StageBody>,
) -> Result<Layout, ApiError> {
    let layout = layout_of(state)?;
    let cluster = state.kv.cluster();
    let body = body.unwrap_or(StageBody {
        node: None,
        zone: None,
        weight: None,
        with: None,
        bucket: None,
        n_val: None,
    });
    let missing = |what: &str| {
        ApiError::new(
            ErrorCode::InvalidParameter,
            format!("{action} needs \"{what}\" in its JSON body"),
        )
    };
    if action == "n_val" {
        let bucket = body.bucket.ok_or_else(|| missing("bucket"))?;
        let bucket = quorra_core::BucketName::parse(&bucket, &state.config.limits)
            .map_err(|e| ApiError::new(e.code, e.message))?;
        let n_val = body.n_val.ok_or_else(|| missing("n_val"))?;
        return cluster
            .stage_n_val(bucket.as_str(), n_val)
            .map_err(change_error);
    }
    let node = match (action, body.node) {
        ("leave", None) => cluster.me().to_owned(),
        (_, Some(node)) => node,
        (_, None) => return Err(missing("node")),
    };
    let change = match action {
        "join" => {
            let current = layout.roles.get(&node);
            let reported = cluster
                .members()
                .into_iter()
                .find(|m| m.id == node)
                .and_then(|m| m.zone);
            Change::Set(Role {
                zone: body
                    .zone
                    .or_else(|| current.and_then(|r| r.zone.clone()))
                    .or(reported),
                weight: body
                    .weight
                    .or_else(|| current.map(|r| r.weight))
                    .unwrap_or(1),
            })
        }
        "leave" | "remove" => Change::Remove,
        "replace" => Change::ReplaceBy(body.with.ok_or_else(|| missing("with"))?),
        "clear" => Change::Keep,
        _ => {
            return Err(ApiError::new(
                ErrorCode::RouteNotFound,
                format!(
                    "no layout action {action:?}: join, leave, remove, replace, clear or n_val"
                ),
            ))
        }
    };
    cluster.stage(&node, change).map_err(change_error)
}

fn change_error(e: LayoutChangeError) -> ApiError {
    let code = match e {
        LayoutChangeError::NotJoined => ErrorCode::QuorumUnavailable,
        LayoutChangeError::Stage(_) => ErrorCode::InvalidParameter,
    };
    ApiError::new(code, e.to_string())
}

/// `GET /v1/admin/layout/plan`.
pub(super) async fn plan(State(state): State<AppState>) -> Response {
    match plan_of(&state).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn plan_of(state: &AppState) -> Result<Value, ApiError> {
    let layout = layout_of(state)?;
    let plan: Plan = layout
        .plan()
        .map_err(|e| change_error(LayoutChangeError::Stage(e)))?;
    let store = state.kv.store().clone();
    let partitions = layout.shape().partitions;
    let usage = tokio::task::spawn_blocking(move || store.partition_usage(partitions))
        .await
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?
        .map_err(|e| ApiError::new(e.code(), e.to_string()))?;
    // Partitions this node holds are counted; the others are estimated
    // as the average of those.
    let (held_keys, held_bytes) = usage
        .values()
        .fold((0u64, 0u64), |(k, b), u| (k + u.0, b + u.1));
    let held = usage.len().max(1) as u64;
    let estimate = |p: u32| {
        usage
            .get(&p)
            .copied()
            .unwrap_or((held_keys / held, held_bytes / held))
    };
    let mut keys = 0u64;
    let mut bytes = 0u64;
    let transfers: Vec<Value> = plan
        .transfers
        .iter()
        .map(|t| {
            let (k, b) = estimate(t.partition);
            let copies = t.joining.len() as u64;
            keys += k * copies;
            bytes += b * copies;
            json!({
                "partition": t.partition,
                "from": t.staying.iter().chain(&t.leaving).collect::<Vec<_>>(),
                "to": t.joining,
                "leaving": t.leaving,
                "keys_estimated": k,
                "bytes_estimated": b,
            })
        })
        .collect();
    // An n_val change copies one bucket's keys of a partition: estimated
    // as the partition's, an upper bound.
    let bucket_copies: Vec<Value> = plan
        .bucket_copies
        .iter()
        .map(|(p, to, scope)| {
            let (k, b) = estimate(*p);
            keys += k;
            bytes += b;
            json!({
                "partition": p,
                "to": to,
                "buckets": scope,
                "keys_estimated_at_most": k,
                "bytes_estimated_at_most": b,
            })
        })
        .collect();
    let n_vals: BTreeMap<&String, Value> = plan
        .n_vals
        .iter()
        .map(|(bucket, from, to)| (bucket, json!({"from": from, "to": to})))
        .collect();
    Ok(json!({
        "from_version": plan.from,
        "to_version": plan.to,
        "changes": plan.changes,
        "n_val_changes": n_vals,
        "bucket_copies": bucket_copies,
        "slots": plan.slots,
        "slots_moving": plan.moved,
        "share_moving": plan.moved as f64 / plan.slots.max(1) as f64,
        "keys_estimated": keys,
        "bytes_estimated": bytes,
        "slots_before": plan.loads_before,
        "slots_after": plan.loads_after,
        "transfers": transfers,
    }))
}

/// The body of a commit.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CommitBody {
    /// The layout version the plan was made against.
    version: u64,
}

/// `POST /v1/admin/layout/commit`.
pub(super) async fn commit(State(state): State<AppState>, body: Bytes) -> Response {
    let body = json_body::<CommitBody>(&body).and_then(|b| {
        b.ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidParameter,
                "commit needs {\"version\": V}: the layout version the plan was made against",
            )
        })
    });
    let body = match body {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    match state.kv.cluster().commit(body.version).await {
        Ok(layout) => Json(describe(&layout)).into_response(),
        Err(e) => ApiError::new(e.code(), e.to_string()).into_response(),
    }
}

/// Options of `POST /v1/admin/repair`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RepairQuery {
    /// The partition (none: every partition this node replicates).
    partition: Option<u32>,
}

/// `POST /v1/admin/repair?partition=P`: an anti-entropy exchange of
/// partition `P` (or of every partition this node replicates) with its
/// other replicas, ahead of the cycle. Answers at once (202); progress is
/// in `GET /v1/cluster/status` under `anti_entropy`.
pub(super) async fn repair(
    State(state): State<AppState>,
    q: Result<axum::extract::Query<RepairQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let q = match q {
        Ok(axum::extract::Query(q)) => q,
        Err(e) => {
            let why = format!("repair takes ?partition=P (a partition number) or nothing: {e}");
            return ApiError::new(ErrorCode::InvalidParameter, why).into_response();
        }
    };
    let cluster = state.kv.cluster();
    if cluster.layout().is_none() {
        return ApiError::new(
            ErrorCode::QuorumUnavailable,
            "this node is not in a cluster yet: it replicates nothing to repair",
        )
        .into_response();
    }
    let partitions = cluster.ring().partitions();
    if let Some(p) = q.partition {
        if p >= partitions {
            let why = format!(
                "partition {p} does not exist: the ring has {partitions} (0 to {})",
                partitions - 1
            );
            return ApiError::new(ErrorCode::InvalidParameter, why).into_response();
        }
        if !cluster.partitions_held().contains(&p) {
            let why = format!(
                "this node holds no replica of partition {p}: ask one of its replicas (GET /v1/cluster/ring)"
            );
            return ApiError::new(ErrorCode::InvalidParameter, why).into_response();
        }
    }
    let queued = cluster.request_repair(q.partition);
    (
        axum::http::StatusCode::ACCEPTED,
        Json(json!({
            "node": cluster.me(),
            "partitions_queued": queued,
            "progress": "GET /v1/cluster/status: anti_entropy",
        })),
    )
        .into_response()
}

/// `POST /v1/admin/compact`: compacts the objects down to the engine's
/// last level, so deleted and reaped keys leave the disk now rather than
/// at the engine's own pace (RocksDB keeps a deletion marker until then).
/// Answers when done, with the deletion markers left.
pub(super) async fn compact(State(state): State<AppState>) -> Response {
    let store = state.kv.store().clone();
    let done = tokio::task::spawn_blocking(move || {
        let engine = store.engine();
        engine.compact(crate::storage::Space::Objects)?;
        engine.deletion_markers(crate::storage::Space::Objects)
    })
    .await;
    match done {
        Ok(Ok(markers)) => Json(json!({
            "node": state.kv.cluster().me(),
            "compacted": "objects",
            "deletion_markers": markers,
        }))
        .into_response(),
        Ok(Err(e)) => ApiError::new(ErrorCode::StorageError, e.to_string()).into_response(),
        Err(e) => ApiError::new(ErrorCode::Internal, e.to_string()).into_response(),
    }
}
