//! Per-bucket permissions: bearer tokens for HTTP and grants for client
//! certificates, kept in the cluster layout so every node (and gateway)
//! agrees on them.
//!
//! A [`Grant`] gives read, write or admin on the buckets a pattern names
//! (`*`, a name, or a `prefix*`). The [`AccessPolicy`] holds
//!
//! - **tokens**: an id, the SHA-256 of its secret (never the secret), and
//!   its grants. A token is presented as `Authorization: Bearer ID.SECRET`.
//!   While the policy holds no token, the HTTP API is open, as before tokens
//!   existed; the first token must be a cluster admin's (admin on `*`), so
//!   creating it cannot lock the operator out.
//! - **certificate grants**: by the name in a client or admin certificate
//!   (`urn:quorra:client:NAME`). A certificate without an entry keeps what
//!   its role allows on every bucket; an entry narrows it, so QUIC cannot
//!   reach what the same application's token could not.
//!
//! The policy changes by a layout version of its own (see
//! [`crate::layout::Layout::with_access`]), decided like any commit, so two
//! nodes never disagree for longer than gossip takes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::error::ErrorCode;

/// The longest token id or certificate name in a policy.
pub const MAX_ID_LEN: usize = 64;
/// The most grants one token or certificate holds.
pub const MAX_GRANTS: usize = 64;
/// The most tokens plus certificate entries in a policy.
pub const MAX_ENTRIES: usize = 1_024;
/// The length of a token's secret part (base64url of 32 random bytes).
pub const SECRET_LEN: usize = 43;

/// What a grant allows on a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Perm {
    /// Read keys (GET, a data type's value, the bucket's properties).
    Read,
    /// Write and delete keys.
    Write,
    /// Change the bucket's properties; on `*`, every admin operation of
    /// the cluster (layout, repair, tokens, per-replica reads).
    Admin,
}

impl Perm {
    /// The permission's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Admin => "admin",
        }
    }
}

/// Permissions on the buckets a pattern names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// `*` (every bucket), `name`, or `prefix*`.
    pub bucket: String,
    /// What is allowed there.
    pub allow: Vec<Perm>,
}

impl Grant {
    /// A grant of `allow` on `bucket`.
    pub fn new(bucket: impl Into<String>, allow: impl IntoIterator<Item = Perm>) -> Self {
        Self {
            bucket: bucket.into(),
            allow: allow.into_iter().collect(),
        }
    }

    /// Whether the pattern names `bucket`.
    pub fn covers(&self, bucket: &str) -> bool {
        match self.bucket.strip_suffix('*') {
            Some(prefix) => bucket.starts_with(prefix),
            None => self.bucket == bucket,
        }
    }

    /// Whether this grant allows `perm` on `bucket`.
    pub fn allows(&self, bucket: &str, perm: Perm) -> bool {
        self.covers(bucket) && self.allow.contains(&perm)
    }

    fn validate(&self) -> Result<(), PolicyError> {
        let pattern = self.bucket.strip_suffix('*').unwrap_or(&self.bucket);
        let name_ok = pattern
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !name_ok || self.bucket.is_empty() || self.bucket.len() > 255 {
            return Err(PolicyError::Invalid(format!(
                "bucket pattern {:?} is not *, a bucket name, or a name prefix followed by *",
                self.bucket
            )));
        }
        if self.allow.is_empty() || self.allow.len() > 3 {
            return Err(PolicyError::Invalid(format!(
                "the grant on {:?} allows nothing (allow: read, write, admin)",
                self.bucket
            )));
        }
        Ok(())
    }
}

/// Whether `grants` allow `perm` on `bucket`.
pub fn granted(grants: &[Grant], bucket: &str, perm: Perm) -> bool {
    grants.iter().any(|g| g.allows(bucket, perm))
}

/// Whether `grants` make their holder a cluster admin (admin on `*`).
pub fn is_cluster_admin(grants: &[Grant]) -> bool {
    grants
        .iter()
        .any(|g| g.bucket == "*" && g.allow.contains(&Perm::Admin))
}

