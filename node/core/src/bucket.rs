//! Buckets, keys, bucket properties and the request limits that guard them.
//!
//! Every name that reaches the store goes through [`BucketName::parse`] or
//! [`Key::parse`] first, so the storage and placement layers never see an
//! empty, oversized or ill-formed name.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::error::ErrorCode;

/// Bucket names can never exceed this, whatever the configured limit: the
/// storage key encodes their length in one byte.
pub const MAX_BUCKET_LEN_HARD: usize = 255;

/// Keys can never exceed this, whatever the configured limit; names decoded
/// from the wire are held to these hard limits before the configured ones.
pub const MAX_KEY_LEN_HARD: usize = 64 * 1024;

/// How concurrent writes to a key are resolved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ConflictMode {
    /// Keep concurrent writes as siblings; the client resolves them (default,
    /// loses nothing).
    #[default]
    Siblings,
    /// Keep only the write with the latest timestamp. Concurrent writes are
    /// silently dropped: only for data where that is acceptable.
    Lww,
}

impl ConflictMode {
    /// The mode as configurations and the API spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Siblings => "siblings",
            Self::Lww => "lww",
        }
    }
}

/// Size limits on what clients send. Oversized input is refused with a stable
/// error code before it touches storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Longest bucket name, in bytes (at most 255).
    pub max_bucket_bytes: usize,
    /// Longest key, in bytes.
    pub max_key_bytes: usize,
    /// Largest value, in bytes.
    pub max_value_bytes: usize,
    /// Largest encoded causal context, in bytes.
    pub max_context_bytes: usize,
    /// Most siblings an object may hold; a write that would exceed it is
    /// refused with `too_many_siblings` until the client resolves them.
    pub max_siblings: usize,
    /// Largest object (every sibling, tombstones and the clock together,
    /// encoded), in bytes; a write or merge past it is refused with
    /// `object_too_large`. Unset: twice `max_value_bytes`. Peer frames are
    /// sized from it, so every accepted object can be replicated and read.
    pub max_object_bytes: Option<usize>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bucket_bytes: 128,
            max_key_bytes: 1024,
            max_value_bytes: 8 * 1024 * 1024,
            max_context_bytes: 16 * 1024,
            max_siblings: 100,
            max_object_bytes: None,
        }
    }
}

/// Why a limit set is unusable.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum LimitsError {
    /// A limit is zero.
    #[error("limits.{0} must be at least 1")]
    Zero(&'static str),
    /// The bucket limit is above what the storage format holds.
    #[error("limits.max_bucket_bytes must be at most {MAX_BUCKET_LEN_HARD}, got {0}")]
    BucketTooLong(usize),
    /// The key limit is above what any node accepts.
    #[error("limits.max_key_bytes must be at most {MAX_KEY_LEN_HARD}, got {0}")]
    KeyTooLong(usize),
    /// Objects could not hold even one value.
    #[error(
        "limits.max_object_bytes ({object}) must be at least limits.max_value_bytes ({value})"
    )]
    ObjectBelowValue {
        /// The object limit.
        object: usize,
        /// The value limit.
        value: usize,
    },
}

impl Limits {
    /// The hard limits: what any node accepts whatever its configuration.
    pub fn hard() -> Self {
        Self {
            max_bucket_bytes: MAX_BUCKET_LEN_HARD,
            max_key_bytes: MAX_KEY_LEN_HARD,
            ..Self::default()
        }
    }

    /// Checks a bucket and key decoded from the wire against these limits
    /// (one validation for HTTP, client and peer requests).
    pub fn check_names(&self, bucket: &BucketName, key: &Key) -> Result<(), NameError> {
        BucketName::check(bucket.as_str(), self)?;
        Key::check(key.as_bytes(), self)
    }

