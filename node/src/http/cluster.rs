//! Cluster endpoints: `/v1/cluster/members`, `/v1/cluster/ring`,
//! `/v1/cluster/layout`,
//! `/v1/cluster/locate/{bucket}/{key}`, `/v1/cluster/status`, and
//! `/v1/debug/replica/{bucket}/{key}` (this node's own copy of a key, for
//! operators and tests checking replicas one by one), and `/v1/debug/faults`
//! (fault injection, on test nodes only).

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, Request, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use quorra_core::bucket::BucketProps;
use quorra_core::layout::{ClusterId, Layout};
use quorra_core::membership::Status;
use quorra_core::node::TransferStatus;
use quorra_core::ring::RingMember;
use quorra_core::{ErrorCode, Object};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::error::ApiError;
use super::kv::{parse_path, KeyPath};
use super::AppState;
use crate::faults::FaultState;

/// A member as this node sees it.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct MemberShown {
    /// The node id.
    id: String,
    /// Its state.
    status: Status,
    /// Its incarnation (it raises it to refute a suspicion).
    incarnation: u64,
    /// Its QUIC address.
    peer_addr: String,
    /// Its HTTP address.
    http_addr: String,
    /// Its zone, if it declared one.
    zone: Option<String>,
}

/// The answer of `GET /v1/cluster/members`.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Members {
    /// The node answering.
    node: String,
    /// Every member it knows.
    members: Vec<MemberShown>,
}

/// This node's view of every member.
#[utoipa::path(get, path = "/v1/cluster/members", tag = "cluster",
    responses((status = 200, description = "The members", body = Members)))]
pub(super) async fn members(State(state): State<AppState>) -> Json<Members> {
    let cluster = state.kv.cluster();
    let members = cluster
        .members()
        .into_iter()
        .map(|m| MemberShown {
            id: m.id,
            status: m.status,
            incarnation: m.incarnation,
            peer_addr: m.peer_addr.to_string(),
            http_addr: m.http_addr.to_string(),
            zone: m.zone,
        })
        .collect();
    Json(Members {
        node: cluster.me().to_owned(),
        members,
    })
}

/// Options of `GET /v1/cluster/ring`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct RingQuery {
    /// Ranks to list per partition (default: the default `n_val`).
    n: Option<u8>,
}

/// One partition's nodes, in preference order.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct PartitionNodes {
    /// The partition.
    partition: u32,
    /// Its nodes, first the primaries.
    nodes: Vec<String>,
}

/// The answer of `GET /v1/cluster/ring`.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct RingShown {
    /// Partitions of the key space.
    partitions: u32,
    /// The members holding data.
    members: Vec<RingMember>,
    /// Partitions each member is first for.
    primary_ownership: BTreeMap<String, usize>,
    /// Each partition's nodes.
    table: Vec<PartitionNodes>,
}

/// Members, ownership, and each partition's nodes.
#[utoipa::path(get, path = "/v1/cluster/ring", tag = "cluster", params(RingQuery),
    responses((status = 200, description = "The ring", body = RingShown)))]
pub(super) async fn ring(
    State(state): State<AppState>,
    q: Result<Query<RingQuery>, QueryRejection>,
) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => {
            let why = format!(
                "the ring takes ?n=N (ranks per partition) or nothing: {}",
                e.body_text()
            );
            return ApiError::new(ErrorCode::InvalidParameter, why).into_response();
        }
    };
    let ring = state.kv.cluster().ring();
    let defaults = state.kv.cluster().bucket_table().defaults;
    let n = usize::from(q.n.unwrap_or(defaults.n_val));
    let table = (0..ring.partitions())
        .map(|p| PartitionNodes {
            partition: p,
            nodes: ring
                .preference_list(p, n)
                .into_iter()
                .map(str::to_owned)
                .collect(),
        })
        .collect();
    Json(RingShown {
        partitions: ring.partitions(),
        members: ring.members().to_vec(),
        primary_ownership: ring
            .ownership(1)
            .into_iter()
            .map(|(id, n)| (id.to_owned(), n))
            .collect(),
        table,
    })
    .into_response()
}

