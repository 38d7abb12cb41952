//! Who an HTTP request acts as, and the route-level check, in one layer.
//!
//! While the cluster's access policy holds no token, the API is open:
//! every request acts as an admin, as before tokens existed (bind the HTTP
//! address to loopback or a private network then). Once a token exists,
//! every route but `/health`, `/ready` and `/metrics` needs
//! `Authorization: Bearer ID.SECRET`: no token or an unknown one is `401
//! unauthorized`, a token without the permission `403 forbidden`.
//!
//! A node that has not joined its cluster yet answers every route but the
//! public ones and `/v1/cluster/*` with `503`: it does not know the policy.
//!
//! Routes are checked by their class here (admin and debug routes need a
//! cluster admin; cluster views any valid token); key and bucket routes
//! need the grant on their bucket, checked where the bucket is known
//! ([`crate::kv::Kv`] for keys, [`super::buckets`] for properties). The
//! principal travels to handlers as a request extension.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use quorra_core::access::{is_cluster_admin, parse_token, secret_sha256, BadToken};
use quorra_core::auth::{authorize, Access, Principal, Role};
use quorra_core::ErrorCode;

use std::sync::Arc;

use quorra_core::access::TokenEntry;

use super::error::ApiError;

/// Where the access policy comes from: the node's own layout, or the
/// layout a gateway's client was sent (as a cluster admin certificate).
pub trait Gate: Send + Sync + 'static {
    /// Whether the policy is known (a node that has not joined does not
    /// know it, and must not serve as if the cluster were open).
    fn knows_policy(&self) -> bool;

    /// Why the policy is not known, for the `503` a caller gets then.
    fn unknown_policy(&self) -> &'static str {
        "this node is not in a cluster yet (it has not joined, so it does not know the access policy); ask another node"
    }

    /// Under a closed policy, the entry of token `id` (`Some(None)`: no
    /// such token, or no id presented); `None` while the cluster is open.
    fn token(&self, id: Option<&str>) -> Option<Option<TokenEntry>>;
}

impl Gate for crate::driver::Driver {
    fn knows_policy(&self) -> bool {
        self.has_joined()
    }

    fn token(&self, id: Option<&str>) -> Option<Option<TokenEntry>> {
        self.with_access_policy(|policy| {
            let policy = policy.filter(|p| p.closed())?;
            Some(id.and_then(|id| policy.tokens.get(id).cloned()))
        })
    }
}

/// How old a gateway's view of the policy may grow (its refreshes
/// failing) before it refuses to serve as if it still held.
pub const MAX_POLICY_AGE: std::time::Duration = std::time::Duration::from_secs(10);

impl Gate for quorra_client::Client {
    fn knows_policy(&self) -> bool {
        // Sent the policy (only a cluster admin certificate is), and not
        // long ago: otherwise it fails closed.
        self.access_policy().is_some() && self.view_age() < MAX_POLICY_AGE
    }

    fn unknown_policy(&self) -> &'static str {
        "the gateway does not hold a current access policy (its certificate is not a cluster admin's, or it has not reached a node for 10 s)"
    }

    fn token(&self, id: Option<&str>) -> Option<Option<TokenEntry>> {
        let policy = self.access_policy()?;
        if !policy.closed() {
            return None;
        }
        Some(id.and_then(|id| policy.tokens.get(id).cloned()))
    }
}

/// What a route needs of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Anyone: liveness, readiness, metrics, the API's document.
    Public,
    /// Any valid token (keys and buckets check their grants further).
    Client,
    /// Views of the cluster (members, ring, status): any valid token, and
    /// served before the node has joined (they hold no data, and show a
    /// join's progress).
    Cluster,
    /// A cluster admin.
    Admin,
}

fn class_of(path: &str) -> Class {
    if matches!(path, "/health" | "/ready" | "/metrics" | "/openapi.json") {
        Class::Public
    } else if path.starts_with("/v1/admin/") || path.starts_with("/v1/debug/") {
        Class::Admin
    } else if path.starts_with("/v1/cluster/") {
        Class::Cluster
    } else {
        Class::Client
    }
}

/// The principal of a request in an open cluster.
pub fn open_principal() -> Principal {
    Principal::new(Role::Admin, "anonymous")
}