    /// Checks the limits are usable.
    pub fn validate(&self) -> Result<(), LimitsError> {
        for (name, v) in [
            ("max_bucket_bytes", self.max_bucket_bytes),
            ("max_key_bytes", self.max_key_bytes),
            ("max_value_bytes", self.max_value_bytes),
            ("max_context_bytes", self.max_context_bytes),
            ("max_siblings", self.max_siblings),
        ] {
            if v == 0 {
                return Err(LimitsError::Zero(name));
            }
        }
        if self.max_bucket_bytes > MAX_BUCKET_LEN_HARD {
            return Err(LimitsError::BucketTooLong(self.max_bucket_bytes));
        }
        if self.max_key_bytes > MAX_KEY_LEN_HARD {
            return Err(LimitsError::KeyTooLong(self.max_key_bytes));
        }
        if self.object_limit() < self.max_value_bytes {
            return Err(LimitsError::ObjectBelowValue {
                object: self.object_limit(),
                value: self.max_value_bytes,
            });
        }
        Ok(())
    }

    /// The largest object a node stores: `max_object_bytes`, or twice the
    /// largest value.
    pub fn object_limit(&self) -> usize {
        self.max_object_bytes
            .unwrap_or(self.max_value_bytes.saturating_mul(2))
    }

    /// Objects past this size are stored with a warning and a metric
    /// (`quorra_large_objects_total`): half the object limit.
    pub fn object_warning(&self) -> usize {
        self.object_limit() / 2
    }

    /// Objects with more siblings than this are stored with a warning and
    /// a metric (`quorra_sibling_warnings_total`): a quarter of
    /// `max_siblings` (Riak's 25 of 100), past which writes are refused.
    pub fn sibling_warning(&self) -> usize {
        (self.max_siblings / 4).max(1)
    }

    /// The largest peer frame: the largest object plus room for the
    /// envelope and the request around it.
    pub fn frame_limit(&self) -> usize {
        self.object_limit().saturating_add(FRAME_OVERHEAD)
    }
}

/// Room in a frame for everything but the object.
pub const FRAME_OVERHEAD: usize = 1024 * 1024;

/// Most user metadata bytes (names and values) one value may carry.
pub const MAX_META_BYTES: usize = 8 * 1024;
/// Longest content type a value may carry.
pub const MAX_CONTENT_TYPE_LEN: usize = 256;

impl Limits {
    /// Checks what a client wrote (value size, content type, metadata):
    /// one validation for HTTP and client requests alike.
    pub fn check_content(&self, c: &crate::version::Content) -> Result<(), NameError> {
        let refuse = |code, message: String| Err(NameError { code, message });
        if c.value.len() > self.max_value_bytes {
            return refuse(
                ErrorCode::ValueTooLarge,
                format!(
                    "the value is {} bytes; the limit is {}",
                    c.value.len(),
                    self.max_value_bytes
                ),
            );
        }
        if c.content_type.len() > MAX_CONTENT_TYPE_LEN {
            return refuse(
                ErrorCode::InvalidParameter,
                format!("Content-Type is longer than {MAX_CONTENT_TYPE_LEN} characters"),
            );
        }
        let meta: usize = c.meta.iter().map(|(k, v)| k.len() + v.len()).sum();
        if meta > MAX_META_BYTES {
            return refuse(
                ErrorCode::InvalidParameter,
                format!("user metadata exceeds {MAX_META_BYTES} bytes"),
            );
        }
        Ok(())
    }
}

/// A refused name, with the stable code to answer with.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("{message}")]
pub struct NameError {
    /// The stable code.
    pub code: ErrorCode,
    /// What is wrong, for a person.
    pub message: String,
}

/// A validated bucket name: 1..=limit bytes of `[A-Za-z0-9_.-]`.
///
/// Decoding one (from a peer or a client) checks it against the hard limits;
/// the node then checks it against its configured limits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct BucketName(String);

impl<'de> Deserialize<'de> for BucketName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw, &Limits::hard()).map_err(serde::de::Error::custom)
    }
}

impl BucketName {
    /// Validates a bucket name against the limits.
    pub fn parse(raw: &str, limits: &Limits) -> Result<Self, NameError> {
        Self::check(raw, limits)?;
        Ok(Self(raw.to_owned()))
    }

