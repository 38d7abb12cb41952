//! A cluster forms once and never splits (issue R, item 4): nodes found it
//! together from their `initial_members`, a node never founds one alone, a
//! wiped node rejoins the cluster it was in, and a node of another cluster
//! is refused. Real node processes over real QUIC and HTTP.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use quorra_node::config::NodeConfig;
use quorra_node::net::certs::generate;
use quorra_tests::cluster::TestCluster;
use quorra_tests::http::Client;
use quorra_tests::{quorra_bin, NodeProcess};
use serde_json::Value;

const CONVERGE: Duration = Duration::from_secs(30);

/// Long enough for many gossip rounds of the test timings (a push-pull
/// every 500 ms): what has not happened by then is not about to.
const WINDOW: Duration = Duration::from_secs(4);

async fn status(url: &str) -> Value {
    let Ok(a) = Client::new(url).get_path("/v1/cluster/status").await else {
        return Value::Null;
    };
    serde_json::from_slice(&a.body).unwrap_or(Value::Null)
}

async fn member_ids(url: &str) -> Vec<String> {
    let Ok(a) = Client::new(url).get_path("/v1/cluster/members").await else {
        return vec![];
    };
    let v: Value = serde_json::from_slice(&a.body).unwrap_or(Value::Null);
    v["members"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| m["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Asserts for the whole `WINDOW` that the node at `url` has no cluster and
/// refuses writes: it must not found one on its own.
async fn stays_unjoined(url: &str, what: &str) {
    let c = Client::new(url);
    let start = Instant::now();
    let mut i = 0;
    while start.elapsed() < WINDOW {
        let s = status(url).await;
        assert_eq!(s["joined"], false, "{what}: joined a cluster: {s}");
        assert_eq!(s["cluster_id"], Value::Null, "{what}: {s}");
        let put = c
            .put("b", &format!("alone-{i}"), "v", None, "")
            .await
            .expect("put");
        assert_eq!(
            put.status,
            503,
            "{what}: a write was served: {}",
            put.text()
        );
        assert!(
            put.text().contains("not in a cluster yet"),
            "{}",
            put.text()
        );
        i += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn free_peer_addr() -> SocketAddr {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.local_addr().expect("addr")
}

fn config(id: &str, dir: &Path, certs: &Path, initial: &[&str]) -> NodeConfig {
    let mut c = TestCluster::node_config(id, &dir.join(id), certs);
    c.initial_members = initial.iter().map(|s| s.to_string()).collect();
    c
}

/// Waits until every node in `urls` has joined one cluster and sees
/// `members` members up; returns the cluster id.
async fn one_cluster(urls: &[String], members: usize) -> String {
    let start = Instant::now();
    loop {
        let mut ids = Vec::new();
        let mut ok = true;
        for url in urls {
            let s = status(url).await;
            ids.push(s["cluster_id"].as_str().map(str::to_owned));
            let a = Client::new(url).get_path("/v1/cluster/members").await;
            let up = a
                .map(|a| a.text().matches(r#""status":"up""#).count())
                .unwrap_or(0);
            ok &= s["joined"] == true && up == members;
        }
        if ok && ids.iter().all(|i| i.is_some() && *i == ids[0]) {
            return ids[0].clone().unwrap_or_default();
        }
        assert!(
            start.elapsed() < CONVERGE,
            "no single cluster of {members}: ids {ids:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A node listed among its own seeds (the same seed list on every node)
/// used to found a cluster alone, ready at once, serving every write with
/// its quorums capped to 1. Now an initial member waits for the others, and
/// the three found one cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_members_found_one_cluster_and_none_serves_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    let ids = ["n1", "n2", "n3"];
    generate(
        &certs,
        &ids.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
    )
    .expect("certs");
    let n1_addr = free_peer_addr();
    let mut c1 = config("n1", dir.path(), &certs, &ids);
    c1.peer_addr = Some(n1_addr);
    c1.seeds = vec![n1_addr];
    let n1 = NodeProcess::start(&quorra_bin!(), &dir.path().join("n1"), c1).expect("n1");
    stays_unjoined(&n1.url, "n1 alone").await;

    let mut nodes = vec![n1];
    for id in ["n2", "n3"] {
        let mut c = config(id, dir.path(), &certs, &ids);
        c.seeds = vec![n1_addr];
        nodes.push(NodeProcess::start(&quorra_bin!(), &dir.path().join(id), c).expect("node"));
    }
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    let cluster = one_cluster(&urls, 3).await;
    let s = status(&urls[0]).await;
    assert_eq!(s["layout"]["members"], serde_json::json!(ids), "{s}");
    assert_eq!(cluster.len(), 32);
    let put = Client::new(&urls[0])
        .put("b", "k", "v", None, "?w=3")
        .await
        .expect("put");
    assert_eq!(put.status, 204, "{}", put.text());
    let got = Client::new(&urls[2]).get("b", "k").await.expect("get");
    assert_eq!((got.status, got.text()), (200, "v".to_owned()));
}

/// A wiped initial member used to found a new cluster alone and serve
/// writes. Now it never founds: it waits for its cluster and rejoins it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_rejoins_its_cluster_and_never_founds_one() {
    let mut c = TestCluster::start(&quorra_bin!(), 3).expect("cluster");
    c.wait_converged(CONVERGE).await.expect("converged");
    let urls: Vec<String> = c.nodes.iter().map(|n| n.url.clone()).collect();
    let cluster = one_cluster(&urls, 3).await;
    let put = c
        .client(1)
        .put("b", "kept", "before", None, "?w=3")
        .await
        .expect("put");
    assert_eq!(put.status, 204, "{}", put.text());

    for n in &mut c.nodes {
        n.terminate().expect("stop");
    }
    // n1 (the node everyone else has as its seed, with no seeds itself)
    // loses its disk and comes back alone.
    std::fs::remove_dir_all(&c.nodes[0].data_dir).expect("wipe n1");
    c.nodes[0].restart().expect("restart n1");
    let n1 = c.nodes[0].url.clone();
    stays_unjoined(&n1, "wiped n1").await;

    for i in [1, 2] {
        c.nodes[i].restart().expect("restart");
    }
    let urls: Vec<String> = c.nodes.iter().map(|n| n.url.clone()).collect();
    assert_eq!(one_cluster(&urls, 3).await, cluster, "the same cluster");
    let got = c.client(0).get("b", "kept").await.expect("get");
    assert_eq!((got.status, got.text()), (200, "before".to_owned()));
    assert!(
        c.nodes[0].log_text().contains("joined the cluster"),
        "{}",
        c.nodes[0].log_tail()
    );
}

/// A node of another cluster (same CA, its seeds pointing here) used to
/// merge into this cluster's ring. Now both sides refuse each other's gossip
/// and say so in their logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_of_another_cluster_is_refused_with_a_clear_log_line() {
    let c = TestCluster::start(&quorra_bin!(), 2).expect("cluster");
    c.wait_converged(CONVERGE).await.expect("converged");
    generate(&c.certs, &["x".into()]).expect("cert for x");
    let mut cx = config("x", c.dir(), &c.certs, &["x"]);
    cx.seeds = vec![c.nodes[0].peer.expect("n1 peer")];
    let x = NodeProcess::start(&quorra_bin!(), &c.dir().join("x"), cx).expect("x");

    let refused = |url: String| async move {
        status(&url).await["foreign_gossip_refused"]
            .as_u64()
            .is_some_and(|n| n > 0)
    };
    let (n1, xu) = (c.nodes[0].url.clone(), x.url.clone());
    TestCluster::eventually(CONVERGE, "n1 refuses x", || refused(n1.clone()))
        .await
        .expect("n1 refused x's gossip");
    TestCluster::eventually(CONVERGE, "x refuses n1", || refused(xu.clone()))
        .await
        .expect("x refused n1's answer");
    // Neither side took the other in, for many rounds.
    let start = Instant::now();
    while start.elapsed() < WINDOW {
        for i in 0..2 {
            let ids = member_ids(&c.nodes[i].url).await;
            assert!(
                !ids.contains(&"x".to_owned()),
                "n{} took x in: {ids:?}",
                i + 1
            );
        }
        assert_eq!(member_ids(&x.url).await, vec!["x".to_owned()]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (ours, theirs) = (status(&c.nodes[0].url).await, status(&x.url).await);
    assert_ne!(ours["cluster_id"], theirs["cluster_id"]);
    let log = c.nodes[0].log_text();
    let line = log
        .lines()
        .find(|l| l.contains("belongs to another cluster"))
        .unwrap_or_else(|| panic!("no log line on n1:\n{}", c.nodes[0].log_tail()));
    assert!(line.contains("node x"), "{line}");
    let theirs_id = theirs["cluster_id"].as_str().expect("x has a cluster");
    assert!(line.contains(theirs_id), "{line}");
}

/// Bucket properties are part of the cluster, founded from the initial
/// members' configuration: initial members configured with different ones
/// (here one resolves conflicts last-write-wins, the other keeps siblings)
/// do not found; each says why, naming the other, and serves nothing. (A
/// node that joins later follows the cluster's: the layout test's.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_members_with_different_bucket_properties_found_nothing() {
    let c = TestCluster::start_with(&quorra_bin!(), 2, |i, cfg| {
        if i == 1 {
            cfg.bucket_defaults.conflict_mode = quorra_core::ConflictMode::Lww;
        }
    })
    .expect("cluster");
    for (i, other) in [(0, "n2"), (1, "n1")] {
        let node = &c.nodes[i];
        TestCluster::eventually(CONVERGE, "a log line naming the other", || async move {
            node.log_text().lines().any(|l| {
                l.contains(&format!(
                    "not founding: initial member {other} is configured with other bucket properties"
                ))
            })
        })
        .await
        .unwrap_or_else(|e| panic!("{e}:\n{}", node.log_tail()));
    }
    stays_unjoined(&c.nodes[0].url, "n1").await;
    stays_unjoined(&c.nodes[1].url, "n2").await;
}
