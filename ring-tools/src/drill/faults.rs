//! How the drill takes a node out and brings it back: shell hooks, or the
//! built-ins for the dev cluster (signals to the node's PID from
//! `DIR/nI/node.pid`, and the `hold` file that keeps a killed node down)
//! and for the docker-compose cluster (`docker kill`/`start`,
//! `pause`/`unpause`, `network disconnect`/`connect`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use thiserror::Error;

/// What happens to the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// The process is killed (SIGKILL: unsynced writes are lost), then
    /// started again.
    Kill,
    /// The process is stopped (SIGSTOP), then continued.
    Pause,
    /// The node is cut off the network, then reconnected.
    Partition,
}

impl Fault {
    /// The fault's name, as the command line takes it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Kill => "kill",
            Self::Pause => "pause",
            Self::Partition => "partition",
        }
    }
}

/// A fault that could not be applied or undone.
#[derive(Debug, Error)]
pub enum FaultError {
    /// This way of taking nodes out cannot do that fault.
    #[error("{0}")]
    Unsupported(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A signal could not be sent.
    #[error("cannot signal {node} (pid {pid}): {source}")]
    Signal {
        /// The node.
        node: String,
        /// Its PID.
        pid: i32,
        /// Why.
        source: nix::Error,
    },
    /// A command failed.
    #[error("`{command}` failed: {why}")]
    Command {
        /// The command.
        command: String,
        /// Its status and stderr.
        why: String,
    },
    /// The dev cluster did not start the node again in time.
    #[error("{0} was not started again within {1:?}: is `quorra dev-cluster` still running?")]
    NotBack(String, Duration),
}

/// How nodes are taken out.
#[derive(Debug, Clone)]
pub enum Provider {
    /// A `quorra dev-cluster` directory.
    DevCluster(PathBuf),
    /// A docker-compose project: containers are `PROJECT-NODE-1` on
    /// network `PROJECT_quorra`.
    Compose {
        /// The compose project name.
        project: String,
        /// The address the node had on the network before it was cut off
        /// (the compose file pins each node's address).
        address: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    },
    /// Shell commands; `$QUORRA_DRILL_NODE` and `$QUORRA_DRILL_FAULT` say
    /// which node and fault.
    Hooks {
        /// Takes the node out.
        down: String,
        /// Brings it back.
        up: String,
    },
}

/// How long the dev cluster may take to start a node again.
const RESTART_TIMEOUT: Duration = Duration::from_secs(120);

impl Provider {
    /// A compose project's provider.
    pub fn compose(project: impl Into<String>) -> Self {
        Self::Compose {
            project: project.into(),
            address: Default::default(),
        }
    }

