//! One real `quorra node` process over real HTTP and real RocksDB: the API
//! contract, durability across kill -9, corruption handling, and refusal of
//! bad input without losing anything.

use std::collections::BTreeMap;

use quorra_core::{BucketName, ConflictMode, Key, Limits};
use quorra_node::config::BucketOverrides;
use quorra_node::storage::rocks::RocksEngine;
use quorra_node::storage::{Durability, Engine, Space};
use quorra_node::store::ObjectStore;
use quorra_tests::http::Client;
use quorra_tests::{quorra_bin, NodeProcess};

fn start(dir: &std::path::Path) -> NodeProcess {
    NodeProcess::start(&quorra_bin!(), dir, NodeProcess::config("n1", dir)).expect("node starts")
}

#[tokio::test]
async fn put_get_siblings_resolve_delete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path());
    let c = Client::new(&node.url);

    let put = c
        .put("users", "alice", "hello", None, "")
        .await
        .expect("put");
    assert_eq!(put.status, 204);
    assert!(put.context.is_some(), "a put answers with the new context");

    let got = c.get("users", "alice").await.expect("get");
    assert_eq!((got.status, got.text()), (200, "hello".to_owned()));
    assert_eq!(got.content_type.as_deref(), Some("text/plain"));
    let ctx = got.context.expect("context");

    // Two writers read the same context and write through the same node.
    for v in ["one", "two"] {
        let r = c
            .put("users", "alice", v, Some(&ctx), "")
            .await
            .expect("put");
        assert_eq!(r.status, 204);
    }
    let got = c.get("users", "alice").await.expect("get");
    assert_eq!(got.status, 300);
    assert!(got
        .content_type
        .as_deref()
        .is_some_and(|ct| ct.starts_with("multipart/mixed")));
    assert_eq!(got.values(), ["one", "two"]);

    // A write with the siblings' context resolves them.
    let both = got.context.expect("context");
    let r = c
        .put("users", "alice", "resolved", Some(&both), "")
        .await
        .expect("put");
    assert_eq!(r.status, 204);
    let got = c.get("users", "alice").await.expect("get");
    assert_eq!(
        (got.status, got.values()),
        (200, vec!["resolved".to_owned()])
    );

    // Delete with the latest context, then the key is gone but the
    // tombstone's context is still handed out.
    let del = c
        .delete("users", "alice", got.context.as_deref())
        .await
        .expect("delete");
    assert_eq!(del.status, 204);
    let got = c.get("users", "alice").await.expect("get");
    assert_eq!(got.status, 404);
    assert_eq!(got.error_code().as_deref(), Some("not_found"));
    assert!(got.context.is_some(), "a tombstone carries a context");

    // A key never written: 404 without a context.
    let never = c.get("users", "nobody").await.expect("get");
    assert_eq!((never.status, never.context), (404, None));
}

#[tokio::test]
async fn blind_write_is_a_sibling_or_lww_by_bucket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = NodeProcess::config("n1", dir.path());
    config.buckets = BTreeMap::from([(
        "latest".to_owned(),
        BucketOverrides {
            conflict_mode: Some(ConflictMode::Lww),
            ..BucketOverrides::default()
        },
    )]);
    let node = NodeProcess::start(&quorra_bin!(), dir.path(), config).expect("start");
    let c = Client::new(&node.url);
    for v in ["a", "b"] {
        assert_eq!(
            c.put("plain", "k", v, None, "").await.expect("put").status,
            204
        );
        assert_eq!(
            c.put("latest", "k", v, None, "").await.expect("put").status,
            204
        );
    }
    assert_eq!(c.get("plain", "k").await.expect("get").values(), ["a", "b"]);
    assert_eq!(c.get("latest", "k").await.expect("get").values(), ["b"]);
}

/// Writes `count` keys with `query`, kills the node with SIGKILL right after
/// the last acknowledgement (no shutdown, no flush), restarts it, and checks
/// every key.
async fn writes_survive_kill_9(bucket: &str, query: &str, count: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = start(dir.path());
    let c = Client::new(&node.url);
    for i in 0..count {
        let r = c
            .put(bucket, &format!("k{i}"), format!("v{i}"), None, query)
            .await
            .expect("put");
        assert_eq!(r.status, 204, "{}", r.text());
    }
    node.kill9();
    node.restart().expect("restart");
    let c = Client::new(&node.url);
    for i in 0..count {
        let got = c.get(bucket, &format!("k{i}")).await.expect("get");
        assert_eq!(
            (got.status, got.text()),
            (200, format!("v{i}")),
            "k{i} lost"
        );
    }
}

