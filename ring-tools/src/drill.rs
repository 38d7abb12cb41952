//! `ring-tools drill`: the failover drill, built in.
//!
//! A steady workload runs against a live cluster through the client
//! library; one node is taken out (kill, pause or partition), held out,
//! brought back; the drill waits for the cluster to converge (every member
//! alive, no hint pending), then reads back every acknowledged write. It
//! reports the **RTO** (the longest window of client-visible errors, and
//! how many requests failed) and the **RPO** (acknowledged writes missing
//! after recovery: it must be 0), and draws latency and errors over time.
//!
//! It refuses to start without `--yes`: it takes a node of a live cluster
//! down on purpose.

pub mod faults;
pub mod report;
pub mod workload;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use quorra_client::admin::AdminClient;
use quorra_client::{Client, ClientConfig, Options, QuorumOverrides};
use serde_json::{json, Value};

use self::faults::{Fault, Provider};
use self::report::Report;
use self::workload::{Load, Record};

/// The drill's settings.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The node taken out.
    pub node: String,
    /// How.
    pub fault: Fault,
    /// By what.
    pub provider: Provider,
    /// The client certificate dir and name.
    pub certs: std::path::PathBuf,
    /// The certificate's name.
    pub name: String,
    /// Load before the fault.
    pub before: Duration,
    /// How long the node stays out.
    pub down_for: Duration,
    /// Load after the node is back.
    pub after: Duration,
    /// The workload.
    pub load: Load,
    /// The longest wait for the node to serve again and the cluster to
    /// converge.
    pub converge_timeout: Duration,
    /// Where the plot goes (none: no plot).
    pub plot: Option<std::path::PathBuf>,
}

