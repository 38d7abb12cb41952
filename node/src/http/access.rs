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
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::buckets::activated;
use super::error::ApiError;
use super::AppState;

/// The body of `POST /v1/admin/tokens`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewToken {
    /// The token's id (the part before the dot).
    id: String,
    /// What it may do.
    grants: Vec<Grant>,
    /// Rotate an existing token of this id (a new secret, the old one
    /// revoked); without it an existing id is `412`.
    #[serde(default)]
    replace: bool,
}

/// The body of `PUT /v1/admin/certs/{name}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CertGrants {
    /// What the certificate may do.
    grants: Vec<Grant>,
}

/// The answer of `GET /v1/admin/tokens`.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct AccessList {
    /// Whether requests need a token (the cluster has one).
    closed: bool,
    /// Every token, without its secret.
    tokens: Vec<TokenShown>,
    /// Every certificate entry.
    certs: Vec<CertShown>,
}

/// A token as listed: its id and grants.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct TokenShown {
    /// The token's id.
    id: String,
    /// What it may do.
    grants: Vec<Grant>,
}

/// A certificate entry as listed.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct CertShown {
    /// The certificate's name.
    name: String,
    /// What it may do.
    grants: Vec<Grant>,
}

/// A new token: the only time its secret is shown.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct TokenCreated {
    /// The token's id.
    id: String,
    /// `ID.SECRET`, for `Authorization: Bearer`.
    token: String,
    /// What it may do.
    grants: Vec<Grant>,
    /// Whether every reachable member had the change when answered.
    activated: bool,
}

/// A revoked token.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct TokenRevoked {
    /// The token's id.
    revoked: String,
    /// Whether every reachable member had the change when answered.
    activated: bool,
}

/// A certificate entry set or removed.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct CertChanged {
    /// The certificate's name.
    name: String,
    /// Its grants now (absent when the entry was removed: the
    /// certificate's role decides again).
    #[serde(skip_serializing_if = "Option::is_none")]
    grants: Option<Vec<Grant>>,
    /// Whether every reachable member had the change when answered.
    activated: bool,
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

/// Every token (never a secret or its hash), every certificate entry, and
/// whether the API is closed.
#[utoipa::path(get, path = "/v1/admin/tokens", tag = "access",
    responses((status = 200, description = "The access policy, without secrets", body = AccessList)))]
pub(super) async fn list(State(state): State<AppState>) -> Json<AccessList> {
    let shown = state.kv.cluster().with_access_policy(|p| {
        let p = p.cloned().unwrap_or_default();
        AccessList {
            closed: p.closed(),
            tokens: p
                .tokens
                .iter()
                .map(|(id, t)| TokenShown {
                    id: id.clone(),
                    grants: t.grants.clone(),
                })
                .collect(),
            certs: p
                .certs
                .iter()
                .map(|(name, g)| CertShown {
                    name: name.clone(),
                    grants: g.clone(),
                })
                .collect(),
        }
    });
    Json(shown)
}

/// Creates a token with a fresh secret (`"replace": true` rotates one).
/// The first token must be a cluster admin's; from then on every request
/// needs a token.
#[utoipa::path(post, path = "/v1/admin/tokens", tag = "access", request_body = NewToken,
    responses((status = 201, description = "The token, with its secret (shown only now)", body = TokenCreated)))]
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
        Ok::<_, ApiError>(TokenCreated {
            token: format!("{}.{secret}", new.id),
            id: new.id,
            grants: new.grants,
            activated,
        })
    };
    match made.await {
        Ok(v) => (StatusCode::CREATED, Json(v)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Revokes a token (deleting the last one opens the API again; the last
/// cluster admin among other tokens cannot go: `412`).
#[utoipa::path(delete, path = "/v1/admin/tokens/{id}", tag = "access",
    params(("id" = String, Path, description = "The token's id")),
    responses((status = 200, description = "Revoked", body = TokenRevoked)))]
pub(super) async fn revoke(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match change(&state, AccessChange::DeleteToken { id: id.clone() }).await {
        Ok(activated) => Json(TokenRevoked {
            revoked: id,
            activated,
        })
        .into_response(),
        Err(e) => e.into_response(),
    }
}

/// Narrows the client or admin certificate `name` (QUIC) to its grants.
#[utoipa::path(put, path = "/v1/admin/certs/{name}", tag = "access", request_body = CertGrants,
    params(("name" = String, Path, description = "The certificate's name")),
    responses((status = 200, description = "Set", body = CertChanged)))]
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
        Ok::<_, ApiError>(CertChanged {
            name: name.clone(),
            grants: Some(grants),
            activated,
        })
    };
    match done.await {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Removes a certificate's entry: its role's permissions apply again.
#[utoipa::path(delete, path = "/v1/admin/certs/{name}", tag = "access",
    params(("name" = String, Path, description = "The certificate's name")),
    responses((status = 200, description = "Removed", body = CertChanged)))]
pub(super) async fn delete_cert(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Response {
    match change(&state, AccessChange::DeleteCert { name: name.clone() }).await {
        Ok(activated) => Json(CertChanged {
            name,
            grants: None,
            activated,
        })
        .into_response(),
        Err(e) => e.into_response(),
    }
}