/// A bearer token as the policy keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenEntry {
    /// Hex SHA-256 of the token's secret.
    pub secret_sha256: String,
    /// What it may do.
    pub grants: Vec<Grant>,
}

/// The cluster's tokens and certificate grants.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AccessPolicy {
    /// Bearer tokens by id.
    #[serde(default)]
    pub tokens: BTreeMap<String, TokenEntry>,
    /// Grants narrowing client and admin certificates, by the name in the
    /// certificate.
    #[serde(default)]
    pub certs: BTreeMap<String, Vec<Grant>>,
}

/// One change to the policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessChange {
    /// Add or replace the token `id`.
    PutToken {
        /// Its id.
        id: String,
        /// Hex SHA-256 of its secret.
        secret_sha256: String,
        /// Its grants.
        grants: Vec<Grant>,
        /// Whether it may replace a token of the same id (a rotation);
        /// otherwise an existing id is refused, so a retried create never
        /// silently swaps a secret its holder still uses.
        #[serde(default)]
        replace: bool,
    },
    /// Revoke the token `id`.
    DeleteToken {
        /// Its id.
        id: String,
    },
    /// Narrow the certificate `name` to `grants`.
    PutCert {
        /// The name in the certificate.
        name: String,
        /// Its grants.
        grants: Vec<Grant>,
    },
    /// Give the certificate `name` its role's permissions again.
    DeleteCert {
        /// The name in the certificate.
        name: String,
    },
}

/// Why a policy change or a token is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PolicyError {
    /// An id, pattern or grant out of shape.
    #[error("{0}")]
    Invalid(String),
    /// The change would leave tokens but no cluster admin among them.
    #[error("{0}")]
    LockOut(String),
    /// No such token or certificate entry.
    #[error("{0}")]
    Missing(String),
    /// A token of that id exists (and the change does not replace it).
    #[error("{0}")]
    Exists(String),
}

impl PolicyError {
    /// The stable code to answer with.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Invalid(_) => ErrorCode::InvalidParameter,
            Self::LockOut(_) | Self::Exists(_) => ErrorCode::PreconditionFailed,
            Self::Missing(_) => ErrorCode::NotFound,
        }
    }
}

fn check_id(what: &str, id: &str) -> Result<(), PolicyError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(PolicyError::Invalid(format!(
            "a {what} is 1 to {MAX_ID_LEN} characters of [A-Za-z0-9_-], got {id:?}"
        )))
    }
}

fn check_hash(secret_sha256: &str) -> Result<(), PolicyError> {
    let hex = secret_sha256.len() == 64 && secret_sha256.bytes().all(|b| b.is_ascii_hexdigit());
    if hex {
        Ok(())
    } else {
        Err(PolicyError::Invalid(
            "secret_sha256 is 64 hex digits".into(),
        ))
    }
}

fn check_grants(grants: &[Grant]) -> Result<(), PolicyError> {
    if grants.is_empty() || grants.len() > MAX_GRANTS {
        return Err(PolicyError::Invalid(format!(
            "give 1 to {MAX_GRANTS} grants, each {{\"bucket\": \"*\" | name | \"prefix*\", \"allow\": [\"read\", \"write\", \"admin\"]}}"
        )));
    }
    grants.iter().try_for_each(Grant::validate)
}

