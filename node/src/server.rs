//! Starting and stopping one node: open storage, bind the HTTP listener,
//! serve until told to stop, then make every write durable.
//!
//! [`start`] is the entry point for embedding and in-process tests (bind port
//! 0, read [`NodeHandle::http_addr`]); [`run`] is what `quorra node` calls.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::{ConfigError, NodeConfig};
use crate::driver::Driver;
use crate::faults::Faults;
use crate::http::{self, AppState};
use crate::kv::Kv;
use crate::net::certs::NodeCerts;
use crate::net::transport::Transport;
use crate::storage::commit::GroupCommit;
use crate::storage::faulty::FaultyEngine;
use crate::storage::rocks::{RocksEngine, RocksOptions};
use crate::storage::{Engine, EngineError};
use crate::store::{ObjectStore, StoreError};

/// Why a node could not start or stopped badly.
#[derive(Debug, Error)]
pub enum NodeError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Storage could not be opened or flushed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The data dir does not fit the configuration.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The HTTP address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The HTTP server failed.
    #[error("http server failed: {0}")]
    Serve(std::io::Error),
    /// The peer transport could not start.
    #[error(transparent)]
    Net(#[from] crate::net::transport::NetError),
    /// The cluster's certificates are unusable.
    #[error(transparent)]
    Tls(#[from] quorra_client::tls::TlsError),
    /// The HTTPS certificate is unusable.
    #[error(transparent)]
    HttpTls(#[from] crate::http::tls::HttpTlsError),
    /// The cluster's secret is missing or unusable.
    #[error("{0} (run `quorra certs --out DIR` on the certificate dir to create it)")]
    Secret(#[from] crate::net::certs::CertError),
}

/// A running node.
#[derive(Debug)]
pub struct NodeHandle {
    /// Where the HTTP API listens.
    pub http_addr: SocketAddr,
    /// Whether it speaks HTTPS (`http_tls`).
    pub https: bool,
    /// Where peers reach this node (None for a node running alone).
    pub peer_addr: Option<SocketAddr>,
    /// The node's data dir.
    pub data_dir: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), NodeError>>,
}

impl NodeHandle {
    /// Stops the node gracefully and waits until its data is durable.
    pub async fn stop(mut self) -> Result<(), NodeError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.wait().await
    }

    /// Waits for the node to stop on its own.
    pub async fn wait(self) -> Result<(), NodeError> {
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(NodeError::Serve(std::io::Error::other(e.to_string()))),
        }
    }
}

/// The process-wide metrics registry (installed once).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            // Latencies as histograms (a scrape can aggregate them across
            // nodes), from 0.5 ms to 10 s.
            const BUCKETS: [f64; 14] = [
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ];
            let builder = PrometheusBuilder::new();
            let recorder = builder
                .set_buckets(&BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new())
                .build_recorder();
            let handle = recorder.handle();
            // Fails only if something else installed a recorder first; the
            // handle then renders an empty registry, which is still valid.
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed");
            }
            crate::metric_names::describe();
            handle
        })
        .clone()
}

