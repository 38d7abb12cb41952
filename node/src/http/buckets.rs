//! Bucket properties, the cluster's (they live in its layout):
//!
//! - `GET /v1/buckets/{bucket}/props`: the properties in force, and
//!   whether the bucket is named or takes the defaults.
//! - `PUT /v1/buckets/{bucket}/props` with some of `n_val`, `r`, `w`,
//!   `dw`, `pr`, `pw`, `conflict_mode` (admin role): the rest are kept.
//!   The change is a layout version of its own, decided by the voters like
//!   any commit; it moves no data, and one that changes nothing makes no
//!   version. Only the quorum defaults change here: a bucket's conflict
//!   mode is fixed since the cluster was founded (any bucket may hold
//!   objects merged by it), and its `n_val` moves data, so it changes
//!   through plan and commit (`POST /v1/admin/layout/n_val`): `409
//!   bucket_props_fixed`.
//!   While partitions move, or when another change came first: `409
//!   layout_conflict`, retry.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use quorra_core::auth::{authorize, Access};
use quorra_core::bucket::PropsPatch;
use quorra_core::{BucketName, ErrorCode};
use serde_json::{json, Value};

use super::error::ApiError;
use super::kv::http_principal;
use super::AppState;

fn bucket_of(state: &AppState, name: &str) -> Result<BucketName, ApiError> {
    BucketName::parse(name, &state.config.limits).map_err(|e| ApiError::new(e.code, e.message))
}

fn describe(state: &AppState, bucket: &BucketName) -> Value {
    let cluster = state.kv.cluster();
    let table = cluster.bucket_table();
    json!({
        "bucket": bucket.as_str(),
        "props": table.props(bucket.as_str()),
        "named": table.named.contains_key(bucket.as_str()),
        "layout_version": cluster.layout().map(|l| l.version),
    })
}

/// `GET /v1/buckets/{bucket}/props`.
pub(super) async fn get_props(
    State(state): State<AppState>,
    Path(bucket): Path<String>,
) -> Response {
    let shown = authorize(&http_principal(), Access::Client)
        .map_err(|d| ApiError::new(d.code(), d.to_string()))
        .and_then(|()| bucket_of(&state, &bucket));
    match shown {
        Ok(bucket) => Json(describe(&state, &bucket)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `PUT /v1/buckets/{bucket}/props`.
pub(super) async fn put_props(
    State(state): State<AppState>,
    Path(bucket): Path<String>,
    body: Bytes,
) -> Response {
    match set_props(&state, &bucket, &body).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn set_props(state: &AppState, bucket: &str, body: &[u8]) -> Result<Value, ApiError> {
    authorize(&http_principal(), Access::Admin)
        .map_err(|d| ApiError::new(d.code(), d.to_string()))?;
    let bucket = bucket_of(state, bucket)?;
    let patch: PropsPatch = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidParameter,
            format!(
                "the body is a JSON object with some of n_val, r, w, dw, pr, pw, conflict_mode: {e}"
            ),
        )
    })?;
    state
        .kv
        .cluster()
        .set_bucket_props(&bucket, patch)
        .await
        .map_err(|e| ApiError::new(e.code(), e.to_string()))?;
    Ok(describe(state, &bucket))
}
