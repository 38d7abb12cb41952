//! The API's OpenAPI document, `/openapi.json`.
//!
//! It is made from the same `#[utoipa::path]` annotations the router is
//! built from (see [`super::api`]), and from the typed structs every
//! handler answers with, so it cannot list a route the node does not
//! serve, nor miss one it does. [`finish`] then says what the
//! annotations cannot:
//!
//! - every response schema is closed (`additionalProperties: false` on
//!   every object with named fields), so a field the document does not
//!   list is a schema violation a checker catches;
//! - every operation answers its refusals with the one JSON error body
//!   (`default`: any status not listed, with a stable code);
//! - a key's path is `{key}` (the router matches it as `{*key}`: keys may
//!   hold `/`);
//! - requests carry `Authorization: Bearer ID.SECRET` once the cluster has
//!   a token (none while it is open).

use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::sync::OnceLock;
use utoipa::OpenApi;

use super::error::ErrorBody;

/// The document's fixed parts; the paths come from the router.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Quorra",
        description = "Quorra's HTTP API: keys, data types, buckets, the cluster, its layout and access. Every refusal is a JSON error with a stable code.",
    ),
    components(schemas(ErrorBody)),
    tags(
        (name = "kv", description = "Keys and values"),
        (name = "crdt", description = "Data-type keys (counters, sets, maps, registers, flags)"),
        (name = "buckets", description = "Bucket properties"),
        (name = "cluster", description = "The cluster as this node sees it"),
        (name = "layout", description = "Layout changes: stage, plan, commit (cluster admins)"),
        (name = "access", description = "Tokens and certificate grants (cluster admins)"),
        (name = "maintenance", description = "Repair and compaction (cluster admins)"),
        (name = "debug", description = "Per-replica reads and fault injection (cluster admins)"),
        (name = "node", description = "Liveness, readiness, metrics, this document (no token)"),
    )
)]
pub struct ApiDoc;

/// This document (no token needed).
#[utoipa::path(get, path = "/openapi.json", tag = "node",
    responses((status = 200, description = "The OpenAPI document", body = Object)))]
pub(super) async fn serve() -> Response {
    static DOC: OnceLock<Value> = OnceLock::new();
    Json(DOC.get_or_init(super::openapi_document)).into_response()
}

/// The served document: `doc` with closed schemas, the error body on
/// every operation, keys' paths as OpenAPI spells them, and the bearer
/// scheme.
pub fn finish(doc: utoipa::openapi::OpenApi) -> Value {
    let mut v = serde_json::to_value(doc).unwrap_or_default();
    if let Some(paths) = v.get_mut("paths").and_then(Value::as_object_mut) {
        let taken = std::mem::take(paths);
        for (path, mut item) in taken {
            if let Some(ops) = item.as_object_mut() {
                for op in ops.values_mut().filter_map(Value::as_object_mut) {
                    let responses = op.entry("responses").or_insert_with(|| json!({}));
                    if let Some(r) = responses.as_object_mut() {
                        r.entry("default").or_insert_with(error_response);
                    }
                }
            }
            paths.insert(path.replace("{*", "{"), item);
        }
    }
    close(&mut v);
    if let Some(schemes) = v
        .as_object_mut()
        .map(|o| o.entry("components").or_insert_with(|| json!({})))
        .and_then(Value::as_object_mut)
    {
        schemes.insert(
            "securitySchemes".to_owned(),
            json!({"bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "ID.SECRET from POST /v1/admin/tokens; needed once the cluster has a token",
            }}),
        );
    }
    if let Some(o) = v.as_object_mut() {
        // None while the cluster is open; a bearer token once it is closed.
        o.insert("security".to_owned(), json!([{}, {"bearer": []}]));
    }
    v
}

/// The answer to any status an operation does not list.
fn error_response() -> Value {
    json!({
        "description": "Refused or failed: a JSON error with a stable code (the status follows from the code)",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    })
}

/// Closes every object schema with named fields: a field not listed is
/// not allowed.
fn close(v: &mut Value) {
    match v {
        Value::Object(o) => {
            let is_object = match o.get("type") {
                Some(Value::String(t)) => t == "object",
                Some(Value::Array(ts)) => ts.iter().any(|t| t == "object"),
                _ => false,
            };
            if is_object && o.contains_key("properties") && !o.contains_key("additionalProperties")
            {
                o.insert("additionalProperties".to_owned(), Value::Bool(false));
            }
            o.values_mut().for_each(close);
        }
        Value::Array(a) => a.iter_mut().for_each(close),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_with_fields_are_closed_and_maps_stay_maps() {
        let mut v = json!({
            "a": {"type": "object", "properties": {"x": {"type": "object", "properties": {}}}},
            "map": {"type": "object", "additionalProperties": {"type": "integer"}},
            "open": {"type": "object"},
        });
        close(&mut v);
        assert_eq!(v["a"]["additionalProperties"], json!(false));
        assert_eq!(
            v["a"]["properties"]["x"]["additionalProperties"],
            json!(false)
        );
        assert_eq!(v["map"]["additionalProperties"], json!({"type": "integer"}));
        assert!(v["open"].get("additionalProperties").is_none());
    }
}