    /// What [`Self::parse`] checks, without taking the name.
    pub fn check(raw: &str, limits: &Limits) -> Result<(), NameError> {
        if raw.len() > limits.max_bucket_bytes {
            return Err(NameError {
                code: ErrorCode::BucketTooLong,
                message: format!(
                    "bucket name is {} bytes; the limit is {}",
                    raw.len(),
                    limits.max_bucket_bytes
                ),
            });
        }
        let ok = !raw.is_empty()
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !ok {
            return Err(NameError {
                code: ErrorCode::InvalidBucket,
                message: "bucket names are 1 or more characters of A-Z a-z 0-9 _ . -".into(),
            });
        }
        Ok(())
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for BucketName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A validated key: 1..=limit arbitrary bytes.
///
/// Decoding one checks it against the hard limits, as [`BucketName`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Key(#[serde(with = "serde_bytes")] Vec<u8>);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw: Vec<u8> = serde_bytes::deserialize(d)?;
        Self::parse(raw, &Limits::hard()).map_err(serde::de::Error::custom)
    }
}

impl Key {
    /// Validates a key against the limits.
    pub fn parse(raw: Vec<u8>, limits: &Limits) -> Result<Self, NameError> {
        Self::check(&raw, limits)?;
        Ok(Self(raw))
    }

    /// What [`Self::parse`] checks, without taking the key.
    pub fn check(raw: &[u8], limits: &Limits) -> Result<(), NameError> {
        if raw.is_empty() {
            return Err(NameError {
                code: ErrorCode::InvalidKey,
                message: "keys must not be empty".into(),
            });
        }
        if raw.len() > limits.max_key_bytes {
            return Err(NameError {
                code: ErrorCode::KeyTooLong,
                message: format!(
                    "key is {} bytes; the limit is {}",
                    raw.len(),
                    limits.max_key_bytes
                ),
            });
        }
        Ok(())
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Some of a bucket's properties, to set over the others (the body of a
/// `PUT /v1/buckets/{bucket}/props`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default, deny_unknown_fields)]
pub struct PropsPatch {
    /// Replicas of each key.
    pub n_val: Option<u8>,
    /// Read quorum.
    pub r: Option<u8>,
    /// Write quorum.
    pub w: Option<u8>,
    /// Durable-write quorum.
    pub dw: Option<u8>,
    /// Primary read quorum.
    pub pr: Option<u8>,
    /// Primary write quorum.
    pub pw: Option<u8>,
    /// Conflict resolution.
    pub conflict_mode: Option<ConflictMode>,
    /// The data type (set once; then fixed).
    pub datatype: Option<crate::crdt::Datatype>,
}

impl PropsPatch {
    /// `props` with the fields this patch sets.
    pub fn apply(self, mut props: BucketProps) -> BucketProps {
        props.n_val = self.n_val.unwrap_or(props.n_val);
        props.r = self.r.unwrap_or(props.r);
        props.w = self.w.unwrap_or(props.w);
        props.dw = self.dw.unwrap_or(props.dw);
        props.pr = self.pr.unwrap_or(props.pr);
        props.pw = self.pw.unwrap_or(props.pw);
        props.conflict_mode = self.conflict_mode.unwrap_or(props.conflict_mode);
        props.datatype = self.datatype.or(props.datatype);
        props
    }
}

/// Every bucket's properties: the defaults, and the buckets set apart.
/// The cluster's table lives in its layout (a node's configuration only
/// bootstraps it), so every node replicates, acknowledges and merges a
/// bucket alike.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BucketTable {
    /// Properties of every bucket not named.
    pub defaults: BucketProps,
    /// Properties of named buckets.
    pub named: std::collections::BTreeMap<String, BucketProps>,
}

impl BucketTable {
    /// Most named buckets a table holds (a forged layout cannot grow a
    /// node's memory past it).
    pub const MAX_NAMED: usize = 10_000;

    /// The properties of `bucket`.
    pub fn props(&self, bucket: &str) -> BucketProps {
        self.named.get(bucket).copied().unwrap_or(self.defaults)
    }

    /// A digest of the whole table: initial members found a cluster only
    /// when theirs are equal.
    pub fn digest(&self) -> u64 {
        xxhash_rust::xxh3::xxh3_64(&rmp_serde::to_vec(self).unwrap_or_default())
    }

