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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provider {
    /// A `quorra dev-cluster` directory.
    DevCluster(PathBuf),
    /// A docker-compose project: containers are `PROJECT-NODE-1` on
    /// network `PROJECT_quorra`.
    Compose {
        /// The compose project name.
        project: String,
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
    /// Takes `node` out with `fault`.
    pub async fn down(&self, node: &str, fault: Fault) -> Result<(), FaultError> {
        match self {
            Self::DevCluster(dir) => {
                let node_dir = dir.join(node);
                match fault {
                    Fault::Kill => {
                        let hold = node_dir.join("hold");
                        std::fs::write(&hold, b"ring-tools drill\n").map_err(|source| {
                            FaultError::File { path: hold, source }
                        })?;
                        signal(&node_dir, node, Signal::SIGKILL)
                    }
                    Fault::Pause => signal(&node_dir, node, Signal::SIGSTOP),
                    Fault::Partition => Err(FaultError::Unsupported(
                        "the dev cluster runs on one loopback: cut a node off with --down-cmd/--up-cmd (ip netns, iptables) or run the drill on the compose cluster".into(),
                    )),
                }
            }
            Self::Compose { project } => {
                let c = container(project, node);
                match fault {
                    Fault::Kill => docker(&["kill", &c]).await,
                    Fault::Pause => docker(&["pause", &c]).await,
                    Fault::Partition => {
                        docker(&["network", "disconnect", &network(project), &c]).await
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
                    Fault::Pause => signal(&node_dir, node, Signal::SIGCONT),
                    Fault::Partition => Err(FaultError::Unsupported(
                        "partition is not a dev-cluster fault".into(),
                    )),
                }
            }
            Self::Compose { project } => {
                let c = container(project, node);
                match fault {
                    Fault::Kill => docker(&["start", &c]).await,
                    Fault::Pause => docker(&["unpause", &c]).await,
                    Fault::Partition => {
                        docker(&["network", "connect", &network(project), &c]).await
                    }
                }
            }
            Self::Hooks { up, .. } => shell(up, node, fault).await,
        }
    }

    /// Undoes what [`Provider::down`] may have left, on an early exit: a
    /// held node is released, a paused one continued.
    pub fn release(&self, node: &str, fault: Fault) {
        if let Self::DevCluster(dir) = self {
            let node_dir = dir.join(node);
            match fault {
                Fault::Kill => {
                    let _ = std::fs::remove_file(node_dir.join("hold"));
                }
                Fault::Pause => {
                    let _ = signal(&node_dir, node, Signal::SIGCONT);
                }
                Fault::Partition => {}
            }
        }
    }
}

fn read_pid(node_dir: &Path) -> Result<i32, FaultError> {
    let path = node_dir.join("node.pid");
    let text = std::fs::read_to_string(&path).map_err(|source| FaultError::File {
        path: path.clone(),
        source,
    })?;
    text.trim().parse().map_err(|_| FaultError::File {
        path,
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not a PID"),
    })
}

/// Sends `sig` to the node whose PID the dev cluster wrote.
fn signal(node_dir: &Path, node: &str, sig: Signal) -> Result<(), FaultError> {
    let pid = read_pid(node_dir)?;
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

async fn docker(args: &[&str]) -> Result<(), FaultError> {
    let out = tokio::process::Command::new("docker")
        .args(args)
        .output()
        .await
        .map_err(|e| FaultError::Command {
            command: format!("docker {}", args.join(" ")),
            why: e.to_string(),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(FaultError::Command {
            command: format!("docker {}", args.join(" ")),
            why: format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr)),
        })
    }
}

async fn shell(command: &str, node: &str, fault: Fault) -> Result<(), FaultError> {
    let fault_name = match fault {
        Fault::Kill => "kill",
        Fault::Pause => "pause",
        Fault::Partition => "partition",
    };
    let out = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .env("QUORRA_DRILL_NODE", node)
        .env("QUORRA_DRILL_FAULT", fault_name)
        .output()
        .await
        .map_err(|e| FaultError::Command {
            command: command.into(),
            why: e.to_string(),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(FaultError::Command {
            command: command.into(),
            why: format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr)),
        })
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
    }
}
