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
use quorra_core::layout::{Change, ClusterId, Layout, Plan, Role, Scope};
use quorra_core::membership::LayoutChangeError;
use quorra_core::ErrorCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

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

/// A member's role as operators read it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RoleShown {
    /// Its zone.
    zone: Option<String>,
    /// Its weight.
    weight: u32,
    /// Partition replicas it holds.
    slots: usize,
}

/// A staged change.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct StagedShown {
    /// The change.
    change: Change,
    /// The node that staged it.
    by: String,
}

/// A staged `n_val` change.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct StagedNVal {
    /// The new `n_val`.
    n_val: u8,
    /// The node that staged it.
    by: String,
}

/// The layout as operators read it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LayoutShown {
    /// The cluster's id.
    cluster: ClusterId,
    /// The committed version.
    version: u64,
    /// Its digest.
    digest: String,
    /// Partitions of the key space.
    partitions: u32,
    /// Replicas of each partition.
    replicas: u8,
    /// The members holding data.
    roles: BTreeMap<String, RoleShown>,
    /// The members holding nothing.
    members_without_data: Vec<String>,
    /// Changes staged for the next version, by node.
    staged: BTreeMap<String, StagedShown>,
    /// `n_val` changes staged, by bucket.
    staged_n_val: BTreeMap<String, StagedNVal>,
}

/// The layout as operators read it.
pub(crate) fn describe(layout: &Layout) -> LayoutShown {
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
    LayoutShown {
        cluster: layout.cluster.clone(),
        version: layout.version,
        digest: layout.digest(),
        partitions: layout.shape().partitions,
        replicas: layout.replicas,
        roles: layout
            .roles
            .iter()
            .map(|(id, r)| {
                let shown = RoleShown {
                    zone: r.zone.clone(),
                    weight: r.weight,
                    slots: loads.get(id).copied().unwrap_or(0),
                };
                (id.clone(), shown)
            })
            .collect(),
        members_without_data: layout
            .members
            .iter()
            .filter(|id| !layout.roles.contains_key(*id))
            .cloned()
            .collect(),
        staged: layout
            .staged
            .iter()
            .map(|(id, s)| {
                let shown = StagedShown {
                    change: s.change.clone(),
                    by: s.by.clone(),
                };
                (id.clone(), shown)
            })
            .collect(),
        staged_n_val: layout
            .staged_n_val
            .iter()
            .filter(|(_, s)| s.seq > layout.applied)
            .map(|(bucket, s)| {
                let shown = StagedNVal {
                    n_val: s.change,
                    by: s.by.clone(),
                };
                (bucket.clone(), shown)
            })
            .collect(),
    }
}

/// The committed version, its roles, the members holding nothing, and
/// what is staged.
#[utoipa::path(get, path = "/v1/admin/layout", tag = "layout",
    responses((status = 200, description = "The layout", body = LayoutShown)))]
pub(super) async fn show(State(state): State<AppState>) -> Response {
    match layout_of(&state) {
        Ok(layout) => Json(describe(&layout)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The body of a staging request.
#[derive(Debug, Default, Deserialize, ToSchema)]
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

/// A layout change to stage.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(super) enum Action {
    /// Give `node` a role (a join, or a new zone or weight).
    Join,
    /// `node` (or this node) hands its data over and leaves.
    Leave,
    /// `node` is gone: its data is rebuilt from the other replicas.
    Remove,
    /// `node` hands its place to `with`.
    Replace,
    /// Unstage `node`'s change.
    Clear,
    /// Set `bucket`'s `n_val`.
    NVal,
}

/// Stages one change for the next layout version; answered with the
/// layout and what is staged.
#[utoipa::path(post, path = "/v1/admin/layout/{action}", tag = "layout", request_body = StageBody,
    params(("action" = inline(Action), Path, description = "The change")),
    responses((status = 200, description = "The layout with the change staged", body = LayoutShown)))]
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
    let body = body.unwrap_or_default();
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

/// A partition's copies in a plan.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct TransferShown {
    /// The partition.
    partition: u32,
    /// Its replicas now.
    from: Vec<String>,
    /// The replicas that gain it.
    to: Vec<String>,
    /// The replicas that give it up.
    leaving: Vec<String>,
    /// Keys each gaining replica copies (estimated).
    keys_estimated: u64,
    /// Bytes each gaining replica copies (estimated).
    bytes_estimated: u64,
}

/// One bucket copy an `n_val` change makes.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct BucketCopyShown {
    /// The partition.
    partition: u32,
    /// The node copying.
    to: String,
    /// The buckets it copies.
    buckets: Scope,
    /// Keys copied, at most (the partition's).
    keys_estimated_at_most: u64,
    /// Bytes copied, at most.
    bytes_estimated_at_most: u64,
}

/// An `n_val` change in a plan.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct NValChange {
    /// Now.
    from: u8,
    /// After the commit.
    to: u8,
}

/// What a commit would do.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct PlanShown {
    /// The committed version the plan is against.
    from_version: u64,
    /// The version a commit makes.
    to_version: u64,
    /// The staged changes, by node.
    changes: BTreeMap<String, Change>,
    /// The staged `n_val` changes, by bucket.
    n_val_changes: BTreeMap<String, NValChange>,
    /// Bucket copies they make.
    bucket_copies: Vec<BucketCopyShown>,
    /// Partition replicas in all.
    slots: usize,
    /// Of those, moving.
    slots_moving: usize,
    /// The share moving.
    share_moving: f64,
    /// Keys copied in all (estimated from this node's data).
    keys_estimated: u64,
    /// Bytes copied in all (estimated).
    bytes_estimated: u64,
    /// Partition replicas per node now.
    slots_before: BTreeMap<String, usize>,
    /// After the commit.
    slots_after: BTreeMap<String, usize>,
    /// The partitions that move.
    transfers: Vec<TransferShown>,
}

