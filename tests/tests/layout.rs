//! Layout changes on real nodes: a node that joins holds nothing until an
//! operator stages its join, looks at the plan and commits it (through
//! `quorra cluster`), and of two commits at once exactly one wins.

use std::process::Command;
use std::time::Duration;

use quorra_node::net::certs::generate;
use quorra_tests::cluster::TestCluster;
use quorra_tests::http::Client;
use quorra_tests::{quorra_bin, NodeProcess};
use serde_json::{json, Value};

const CONVERGE: Duration = Duration::from_secs(30);

async fn get_json(url: &str, path: &str) -> Value {
    let a = Client::new(url).get_path(path).await.expect("answer");
    serde_json::from_slice(&a.body).unwrap_or(Value::Null)
}

/// `quorra cluster --url URL ARGS...`: its stdout, or a panic with its
/// stderr.
fn cluster_cli(url: &str, args: &[&str]) -> String {
    let out = Command::new(quorra_bin!())
        .args(["cluster", "--url", url])
        .args(args)
        .output()
        .expect("run quorra cluster");
    assert!(
        out.status.success(),
        "quorra cluster {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Starts n4, not an initial member, seeded with n1; waits until it joined.
async fn start_fourth(c: &TestCluster) -> NodeProcess {
    generate(&c.certs, &["n4".into()]).expect("cert for n4");
    let mut config = TestCluster::node_config("n4", &c.dir().join("n4"), &c.certs);
    config.seeds = vec![c.nodes[0].peer.expect("n1 peer")];
    let n4 = NodeProcess::start(&quorra_bin!(), &c.dir().join("n4"), config).expect("n4");
    let url = n4.url.clone();
    TestCluster::eventually(CONVERGE, "n4 joins", || {
        let url = url.clone();
        async move { get_json(&url, "/v1/cluster/status").await["joined"] == true }
    })
    .await
    .expect("n4 joined");
    let urls: Vec<String> = c.nodes.iter().map(|n| n.url.clone()).chain([url]).collect();
    TestCluster::eventually(CONVERGE, "n4 admitted everywhere", || {
        let urls = urls.clone();
        async move {
            for url in &urls {
                let l = get_json(url, "/v1/admin/layout").await;
                if l["members_without_data"] != json!(["n4"]) {
                    return false;
                }
            }
            true
        }
    })
    .await
    .expect("admitted");
    n4
}

/// Waits until every url's node holds layout `version` with one digest.
async fn one_layout(urls: &[String], version: u64) -> String {
    let mut digest = String::new();
    TestCluster::eventually(CONVERGE, "one layout everywhere", || {
        let urls = urls.to_vec();
        async move {
            let mut seen = Vec::new();
            for url in &urls {
                let l = get_json(url, "/v1/admin/layout").await;
                seen.push((
                    l["version"].as_u64(),
                    l["digest"].as_str().map(str::to_owned),
                ));
            }
            seen.iter().all(|s| *s == seen[0]) && seen[0].0 == Some(version)
        }
    })
    .await
    .expect("one layout");
    let l = get_json(&urls[0], "/v1/admin/layout").await;
    digest.push_str(l["digest"].as_str().unwrap_or_default());
    digest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joined_node_holds_data_only_after_its_join_is_planned_and_committed() {
    let c = TestCluster::start(&quorra_bin!(), 3).expect("cluster");
    c.wait_converged(CONVERGE).await.expect("converged");
    let n4 = start_fourth(&c).await;
    let n1 = c.nodes[0].url.clone();

    // Admitted, n4 is a member holding nothing: no partition names it.
    let urls: Vec<String> = c
        .nodes
        .iter()
        .map(|n| n.url.clone())
        .chain([n4.url.clone()])
        .collect();
    let ring = get_json(&n4.url, "/v1/cluster/ring").await;
    assert_eq!(
        ring["primary_ownership"].get("n4"),
        None,
        "{}",
        ring["primary_ownership"]
    );

    // Stage, plan, commit through the CLI.
    let staged = cluster_cli(&n1, &["join", "n4"]);
    assert!(staged.contains("n4: {\"set\""), "{staged}");
    let plan: Value =
        serde_json::from_str(&cluster_cli(&n1, &["--json", "plan"])).expect("plan JSON");
    assert_eq!(
        (plan["from_version"].as_u64(), plan["to_version"].as_u64()),
        (Some(1), Some(2))
    );
    let share = plan["share_moving"].as_f64().expect("share");
    assert!(
        share > 0.0 && share <= 1.1 / 4.0,
        "moves {share} of the slots"
    );
    assert_eq!(plan["slots_after"]["n4"], plan["slots_moving"], "{plan}");
    let text = cluster_cli(&n1, &["plan"]);
    assert!(text.contains("plan: layout version 1 -> 2"), "{text}");
    let committed = cluster_cli(&n1, &["commit", "--version", "1"]);
    assert!(
        committed.contains("committed layout version 2"),
        "{committed}"
    );

    // Every node takes version 2, and routes by it.
    one_layout(&urls, 2).await;
    for url in &urls {
        let ring = get_json(url, "/v1/cluster/ring").await;
        let owned = ring["primary_ownership"]["n4"].as_u64().unwrap_or(0);
        assert!(
            owned > 0,
            "{url}: n4 owns no partition: {}",
            ring["primary_ownership"]
        );
    }

    // Committing the same plan again: the layout has moved on.
    let again = Client::new(&n1)
        .post_json("/v1/admin/layout/commit", &json!({"version": 1}))
        .await
        .expect("answer");
    assert_eq!(again.status, 409, "{}", again.text());
    assert_eq!(again.error_code().as_deref(), Some("layout_conflict"));
    // A malformed body is refused with a stable code.
    let bad = Client::new(&n1)
        .post_json("/v1/admin/layout/join", &json!({"node": 4}))
        .await
        .expect("answer");
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert_eq!(bad.error_code().as_deref(), Some("invalid_parameter"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_commits_at_once_exactly_one_wins_and_the_other_gets_409() {
    let c = TestCluster::start(&quorra_bin!(), 3).expect("cluster");
    c.wait_converged(CONVERGE).await.expect("converged");
    let n4 = start_fourth(&c).await;
    let (n1, n2) = (c.client(0), c.client(1));
    // Each operator stages the same join at their own node.
    for client in [&n1, &n2] {
        let a = client
            .post_json("/v1/admin/layout/join", &json!({"node": "n4"}))
            .await
            .expect("answer");
        assert_eq!(a.status, 200, "{}", a.text());
    }
    let body = json!({"version": 1});
    let (a, b) = tokio::join!(
        n1.post_json("/v1/admin/layout/commit", &body),
        n2.post_json("/v1/admin/layout/commit", &body)
    );
    let (a, b) = (a.expect("n1 answers"), b.expect("n2 answers"));
    let mut statuses = [a.status, b.status];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409], "n1: {} / n2: {}", a.text(), b.text());
    let lost = if a.status == 409 { &a } else { &b };
    assert_eq!(
        lost.error_code().as_deref(),
        Some("layout_conflict"),
        "{}",
        lost.text()
    );
    let urls: Vec<String> = c
        .nodes
        .iter()
        .map(|n| n.url.clone())
        .chain([n4.url.clone()])
        .collect();
    one_layout(&urls, 2).await;
}
