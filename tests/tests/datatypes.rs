//! Data types (counters, sets, maps, registers, flags) on real nodes: the
//! conflict rules through partitions, a counter and a set that lose no
//! acknowledged increment or add while a node crashes and loses its
//! unsynced writes, and the client library's typed calls for every type.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quorra_client::{Client, MapUpdate};
use quorra_core::bucket::PropsPatch;
use quorra_core::crdt::Datatype;
use quorra_tests::cluster::TestCluster;
use quorra_tests::http::Client as Http;
use quorra_tests::quorra_bin;
use serde_json::{json, Value};

const CONVERGE: Duration = Duration::from_secs(30);

/// A cluster whose buckets `counters`, `sets`, `maps`, `registers` and
/// `flags` have those types (from the founders' configuration).
fn typed_cluster(n: usize, faults: bool) -> TestCluster {
    TestCluster::start_with(&quorra_bin!(), n, |_, cfg| {
        cfg.fault_injection = faults;
        cfg.anti_entropy.interval_ms = 300;
        for t in Datatype::ALL {
            cfg.buckets.insert(
                format!("{t}s"),
                PropsPatch {
                    datatype: Some(t),
                    ..PropsPatch::default()
                },
            );
        }
    })
    .expect("cluster")
}

async fn post(c: &TestCluster, i: usize, path: &str, body: Value) -> Value {
    let a = c.client(i).post_json(path, &body).await.expect("post");
    assert_eq!(a.status, 200, "POST {path} {body}: {}", a.text());
    serde_json::from_slice(&a.body).expect("json")
}

/// Waits until every node's own copy of the key shows `want`.
async fn replicas_show(c: &TestCluster, bucket: &str, key: &str, want: &Value) {
    let found = TestCluster::eventually(CONVERGE, "replicas agree", || async move {
        for i in 0..c.nodes.len() {
            if c.replica_crdt(i, bucket, key).await != *want {
                return false;
            }
        }
        true
    })
    .await;
    if found.is_err() {
        let mut seen = Vec::new();
        for i in 0..c.nodes.len() {
            seen.push(c.replica_crdt(i, bucket, key).await);
        }
        panic!("replicas of {bucket}/{key} should all show {want}, they show {seen:?}");
    }
}

/// A remove through one side of a partition and an add of the same
/// element through the other: once healed, every replica has it (add
/// wins). A remove that saw every add then removes it everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_add_and_remove_on_two_sides_of_a_partition_keeps_the_element() {
    let c = typed_cluster(3, true);
    c.wait_converged(CONVERGE).await.expect("converged");
    post(&c, 0, "/v1/crdt/sets/s?w=3", json!({"add": ["x", "y"]})).await;
    let read = c.client(1).get_path("/v1/crdt/sets/s").await.expect("get");
    let read: Value = serde_json::from_slice(&read.body).expect("json");
    assert_eq!(read["value"], json!(["x", "y"]), "{read}");
    let ctx = read["context"].clone();

    c.isolate(0).await.expect("isolate n1");
    let removed = post(
        &c,
        1,
        "/v1/crdt/sets/s",
        json!({"remove": ["x"], "context": ctx}),
    )
    .await;
    // A set write answers the coordinator's size and context, not the
    // elements.
    assert_eq!(
        (&removed["type"], &removed["size"]),
        (&json!("set"), &json!(1)),
        "{removed}"
    );
    assert!(removed.get("value").is_none(), "{removed}");
    let added = post(&c, 0, "/v1/crdt/sets/s?w=1", json!({"add": ["x"]})).await;
    assert_eq!(added["size"], json!(2), "{added}");
    c.heal().await.expect("heal");

    replicas_show(&c, "sets", "s", &json!(["x", "y"])).await;
    // Removing with a context that saw both adds removes x for good.
    let read = c
        .client(2)
        .get_path("/v1/crdt/sets/s?r=3")
        .await
        .expect("get");
    let read: Value = serde_json::from_slice(&read.body).expect("json");
    post(
        &c,
        2,
        "/v1/crdt/sets/s",
        json!({"remove": ["x"], "context": read["context"]}),
    )
    .await;
    replicas_show(&c, "sets", "s", &json!(["y"])).await;
}

