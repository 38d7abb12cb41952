//! Harness for Quorra's cross-process tests: start real `quorra` processes on
//! loopback, talk to them over real HTTP, and kill, stop or restart them by
//! the PIDs this harness started.
//!
//! Every wait here is bounded: a node that does not serve within
//! [`READY_TIMEOUT`] fails the test with the tail of its log.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use quorra_node::config::NodeConfig;

pub mod cluster;
pub mod http;
pub mod jepsen;
pub mod metrics;
pub mod nemesis;
pub mod netns;
pub mod suite;

/// How long a node may take to start serving.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a node may take to exit after a signal.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// The path of the `quorra` binary built for these tests.
#[macro_export]
macro_rules! quorra_bin {
    () => {
        std::path::PathBuf::from(env!("CARGO_BIN_EXE_quorra-under-test"))
    };
}

/// The path of the `ring-tools` binary built for these tests.
#[macro_export]
macro_rules! ring_tools_bin {
    () => {
        std::path::PathBuf::from(env!("CARGO_BIN_EXE_ring-tools-under-test"))
    };
}

/// Runs `ring-tools --url URL ARGS...` (the binary at `bin`, from
/// [`ring_tools_bin!`]): its stdout, or a panic with its stderr.
pub fn ring_tools(bin: &Path, url: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(bin)
        .args(["--url", url])
        .args(args)
        .output()
        .expect("run ring-tools");
    assert!(
        out.status.success(),
        "ring-tools {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One `quorra node` process started by this harness.
#[derive(Debug)]
pub struct NodeProcess {
    bin: PathBuf,
    config_path: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    /// The node's HTTP base URL (`http://127.0.0.1:PORT`, or `https://`).
    pub url: String,
    /// The node's peer address, when it has one.
    pub peer: Option<std::net::SocketAddr>,
    /// The node's id.
    pub id: String,
    /// The node's data directory.
    pub data_dir: PathBuf,
}

impl NodeProcess {
    /// Writes `config` into `dir/quorra.toml` (HTTP on a free loopback port
    /// unless set) and starts the node.
    pub fn start(bin: &Path, dir: &Path, config: NodeConfig) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let config_path = dir.join("quorra.toml");
        std::fs::write(&config_path, config.to_toml()?)?;
        let mut node = Self {
            bin: bin.to_owned(),
            config_path: config_path.clone(),
            log: dir.join("node.log"),
            child: None,
            url: String::new(),
            peer: None,
            id: config.node_id.clone(),
            data_dir: config.data_dir.clone(),
        };
        node.spawn()?;
        // Pin the ports it got, so a restart brings the same addresses back.
        let mut pinned = config;
        let addr = node
            .url
            .split_once("://")
            .map_or(node.url.as_str(), |(_, a)| a);
        pinned.http_addr = addr.parse()?;
        pinned.peer_addr = node.peer.or(pinned.peer_addr);
        std::fs::write(&config_path, pinned.to_toml()?)?;
        Ok(node)
    }

    /// A config for node `id` with its data in `dir/data` and HTTP on a free
    /// loopback port.
    pub fn config(id: &str, dir: &Path) -> NodeConfig {
        NodeConfig {
            node_id: id.into(),
            data_dir: dir.join("data"),
            http_addr: "127.0.0.1:0".parse().expect("loopback address"),
            log: "info".into(),
            ..NodeConfig::default()
        }
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut child = Command::new(&self.bin)
            .arg("node")
            .arg("--config")
            .arg(&self.config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .context("spawn quorra node")?;
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !sent && line.starts_with("ready ") {
                    let field = |name: &str| {
                        line.split_whitespace()
                            .find_map(|w| w.strip_prefix(name))
                            .map(str::to_owned)
                    };
                    let _ = tx.send((field("http="), field("peer=")));
                    sent = true;
                }
            }
        });
        self.child = Some(child);
        match rx.recv_timeout(READY_TIMEOUT) {
            Ok((Some(url), peer)) => {
                self.url = url;
                self.peer = peer.and_then(|p| p.parse().ok());
                Ok(())
            }
            _ => {
                self.kill9();
                bail!("node did not serve:\n{}", self.log_tail())
            }
        }
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, then reap the process.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: the process freezes, its sockets stay open.
    pub fn pause(&self) -> anyhow::Result<()> {
        self.signal(Signal::SIGSTOP)
    }

    /// SIGCONT: a paused process carries on.
    pub fn resume(&self) -> anyhow::Result<()> {
        self.signal(Signal::SIGCONT)
    }

    fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        let Some(child) = self.child.as_ref() else {
            bail!("node {} is not running", self.id);
        };
        kill(Pid::from_raw(child.id() as i32), signal)?;
        Ok(())
    }

    /// Whether this harness has the process running (or paused).
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGTERM, then wait for a graceful exit (bounded).
    pub fn terminate(&mut self) -> anyhow::Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            bail!("node is not running");
        };
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM)?;
        wait_bounded(&mut child, EXIT_TIMEOUT)
    }

    /// Starts the node again with the same config and data.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            bail!("node is still running");
        }
        self.spawn()
    }

    /// The node's whole log (every life of it).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last lines of the node's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A `quorra dev-cluster` this harness started, with the URLs it printed;
