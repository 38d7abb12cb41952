//! The causal context clients carry between a read and a write.
//!
//! To a client the context is opaque: URL-safe base64 (no padding) of a format
//! byte, the msgpack encoding of a [`VersionVector`], and an HMAC-SHA256 tag
//! under the cluster's secret ([`ContextKey`]) over the format byte, the
//! bucket, the key and the vector. So a client can only send back what a
//! node of its cluster gave it for that very key: a tampered, invented or
//! replayed-on-another-key context is refused with `bad_context`, and any
//! node accepts a context another node issued. Decoding is strict and
//! bounded (length, actors, actor ids) before anything is trusted.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::hmac;
use thiserror::Error;

use crate::bucket::{BucketName, Key};
use crate::error::ErrorCode;
use crate::version::VersionVector;

/// The unauthenticated format of earlier builds: refused.
const FORMAT_V1: u8 = 1;
/// The current, authenticated context format.
const FORMAT_V2: u8 = 2;
/// Bytes of the HMAC-SHA256 tag.
const TAG_LEN: usize = 32;

/// Longest node id an actor in a context may carry.
const MAX_ACTOR_NODE_LEN: usize = 255;

/// Most actors a context (and so a key's clock) may name. Every actor is a
/// node epoch that coordinated a write on the key, so a real clock stays far
/// below this.
pub const MAX_CONTEXT_ACTORS: usize = 64;

/// Length of the secret `quorra certs` creates.
pub const SECRET_LEN: usize = 32;

/// The cluster's secret for authenticating contexts (HMAC-SHA256).
#[derive(Clone)]
pub struct ContextKey(hmac::Key);

impl std::fmt::Debug for ContextKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ContextKey(..)")
    }
}

impl ContextKey {
    /// A key from the cluster secret's bytes.
    pub fn new(secret: &[u8]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }
}

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
    /// Not issued by this cluster for this key, or altered since.
    #[error("the context was not issued by this cluster for this key, or was altered: read the key again and write with the context that read returns")]
    Forged,
}

impl ContextError {
    /// The stable code to answer with.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Forged => ErrorCode::BadContext,
            _ => ErrorCode::InvalidContext,
        }
    }
}

fn tag(key: &ContextKey, bucket: &BucketName, k: &Key, signed: &[u8]) -> hmac::Tag {
    let mut ctx = hmac::Context::with_key(&key.0);
    let b = bucket.as_str().as_bytes();
    // Lengths first, so (bucket, key) pairs cannot run into each other.
    ctx.update(&(b.len() as u64).to_be_bytes());
    ctx.update(b);
    ctx.update(&(k.as_bytes().len() as u64).to_be_bytes());
    ctx.update(k.as_bytes());
    ctx.update(signed);
    ctx.sign()
}

impl CausalContext {
    /// Encodes the context for a client of key `k` in `bucket`.
    pub fn encode(&self, key: &ContextKey, bucket: &BucketName, k: &Key) -> String {
        let mut bytes = vec![FORMAT_V2];
        // Encoding a VersionVector into a Vec cannot fail.
        if let Err(e) = rmp_serde::encode::write(&mut bytes, &self.0) {
            unreachable!("encoding a version vector into memory failed: {e}");
        }
        let t = tag(key, bucket, k, &bytes);
        bytes.extend_from_slice(t.as_ref());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The length [`Self::encode`] gives `vv`, without the secret.
    pub fn encoded_len(vv: &VersionVector) -> usize {
        let body = rmp_serde::to_vec(vv)
            .map(|b| b.len())
            .unwrap_or(usize::MAX / 8);
        // Unpadded base64: four characters for every three bytes, rounded up.
        (4 * (1 + body + TAG_LEN)).div_ceil(3)
    }

    /// Decodes a client's context for key `k` in `bucket`, refusing anything
    /// longer than `limit` and anything this cluster did not issue for it.
    pub fn decode(
        raw: &str,
        limit: usize,
        key: &ContextKey,
        bucket: &BucketName,
        k: &Key,
    ) -> Result<Self, ContextError> {
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
        match bytes.first() {
            Some(&FORMAT_V2) => {}
            // Earlier builds handed out unauthenticated contexts.
            Some(&FORMAT_V1) => return Err(ContextError::Forged),
            _ => return Err(ContextError::UnknownFormat),
        }
        if bytes.len() < 1 + TAG_LEN {
            return Err(ContextError::Malformed("shorter than its tag".into()));
        }
        let (signed, sent) = bytes.split_at(bytes.len() - TAG_LEN);
        let expected = tag(key, bucket, k, signed);
        if !constant_time_eq(expected.as_ref(), sent) {
            return Err(ContextError::Forged);
        }
        let vv: VersionVector = rmp_serde::from_slice(&signed[1..])
            .map_err(|e| ContextError::Malformed(e.to_string()))?;
        if vv.len() > MAX_CONTEXT_ACTORS {
            return Err(ContextError::Malformed(format!(
                "{} actors; at most {MAX_CONTEXT_ACTORS}",
                vv.len()
            )));
        }
        if vv.iter().any(|(a, _)| a.node.len() > MAX_ACTOR_NODE_LEN) {
            return Err(ContextError::Malformed("actor id too long".into()));
        }
        Ok(Self(vv))
    }
}

/// Equality that takes the same time wherever the inputs differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bucket::Limits;
    use crate::version::Actor;