/// Updates of different map fields on two sides of a partition both
/// survive, nested fields too; a concurrent enable wins over a disable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updates_of_different_map_fields_both_survive() {
    let c = typed_cluster(3, true);
    c.wait_converged(CONVERGE).await.expect("converged");
    post(
        &c,
        0,
        "/v1/crdt/maps/m?w=3",
        json!({"update": {"on_flag": {"enable": true}}}),
    )
    .await;
    let read = c.client(1).get_path("/v1/crdt/maps/m").await.expect("get");
    let ctx = serde_json::from_slice::<Value>(&read.body).expect("json")["context"].clone();

    c.isolate(0).await.expect("isolate n1");
    post(
        &c,
        0,
        "/v1/crdt/maps/m?w=1",
        json!({"update": {"name_register": {"set": "ann"}, "on_flag": {"enable": true}}}),
    )
    .await;
    post(
        &c,
        1,
        "/v1/crdt/maps/m",
        json!({"update": {"visits_counter": {"increment": 3}, "prefs_map": {"update": {"tags_set": {"add": ["a"]}}}, "on_flag": {"enable": false}}, "context": ctx}),
    )
    .await;
    c.heal().await.expect("heal");

    let want = json!({
        "name_register": "ann",
        "on_flag": true,
        "prefs_map": {"tags_set": ["a"]},
        "visits_counter": 3,
    });
    replicas_show(&c, "maps", "m", &want).await;
}

/// Operations that do not fit are refused with their codes, and the
/// bucket's type is fixed once set (the props change waits until every
/// node has it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_that_do_not_fit_the_bucket_are_refused() {
    let c = TestCluster::start(&quorra_bin!(), 3).expect("cluster");
    c.wait_converged(CONVERGE).await.expect("converged");
    let h = c.client(0);
    let plain = h
        .post_json("/v1/crdt/votes/k", &json!({"increment": 1}))
        .await
        .expect("post");
    assert_eq!(
        (plain.status, plain.error_code().as_deref()),
        (400, Some("wrong_datatype"))
    );
    let set = h
        .put_json("/v1/buckets/votes/props", &json!({"datatype": "counter"}))
        .await
        .expect("props");
    let shown: Value = serde_json::from_slice(&set.body).expect("json");
    assert_eq!(shown["activated"], true, "{shown}");
    // Every node has it now, so an increment through any of them works.
    for i in 0..3 {
        post(&c, i, "/v1/crdt/votes/k", json!({"increment": 1})).await;
    }
    let read = c
        .client(2)
        .get_path("/v1/crdt/votes/k?r=3")
        .await
        .expect("get");
    let read: Value = serde_json::from_slice(&read.body).expect("json");
    assert_eq!(read["value"], 3, "{read}");
    for (path, body, status, code) in [
        (
            "/v1/crdt/votes/k",
            json!({"add": ["x"]}),
            400,
            "wrong_datatype",
        ),
        (
            "/v1/crdt/votes/k",
            json!({"increment": "x"}),
            400,
            "invalid_parameter",
        ),
        (
            "/v1/buckets/votes/props",
            json!({"datatype": "set"}),
            409,
            "bucket_props_fixed",
        ),
        (
            "/v1/buckets/lwwset/props",
            json!({"datatype": "set", "conflict_mode": "lww"}),
            400,
            "invalid_parameter",
        ),
    ] {
        let a = if path.starts_with("/v1/buckets") {
            h.put_json(path, &body).await
        } else {
            h.post_json(path, &body).await
        }
        .expect("answer");
        assert_eq!(
            (a.status, a.error_code().as_deref()),
            (status, Some(code)),
            "{path} {body}: {}",
            a.text()
        );
    }
    let kv = h.put("votes", "k", "plain", None, "").await.expect("put");
    assert_eq!(
        (kv.status, kv.error_code().as_deref()),
        (400, Some("wrong_datatype"))
    );
    let typed = typed_cluster_free_check(&c).await;
    assert_eq!(typed, (400, Some("context_required".to_owned())));
}

async fn typed_cluster_free_check(c: &TestCluster) -> (u16, Option<String>) {
    let h = c.client(0);
    let set = h
        .put_json("/v1/buckets/tags/props", &json!({"datatype": "set"}))
        .await
        .expect("props");
    assert_eq!(set.status, 200, "{}", set.text());
    let a = h
        .post_json("/v1/crdt/tags/k", &json!({"remove": ["x"]}))
        .await
        .expect("post");
    (a.status, a.error_code())
}