#[tokio::test]
async fn durable_writes_survive_kill_9() {
    writes_survive_kill_9("durable", "?dw=1", 20).await;
}

#[tokio::test]
async fn buffered_writes_survive_kill_9_of_the_process() {
    // Without dw the write-ahead log is in the OS cache: a process crash
    // loses nothing (a power loss could).
    writes_survive_kill_9("buffered", "", 50).await;
}

/// The engine's durable writes and WAL syncs, from `/v1/cluster/status`.
async fn sync_counts(c: &Client) -> (u64, u64) {
    let s = c.get_path("/v1/cluster/status").await.expect("status");
    let v: serde_json::Value = serde_json::from_slice(&s.body).expect("json");
    let n = |f: &str| {
        v["storage"][f]
            .as_u64()
            .unwrap_or_else(|| panic!("storage.{f} in {v}"))
    };
    (n("durable_writes"), n("wal_syncs"))
}

/// Group commit through the whole request path: 32 clients writing with
/// `dw` at once share WAL syncs, so far fewer fsyncs than writes; written
/// one at a time, each takes its own. The disk is made slow (20 ms per
/// storage call, the sync included), as a spinning or network disk is: the
/// writes that arrive during one sync must share the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_durable_writes_share_fsyncs() {
    const WRITERS: usize = 32;
    const EACH: usize = 8;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = NodeProcess::config("n1", dir.path());
    config.fault_injection = true;
    let node = NodeProcess::start(&quorra_bin!(), dir.path(), config).expect("node starts");
    let c = Client::new(&node.url);
    let slow = c
        .put_json(
            "/v1/debug/faults",
            &serde_json::json!({ "disk_delay_ms": 20 }),
        )
        .await
        .expect("faults");
    assert_eq!(slow.status, 200, "{}", slow.text());

    let (w0, s0) = sync_counts(&c).await;
    for i in 0..EACH {
        let r = c
            .put("gc", &format!("alone{i}"), "v", None, "?dw=1")
            .await
            .expect("put");
        assert_eq!(r.status, 204, "{}", r.text());
    }
    let (w1, s1) = sync_counts(&c).await;
    assert!(w1 - w0 >= EACH as u64, "each dw write is a durable write");
    assert!(s1 - s0 >= EACH as u64, "one at a time, each write syncs");

    let mut writers = tokio::task::JoinSet::new();
    for w in 0..WRITERS {
        let c = c.clone();
        writers.spawn(async move {
            for i in 0..EACH {
                let r = c
                    .put("gc", &format!("w{w}-{i}"), "v", None, "?dw=1")
                    .await
                    .expect("put");
                assert_eq!(r.status, 204, "{}", r.text());
            }
        });
    }
    while let Some(w) = writers.join_next().await {
        w.expect("writer");
    }
    let (w2, s2) = sync_counts(&c).await;
    let (writes, syncs) = (w2 - w1, s2 - s1);
    assert!(writes >= (WRITERS * EACH) as u64, "{writes} durable writes");
    assert!(
        syncs < writes / 4,
        "{syncs} WAL syncs for {writes} concurrent durable writes"
    );
}

#[tokio::test]
async fn corrupt_object_is_reported_and_never_returned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = start(dir.path());
    let c = Client::new(&node.url);
    assert_eq!(
        c.put("b", "victim", "precious-bytes", None, "?dw=1")
            .await
            .expect("put")
            .status,
        204
    );
    assert_eq!(
        c.put("b", "bystander", "fine", None, "")
            .await
            .expect("put")
            .status,
        204
    );
    assert!(node.terminate().expect("stop").success());

    // Flip one byte of the stored value through the engine's raw API.
    {
        let engine: std::sync::Arc<dyn Engine> =
            std::sync::Arc::new(RocksEngine::open(&dir.path().join("data/db")).expect("open db"));
        let store = ObjectStore::open(engine.clone(), "n1").expect("store");
        let l = Limits::default();
        let skey = store.object_key(
            &BucketName::parse("b", &l).expect("bucket"),
            &Key::parse(b"victim".to_vec(), &l).expect("key"),
        );
        let mut raw = engine
            .get(Space::Objects, &skey)
            .expect("get")
            .expect("stored");
        let at = raw
            .windows(14)
            .position(|w| w == b"precious-bytes")
            .expect("value in record");
        raw[at] ^= 0x01;
        engine
            .put(Space::Objects, &skey, &raw, Durability::Fsync)
            .expect("put");
    }

    node.restart().expect("restart");
    let c = Client::new(&node.url);
    let got = c.get("b", "victim").await.expect("get");
    assert_eq!(
        got.status,
        404,
        "corrupt bytes are never returned: {}",
        got.text()
    );
    assert!(!got.text().contains("qrecious"));
    let metrics = c.get_path("/metrics").await.expect("metrics").text();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("quorra_corrupt_objects_total") && l.ends_with(" 1")),
        "corruption is counted:\n{metrics}"
    );
    assert!(
        node.log_tail().contains("corrupt object"),
        "corruption is logged"
    );
    let ok = c.get("b", "bystander").await.expect("get");
    assert_eq!((ok.status, ok.text()), (200, "fine".to_owned()));
}

