//! The operator's side of the client library: a node's HTTP admin and
//! cluster endpoints (layout changes, status, repair, per-replica reads),
//! with the same failover as the data client: a node that cannot be reached
//! is skipped for the next one given.
//!
//! `ring-tools` does everything online through this module, so the tool and
//! any program a team writes against the cluster see the same calls. Its
//! answers are the nodes' JSON documents; the layout itself comes back as
//! core's [`Layout`], the very structure every node routes by, so a tool's
//! ring is the node's ring.

use std::time::Duration;

use quorra_core::layout::Layout;
use serde_json::{json, Value};
use thiserror::Error;

/// How long one admin call may take (a commit waits for the data-holding
/// nodes to agree; a compaction for the disk).
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(60);

/// A failed admin call.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum AdminError {
    /// No node given could be reached.
    #[error("no node answered ({tried}): {reason}")]
    Unreachable {
        /// The URLs tried.
        tried: String,
        /// The last failure.
        reason: String,
    },
    /// The node answered with an error.
    #[error("{url}: {status} {code}: {message}")]
    Refused {
        /// The node asked.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The stable error code.
        code: String,
        /// What is wrong.
        message: String,
    },
    /// The node's answer is not what the call expects.
    #[error("{url}: unexpected answer: {reason}")]
    BadAnswer {
        /// The node asked.
        url: String,
        /// What did not fit.
        reason: String,
    },
    /// No URL given.
    #[error("no node URL given")]
    NoUrl,
}

impl AdminError {
    /// The stable error code of a node's refusal.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Refused { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// A layout action [`AdminClient::stage`] can stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    /// Give a member data, or a new zone or weight.
    Join {
        /// The node.
        node: String,
        /// Its zone (none: the zone it reports, or its current one).
        zone: Option<String>,
        /// Its weight (none: its current one, or 1).
        weight: Option<u32>,
    },
    /// A node leaves: its data moves to the others (none: the node asked).
    Leave(Option<String>),
    /// A dead node is removed: its data is rebuilt elsewhere.
    Remove(String),
    /// A member without data takes a dead node's place and data.
    Replace {
        /// The node replaced.
        dead: String,
        /// The node taking its place.
        new: String,
    },
    /// Undo what is staged for a node.
    Clear(String),
    /// A bucket's new `n_val`.
    NVal {
        /// The bucket.
        bucket: String,
        /// The new `n_val`.
        n_val: u8,
    },
}

impl Stage {
    /// The admin route's action and its JSON body.
    fn request(&self) -> (&'static str, Value) {
        match self {
            Self::Join { node, zone, weight } => (
                "join",
                json!({"node": node, "zone": zone, "weight": weight}),
            ),
            Self::Leave(node) => ("leave", json!({ "node": node })),
            Self::Remove(node) => ("remove", json!({ "node": node })),
            Self::Replace { dead, new } => ("replace", json!({"node": dead, "with": new})),
            Self::Clear(node) => ("clear", json!({ "node": node })),
            Self::NVal { bucket, n_val } => ("n_val", json!({"bucket": bucket, "n_val": n_val})),
        }
    }
}

/// An admin connection to a cluster: the nodes' base URLs, tried in order.
#[derive(Debug, Clone)]
pub struct AdminClient {
    urls: Vec<String>,
    http: reqwest::Client,
    /// Sent as `Authorization: Bearer` (a cluster with tokens needs it).
    token: Option<String>,
}

impl AdminClient {
    /// A client for the nodes at `urls` (`http://host:port`), tried in
    /// order, with [`ADMIN_TIMEOUT`] per call.
    pub fn new(urls: impl IntoIterator<Item = String>) -> Result<Self, AdminError> {
        Self::with_timeout(urls, ADMIN_TIMEOUT)
    }

    /// [`AdminClient::new`] with another timeout per call.
    pub fn with_timeout(
        urls: impl IntoIterator<Item = String>,
        timeout: Duration,
    ) -> Result<Self, AdminError> {
        let urls: Vec<String> = urls
            .into_iter()
            .map(|u| u.trim().trim_end_matches('/').to_owned())
            .filter(|u| !u.is_empty())
            .collect();
        if urls.is_empty() {
            return Err(AdminError::NoUrl);
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| AdminError::Unreachable {
                tried: urls.join(","),
                reason: e.to_string(),
            })?;
        Ok(Self {
            urls,
            http,
            token: None,
        })
    }

