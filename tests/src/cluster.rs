//! A cluster of real `quorra node` processes on loopback, with their own
//! cluster CA, and ways to wait for what the cluster should come to believe.
//!
//! Waiting means polling a node's HTTP API until a condition holds, with a
//! deadline: the only way to observe another process's state change.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::bail;
use quorra_core::membership::GossipConfig;
use quorra_node::config::NodeConfig;
use serde_json::Value;

use crate::http::Client;
use crate::NodeProcess;

/// Failure detection fast enough for tests on loopback.
pub fn test_gossip() -> GossipConfig {
    GossipConfig {
        probe_interval_ms: 200,
        probe_timeout_ms: 250,
        suspect_timeout_ms: 1_000,
        push_pull_interval_ms: 500,
        indirect_probes: 2,
        piggyback: 8,
    }
}

/// Real nodes `n1..nN` under one temp dir.
pub struct TestCluster {
    /// The nodes, `nodes[0]` is n1.
    pub nodes: Vec<NodeProcess>,
    /// The certificate dir.
    pub certs: PathBuf,
    dir: tempfile::TempDir,
}

impl TestCluster {
    /// Starts `n` nodes, the cluster's initial members; n2.. find it
    /// through n1.
    pub fn start(bin: &Path, n: usize) -> anyhow::Result<Self> {
        Self::start_with(bin, n, |_, _| {})
    }