/// Polls every `POLL` while waiting for the cluster.
const POLL: Duration = Duration::from_millis(200);
/// The longest one poll may take.
const POLL_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs the drill.
pub async fn run(admin: &AdminClient, plan: Plan) -> anyhow::Result<(Value, String)> {
    let members = crate::cluster::members(admin).await?;
    let Some(target_url) = members
        .iter()
        .find(|m| m.id == plan.node)
        .map(|m| m.url.clone())
    else {
        anyhow::bail!("{} is not a member of this cluster", plan.node);
    };
    let seeds: Vec<SocketAddr> = members
        .iter()
        .filter(|m| m.id != plan.node)
        .filter_map(|m| m.peer)
        .collect();
    anyhow::ensure!(!seeds.is_empty(), "no other member has a peer address");
    let urls: Vec<String> = members.iter().map(|m| m.url.clone()).collect();
    let target_addr = target_url.trim_start_matches("http://");
    plan.provider.check(&plan.node, target_addr)?;
    let mut config = ClientConfig::new(seeds, plan.certs.clone(), plan.name.clone());
    config.timeout = Duration::from_secs(1);
    config.attempts = 3;
    let client = Client::connect(config).await?;
    // Polls are bounded per call: a paused node costs seconds, not the
    // admin timeout.
    let poll = admin.with_call_timeout(POLL_TIMEOUT);

    let epoch = Instant::now();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let workers = workload::start(client.clone(), plan.load.clone(), epoch, stop_rx);
    let ms = |t: Instant| t.duration_since(epoch).as_secs_f64() * 1e3;
    let phases = async {
        tokio::time::sleep(plan.before).await;
        let down_at = Instant::now();
        plan.provider.down(&plan.node, plan.fault).await?;
        tokio::time::sleep(plan.down_for).await;
        let up_at = Instant::now();
        plan.provider.up(&plan.node, plan.fault).await?;
        let serving_at = wait_serving(&poll, &target_url, plan.converge_timeout).await?;
        tokio::time::sleep(plan.after).await;
        anyhow::Ok((down_at, up_at, serving_at))
    };
    let outcome = tokio::select! {
        o = phases => o,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    let _ = stop_tx.send(true);
    let (down_at, up_at, serving_at) = match outcome {
        Ok(t) => t,
        Err(e) => {
            // Whatever happened, the node is not left out.
            plan.provider.release(&plan.node, plan.fault).await;
            let _ = workers.await;
            return Err(e);
        }
    };
    let record: Record = workers.await?;
    let mut warnings = Vec::new();
    let converged_at = match converge(&poll, &urls, plan.converge_timeout).await {
        Ok(t) => Some(t),
        Err(e) => {
            warnings.push(e.to_string());
            None
        }
    };
    let layout = admin.layout().await?;
    // Every replica answers the read-back (capped to the nodes holding
    // data, as the nodes cap it).
    let n_val = crate::describe::n_val_for(&layout, Some(&plan.load.bucket))
        .min(layout.roles.len())
        .clamp(1, usize::from(u8::MAX));
    let (missing, unreadable) =
        read_back(&client, &plan.load.bucket, &record.acked, n_val as u8).await;
    let mut report = Report::new(
        &plan,
        &record,
        [ms(down_at), ms(up_at), ms(serving_at)],
        converged_at.map(ms),
        missing,
        unreadable,
    );
    report.warnings = warnings;
    if let Some(path) = &plan.plot {
        if let Err(e) = report::plot(path, &record.samples, &report) {
            report.warnings.push(e.to_string());
        }
    }
    let answer = serde_json::to_value(&report)?;
    let text = report.text();
    Ok((answer, text))
}

/// Calls `check` every [`POLL`] until it says done (`Ok`), at most
/// `timeout`; the error names `what` and the last reason `check` gave.
async fn poll_until<F, Fut>(timeout: Duration, what: &str, mut check: F) -> anyhow::Result<Instant>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let started = Instant::now();
    loop {
        let why = match check().await {
            Ok(()) => return Ok(Instant::now()),
            Err(why) => why,
        };
        anyhow::ensure!(
            started.elapsed() < timeout,
            "{what} not within {timeout:?}: {why}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until the node at `url` answers its status again.
async fn wait_serving(
    admin: &AdminClient,
    url: &str,
    timeout: Duration,
) -> anyhow::Result<Instant> {
    let node = admin.node(url);
    poll_until(timeout, &format!("{url} serving again"), || async {
        node.status().await.map(drop).map_err(|e| e.to_string())
    })
    .await
}

/// Waits until every node answers, sees no member unreachable, and holds
/// no hint.
async fn converge(
    admin: &AdminClient,
    urls: &[String],
    timeout: Duration,
) -> anyhow::Result<Instant> {
    poll_until(timeout, "the cluster converging", || async {
        for url in urls {
            let s = admin.node(url).status().await.map_err(|e| e.to_string())?;
            let quiet = s["hints_pending"] == 0
                && s["unreachable"].as_array().is_some_and(Vec::is_empty);
            if !quiet {
                return Err(json!({"node": s["node"], "hints_pending": s["hints_pending"], "unreachable": s["unreachable"]}).to_string());
            }
        }
        Ok(())
    })
    .await
}

/// Reads every acknowledged write back from all its replicas (`r =
/// n_val`): the keys whose value is missing, and those that could not be
/// read at all (not counted as lost, but reported).
async fn read_back(
    client: &Client,
    bucket: &str,
    acked: &[(String, Vec<u8>)],
    n_val: u8,
) -> (Vec<String>, Vec<String>) {
    use futures::stream::{self, StreamExt};
    let opts = Options {
        quorum: QuorumOverrides {
            r: Some(n_val),
            ..QuorumOverrides::default()
        },
        timeout: Some(Duration::from_secs(5)),
    };
    let results: Vec<(String, Option<bool>)> = stream::iter(acked)
        .map(|(key, value)| {
            let opts = &opts;
            async move {
                for _ in 0..3 {
                    if let Ok(f) = client.get_with(bucket, key, opts).await {
                        let found = f.values.iter().any(|v| v.bytes == *value);
                        return (key.clone(), Some(found));
                    }
                }
                (key.clone(), None)
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let missing = results
        .iter()
        .filter(|(_, r)| *r == Some(false))
        .map(|(k, _)| k.clone())
        .collect();
    let unreadable = results
        .iter()
        .filter(|(_, r)| r.is_none())
        .map(|(k, _)| k.clone())
        .collect();
    (missing, unreadable)
}
