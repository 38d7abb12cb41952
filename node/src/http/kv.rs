//! `/v1/kv/{bucket}/{key}`: read, write and delete one key.
//!
//! Bucket and key come percent-decoded from the raw path, so keys are
//! arbitrary bytes (`%00`, `%2F`, …). The causal context travels in
//! `X-Quorra-Context`; user metadata in `X-Quorra-Meta-*` headers.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, Limited};
use percent_encoding::percent_decode_str;
use quorra_core::auth::{authorize_bucket, Perm};
use quorra_core::bucket::{MAX_CONTENT_TYPE_LEN, MAX_META_BYTES};
use quorra_core::proto::Operation;
use quorra_core::{BucketName, Content, ErrorCode, Key, Object, QuorumOverrides};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::error::ApiError;
use super::multipart::{self, Part};
use super::KvRoutes;

/// The header carrying the causal context.
pub const CONTEXT_HEADER: &str = "x-quorra-context";
/// The prefix of user metadata headers.
pub const META_PREFIX: &str = "x-quorra-meta-";
/// The content type of a value written without one.
const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// Quorum options of one request; each overrides the bucket's.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct QuorumQuery {
    /// Read quorum.
    r: Option<u8>,
    /// Write quorum.
    w: Option<u8>,
    /// Durable-write quorum (replicas that synced the write to disk).
    dw: Option<u8>,
    /// Primary read quorum.
    pr: Option<u8>,
    /// Primary write quorum.
    pw: Option<u8>,
}

/// The path of one key: bucket and key, percent-encoded (a key is any
/// bytes; `/` may stay as it is).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Documents the path; the raw path is decoded by hand (keys are bytes).
pub(super) struct KeyPath {
    /// The bucket: letters, digits, `_`, `.`, `-`.
    #[param(pattern = "^[A-Za-z0-9_.-]+$", min_length = 1, max_length = 255)]
    bucket: String,
    /// The key (any bytes, percent-encoded).
    #[param(min_length = 1)]
    key: String,
}

/// Reads a key: its value (`200`, with its content type, metadata and
/// timestamp in headers), or its siblings (`300`, `multipart/mixed`, one
/// part each), and the causal context for the next write.
#[utoipa::path(get, path = "/v1/kv/{bucket}/{*key}", tag = "kv", params(KeyPath, QuorumQuery),
    responses(
        (status = 200, description = "The value, as written, with the content type it was written with", content_type = "*/*", body = ValueBytes,
            headers(("x-quorra-context" = String, description = "The causal context for the next write"))),
        (status = 300, description = "Concurrent values (siblings), one part each", content_type = "multipart/mixed", body = ValueBytes,
            headers(("x-quorra-context" = String, description = "The causal context covering every sibling"))),
    ))]
pub(super) async fn get_value(State(routes): State<KvRoutes>, req: Request) -> Response {
    respond(serve(routes, req).await)
}

/// Writes a value. With the context of a read it replaces what that read
/// saw; without one, a value written concurrently is kept beside it as a
/// sibling (in a `siblings` bucket). `If-None-Match: *` writes only if
/// the key has no value (`412` otherwise).
#[utoipa::path(put, path = "/v1/kv/{bucket}/{*key}", tag = "kv", params(KeyPath, QuorumQuery, WriteHeaders),
    request_body(content = ValueBytes, content_type = "application/octet-stream", description = "The value: any bytes, up to the value limit (any content type; it is kept and answered with the value)"),
    responses((status = 204, description = "Written by a write quorum",
        headers(("x-quorra-context" = String, description = "The causal context after the write")))))]
pub(super) async fn put_value(State(routes): State<KvRoutes>, req: Request) -> Response {
    respond(serve(routes, req).await)
}

/// The same as `PUT`.
#[utoipa::path(post, path = "/v1/kv/{bucket}/{*key}", tag = "kv", params(KeyPath, QuorumQuery, WriteHeaders),
    request_body(content = ValueBytes, content_type = "application/octet-stream", description = "The value: any bytes, up to the value limit (any content type; it is kept and answered with the value)"),
    responses((status = 204, description = "Written by a write quorum",
        headers(("x-quorra-context" = String, description = "The causal context after the write")))))]
