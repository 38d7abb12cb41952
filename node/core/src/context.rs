//! The causal context clients carry between a read and a write.
//!
//! To a client the context is opaque: URL-safe base64 (no padding) of a format
//! byte followed by the msgpack encoding of a [`VersionVector`]. Decoding is
//! strict and bounded, so a forged or truncated context is refused with
//! `invalid_context` instead of being trusted.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use thiserror::Error;

use crate::version::VersionVector;

/// The current context format.
const FORMAT_V1: u8 = 1;

/// Longest node id an actor in a context may carry.
const MAX_ACTOR_NODE_LEN: usize = 255;

/// A decoded causal context.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CausalContext(pub VersionVector);

/// Why a context was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ContextError {
    /// Longer than the configured limit.
    #[error("context is {len} bytes; the limit is {limit}")]
    TooLarge {
        /// Encoded length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// Not URL-safe base64.
    #[error("context is not URL-safe base64 without padding")]
    NotBase64,
    /// Empty, or a format this node does not know.
    #[error("context has an unknown format")]
    UnknownFormat,
    /// The body does not decode.
    #[error("context does not decode: {0}")]
    Malformed(String),
}

impl CausalContext {
    /// Encodes the context for a client.
    pub fn encode(&self) -> String {
        let mut bytes = vec![FORMAT_V1];
        // Encoding a VersionVector into a Vec cannot fail.
        if let Err(e) = rmp_serde::encode::write(&mut bytes, &self.0) {
            unreachable!("encoding a version vector into memory failed: {e}");
        }
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Decodes a client's context, refusing anything longer than `limit`.
    pub fn decode(raw: &str, limit: usize) -> Result<Self, ContextError> {
        let raw = raw.trim();
        if raw.len() > limit {
            return Err(ContextError::TooLarge {
                len: raw.len(),
                limit,
            });
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(raw)
            .map_err(|_| ContextError::NotBase64)?;
        match bytes.split_first() {
            Some((&FORMAT_V1, body)) => {
                let vv: VersionVector = rmp_serde::from_slice(body)
                    .map_err(|e| ContextError::Malformed(e.to_string()))?;
                if vv.iter().any(|(a, _)| a.node.len() > MAX_ACTOR_NODE_LEN) {
                    return Err(ContextError::Malformed("actor id too long".into()));
                }
                Ok(Self(vv))
            }
            _ => Err(ContextError::UnknownFormat),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::Actor;

    #[test]
    fn round_trip() {
        let vv: VersionVector = [(Actor::new("n1", 7), 3), (Actor::new("n2", 9), 1)]
            .into_iter()
            .collect();
        let ctx = CausalContext(vv);
        let enc = ctx.encode();
        assert!(enc
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(CausalContext::decode(&enc, 1024), Ok(ctx));
    }

    #[test]
    fn refuses_garbage() {
        assert_eq!(
            CausalContext::decode("!!!", 1024),
            Err(ContextError::NotBase64)
        );
        assert_eq!(
            CausalContext::decode("", 1024),
            Err(ContextError::UnknownFormat)
        );
        assert_eq!(
            CausalContext::decode("Ag", 1024),
            Err(ContextError::UnknownFormat)
        );
        assert!(matches!(
            CausalContext::decode("AQ", 1024),
            Err(ContextError::Malformed(_))
        ));
        assert!(matches!(
            CausalContext::decode(&"A".repeat(2000), 1024),
            Err(ContextError::TooLarge { .. })
        ));
    }
}
