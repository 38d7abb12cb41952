//! Data types through the client: counters, sets, maps, registers and
//! flags in buckets whose `datatype` property names the type (see the
//! README's "Data types"). The client sends an operation; the key's
//! coordinating replica applies it, so concurrent updates through any
//! node merge without siblings to resolve.
//!
//! ```no_run
//! # async fn demo(client: quorra_client::Client) -> Result<(), quorra_client::ClientError> {
//! use quorra_client::datatypes::MapUpdate;
//!
//! let visits = client.increment("counters", "page-1", 1).await?;
//! client.add_to_set("tags", "post-7", ["rust", "crdt"]).await?;
//! let tags = client.fetch("tags", "post-7").await?;
//! client.remove_from_set("tags", "post-7", ["crdt"], &tags.context).await?;
//! let profile = MapUpdate::new()
//!     .increment("logins_counter", 1)
//!     .set("name_register", serde_json::json!("Ann"))
//!     .enable("verified_flag");
//! client.update_map("users", "ann", profile, None).await?;
//! # let _ = visits;
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;

use quorra_core::crdt::{self, CrdtValue};
use quorra_core::proto::{ClientObject, Get, Operation};
use serde_json::Value as Json;

pub use quorra_core::crdt::{CrdtOp, Datatype};

use crate::client::{Client, Context, Options};
use crate::error::ClientError;

/// A data-type key as read: its state (none if nothing was written) and
/// the context a remove names. A set write answers the set's size and
/// context at its coordinator, not its elements ([`Self::size`]; a set may
/// hold 100,000): [`Client::fetch`] reads them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DataValue {
    state: Option<CrdtValue>,
    /// A set write's answer: the set's size after it.
    written_size: Option<u64>,
    /// Hand this to a remove (set elements, map fields, disabling a flag):
    /// it removes what this read saw.
    pub context: Context,
}

impl DataValue {
    fn from_object(
        object: Option<quorra_core::Object>,
        context: Option<String>,
    ) -> Result<Self, ClientError> {
        if let Some(update) = object.as_ref().and_then(crdt::SetUpdate::of_object) {
            return Ok(Self {
                state: None,
                written_size: Some(update.size),
                context: Context(context),
            });
        }
        let state = match object {
            Some(o) => crdt::collapse(&o).map_err(|e| ClientError::BadRequest {
                code: e.code(),
                message: e.to_string(),
            })?,
            None => None,
        };
        Ok(Self {
            state,
            written_size: None,
            context: Context(context),
        })
    }

    /// Whether nothing was written to the key.
    pub fn is_empty(&self) -> bool {
        self.state.is_none() && self.written_size.is_none()
    }

    /// The key's type (`None` if nothing was written).
    pub fn datatype(&self) -> Option<Datatype> {
        match self.written_size {
            Some(_) => Some(Datatype::Set),
            None => self.state.as_ref().map(CrdtValue::datatype),
        }
    }

    /// A set's element count: after a set write, at its coordinator.
    pub fn size(&self) -> Option<u64> {
        match &self.state {
            Some(CrdtValue::Set(s)) => Some(s.members().count() as u64),
            _ => self.written_size,
        }
    }

    /// The value as plain JSON, as the HTTP API shows it (`null` if
    /// nothing was written).
    pub fn json(&self) -> Json {
        self.state.as_ref().map_or(Json::Null, crdt::render)
    }

    /// A counter's value.
    pub fn counter(&self) -> Option<i128> {
        match &self.state {
            Some(CrdtValue::Counter(c)) => Some(c.value()),
            _ => None,
        }
    }

    /// A set's elements, sorted (`None` too for a set write's answer,
    /// which holds only [`Self::size`]).
    pub fn set(&self) -> Option<Vec<String>> {
        match &self.state {
            Some(s @ CrdtValue::Set(_)) => Some(strings(crdt::render(s))),
            _ => None,
        }
    }

    /// A flag's value.
    pub fn flag(&self) -> Option<bool> {
        match &self.state {
            Some(f @ CrdtValue::Flag(_)) => crdt::render(f).as_bool(),
            _ => None,
        }
    }

    /// A register's values: one, or several written concurrently.
    pub fn register(&self) -> Option<Vec<Json>> {
        match &self.state {
            Some(r @ CrdtValue::Register(_)) => match crdt::render(r) {
                Json::Array(v) => Some(v),
                _ => None,
            },
            _ => None,
        }
    }

    /// A map's fields as a JSON object.
    pub fn map(&self) -> Option<serde_json::Map<String, Json>> {
        match &self.state {
            Some(m @ CrdtValue::Map(_)) => match crdt::render(m) {
                Json::Object(o) => Some(o),
                _ => None,
            },
            _ => None,
        }
    }
}