/// Three nodes in crash mode (a kill loses unsynced writes), converged,
/// with `bucket` of type `datatype` (set through the props API).
async fn crash_cluster(bucket: &str, datatype: Datatype) -> TestCluster {
    let c = TestCluster::start_with(&quorra_bin!(), 3, |_, cfg| {
        cfg.fault_injection = true;
        cfg.crash_test_lose_unsynced = true;
        cfg.anti_entropy.interval_ms = 300;
    })
    .expect("cluster");
    c.wait_converged(CONVERGE).await.expect("converged");
    let set = c
        .client(0)
        .put_json(
            &format!("/v1/buckets/{bucket}/props"),
            &json!({ "datatype": datatype }),
        )
        .await
        .expect("props");
    assert_eq!(set.status, 200, "{}", set.text());
    c
}

/// Several writers increment one counter through every node while one
/// node is killed in crash mode (losing its unsynced writes) and comes
/// back. At the end every node's own copy shows the same count: every
/// acknowledged increment, plus at most those whose outcome was unknown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counter_keeps_every_acknowledged_increment_through_a_crash() {
    let mut c = crash_cluster("hits", Datatype::Counter).await;

    const PER_WRITER: u64 = 120;
    let acked = Arc::new(AtomicU64::new(0));
    let unknown = Arc::new(AtomicU64::new(0));
    let (done_tx, mut done_rx) = tokio::sync::watch::channel(0u64);
    let done_tx = Arc::new(done_tx);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut writers = Vec::new();
    for w in 0..3usize {
        // Two writers per node's address, each through its own node.
        for _ in 0..2 {
            let url = c.nodes[w].url.clone();
            let (acked, unknown, done_tx) = (acked.clone(), unknown.clone(), done_tx.clone());
            writers.push(tokio::spawn(async move {
                let http = Http::with_timeout(&url, Duration::from_secs(3));
                for _ in 0..PER_WRITER {
                    if Instant::now() > deadline {
                        break;
                    }
                    let body = json!({"increment": 1});
                    match http.post_json("/v1/crdt/hits/k", &body).await {
                        Ok(a) if a.status == 200 => acked.fetch_add(1, Ordering::SeqCst),
                        // Refused, timed out, or the node is down: the
                        // increment may or may not have happened.
                        _ => unknown.fetch_add(1, Ordering::SeqCst),
                    };
                    done_tx.send_modify(|n| *n += 1);
                }
            }));
        }
    }
    // Kill n3 a while in, bring it back a while later.
    done_rx.wait_for(|n| *n >= 150).await.expect("writers run");
    c.nodes[2].kill9();
    done_rx.wait_for(|n| *n >= 350).await.expect("writers run");
    c.nodes[2].restart().expect("restart n3");
    for w in writers {
        w.await.expect("writer");
    }
    let (acked, unknown) = (acked.load(Ordering::SeqCst), unknown.load(Ordering::SeqCst));
    assert!(acked > 300, "most increments are acknowledged ({acked})");

    c.wait_seen_as("n3", "up", CONVERGE).await.expect("n3 up");
    let cr = &c;
    let agreed = TestCluster::eventually(Duration::from_secs(60), "one count", || async move {
        let mut counts = Vec::new();
        for i in 0..3 {
            counts.push(cr.replica_crdt(i, "hits", "k").await.as_u64());
        }
        counts.windows(2).all(|w| w[0] == w[1]) && counts[0].is_some()
    })
    .await;
    let mut counts = Vec::new();
    for i in 0..3 {
        counts.push(c.replica_crdt(i, "hits", "k").await);
    }
    assert!(
        agreed.is_ok(),
        "every node's copy shows one count: {counts:?}"
    );
    let n = counts[0].as_u64().expect("a count");
    assert!(
        n >= acked && n <= acked + unknown,
        "the count {n} holds every acknowledged increment ({acked}) and at most the {unknown} unknown ones"
    );
}

