//! The stores the benchmark drives, each behind the same four operations.
//!
//! - Quorra through its client library (QUIC, token-aware).
//! - Quorra through its HTTP API (round-robin over the nodes).
//! - Redis (one unreplicated server: the ceiling for a round trip).
//! - etcd through its v3 JSON gateway (a replicated, linearizable store).
//! - Garage through its K2V API ([`crate::garage`]: leaderless, DVV
//!   causality tokens).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context as _};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use quorra_client::{Client, ClientConfig, Options, QuorumOverrides};
use redis::AsyncCommands;

/// A store under test.
#[derive(Clone)]
pub enum Driver {
    /// Quorra via the client library.
    Quorra {
        /// The client.
        client: Client,
        /// Consistency options of every request.
        opts: Options,
    },
    /// Quorra via HTTP.
    QuorraHttp {
        /// HTTP client.
        http: reqwest::Client,
        /// Node base URLs.
        urls: Arc<Vec<String>>,
        /// Query string for writes (e.g. `?dw=1`).
        write_query: String,
        /// Round-robin position.
        next: Arc<AtomicUsize>,
    },
    /// Redis.
    Redis(redis::aio::MultiplexedConnection),
    /// etcd via its JSON gateway.
    Etcd {
        /// HTTP client.
        http: reqwest::Client,
        /// Member client URLs.
        urls: Arc<Vec<String>>,
        /// Round-robin position.
        next: Arc<AtomicUsize>,
    },
    /// Garage via K2V.
    Garage(crate::garage::K2v),
}

const BUCKET: &str = "usertable";
/// The `counter` bucket of the counter workload.
pub const COUNTERS: &str = "bench_counters";
/// The `set` bucket of the set-add workload.
pub const SETS: &str = "bench_sets";

impl Driver {
    /// Quorra through the client library.
    pub async fn quorra(config: ClientConfig, dw: bool) -> anyhow::Result<Self> {
        let client = Client::connect(config).await.context("connect to Quorra")?;
        let quorum = QuorumOverrides {
            dw: dw.then_some(1),
            ..QuorumOverrides::default()
        };
        Ok(Self::Quorra {
            client,
            opts: Options {
                quorum,
                timeout: None,
            },
        })
    }

