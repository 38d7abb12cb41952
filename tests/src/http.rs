//! A thin HTTP helper for tests: one call per request, answers read whole.

use quorra_node::http::multipart;

/// A response read whole.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// `X-Quorra-Context`, if present.
    pub context: Option<String>,
    /// `Content-Type`, if present.
    pub content_type: Option<String>,
    /// The body.
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The stable error code of a JSON error body.
    pub fn error_code(&self) -> Option<String> {
        let v: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        Some(v["error"]["code"].as_str()?.to_owned())
    }

    /// The values of a 200 (one) or 300 (every sibling), sorted.
    pub fn values(&self) -> Vec<String> {
        let mut v = match self.status {
            200 => vec![self.text()],
            300 => {
                let ct = self.content_type.clone().unwrap_or_default();
                let boundary = multipart::boundary_of(&ct).unwrap_or_default();
                multipart::decode(boundary, &self.body)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|p| String::from_utf8_lossy(&p.body).into_owned())
                    .collect()
            }
            _ => vec![],
        };
        v.sort();
        v
    }
}

/// An HTTP client for one node.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    /// A client for the node at `base` (`http://127.0.0.1:PORT`).
    pub fn new(base: &str) -> Self {
        Self::with_timeout(base, std::time::Duration::from_secs(30))
    }

    /// A client whose requests give up after `timeout`.
    pub fn with_timeout(base: &str, timeout: std::time::Duration) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(timeout)
                .build()
                .expect("http client"),
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    /// The same client, sending `Authorization: Bearer TOKEN` with every
    /// request.
    pub fn with_bearer(&self, token: &str) -> Self {
        let mut headers = reqwest::header::HeaderMap::new();
        let value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .expect("token is ASCII");
        headers.insert(reqwest::header::AUTHORIZATION, value);
        Self {
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .default_headers(headers)
                .build()
                .expect("http client"),
            base: self.base.clone(),
        }
    }

    /// Any method on any path, with a JSON body or none.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> anyhow::Result<Answer> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        answer(req.send().await?).await
    }

    /// DELETE any path.
    pub async fn delete_path(&self, path: &str) -> anyhow::Result<Answer> {
        answer(
            self.http
                .delete(format!("{}{path}", self.base))
                .send()
                .await?,
        )
        .await
    }

    /// PUT a JSON document to any path.
    pub async fn put_json(&self, path: &str, body: &serde_json::Value) -> anyhow::Result<Answer> {
        let req = self
            .http
            .put(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body.to_string());
        answer(req.send().await?).await
    }

    /// POST a JSON document to any path.
    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> anyhow::Result<Answer> {
        let req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body.to_string());
        answer(req.send().await?).await
    }

    /// GET any path.
    pub async fn get_path(&self, path: &str) -> anyhow::Result<Answer> {
        answer(self.http.get(format!("{}{path}", self.base)).send().await?).await
    }

    /// GET a key.
    pub async fn get(&self, bucket: &str, key: &str) -> anyhow::Result<Answer> {
        self.get_path(&format!("/v1/kv/{bucket}/{key}")).await
    }

    /// PUT a value, with an optional context and query string.
    pub async fn put(
        &self,
        bucket: &str,
        key: &str,
        value: impl Into<Vec<u8>>,
        context: Option<&str>,
        query: &str,
    ) -> anyhow::Result<Answer> {
        let path = format!("{key}{query}");
        match context {
            Some(c) => {
                self.put_with(bucket, &path, value, &[("x-quorra-context", c)])
                    .await
            }
            None => self.put_with(bucket, &path, value, &[]).await,
        }
    }

    /// PUT a value with extra request headers (`key` may carry a query
    /// string).
    pub async fn put_with(
        &self,
        bucket: &str,
        key: &str,
        value: impl Into<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Answer> {
        let mut req = self
            .http
            .put(format!("{}/v1/kv/{bucket}/{key}", self.base))
            .header("content-type", "text/plain")
            .body(value.into());
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        answer(req.send().await?).await
    }

    /// DELETE a key, with an optional context.
    pub async fn delete(
        &self,
        bucket: &str,
        key: &str,
        context: Option<&str>,
    ) -> anyhow::Result<Answer> {
        let mut req = self
            .http
            .delete(format!("{}/v1/kv/{bucket}/{key}", self.base));
        if let Some(c) = context {
            req = req.header("x-quorra-context", c);
        }
        answer(req.send().await?).await
    }
}

async fn answer(resp: reqwest::Response) -> anyhow::Result<Answer> {
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let status = resp.status().as_u16();
    let context = header("x-quorra-context");
    let content_type = header("content-type");
    let body = resp.bytes().await?.to_vec();
    Ok(Answer {
        status,
        context,
        content_type,
        body,
    })
}
