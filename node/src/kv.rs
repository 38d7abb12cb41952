//! The key-value service a request lands on: it resolves bucket properties
//! and quorum options, picks the durability, and runs the store's blocking
//! work off the async runtime.
//!
//! On a single node this is the whole request path. The cluster (issue B)
//! puts replica selection, replication and quorum counting here, behind the
//! same three calls.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use quorra_core::bucket::PropsError;
use quorra_core::{BucketName, Content, ErrorCode, Key, Object, QuorumOverrides, VersionVector};
use thiserror::Error;

use crate::config::NodeConfig;
use crate::storage::Durability;
use crate::store::{ObjectStore, StoreError};

/// A failed key-value request.
#[derive(Debug, Error)]
pub enum KvError {
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The request's quorum options do not fit the bucket.
    #[error("invalid quorum options: {0}")]
    Quorum(#[from] PropsError),
    /// The blocking storage task died.
    #[error("storage task failed: {0}")]
    Task(String),
}

impl KvError {
    /// The stable code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Store(StoreError::TooManySiblings { .. }) => ErrorCode::TooManySiblings,
            Self::Store(StoreError::Engine(_)) | Self::Store(_) => ErrorCode::StorageError,
            Self::Quorum(_) => ErrorCode::InvalidParameter,
            Self::Task(_) => ErrorCode::Internal,
        }
    }
}

/// The node's key-value service.
#[derive(Debug, Clone)]
pub struct Kv {
    store: Arc<ObjectStore>,
    config: Arc<NodeConfig>,
}

impl Kv {
    /// A service over `store`.
    pub fn new(store: Arc<ObjectStore>, config: Arc<NodeConfig>) -> Self {
        Self { store, config }
    }

    /// The store underneath.
    pub fn store(&self) -> &Arc<ObjectStore> {
        &self.store
    }

    /// Reads an object (tombstones included; the caller decides what a
    /// deleted object looks like).
    pub async fn get(
        &self,
        bucket: BucketName,
        key: Key,
        quorum: QuorumOverrides,
    ) -> Result<Option<Object>, KvError> {
        self.config.bucket_props(&bucket).with_overrides(&quorum)?;
        let store = self.store.clone();
        blocking(move || store.get(&bucket, &key)).await
    }

    /// Writes a value with the context the client read. Returns the object
    /// after the write.
    pub async fn put(
        &self,
        bucket: BucketName,
        key: Key,
        ctx: VersionVector,
        mut content: Content,
        quorum: QuorumOverrides,
    ) -> Result<Object, KvError> {
        let props = self.config.bucket_props(&bucket).with_overrides(&quorum)?;
        let durability = durability(props.dw);
        let max_siblings = self.config.limits.max_siblings;
        content.timestamp_ms = now_ms();
        let store = self.store.clone();
        blocking(move || {
            store.coordinate(
                &bucket,
                &key,
                &ctx,
                content,
                props.conflict_mode,
                max_siblings,
                durability,
            )
        })
        .await
    }

    /// Deletes with the context the client read (or, without one, everything
    /// this node has seen). `None` when there was nothing to delete.
    pub async fn delete(
        &self,
        bucket: BucketName,
        key: Key,
        ctx: VersionVector,
        quorum: QuorumOverrides,
    ) -> Result<Option<Object>, KvError> {
        let props = self.config.bucket_props(&bucket).with_overrides(&quorum)?;
        let durability = durability(props.dw);
        let store = self.store.clone();
        let tombstone = Content::tombstone(now_ms());
        blocking(move || {
            store.coordinate_delete(
                &bucket,
                &key,
                &ctx,
                tombstone,
                props.conflict_mode,
                durability,
            )
        })
        .await
    }
}

fn durability(dw: u8) -> Durability {
    if dw > 0 {
        Durability::Fsync
    } else {
        Durability::Buffered
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, KvError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| KvError::Task(e.to_string()))?
        .map_err(KvError::from)
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