#[tokio::test]
async fn bad_input_is_refused_and_nothing_is_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = NodeProcess::config("n1", dir.path());
    config.limits.max_value_bytes = 1024;
    config.limits.max_siblings = 8;
    let node = NodeProcess::start(&quorra_bin!(), dir.path(), config).expect("start");
    let c = Client::new(&node.url);
    assert_eq!(
        c.put("b", "keep", "safe", None, "")
            .await
            .expect("put")
            .status,
        204
    );

    let long_key = "k".repeat(1025);
    let long_bucket = "b".repeat(129);
    let cases: Vec<(u16, &str, quorra_tests::http::Answer)> = vec![
        (
            413,
            "value_too_large",
            c.put("b", "big", vec![7u8; 1025], None, "")
                .await
                .expect("put"),
        ),
        (
            413,
            "key_too_long",
            c.put("b", &long_key, "x", None, "").await.expect("put"),
        ),
        (
            413,
            "bucket_too_long",
            c.put(&long_bucket, "k", "x", None, "").await.expect("put"),
        ),
        (
            400,
            "invalid_bucket",
            c.put("no%20spaces", "k", "x", None, "").await.expect("put"),
        ),
        (
            400,
            "invalid_context",
            c.put("b", "keep", "x", Some("%%%"), "").await.expect("put"),
        ),
        (
            // The unauthenticated format of earlier builds.
            400,
            "bad_context",
            c.put("b", "keep", "x", Some("AQ"), "").await.expect("put"),
        ),
        (
            400,
            "invalid_context",
            c.put("b", "keep", "x", Some(&"A".repeat(20_000)), "")
                .await
                .expect("put"),
        ),
        (
            400,
            "invalid_parameter",
            c.put("b", "keep", "x", None, "?w=lots").await.expect("put"),
        ),
        (
            400,
            "invalid_parameter",
            c.put("b", "keep", "x", None, "?r=9").await.expect("put"),
        ),
        (
            400,
            "invalid_parameter",
            c.put("b", "keep", "x", None, "?bogus=1")
                .await
                .expect("put"),
        ),
        (
            404,
            "route_not_found",
            c.get_path("/v2/kv/b/k").await.expect("get"),
        ),
        (
            // Past the body limit layer (a value's limit plus 64 KiB):
            // refused before it is read, as a JSON error.
            413,
            "value_too_large",
            // Its own client: the node closes a connection whose body it
            // refused unread, so a pooled one would fail the next request.
            Client::new(&node.url)
                .put_json(
                    "/v1/buckets/b/props",
                    &serde_json::Value::String("x".repeat(70 << 10)),
                )
                .await
                .expect("put"),
        ),
        (
            // An extractor's own refusal comes as a JSON error too.
            400,
            "invalid_parameter",
            c.get_path("/v1/cluster/ring?n=many").await.expect("get"),
        ),
    ];
    for (status, code, answer) in cases {
        assert_eq!(answer.status, status, "{code}: {}", answer.text());
        assert_eq!(
            answer.error_code().as_deref(),
            Some(code),
            "{}",
            answer.text()
        );
    }
    // The data types' state format is not a plain value's content type
    // (a store would read it as a state).
    let reserved = reqwest::Client::new()
        .put(format!("{}/v1/kv/b/state", node.url))
        .header("content-type", quorra_core::crdt::CONTENT_TYPE)
        .body(vec![2u8, 0x92, 0x93])
        .send()
        .await
        .expect("put");
    assert_eq!(reserved.status(), 400);
    let body = reserved.text().await.expect("body");
    assert!(
        body.contains("invalid_parameter") && body.contains("reserved"),
        "{body}"
    );
    // Siblings: past a quarter of the limit (2 of 8) a write that adds one
    // is stored with a warning (logged and counted); past the limit a
    // write is refused until the client resolves them.
    let mut first = None;
    for i in 0..8 {
        let w = c
            .put("b", "sibs", format!("v{i}"), None, "")
            .await
            .expect("put");
        assert_eq!(w.status, 204, "{}", w.text());
        first = first.or(w.context);
    }
    let over = c.put("b", "sibs", "v8", None, "").await.expect("put");
    assert_eq!(
        (over.status, over.error_code().as_deref()),
        (409, Some("too_many_siblings")),
        "{}",
        over.text()
    );
    // Replacing one sibling keeps the count: no warning.
    let same = c
        .put("b", "sibs", "v0b", first.as_deref(), "")
        .await
        .expect("put");
    assert_eq!(same.status, 204, "{}", same.text());
    assert_eq!(c.get("b", "sibs").await.expect("get").values().len(), 8);
    let metrics = c.get_path("/metrics").await.expect("metrics").text();
    let warned = quorra_tests::metrics::sum(&metrics, "quorra_sibling_warnings_total");
    assert_eq!(
        warned, 6.0,
        "one warning per write that grew past 2 (3rd to 8th)"
    );
    assert!(
        node.log_text().contains("many siblings"),
        "the warning is logged"
    );
    // The node still serves, and the acknowledged write is intact.
    let got = c.get("b", "keep").await.expect("get");
    assert_eq!((got.status, got.text()), (200, "safe".to_owned()));
    assert_eq!(
        c.put("b", "after", vec![1u8; 1024], None, "")
            .await
            .expect("put")
            .status,
        204
    );
}