/// The committed layout itself (without the access policy), the structure
/// every node and client builds its ring from, so that tools
/// (`ring-tools plan --url`, `locate --url`) compute on exactly what the
/// node routes by. `503 quorum_unavailable` until the node has joined.
#[utoipa::path(get, path = "/v1/cluster/layout", tag = "cluster",
    responses((status = 200, description = "The committed layout", body = Layout)))]
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

/// Where a key lives.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Located {
    /// The bucket.
    bucket: String,
    /// The key's partition.
    partition: u32,
    /// Its replicas, first the primaries.
    preference_list: Vec<String>,
    /// The nodes that take its writes when a replica is down.
    fallbacks: Vec<String>,
}

/// Where a key lives: its partition, replicas and fallbacks.
#[utoipa::path(get, path = "/v1/cluster/locate/{bucket}/{*key}", tag = "cluster", params(KeyPath),
    responses((status = 200, description = "The key's placement", body = Located)))]
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
    let owned = |v: Vec<&str>| v.into_iter().map(str::to_owned).collect();
    Json(Located {
        bucket: bucket.as_str().to_owned(),
        partition: p,
        preference_list: owned(preference_list),
        fallbacks: owned(fallbacks),
    })
    .into_response()
}

/// The layout in the status.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct LayoutSummary {
    /// The cluster's id.
    cluster_id: ClusterId,
    /// The committed version.
    version: u64,
    /// Its digest (every member's is the same once they agree).
    digest: String,
    /// Every member.
    members: Vec<String>,
    /// The members holding data.
    holding_data: Vec<String>,
    /// Changes staged for the next version.
    staged: usize,
    /// Whether partitions are moving to a new version.
    moving: bool,
}

/// Bucket defaults, as configured and as this cluster's size allows.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct BucketDefaults {
    /// As configured.
    configured: BucketProps,
    /// Capped to the members holding data.
    effective: BucketProps,
    /// Whether the cap changed them.
    capped: bool,
}

/// Anti-entropy in the status.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct AntiEntropyShown {
    /// Whether exchanges run on their own.
    enabled: bool,
    /// Between exchanges of a partition.
    interval_ms: u64,
    /// Exchanges done.
    exchanges: u64,
    /// Exchanges that failed.
    exchanges_failed: u64,
    /// Hash-tree bytes compared.
    bytes_compared: u64,
    /// Keys fetched from other replicas.
    keys_fetched: u64,
    /// Keys pushed to other replicas.
    keys_pushed: u64,
    /// Hash trees built.
    trees_built: u64,
    /// The partition being exchanged now, if any.
    running: Option<u32>,
    /// Exchanges requested (by `POST /v1/admin/repair`).
    requested: usize,
    /// Partitions this node holds.
    partitions_held: usize,
    /// Of those, not exchanged since the node started.
    partitions_never_exchanged: usize,
    /// The oldest exchange's age (`null` while some partition had none).
    oldest_exchange_age_ms: Option<u64>,
    /// Each held partition's last exchange age (`null`: none yet), by
    /// partition number.
    #[schema(value_type = BTreeMap<String, Option<u64>>)]
    last_exchange_age_ms: BTreeMap<u32, Option<u64>>,
    /// The background check of stored records.
    scrub: ScrubShown,
}

/// The scrub in the status.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ScrubShown {
    /// Its pace.
    records_per_second: u64,
    /// Records checked.
    records_checked: u64,
    /// Corrupt records found.
    corrupt_found: u64,
    /// Passes over the whole store.
    passes: u64,
}

