//! `ring-tools repair [--partition P]`: anti-entropy on demand, with a
//! progress bar. One partition is repaired by its first replica, which
//! exchanges with every other replica; the whole cluster by every node
//! holding data, each over the partitions it holds. Progress is each
//! node's queue of requested exchanges draining (`/v1/cluster/status`,
//! `anti_entropy`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use quorra_client::admin::AdminClient;
use quorra_core::ring::Ring;
use serde_json::{json, Value};

use crate::cluster::member_urls;

const POLL: Duration = Duration::from_millis(250);

/// One node's repair.
struct Asked {
    url: String,
    queued: u64,
    base: Value,
}

fn counter(ae: &Value, name: &str) -> u64 {
    ae[name].as_u64().unwrap_or(0)
}

/// Runs the repair and waits for it, at most `timeout`.
pub async fn repair(
    admin: &AdminClient,
    partition: Option<u32>,
    timeout: Duration,
) -> anyhow::Result<(Value, String)> {
    let urls: BTreeMap<String, String> = member_urls(admin).await?.into_iter().collect();
    let layout = admin.layout().await?;
    let targets: Vec<String> = match partition {
        Some(p) => {
            let ring = Ring::build(&layout);
            anyhow::ensure!(
                p < ring.partitions(),
                "partition {p} does not exist: the ring has {} (0 to {})",
                ring.partitions(),
                ring.partitions() - 1
            );
            ring.order(p).take(1).map(str::to_owned).collect()
        }
        None => layout.roles.keys().cloned().collect(),
    };
    // Every address first: a repair is queued on all nodes or on none.
    let mut addressed = Vec::new();
    for id in targets {
        let Some(url) = urls.get(&id) else {
            anyhow::bail!("{id} holds data but no node knows its address");
        };
        addressed.push((id, url.clone()));
    }
    let poll = admin.with_call_timeout(crate::cluster::STATUS_TIMEOUT);
    let mut asked: BTreeMap<String, Asked> = BTreeMap::new();
    for (id, url) in addressed {
        let url = &url;
        let node = admin.node(url);
        let base = node.status().await?["anti_entropy"].clone();
        let answer = node.repair(partition).await?;
        let queued = answer["partitions_queued"].as_u64().unwrap_or(0);
        asked.insert(
            id,
            Asked {
                url: url.clone(),
                queued,
                base,
            },
        );
    }
    let total: u64 = asked.values().map(|a| a.queued).sum();
    let bar = crate::output::progress_bar("repair", "partition exchanges", total);
    let started = Instant::now();
    loop {
        let mut done_all = true;
        let mut progress = 0;
        let mut rows = BTreeMap::new();
        for (id, a) in &asked {
            let ae = match a_status(&poll, &a.url).await {
                Some(ae) => ae,
                None => {
                    done_all = false;
                    continue;
                }
            };
            let delta = |name: &str| counter(&ae, name).saturating_sub(counter(&a.base, name));
            let finished = delta("exchanges") + delta("exchanges_failed");
            let requested = counter(&ae, "requested");
            let running = !ae["running"].is_null();
            let left = requested + u64::from(running && finished < a.queued);
            let done = requested == 0 && (!running || finished >= a.queued);
            done_all &= done;
            progress += a.queued.saturating_sub(left);
            rows.insert(
                id.clone(),
                json!({
                    "partitions": a.queued,
                    "exchanges": delta("exchanges"),
                    "failed": delta("exchanges_failed"),
                    "keys_fetched": delta("keys_fetched"),
                    "keys_pushed": delta("keys_pushed"),
                    "done": done,
                }),
            );
        }
        bar.set_position(progress.min(total));
        if done_all {
            bar.finish_and_clear();
            let answer = json!({
                "partition": partition,
                "seconds": started.elapsed().as_secs_f64(),
                "nodes": rows,
            });
            let text = repair_text(&answer);
            return Ok((answer, text));
        }
        if started.elapsed() > timeout {
            bar.abandon();
            anyhow::bail!(
                "the repair did not finish within {timeout:?}: {}",
                Value::from(serde_json::Map::from_iter(rows))
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn a_status(admin: &AdminClient, url: &str) -> Option<Value> {
    admin
        .node(url)
        .status()
        .await
        .ok()
        .map(|s| s["anti_entropy"].clone())
}

fn repair_text(a: &Value) -> String {
    let mut out = match a["partition"].as_u64() {
        Some(p) => format!("repaired partition {p}"),
        None => "repaired every partition".to_owned(),
    };
    let _ = writeln!(out, " in {:.1} s", a["seconds"].as_f64().unwrap_or(0.0));
    let _ = writeln!(
        out,
        "{:<10} {:>10} {:>9} {:>6} {:>8} {:>7}",
        "node", "partitions", "exchanges", "failed", "fetched", "pushed"
    );
    for (id, r) in a["nodes"].as_object().into_iter().flatten() {
        let n = |k: &str| r[k].as_u64().unwrap_or(0);
        let _ = writeln!(
            out,
            "{id:<10} {:>10} {:>9} {:>6} {:>8} {:>7}",
            n("partitions"),
            n("exchanges"),
            n("failed"),
            n("keys_fetched"),
            n("keys_pushed")
        );
    }
    out
}