    /// The largest `n_val` of any bucket.
    pub fn max_n_val(&self) -> u8 {
        self.named
            .values()
            .map(|p| p.n_val)
            .chain([self.defaults.n_val])
            .max()
            .unwrap_or(self.defaults.n_val)
    }

    /// Checks every entry (a table from the network or a configuration).
    pub fn validate(&self) -> Result<(), PropsError> {
        if self.named.len() > Self::MAX_NAMED {
            return Err(PropsError(format!(
                "{} named buckets; at most {}",
                self.named.len(),
                Self::MAX_NAMED
            )));
        }
        self.defaults.validate()?;
        for (name, props) in &self.named {
            BucketName::parse(name, &Limits::hard())
                .map_err(|e| PropsError(format!("bucket {name:?}: {}", e.message)))?;
            props
                .validate()
                .map_err(|e| PropsError(format!("bucket {name}: {e}")))?;
        }
        Ok(())
    }
}

/// Per-bucket properties: replication and conflict handling.
///
/// Quorum values are per-request defaults; each request may override them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default, deny_unknown_fields)]
pub struct BucketProps {
    /// Number of replicas of each key.
    pub n_val: u8,
    /// Replies a read waits for.
    pub r: u8,
    /// Acknowledgements a write waits for.
    pub w: u8,
    /// Of those, how many must be durable (fsynced) before the answer.
    pub dw: u8,
    /// Replies from primary (not fallback) replicas a read needs.
    pub pr: u8,
    /// Acknowledgements from primary replicas a write needs.
    pub pw: u8,
    /// How concurrent writes are resolved.
    pub conflict_mode: ConflictMode,
    /// The data type its keys hold (`None`: plain values). Set once, as
    /// its own layout version; then fixed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datatype: Option<crate::crdt::Datatype>,
}

impl Default for BucketProps {
    fn default() -> Self {
        Self {
            n_val: 3,
            r: 2,
            w: 2,
            dw: 0,
            pr: 0,
            pw: 0,
            conflict_mode: ConflictMode::Siblings,
            datatype: None,
        }
    }
}

impl BucketProps {
    /// The properties on a ring of `members` nodes: a cluster smaller than
    /// `n_val` keeps one replica per member, and the quorums are capped to
    /// match (so a one-node cluster serves `w=2` writes with its one copy).
    pub fn for_ring(mut self, members: usize) -> Self {
        let members = members.clamp(1, 255) as u8;
        if self.n_val > members {
            self.n_val = members;
            for v in [
                &mut self.r,
                &mut self.w,
                &mut self.dw,
                &mut self.pr,
                &mut self.pw,
            ] {
                *v = (*v).min(members);
            }
        }
        self
    }
}

/// Why bucket properties or a request's quorum options are unusable.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("{0}")]
pub struct PropsError(pub String);

/// Quorum values a single request overrides (`?r=2&w=3` on HTTP).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumOverrides {
    /// Read quorum.
    pub r: Option<u8>,
    /// Write quorum.
    pub w: Option<u8>,
    /// Durable-write quorum.
    pub dw: Option<u8>,
    /// Primary read quorum.
    pub pr: Option<u8>,
    /// Primary write quorum.
    pub pw: Option<u8>,
}

impl BucketProps {
    /// Checks the quorum values fit `n_val` and each other.
    pub fn validate(&self) -> Result<(), PropsError> {
        let fail = |m: String| Err(PropsError(m));
        if let (Some(t), ConflictMode::Lww) = (self.datatype, self.conflict_mode) {
            return fail(format!(
                "a {t} bucket merges by its data type: it cannot resolve conflicts as lww"
            ));
        }
        if !(1..=16).contains(&self.n_val) {
            return fail(format!("n_val must be 1 to 16, got {}", self.n_val));
        }
        for (name, v, min) in [
            ("r", self.r, 1),
            ("w", self.w, 1),
            ("dw", self.dw, 0),
            ("pr", self.pr, 0),
            ("pw", self.pw, 0),
        ] {
            if v < min || v > self.n_val {
                return fail(format!(
                    "{name} must be {min} to n_val ({}), got {v}",
                    self.n_val
                ));
            }
        }
        for (small, s, big, b) in [
            ("dw", self.dw, "w", self.w),
            ("pw", self.pw, "w", self.w),
            ("pr", self.pr, "r", self.r),
        ] {
            if s > b {
                return fail(format!("{small} ({s}) must not exceed {big} ({b})"));
            }
        }
        Ok(())
    }