    /// Quorra through HTTP.
    pub fn quorra_http(urls: Vec<String>, dw: bool) -> anyhow::Result<Self> {
        Ok(Self::QuorraHttp {
            http: reqwest::Client::builder().build()?,
            urls: Arc::new(urls),
            write_query: if dw { "?dw=1".into() } else { String::new() },
            next: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// Redis at `url` (`redis://127.0.0.1:6379`).
    pub async fn redis(url: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)?;
        Ok(Self::Redis(
            client.get_multiplexed_async_connection().await?,
        ))
    }

    /// etcd at these client URLs.
    pub fn etcd(urls: Vec<String>) -> anyhow::Result<Self> {
        Ok(Self::Etcd {
            http: reqwest::Client::builder().build()?,
            urls: Arc::new(urls),
            next: Arc::new(AtomicUsize::new(0)),
        })
    }

    fn pick(urls: &[String], next: &AtomicUsize) -> String {
        urls[next.fetch_add(1, Ordering::Relaxed) % urls.len()].clone()
    }

    /// Reads a record.
    pub async fn read(&self, key: &str) -> anyhow::Result<()> {
        match self {
            Self::Quorra { client, opts } => {
                client.get_with(BUCKET, key, opts).await?;
            }
            Self::QuorraHttp {
                http, urls, next, ..
            } => {
                let base = Self::pick(urls, next);
                let r = http
                    .get(format!("{base}/v1/kv/{BUCKET}/{key}"))
                    .send()
                    .await?;
                let status = r.status().as_u16();
                r.bytes().await?;
                if !matches!(status, 200 | 300 | 404) {
                    bail!("read answered {status}");
                }
            }
            Self::Redis(conn) => {
                let mut c = conn.clone();
                let _: Option<Vec<u8>> = c.get(key).await?;
            }
            Self::Etcd { http, urls, next } => {
                let base = Self::pick(urls, next);
                let body = serde_json::json!({ "key": STANDARD.encode(key) });
                etcd_post(http, &base, "range", &body).await?;
            }
            Self::Garage(k2v) => {
                k2v.read(key).await?;
            }
        }
        Ok(())
    }

    /// Writes a record. Quorra and Garage writes carry the context of a
    /// read first (as Riak's YCSB binding does): blind writes to one key would pile up
    /// as siblings, which is what a sibling-mode store is for.
    pub async fn write(&self, key: &str, value: &[u8]) -> anyhow::Result<()> {
        match self {
            Self::Quorra { .. } | Self::QuorraHttp { .. } => {
                self.quorra_write(key, value, true).await
            }
            Self::Garage(k2v) => k2v.put(key, value, k2v.read(key).await?).await,
            _ => self.put_plain(key, value).await,
        }
    }

    /// A plain overwrite, for the stores without a causal context.
    async fn put_plain(&self, key: &str, value: &[u8]) -> anyhow::Result<()> {
        match self {
            Self::Redis(conn) => {
                let mut c = conn.clone();
                let _: () = c.set(key, value).await?;
            }
            Self::Etcd { http, urls, next } => {
                let base = Self::pick(urls, next);
                let body = serde_json::json!({ "key": STANDARD.encode(key), "value": STANDARD.encode(value) });
                etcd_post(http, &base, "put", &body).await?;
            }
            _ => bail!("Quorra writes carry a context"),
        }
        Ok(())
    }

    /// Reads a record and writes it back changed. Quorra carries the read's
    /// context, so the write replaces what it read.
    pub async fn read_modify_write(&self, key: &str, value: &[u8]) -> anyhow::Result<()> {
        match self {
            Self::Quorra { .. } | Self::QuorraHttp { .. } => {
                self.quorra_write(key, value, true).await
            }
            Self::Garage(k2v) => k2v.put(key, value, k2v.read(key).await?).await,
            _ => {
                self.read(key).await?;
                self.put_plain(key, value).await
            }
        }
    }

    /// Inserts a record under a key never written before: no read first
    /// (Quorra takes a write without context as a new value; on a new key
    /// there is nothing for it to be concurrent with).
    pub async fn insert(&self, key: &str, value: &[u8]) -> anyhow::Result<()> {
        match self {
            Self::Quorra { .. } | Self::QuorraHttp { .. } => {
                self.quorra_write(key, value, false).await
            }
            Self::Garage(k2v) => k2v.put(key, value, None).await,
            _ => self.put_plain(key, value).await,
        }
    }

    /// A Quorra write, with the context of a read first when `read_first`.
    async fn quorra_write(&self, key: &str, value: &[u8], read_first: bool) -> anyhow::Result<()> {
        match self {
            Self::Quorra { client, opts } => {
                let context = match read_first {
                    true => Some(client.get_with(BUCKET, key, opts).await?.context),
                    false => None,
                };
                client
                    .put_with(
                        BUCKET,
                        key,
                        value.to_vec(),
                        "application/octet-stream",
                        context.as_ref(),
                        opts,
                    )
                    .await?;
            }
            Self::QuorraHttp {
                http,
                urls,
                next,
                write_query,
            } => {
                let base = Self::pick(urls, next);
                let mut context = None;
                if read_first {
                    let r = http
                        .get(format!("{base}/v1/kv/{BUCKET}/{key}"))
                        .send()
                        .await?;
                    context = r
                        .headers()
                        .get("x-quorra-context")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    r.bytes().await?;
                }
                let mut put = http
                    .put(format!("{base}/v1/kv/{BUCKET}/{key}{write_query}"))
                    .body(value.to_vec());
                if let Some(c) = context {
                    put = put.header("x-quorra-context", c);
                }
                let r = put.send().await?;
                if r.status().as_u16() != 204 {
                    bail!("write answered {}", r.status());
                }
            }
            _ => bail!("not a Quorra target"),
        }
        Ok(())
    }
}

impl Driver {
    /// Adds one to a counter.
    pub async fn increment(&self, key: &str) -> anyhow::Result<()> {
        match self {
            Self::Quorra { client, .. } => {
                client.increment(COUNTERS, key, 1).await?;
            }
            Self::QuorraHttp { .. } => {
                self.crdt_post(COUNTERS, key, serde_json::json!({"increment": 1}))
                    .await?;
            }
            Self::Redis(conn) => {
                // Keys of their own, as Quorra's bucket: a record of another
                // workload is not a counter.
                let mut c = conn.clone();
                let _: i64 = c.incr(format!("{COUNTERS}:{key}"), 1).await?;
            }
            Self::Etcd { .. } => bail!("etcd has no counters"),
            Self::Garage(_) => bail!("K2V has no counters"),
        }
        Ok(())
    }

    /// Adds `elements` to a set.
    pub async fn set_add(&self, key: &str, elements: Vec<String>) -> anyhow::Result<()> {
        match self {
            Self::Quorra { client, .. } => {
                client.add_to_set(SETS, key, elements).await?;
            }
            Self::QuorraHttp { .. } => {
                self.crdt_post(SETS, key, serde_json::json!({ "add": elements }))
                    .await?;
            }
            Self::Redis(conn) => {
                let mut c = conn.clone();
                let _: i64 = c.sadd(format!("{SETS}:{key}"), elements).await?;
            }
            Self::Etcd { .. } => bail!("etcd has no sets"),
            Self::Garage(_) => bail!("K2V has no sets"),
        }
        Ok(())
    }

    async fn crdt_post(
        &self,
        bucket: &str,
        key: &str,
        op: serde_json::Value,
    ) -> anyhow::Result<()> {
        let Self::QuorraHttp {
            http,
            urls,
            next,
            write_query,
        } = self
        else {
            bail!("not Quorra over HTTP");
        };
        let base = Self::pick(urls, next);
        let r = http
            .post(format!("{base}/v1/crdt/{bucket}/{key}{write_query}"))
            .json(&op)
            .send()
            .await?;
        let status = r.status().as_u16();
        r.bytes().await?;
        if status != 200 {
            bail!("{bucket} operation answered {status}");
        }
        Ok(())
    }
}

/// One call of etcd's v3 JSON gateway (`/v3/kv/{call}`), its answer read
/// whole.
async fn etcd_post(
    http: &reqwest::Client,
    base: &str,
    call: &str,
    body: &serde_json::Value,
) -> anyhow::Result<()> {
    let r = http
        .post(format!("{base}/v3/kv/{call}"))
        .json(body)
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("etcd {call} answered {}", r.status());
    }
    r.bytes().await?;
    Ok(())
}