/// What a commit would do: the partitions that move, from whom to whom,
/// keys and bytes estimated from this node's data, and each node's share
/// before and after.
#[utoipa::path(get, path = "/v1/admin/layout/plan", tag = "layout",
    responses((status = 200, description = "The plan", body = PlanShown)))]
pub(super) async fn plan(State(state): State<AppState>) -> Response {
    match plan_of(&state).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn plan_of(state: &AppState) -> Result<PlanShown, ApiError> {
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
    let transfers: Vec<TransferShown> = plan
        .transfers
        .iter()
        .map(|t| {
            let (k, b) = estimate(t.partition);
            let copies = t.joining.len() as u64;
            keys += k * copies;
            bytes += b * copies;
            TransferShown {
                partition: t.partition,
                from: t.staying.iter().chain(&t.leaving).cloned().collect(),
                to: t.joining.clone(),
                leaving: t.leaving.clone(),
                keys_estimated: k,
                bytes_estimated: b,
            }
        })
        .collect();
    // An n_val change copies one bucket's keys of a partition: estimated
    // as the partition's, an upper bound.
    let bucket_copies: Vec<BucketCopyShown> = plan
        .bucket_copies
        .iter()
        .map(|(p, to, scope)| {
            let (k, b) = estimate(*p);
            keys += k;
            bytes += b;
            BucketCopyShown {
                partition: *p,
                to: to.clone(),
                buckets: scope.clone(),
                keys_estimated_at_most: k,
                bytes_estimated_at_most: b,
            }
        })
        .collect();
    let n_val_changes = plan
        .n_vals
        .iter()
        .map(|(bucket, from, to)| {
            (
                bucket.clone(),
                NValChange {
                    from: *from,
                    to: *to,
                },
            )
        })
        .collect();
    Ok(PlanShown {
        from_version: plan.from,
        to_version: plan.to,
        share_moving: plan.moved as f64 / plan.slots.max(1) as f64,
        changes: plan.changes,
        n_val_changes,
        bucket_copies,
        slots: plan.slots,
        slots_moving: plan.moved,
        keys_estimated: keys,
        bytes_estimated: bytes,
        slots_before: plan.loads_before,
        slots_after: plan.loads_after,
        transfers,
    })
}

/// The body of a commit.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CommitBody {
    /// The layout version the plan was made against.
    version: u64,
}

/// Commits what was staged against `version`; `409 layout_conflict` when
/// another commit came first or the layout moved on.
#[utoipa::path(post, path = "/v1/admin/layout/commit", tag = "layout", request_body = CommitBody,
    responses((status = 200, description = "The new layout", body = LayoutShown)))]
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
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct RepairQuery {
    /// The partition (none: every partition this node replicates).
    partition: Option<u32>,
}

/// Repairs queued.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct RepairQueued {
    /// The node repairing.
    node: String,
    /// Partitions queued for an exchange.
    partitions_queued: usize,
    /// Where to follow it.
    progress: String,
}

/// An anti-entropy exchange of `partition` (or of every partition this
/// node replicates) with its other replicas, ahead of the cycle. Answers
/// at once; progress is in `GET /v1/cluster/status` under `anti_entropy`.
#[utoipa::path(post, path = "/v1/admin/repair", tag = "maintenance", params(RepairQuery),
    responses((status = 202, description = "Queued", body = RepairQueued)))]
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
        Json(RepairQueued {
            node: cluster.me().to_owned(),
            partitions_queued: queued,
            progress: "GET /v1/cluster/status: anti_entropy".to_owned(),
        }),
    )
        .into_response()
}

/// A compaction done.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Compacted {
    /// The node.
    node: String,
    /// What was compacted.
    compacted: String,
    /// The engine's deletion markers left.
    deletion_markers: Option<u64>,
}

/// Compacts the objects down to the engine's last level, so deleted and
/// reaped keys leave the disk now rather than at the engine's own pace
/// (RocksDB keeps a deletion marker until then). Answers when done, with
/// the deletion markers left.
#[utoipa::path(post, path = "/v1/admin/compact", tag = "maintenance",
    responses((status = 200, description = "Done", body = Compacted)))]
pub(super) async fn compact(State(state): State<AppState>) -> Response {
    let store = state.kv.store().clone();
    let done = tokio::task::spawn_blocking(move || {
        let engine = store.engine();
        engine.compact(crate::storage::Space::Objects)?;
        engine.deletion_markers(crate::storage::Space::Objects)
    })
    .await;
    match done {
        Ok(Ok(markers)) => Json(Compacted {
            node: state.kv.cluster().me().to_owned(),
            compacted: "objects".to_owned(),
            deletion_markers: markers,
        })
        .into_response(),
        Ok(Err(e)) => ApiError::new(ErrorCode::StorageError, e.to_string()).into_response(),
        Err(e) => ApiError::new(ErrorCode::Internal, e.to_string()).into_response(),
    }
}
