//! Bucket properties, the cluster's (they live in its layout):
//!
//! - `GET /v1/buckets/{bucket}/props`: the properties in force, and
//!   whether the bucket is named or takes the defaults.
//! - `PUT /v1/buckets/{bucket}/props` with some of `n_val`, `r`, `w`,
//!   `dw`, `pr`, `pw`, `conflict_mode`, `datatype` (admin on the bucket): the rest
//!   are kept. It answers once every reachable member has the change
//!   (`"activated": true`), or after half the request timeout with
//!   `false`. A bucket's
//!   `datatype` (`counter`, `set`, `map`, `register`, `flag`) is set once:
//!   changing it is `409 bucket_props_fixed`, and with `lww` it is `400`.
//!   The change is a layout version of its own, decided by the voters like
//!   any commit; it moves no data, and one that changes nothing makes no
//!   version. Only the quorum defaults change here: a bucket's conflict
//!   mode is fixed since the cluster was founded (any bucket may hold
//!   objects merged by it), and its `n_val` moves data, so it changes
//!   through plan and commit (`POST /v1/admin/layout/n_val`): `409
//!   bucket_props_fixed`.
//!   While partitions move, or when another change came first: `409
//!   layout_conflict`, retry.

use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use quorra_core::auth::{authorize_bucket, Perm, Principal};
use quorra_core::bucket::{BucketProps, PropsPatch};
use quorra_core::{BucketName, ErrorCode};
use serde::Serialize;
use utoipa::ToSchema;

use super::error::ApiError;
use super::AppState;

fn bucket_of(state: &AppState, name: &str) -> Result<BucketName, ApiError> {
    BucketName::parse(name, &state.config.limits).map_err(|e| ApiError::new(e.code, e.message))
}

/// A bucket's properties as the cluster has them.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct BucketShown {
    /// The bucket.
    bucket: String,
    /// The properties in force.
    props: BucketProps,
    /// Whether the bucket has properties of its own (otherwise the
    /// defaults).
    named: bool,
    /// The layout version they are from (`null` before the node joined).
    layout_version: Option<u64>,
    /// After a change: whether every reachable member had it when
    /// answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    activated: Option<bool>,
}

fn describe(state: &AppState, bucket: &BucketName) -> BucketShown {
    let cluster = state.kv.cluster();
    let table = cluster.bucket_table();
    BucketShown {
        bucket: bucket.as_str().to_owned(),
        props: table.props(bucket.as_str()),
        named: table.named.contains_key(bucket.as_str()),
        layout_version: cluster.layout().map(|l| l.version),
        activated: None,
    }
}

/// The properties in force, and whether the bucket is named or takes the
/// defaults (read or admin on the bucket).
#[utoipa::path(get, path = "/v1/buckets/{bucket}/props", tag = "buckets",
    params(("bucket" = String, Path, description = "The bucket")),
    responses((status = 200, description = "The bucket's properties", body = BucketShown)))]
pub(super) async fn get_props(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(bucket): Path<String>,
) -> Response {
    let shown = bucket_of(&state, &bucket).and_then(|bucket| {
        // Who may read the bucket, or change its properties, sees them.
        authorize_bucket(&who, bucket.as_str(), Perm::Read)
            .or_else(|_| authorize_bucket(&who, bucket.as_str(), Perm::Admin))?;
        Ok(bucket)
    });
    match shown {
        Ok(bucket) => Json(describe(&state, &bucket)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Sets some of the bucket's quorum properties, or its data type (admin on
/// the bucket); the rest are kept.
#[utoipa::path(put, path = "/v1/buckets/{bucket}/props", tag = "buckets", request_body = PropsPatch,
    params(("bucket" = String, Path, description = "The bucket")),
    responses((status = 200, description = "The properties now", body = BucketShown)))]
pub(super) async fn put_props(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(bucket): Path<String>,
    body: Bytes,
) -> Response {
    match set_props(&state, &who, &bucket, &body).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn set_props(
    state: &AppState,
    who: &Principal,
    bucket: &str,
    body: &[u8],
) -> Result<BucketShown, ApiError> {
    let bucket = bucket_of(state, bucket)?;
    authorize_bucket(who, bucket.as_str(), Perm::Admin)?;
    let patch: PropsPatch = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidParameter,
            format!(
                "the body is a JSON object with some of n_val, r, w, dw, pr, pw, conflict_mode, datatype: {e}"
            ),
        )
    })?;
    let layout = state
        .kv
        .cluster()
        .set_bucket_props(&bucket, patch)
        .await
        .map_err(|e| ApiError::new(e.code(), e.to_string()))?;
    let activated = activated(state, layout.version).await;
    let mut shown = describe(state, &bucket);
    shown.activated = Some(activated);
    Ok(shown)
}

/// Waits until every reachable member has acknowledged layout `version`
/// (or a later one), so a request through any node sees the change (as
/// Riak activates a bucket type once every node has it); `false` if some
/// had not within half the request timeout (the rest of it is the
/// commit's): they take it by gossip soon.
pub(super) async fn activated(state: &AppState, version: u64) -> bool {
    let cluster = state.kv.cluster();
    let wait = Duration::from_millis(state.config.request_timeout_ms / 2);
    let deadline = Instant::now() + wait;
    loop {
        let taken = cluster.layout().is_some_and(|l| {
            l.version > version
                || (l.version == version && l.unacked(|id| cluster.is_reachable(id)).is_empty())
        });
        if taken {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        // Acknowledgements arrive by gossip; look again shortly.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