/// A set stored per element and replicated as operations converges as a
/// whole set did: writers add elements through every node while n3 is
/// killed in crash mode (losing its unsynced writes, and so operations
/// the others hold) and comes back. At the end every node's own copy
/// shows the same set, holding every acknowledged element and nothing
/// that was never sent; a remove with a read's context then removes what
/// it saw on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_keeps_every_acknowledged_add_through_a_crash() {
    let mut c = crash_cluster("tags", Datatype::Set).await;

    const PER_WRITER: usize = 60;
    const PER_ADD: usize = 10;
    let acked = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sent = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let (done_tx, mut done_rx) = tokio::sync::watch::channel(0usize);
    let done_tx = Arc::new(done_tx);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut writers = Vec::new();
    for w in 0..3usize {
        let url = c.nodes[w].url.clone();
        let (acked, sent, done_tx) = (acked.clone(), sent.clone(), done_tx.clone());
        writers.push(tokio::spawn(async move {
            let http = Http::with_timeout(&url, Duration::from_secs(3));
            for i in 0..PER_WRITER {
                if Instant::now() > deadline {
                    break;
                }
                let add: Vec<String> = (0..PER_ADD).map(|j| format!("w{w}-{i:03}-{j}")).collect();
                sent.lock().expect("sent").extend(add.iter().cloned());
                let body = json!({ "add": add });
                if let Ok(a) = http.post_json("/v1/crdt/tags/k", &body).await {
                    if a.status == 200 {
                        acked.lock().expect("acked").extend(add);
                    }
                }
                done_tx.send_modify(|n| *n += 1);
            }
        }));
    }
    done_rx.wait_for(|n| *n >= 40).await.expect("writers run");
    c.nodes[2].kill9();
    done_rx.wait_for(|n| *n >= 110).await.expect("writers run");
    c.nodes[2].restart().expect("restart n3");
    for w in writers {
        w.await.expect("writer");
    }
    let acked = acked.lock().expect("acked").clone();
    let sent: std::collections::BTreeSet<String> =
        sent.lock().expect("sent").iter().cloned().collect();
    assert!(
        acked.len() > 1000,
        "most adds are acknowledged ({})",
        acked.len()
    );

    c.wait_seen_as("n3", "up", CONVERGE).await.expect("n3 up");
    let cr = &c;
    // What n3 lost comes back through anti-entropy, which visits each
    // partition with each peer in turn (one exchange at a time, 300 ms
    // apart): a few of its rounds.
    let agreed = TestCluster::eventually(Duration::from_secs(120), "one set", || async move {
        let mut sets = Vec::new();
        for i in 0..3 {
            sets.push(cr.replica_crdt(i, "tags", "k").await);
        }
        sets.windows(2).all(|w| w[0] == w[1]) && sets[0].is_array()
    })
    .await;
    let mut sets = Vec::new();
    for i in 0..3 {
        sets.push(c.replica_crdt(i, "tags", "k").await);
    }
    let sizes: Vec<usize> = sets
        .iter()
        .map(|s| s.as_array().map_or(0, Vec::len))
        .collect();
    assert!(
        agreed.is_ok(),
        "every node's copy shows one set: sizes {sizes:?}"
    );
    let held: std::collections::BTreeSet<String> =
        serde_json::from_value(sets[0].clone()).expect("strings");
    let lost: Vec<&String> = acked.iter().filter(|e| !held.contains(*e)).collect();
    assert!(
        lost.is_empty(),
        "acknowledged adds lost: {:?}",
        &lost[..lost.len().min(5)]
    );
    assert!(held.is_subset(&sent), "only elements that were sent");

    // A remove with a read's context removes what it saw, everywhere.
    let read = c
        .client(0)
        .get_path("/v1/crdt/tags/k?r=3")
        .await
        .expect("get");
    let read: Value = serde_json::from_slice(&read.body).expect("json");
    let gone: Vec<String> = held.iter().take(100).cloned().collect();
    let removed = post(
        &c,
        1,
        "/v1/crdt/tags/k?w=3",
        json!({"remove": gone, "context": read["context"]}),
    )
    .await;
    assert_eq!(removed["size"], json!(held.len() - 100), "{removed}");
    let want: Vec<String> = held.iter().skip(100).cloned().collect();
    replicas_show(&c, "tags", "k", &json!(want)).await;
}