    fn names() -> (BucketName, Key) {
        let l = Limits::default();
        (
            BucketName::parse("b", &l).expect("bucket"),
            Key::parse(b"k".to_vec(), &l).expect("key"),
        )
    }

    fn vv() -> VersionVector {
        [(Actor::new("n1", 7), 3), (Actor::new("n2", 9), 1)]
            .into_iter()
            .collect()
    }

    #[test]
    fn round_trip_and_length() {
        let key = ContextKey::new(b"secret");
        let (b, k) = names();
        let ctx = CausalContext(vv());
        let enc = ctx.encode(&key, &b, &k);
        assert!(enc
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(CausalContext::encoded_len(&ctx.0), enc.len());
        assert_eq!(CausalContext::decode(&enc, 1024, &key, &b, &k), Ok(ctx));
        for n in 0..20 {
            let v: VersionVector = (0..n)
                .map(|i| (Actor::new(format!("n{i}"), i), i + 1))
                .collect();
            let e = CausalContext(v.clone()).encode(&key, &b, &k);
            assert_eq!(CausalContext::encoded_len(&v), e.len(), "{n} actors");
        }
    }

    #[test]
    fn tampered_invented_foreign_and_replayed_contexts_are_forged() {
        let key = ContextKey::new(b"secret");
        let (b, k) = names();
        let enc = CausalContext(vv()).encode(&key, &b, &k);
        let mut bytes = URL_SAFE_NO_PAD.decode(&enc).expect("base64");
        // Raise a counter inside the signed body.
        let i = bytes.iter().rposition(|&x| x == 3).expect("a counter");
        bytes[i] = 0x7f;
        let tampered = URL_SAFE_NO_PAD.encode(&bytes);
        let other_cluster = ContextKey::new(b"another secret");
        let other_key = Key::parse(b"other".to_vec(), &Limits::default()).expect("key");
        let invented = {
            let mut bytes = vec![FORMAT_V2];
            rmp_serde::encode::write(&mut bytes, &vv()).expect("encode");
            bytes.extend_from_slice(&[0u8; TAG_LEN]);
            URL_SAFE_NO_PAD.encode(bytes)
        };
        let unauthenticated = {
            let mut bytes = vec![FORMAT_V1];
            rmp_serde::encode::write(&mut bytes, &vv()).expect("encode");
            URL_SAFE_NO_PAD.encode(bytes)
        };
        for (what, raw, key, k) in [
            ("tampered", tampered.as_str(), &key, &k),
            ("invented", invented.as_str(), &key, &k),
            ("unauthenticated", unauthenticated.as_str(), &key, &k),
            ("another cluster's", enc.as_str(), &other_cluster, &k),
            ("another key's", enc.as_str(), &key, &other_key),
        ] {
            assert_eq!(
                CausalContext::decode(raw, 4096, key, &b, k),
                Err(ContextError::Forged),
                "{what}"
            );
        }
        assert_eq!(ContextError::Forged.code(), ErrorCode::BadContext);
    }

    #[test]
    fn refuses_garbage() {
        let key = ContextKey::new(b"secret");
        let (b, k) = names();
        let d = |raw: &str| CausalContext::decode(raw, 1024, &key, &b, &k);
        assert_eq!(d("!!!"), Err(ContextError::NotBase64));
        assert_eq!(d(""), Err(ContextError::UnknownFormat));
        assert_eq!(d("Aw"), Err(ContextError::UnknownFormat));
        assert!(matches!(d("Ag"), Err(ContextError::Malformed(_))));
        assert!(matches!(
            d(&"A".repeat(2000)),
            Err(ContextError::TooLarge { .. })
        ));
    }

    #[test]
    fn too_many_actors_are_refused_even_when_signed() {
        let key = ContextKey::new(b"secret");
        let (b, k) = names();
        let many: VersionVector = (0..=MAX_CONTEXT_ACTORS as u64)
            .map(|i| (Actor::new("n", i), 1))
            .collect();
        let enc = CausalContext(many).encode(&key, &b, &k);
        assert!(matches!(
            CausalContext::decode(&enc, 1 << 20, &key, &b, &k),
            Err(ContextError::Malformed(_))
        ));
    }
}