/// Tombstones in the status.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct TombstonesShown {
    /// How long a tombstone is kept before it may be reaped (0: never).
    grace_ms: u64,
    /// Keys that hold only tombstones.
    held: u64,
    /// Reap passes.
    reap_passes: u64,
    /// Tombstones listed by them.
    listed: u64,
    /// Tombstones reaped.
    reaped: u64,
    /// The partition being reaped now, if any.
    running: Option<u32>,
    /// Markers of reaped keys kept.
    reaped_markers: u64,
    /// Writes the markers caught bringing a reaped key back.
    resurrections: u64,
    /// The engine's own deletion markers (gone after a compaction).
    engine_deletion_markers: Option<u64>,
}

/// The engine's counters in the status (`null` where the engine has none).
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct StorageShown {
    /// Durable writes.
    durable_writes: Option<u64>,
    /// WAL syncs they took (concurrent ones share a sync).
    wal_syncs: Option<u64>,
    /// Bytes written.
    bytes_written: Option<u64>,
    /// The memory budget.
    memory_budget_bytes: Option<u64>,
    /// The block cache in use.
    block_cache_bytes: Option<u64>,
    /// The memtables in use.
    memtable_bytes: Option<u64>,
}

/// The answer of `GET /v1/cluster/status`.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct StatusShown {
    /// The node answering.
    node: String,
    /// Its actor id (in version vectors).
    actor: String,
    /// Its cluster (`null` before it founded or joined one).
    cluster_id: Option<ClusterId>,
    /// Its layout (`null` before it founded or joined a cluster).
    layout: Option<LayoutSummary>,
    /// Partitions it copies for a new layout.
    transfers: TransferStatus,
    /// Anti-entropy.
    anti_entropy: AntiEntropyShown,
    /// Tombstones.
    tombstones: TombstonesShown,
    /// The storage engine.
    storage: StorageShown,
    /// Whether it has joined its cluster.
    joined: bool,
    /// Gossip from other clusters it refused.
    foreign_gossip_refused: u64,
    /// Members it knows.
    members: usize,
    /// Members it cannot reach.
    unreachable: Vec<String>,
    /// Hints it holds for other nodes.
    hints_pending: u64,
    /// Their bytes.
    hint_bytes: u64,
    /// Hints per owner.
    hints_by_owner: BTreeMap<String, u64>,
    /// Corrupt records found (and repaired from other replicas).
    corrupt_objects_found: u64,
    /// Bucket defaults.
    bucket_defaults: BucketDefaults,
}

/// This node's health: its layout, transfers, anti-entropy, tombstones,
/// storage, and its hint backlog.
#[utoipa::path(get, path = "/v1/cluster/status", tag = "cluster",
    responses((status = 200, description = "The node's status", body = StatusShown)))]
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
    let unreachable: Vec<String> = cluster
        .members()
        .into_iter()
        .filter(|m| !cluster.is_reachable(&m.id))
        .map(|m| m.id)
        .collect();
    let layout = cluster.layout();
    let summary = layout.as_ref().map(|l| LayoutSummary {
        cluster_id: l.cluster.clone(),
        version: l.version,
        digest: l.digest(),
        members: l.members.iter().cloned().collect(),
        holding_data: l.roles.keys().cloned().collect(),
        staged: l.staged.len(),
        moving: l.moving.is_some(),
    });
    let transfers = cluster.transfer_status();
    metrics::gauge!(crate::metric_names::TRANSFER_PARTITIONS_PENDING)
        .set(transfers.gaining.saturating_sub(transfers.copied) as f64);
    Json(StatusShown {
        node: cluster.me().to_owned(),
        actor: state.kv.store().actor().to_string(),
        cluster_id: layout.map(|l| l.cluster),
        layout: summary,
        transfers,
        anti_entropy: anti_entropy_shown(&state),
        tombstones: tombstones_shown(&state),
        storage: storage_shown(&state),
        joined: cluster.has_joined(),
        foreign_gossip_refused: cluster.foreign_messages(),
        members: cluster.members().len(),
        unreachable,
        hints_pending: counts.values().map(|c| c.0).sum::<u64>(),
        hint_bytes: counts.values().map(|c| c.1).sum::<u64>(),
        hints_by_owner: counts
            .iter()
            .map(|(owner, c)| (owner.clone(), c.0))
            .collect(),
        corrupt_objects_found: state.kv.store().corruptions(),
        // A cluster smaller than n_val caps the bucket defaults (an explicit
        // request option past the cluster is refused instead).
        bucket_defaults: BucketDefaults {
            configured: defaults,
            effective,
            capped: effective != defaults,
        },
    })
    .into_response()
}