    /// Checks, before anything is done, that this provider's `node` is the
    /// node at `http_addr` (`host:port`): a dev-cluster directory must be the
    /// cluster the drill runs against, or it would signal another cluster's
    /// processes.
    pub fn check(&self, node: &str, http_addr: &str) -> Result<(), FaultError> {
        let Self::DevCluster(dir) = self else {
            return Ok(());
        };
        let path = dir.join(node).join("quorra.toml");
        let text = std::fs::read_to_string(&path).map_err(|source| FaultError::File {
            path: path.clone(),
            source,
        })?;
        let configured = text.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == "http_addr").then(|| v.trim().trim_matches('"').to_owned())
        });
        if configured.as_deref() != Some(http_addr) {
            return Err(FaultError::Unsupported(format!(
                "{} says {node} serves on {}, but the cluster's {node} is at {http_addr}: --dev-cluster names another cluster",
                path.display(),
                configured.as_deref().unwrap_or("no address")
            )));
        }
        Ok(())
    }

    /// Takes `node` out with `fault`.
    pub async fn down(&self, node: &str, fault: Fault) -> Result<(), FaultError> {
        match self {
            Self::DevCluster(dir) => {
                let node_dir = dir.join(node);
                let sig = match fault {
                    Fault::Kill => Signal::SIGKILL,
                    Fault::Pause => Signal::SIGSTOP,
                    Fault::Partition => return Err(FaultError::Unsupported(
                        "the dev cluster runs on one loopback: cut a node off with --down-cmd/--up-cmd (ip netns, iptables) or run the drill on the compose cluster".into(),
                    )),
                };
                // The PID must be that node's process before anything is
                // held or signalled.
                let pid = read_pid(&node_dir)?;
                if fault == Fault::Kill {
                    let hold = node_dir.join("hold");
                    std::fs::write(&hold, b"ring-tools drill\n")
                        .map_err(|source| FaultError::File { path: hold, source })?;
                }
                signal(pid, node, sig)
            }
            Self::Compose { project, address } => {
                let c = container(project, node);
                match fault {
                    Fault::Kill => docker(&["kill", &c]).await.map(drop),
                    Fault::Pause => docker(&["pause", &c]).await.map(drop),
                    Fault::Partition => {
                        let net = network(project);
                        let format = format!(
                            "{{{{(index .NetworkSettings.Networks \"{net}\").IPAddress}}}}"
                        );
                        let ip = docker(&["inspect", "-f", &format, &c]).await?;
                        *address
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner) =
                            Some(ip.trim().to_owned()).filter(|ip| !ip.is_empty());
                        docker(&["network", "disconnect", &net, &c]).await.map(drop)
                    }
                }
            }
            Self::Hooks { down, .. } => shell(down, node, fault).await,
        }
    }

    /// Brings `node` back from `fault`.
    pub async fn up(&self, node: &str, fault: Fault) -> Result<(), FaultError> {
        match self {
            Self::DevCluster(dir) => {
                let node_dir = dir.join(node);
                match fault {
                    Fault::Kill => {
                        let before = read_pid(&node_dir).ok();
                        let hold = node_dir.join("hold");
                        std::fs::remove_file(&hold)
                            .map_err(|source| FaultError::File { path: hold, source })?;
                        // The dev cluster starts it again and writes its
                        // new PID (the drill then waits for it to serve).
                        let started = Instant::now();
                        loop {
                            if let Ok(pid) = read_pid(&node_dir) {
                                if Some(pid) != before {
                                    return Ok(());
                                }
                            }
                            if started.elapsed() > RESTART_TIMEOUT {
                                return Err(FaultError::NotBack(node.into(), RESTART_TIMEOUT));
                            }
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                    Fault::Pause => signal(read_pid(&node_dir)?, node, Signal::SIGCONT),
                    Fault::Partition => Err(FaultError::Unsupported(
                        "partition is not a dev-cluster fault".into(),
                    )),
                }
            }
            Self::Compose { project, address } => {
                let c = container(project, node);
                match fault {
                    Fault::Kill => docker(&["start", &c]).await.map(drop),
                    Fault::Pause => docker(&["unpause", &c]).await.map(drop),
                    Fault::Partition => {
                        let net = network(project);
                        let ip = address
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .clone();
                        let mut args = vec!["network", "connect"];
                        if let Some(ip) = &ip {
                            args.extend(["--ip", ip.as_str()]);
                        }
                        args.extend([net.as_str(), c.as_str()]);
                        docker(&args).await.map(drop)
                    }
                }
            }
            Self::Hooks { up, .. } => shell(up, node, fault).await,
        }
    }

    /// Undoes what [`Provider::down`] may have left, on an early exit or an
    /// interrupt, as best it can: a held dev-cluster node is released, a
    /// paused one continued; otherwise `up` is tried once.
    pub async fn release(&self, node: &str, fault: Fault) {
        match (self, fault) {
            (Self::DevCluster(dir), Fault::Kill) => {
                let _ = std::fs::remove_file(dir.join(node).join("hold"));
            }
            (Self::DevCluster(dir), Fault::Pause) => {
                if let Ok(pid) = read_pid(&dir.join(node)) {
                    let _ = signal(pid, node, Signal::SIGCONT);
                }
            }
            (Self::DevCluster(_), Fault::Partition) => {}
            _ => {
                if let Err(e) = self.up(node, fault).await {
                    eprintln!("ring-tools: could not bring {node} back: {e}");
                }
            }
        }
    }
}

/// The PID in the node's `node.pid`, once it is checked to be that node's
/// `quorra node --config .../NODE/quorra.toml` process (a stale file must
/// not make the drill signal another process).
fn read_pid(node_dir: &Path) -> Result<i32, FaultError> {
    let path = node_dir.join("node.pid");
    let bad = |why: &str| FaultError::File {
        path: path.clone(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_owned()),
    };
    let text = std::fs::read_to_string(&path).map_err(|source| FaultError::File {
        path: path.clone(),
        source,
    })?;
    let pid: i32 = text.trim().parse().map_err(|_| bad("not a PID"))?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map_err(|_| bad("no such process: the file is stale"))?;
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let config = node_dir.join("quorra.toml");
    let ours = args.iter().any(|a| a == "node")
        && args.windows(2).any(|w| {
            w[0] == "--config"
                && std::fs::canonicalize(&w[1]).ok() == std::fs::canonicalize(&config).ok()
        });
    if !ours {
        return Err(bad("that process is not this node's `quorra node`"));
    }
    Ok(pid)
}

/// Sends `sig` to `node`, process `pid`.
fn signal(pid: i32, node: &str, sig: Signal) -> Result<(), FaultError> {
    kill(Pid::from_raw(pid), sig).map_err(|source| FaultError::Signal {
        node: node.into(),
        pid,
        source,
    })
}

/// The compose container of `node`.
pub fn container(project: &str, node: &str) -> String {
    format!("{project}-{node}-1")
}

/// The compose network of a project.
pub fn network(project: &str) -> String {
    format!("{project}_quorra")
}

/// Runs `docker ARGS`; its stdout.
async fn docker(args: &[&str]) -> Result<String, FaultError> {
    let mut cmd = tokio::process::Command::new("docker");
    cmd.args(args);
    run(cmd, &format!("docker {}", args.join(" "))).await
}

/// Runs a hook through `sh -c`, with the node and fault in its environment.
async fn shell(command: &str, node: &str, fault: Fault) -> Result<(), FaultError> {
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .env("QUORRA_DRILL_NODE", node)
        .env("QUORRA_DRILL_FAULT", fault.name());
    run(cmd, command).await.map(drop)
}

/// Runs `cmd` to its end; its stdout, or why it failed.
async fn run(mut cmd: tokio::process::Command, shown: &str) -> Result<String, FaultError> {
    let failed = |why: String| FaultError::Command {
        command: shown.to_owned(),
        why,
    };
    let out = cmd.output().await.map_err(|e| failed(e.to_string()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(failed(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compose_names_follow_the_project() {
        assert_eq!(container("deploy", "n2"), "deploy-n2-1");
        assert_eq!(network("deploy"), "deploy_quorra");
    }

    #[tokio::test]
    async fn hooks_get_the_node_and_fault_and_failures_say_why() {
        let dir = tempfile::tempdir().expect("dir");
        let out = dir.path().join("out");
        let hooks = Provider::Hooks {
            down: format!(
                "echo \"$QUORRA_DRILL_NODE $QUORRA_DRILL_FAULT\" > {}",
                out.display()
            ),
            up: "echo nope >&2; exit 3".into(),
        };
        hooks.down("n2", Fault::Pause).await.expect("down");
        assert_eq!(std::fs::read_to_string(&out).expect("out"), "n2 pause\n");
        let err = hooks.up("n2", Fault::Pause).await.unwrap_err().to_string();
        assert!(err.contains("nope"), "{err}");
    }

    #[tokio::test]
    async fn the_dev_cluster_cannot_partition_and_needs_a_pid() {
        let dir = tempfile::tempdir().expect("dir");
        let dev = Provider::DevCluster(dir.path().to_owned());
        assert!(matches!(
            dev.down("n1", Fault::Partition).await,
            Err(FaultError::Unsupported(_))
        ));
        assert!(matches!(
            dev.down("n1", Fault::Pause).await,
            Err(FaultError::File { .. })
        ));
        // A PID file naming a process that is not the node is refused.
        std::fs::create_dir_all(dir.path().join("n1")).expect("dir");
        std::fs::write(
            dir.path().join("n1/node.pid"),
            format!("{}\n", std::process::id()),
        )
        .expect("pid");
        let err = dev.down("n1", Fault::Kill).await.unwrap_err().to_string();
        assert!(err.contains("not this node's"), "{err}");
        assert!(!dir.path().join("n1/hold").exists(), "nothing held");
    }
}
