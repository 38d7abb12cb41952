//! Jepsen-style workloads against real nodes: each client is bound to one
//! node and runs, over HTTP, the set workload (read the key's JSON set,
//! merge the siblings, add an element, write back with the context) and the
//! register workload (read, write a fresh value with the context, or now and
//! then delete with it). Every
//! operation lands in a [`History`] that `quorra_sim::check` judges after the
//! faults heal: the same checker the simulator uses.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use quorra_sim::check::{check, FinalRead, Report};
use quorra_sim::history::{decode, encode, History, Op, OpKind, Outcome};
use quorra_sim::rng::Rng;

use crate::cluster::TestCluster;
use crate::http::{Answer, Client};

/// The bucket the workloads use.
pub const BUCKET: &str = "jepsen";

/// A client's pause after an operation that did not succeed.
pub const FAILURE_BACKOFF: Duration = Duration::from_millis(50);

/// How long one client request may take before its outcome is unknown.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(3);

/// The keys of `keys` set keys and `keys` register keys.
pub fn key_names(keys: usize) -> Vec<String> {
    (0..keys)
        .flat_map(|k| [format!("set-{k}"), format!("reg-{k}")])
        .collect()
}

/// Runs `clients` clients (client `c` on node `c % urls.len()`) until
/// `until`; times are ms since `t0`.
pub async fn run_clients(
    urls: &[String],
    clients: usize,
    keys: usize,
    seed: u64,
    t0: Instant,
    until: Instant,
) -> History {
    let mut tasks = Vec::new();
    for c in 0..clients {
        let http = Client::with_timeout(&urls[c % urls.len()], CLIENT_TIMEOUT);
        let mut rng = Rng::new(seed ^ (c as u64 + 1).wrapping_mul(0x9e37_79b9));
        tasks.push(tokio::spawn(async move {
            let mut ops = Vec::new();
            let mut n = 0u64;
            while Instant::now() < until {
                n += 1;
                let unique = (c as u64 + 1) * 1_000_000 + n;
                let register = rng.below(2) == 1;
                let delete = register && rng.below(8) == 0;
                let k = rng.below(keys as u64);
                let key = if register {
                    format!("reg-{k}")
                } else {
                    format!("set-{k}")
                };
                let op = one_op(&http, c, key, register, delete, unique, t0).await;
                if op.outcome != Outcome::Ok {
                    // Pace a client whose node is down or cut off, as a
                    // real one would back off, instead of spinning.
                    tokio::time::sleep(FAILURE_BACKOFF).await;
                }
                ops.push(op);
            }
            ops
        }));
    }
    let mut history = History::default();
    for t in tasks {
        if let Ok(ops) = t.await {
            for op in ops {
                history.push(op);
            }
        }
    }
    history.ops.sort_by_key(|o| o.completed_ms);
    history
}

fn ms_since(t0: Instant) -> u64 {
    t0.elapsed().as_millis() as u64
}

/// The siblings' decoded values of a GET answer, or why it failed.
pub fn siblings(a: &Answer) -> Result<Vec<Option<Vec<u64>>>, String> {
    match a.status {
        200 | 300 => Ok(a.values().iter().map(|v| decode(v.as_bytes())).collect()),
        404 => Ok(Vec::new()),
        s => Err(format!("{s} {}", a.error_code().unwrap_or_default())),
    }
}

async fn one_op(
    http: &Client,
    client: usize,
    key: String,
    register: bool,
    delete: bool,
    unique: u64,
    t0: Instant,
) -> Op {
    let invoked_ms = ms_since(t0);
    let done = |kind: OpKind, outcome: Outcome| Op {
        client,
        key: key.clone(),
        kind,
        invoked_ms,
        completed_ms: ms_since(t0),
        outcome,
    };
    let kind_with = |observed: Vec<u64>| {
        if register {
            OpKind::RegWrite {
                value: unique,
                observed,
            }
        } else {
            OpKind::SetAdd { element: unique }
        }
    };
    let read = match http.get(BUCKET, &key).await {
        Ok(a) => a,
        // Nothing was written.
        Err(_) => return done(kind_with(Vec::new()), Outcome::Fail),
    };
    let Ok(seen) = siblings(&read) else {
        return done(kind_with(Vec::new()), Outcome::Fail);
    };
    let observed: Vec<u64> = seen.iter().flatten().flatten().copied().collect();
    // Deletes only with the context of a read that saw something: a blind
    // delete removes what the node's own quorum read sees, which the
    // history could not account for.
    if delete && read.context.is_some() && !observed.is_empty() {
        let outcome = outcome_of(http.delete(BUCKET, &key, read.context.as_deref()).await);
        return done(OpKind::RegDelete { observed }, outcome);
    }
    let value = if register {
        encode(&BTreeSet::from([unique]))
    } else {
        let mut set: BTreeSet<u64> = observed.iter().copied().collect();
        set.insert(unique);
        encode(&set)
    };
    let outcome = outcome_of(
        http.put(BUCKET, &key, value, read.context.as_deref(), "")
            .await,
    );
    done(kind_with(observed), outcome)
}

/// What a write's answer says about whether it took effect.
fn outcome_of(answer: anyhow::Result<Answer>) -> Outcome {
    match answer {
        Ok(a) if a.status == 200 || a.status == 204 => Outcome::Ok,
        // Refused before anything was stored (bad request, sibling limit).
        Ok(a) if (400..500).contains(&a.status) => Outcome::Fail,
        // 503 quorum_unavailable and the like: the coordinator may have
        // stored it, and replication carries on.
        Ok(_) => Outcome::Unknown,
        Err(e) => {
            let refused = e
                .downcast_ref::<reqwest::Error>()
                .is_some_and(reqwest::Error::is_connect);
            if refused {
                Outcome::Fail
            } else {
                Outcome::Unknown
            }
        }
    }
}

/// Reads every key through every node (with `r`, or the bucket's default).
pub async fn final_reads(cluster: &TestCluster, keys: usize, r: Option<u8>) -> Vec<FinalRead> {
    let query = r.map(|r| format!("?r={r}")).unwrap_or_default();
    let mut out = Vec::new();
    for (i, node) in cluster.nodes.iter().enumerate() {
        for key in key_names(keys) {
            let result = match cluster
                .client(i)
                .get_path(&format!("/v1/kv/{BUCKET}/{key}{query}"))
                .await
            {
                Ok(a) => siblings(&a),
                Err(e) => Err(e.to_string()),
            };
            out.push(FinalRead {
                via: node.id.clone(),
                key,
                result,
            });
        }
    }
    out
}

/// After the faults: waits until every node sees every node up and has
/// delivered every hint, then reads every key through every node (with `r`,
/// or the bucket's default) and checks `history` against what they return.
pub async fn settle_and_check(
    cluster: &TestCluster,
    history: &History,
    keys: usize,
    r: Option<u8>,
) -> anyhow::Result<Report> {
    cluster.wait_converged(Duration::from_secs(60)).await?;
    TestCluster::eventually(Duration::from_secs(60), "every hint delivered", || async {
        for i in 0..cluster.nodes.len() {
            if cluster.hints_pending(i).await != Some(0) {
                return false;
            }
        }
        true
    })
    .await?;
    let finals = final_reads(cluster, keys, r).await;
    Ok(check(history, &finals))
}