/// Anti-entropy in the status: counters, and the age of each held
/// partition's last exchange with all its replicas (`null`: none yet since
/// this node started).
fn anti_entropy_shown(state: &AppState) -> AntiEntropyShown {
    let cluster = state.kv.cluster();
    let ae = cluster.anti_entropy_status();
    let now = crate::driver::now_ms();
    let held = cluster.partitions_held();
    let ages: BTreeMap<u32, Option<u64>> = held
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
    AntiEntropyShown {
        enabled: ae.enabled,
        interval_ms: state.config.anti_entropy.interval_ms,
        exchanges: ae.stats.exchanges,
        exchanges_failed: ae.stats.failed,
        bytes_compared: ae.stats.bytes_compared,
        keys_fetched: ae.stats.keys_fetched,
        keys_pushed: ae.stats.keys_pushed,
        trees_built: state.kv.store().tree_builds(),
        running: ae.running,
        requested: ae.requested,
        partitions_held: held.len(),
        partitions_never_exchanged: never,
        oldest_exchange_age_ms: oldest,
        last_exchange_age_ms: ages,
        scrub: ScrubShown {
            records_per_second: state.config.anti_entropy.scrub_records_per_second,
            records_checked: scrub.checked,
            corrupt_found: scrub.corrupt,
            passes: scrub.passes,
        },
    }
}

/// Tombstones in the status: how many this node holds, what reaping did,
/// the markers it keeps and the resurrections they caught, and the
/// engine's own deletion markers (gone after a compaction).
fn tombstones_shown(state: &AppState) -> TombstonesShown {
    let reap = state.kv.cluster().reap_status();
    let store = state.kv.store();
    let counts = store.tombstone_counts();
    TombstonesShown {
        grace_ms: reap.grace_ms,
        held: counts.held,
        reap_passes: reap.stats.passes,
        listed: reap.stats.listed,
        reaped: reap.stats.reaped,
        running: reap.running,
        reaped_markers: counts.markers,
        resurrections: counts.resurrections,
        engine_deletion_markers: store
            .engine()
            .deletion_markers(crate::storage::Space::Objects)
            .ok()
            .flatten(),
    }
}

/// The engine's write counters: durable writes and the WAL syncs they
/// took (concurrent ones share a sync), and the bytes written; and its
/// memory against the budget.
fn storage_shown(state: &AppState) -> StorageShown {
    let engine = state.kv.store().engine();
    let counts = engine.sync_counts();
    let memory = engine.memory();
    StorageShown {
        durable_writes: counts.map(|c| c.durable_writes),
        wal_syncs: counts.map(|c| c.wal_syncs),
        bytes_written: counts.map(|c| c.bytes_written),
        memory_budget_bytes: memory.map(|m| m.budget_bytes),
        block_cache_bytes: memory.map(|m| m.block_cache_bytes),
        memtable_bytes: memory.map(|m| m.memtable_bytes),
    }
}

/// This node's own copy of a key, siblings and tombstones included, never
/// merged with other replicas (cluster admins only).
#[utoipa::path(get, path = "/v1/debug/replica/{bucket}/{*key}", tag = "debug", params(KeyPath),
    responses((status = 200, description = "This node's copy", body = ReplicaShown)))]
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
        Ok(Ok(object)) => Json(replica_shown(object.as_ref())).into_response(),
        Ok(Err(e)) => ApiError::new(ErrorCode::StorageError, e.to_string()).into_response(),
        Err(e) => ApiError::new(ErrorCode::Internal, e.to_string()).into_response(),
    }
}