    /// Starts `n` nodes, letting `tweak` adjust each config.
    pub fn start_with(
        bin: &Path,
        n: usize,
        tweak: impl Fn(usize, &mut NodeConfig),
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let certs = dir.path().join("certs");
        let ids: Vec<String> = (1..=n).map(|i| format!("n{i}")).collect();
        quorra_node::net::certs::generate(&certs, &ids)?;
        let mut nodes: Vec<NodeProcess> = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            let node_dir = dir.path().join(id);
            let mut config = Self::node_config(id, &node_dir, &certs);
            config.initial_members = ids.clone();
            if let Some(seed) = nodes.first().and_then(|n| n.peer) {
                config.seeds = vec![seed];
            }
            tweak(i, &mut config);
            nodes.push(NodeProcess::start(bin, &node_dir, config)?);
        }
        Ok(Self { nodes, certs, dir })
    }

    /// The config of a cluster node.
    pub fn node_config(id: &str, dir: &Path, certs: &Path) -> NodeConfig {
        let mut c = NodeProcess::config(id, dir);
        c.peer_addr = Some("127.0.0.1:0".parse().expect("loopback"));
        c.cert_dir = Some(certs.to_owned());
        c.gossip = test_gossip();
        c.replica_timeout_ms = 2_000;
        c.handoff.interval_ms = 200;
        c.cleanup_grace_ms = 1_000;
        // Off unless a test turns it on: a test of hints or read repair
        // must not pass on anti-entropy's work.
        c.anti_entropy.interval_ms = 0;
        c
    }

    /// The temp dir holding everything.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A client for node `i` (0-based).
    pub fn client(&self, i: usize) -> Client {
        Client::new(&self.nodes[i].url)
    }

    /// The index of node `id`.
    pub fn index(&self, id: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    /// What node `observer` believes `id`'s status is.
    pub async fn status_seen_by(&self, observer: usize, id: &str) -> Option<String> {
        let members = self
            .client(observer)
            .get_path("/v1/cluster/members")
            .await
            .ok()?;
        let v: Value = serde_json::from_slice(&members.body).ok()?;
        v["members"]
            .as_array()?
            .iter()
            .find(|m| m["id"] == id)
            .and_then(|m| m["status"].as_str().map(str::to_owned))
    }

    /// Waits until every running node but `id` sees `id` as `status`.
    /// Returns how long it took.
    pub async fn wait_seen_as(
        &self,
        id: &str,
        status: &str,
        limit: Duration,
    ) -> anyhow::Result<Duration> {
        let observers: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].id != id && self.nodes[i].pid().is_some())
            .collect();
        let start = Instant::now();
        let mut pending = observers.clone();
        while start.elapsed() <= limit {
            let mut still = Vec::new();
            for &o in &pending {
                if self.status_seen_by(o, id).await.as_deref() != Some(status) {
                    still.push(o);
                }
            }
            if still.is_empty() {
                return Ok(start.elapsed());
            }
            pending = still;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("{id} not seen as {status} by nodes {pending:?} within {limit:?}")
    }

    /// Waits until every node sees every node up.
    pub async fn wait_converged(&self, limit: Duration) -> anyhow::Result<()> {
        for n in &self.nodes {
            self.wait_seen_as(&n.id, "up", limit).await?;
        }
        Ok(())
    }

    /// Polls `check` until it holds or `limit` passes.
    pub async fn eventually<F, Fut>(limit: Duration, what: &str, check: F) -> anyhow::Result<()>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let start = Instant::now();
        while start.elapsed() <= limit {
            if check().await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("{what}: not within {limit:?}")
    }

    /// The preference list and fallbacks of a key.
    pub async fn locate(
        &self,
        bucket: &str,
        key: &str,
    ) -> anyhow::Result<(Vec<String>, Vec<String>)> {
        let (_, prefs, fallbacks) = self.placement(bucket, key).await?;
        Ok((prefs, fallbacks))
    }

    /// The partition, preference list and fallbacks of a key.
    pub async fn placement(
        &self,
        bucket: &str,
        key: &str,
    ) -> anyhow::Result<(u64, Vec<String>, Vec<String>)> {
        let a = self
            .client(0)
            .get_path(&format!("/v1/cluster/locate/{bucket}/{key}"))
            .await?;
        let v: Value = serde_json::from_slice(&a.body)?;
        let list = |f: &str| -> Vec<String> {
            v[f].as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        let partition = v["partition"]
            .as_u64()
            .ok_or_else(|| anyhow::anyhow!("no partition in {v}"))?;
        Ok((partition, list("preference_list"), list("fallbacks")))
    }

    /// The live values node `i` holds itself for a key.
    pub async fn replica_values(&self, i: usize, bucket: &str, key: &str) -> Vec<String> {
        let Ok(a) = self
            .client(i)
            .get_path(&format!("/v1/debug/replica/{bucket}/{key}"))
            .await
        else {
            return vec![];
        };
        let v: Value = serde_json::from_slice(&a.body).unwrap_or(Value::Null);
        let mut out: Vec<String> = v["siblings"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|s| s["deleted"] == false)
                    .filter_map(|s| s["value"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    /// The value node `i`'s own copy of a data-type key makes (`null`
    /// when it holds none).
    pub async fn replica_crdt(&self, i: usize, bucket: &str, key: &str) -> Value {
        let Ok(a) = self
            .client(i)
            .get_path(&format!("/v1/debug/replica/{bucket}/{key}"))
            .await
        else {
            return Value::Null;
        };
        let v: Value = serde_json::from_slice(&a.body).unwrap_or(Value::Null);
        v["crdt_value"].clone()
    }

    /// A Rust (QUIC) client named `name`, with a client certificate of the
    /// cluster CA, seeded with every node; `timeout` per attempt (default:
    /// the client's).
    pub async fn quic_client(
        &self,
        name: &str,
        timeout: Option<Duration>,
    ) -> quorra_client::Client {
        quorra_node::net::certs::generate_role(
            &self.certs,
            quorra_core::auth::Role::Client,
            &[name.to_owned()],
        )
        .expect("client cert");
        let seeds = self.nodes.iter().filter_map(|n| n.peer).collect();
        let mut config = quorra_client::ClientConfig::new(seeds, &self.certs, name);
        if let Some(t) = timeout {
            config.timeout = t;
        }
        quorra_client::Client::connect(config)
            .await
            .expect("client connects")
    }

    /// Cuts node `i` off from every other node, both ways (fault
    /// switches: the nodes need `fault_injection`); `heal` undoes it.
    pub async fn isolate(&self, i: usize) -> anyhow::Result<()> {
        let others: Vec<String> = (0..self.nodes.len())
            .filter(|&j| j != i)
            .filter_map(|j| self.nodes[j].peer.map(|p| p.to_string()))
            .collect();
        self.set_drop(i, &others).await?;
        let me: Vec<String> = self.nodes[i].peer.iter().map(|p| p.to_string()).collect();
        for j in (0..self.nodes.len()).filter(|&j| j != i) {
            self.set_drop(j, &me).await?;
        }
        Ok(())
    }

    /// Ends every cut [`Self::isolate`] made.
    pub async fn heal(&self) -> anyhow::Result<()> {
        for j in 0..self.nodes.len() {
            self.set_drop(j, &[]).await?;
        }
        Ok(())
    }

    async fn set_drop(&self, i: usize, to: &[String]) -> anyhow::Result<()> {
        let a = self
            .client(i)
            .put_json("/v1/debug/faults", &serde_json::json!({ "drop_to": to }))
            .await?;
        anyhow::ensure!(a.status == 200, "faults on node {i}: {}", a.text());
        Ok(())
    }

    /// Hints node `i` holds.
    pub async fn hints_pending(&self, i: usize) -> Option<u64> {
        let a = self.client(i).get_path("/v1/cluster/status").await.ok()?;
        let v: Value = serde_json::from_slice(&a.body).ok()?;
        v["hints_pending"].as_u64()
    }
}
