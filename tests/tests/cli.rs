//! The `quorra` command line as a user meets it: help, config errors, and the
//! dev-cluster's output and restart contract.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use quorra_tests::http::Client;
use quorra_tests::{quorra_bin, wait_bounded};

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
        "--partitions",
        "--max-value-bytes",
        "--max-key-bytes",
        "--max-siblings",
        "--request-timeout-ms",
        "--max-concurrent-requests",
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

/// Starts `quorra dev-cluster` and returns it with the URLs it printed.
fn dev_cluster(dir: &std::path::Path) -> (std::process::Child, Vec<String>) {
    let mut child = Command::new(quorra_bin!())
        .args(["dev-cluster", "--nodes", "1", "--base-port", "0", "--dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("a URL line");
    (child, vec![first])
}

#[tokio::test]
async fn dev_cluster_prints_urls_stops_on_sigterm_and_restarts_with_its_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut cluster, urls) = dev_cluster(dir.path());
    assert_eq!(urls.len(), 1);
    let url = urls[0].clone();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let c = Client::new(&url);
    assert_eq!(
        c.put("dev", "k", "kept", None, "")
            .await
            .expect("put")
            .status,
        204
    );

    kill(Pid::from_raw(cluster.id() as i32), Signal::SIGTERM).expect("sigterm");
    let status = wait_bounded(&mut cluster, Duration::from_secs(30)).expect("wait");
    assert!(status.success(), "dev-cluster exits cleanly: {status}");

    let (mut again, urls) = dev_cluster(dir.path());
    assert_eq!(urls, vec![url.clone()], "same node, same URL");
    let got = Client::new(&url).get("dev", "k").await.expect("get");
    assert_eq!((got.status, got.text()), (200, "kept".to_owned()));
    kill(Pid::from_raw(again.id() as i32), Signal::SIGTERM).expect("sigterm");
    assert!(wait_bounded(&mut again, Duration::from_secs(30))
        .expect("wait")
        .success());
}