pub(super) async fn post_value(State(routes): State<KvRoutes>, req: Request) -> Response {
    respond(serve(routes, req).await)
}

/// Deletes a key (a tombstone; with the context of a read, it deletes
/// what that read saw).
#[utoipa::path(delete, path = "/v1/kv/{bucket}/{*key}", tag = "kv", params(KeyPath, QuorumQuery),
    responses((status = 204, description = "Deleted by a write quorum",
        headers(("x-quorra-context" = String, description = "The causal context after the delete")))))]
pub(super) async fn delete_value(State(routes): State<KvRoutes>, req: Request) -> Response {
    respond(serve(routes, req).await)
}

/// A value's bytes, exactly as written.
#[derive(Debug, ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)] // Documents the raw bodies the handlers read and write.
pub(super) struct ValueBytes(Vec<u8>);

/// Headers a write reads.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // Documents the headers the handler reads by hand.
pub(super) struct WriteHeaders {
    /// The causal context of the read this write follows.
    #[param(rename = "x-quorra-context")]
    context: Option<String>,
    /// `*`: write only if the key has no value.
    #[param(rename = "if-none-match", pattern = "^\\*$")]
    if_none_match: Option<String>,
}

fn respond(r: Result<Response, ApiError>) -> Response {
    r.unwrap_or_else(IntoResponse::into_response)
}

async fn serve(routes: KvRoutes, req: Request) -> Result<Response, ApiError> {
    let limits = routes.limits;
    let service = &*routes.service;
    let (bucket, key) = parse_path(req.uri().path(), &limits)?;
    let quorum = parse_query(req.uri())?;
    let who = super::auth::principal(&req);
    match *req.method() {
        Method::GET | Method::HEAD => {
            if let Some(datatype) = service.datatype(&bucket) {
                // Only a caller who may read the bucket learns its type.
                authorize_bucket(&who, bucket.as_str(), Perm::Read)?;
                let e = quorra_core::crdt::CrdtError::NotPlain {
                    bucket: bucket.to_string(),
                    datatype,
                };
                return Err(ApiError::new(e.code(), e.to_string()));
            }
            let (object, ctx) = service.get(&who, bucket.clone(), key, quorum).await?;
            Ok(read_response(&bucket, object, ctx))
        }
        Method::PUT | Method::POST | Method::DELETE => {
            let ctx = context(req.headers())?;
            let create_only = if_none_match(req.headers())?;
            if create_only && (req.method() == Method::DELETE || ctx.is_some()) {
                return Err(ApiError::new(
                    ErrorCode::InvalidParameter,
                    "If-None-Match: * creates a key that has no value: not with a delete, and not with X-Quorra-Context",
                ));
            }
            let op = if req.method() == Method::DELETE {
                Operation::Delete
            } else {
                let content_type = content_type(req.headers())?;
                let meta = user_meta(req.headers())?;
                let value = read_body(req.into_body(), limits.max_value_bytes).await?;
                let mut content = Content::value(value, content_type, 0);
                content.meta = meta;
                Operation::Put(content)
            };
            let (_, ctx) = match op {
                Operation::Put(content) if create_only => {
                    service.create(&who, bucket, key, content, quorum).await?
                }
                op => {
                    service
                        .write(&who, bucket, key, ctx.as_deref(), op, quorum)
                        .await?
                }
            };
            Ok(no_content(ctx))
        }
        _ => Err(ApiError::new(
            ErrorCode::MethodNotAllowed,
            "use GET, PUT or DELETE on a key",
        )),
    }
}

/// Splits `/v1/kv/{bucket}/{key}` and validates both.
pub(super) fn parse_path(
    path: &str,
    limits: &quorra_core::Limits,
) -> Result<(BucketName, Key), ApiError> {
    parse_path_in("/v1/kv/", path, limits)
}

