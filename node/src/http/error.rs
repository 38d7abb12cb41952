//! The JSON error body every refusal uses:
//! `{"error":{"code":"...","message":"..."}}` with a stable code.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use quorra_core::bucket::NameError;
use quorra_core::context::ContextError;
use quorra_core::ErrorCode;
use serde::Serialize;
use utoipa::ToSchema;

use crate::kv::KvError;

/// A refused or failed request, as the client will see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The stable code.
    pub code: ErrorCode,
    /// What happened, for a person.
    pub message: String,
}

impl ApiError {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The JSON body.
    pub fn body(&self) -> String {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message.clone(),
            },
        };
        serde_json::to_string(&body).unwrap_or_default()
    }
}

/// Every refusal's body: `{"error": {"code": ..., "message": ...}}`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// A refusal: a stable code to match on, and a message for a person.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorDetail {
    /// The stable code (the status follows from it).
    pub code: ErrorCode,
    /// What happened and, where it helps, what to do.
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::warn!(code = %self.code, reason = %self.message, "request failed");
        }
        let mut resp = (status, self.body()).into_response();
        resp.headers_mut().insert(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp
    }
}

impl From<quorra_core::auth::Denied> for ApiError {
    fn from(d: quorra_core::auth::Denied) -> Self {
        Self::new(d.code(), d.to_string())
    }
}

impl From<NameError> for ApiError {
    fn from(e: NameError) -> Self {
        Self::new(e.code, e.message)
    }
}

impl From<ContextError> for ApiError {
    fn from(e: ContextError) -> Self {
        Self::new(e.code(), format!("X-Quorra-Context: {e}"))
    }
}

impl From<KvError> for ApiError {
    fn from(e: KvError) -> Self {
        match e {
            KvError::Context(e) => e.into(),
            e => Self::new(e.code(), e.to_string()),
        }
    }
}
