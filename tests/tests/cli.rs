//! The `quorra` command line as a user meets it: help, config errors, and the
//! dev-cluster's output and restart contract.

use std::process::Command;
use std::time::Duration;

use quorra_tests::http::Client;
use quorra_tests::{quorra_bin, DevCluster};

#[test]
fn node_help_documents_every_flag() {
    let out = Command::new(quorra_bin!())
        .args(["node", "--help"])
        .output()
        .expect("run");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--config",
        "--node-id",
        "--data-dir",
        "--http-addr",
        "--peer-addr",
        "--seeds",
        "--zone",
        "--cert-dir",
        "--partitions",
        "--max-value-bytes",
        "--max-key-bytes",
        "--max-siblings",
        "--request-timeout-ms",
        "--max-concurrent-requests",
        "--n-val",
        "--w",
        "--log",
        "QUORRA_DATA_DIR",
    ] {
        assert!(help.contains(flag), "help lacks {flag}:\n{help}");
    }
}

#[test]
fn invalid_config_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = Command::new(quorra_bin!());
        cmd.arg("node").args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.arg("--data-dir").arg(dir.path()).output().expect("run")
    };
    let out = run(&["--partitions", "100"], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("partitions must be a power of two"));

    let out = run(&[], &[("QUORRA_NODE_ID", "bad id!")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("node_id"));

    let file = dir.path().join("q.toml");
    std::fs::write(&file, "http_adr = \"127.0.0.1:1\"\n").expect("write");
    let out = run(&["--config", file.to_str().expect("utf-8 path")], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("http_adr") && err.contains("q.toml"), "{err}");
}

/// Starts a 3-node `quorra dev-cluster` (the default) and returns it with
/// the URLs it printed.
fn dev_cluster(dir: &std::path::Path) -> (DevCluster, Vec<String>) {
    let cluster = DevCluster::start(&quorra_bin!(), dir, 3).expect("a URL line per node");
    let urls = cluster.urls.clone();
    (cluster, urls)
}

#[tokio::test]
async fn dev_cluster_prints_urls_stops_on_sigterm_and_restarts_with_its_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut cluster, urls) = dev_cluster(dir.path());
    for url in &urls {
        assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    }
    // The three nodes form one cluster: once they have found each other, a
    // write through n1 is read through n3.
    let n3 = Client::new(&urls[2]);
    let start = std::time::Instant::now();
    loop {
        let members = n3
            .get_path("/v1/cluster/members")
            .await
            .expect("members")
            .text();
        if members.matches(r#""status":"up""#).count() == 3 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "members never converged: {members}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let c = Client::new(&urls[0]);
    let put = c.put("dev", "k", "kept", None, "").await.expect("put");
    assert_eq!(put.status, 204, "{}", put.text());
    let got = n3.get("dev", "k").await.expect("get");
    assert_eq!((got.status, got.text()), (200, "kept".to_owned()));

    let status = cluster.stop().expect("sigterm, wait");
    assert!(status.success(), "dev-cluster exits cleanly: {status}");

    let (mut again, again_urls) = dev_cluster(dir.path());
    assert_eq!(again_urls, urls, "same nodes, same URLs");
    let got = Client::new(&urls[1]).get("dev", "k").await.expect("get");
    assert_eq!((got.status, got.text()), (200, "kept".to_owned()));
    assert!(again.stop().expect("sigterm, wait").success());
}

/// `quorra ready` (the container health check) exits 0 for a ready node
/// and 1, saying why, for an address where no node answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_reports_a_ready_node_and_fails_for_none() {
    let c = quorra_tests::cluster::TestCluster::start(&quorra_bin!(), 1).expect("cluster");
    let addr = c.nodes[0].url.trim_start_matches("http://").to_owned();
    let ready = Command::new(quorra_bin!())
        .args(["ready", "--http-addr", &addr])
        .output()
        .expect("run");
    assert!(
        ready.status.success(),
        "{}",
        String::from_utf8_lossy(&ready.stderr)
    );
    // A port nobody listens on: bound, then closed.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port");
    let none = Command::new(quorra_bin!())
        .args(["ready", "--http-addr", &closed.to_string()])
        .output()
        .expect("run");
    assert_eq!(none.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&none.stderr).contains(&closed.to_string()));
}
