//! `ring-tools` against real clusters: its offline ring is the node's ring
//! (1,000 keys located alike, from a description and from the live
//! layout), `status` shows every member, `plan`, `draw`, `explain` and
//! `repair` work on a live cluster, and the failover drill kills a
//! dev-cluster node under load and reports RPO 0 and an RTO.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use quorra_client::admin::AdminClient;
use quorra_core::ring::Ring;
use quorra_ring_tools::describe::{found, numbered, Params};
use quorra_ring_tools::locate::locate;
use quorra_tests::cluster::TestCluster;
use quorra_tests::{quorra_bin, ring_tools_bin, DevCluster};
use serde_json::Value;

const PARTITIONS: u32 = 64;

/// `ring-tools --url URL ARGS...`: stdout, or a panic with stderr.
fn ring_tools(url: &str, args: &[&str]) -> String {
    quorra_tests::ring_tools(&ring_tools_bin!(), url, args)
}

fn json(url: &str, args: &[&str]) -> Value {
    let all: Vec<&str> = ["--json"].iter().chain(args).copied().collect();
    serde_json::from_str(&ring_tools(url, &all)).expect("JSON answer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ring_tools_computes_the_nodes_ring_and_shows_the_live_cluster() {
    let c = TestCluster::start_with(&quorra_bin!(), 3, |_, cfg| cfg.partitions = PARTITIONS)
        .expect("cluster");
    c.wait_converged(Duration::from_secs(30))
        .await
        .expect("converged");
    let n1 = c.nodes[0].url.clone();

    // The live layout through the client library, and the same cluster
    // described offline: both place 1,000 keys exactly where the node does.
    let live = AdminClient::new([n1.clone()])
        .expect("admin")
        .layout()
        .await
        .expect("layout");
    let described = found(
        &numbered(1, 3),
        Params {
            partitions: PARTITIONS,
            ..Params::default()
        },
    )
    .expect("described");
    let (live_ring, described_ring) = (Ring::build(&live), Ring::build(&described));
    for i in 0..1_000 {
        let (bucket, key) = (format!("b{}", i % 7), format!("key-{i}"));
        let (p, prefs, fallbacks) = c.placement(&bucket, &key).await.expect("node locate");
        for (what, layout, ring) in [
            ("live", &live, &live_ring),
            ("described", &described, &described_ring),
        ] {
            let l = locate(layout, ring, &bucket, &key);
            assert_eq!(
                (u64::from(l.partition), &l.preference_list, &l.fallbacks),
                (p, &prefs, &fallbacks),
                "{what} layout places {bucket}/{key} elsewhere than the node"
            );
        }
    }
    // The binary says the same, offline and online.
    let (p, prefs, _) = c.placement("users", "alice").await.expect("locate");
    for args in [
        vec!["locate", "users", "alice"],
        vec![
            "locate",
            "--nodes",
            "3",
            "--partitions",
            "64",
            "users",
            "alice",
        ],
    ] {
        let v = json(&n1, &args);
        assert_eq!(v["partition"], p, "{args:?}");
        assert_eq!(v["preference_list"], serde_json::json!(prefs), "{args:?}");
    }

    // plan on the live layout: every slot counted.
    let plan = json(&n1, &["plan"]);
    assert_eq!(plan["ownership"]["slots"], PARTITIONS * 3, "{plan}");
    assert_eq!(plan["ownership"]["nodes"].as_array().map(Vec::len), Some(3));

    // status shows every member, each answering, on one layout version.
    let text = ring_tools(&n1, &["status"]);
    for id in ["n1", "n2", "n3"] {
        let line = text
            .lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("no line for {id}:\n{text}"));
        assert!(line.split_whitespace().nth(1) == Some("up"), "{line}");
    }
    let status = json(&n1, &["status"]);
    let members = status["members"].as_array().expect("members");
    assert_eq!(members.len(), 3, "{status}");
    assert!(members
        .iter()
        .all(|m| m["answered"] == true && m["layout_version"] == 1));

    // draw: a valid picture of every wedge.
    let svg = c.dir().join("ring.svg");
    ring_tools(&n1, &["draw", "--out", svg.to_str().expect("path")]);
    let doc = std::fs::read_to_string(&svg).expect("svg");
    assert!(doc.starts_with("<svg"), "{}", &doc[..80.min(doc.len())]);
    assert_eq!(doc.matches(r#"class="partition""#).count(), 64 * 3);

    // explain: a written key is the same on every replica.
    let put = c
        .client(0)
        .put("users", "alice", "hello", None, "")
        .await
        .expect("put");
    assert!(put.status < 300, "{}", put.text());
    let why = ring_tools(&n1, &["explain", "users", "alice"]);
    assert!(
        why.contains("every replica holds the same version"),
        "{why}"
    );

    // repair of the key's partition: its first replica exchanges with the
    // others and the repair finishes.
    let repaired = json(&n1, &["repair", "--partition", &p.to_string()]);
    let nodes = repaired["nodes"].as_object().expect("nodes");
    assert_eq!(nodes.len(), 1, "{repaired}");
    assert!(
        nodes
            .values()
            .all(|n| n["done"] == true && n["exchanges"].as_u64() >= Some(1)),
        "{repaired}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drill_kills_a_node_under_load_and_reports_rpo_zero_and_an_rto() {
    let dir = tempfile::tempdir().expect("dir");
    let dev = DevCluster::start(&quorra_bin!(), dir.path(), 3).expect("dev cluster");
    let url = dev.urls[0].clone();
    let dev_dir = dir.path().to_str().expect("path").to_owned();
    let plot = dir.path().join("drill.svg");

    // Without --yes it refuses and touches nothing.
    let refused = Command::new(ring_tools_bin!())
        .args([
            "--url",
            &url,
            "drill",
            "--node",
            "n2",
            "--dev-cluster",
            &dev_dir,
        ])
        .output()
        .expect("run");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--yes"));

    let pid_before = std::fs::read_to_string(dir.path().join("n2/node.pid")).expect("pid");
    let report = json(
        &url,
        &[
            "drill",
            "--yes",
            "--node",
            "n2",
            "--fault",
            "kill",
            "--dev-cluster",
            &dev_dir,
            "--before",
            "2",
            "--down",
            "4",
            "--after",
            "2",
            "--rate",
            "100",
            "--workers",
            "4",
            "--r",
            "2",
            "--w",
            "2",
            "--plot",
            plot.to_str().expect("path"),
        ],
    );
    println!("drill: {report:#}");
    assert_eq!(report["rpo"], 0, "acknowledged writes lost: {report}");
    assert!(report["writes_acked"].as_u64() > Some(100), "{report}");
    // Load ran while n2 was out, and with n=3, w=2 the other two kept
    // serving: clients saw errors, if any, for less than the outage.
    assert!(
        report["latency"]["during"]["requests"].as_u64() > Some(50),
        "{report}"
    );
    let rto = report["rto_ms"].as_f64().expect("rto");
    assert!(
        rto < 4_000.0,
        "errors for {rto} ms of a 4 s outage: {report}"
    );
    assert_eq!(report["unreadable"], 0, "{report}");
    assert_eq!(report["warnings"], serde_json::json!([]), "{report}");
    let t = &report["timeline_ms"];
    let at = |k: &str| t[k].as_f64().unwrap_or(f64::NAN);
    assert!(
        at("down") < at("up") && at("up") <= at("serving") && at("serving") <= at("converged"),
        "{report}"
    );
    // n2 really died and came back as a new process; nothing holds it.
    let old_pid: i32 = pid_before.trim().parse().expect("pid");
    assert!(
        !Path::new(&format!("/proc/{old_pid}")).exists(),
        "the old n2 still runs"
    );
    let pid_after = std::fs::read_to_string(dir.path().join("n2/node.pid")).expect("pid");
    assert_ne!(pid_before, pid_after, "n2 was not restarted");
    assert!(
        !dir.path().join("n2/hold").exists(),
        "the hold file is left"
    );
    let plot = std::fs::read_to_string(&plot).expect("plot");
    assert!(plot.contains("<svg"), "the plot is an SVG");
}
