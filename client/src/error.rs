//! The client's errors: what failed, in terms a caller can act on.

use quorra_core::proto::Refusal;
use quorra_core::ErrorCode;
use thiserror::Error;

/// A failed client operation.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Fewer replicas answered than the request's quorum needs.
    #[error("{message}")]
    QuorumUnavailable {
        /// The coordinator's account, for a person.
        message: String,
        /// What was needed and what came back, when the coordinator said.
        counts: Option<quorra_core::quorum::Shortfall>,
    },
    /// No answer within the request's timeout (after retries).
    #[error("timed out: {0}")]
    Timeout(String),
    /// No node could be reached or every node refused (overloaded).
    #[error("refused: {0}")]
    Refused(String),
    /// The request is invalid (bad name, oversized value, bad options).
    #[error("bad request ({code}): {message}")]
    BadRequest {
        /// The stable code.
        code: ErrorCode,
        /// What is wrong.
        message: String,
    },
    /// The TLS handshake failed: the client's certificate is not from the
    /// cluster's CA (or the node's is not).
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// The cluster's access policy does not let this client's certificate
    /// do this (no grant on the bucket, or not this permission).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The certificate dir is unusable.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The node failed in another way.
    #[error("server error ({code}): {message}")]
    Server {
        /// The stable code.
        code: ErrorCode,
        /// What happened.
        message: String,
    },
}

impl ClientError {
    /// Maps a node's error answer.
    pub(crate) fn from_code(code: ErrorCode, message: String) -> Self {
        match code {
            ErrorCode::QuorumUnavailable => Self::QuorumUnavailable {
                message,
                counts: None,
            },
            ErrorCode::Timeout => Self::Timeout(message),
            ErrorCode::Overloaded => Self::Refused(message),
            ErrorCode::Forbidden => Self::Forbidden(message),
            ErrorCode::InvalidBucket
            | ErrorCode::BucketTooLong
            | ErrorCode::InvalidKey
            | ErrorCode::KeyTooLong
            | ErrorCode::ValueTooLarge
            | ErrorCode::InvalidContext
            | ErrorCode::InvalidParameter
            | ErrorCode::TooManySiblings
            | ErrorCode::WrongDatatype
            | ErrorCode::ContextRequired => Self::BadRequest { code, message },
            _ => Self::Server { code, message },
        }
    }

    /// A quorum failure with the coordinator's counts.
    pub(crate) fn unavailable(counts: quorra_core::quorum::Shortfall) -> Self {
        Self::QuorumUnavailable {
            message: counts.to_string(),
            counts: Some(counts),
        }
    }

    /// Whether the failed request certainly took effect nowhere: refused
    /// for load, or a quorum shortfall with no replica written.
    pub fn applied_nowhere(&self) -> bool {
        match self {
            Self::Refused(_) => true,
            Self::QuorumUnavailable { counts, .. } => counts.as_ref().is_some_and(|c| c.got == 0),
            _ => false,
        }
    }

    /// The stable code of this failure, as a node would answer it (a
    /// client-side failure to reach or trust the cluster is
    /// `quorum_unavailable` or `internal`).
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::QuorumUnavailable { .. } | Self::Refused(_) => ErrorCode::QuorumUnavailable,
            Self::Timeout(_) => ErrorCode::Timeout,
            Self::BadRequest { code, .. } | Self::Server { code, .. } => *code,
            Self::Forbidden(_) => ErrorCode::Forbidden,
            Self::Unauthorized(_) | Self::Tls(_) => ErrorCode::Internal,
        }
    }

    /// Whether trying again elsewhere may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Timeout(_) | Self::Refused(_) | Self::QuorumUnavailable { .. }
        )
    }
}

impl From<Refusal> for ClientError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Unavailable(counts) => Self::unavailable(counts),
            Refusal::Error { code, message } => Self::from_code(code, message),
        }
    }
}
