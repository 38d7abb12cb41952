//! Stable error codes, shared by the server, the HTTP gateway and the client.
//!
//! The string form of a code is part of Quorra's public API: clients match on
//! it. Add codes; never rename or reuse one.

use serde::{Deserialize, Serialize};

/// A stable, machine-readable error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The bucket name is empty or has characters outside `[A-Za-z0-9_.-]`.
    InvalidBucket,
    /// The bucket name is longer than the limit.
    BucketTooLong,
    /// The key is empty or cannot be decoded.
    InvalidKey,
    /// The key is longer than the limit.
    KeyTooLong,
    /// The value is larger than the limit.
    ValueTooLarge,
    /// The causal context is not one Quorra issued, or is too large.
    InvalidContext,
    /// A query parameter or header has a value that cannot be used.
    InvalidParameter,
    /// The request path does not name a resource.
    RouteNotFound,
    /// The resource exists but not with this method.
    MethodNotAllowed,
    /// No value is stored under the key.
    NotFound,
    /// The write would give the object more siblings than allowed; resolve
    /// them first (read, merge, write back with the context).
    TooManySiblings,
    /// Fewer replicas answered than the request's quorum needs.
    QuorumUnavailable,
    /// The node is overloaded and refused the request quickly.
    Overloaded,
    /// The request did not finish within its timeout.
    Timeout,
    /// The storage engine failed; nothing was acknowledged.
    StorageError,
    /// An unexpected internal failure.
    Internal,
    /// The causal context was not issued by this cluster, or was altered:
    /// read the key again and write with the context that read returns.
    BadContext,
    /// The write would grow the key's causal context past its limit.
    ContextTooLarge,
    /// The object (every sibling together) would be larger than the limit:
    /// resolve the siblings or write a smaller value.
    ObjectTooLarge,
    /// The caller's certificate or token does not allow this request.
    Forbidden,
    /// A layout commit lost to another one, or was planned against an
    /// older version: look at the new plan and commit again.
    LayoutConflict,
    /// A bucket property that is fixed (its conflict mode, or an `n_val`
    /// whose change would move data) cannot be changed so.
    BucketPropsFixed,
    /// A conditional write's condition does not hold (`If-None-Match: *`
    /// on a key that has a value).
    PreconditionFailed,
    /// The request does not fit the bucket's data type: a data-type
    /// operation on a plain bucket, a plain write on a data-type bucket, or
    /// an operation of another type.
    WrongDatatype,
    /// A data-type remove without the context of a read.
    ContextRequired,
    /// The request carries no valid bearer token, and the cluster's HTTP
    /// API needs one (`Authorization: Bearer ID.SECRET`).
    Unauthorized,
}

impl ErrorCode {
    /// The code as it appears on the wire (`"invalid_bucket"`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidBucket => "invalid_bucket",
            Self::BucketTooLong => "bucket_too_long",
            Self::InvalidKey => "invalid_key",
            Self::KeyTooLong => "key_too_long",
            Self::ValueTooLarge => "value_too_large",
            Self::InvalidContext => "invalid_context",
            Self::InvalidParameter => "invalid_parameter",
            Self::RouteNotFound => "route_not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::NotFound => "not_found",
            Self::TooManySiblings => "too_many_siblings",
            Self::QuorumUnavailable => "quorum_unavailable",
            Self::Overloaded => "overloaded",
            Self::Timeout => "timeout",
            Self::StorageError => "storage_error",
            Self::Internal => "internal",
            Self::BadContext => "bad_context",
            Self::ContextTooLarge => "context_too_large",
            Self::ObjectTooLarge => "object_too_large",
            Self::Forbidden => "forbidden",
            Self::LayoutConflict => "layout_conflict",
            Self::BucketPropsFixed => "bucket_props_fixed",
            Self::PreconditionFailed => "precondition_failed",
            Self::WrongDatatype => "wrong_datatype",
            Self::ContextRequired => "context_required",
            Self::Unauthorized => "unauthorized",
        }
    }

    /// The HTTP status that carries this code.
    pub fn http_status(self) -> u16 {
        match self {
            Self::InvalidBucket
            | Self::InvalidKey
            | Self::InvalidContext
            | Self::InvalidParameter
            | Self::BadContext
            | Self::WrongDatatype
            | Self::ContextRequired => 400,
            Self::Unauthorized => 401,
            Self::Forbidden => 403,
            Self::BucketTooLong
            | Self::KeyTooLong
            | Self::ValueTooLarge
            | Self::ContextTooLarge
            | Self::ObjectTooLarge => 413,
            Self::RouteNotFound | Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::PreconditionFailed => 412,
            Self::TooManySiblings | Self::LayoutConflict | Self::BucketPropsFixed => 409,
            Self::QuorumUnavailable | Self::Overloaded => 503,
            Self::Timeout => 504,
            Self::StorageError | Self::Internal => 500,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_name_matches_as_str() {
        for code in [
            ErrorCode::InvalidBucket,
            ErrorCode::KeyTooLong,
            ErrorCode::QuorumUnavailable,
            ErrorCode::TooManySiblings,
            ErrorCode::BadContext,
            ErrorCode::ContextTooLarge,
            ErrorCode::ObjectTooLarge,
            ErrorCode::Forbidden,
            ErrorCode::LayoutConflict,
            ErrorCode::BucketPropsFixed,
            ErrorCode::PreconditionFailed,
            ErrorCode::WrongDatatype,
            ErrorCode::ContextRequired,
            ErrorCode::Unauthorized,
        ] {
            let json = serde_json_like(code);
            assert_eq!(json, code.as_str());
        }
    }

    fn serde_json_like(code: ErrorCode) -> String {
        // rmp-serde writes unit variants as their name.
        let bytes = rmp_serde::to_vec(&code).expect("encode");
        rmp_serde::from_slice::<String>(&bytes).expect("decode as string")
    }
}
