//! The Rust client library against a real 3-node cluster: token-aware
//! routing (checked by the nodes' own counters), retries through a node
//! kill, and sibling resolution under concurrent writers.

use std::collections::BTreeSet;
use std::time::Duration;

use quorra_client::{Client, Options, QuorumOverrides};
use quorra_node::config::BucketOverrides;
use quorra_tests::cluster::TestCluster;
use quorra_tests::quorra_bin;

const CONVERGE: Duration = Duration::from_secs(20);

async fn client_for(c: &TestCluster, name: &str) -> Client {
    c.quic_client(name, Some(Duration::from_secs(1))).await
}

/// Sum over the nodes of a counter line (`name{labels}`) in /metrics.
async fn counter(c: &TestCluster, series: &str) -> u64 {
    let mut total = 0;
    for i in 0..c.nodes.len() {
        if c.nodes[i].pid().is_none() {
            continue;
        }
        let text = c
            .client(i)
            .get_path("/metrics")
            .await
            .expect("metrics")
            .text();
        total += text
            .lines()
            .filter(|l| l.starts_with(series))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64;
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puts_go_straight_to_a_replica_of_the_key() {
    // One replica per key makes a wrong guess visible on 2 of 3 nodes.
    let c = TestCluster::start_with(&quorra_bin!(), 3, |_, cfg| {
        cfg.buckets.insert(
            "one".into(),
            BucketOverrides {
                n_val: Some(1),
                r: Some(1),
                w: Some(1),
                ..BucketOverrides::default()
            },
        );
    })
    .expect("cluster");
    c.wait_converged(CONVERGE).await.expect("converged");
    let client = client_for(&c, "app").await;
    for i in 0..30 {
        client
            .put("one", format!("k{i}"), format!("v{i}"), None)
            .await
            .expect("put");
    }
    assert_eq!(
        counter(&c, r#"quorra_client_writes_total{at="replica"}"#).await,
        30
    );
    assert_eq!(
        counter(&c, r#"quorra_client_writes_total{at="other"}"#).await,
        0
    );
    assert_eq!(counter(&c, "quorra_forwarded_writes_total").await, 0);
    for i in 0..30 {
        let got = client.get("one", format!("k{i}")).await.expect("get");
        assert_eq!(got.values.len(), 1);
        assert_eq!(got.values[0].bytes, format!("v{i}").into_bytes());
    }
    // Control: the same writes through one node over HTTP are forwarded, so
    // the counters above can tell the difference.
    for i in 0..30 {
        let r = c
            .client(0)
            .put("one", &format!("h{i}"), "x", None, "")
            .await
            .expect("http put");
        assert_eq!(r.status, 204);
    }
    assert!(counter(&c, "quorra_forwarded_writes_total").await > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_costs_no_operation_with_retries_on() {
    let mut c = TestCluster::start(&quorra_bin!(), 3).expect("cluster");
    c.wait_converged(CONVERGE).await.expect("converged");
    let client = client_for(&c, "worker").await;
    let opts = Options {
        quorum: QuorumOverrides {
            r: Some(2),
            w: Some(2),
            ..QuorumOverrides::default()
        },
        timeout: None,
    };
    // Four workers, 25 put+get pairs each; n3 is killed once 20 pairs are
    // done, with operations in flight to it.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (kill_tx, kill_rx) = tokio::sync::oneshot::channel::<()>();
    let kill_tx = std::sync::Arc::new(std::sync::Mutex::new(Some(kill_tx)));
    let mut workers = Vec::new();
    for w in 0..4 {
        let (client, done, kill_tx) = (client.clone(), done.clone(), kill_tx.clone());
        workers.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            let mut failed = Vec::new();
            for i in 0..25 {
                let key = format!("w{w}-{i}");
                match client
                    .put_with("load", &key, key.clone(), "text/plain", None, &opts)
                    .await
                {
                    Ok(_) => acknowledged.push(key.clone()),
                    Err(e) => failed.push(format!("put {key}: {e}")),
                }
                if let Err(e) = client.get_with("load", &key, &opts).await {
                    failed.push(format!("get {key}: {e}"));
                }
                if done.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == 20 {
                    if let Some(tx) = kill_tx.lock().expect("lock").take() {
                        let _ = tx.send(());
                    }
                }
            }
            (acknowledged, failed)
        }));
    }
    kill_rx.await.expect("kill signal");
    c.nodes[2].kill9();
    let mut acknowledged = Vec::new();
    let mut failed = Vec::new();
    for w in workers {
        let (a, f) = w.await.expect("worker");
        acknowledged.extend(a);
        failed.extend(f);
    }
    assert!(failed.is_empty(), "operations lost to the kill: {failed:?}");
    assert_eq!(acknowledged.len(), 100);
    for key in &acknowledged {
        let got = client.get("load", key).await.expect("get");
        assert_eq!(got.values.len(), 1, "{key}");
        assert_eq!(got.values[0].bytes, key.clone().into_bytes());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_resolver_merges_siblings_under_concurrent_writers() {
    let c = TestCluster::start(&quorra_bin!(), 3).expect("cluster");
    c.wait_converged(CONVERGE).await.expect("converged");
    let client = client_for(&c, "writers").await;
    let union = |siblings: &[quorra_client::Value]| -> Vec<u8> {
        let set: BTreeSet<String> = siblings
            .iter()
            .flat_map(|v| {
                String::from_utf8_lossy(&v.bytes)
                    .split(',')
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .filter(|s| !s.is_empty())
            .collect();
        set.into_iter().collect::<Vec<_>>().join(",").into_bytes()
    };
    let mut tasks = Vec::new();
    for w in 0..4 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..10 {
                let item = format!("w{w}-{i}");
                client
                    .modify("sets", "shared", union, |cur| {
                        let mut s = cur
                            .map(|b| String::from_utf8_lossy(&b).into_owned())
                            .unwrap_or_default();
                        if !s.is_empty() {
                            s.push(',');
                        }
                        s.push_str(&item);
                        s.into_bytes()
                    })
                    .await
                    .expect("modify");
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    let got = client.get("sets", "shared").await.expect("get");
    let merged = String::from_utf8(union(&got.values)).expect("utf-8");
    let items: BTreeSet<&str> = merged.split(',').collect();
    for w in 0..4 {
        for i in 0..10 {
            assert!(
                items.contains(format!("w{w}-{i}").as_str()),
                "w{w}-{i} lost: {merged}"
            );
        }
    }
}

#[path = "../../client/examples/quickstart.rs"]
mod quickstart;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quickstart_example_runs() {
    let c = TestCluster::start(&quorra_bin!(), 3).expect("cluster");
    c.wait_converged(CONVERGE).await.expect("converged");
    let client = client_for(&c, "app").await;
    let lines = quickstart::run(&client).await.expect("example runs");
    assert_eq!(
        lines,
        [
            "read 1 value(s)",
            "after two concurrent writes: 2 siblings",
            "resolved: 1 value: apples,bread,milk,pears",
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmet_quorum_is_a_typed_error_with_counts() {
    let mut c = TestCluster::start(&quorra_bin!(), 3).expect("cluster");
    c.wait_converged(CONVERGE).await.expect("converged");
    let client = client_for(&c, "strict").await;
    c.nodes[2].kill9();
    c.wait_seen_as("n3", "down", Duration::from_secs(10))
        .await
        .expect("n3 down");
    let opts = Options {
        quorum: QuorumOverrides {
            w: Some(3),
            ..QuorumOverrides::default()
        },
        timeout: None,
    };
    match client
        .put_with("b", "k", "v", "text/plain", None, &opts)
        .await
    {
        Err(quorra_client::ClientError::QuorumUnavailable {
            counts: Some(s),
            message,
        }) => {
            assert_eq!(s.needs.total, 3, "{message}");
            assert!(s.got < 3, "{message}");
            assert!(message.contains("needed 3 replies"), "{message}");
        }
        other => panic!("expected a quorum error with counts, got {other:?}"),
    }
}
