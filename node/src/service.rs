//! What the HTTP key and data-type routes need of whatever holds the keys:
//! the node itself ([`Kv`]), or, in a gateway, the token-aware client that
//! forwards to the nodes ([`quorra_client::Client`]). The routes are written
//! once, against [`KvService`], so a node and a gateway serve the same API.
//!
//! The caller's permissions are checked by the service, so both check them
//! the same way: the node with the caller's own principal; the client
//! before it forwards (it acts with its own certificate, so the nodes
//! cannot tell who asked).

use futures::future::BoxFuture;
use quorra_core::auth::{authorize_bucket, Perm, Principal};
use quorra_core::crdt::Datatype;
use quorra_core::proto::Operation;
use quorra_core::{BucketName, Content, ErrorCode, Key, Object, QuorumOverrides};

use crate::http::error::ApiError;
use crate::kv::Kv;

/// An object as a read or write answers it, with its causal context.
pub type Answered = (Option<Object>, Option<String>);

/// Reads and writes on behalf of a caller.
pub trait KvService: Send + Sync + 'static {
    /// Reads a key (needs `read` on its bucket).
    fn get<'a>(
        &'a self,
        who: &'a Principal,
        bucket: BucketName,
        key: Key,
        quorum: QuorumOverrides,
    ) -> BoxFuture<'a, Result<Answered, ApiError>>;

    /// Writes or deletes a key with the context of a read, if any (needs
    /// `write` on its bucket).
    fn write<'a>(
        &'a self,
        who: &'a Principal,
        bucket: BucketName,
        key: Key,
        context: Option<&'a str>,
        operation: Operation,
        quorum: QuorumOverrides,
    ) -> BoxFuture<'a, Result<Answered, ApiError>>;

    /// A bucket's data type, if it has one.
    fn datatype(&self, bucket: &BucketName) -> Option<Datatype>;

    /// Writes `content` only if the key has no live value (HTTP's
    /// `If-None-Match: *`): a read at the request's quorum, then the write
    /// with that read's context (so it replaces a tombstone);
    /// `412 precondition_failed` if a value lives. Two creates racing
    /// through different coordinators can both pass the read: their
    /// values become siblings, as in Riak.
    fn create<'a>(
        &'a self,
        who: &'a Principal,
        bucket: BucketName,
        key: Key,
        content: Content,
        quorum: QuorumOverrides,
    ) -> BoxFuture<'a, Result<Answered, ApiError>> {
        Box::pin(async move {
            let (found, context) = self.get(who, bucket.clone(), key.clone(), quorum).await?;
            if found.as_ref().is_some_and(|o| !o.is_deleted()) {
                return Err(ApiError::new(
                    ErrorCode::PreconditionFailed,
                    "the key has a value, and the write creates only a key with none (If-None-Match: *); read it and write with its context to replace it",
                ));
            }
            let op = Operation::Put(content);
            self.write(who, bucket, key, context.as_deref(), op, quorum)
                .await
        })
    }
}

impl KvService for Kv {
    fn get<'a>(
        &'a self,
        who: &'a Principal,
        bucket: BucketName,
        key: Key,
        quorum: QuorumOverrides,
    ) -> BoxFuture<'a, Result<Answered, ApiError>> {
        Box::pin(async move { Ok(self.client_get(who, bucket, key, quorum).await?) })
    }

    fn write<'a>(
        &'a self,
        who: &'a Principal,
        bucket: BucketName,
        key: Key,
        context: Option<&'a str>,
        operation: Operation,
        quorum: QuorumOverrides,
    ) -> BoxFuture<'a, Result<Answered, ApiError>> {
        Box::pin(async move {
            Ok(self
                .client_write(who, bucket, key, context, operation, quorum)
                .await?)
        })
    }

    fn datatype(&self, bucket: &BucketName) -> Option<Datatype> {
        self.cluster().bucket_props(bucket).datatype
    }
}

impl From<quorra_client::ClientError> for ApiError {
    fn from(e: quorra_client::ClientError) -> Self {
        let message = match &e {
            quorra_client::ClientError::BadRequest { message, .. }
            | quorra_client::ClientError::Server { message, .. } => message.clone(),
            other => other.to_string(),
        };
        Self::new(e.code(), message)
    }
}

/// The token-aware client as a service: a gateway's. It checks the
/// caller's grants (the nodes see only the gateway's certificate), then
/// forwards to a replica of the key.
impl KvService for quorra_client::Client {
    fn get<'a>(
        &'a self,
        who: &'a Principal,
        bucket: BucketName,
        key: Key,
        quorum: QuorumOverrides,
    ) -> BoxFuture<'a, Result<Answered, ApiError>> {
        Box::pin(async move {
            authorize_bucket(who, bucket.as_str(), Perm::Read)?;
            let opts = quorra_client::Options {
                quorum,
                ..Default::default()
            };
            Ok(self
                .get_object(bucket.as_str(), key.as_bytes(), &opts)
                .await?)
        })
    }

    fn write<'a>(
        &'a self,
        who: &'a Principal,
        bucket: BucketName,
        key: Key,
        context: Option<&'a str>,
        operation: Operation,
        quorum: QuorumOverrides,
    ) -> BoxFuture<'a, Result<Answered, ApiError>> {
        Box::pin(async move {
            authorize_bucket(who, bucket.as_str(), Perm::Write)?;
            let context = context.map(quorra_client::Context::decode).transpose()?;
            let opts = quorra_client::Options {
                quorum,
                ..Default::default()
            };
            let (object, context) = self
                .write(
                    bucket.as_str(),
                    key.as_bytes(),
                    operation,
                    context.as_ref(),
                    &opts,
                )
                .await?;
            // A caller that may write but not read gets no value back, as
            // from a node.
            let may_read = authorize_bucket(who, bucket.as_str(), Perm::Read).is_ok();
            Ok((object.filter(|_| may_read), context))
        })
    }

    fn datatype(&self, bucket: &BucketName) -> Option<Datatype> {
        self.bucket_props(bucket.as_str()).datatype
    }
}
