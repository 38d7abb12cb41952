//! `/v1/crdt/{bucket}/{key}`: data types over HTTP (the bucket's
//! `datatype` property names the type).
//!
//! - `GET` answers `{"type": ..., "value": ..., "context": ...}`: the value
//!   as plain JSON, and an opaque context for removes (also in
//!   `X-Quorra-Context`). A key nothing was written to is `404 not_found`.
//! - `POST` takes one JSON operation (see [`quorra_core::crdt::parse_op`]);
//!   a remove names the context of a read, as `"context"` in the body or in
//!   `X-Quorra-Context`. It answers like a `GET`, with the value the
//!   coordinator holds after the operation; except in a set bucket, where
//!   it answers `{"type": "set", "size": n, "context": ...}` (the
//!   coordinator's element count and context after it), never every
//!   element: a set may hold 100,000, and an add costs the same whatever
//!   the size. A `GET` reads the elements.
//!
//! An operation that does not fit the type is `400 wrong_datatype`; a
//! remove without a context is `400 context_required`.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use axum::Json;
use quorra_core::crdt::{self, CrdtError, CrdtValue, Datatype, SetUpdate};
use quorra_core::proto::Operation;
use quorra_core::{BucketName, ErrorCode, Object};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::error::ApiError;
use super::kv::{self as http_kv, CONTEXT_HEADER};
use super::KvRoutes;
use quorra_core::auth::{authorize_bucket, Perm};

fn refused(e: &CrdtError) -> ApiError {
    ApiError::new(e.code(), e.to_string())
}

/// A data-type key's value, or the answer to an operation on it.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct CrdtShown {
    /// The bucket's data type.
    #[serde(rename = "type")]
    datatype: Datatype,
    /// The value as plain JSON (a number, an array of strings, an object,
    /// a string or a boolean, by type); absent after a set write and
    /// after a write by a caller who may not read.
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<Value>,
    /// After a set write: the set's element count.
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    /// The opaque context a remove names.
    context: Option<String>,
}

/// Reads a data-type key: its value as plain JSON and a context for removes.
#[utoipa::path(get, path = "/v1/crdt/{bucket}/{*key}", tag = "crdt", params(http_kv::KeyPath, http_kv::QuorumQuery),
    responses((status = 200, description = "The value", body = CrdtShown,
        headers(("x-quorra-context" = String, description = "The context for removes")))))]
pub(super) async fn read(State(routes): State<KvRoutes>, req: Request) -> Response {
    serve(routes, req)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// Applies one operation to a data-type key (its shape follows the
/// bucket's type: `{"increment": 5}`, `{"add": ["a"]}`, `{"update":
/// {...}}`, ...); a remove names the context of a read.
#[utoipa::path(post, path = "/v1/crdt/{bucket}/{*key}", tag = "crdt", params(http_kv::KeyPath, http_kv::QuorumQuery),
    request_body(content = Object, description = "One operation, for the bucket's type"),
    responses((status = 200, description = "The value after the operation (a set's size only)", body = CrdtShown,
        headers(("x-quorra-context" = String, description = "The context after the operation")))))]
pub(super) async fn update(State(routes): State<KvRoutes>, req: Request) -> Response {
    serve(routes, req)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn serve(routes: KvRoutes, req: Request) -> Result<Response, ApiError> {
    let limits = routes.limits;
    let service = &*routes.service;
    let (bucket, key) = http_kv::parse_path_in("/v1/crdt/", req.uri().path(), &limits)?;
    let quorum = http_kv::parse_query(req.uri())?;
    let who = super::auth::principal(&req);
    let Some(datatype) = service.datatype(&bucket) else {
        // Only a caller who may use the bucket learns it is a plain one.
        let perm = if *req.method() == Method::GET {
            Perm::Read
        } else {
            Perm::Write
        };
        authorize_bucket(&who, bucket.as_str(), perm)?;
        return Err(refused(&CrdtError::Plain(bucket.to_string())));
    };
    match *req.method() {
        Method::GET => {
            let (object, ctx) = service.get(&who, bucket.clone(), key, quorum).await?;
            shown(&bucket, datatype, object.as_ref(), ctx, false)
        }
        Method::POST => {
            let header_ctx = http_kv::context(req.headers())?;
            let body = http_kv::read_body(req.into_body(), limits.max_value_bytes).await?;
            let mut doc: Value = serde_json::from_slice(&body).map_err(|e| {
                ApiError::new(
                    ErrorCode::InvalidParameter,
                    format!("the body is one JSON operation: {e}"),
                )
            })?;
            let body_ctx = match doc.as_object_mut().and_then(|o| o.remove("context")) {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s),
                Some(_) => {
                    return Err(ApiError::new(
                        ErrorCode::InvalidContext,
                        "\"context\" is the string a read returned",
                    ))
                }
            };
            let op = crdt::parse_op(datatype, &doc).map_err(|e| refused(&e))?;
            let ctx = body_ctx.or(header_ctx);
            let (object, ctx) = service
                .write(
                    &who,
                    bucket.clone(),
                    key,
                    ctx.as_deref(),
                    Operation::Crdt(op),
                    quorum,
                )
                .await?;
            // A caller that may write but not read learns nothing of the
            // value from its write's answer.
            if authorize_bucket(&who, bucket.as_str(), Perm::Read).is_err() {
                let body = CrdtShown {
                    datatype,
                    value: None,
                    size: None,
                    context: ctx.clone(),
                };
                return Ok(with_context(Json(body).into_response(), ctx));
            }
            shown(&bucket, datatype, object.as_ref(), ctx, true)
        }
        _ => Err(ApiError::new(
            ErrorCode::MethodNotAllowed,
            "use GET or POST on a data-type key",
        )),
    }
}

/// The answer showing `object`'s value; after a set write (`written`),
/// the set's size instead of its elements.
fn shown(
    bucket: &BucketName,
    datatype: Datatype,
    object: Option<&Object>,
    ctx: Option<String>,
    written: bool,
) -> Result<Response, ApiError> {
    let sized = |size: u64| {
        let body = CrdtShown {
            datatype,
            value: None,
            size: Some(size),
            context: ctx.clone(),
        };
        Ok(with_context(Json(body).into_response(), ctx.clone()))
    };
    if let Some(update) = object.and_then(SetUpdate::of_object) {
        return sized(update.size);
    }
    let state = match object {
        Some(o) => crdt::collapse(o).map_err(|e| refused(&e))?,
        None => None,
    };
    // (A coordinator that found the set stored whole answers it whole.)
    if let (true, Some(CrdtValue::Set(set))) = (written, &state) {
        return sized(set.members().count() as u64);
    }
    let Some(state) = state else {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no {datatype} is stored under this key in bucket {bucket}"),
        ));
    };
    let body = CrdtShown {
        datatype,
        value: Some(crdt::render(&state)),
        size: None,
        context: ctx.clone(),
    };
    Ok(with_context(Json(body).into_response(), ctx))
}

/// `resp` with the context in `X-Quorra-Context` too.
fn with_context(mut resp: Response, ctx: Option<String>) -> Response {
    if let Some(v) = ctx.and_then(|c| HeaderValue::from_str(&c).ok()) {
        resp.headers_mut().insert(CONTEXT_HEADER, v);
    }
    resp
}