/// One replica's copy of a key.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplicaShown {
    /// Whether this node holds the key.
    found: bool,
    /// Its version vector.
    #[serde(skip_serializing_if = "Option::is_none")]
    clock: Option<Vec<ClockEntry>>,
    /// Its siblings, tombstones included.
    #[serde(skip_serializing_if = "Option::is_none")]
    siblings: Option<Vec<SiblingShown>>,
    /// A data-type key: the value its states make, as a read shows it
    /// (`{"error": ...}` if they do not make one).
    #[serde(skip_serializing_if = "Option::is_none")]
    crdt_value: Option<Value>,
}

/// One actor's counter in a version vector.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClockEntry {
    /// The actor.
    actor: String,
    /// Its counter.
    counter: u64,
}

/// One sibling of a replica's copy.
#[derive(Debug, Serialize, ToSchema)]
pub struct SiblingShown {
    /// The write that made it (`actor:counter`).
    dot: String,
    /// Whether it is a tombstone.
    deleted: bool,
    /// Its content type.
    content_type: String,
    /// Its value, as text (invalid UTF-8 replaced).
    value: String,
    /// Its value, exactly.
    value_base64: String,
    /// When it was written (the coordinator's clock).
    timestamp_ms: u64,
}

/// An object as a replica read shows it.
pub fn replica_shown(object: Option<&Object>) -> ReplicaShown {
    let Some(o) = object else {
        return ReplicaShown {
            found: false,
            clock: None,
            siblings: None,
            crdt_value: None,
        };
    };
    let siblings = o
        .siblings()
        .iter()
        .map(|s| SiblingShown {
            dot: format!("{}:{}", s.dot.actor, s.dot.counter),
            deleted: s.content.deleted,
            content_type: s.content.content_type.clone(),
            value: String::from_utf8_lossy(&s.content.value).into_owned(),
            value_base64: STANDARD.encode(&s.content.value),
            timestamp_ms: s.content.timestamp_ms,
        })
        .collect();
    let clock = o
        .clock()
        .iter()
        .map(|(a, c)| ClockEntry {
            actor: a.to_string(),
            counter: c,
        })
        .collect();
    let crdt = o
        .live_siblings()
        .any(|s| s.content.content_type == quorra_core::crdt::CONTENT_TYPE);
    let crdt_value = crdt.then(|| match quorra_core::crdt::collapse(o) {
        Ok(state) => state.map_or(Value::Null, |s| quorra_core::crdt::render(&s)),
        Err(e) => serde_json::json!({ "error": e.to_string() }),
    });
    ReplicaShown {
        found: true,
        clock: Some(clock),
        siblings: Some(siblings),
        crdt_value,
    }
}

/// The faults injected into this node (only on a node started with
/// `fault_injection = true`, for tests; otherwise `404`).
#[utoipa::path(get, path = "/v1/debug/faults", tag = "debug",
    responses((status = 200, description = "The faults in force", body = FaultState)))]
pub(super) async fn get_faults(State(state): State<AppState>) -> Response {
    match fault_switch(&state) {
        Ok(faults) => Json(faults.get()).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Sets the faults injected into this node (only with `fault_injection =
/// true`; otherwise `404`).
#[utoipa::path(put, path = "/v1/debug/faults", tag = "debug", request_body = FaultState,
    responses((status = 200, description = "The faults now in force", body = FaultState)))]
pub(super) async fn put_faults(State(state): State<AppState>, body: Bytes) -> Response {
    let faults = match fault_switch(&state) {
        Ok(f) => f,
        Err(e) => return e.into_response(),
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

/// The node's fault switch, if fault injection is on.
fn fault_switch(state: &AppState) -> Result<std::sync::Arc<crate::faults::Faults>, ApiError> {
    let faults = state.kv.cluster().faults().clone();
    if faults.enabled() {
        Ok(faults)
    } else {
        Err(ApiError::new(
            ErrorCode::RouteNotFound,
            "fault injection is off on this node (fault_injection = true enables it, for tests only)",
        ))
    }
}