    /// These properties with a request's overrides applied and checked.
    ///
    /// A `dw` or `pw` above the bucket's `w` raises `w` with it (and `pr`
    /// raises `r`), so `?dw=3` alone asks for three durable acknowledgements.
    pub fn with_overrides(mut self, o: &QuorumOverrides) -> Result<Self, PropsError> {
        self.r = o.r.unwrap_or(self.r);
        self.w = o.w.unwrap_or(self.w);
        self.dw = o.dw.unwrap_or(self.dw);
        self.pr = o.pr.unwrap_or(self.pr);
        self.pw = o.pw.unwrap_or(self.pw);
        if o.w.is_none() {
            self.w = self.w.max(self.dw).max(self.pw);
        }
        if o.r.is_none() {
            self.r = self.r.max(self.pr);
        }
        self.validate()?;
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_small_ring_caps_replicas_and_quorums() {
        let p = BucketProps {
            dw: 2,
            pw: 3,
            ..BucketProps::default()
        };
        assert_eq!(p.for_ring(5), p, "a large enough ring changes nothing");
        let one = p.for_ring(1);
        assert_eq!((one.n_val, one.r, one.w, one.dw, one.pw), (1, 1, 1, 1, 1));
        assert_eq!(p.for_ring(0).n_val, 1, "never zero replicas");
    }

    use super::*;

    #[test]
    fn props_validate_and_override() {
        let p = BucketProps::default();
        p.validate().expect("defaults");
        let o = QuorumOverrides {
            dw: Some(3),
            ..QuorumOverrides::default()
        };
        let q = p.with_overrides(&o).expect("dw raises w");
        assert_eq!((q.w, q.dw), (3, 3));
        let o = QuorumOverrides {
            r: Some(4),
            ..QuorumOverrides::default()
        };
        assert!(p
            .with_overrides(&o)
            .unwrap_err()
            .0
            .contains("r must be 1 to n_val (3)"));
        let o = QuorumOverrides {
            w: Some(1),
            dw: Some(2),
            ..QuorumOverrides::default()
        };
        assert!(p
            .with_overrides(&o)
            .unwrap_err()
            .0
            .contains("dw (2) must not exceed w (1)"));
    }

    #[test]
    fn bucket_names() {
        let l = Limits::default();
        assert!(BucketName::parse("users-2024_v1.x", &l).is_ok());
        assert_eq!(
            BucketName::parse("", &l).unwrap_err().code,
            ErrorCode::InvalidBucket
        );
        assert_eq!(
            BucketName::parse("a b", &l).unwrap_err().code,
            ErrorCode::InvalidBucket
        );
        assert_eq!(
            BucketName::parse(&"x".repeat(129), &l).unwrap_err().code,
            ErrorCode::BucketTooLong
        );
    }

    #[test]
    fn keys() {
        let l = Limits::default();
        assert!(Key::parse(vec![0, 255, 7], &l).is_ok());
        assert_eq!(
            Key::parse(vec![], &l).unwrap_err().code,
            ErrorCode::InvalidKey
        );
        assert_eq!(
            Key::parse(vec![1; 1025], &l).unwrap_err().code,
            ErrorCode::KeyTooLong
        );
    }

    #[test]
    fn limits_validate() {
        assert!(Limits::default().validate().is_ok());
        let l = Limits {
            max_bucket_bytes: 300,
            ..Limits::default()
        };
        assert_eq!(l.validate(), Err(LimitsError::BucketTooLong(300)));
        let l = Limits {
            max_siblings: 0,
            ..Limits::default()
        };
        assert_eq!(l.validate(), Err(LimitsError::Zero("max_siblings")));
    }
}