/// Opens storage, binds the listener and starts serving.
pub async fn start(config: NodeConfig) -> Result<NodeHandle, NodeError> {
    config.validate()?;
    let config = Arc::new(config);
    let db_path = config.data_dir.join("db");
    let rocks = {
        let path = db_path.clone();
        let options = RocksOptions {
            memory_budget_bytes: (config.memory_budget_mb << 20) as usize,
            lose_unsynced: config.crash_test_lose_unsynced,
        };
        tokio::task::spawn_blocking(move || RocksEngine::open_with(&path, options))
            .await
            .map_err(|e| NodeError::Serve(std::io::Error::other(e.to_string())))??
    };
    let faults = Arc::new(Faults::new(config.fault_injection));
    let engine: Arc<dyn Engine> = if faults.enabled() {
        tracing::warn!("fault injection is on: PUT /v1/debug/faults can break this node");
        Arc::new(FaultyEngine::new(Arc::new(rocks), faults.clone()))
    } else {
        Arc::new(rocks)
    };
    // Durable writes share WAL syncs (above the fault layer, so a slow
    // disk's sync is what a batch waits for).
    let engine: Arc<dyn Engine> = Arc::new(GroupCommit::new(engine));
    let store =
        Arc::new(ObjectStore::open(engine.clone(), &config.node_id)?.with_limits(config.limits));
    // Contexts are authenticated with the cluster's secret (every node has
    // the same one, from `quorra certs`), or, for a node running alone,
    // with a secret of its own kept in its data dir.
    let secret = match &config.cert_dir {
        Some(dir) => crate::net::certs::load_secret(dir)?,
        None => store.local_secret()?,
    };
    let context_key = quorra_core::context::ContextKey::new(&secret);
    // Before binding: a bad certificate stops the node with a clear error.
    let https = match &config.http_tls {
        Some(tls) => Some(http::tls::acceptor(tls)?),
        None => None,
    };
    let metrics = metrics_handle();
    let listener = TcpListener::bind(config.http_addr)
        .await
        .map_err(|source| NodeError::Bind {
            addr: config.http_addr,
            source,
        })?;
    let http_addr = listener.local_addr().map_err(NodeError::Serve)?;
    let transport = match (config.peer_addr, &config.cert_dir) {
        (Some(addr), Some(dir)) => {
            let certs = NodeCerts::load(dir, &config.node_id)?;
            // Room for the largest object plus its envelope.
            Some(Transport::bind(addr, &certs, config.limits.frame_limit())?)
        }
        _ => None,
    };
    let peer_addr = match &transport {
        Some(t) => Some(t.local_addr()?),
        None => None,
    };
    let driver = Driver::new(
        config.clone(),
        store.clone(),
        transport.clone(),
        peer_addr.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
        http_addr,
        faults,
    );
    let kv = Kv::new(driver.clone(), config.clone(), context_key);
    let mut background = Vec::new();
    if let Some(t) = &transport {
        let handler_kv = kv.clone();
        let handler: crate::net::transport::Handler = Arc::new(move |from, req| {
            let kv = handler_kv.clone();
            Box::pin(async move { kv.handle_request(from, req).await })
        });
        background.push(t.serve(handler));
    }
    background.push(driver.spawn_timer());
    let scrub_rate = config.anti_entropy.scrub_records_per_second;
    if scrub_rate > 0 {
        background.push(crate::driver::spawn_scrub(store.clone(), scrub_rate));
    }
    let in_flight = kv.client_permits().clone();
    let state = AppState {
        service: Arc::new(kv.clone()),
        kv,
        config: config.clone(),
        metrics: metrics.clone(),
        in_flight,
    };
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let app = http::router(state);
    let node_id = config.node_id.clone();
    let closing = store.clone();
    let task = tokio::spawn(async move {
        let upkeep = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                metrics.run_upkeep();
            }
        });
        let stopped = async {
            let _ = stop_rx.await;
        };
        let served = match https {
            Some(acceptor) => http::tls::serve(listener, acceptor, app, stopped).await,
            None => {
                axum::serve(listener, app)
                    .with_graceful_shutdown(stopped)
                    .await
            }
        };
        upkeep.abort();
        for task in background {
            task.abort();
        }
        driver.close();
        // Whatever was acknowledged without dw reaches the disk before exit,
        // and the clean-stop marker tells the next start it may keep the
        // actor epoch.
        let flushed = tokio::task::spawn_blocking(move || closing.close()).await;
        tracing::info!(node = %node_id, "stopped");
        served.map_err(NodeError::Serve)?;
        match flushed {
            Ok(r) => r.map_err(NodeError::from),
            Err(e) => Err(NodeError::Serve(std::io::Error::other(e.to_string()))),
        }
    });
    tracing::info!(node = %config.node_id, %http_addr, https = config.http_tls.is_some(), data = %db_path.display(), actor = %store.actor(), "serving");
    Ok(NodeHandle {
        http_addr,
        https: config.http_tls.is_some(),
        peer_addr,
        data_dir: config.data_dir.clone(),
        stop: Some(stop_tx),
        task,
    })
}

/// Runs a node until `shutdown` completes. Prints one line to stdout once
/// the node serves: `ready node=ID http=http://ADDR`.
pub async fn run(
    config: NodeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), NodeError> {
    let node_id = config.node_id.clone();
    let handle = start(config).await?;
    let scheme = if handle.https { "https" } else { "http" };
    match handle.peer_addr {
        Some(peer) => println!(
            "ready node={node_id} http={scheme}://{} peer={peer}",
            handle.http_addr
        ),
        None => println!("ready node={node_id} http={scheme}://{}", handle.http_addr),
    }
    shutdown.await;
    tracing::info!(node = %node_id, "shutting down");
    handle.stop().await
}