#[tokio::test]
async fn binary_keys_and_values_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path());
    let c = Client::new(&node.url);
    let value: Vec<u8> = (0..=255u8).collect();
    let r = c
        .put("bin", "a%2Fb%00%FF/c", value.clone(), None, "")
        .await
        .expect("put");
    assert_eq!(r.status, 204);
    let got = c.get("bin", "a%2Fb%00%FF/c").await.expect("get");
    assert_eq!((got.status, got.body), (200, value));
    assert_eq!(
        c.get("bin", "a/b%00%FF/c").await.expect("get").status,
        200,
        "%2F and / name the same key"
    );
}

/// `If-None-Match: *` writes only a key with no value: 412 over a value
/// (which stays), a create over a tombstone replaces it without a sibling,
/// and any other use of the header is a 400.
#[tokio::test]
async fn if_none_match_creates_only_a_key_without_a_value() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path());
    let c = Client::new(&node.url);
    let create = [("if-none-match", "*")];
    let r = c.put_with("b", "k", "first", &create).await.expect("put");
    assert_eq!(r.status, 204, "{}", r.text());
    let r = c.put_with("b", "k", "second", &create).await.expect("put");
    assert_eq!(r.status, 412, "{}", r.text());
    assert_eq!(r.error_code().as_deref(), Some("precondition_failed"));
    assert_eq!(c.get("b", "k").await.expect("get").values(), vec!["first"]);

    for headers in [
        vec![("if-none-match", "\"abc\"")],
        vec![
            ("if-none-match", "*"),
            ("x-quorra-context", r.context.as_deref().unwrap_or("x")),
        ],
    ] {
        let r = c.put_with("b", "k", "third", &headers).await.expect("put");
        assert_eq!(r.status, 400, "{headers:?}: {}", r.text());
        assert_eq!(r.error_code().as_deref(), Some("invalid_parameter"));
    }

    let read = c.get("b", "k").await.expect("get");
    let r = c
        .delete("b", "k", read.context.as_deref())
        .await
        .expect("delete");
    assert_eq!(r.status, 204, "{}", r.text());
    let r = c.put_with("b", "k", "again", &create).await.expect("put");
    assert_eq!(r.status, 204, "over a tombstone: {}", r.text());
    let read = c.get("b", "k").await.expect("get");
    assert_eq!(
        read.values(),
        vec!["again"],
        "one value, no sibling: {}",
        read.text()
    );
    // The node still serves after every refusal.
    assert_eq!(c.get("b", "k").await.expect("get").status, 200);
}