    /// The same client, sending `token` (`ID.SECRET`) with every call: a
    /// cluster that has tokens needs a cluster admin's for admin calls.
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token.filter(|t| !t.is_empty());
        self
    }

    /// The URLs, in the order they are tried.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// A client for one node only (per-node status, per-replica reads).
    pub fn node(&self, url: &str) -> Self {
        Self {
            urls: vec![url.trim_end_matches('/').to_owned()],
            http: self.http.clone(),
            token: self.token.clone(),
        }
    }

    /// The same nodes, each call bounded by `timeout` (polls use a short
    /// one, so a paused node costs seconds, not the admin timeout).
    pub fn with_call_timeout(&self, timeout: Duration) -> Self {
        Self::with_timeout(self.urls.clone(), timeout)
            .map(|c| c.with_token(self.token.clone()))
            .unwrap_or_else(|_| self.clone())
    }

    /// Sends `method path` with an optional JSON body to the first node
    /// that answers; a node's error answer is returned, not retried
    /// elsewhere (another node would say the same), except `503` (a node
    /// that has not joined yet, or is overloaded: the next one may serve).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, AdminError> {
        self.call_at(method, path, body).await.map(|(_, v)| v)
    }

    /// [`AdminClient::call`], with the URL of the node that answered.
    async fn call_at(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(String, Value), AdminError> {
        let mut last = String::new();
        let mut refused = None;
        for base in &self.urls {
            let mut req = self.http.request(method.clone(), format!("{base}{path}"));
            if let Some(t) = &self.token {
                req = req.bearer_auth(t);
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    last = format!("{base}: {e}");
                    continue;
                }
            };
            let status = resp.status();
            let bytes = resp.bytes().await.map_err(|e| AdminError::BadAnswer {
                url: base.clone(),
                reason: e.to_string(),
            })?;
            let value: Value = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).map_err(|e| AdminError::BadAnswer {
                    url: base.clone(),
                    reason: format!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)),
                })?
            };
            if !status.is_success() {
                let e = AdminError::Refused {
                    url: base.clone(),
                    status: status.as_u16(),
                    code: value["error"]["code"].as_str().unwrap_or("?").to_owned(),
                    message: value["error"]["message"].as_str().unwrap_or("").to_owned(),
                };
                if status == reqwest::StatusCode::SERVICE_UNAVAILABLE {
                    refused = Some(e);
                    continue;
                }
                return Err(e);
            }
            return Ok((base.clone(), value));
        }
        Err(refused.unwrap_or_else(|| AdminError::Unreachable {
            tried: self.urls.join(","),
            reason: last,
        }))
    }

    async fn get(&self, path: &str) -> Result<Value, AdminError> {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Option<&Value>) -> Result<Value, AdminError> {
        self.call(reqwest::Method::POST, path, body).await
    }

    /// The committed layout, as every node routes by it
    /// (`GET /v1/cluster/layout`), checked.
    pub async fn layout(&self) -> Result<Layout, AdminError> {
        let (url, v) = self
            .call_at(reqwest::Method::GET, "/v1/cluster/layout", None)
            .await?;
        let layout: Layout = serde_json::from_value(v).map_err(|e| AdminError::BadAnswer {
            url: url.clone(),
            reason: format!("not a layout: {e}"),
        })?;
        layout.check().map_err(|e| AdminError::BadAnswer {
            url,
            reason: format!("invalid layout: {}", e.0),
        })?;
        Ok(layout)
    }

    /// The layout as operators read it, with what is staged
    /// (`GET /v1/admin/layout`).
    pub async fn layout_view(&self) -> Result<Value, AdminError> {
        self.get("/v1/admin/layout").await
    }

    /// Stages one change; answers with the layout view.
    pub async fn stage(&self, change: &Stage) -> Result<Value, AdminError> {
        let (action, body) = change.request();
        self.post(&format!("/v1/admin/layout/{action}"), Some(&body))
            .await
    }

    /// What committing the staged changes would move
    /// (`GET /v1/admin/layout/plan`).
    pub async fn plan(&self) -> Result<Value, AdminError> {
        self.get("/v1/admin/layout/plan").await
    }

    /// Commits what was staged against layout `version`; answers with the
    /// new layout view.
    pub async fn commit(&self, version: u64) -> Result<Value, AdminError> {
        let body = json!({ "version": version });
        self.post("/v1/admin/layout/commit", Some(&body)).await
    }

    /// A node's status (`GET /v1/cluster/status`): layout, transfers,
    /// anti-entropy, hints, tombstones, storage.
    pub async fn status(&self) -> Result<Value, AdminError> {
        self.get("/v1/cluster/status").await
    }

    /// A node's view of the members (`GET /v1/cluster/members`).
    pub async fn members(&self) -> Result<Value, AdminError> {
        self.get("/v1/cluster/members").await
    }

    /// Queues an anti-entropy exchange of one partition, or of every
    /// partition the node replicates (`POST /v1/admin/repair`).
    pub async fn repair(&self, partition: Option<u32>) -> Result<Value, AdminError> {
        let path = match partition {
            Some(p) => format!("/v1/admin/repair?partition={p}"),
            None => "/v1/admin/repair".to_owned(),
        };
        self.post(&path, None).await
    }

    /// Where a key lives, as the node computes it
    /// (`GET /v1/cluster/locate/{bucket}/{key}`).
    pub async fn locate(&self, bucket: &str, key: &str) -> Result<Value, AdminError> {
        self.get(&format!("/v1/cluster/locate/{}", key_path(bucket, key)))
            .await
    }

    /// The node's own copy of a key, every sibling and its clock
    /// (`GET /v1/debug/replica/{bucket}/{key}`).
    pub async fn replica(&self, bucket: &str, key: &str) -> Result<Value, AdminError> {
        self.get(&format!("/v1/debug/replica/{}", key_path(bucket, key)))
            .await
    }
}

/// `bucket/key`, percent-encoded for a path (a key may hold any byte).
pub fn key_path(bucket: &str, key: &str) -> String {
    format!("{}/{}", encode(bucket), encode(key))
}

/// Every byte but the unreserved ones of RFC 3986 is escaped.
const PATH_ESCAPE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, PATH_ESCAPE).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_encoded_for_a_path() {
        assert_eq!(key_path("users", "a/b c"), "users/a%2Fb%20c");
        assert_eq!(key_path("b", "k-1_x.y~"), "b/k-1_x.y~");
    }

    #[test]
    fn a_client_needs_a_url() {
        assert!(matches!(
            AdminClient::new(Vec::<String>::new()),
            Err(AdminError::NoUrl)
        ));
        let c = AdminClient::new(["http://a:1/".to_owned(), " ".to_owned()]);
        assert!(c.is_ok_and(|c| c.urls() == ["http://a:1"]));
    }
}
