//! The benchmark harness against a real 3-node cluster, through the client
//! library and through HTTP: it counts what it ran and writes its reports.
//! (Speed is measured in bench/, never asserted here.)

use std::time::Duration;

use quorra_bench::workload::Workload;
use quorra_bench::{run, RunArgs, Target};
use quorra_tests::cluster::TestCluster;
use quorra_tests::quorra_bin;

fn args(target: Target, workload: Workload, out: &std::path::Path, label: &str) -> RunArgs {
    RunArgs {
        target,
        workload,
        distribution: None,
        records: 200,
        operations: Some(400),
        seconds: 60,
        warmup: 0,
        concurrency: 4,
        rate: None,
        value_size: 100,
        set_size: 1_000,
        dw: false,
        blind_load: false,
        seeds: Vec::new(),
        cert_dir: None,
        cert_name: "bench".into(),
        urls: Vec::new(),
        redis_url: String::new(),
        k2v: Default::default(),
        durability: None,
        server_pid: Vec::new(),
        label: Some(label.into()),
        out: out.to_owned(),
    }
}

/// A converged 3-node cluster with the bench's client certificate, and a
/// directory for reports.
async fn bench_cluster() -> (TestCluster, tempfile::TempDir) {
    let c = TestCluster::start(&quorra_bin!(), 3).expect("cluster");
    c.wait_converged(Duration::from_secs(20))
        .await
        .expect("converged");
    quorra_node::net::certs::generate_role(
        &c.certs,
        quorra_core::auth::Role::Client,
        &["bench".into()],
    )
    .expect("cert");
    (c, tempfile::tempdir().expect("tempdir"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_benchmark_drives_a_cluster_and_reports() {
    let (c, out) = bench_cluster().await;

    let pids: Vec<u32> = c.nodes.iter().filter_map(|n| n.pid()).collect();
    let mut a = args(Target::Quorra, Workload::A, out.path(), "smoke-client");
    a.seeds = c.nodes.iter().filter_map(|n| n.peer).collect();
    a.server_pid = pids.clone();
    a.cert_dir = Some(c.certs.clone());
    let client = run(a).await.expect("client run");

    let mut h = args(Target::QuorraHttp, Workload::F, out.path(), "smoke-http");
    h.urls = c.nodes.iter().map(|n| n.url.clone()).collect();
    h.server_pid = pids;
    let http = run(h).await.expect("http run");

    for (report, ops) in [(&client, ["read", "update"]), (&http, ["read", "rmw"])] {
        let done: u64 = report.ops.values().map(|s| s.count + s.errors).sum();
        assert_eq!(done, 400, "{}: every requested operation ran", report.label);
        for op in ops {
            let s = report
                .ops
                .get(op)
                .unwrap_or_else(|| panic!("{}: no {op}", report.label));
            assert_eq!(s.errors, 0, "{}: {op} errors", report.label);
            assert!(s.p50_us <= s.p99_us && s.p99_us <= s.max_us && s.p50_us > 0);
        }
        assert!(report.throughput > 0.0);
        assert!(!report.timeline.is_empty());
        // The nodes' CPU time (from /proc) and the generator's: serving
        // 400 operations takes some.
        let server = report.server_cpu_us_per_op.expect("server CPU measured");
        let client = report.client_cpu_us_per_op.expect("client CPU measured");
        assert!(server > 0.0 && client >= 0.0, "{server} {client}");
    }
    let summary = quorra_bench::report::summarize(out.path()).expect("summary");
    assert!(summary.contains("smoke-client") && summary.contains("smoke-http"));
    for f in [
        "summary.md",
        "throughput.svg",
        "latency.svg",
        "smoke-client.json",
        "smoke-http.json",
    ] {
        assert!(out.path().join(f).exists(), "{f} written");
    }
}

/// The data-type workloads: every increment the counter run counted is in
/// the counters, and every set holds its loaded elements plus the adds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_type_workloads_count_what_they_ran() {
    let (c, out) = bench_cluster().await;
    let urls: Vec<String> = c.nodes.iter().map(|n| n.url.clone()).collect();

    let mut a = args(Target::Quorra, Workload::Counter, out.path(), "counter");
    a.seeds = c.nodes.iter().filter_map(|n| n.peer).collect();
    a.cert_dir = Some(c.certs.clone());
    a.urls = urls.clone();
    a.records = 20;
    let counted = run(a).await.expect("counter run");
    let ok = counted.ops.get("increment").expect("increments").count;
    let mut total = 0;
    for i in 0..20 {
        let key = quorra_bench::workload::key_name(i);
        let got = c
            .client(0)
            .get_path(&format!("/v1/crdt/bench_counters/{key}?r=3"))
            .await
            .expect("get");
        let v: serde_json::Value = serde_json::from_slice(&got.body).expect("json");
        total += v["value"].as_u64().expect("every counter has a count");
    }
    assert_eq!(
        total,
        20 + ok,
        "the load's increment per counter, and every counted one"
    );

    let mut s = args(Target::QuorraHttp, Workload::SetAdd, out.path(), "set-add");
    s.urls = urls;
    s.records = 4;
    s.set_size = 1_500;
    s.operations = Some(40);
    let added = run(s).await.expect("set-add run");
    let ok = added.ops.get("set_add").expect("adds").count;
    let mut elements = 0;
    for i in 0..4 {
        let key = quorra_bench::workload::key_name(i);
        let got = c
            .client(1)
            .get_path(&format!("/v1/crdt/bench_sets/{key}?r=3"))
            .await
            .expect("get");
        let v: serde_json::Value = serde_json::from_slice(&got.body).expect("json");
        elements += v["value"].as_array().expect("every set has elements").len() as u64;
    }
    assert_eq!(
        elements,
        4 * 1_500 + ok,
        "loaded elements, and every counted add"
    );
}