/// Splits `{prefix}{bucket}/{key}` and validates both.
pub(super) fn parse_path_in(
    prefix: &str,
    path: &str,
    limits: &quorra_core::Limits,
) -> Result<(BucketName, Key), ApiError> {
    let rest = path.strip_prefix(prefix).unwrap_or(path);
    let (raw_bucket, raw_key) = rest.split_once('/').ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidKey,
            format!("the path must be {prefix}{{bucket}}/{{key}}"),
        )
    })?;
    let bucket = percent_decode_str(raw_bucket)
        .decode_utf8()
        .map_err(|_| ApiError::new(ErrorCode::InvalidBucket, "bucket name is not UTF-8"))?;
    let bucket = BucketName::parse(&bucket, limits)?;
    let key = Key::parse(percent_decode_str(raw_key).collect(), limits)?;
    Ok((bucket, key))
}

/// Reads the quorum options (`r`, `w`, `dw`, `pr`, `pw`).
pub(super) fn parse_query(uri: &Uri) -> Result<QuorumOverrides, ApiError> {
    let Query(q) = Query::<QuorumQuery>::try_from_uri(uri).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidParameter,
            format!(
                "the query takes r, w, dw, pr, pw (small whole numbers): {}",
                e.body_text()
            ),
        )
    })?;
    Ok(QuorumOverrides {
        r: q.r,
        w: q.w,
        dw: q.dw,
        pr: q.pr,
        pw: q.pw,
    })
}

/// Whether the write is create-only (`If-None-Match: *`; any other value
/// is refused, as no entity tags are issued).
fn if_none_match(headers: &HeaderMap) -> Result<bool, ApiError> {
    match headers.get(header::IF_NONE_MATCH) {
        None => Ok(false),
        Some(v) if v.as_bytes().trim_ascii() == b"*" => Ok(true),
        Some(_) => Err(ApiError::new(
            ErrorCode::InvalidParameter,
            "If-None-Match takes only *: write only if the key has no value",
        )),
    }
}

/// The raw `X-Quorra-Context` (the node decodes and authenticates it).
pub(super) fn context(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match headers.get(CONTEXT_HEADER) {
        None => Ok(None),
        Some(v) => {
            let s = v.to_str().map_err(|_| {
                ApiError::new(ErrorCode::InvalidContext, "X-Quorra-Context is not ASCII")
            })?;
            Ok(Some(s.to_owned()))
        }
    }
}

fn content_type(headers: &HeaderMap) -> Result<String, ApiError> {
    match headers.get(header::CONTENT_TYPE) {
        None => Ok(DEFAULT_CONTENT_TYPE.into()),
        Some(v) => {
            let s = v.to_str().map_err(|_| {
                ApiError::new(ErrorCode::InvalidParameter, "Content-Type is not ASCII")
            })?;
            if s.len() > MAX_CONTENT_TYPE_LEN {
                return Err(ApiError::new(
                    ErrorCode::InvalidParameter,
                    format!("Content-Type is longer than {MAX_CONTENT_TYPE_LEN} characters"),
                ));
            }
            Ok(s.to_owned())
        }
    }
}

fn user_meta(headers: &HeaderMap) -> Result<BTreeMap<String, String>, ApiError> {
    let mut meta = BTreeMap::new();
    let mut size = 0;
    for (name, value) in headers {
        let Some(field) = name.as_str().strip_prefix(META_PREFIX) else {
            continue;
        };
        let value = value.to_str().map_err(|_| {
            ApiError::new(ErrorCode::InvalidParameter, format!("{name} is not ASCII"))
        })?;
        size += field.len() + value.len();
        if size > MAX_META_BYTES {
            return Err(ApiError::new(
                ErrorCode::InvalidParameter,
                format!("X-Quorra-Meta-* headers exceed {MAX_META_BYTES} bytes"),
            ));
        }
        meta.insert(field.to_owned(), value.to_owned());
    }
    Ok(meta)
}

pub(super) async fn read_body(body: Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    let too_large = || {
        ApiError::new(
            ErrorCode::ValueTooLarge,
            format!("the value is larger than the limit of {limit} bytes"),
        )
    };
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes().to_vec()),
        // Ours, or the body limit layer's (wrapped by axum) when one frame
        // crosses both.
        Err(e) if over_limit(e.as_ref()) => Err(too_large()),
        Err(e) => Err(ApiError::new(
            ErrorCode::InvalidParameter,
            format!("cannot read the request body: {e}"),
        )),
    }
}