async fn client_for(c: &TestCluster, name: &str) -> Client {
    c.quic_client(name, None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_counts() {
    let c = typed_cluster(3, false);
    c.wait_converged(CONVERGE).await.expect("converged");
    let client = client_for(&c, "app").await;
    assert!(client
        .fetch("counters", "c")
        .await
        .expect("fetch")
        .is_empty());
    assert_eq!(client.increment("counters", "c", 5).await.expect("inc"), 5);
    assert_eq!(
        client.increment("counters", "c", -7).await.expect("dec"),
        -2
    );
    let v = client.fetch("counters", "c").await.expect("fetch");
    assert_eq!(
        (v.counter(), v.datatype()),
        (Some(-2), Some(Datatype::Counter))
    );
    // A set operation on a counter bucket is refused.
    let e = client
        .add_to_set("counters", "c", ["x"])
        .await
        .expect_err("wrong type");
    assert!(e.to_string().contains("wrong_datatype"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_adds_to_and_removes_from_sets() {
    let c = typed_cluster(3, false);
    c.wait_converged(CONVERGE).await.expect("converged");
    let client = client_for(&c, "app").await;
    let added = client
        .add_to_set("sets", "s", ["a", "b", "c"])
        .await
        .expect("add");
    assert_eq!(
        (added.size(), added.datatype(), added.set()),
        (Some(3), Some(Datatype::Set), None)
    );
    let read = client.fetch("sets", "s").await.expect("fetch");
    assert_eq!(read.set(), Some(vec!["a".into(), "b".into(), "c".into()]));
    assert_eq!(read.size(), Some(3));
    let after = client
        .remove_from_set("sets", "s", ["b"], &read.context)
        .await
        .expect("remove");
    assert_eq!(after.size(), Some(2));
    // The answer's context is the coordinator's whole set's: a remove
    // with it removes what the set held then.
    client
        .remove_from_set("sets", "s", ["a"], &after.context)
        .await
        .expect("remove with the answer's context");
    let read = client.fetch("sets", "s").await.expect("fetch");
    assert_eq!(read.set(), Some(vec!["c".into()]));
    let e = client
        .update(
            "sets",
            "s",
            quorra_client::datatypes::CrdtOp::Set {
                add: vec![],
                remove: vec!["a".into()],
            },
            None,
        )
        .await
        .expect_err("a remove needs a context");
    assert!(e.to_string().contains("context_required"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_updates_maps() {
    let c = typed_cluster(3, false);
    c.wait_converged(CONVERGE).await.expect("converged");
    let client = client_for(&c, "app").await;
    let up = MapUpdate::new()
        .increment("logins_counter", 2)
        .set("name_register", json!({"first": "Ann"}))
        .add("tags_set", ["x"])
        .enable("verified_flag")
        .update_map(
            "address_map",
            MapUpdate::new().set("city_register", json!("Oslo")),
        );
    client
        .update_map("maps", "u", up, None)
        .await
        .expect("update");
    let read = client.fetch("maps", "u").await.expect("fetch");
    let want = json!({
        "address_map": {"city_register": "Oslo"},
        "logins_counter": 2,
        "name_register": {"first": "Ann"},
        "tags_set": ["x"],
        "verified_flag": true,
    });
    assert_eq!(Value::Object(read.map().expect("a map")), want);
    let removed = client
        .update_map(
            "maps",
            "u",
            MapUpdate::new().remove("tags_set").disable("verified_flag"),
            Some(&read.context),
        )
        .await
        .expect("remove");
    let m = removed.map().expect("a map");
    assert!(!m.contains_key("tags_set"), "{m:?}");
    assert_eq!(m["verified_flag"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_writes_registers() {
    let c = typed_cluster(3, false);
    c.wait_converged(CONVERGE).await.expect("converged");
    let client = client_for(&c, "app").await;
    client
        .set_register("registers", "r", &json!("one"), None)
        .await
        .expect("write");
    // A blind write keeps the value it did not see beside it.
    client
        .set_register("registers", "r", &json!(2), None)
        .await
        .expect("write");
    let read = client.fetch("registers", "r").await.expect("fetch");
    assert_eq!(read.register(), Some(vec![json!("one"), json!(2)]));
    // A write with the read's context replaces both.
    let after = client
        .set_register("registers", "r", &json!({"v": 3}), Some(&read.context))
        .await
        .expect("write");
    assert_eq!(after.register(), Some(vec![json!({"v": 3})]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_enables_and_disables_flags() {
    let c = typed_cluster(3, false);
    c.wait_converged(CONVERGE).await.expect("converged");
    let client = client_for(&c, "app").await;
    let on = client
        .set_flag("flags", "f", true, None)
        .await
        .expect("enable");
    assert_eq!(on.flag(), Some(true));
    let off = client
        .set_flag("flags", "f", false, Some(&on.context))
        .await
        .expect("disable");
    assert_eq!(off.flag(), Some(false));
    assert_eq!(
        client.fetch("flags", "f").await.expect("fetch").flag(),
        Some(false)
    );
}
