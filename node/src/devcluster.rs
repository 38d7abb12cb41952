//! `quorra dev-cluster`: a local cluster of real `quorra node` processes
//! under one directory, for development and the README's quick start.
//!
//! Layout: `DIR/certs/` (the cluster CA and secret, node certificates, and a
//! client certificate `app` and an admin certificate `admin` to try the
//! client library and tools with),
//! `DIR/nI/quorra.toml` (written on first start, reused after),
//! `DIR/nI/data/` (RocksDB) and `DIR/nI/node.log`. The nodes of a new DIR
//! are the cluster's initial members and find each other through n1's peer
//! address; nodes added by a later run with more nodes join the cluster
//! already there. Once every node serves, it
//! prints each node's base URL on its own line (`http://127.0.0.1:PORT`) and
//! nothing else on stdout. SIGINT or SIGTERM stops every node gracefully.
//! Started again with the same DIR, it brings back the same nodes, ports and
//! data.
//!
//! Each running node's PID is in `DIR/nI/node.pid`. A node killed by a
//! signal (a crash, the OOM killer, `ring-tools drill --fault kill`) is
//! started again, as a supervisor would, unless `DIR/nI/hold` exists: then
//! it stays down until the file is removed. A node that exits on its own
//! (a bad config, a full disk) stays down, with its log's tail printed.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::cli::shutdown_signal;
use crate::config::NodeConfig;

/// Ports between consecutive nodes (room for HTTP, peer and admin ports).
const PORT_STRIDE: u16 = 10;
/// How long a node may take to start serving.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a node may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// Settings for `quorra dev-cluster`.
#[derive(Debug, Clone, Args)]
pub struct DevClusterArgs {
    /// Number of nodes to run (1 to 16).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=16))]
    pub nodes: u16,
    /// Directory for every node's config, data and log.
    #[arg(long, default_value = "quorra-data", value_name = "DIR")]
    pub dir: PathBuf,
    /// HTTP port of the first node; node I listens on BASE + 10*(I-1) for
    /// HTTP and one above for peers (QUIC). With 0, free ports are picked on
    /// first start and kept after.
    #[arg(long, default_value_t = 8098, value_name = "BASE")]
    pub base_port: u16,
    /// Log filter for the nodes (their logs go to DIR/nI/node.log).
    #[arg(long, default_value = "info", value_name = "FILTER")]
    pub log: String,
    /// Time between each node's anti-entropy exchanges in ms (0: off),
    /// written to new nodes' configs.
    #[arg(long, default_value_t = crate::config::AntiEntropyConfig::default().interval_ms, value_name = "MS")]
    pub anti_entropy_interval_ms: u64,
}

struct Member {
    id: String,
    child: Child,
    log: PathBuf,
    /// Its config file, to start it again.
    config: (PathBuf, NodeConfig),
}

/// The file that holds a killed node down while it exists.
pub const HOLD_FILE: &str = "hold";
/// The file with a running node's PID.
pub const PID_FILE: &str = "node.pid";
/// How long a node whose restart failed waits for the next try.
const RESTART_PAUSE: Duration = Duration::from_secs(5);

/// Whether a node that ended with `status` was killed by a signal rather
/// than exiting on its own.
fn killed(status: std::process::ExitStatus) -> bool {
    use std::os::unix::process::ExitStatusExt;
    status.signal().is_some()
}