/// Whether a body error is a length limit's, anywhere in its chain.
fn over_limit(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut at = Some(e);
    while let Some(e) = at {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        at = e.source();
    }
    false
}

fn context_value(ctx: Option<String>) -> Option<HeaderValue> {
    HeaderValue::from_str(&ctx?).ok()
}

fn no_content(ctx: Option<String>) -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    if let Some(v) = context_value(ctx) {
        resp.headers_mut().insert(CONTEXT_HEADER, v);
    }
    resp
}

fn sibling_headers(c: &Content) -> Vec<(String, String)> {
    let mut h = vec![("Content-Type".to_owned(), c.content_type.clone())];
    for (k, v) in &c.meta {
        h.push((format!("X-Quorra-Meta-{k}"), v.clone()));
    }
    h.push(("X-Quorra-Timestamp".to_owned(), c.timestamp_ms.to_string()));
    h
}

fn read_response(bucket: &BucketName, object: Option<Object>, ctx: Option<String>) -> Response {
    let Some(object) = object else {
        return ApiError::new(
            ErrorCode::NotFound,
            format!("no value in bucket {bucket} for this key"),
        )
        .into_response();
    };
    let live: Vec<&Content> = object.live_siblings().map(|s| &s.content).collect();
    let mut resp = match live.as_slice() {
        [] => ApiError::new(
            ErrorCode::NotFound,
            format!("the value in bucket {bucket} was deleted"),
        )
        .into_response(),
        [one] => {
            let mut resp = (StatusCode::OK, one.value.clone()).into_response();
            for (name, value) in sibling_headers(one) {
                if let (Ok(n), Ok(v)) = (
                    header::HeaderName::try_from(name),
                    HeaderValue::from_str(&value),
                ) {
                    resp.headers_mut().insert(n, v);
                }
            }
            resp
        }
        many => {
            let bodies: Vec<&[u8]> = many.iter().map(|c| c.value.as_slice()).collect();
            let boundary = multipart::choose_boundary(&bodies);
            let parts: Vec<Part> = many
                .iter()
                .map(|c| Part {
                    headers: sibling_headers(c),
                    body: c.value.clone(),
                })
                .collect();
            let mut resp = (
                StatusCode::MULTIPLE_CHOICES,
                multipart::encode(&boundary, &parts),
            )
                .into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("multipart/mixed; boundary={boundary}")) {
                resp.headers_mut().insert(header::CONTENT_TYPE, v);
            }
            resp
        }
    };
    if let Some(v) = context_value(ctx) {
        resp.headers_mut().insert(CONTEXT_HEADER, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_decode_to_bytes() {
        let l = quorra_core::Limits::default();
        let (b, k) = parse_path("/v1/kv/users/a%2Fb%00c", &l).expect("parse");
        assert_eq!(b.as_str(), "users");
        assert_eq!(k.as_bytes(), b"a/b\0c");
        let (_, k) = parse_path("/v1/kv/users/dir/file", &l).expect("slashes");
        assert_eq!(k.as_bytes(), b"dir/file");
        assert_eq!(
            parse_path("/v1/kv/bad%20bucket/k", &l).unwrap_err().code,
            ErrorCode::InvalidBucket
        );
        assert_eq!(
            parse_path("/v1/kv/b%FF/k", &l).unwrap_err().code,
            ErrorCode::InvalidBucket
        );
    }

    #[test]
    fn query_options() {
        let q = |s: &str| parse_query(&s.parse::<Uri>().expect("uri"));
        let o = q("/v1/kv/b/k?dw=1&r=2").expect("parse");
        assert_eq!((o.dw, o.r, o.w), (Some(1), Some(2), None));
        for bad in ["w=x", "dW=1", "r=300", "r=1&r=2"] {
            assert_eq!(
                q(&format!("/v1/kv/b/k?{bad}")).unwrap_err().code,
                ErrorCode::InvalidParameter,
                "{bad}"
            );
        }
        assert_eq!(q("/v1/kv/b/k"), Ok(QuorumOverrides::default()));
    }
}