impl AccessPolicy {
    /// Whether HTTP requests need a token.
    pub fn closed(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// The policy after `change`, refused if it is out of shape or would
    /// leave tokens without a cluster admin among them.
    pub fn apply(&self, change: &AccessChange) -> Result<Self, PolicyError> {
        let mut next = self.clone();
        match change {
            AccessChange::PutToken {
                id,
                secret_sha256,
                grants,
                replace,
            } => {
                check_id("token id", id)?;
                check_grants(grants)?;
                check_hash(secret_sha256)?;
                if !replace && next.tokens.contains_key(id) {
                    return Err(PolicyError::Exists(format!(
                        "a token {id:?} exists: revoke it first, or rotate it with \"replace\": true"
                    )));
                }
                next.tokens.insert(
                    id.clone(),
                    TokenEntry {
                        secret_sha256: secret_sha256.to_ascii_lowercase(),
                        grants: grants.clone(),
                    },
                );
            }
            AccessChange::DeleteToken { id } => {
                if next.tokens.remove(id).is_none() {
                    return Err(PolicyError::Missing(format!("no token {id:?}")));
                }
            }
            AccessChange::PutCert { name, grants } => {
                check_id("certificate name", name)?;
                check_grants(grants)?;
                next.certs.insert(name.clone(), grants.clone());
            }
            AccessChange::DeleteCert { name } => {
                if next.certs.remove(name).is_none() {
                    return Err(PolicyError::Missing(format!(
                        "no grants for certificate {name:?}"
                    )));
                }
            }
        }
        if next.tokens.len() + next.certs.len() > MAX_ENTRIES {
            return Err(PolicyError::Invalid(format!(
                "a policy holds at most {MAX_ENTRIES} tokens and certificate entries"
            )));
        }
        next.check_admin()?;
        Ok(next)
    }

    /// A policy with tokens must keep a cluster admin token: otherwise no
    /// one could change it again over HTTP.
    fn check_admin(&self) -> Result<(), PolicyError> {
        if self.closed() && !self.tokens.values().any(|t| is_cluster_admin(&t.grants)) {
            return Err(PolicyError::LockOut(
                "the tokens would include no cluster admin (a grant of admin on \"*\"): create one first, or delete every token to open the cluster".into(),
            ));
        }
        Ok(())
    }

    /// Checks a policy from the network.
    pub fn validate(&self) -> Result<(), PolicyError> {
        for (id, t) in &self.tokens {
            check_id("token id", id)?;
            check_grants(&t.grants)?;
            check_hash(&t.secret_sha256)?;
        }
        for (name, grants) in &self.certs {
            check_id("certificate name", name)?;
            check_grants(grants)?;
        }
        if self.tokens.len() + self.certs.len() > MAX_ENTRIES {
            return Err(PolicyError::Invalid("too many entries".into()));
        }
        self.check_admin()
    }

    /// Whether the policy holds nothing (then it is no policy at all).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty() && self.certs.is_empty()
    }

    /// The token presented as `raw` (`ID.SECRET`): its id and grants, or
    /// why it is refused.
    pub fn authenticate(&self, raw: &str) -> Result<(&str, &[Grant]), BadToken> {
        let (id, secret) = parse_token(raw)?;
        let entry = self.tokens.get_key_value(id);
        match entry {
            Some((id, entry)) if entry.verify(secret) => Ok((id.as_str(), entry.grants.as_slice())),
            _ => Err(BadToken::Unknown),
        }
    }
}

/// Splits a presented token into its id and secret, refusing one whose
/// secret is not a secret's length before anything hashes it.
pub fn parse_token(raw: &str) -> Result<(&str, &str), BadToken> {
    let (id, secret) = raw.split_once('.').ok_or(BadToken::Malformed)?;
    if id.is_empty() || id.len() > MAX_ID_LEN || secret.len() != SECRET_LEN {
        return Err(BadToken::Malformed);
    }
    Ok((id, secret))
}

impl TokenEntry {
    /// Whether `secret` is this token's: compared by its hash, in constant
    /// time.
    pub fn verify(&self, secret: &str) -> bool {
        let presented = secret_sha256(secret);
        presented.len() == self.secret_sha256.len()
            && presented
                .bytes()
                .zip(self.secret_sha256.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

/// Why a presented token is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum BadToken {
    /// Not `ID.SECRET` with a secret of [`SECRET_LEN`] characters.
    #[error("the token is not of the form ID.SECRET")]
    Malformed,
    /// No such token, or the wrong secret (not told apart).
    #[error("the token is unknown or revoked")]
    Unknown,
}

/// Hex SHA-256 of a token's secret, as the policy keeps it.
pub fn secret_sha256(secret: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