/// Runs the cluster until SIGINT or SIGTERM.
pub async fn run(args: DevClusterArgs) -> anyhow::Result<()> {
    crate::cli::init_tracing("warn", crate::config::LogFormat::Text);
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let exe = std::env::current_exe().context("cannot find the quorra binary")?;
    let ids: Vec<String> = (1..=args.nodes).map(|i| format!("n{i}")).collect();
    let certs = args.dir.join("certs");
    crate::net::certs::generate(&certs, &ids)?;
    crate::net::certs::generate_role(&certs, quorra_core::auth::Role::Client, &["app".into()])?;
    crate::net::certs::generate_role(&certs, quorra_core::auth::Role::Admin, &["admin".into()])?;
    // The nodes of a new cluster found it together; a node added to an
    // existing one (a later run with more nodes) joins it.
    let initial = if args.dir.join("n1").join("quorra.toml").exists() {
        Vec::new()
    } else {
        ids.clone()
    };
    // A hold left by an interrupted drill would keep a node down for good.
    for id in &ids {
        let hold = args.dir.join(id).join(HOLD_FILE);
        if std::fs::remove_file(&hold).is_ok() {
            eprintln!(
                "quorra dev-cluster: removed {} left from an earlier run",
                hold.display()
            );
        }
    }
    let mut members = Vec::new();
    let mut urls = Vec::new();
    let mut seed = None;
    for i in 1..=args.nodes {
        let config = node_config(&args, i, seed, &initial)?;
        if seed.is_none() {
            seed = config.1.peer_addr;
        }
        match start_member(&exe, &config).await {
            Ok((member, url)) => {
                members.push(member);
                urls.push(url);
            }
            Err(e) => {
                stop_all(&mut members).await;
                return Err(e);
            }
        }
    }
    for url in &urls {
        println!("{url}");
    }
    eprintln!(
        "quorra dev-cluster: {} node(s) up; data and logs in {}; Ctrl-C stops them",
        members.len(),
        args.dir.display()
    );
    let mut signal = std::pin::pin!(shutdown_signal());
    let mut watch = tokio::time::interval(Duration::from_millis(200));
    // Nodes killed by a signal, waiting to be started again (not before the
    // instant given: a start that failed is retried after a pause).
    let mut down: Vec<((PathBuf, NodeConfig), tokio::time::Instant)> = Vec::new();
    // Starts under way, in their own tasks: the watch (and Ctrl-C) goes on.
    type Started = ((PathBuf, NodeConfig), anyhow::Result<(Member, String)>);
    let mut starting: tokio::task::JoinSet<Started> = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut signal => break,
            Some(started) = starting.join_next(), if !starting.is_empty() => {
                match started {
                    Ok((_, Ok((member, _)))) => {
                        eprintln!("quorra dev-cluster: node {} is back", member.id);
                        members.push(member);
                    }
                    Ok((config, Err(e))) => {
                        eprintln!("quorra dev-cluster: {e:#}; trying again in {RESTART_PAUSE:?}");
                        down.push((config, tokio::time::Instant::now() + RESTART_PAUSE));
                    }
                    Err(e) => eprintln!("quorra dev-cluster: a restart failed: {e}"),
                }
            }
            _ = watch.tick() => {
                let mut i = 0;
                while i < members.len() {
                    let Ok(Some(status)) = members[i].child.try_wait() else {
                        i += 1;
                        continue;
                    };
                    let m = members.swap_remove(i);
                    let dir = node_dir(&m.config.0);
                    let _ = std::fs::remove_file(dir.join(PID_FILE));
                    if killed(status) {
                        let hold = dir.join(HOLD_FILE);
                        if hold.exists() {
                            eprintln!("quorra dev-cluster: node {} was killed ({status}); held down until {} is removed", m.id, hold.display());
                        } else {
                            eprintln!("quorra dev-cluster: node {} was killed ({status}); starting it again", m.id);
                        }
                        down.push((m.config, tokio::time::Instant::now()));
                    } else {
                        eprintln!("quorra dev-cluster: node {} exited ({status}); see {}\n{}", m.id, m.log.display(), tail(&m.log));
                    }
                }
                let now = tokio::time::Instant::now();
                let (due, wait): (Vec<_>, Vec<_>) = down.drain(..).partition(|(config, at)| {
                    *at <= now && !node_dir(&config.0).join(HOLD_FILE).exists()
                });
                down = wait;
                for (config, _) in due {
                    let exe = exe.clone();
                    starting.spawn(async move {
                        let started = start_member(&exe, &config).await;
                        (config, started)
                    });
                }
                if members.is_empty() && down.is_empty() && starting.is_empty() {
                    bail!("every node has exited");
                }
            }
        }
    }
    // A node still starting is stopped by dropping it (kill on drop).
    starting.shutdown().await;
    stop_all(&mut members).await;
    Ok(())
}

/// The directory of a node's config file.
fn node_dir(config: &Path) -> &Path {
    config.parent().unwrap_or(Path::new("."))
}