/// stopped by its PID (SIGTERM, bounded wait) when dropped, so a failing
/// test leaves no nodes behind.
#[derive(Debug)]
pub struct DevCluster {
    child: Child,
    /// Each node's base URL, n1's first.
    pub urls: Vec<String>,
}

impl DevCluster {
    /// Starts `nodes` nodes under `dir` on free ports (the binary at
    /// `bin`, from [`quorra_bin!`]); returns once each printed its URL.
    pub fn start(bin: &Path, dir: &Path, nodes: usize) -> anyhow::Result<Self> {
        let mut child = Command::new(bin)
            .args(["dev-cluster", "--base-port", "0", "--nodes"])
            .arg(nodes.to_string())
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("start dev-cluster")?;
        let stdout = child.stdout.take().context("dev-cluster stdout")?;
        let mut cluster = Self {
            child,
            urls: Vec::new(),
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        while cluster.urls.len() < nodes {
            let line = rx
                .recv_timeout(Duration::from_secs(180))
                .context("the dev cluster did not print a URL per node")?;
            cluster.urls.push(line.trim().to_owned());
        }
        Ok(cluster)
    }

    /// Stops it (SIGTERM, killed after 30 s): its exit status.
    pub fn stop(&mut self) -> anyhow::Result<ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Ok(status);
        }
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM)?;
        wait_bounded(&mut self.child, EXIT_TIMEOUT)
    }
}

impl Drop for DevCluster {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Waits for `child` to exit, killing it after `limit`.
pub fn wait_bounded(child: &mut Child, limit: Duration) -> anyhow::Result<ExitStatus> {
    let (tx, rx) = mpsc::channel();
    let pid = child.id();
    // std has no timed wait: a watchdog kills the child at the deadline.
    let watchdog = std::thread::spawn(move || {
        if rx.recv_timeout(limit).is_err() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    });
    let status = child.wait()?;
    let _ = tx.send(());
    let _ = watchdog.join();
    Ok(status)
}

/// A `quorra gateway` this harness started in front of a cluster; stopped
/// by its PID when dropped.
#[derive(Debug)]
pub struct Gateway {
    child: Child,
    /// Its base URL.
    pub url: String,
}

impl Gateway {
    /// Starts a gateway with the admin certificate `name` from `certs`,
    /// learning the cluster from `seeds`; returns once it serves.
    pub fn start(
        bin: &Path,
        certs: &Path,
        name: &str,
        seeds: &[std::net::SocketAddr],
    ) -> anyhow::Result<Self> {
        let seeds: Vec<String> = seeds.iter().map(ToString::to_string).collect();
        let mut child = Command::new(bin)
            .args(["gateway", "--http-addr", "127.0.0.1:0", "--name", name])
            .arg("--cert-dir")
            .arg(certs)
            .arg("--seeds")
            .arg(seeds.join(","))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("start gateway")?;
        let stdout = child.stdout.take().context("gateway stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("ready gateway http=") {
                    let _ = tx.send(url.trim().to_owned());
                }
            }
        });
        match rx.recv_timeout(READY_TIMEOUT) {
            Ok(url) => Ok(Self { child, url }),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the gateway did not serve")
            }
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
