//! `/metrics` after a short workload on a real 3-node cluster: requests
//! per operation with latency histograms, a quorum failure, hints pending
//! for a dead replica, a read repair, the members by status, and RocksDB's
//! own counts, each with a non-zero value.

use std::time::Duration;

use quorra_node::metric_names::{self as m, Kind};
use quorra_tests::cluster::TestCluster;
use quorra_tests::metrics::{lists, sum, sum_where};
use quorra_tests::quorra_bin;

const CONVERGE: Duration = Duration::from_secs(30);

async fn scrape(c: &TestCluster, i: usize) -> String {
    let a = c.client(i).get_path("/metrics").await.expect("metrics");
    assert_eq!(a.status, 200);
    assert_eq!(a.content_type.as_deref(), Some("text/plain; version=0.0.4"));
    a.text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_a_short_workload() {
    let mut c = TestCluster::start_with(&quorra_bin!(), 3, |i, cfg| {
        // Hints are kept but not handed over, and anti-entropy is off, so
        // the returning node stays stale until a read repairs it.
        cfg.handoff.interval_ms = 3_600_000;
        cfg.anti_entropy.interval_ms = 0;
        if i == 0 {
            cfg.log_format = quorra_node::config::LogFormat::Json;
            // The driver's read-repair lines, to see the request id on them.
            cfg.log = "info,quorra_node::driver=debug".into();
        }
    })
    .expect("cluster");
    c.wait_converged(CONVERGE).await.expect("converged");
    let http = c.client(0);
    let mut contexts = Vec::new();
    for i in 0..40 {
        let w = http
            .put("b", &format!("k{i}"), "v1", None, "?w=3")
            .await
            .expect("put");
        assert_eq!(w.status, 204, "{}", w.text());
        contexts.push(w.context.expect("context"));
        assert_eq!(
            http.get("b", &format!("k{i}")).await.expect("get").status,
            200
        );
    }

    // n3 dies: writes leave hints for it, and a read that needs every
    // replica fails its quorum.
    c.nodes[2].kill9();
    for (i, ctx) in contexts.iter().enumerate().take(10) {
        let w = http
            .put("b", &format!("k{i}"), "v2", Some(ctx), "?w=2")
            .await
            .expect("put");
        assert_eq!(w.status, 204, "{}", w.text());
    }
    // The caller's request id comes back, and is on the request's log
    // lines (JSON logs on n1).
    let failed = reqwest::Client::new()
        .get(format!("{}/v1/kv/b/k0?r=3", c.nodes[0].url))
        .header("x-request-id", "probe-7f3a")
        .send()
        .await
        .expect("get");
    assert_eq!(failed.status(), 503);
    assert_eq!(
        failed
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some("probe-7f3a")
    );
    let logged = c.nodes[0]
        .log_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["span"]["id"] == "probe-7f3a")
        .unwrap_or_else(|| {
            panic!(
                "no JSON log line with the request id:\n{}",
                c.nodes[0].log_tail()
            )
        });
    assert_eq!(logged["fields"]["message"], "request failed", "{logged}");
    assert_eq!(logged["fields"]["code"], "quorum_unavailable", "{logged}");
    assert_eq!(logged["span"]["path"], "/v1/kv/b/k0", "{logged}");
    // Without one, the node makes one up (a UUID).
    let own = reqwest::Client::new()
        .get(format!("{}/v1/kv/b/k1", c.nodes[0].url))
        .send()
        .await
        .expect("get");
    let id = own.headers().get("x-request-id").map(|v| v.len());
    assert_eq!((own.status().as_u16(), id), (200, Some(36)));
    let before = scrape(&c, 0).await;
    assert!(sum(&before, m::HINTS_PENDING) > 0.0, "hints for n3");
    assert_eq!(sum_where(&before, m::MEMBERS, &[("status", "up")]), 2.0);

    // Back, it is stale until a read repairs it.
    c.nodes[2].restart().expect("restart");
    c.wait_seen_as("n3", "up", CONVERGE).await.expect("n3 up");
    let cr = &c;
    let n1 = c.nodes[0].url.clone();
    let n1 = &n1;
    TestCluster::eventually(Duration::from_secs(20), "a read repair", || async move {
        for i in 0..10 {
            let _ = reqwest::Client::new()
                .get(format!("{n1}/v1/kv/b/k{i}?r=3"))
                .header("x-request-id", format!("repairing-read-{i}"))
                .send()
                .await;
        }
        let mut repairs = 0.0;
        for n in 0..3 {
            repairs += sum(&scrape(cr, n).await, m::READ_REPAIRS);
        }
        repairs > 0.0
    })
    .await
    .expect("read repair counted");
    // The repair is decided when the replicas' answers come back, in the
    // task carrying the replica call: its line still names the read.
    let repaired = c.nodes[0]
        .log_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["fields"]["message"] == "read repair")
        .unwrap_or_else(|| panic!("no read repair line:\n{}", c.nodes[0].log_tail()));
    assert!(
        repaired["span"]["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("repairing-read-")),
        "the read repair line does not carry its read's request id: {repaired}"
    );
    // Flushes the memtables, so the table files count too.
    let compacted = http
        .post_json("/v1/admin/compact", &serde_json::json!({}))
        .await
        .expect("compact");
    assert_eq!(compacted.status, 200, "{}", compacted.text());

    let text = scrape(&c, 0).await;
    let positive = [
        (m::HTTP_REQUESTS, vec![]),
        ("quorra_http_request_seconds_count", vec![]),
        (m::KV_REQUESTS, vec![("op", "put"), ("outcome", "ok")]),
        (m::KV_REQUESTS, vec![("op", "get"), ("outcome", "ok")]),
        ("quorra_kv_request_seconds_count", vec![("op", "get")]),
        (
            "quorra_kv_request_seconds_bucket",
            vec![("op", "put"), ("le", "+Inf")],
        ),
        (m::QUORUM_FAILURES, vec![("op", "get")]),
        (m::MEMBERS, vec![("status", "up")]),
        (m::MEMBERSHIP_VERSION, vec![]),
        (m::STORAGE_KEYS, vec![("space", "objects")]),
        (m::STORAGE_BYTES, vec![("space", "objects")]),
        (m::STORAGE_MEMORY_BYTES, vec![("part", "budget")]),
        (m::STORAGE_WAL_SYNCS, vec![]),
    ];
    for (name, labels) in positive {
        let v = sum_where(&text, name, &labels);
        assert!(v > 0.0, "{name} {labels:?} is {v}:\n{text}");
    }
    assert_eq!(sum_where(&text, m::MEMBERS, &[("status", "up")]), 3.0);
    // Counts that may well be zero after a short run are still exported.
    for name in [
        m::STORAGE_PENDING_COMPACTION_BYTES,
        m::STORAGE_WRITE_STALL_MICROS,
        m::STORAGE_DELETION_MARKERS,
        m::HINTS_PENDING,
    ] {
        assert!(lists(&text, name), "{name} missing:\n{text}");
    }
    // Every exported metric of ours is one the names module lists, with
    // its description and type.
    for line in text.lines().filter(|l| l.starts_with("# TYPE quorra_")) {
        let name = line.split(' ').nth(2).unwrap_or_default();
        let listed = m::ALL.iter().find(|x| x.name == name);
        let Some(listed) = listed else {
            panic!("{name} is exported but not in metric_names");
        };
        let kind = match listed.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        assert!(line.ends_with(kind), "{line}: listed as {kind}");
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "{name} has no description"
        );
    }
}
