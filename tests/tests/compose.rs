//! The docker-compose cluster as a user runs it: the offline image build
//! (`deploy/build-local-image.sh`), then `deploy/docker-compose.yml` with
//! its five-node profile, on a network and volumes of this test's own. One
//! node is cut off the network and another killed while writes go on; once
//! both are back, every acknowledged write must be on every one of its
//! replicas, read from each replica directly (not through a quorum read,
//! which could hide a missing copy). Everything the test created is torn
//! down at the end, whatever happens.
//!
//! Runs when a Docker engine answers; skips with a message when none does,
//! and fails instead under `CI=true`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use quorra_tests::cluster::TestCluster;
use quorra_tests::http::Client;
use quorra_tests::quorra_bin;
use serde_json::Value;

const NODES: usize = 5;
const BUCKET: &str = "compose";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the repository root")
        .to_owned()
}

fn run(cmd: &mut Command) -> anyhow::Result<Output> {
    let out = cmd.output()?;
    anyhow::ensure!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out)
}

/// The Compose tool: `docker compose` (v2) or `docker-compose` (v1).
fn compose_tool() -> Option<Vec<&'static str>> {
    let works = |args: &[&str]| {
        Command::new(args[0])
            .args(&args[1..])
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    [vec!["docker", "compose"], vec!["docker-compose"]]
        .into_iter()
        .find(|t| works(t))
}