/// The principal a request's `Authorization` header names, under the
/// cluster's policy. The secret is hashed outside the node's lock, and a
/// header that cannot hold a token is refused before anything is hashed.
fn principal_of(gate: &dyn Gate, req: &Request) -> Result<Principal, ApiError> {
    if !gate.knows_policy() {
        // Its policy is not known: it must not serve as if open.
        return Err(ApiError::new(
            ErrorCode::QuorumUnavailable,
            gate.unknown_policy(),
        ));
    }
    let presented = bearer(req);
    let found = gate.token(presented.as_ref().ok().map(|(id, _)| *id));
    let Some(entry) = found else {
        return Ok(open_principal());
    };
    let (id, secret) = presented.map_err(|e| unauthorized(e.to_string()))?;
    match entry {
        Some(entry) if entry.verify(secret) => {
            let role = if is_cluster_admin(&entry.grants) {
                Role::Admin
            } else {
                Role::Client
            };
            Ok(Principal::new(role, format!("token:{id}")).with_grants(entry.grants))
        }
        _ => {
            // As long as a known id's check: no hint which ids exist.
            let _ = secret_sha256(secret);
            Err(unauthorized(BadToken::Unknown.to_string()))
        }
    }
}

/// Why a request carries no usable token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum NoToken {
    #[error("this cluster needs a bearer token: Authorization: Bearer ID.SECRET")]
    Missing,
    #[error("the Authorization header is not Bearer ID.SECRET")]
    NotBearer,
    #[error(transparent)]
    Bad(#[from] BadToken),
}

/// The token in `Authorization: Bearer ID.SECRET` (the scheme in any
/// case), split into id and secret.
fn bearer(req: &Request) -> Result<(&str, &str), NoToken> {
    let value = req
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or(NoToken::Missing)?
        .to_str()
        .map_err(|_| NoToken::NotBearer)?;
    let (scheme, token) = value.trim().split_once(' ').ok_or(NoToken::NotBearer)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(NoToken::NotBearer);
    }
    Ok(parse_token(token.trim())?)
}

fn unauthorized(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::Unauthorized, message)
}

/// The layer: authenticates, checks the route's class, and hands the
/// principal on.
pub async fn authenticate(
    State(gate): State<Arc<dyn Gate>>,
    mut req: Request,
    next: Next,
) -> Response {
    let class = class_of(req.uri().path());
    if class == Class::Public {
        return next.run(req).await;
    }
    if class == Class::Cluster && !gate.knows_policy() {
        req.extensions_mut()
            .insert(Principal::new(Role::Client, "before-join"));
        return next.run(req).await;
    }
    let checked = principal_of(&*gate, &req).and_then(|who| {
        let access = match class {
            Class::Admin => Access::Admin,
            Class::Client | Class::Cluster | Class::Public => Access::Client,
        };
        authorize(&who, access)?;
        Ok(who)
    });
    match checked {
        Ok(who) => {
            req.extensions_mut().insert(who);
            next.run(req).await
        }
        Err(e) => {
            let unauthorized = e.code == ErrorCode::Unauthorized;
            let mut resp = e.into_response();
            if unauthorized {
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"quorra\""),
                );
            }
            resp
        }
    }
}

/// The principal the layer put on `req` (one with no role, refused
/// everything, if none: a route the layer did not see).
pub(super) fn principal(req: &Request) -> Principal {
    req.extensions()
        .get::<Principal>()
        .cloned()
        .unwrap_or_else(|| Principal::from_uris([], "unauthenticated"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_fall_in_classes() {
        assert_eq!(class_of("/health"), Class::Public);
        assert_eq!(class_of("/metrics"), Class::Public);
        assert_eq!(class_of("/v1/admin/tokens"), Class::Admin);
        assert_eq!(class_of("/v1/debug/replica/b/k"), Class::Admin);
        assert_eq!(class_of("/v1/kv/b/k"), Class::Client);
        assert_eq!(class_of("/v1/cluster/members"), Class::Cluster);
        // Anything unknown needs a token too: no route leaks unchecked.
        assert_eq!(class_of("/v1/admin"), Class::Client);
        assert_eq!(class_of("/healthz"), Class::Client);
    }
}
