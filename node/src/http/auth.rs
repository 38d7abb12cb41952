//! Who an HTTP request acts as, and the route-level check, in one layer.
//!
//! While the cluster's access policy holds no token, the API is open:
//! every request acts as an admin, as before tokens existed (bind the HTTP
//! address to loopback or a private network then). Once a token exists,
//! every route but `/health`, `/ready` and `/metrics` needs
//! `Authorization: Bearer ID.SECRET`: no token or an unknown one is `401
//! unauthorized`, a token without the permission `403 forbidden`.
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
use quorra_core::access::{is_cluster_admin, BadToken};
use quorra_core::auth::{authorize, Access, Principal, Role};
use quorra_core::ErrorCode;

use super::error::ApiError;
use super::AppState;

/// What a route needs of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Anyone: liveness, readiness, metrics.
    Public,
    /// Any valid token (keys and buckets check their grants further).
    Client,
    /// A cluster admin.
    Admin,
}

fn class_of(path: &str) -> Class {
    if matches!(path, "/health" | "/ready" | "/metrics") {
        Class::Public
    } else if path.starts_with("/v1/admin/") || path.starts_with("/v1/debug/") {
        Class::Admin
    } else {
        Class::Client
    }
}

/// The principal of a request in an open cluster.
pub fn open_principal() -> Principal {
    Principal::new(Role::Admin, "anonymous")
}

/// The principal a request's `Authorization` header names, under the
/// cluster's policy.
fn principal_of(state: &AppState, req: &Request) -> Result<Principal, ApiError> {
    let header = req.headers().get(header::AUTHORIZATION);
    state.kv.cluster().with_access_policy(|policy| {
        let Some(policy) = policy.filter(|p| p.closed()) else {
            return Ok(open_principal());
        };
        let raw = header
            .ok_or_else(|| {
                unauthorized("this cluster needs a bearer token: Authorization: Bearer ID.SECRET")
            })?
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| unauthorized("the Authorization header is not Bearer ID.SECRET"))?;
        match policy.authenticate(raw.trim()) {
            Ok((id, grants)) => {
                let role = if is_cluster_admin(grants) {
                    Role::Admin
                } else {
                    Role::Client
                };
                Ok(Principal::new(role, format!("token:{id}")).with_grants(grants.to_vec()))
            }
            Err(e @ (BadToken::Malformed | BadToken::Unknown)) => Err(unauthorized(e.to_string())),
        }
    })
}

fn unauthorized(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::Unauthorized, message)
}

/// The layer: authenticates, checks the route's class, and hands the
/// principal on.
pub(super) async fn authenticate(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let class = class_of(req.uri().path());
    if class == Class::Public {
        return next.run(req).await;
    }
    let checked = principal_of(&state, &req).and_then(|who| {
        let access = match class {
            Class::Admin => Access::Admin,
            Class::Client | Class::Public => Access::Client,
        };
        authorize(&who, access).map_err(|d| ApiError::new(d.code(), d.to_string()))?;
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
        assert_eq!(class_of("/v1/cluster/members"), Class::Client);
        // Anything unknown needs a token too: no route leaks unchecked.
        assert_eq!(class_of("/v1/admin"), Class::Client);
        assert_eq!(class_of("/healthz"), Class::Client);
    }
}