/// A /24 no Docker network on this engine uses (first three octets).
fn free_subnet() -> anyhow::Result<String> {
    let ids = run(Command::new("docker").args(["network", "ls", "-q"]))?;
    let ids = String::from_utf8_lossy(&ids.stdout);
    let mut used = String::new();
    for id in ids.split_whitespace() {
        let out = run(Command::new("docker").args([
            "network",
            "inspect",
            "--format",
            "{{range .IPAM.Config}}{{.Subnet}} {{end}}",
            id,
        ]))?;
        used.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    (0..=255)
        .map(|x| format!("10.213.{x}"))
        .find(|s| !used.contains(&format!("{s}.")))
        .ok_or_else(|| anyhow::anyhow!("no free 10.213.x.0/24 subnet"))
}

/// One compose project of this test's own; `down -v` on drop.
struct Project {
    tool: Vec<&'static str>,
    name: String,
    env: Vec<(String, String)>,
    image: String,
}

impl Project {
    fn compose(&self) -> Command {
        let mut c = Command::new(self.tool[0]);
        c.args(&self.tool[1..])
            .arg("-p")
            .arg(&self.name)
            .arg("-f")
            .arg(repo().join("deploy/docker-compose.yml"))
            .args(["--profile", "five"])
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        // deploy/.env's defaults, not whatever the caller's shell holds.
        for var in [
            "QUORRA_N_VAL",
            "QUORRA_R",
            "QUORRA_W",
            "QUORRA_LOG",
            "QUORRA_BIND",
        ] {
            c.env_remove(var);
        }
        c
    }

    /// A client of each node, at the port Docker published it on now.
    fn clients(&self) -> anyhow::Result<Vec<Client>> {
        (1..=NODES)
            .map(|i| {
                let port = self.http_port(&format!("n{i}"))?;
                Ok(Client::new(&format!("http://127.0.0.1:{port}")))
            })
            .collect()
    }

    /// The host port Docker published service `svc`'s HTTP API on.
    fn http_port(&self, svc: &str) -> anyhow::Result<u16> {
        let out = run(self.compose().args(["port", svc, "8098"]))?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no published port for {svc}: {text}"))
    }

    /// The container id of service `svc`.
    fn container(&self, svc: &str) -> anyhow::Result<String> {
        let out = run(self.compose().args(["ps", "-q", svc]))?;
        let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        anyhow::ensure!(!id.is_empty(), "no container for {svc}");
        Ok(id)
    }

    fn network(&self) -> String {
        format!("{}_quorra", self.name)
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = self
            .compose()
            .args(["down", "-v", "--remove-orphans", "-t", "5"])
            .output();
        let _ = Command::new("docker")
            .args(["image", "rm", "-f", &self.image])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compose_cluster_keeps_every_acknowledged_write_through_a_cut_and_a_kill(
) -> anyhow::Result<()> {
    let engine = Command::new("docker")
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success());
    let Some(tool) = compose_tool().filter(|_| engine) else {
        anyhow::ensure!(
            std::env::var("CI").as_deref() != Ok("true"),
            "no Docker engine or Compose tool answers and CI=true: this test must run in CI"
        );
        eprintln!("SKIPPED: no Docker engine (or no docker compose / docker-compose) answers");
        return Ok(());
    };
    let tag = std::process::id();
    let image = format!("quorra-test:{tag}");
    // From here on, everything made is removed on the way out.
    let mut project = Project {
        tool,
        name: format!("quorratest{tag}"),
        env: Vec::new(),
        image: image.clone(),
    };
    run(Command::new(repo().join("deploy/build-local-image.sh"))
        .arg("--bin")
        .arg(quorra_bin!())
        .env("QUORRA_IMAGE", &image))?;
    let subnet = free_subnet()?;
    project.env = vec![
        ("QUORRA_IMAGE".to_owned(), image),
        ("QUORRA_SUBNET".to_owned(), subnet.clone()),
    ];
    // Empty ports: Docker picks free ones, read back below.
    for i in 1..=NODES {
        project
            .env
            .push((format!("QUORRA_N{i}_PORT"), String::new()));
    }
    run(project.compose().args(["up", "-d"]))?;
    let nodes = project.clients()?;

    // Up: every node ready, and n1 sees all five members up.
    let n1 = &nodes[0];
    TestCluster::eventually(Duration::from_secs(120), "five members up", || async {
        let Ok(a) = n1.get_path("/v1/cluster/members").await else {
            return false;
        };
        let v: Value = serde_json::from_slice(&a.body).unwrap_or(Value::Null);
        let up = v["members"]
            .as_array()
            .map(|m| m.iter().filter(|m| m["status"] == "up").count())
            .unwrap_or(0);
        up == NODES
    })
    .await?;
    for (i, n) in nodes.iter().enumerate() {
        let ready = n.get_path("/ready").await?;
        anyhow::ensure!(
            ready.status == 200,
            "n{} not ready: {}",
            i + 1,
            ready.text()
        );
    }

    // Writes through n1, n4 and n5 while n2 is cut off and n3 killed.
    let mut acked: Vec<(String, String)> = Vec::new();
    let mut attempted = 0;
    write_batch(&nodes, "calm", &mut acked, &mut attempted).await;
    let n2 = project.container("n2")?;
    let n3 = project.container("n3")?;
    run(Command::new("docker").args(["network", "disconnect", &project.network(), &n2]))?;
    write_batch(&nodes, "cut", &mut acked, &mut attempted).await;
    run(Command::new("docker").args(["kill", &n3]))?;
    write_batch(&nodes, "cut-and-killed", &mut acked, &mut attempted).await;
    // Heal: n2 back at its own address, n3 started again (starting a
    // running container, if the restart policy was first, is no error).
    run(Command::new("docker").args([
        "network",
        "connect",
        "--ip",
        &format!("{subnet}.12"),
        &project.network(),
        &n2,
    ]))?;
    run(Command::new("docker").args(["start", &n3]))?;
    anyhow::ensure!(
        acked.len() * 2 >= attempted,
        "too few writes acknowledged with one node cut off and one killed: {} of {attempted}",
        acked.len()
    );

    // A restarted or reconnected container is published on a new host
    // port: look them up again.
    let nodes = project.clients()?;

    // Every acknowledged write on each of its replicas, read directly;
    // hinted handoff and read repair get three minutes to get it there.
    let healed = Instant::now();
    let deadline = healed + Duration::from_secs(180);
    let mut gaps = missing(&nodes, &acked).await;
    eprintln!(
        "{} of {attempted} writes acknowledged; {} replica copies missing at the heal",
        acked.len(),
        gaps.len()
    );
    while !gaps.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        gaps = missing(&nodes, &acked).await;
    }
    eprintln!(
        "every replica complete {:?} after the heal",
        healed.elapsed()
    );
    anyhow::ensure!(
        gaps.is_empty(),
        "{} of {} acknowledged writes are missing on some replica after healing; e.g. {:?}",
        gaps.len(),
        acked.len(),
        gaps.iter().take(5).collect::<Vec<_>>()
    );
    Ok(())
}

/// Writes 30 new keys through n1, n4 and n5 in turn; records the
/// acknowledged ones.
async fn write_batch(
    nodes: &[Client],
    round: &str,
    acked: &mut Vec<(String, String)>,
    attempted: &mut usize,
) {
    for i in 0..30 {
        let key = format!("{round}-{i}");
        let value = format!("v-{round}-{i}");
        let via = &nodes[[0, 3, 4][i % 3]];
        *attempted += 1;
        if let Ok(a) = via.put(BUCKET, &key, value.clone(), None, "").await {
            if a.status == 204 {
                acked.push((key, value));
            }
        }
    }
}

/// The acknowledged writes some replica of their key lacks, each replica
/// read directly (`/v1/debug/replica`) on the node itself.
async fn missing(nodes: &[Client], acked: &[(String, String)]) -> BTreeSet<String> {
    let index =
        |id: &str| -> Option<usize> { id.strip_prefix('n')?.parse::<usize>().ok()?.checked_sub(1) };
    let mut gaps = BTreeSet::new();
    for (key, value) in acked {
        let located = nodes[0]
            .get_path(&format!("/v1/cluster/locate/{BUCKET}/{key}"))
            .await;
        let v: Value = located
            .ok()
            .and_then(|a| serde_json::from_slice(&a.body).ok())
            .unwrap_or(Value::Null);
        let prefs: Vec<String> = v["preference_list"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        if prefs.len() != 3 {
            gaps.insert(format!("{key}: preference list {prefs:?}"));
        }
        for id in prefs {
            let Some(node) = index(&id).and_then(|i| nodes.get(i)) else {
                gaps.insert(format!("{key}: unknown replica {id}"));
                continue;
            };
            let held = node
                .get_path(&format!("/v1/debug/replica/{BUCKET}/{key}"))
                .await
                .map(|a| a.text())
                .unwrap_or_default();
            if !held.contains(value.as_str()) {
                gaps.insert(format!("{key} on {id}"));
            }
        }
    }
    gaps
}