/// Loads node `i`'s config from DIR, or writes a new one.
fn node_config(
    args: &DevClusterArgs,
    i: u16,
    seed: Option<SocketAddr>,
    initial_members: &[String],
) -> anyhow::Result<(PathBuf, NodeConfig)> {
    let id = format!("n{i}");
    let node_dir = args.dir.join(&id);
    let path = node_dir.join("quorra.toml");
    if path.exists() {
        let config = NodeConfig::from_file(&path)?;
        config.validate()?;
        return Ok((path, config));
    }
    std::fs::create_dir_all(&node_dir)
        .with_context(|| format!("cannot create {}", node_dir.display()))?;
    let (http, peer) = if args.base_port == 0 {
        (free_port()?, free_udp_port()?)
    } else {
        let http = args
            .base_port
            .checked_add(PORT_STRIDE * (i - 1))
            .context("--base-port is too high for this many nodes")?;
        (http, http + 1)
    };
    let config = NodeConfig {
        node_id: id,
        data_dir: PathBuf::from("data"),
        http_addr: SocketAddr::from(([127, 0, 0, 1], http)),
        peer_addr: Some(SocketAddr::from(([127, 0, 0, 1], peer))),
        seeds: seed.into_iter().collect(),
        initial_members: initial_members.to_vec(),
        cert_dir: Some(PathBuf::from("../certs")),
        log: args.log.clone(),
        anti_entropy: crate::config::AntiEntropyConfig {
            interval_ms: args.anti_entropy_interval_ms,
            ..Default::default()
        },
        ..NodeConfig::default()
    };
    config.validate()?;
    std::fs::write(&path, config.to_toml()?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok((path.clone(), NodeConfig::from_file(&path)?))
}

fn free_udp_port() -> anyhow::Result<u16> {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").context("cannot find a free UDP port")?;
    Ok(s.local_addr()?.port())
}

fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(l.local_addr()?.port())
}

async fn start_member(
    exe: &Path,
    (path, config): &(PathBuf, NodeConfig),
) -> anyhow::Result<(Member, String)> {
    let node_dir = node_dir(path);
    let log = node_dir.join("node.log");
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    let mut cmd = Command::new(exe);
    cmd.arg("node").arg("--config").arg(path);
    // The file is the whole truth for dev-cluster nodes.
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("QUORRA_") {
            cmd.env_remove(&k);
        }
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file))
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start node {}", config.node_id))?;
    let stdout = child.stdout.take().context("node stdout missing")?;
    let mut lines = BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(READY_TIMEOUT, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(url) = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("http="))
            {
                return Some(url.to_owned());
            }
        }
        None
    })
    .await;
    let pid = child.id();
    let member = Member {
        id: config.node_id.clone(),
        child,
        log: log.clone(),
        config: (path.clone(), config.clone()),
    };
    match ready {
        Ok(Some(url)) => {
            // The PID is written once the node serves: a start that failed
            // leaves none behind.
            if let Some(pid) = pid {
                std::fs::write(node_dir.join(PID_FILE), format!("{pid}\n")).with_context(|| {
                    format!("cannot write {}", node_dir.join(PID_FILE).display())
                })?;
            }
            // Keep draining stdout so the node never blocks on it.
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            Ok((member, url))
        }
        Ok(None) => bail!(
            "node {} exited before serving:\n{}",
            config.node_id,
            tail(&log)
        ),
        Err(_) => bail!(
            "node {} did not serve within {READY_TIMEOUT:?}:\n{}",
            config.node_id,
            tail(&log)
        ),
    }
}

/// SIGTERM to every node we started (by PID), then wait; SIGKILL stragglers.
async fn stop_all(members: &mut [Member]) {
    for m in members.iter() {
        if let Some(pid) = m.child.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
    }
    for m in members.iter_mut() {
        let _ = std::fs::remove_file(node_dir(&m.config.0).join(PID_FILE));
        if tokio::time::timeout(STOP_TIMEOUT, m.child.wait())
            .await
            .is_err()
        {
            eprintln!(
                "quorra dev-cluster: node {} did not stop in time; killing it",
                m.id
            );
            let _ = m.child.kill().await;
        }
    }
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