fn strings(v: Json) -> Vec<String> {
    match v {
        Json::Array(items) => items
            .into_iter()
            .filter_map(|i| i.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// Builds a map operation: field updates (by field name, which ends in its
/// type: `_counter`, `_set`, `_register`, `_flag`, `_map`) and removes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MapUpdate {
    update: BTreeMap<String, CrdtOp>,
    remove: Vec<String>,
}

impl MapUpdate {
    /// No changes yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn with(mut self, field: &str, op: CrdtOp) -> Self {
        self.update.insert(field.to_owned(), op);
        self
    }

    /// Adds `by` to a `_counter` field.
    pub fn increment(self, field: &str, by: i64) -> Self {
        self.with(field, CrdtOp::Increment(by))
    }

    /// Adds elements to a `_set` field.
    pub fn add<I: IntoIterator<Item = S>, S: Into<String>>(self, field: &str, items: I) -> Self {
        let add = items.into_iter().map(Into::into).collect();
        self.with(
            field,
            CrdtOp::Set {
                add,
                remove: Vec::new(),
            },
        )
    }

    /// Removes elements from a `_set` field (needs the read's context).
    pub fn remove_elements<I: IntoIterator<Item = S>, S: Into<String>>(
        self,
        field: &str,
        items: I,
    ) -> Self {
        let remove = items.into_iter().map(Into::into).collect();
        self.with(
            field,
            CrdtOp::Set {
                add: Vec::new(),
                remove,
            },
        )
    }

    /// Writes a `_register` field (last writer wins).
    pub fn set(self, field: &str, value: Json) -> Self {
        self.with(field, CrdtOp::Register(value.to_string()))
    }

    /// Enables a `_flag` field.
    pub fn enable(self, field: &str) -> Self {
        self.with(field, CrdtOp::Flag(true))
    }

    /// Disables a `_flag` field (needs the read's context).
    pub fn disable(self, field: &str) -> Self {
        self.with(field, CrdtOp::Flag(false))
    }

    /// Updates a nested `_map` field.
    pub fn update_map(self, field: &str, nested: Self) -> Self {
        self.with(field, nested.into_op())
    }

    /// Removes a field (needs the read's context).
    pub fn remove(mut self, field: &str) -> Self {
        self.remove.push(field.to_owned());
        self
    }

    /// The operation.
    pub fn into_op(self) -> CrdtOp {
        CrdtOp::Map {
            update: self.update,
            remove: self.remove,
        }
    }
}

impl Client {
    /// Reads a data-type key.
    pub async fn fetch(
        &self,
        bucket: &str,
        key: impl AsRef<[u8]>,
    ) -> Result<DataValue, ClientError> {
        let key = key.as_ref();
        let (b, k) = Self::names(bucket, key)?;
        let opts = Options::default();
        let req = Get {
            bucket: b,
            key: k,
            quorum: opts.quorum,
        };
        let ClientObject { object, context } = self.call_with(bucket, key, req, &opts).await?;
        DataValue::from_object(object, context)
    }

    /// Applies `op` to a data-type key; `context` is the read's, which a
    /// remove needs. Returns the value the coordinator holds after it (for
    /// a set, its size and context).
    ///
    /// An operation that timed out may have been applied; retried, an
    /// increment or an add of a new element may count twice.
    pub async fn update(
        &self,
        bucket: &str,
        key: impl AsRef<[u8]>,
        op: CrdtOp,
        context: Option<&Context>,
    ) -> Result<DataValue, ClientError> {
        let (object, context) = self
            .write(
                bucket,
                key.as_ref(),
                Operation::Crdt(op),
                context,
                &Options::default(),
            )
            .await?;
        DataValue::from_object(object, context)
    }

    /// Adds `by` (negative: subtracts) to a counter; returns its value at
    /// the coordinator after the change.
    pub async fn increment(
        &self,
        bucket: &str,
        key: impl AsRef<[u8]>,
        by: i64,
    ) -> Result<i128, ClientError> {
        let v = self
            .update(bucket, key, CrdtOp::Increment(by), None)
            .await?;
        Ok(v.counter().unwrap_or(0))
    }

    /// Adds elements to a set; returns its size at the coordinator after.
    pub async fn add_to_set<I: IntoIterator<Item = S>, S: Into<String>>(
        &self,
        bucket: &str,
        key: impl AsRef<[u8]>,
        items: I,
    ) -> Result<DataValue, ClientError> {
        let add = items.into_iter().map(Into::into).collect();
        let op = CrdtOp::Set {
            add,
            remove: Vec::new(),
        };
        self.update(bucket, key, op, None).await
    }

    /// Removes the elements a read saw from a set; returns its size at
    /// the coordinator after.
    pub async fn remove_from_set<I: IntoIterator<Item = S>, S: Into<String>>(
        &self,
        bucket: &str,
        key: impl AsRef<[u8]>,
        items: I,
        context: &Context,
    ) -> Result<DataValue, ClientError> {
        let remove = items.into_iter().map(Into::into).collect();
        let op = CrdtOp::Set {
            add: Vec::new(),
            remove,
        };
        self.update(bucket, key, op, Some(context)).await
    }

    /// Writes a register: the values the read (`context`) saw are
    /// replaced, values written concurrently are kept beside it.
    pub async fn set_register(
        &self,
        bucket: &str,
        key: impl AsRef<[u8]>,
        value: &Json,
        context: Option<&Context>,
    ) -> Result<DataValue, ClientError> {
        let op = CrdtOp::Register(value.to_string());
        self.update(bucket, key, op, context).await
    }

    /// Enables a flag, or disables what the read (`context`, needed) saw
    /// enabled; a concurrent enable wins.
    pub async fn set_flag(
        &self,
        bucket: &str,
        key: impl AsRef<[u8]>,
        on: bool,
        context: Option<&Context>,
    ) -> Result<DataValue, ClientError> {
        self.update(bucket, key, CrdtOp::Flag(on), context).await
    }

    /// Updates and removes map fields.
    pub async fn update_map(
        &self,
        bucket: &str,
        key: impl AsRef<[u8]>,
        update: MapUpdate,
        context: Option<&Context>,
    ) -> Result<DataValue, ClientError> {
        self.update(bucket, key, update.into_op(), context).await
    }
}
