//! Tokens and certificate grants, changed by cluster admins:
//!
//! - `GET /v1/admin/tokens`: every token's id and grants (never a secret
//!   or its hash), every certificate entry, and whether the API is closed.
//! - `POST /v1/admin/tokens` with `{"id": ID, "grants": [...]}`: creates
//!   the token `ID` with a fresh secret (`"replace": true` rotates an
//!   existing one; otherwise an existing id is `412`); `201` with
//!   `{"token": "ID.SECRET"}`, the only time the secret is shown. The first
//!   token must be a cluster admin's (`{"bucket": "*", "allow":
//!   ["admin", ...]}`): from then on every request needs a token.
//! - `DELETE /v1/admin/tokens/{id}`: revokes it (deleting the last token
//!   opens the API again; the last cluster admin among others cannot go).
//! - `PUT /v1/admin/certs/{name}` with `{"grants": [...]}`: narrows the
//!   client or admin certificate `name` (QUIC) to its grants;
//!   `DELETE /v1/admin/certs/{name}` gives it its role's permissions again.
//!
//! A grant is `{"bucket": "*" | NAME | "PREFIX*", "allow": ["read",
//! "write", "admin"]}`. Each change is a layout version of its own; the
//! answer says whether every reachable member had it (`"activated"`).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use quorra_core::access::{secret_sha256, AccessChange, Grant};
use quorra_core::ErrorCode;
use rand::RngCore;
use serde::Deserialize;
use serde_json::{json, Value};

use super::buckets::activated;
use super::error::ApiError;
use super::AppState;

/// The body of `POST /v1/admin/tokens`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    id: String,
    grants: Vec<Grant>,
    /// Rotate an existing token of this id (a new secret, the old one
    /// revoked); without it an existing id is `412`.
    #[serde(default)]
    replace: bool,
}

/// The body of `PUT /v1/admin/certs/{name}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CertGrants {
    grants: Vec<Grant>,
}

fn body_of<T: for<'de> Deserialize<'de>>(body: &[u8], shape: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidParameter,
            format!("the body is {shape}, each grant {{\"bucket\": \"*\" | name | \"prefix*\", \"allow\": [\"read\", \"write\", \"admin\"]}}: {e}"),
        )
    })
}

/// Commits `change` and waits for it to be taken.
async fn change(state: &AppState, change: AccessChange) -> Result<bool, ApiError> {
    let layout = state
        .kv
        .cluster()
        .set_access(change)
        .await
        .map_err(|e| ApiError::new(e.code(), e.to_string()))?;
    Ok(activated(state, layout.version).await)
}

/// `GET /v1/admin/tokens`.
pub(super) async fn list(State(state): State<AppState>) -> Json<Value> {
    let shown = state.kv.cluster().with_access_policy(|p| {
        let p = p.cloned().unwrap_or_default();
        let tokens: Vec<Value> = p
            .tokens
            .iter()
            .map(|(id, t)| json!({"id": id, "grants": t.grants}))
            .collect();
        let certs: Vec<Value> = p
            .certs
            .iter()
            .map(|(name, g)| json!({"name": name, "grants": g}))
            .collect();
        json!({"closed": p.closed(), "tokens": tokens, "certs": certs})
    });
    Json(shown)
}

/// `POST /v1/admin/tokens`.
pub(super) async fn create(State(state): State<AppState>, body: Bytes) -> Response {
    let made = async {
        let new: NewToken = body_of(&body, "{\"id\": ID, \"grants\": [...]}")?;
        let mut raw = [0u8; 32];
        rand::rng().fill_bytes(&mut raw);
        let secret = URL_SAFE_NO_PAD.encode(raw);
        let activated = change(
            &state,
            AccessChange::PutToken {
                id: new.id.clone(),
                secret_sha256: secret_sha256(&secret),
                grants: new.grants.clone(),
                replace: new.replace,
            },
        )
        .await?;
        Ok::<_, ApiError>(json!({
            "id": new.id,
            "token": format!("{}.{secret}", new.id),
            "grants": new.grants,
            "activated": activated,
        }))
    };
    match made.await {
        Ok(v) => (StatusCode::CREATED, Json(v)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `DELETE /v1/admin/tokens/{id}`.
pub(super) async fn revoke(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match change(&state, AccessChange::DeleteToken { id: id.clone() }).await {
        Ok(activated) => Json(json!({"revoked": id, "activated": activated})).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `PUT /v1/admin/certs/{name}`.
pub(super) async fn put_cert(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let done = async {
        let CertGrants { grants } = body_of(&body, "{\"grants\": [...]}")?;
        let activated = change(
            &state,
            AccessChange::PutCert {
                name: name.clone(),
                grants: grants.clone(),
            },
        )
        .await?;
        Ok::<_, ApiError>(json!({"name": name, "grants": grants, "activated": activated}))
    };
    match done.await {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `DELETE /v1/admin/certs/{name}`.
pub(super) async fn delete_cert(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Response {
    match change(&state, AccessChange::DeleteCert { name: name.clone() }).await {
        Ok(activated) => Json(json!({"name": name, "activated": activated})).into_response(),
        Err(e) => e.into_response(),
    }
}
