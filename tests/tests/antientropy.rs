//! Active anti-entropy on real nodes, with hinted handoff switched off
//! (`handoff.max_hints = 0`: every hint is dropped) and no client reads,
//! so neither hints nor read repair can do its work: a wiped disk refills,
//! a `w=1` write cut off by a partition reaches every replica, trees are
//! built once and kept across a clean restart.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use quorra_node::config::AntiEntropyConfig;
use quorra_tests::cluster::TestCluster;
use quorra_tests::quorra_bin;
use serde_json::{json, Value};

const CONVERGE: Duration = Duration::from_secs(30);

/// Hints off, anti-entropy on at its default rate.
fn anti_entropy_only(config: &mut quorra_node::config::NodeConfig) {
    config.handoff.max_hints = 0;
    config.anti_entropy = AntiEntropyConfig::default();
}

/// Node `i`'s `/v1/cluster/status`.
async fn status(c: &TestCluster, i: usize) -> Value {
    match c.client(i).get_path("/v1/cluster/status").await {
        Ok(a) => serde_json::from_slice(&a.body).unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

/// Node `i`'s anti-entropy counter `name` (0 when unreadable).
async fn ae(c: &TestCluster, i: usize, name: &str) -> u64 {
    status(c, i).await["anti_entropy"][name]
        .as_u64()
        .unwrap_or(0)
}

/// Writes `keys` keys `{prefix}{i}` = `v{i}` with `query`, 8 at a time.
async fn write_keys(c: &TestCluster, prefix: &str, keys: usize, query: &str) {
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..8 {
        let clients: Vec<_> = (0..c.nodes.len()).map(|i| c.client(i)).collect();
        let (prefix, query) = (prefix.to_owned(), query.to_owned());
        tasks.spawn(async move {
            for i in (t..keys).step_by(8) {
                let client = &clients[i % clients.len()];
                let key = format!("{prefix}{i}");
                let r = client
                    .put("b", &key, format!("v{i}"), None, &query)
                    .await
                    .expect("put");
                assert_eq!(r.status, 204, "write {key}: {}", r.text());
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("writer");
    }
}

/// The keys among `{prefix}{i}` for `i` in `which` that node `i` does not
/// hold itself with their value (its own copy: no read, no repair).
async fn missing_on(c: &TestCluster, node: usize, prefix: &str, which: &[usize]) -> Vec<usize> {
    let mut missing = Vec::new();
    for &i in which {
        let values = c.replica_values(node, "b", &format!("{prefix}{i}")).await;
        if values != [format!("v{i}")] {
            missing.push(i);
        }
    }
    missing
}

/// Each node's anti-entropy counter `name`.
async fn counters(c: &TestCluster, name: &str) -> Vec<u64> {
    let mut out = Vec::new();
    for i in 0..c.nodes.len() {
        out.push(ae(c, i, name).await);
    }
    out
}

/// Asks `nodes` for an exchange of every partition they hold
/// (`POST /v1/admin/repair`) and waits until each has run them all.
async fn full_round(c: &TestCluster, nodes: &[usize]) {
    let mut want = Vec::new();
    for &i in nodes {
        let before = ae(c, i, "exchanges").await;
        let a = c
            .client(i)
            .post_json("/v1/admin/repair", &json!({}))
            .await
            .expect("repair");
        assert_eq!(a.status, 202, "{}", a.text());
        let queued: Value = serde_json::from_slice(&a.body).expect("json");
        let queued = queued["partitions_queued"].as_u64().expect("queued");
        // An exchange per partition with each of its two other replicas.
        want.push((i, before + 2 * queued));
    }
    let (cr, wr) = (c, &want);
    TestCluster::eventually(
        Duration::from_secs(180),
        "a round of exchanges",
        || async move {
            for &(i, at_least) in wr {
                let s = status(cr, i).await;
                let done = s["anti_entropy"]["exchanges"].as_u64().unwrap_or(0);
                let idle =
                    s["anti_entropy"]["requested"] == 0 && s["anti_entropy"]["running"].is_null();
                if done < at_least || !idle {
                    return false;
                }
            }
            true
        },
    )
    .await
    .expect("exchanges");
}

/// A wiped disk, refilled by anti-entropy alone: 10,000 keys on three
/// nodes with n = 3; n3 loses its data dir and comes back. With hints off
/// and no client reads, its exchanges (and theirs with it) bring back
/// every key within five minutes, and the status reports the progress on
/// the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anti_entropy_alone_refills_a_wiped_disk() {
    const KEYS: usize = 10_000;
    let mut c = TestCluster::start_with(&quorra_bin!(), 3, |_, cfg| anti_entropy_only(cfg))
        .expect("cluster");
    c.wait_converged(CONVERGE).await.expect("converged");
    let started = Instant::now();
    write_keys(&c, "w-", KEYS, "?w=3").await;
    eprintln!("{KEYS} keys written in {:?}", started.elapsed());

    c.nodes[2].kill9();
    std::fs::remove_dir_all(&c.nodes[2].data_dir).expect("wipe n3");
    c.nodes[2].restart().expect("restart n3");
    let cr = &c;
    TestCluster::eventually(CONVERGE, "n3 rejoined", || async move {
        status(cr, 2).await["joined"] == true
    })
    .await
    .expect("n3 rejoined");
    let t0 = Instant::now();
    let all: Vec<usize> = (0..KEYS).collect();
    let mut missing = all.clone();
    let mut progress = BTreeSet::new();
    let limit = Duration::from_secs(300);
    while t0.elapsed() < limit {
        tokio::time::sleep(Duration::from_secs(2)).await;
        // What the status reports: fetched by n3, pushed to it by n1, n2
        // (which are in sync with each other, so push only to n3).
        let repaired = ae(&c, 2, "keys_fetched").await
            + ae(&c, 0, "keys_pushed").await
            + ae(&c, 1, "keys_pushed").await;
        progress.insert(repaired.min(KEYS as u64));
        eprintln!("{:?}: {repaired} keys repaired", t0.elapsed());
        if repaired >= KEYS as u64 {
            missing = missing_on(&c, 2, "w-", &missing).await;
            if missing.is_empty() {
                break;
            }
        }
    }
    missing = missing_on(&c, 2, "w-", &missing).await;
    assert!(
        missing.is_empty(),
        "after {:?} n3 lacks {} of {KEYS} keys, e.g. {:?}",
        t0.elapsed(),
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    eprintln!("n3 refilled in {:?}", t0.elapsed());
    assert!(
        progress.iter().any(|&p| p > 0 && p < KEYS as u64),
        "the status showed no progress along the way: {progress:?}"
    );
}

/// A `w=1` write whose replication a partition cut off: the coordinator
/// alone holds it, its hints are dropped (hints off), and nobody reads it.
/// After the partition heals, anti-entropy puts it on the other two
/// replicas. Then the trees: repeated exchanges of in-sync replicas build
/// none anew, compare a few hundred bytes per partition, and a clean
/// restart keeps them (none built after it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_w1_write_cut_off_by_a_partition_reaches_every_replica() {
    let mut c = TestCluster::start_with(&quorra_bin!(), 3, |_, cfg| {
        anti_entropy_only(cfg);
        cfg.fault_injection = true;
    })
    .expect("cluster");
    c.wait_converged(CONVERGE).await.expect("converged");
    let peers: Vec<_> = c.nodes.iter().map(|n| n.peer.expect("peer")).collect();
    // n1 on one side, n2 and n3 on the other.
    let cuts = [
        json!({ "drop_to": [peers[1], peers[2]] }),
        json!({ "drop_to": [peers[0]] }),
        json!({ "drop_to": [peers[0]] }),
    ];
    for (i, cut) in cuts.iter().enumerate() {
        let a = c
            .client(i)
            .put_json("/v1/debug/faults", cut)
            .await
            .expect("faults");
        assert_eq!(a.status, 200, "{}", a.text());
    }
    const KEYS: usize = 20;
    for i in 0..KEYS {
        let r = c
            .client(0)
            .put("b", &format!("cut-{i}"), format!("v{i}"), None, "?w=1")
            .await
            .expect("put");
        assert_eq!(r.status, 204, "write {i}: {}", r.text());
    }
    let all: Vec<usize> = (0..KEYS).collect();
    assert_eq!(missing_on(&c, 0, "cut-", &all).await, Vec::<usize>::new());
    assert_eq!(
        missing_on(&c, 1, "cut-", &all).await.len(),
        KEYS,
        "the partition kept the writes from n2"
    );
    for i in 0..3 {
        let a = c
            .client(i)
            .put_json("/v1/debug/faults", &json!({}))
            .await
            .expect("heal");
        assert_eq!(a.status, 200, "{}", a.text());
    }
    let cr = &c;
    let allr = &all;
    TestCluster::eventually(
        Duration::from_secs(240),
        "every replica holds the writes",
        || async move {
            missing_on(cr, 1, "cut-", allr).await.is_empty()
                && missing_on(cr, 2, "cut-", allr).await.is_empty()
        },
    )
    .await
    .expect("anti-entropy repaired n2 and n3");
    let pushed = ae(&c, 0, "keys_pushed").await;
    let fetched = ae(&c, 1, "keys_fetched").await + ae(&c, 2, "keys_fetched").await;
    assert!(
        pushed + fetched >= 2 * KEYS as u64,
        "pushed {pushed}, fetched {fetched}"
    );

    // In sync now. A full round on demand builds each tree at most once
    // (those no exchange needed yet); a second round builds none.
    full_round(&c, &[0, 1, 2]).await;
    let built = counters(&c, "trees_built").await;
    for (i, b) in built.iter().enumerate() {
        let held = ae(&c, i, "partitions_held").await;
        assert!(
            *b <= held,
            "n{} built {b} trees for {held} partitions",
            i + 1
        );
    }
    let exchanges_before = ae(&c, 0, "exchanges").await;
    let bytes_before = ae(&c, 0, "bytes_compared").await;
    full_round(&c, &[0, 1, 2]).await;
    assert_eq!(
        counters(&c, "trees_built").await,
        built,
        "repeated exchanges rebuilt trees"
    );
    let exchanges = ae(&c, 0, "exchanges").await - exchanges_before;
    let per_exchange = (ae(&c, 0, "bytes_compared").await - bytes_before) / exchanges.max(1);
    assert!(
        per_exchange <= 1_024,
        "in-sync replicas compared {per_exchange} bytes per exchange"
    );

    // A clean restart keeps n2's trees: its exchanges after it build none.
    c.nodes[1].terminate().expect("stop n2");
    c.nodes[1].restart().expect("restart n2");
    c.wait_seen_as("n2", "up", CONVERGE).await.expect("n2 up");
    full_round(&c, &[1]).await;
    assert_eq!(
        ae(&c, 1, "trees_built").await,
        0,
        "n2 rebuilt trees it saved"
    );
}

/// `POST /v1/admin/repair` refuses what it cannot do with a stable code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repair_of_a_partition_that_does_not_exist_is_refused() {
    let c = TestCluster::start_with(&quorra_bin!(), 1, |_, cfg| anti_entropy_only(cfg))
        .expect("cluster");
    c.wait_converged(CONVERGE).await.expect("converged");
    let a = c
        .client(0)
        .post_json("/v1/admin/repair?partition=1000000", &json!({}))
        .await
        .expect("repair");
    assert_eq!(a.status, 400, "{}", a.text());
    assert_eq!(a.error_code().as_deref(), Some("invalid_parameter"));
    let a = c
        .client(0)
        .post_json("/v1/admin/repair?partition=x", &json!({}))
        .await
        .expect("repair");
    assert_eq!(a.status, 400, "{}", a.text());
}

/// A record that rots on disk while its node is stopped (one byte flipped
/// through the engine's raw API; the tree saved at the clean stop still
/// holds the digest it was written with, so no exchange can see it) is
/// found by the scrub, moved aside, and fetched back from a healthy replica
/// by the next exchange: hints off, no client reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_rotten_on_disk_is_found_by_the_scrub_and_repaired() {
    use quorra_core::{BucketName, Key, Limits};
    use quorra_node::storage::rocks::RocksEngine;
    use quorra_node::storage::{Durability, Engine, Space};

    let mut c = TestCluster::start_with(&quorra_bin!(), 3, |_, cfg| {
        anti_entropy_only(cfg);
        cfg.anti_entropy.scrub_records_per_second = 1_000;
    })
    .expect("cluster");
    c.wait_converged(CONVERGE).await.expect("converged");
    write_keys(&c, "bystander-", 50, "?w=3").await;
    let r = c
        .client(0)
        .put("b", "victim", "precious-bytes", None, "?w=3")
        .await
        .expect("put");
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(c.nodes[2].terminate().expect("stop n3").success());
    {
        let engine = RocksEngine::open(&c.nodes[2].data_dir.join("db")).expect("open n3's db");
        let l = Limits::default();
        let skey = quorra_node::store::storage_key(
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
    c.nodes[2].restart().expect("restart n3");
    c.wait_seen_as("n3", "up", CONVERGE).await.expect("n3 up");
    // Only the status is read until the scrub found it: a read of n3's
    // copy would find it too.
    let cr = &c;
    TestCluster::eventually(
        Duration::from_secs(60),
        "the scrub finds the rot",
        || async move {
            status(cr, 2).await["anti_entropy"]["scrub"]["corrupt_found"].as_u64() == Some(1)
        },
    )
    .await
    .expect("scrub");
    TestCluster::eventually(
        Duration::from_secs(180),
        "n3's copy repaired",
        || async move { cr.replica_values(2, "b", "victim").await == ["precious-bytes"] },
    )
    .await
    .expect("repaired from a healthy replica");
    let s = status(&c, 2).await;
    assert_eq!(s["corrupt_objects_found"], 1, "{s}");
    assert!(
        ae(&c, 2, "keys_fetched").await
            + ae(&c, 0, "keys_pushed").await
            + ae(&c, 1, "keys_pushed").await
            >= 1
    );
}

/// Deletes a replica missed while it was away reach it through
/// anti-entropy alone (hints off, no reads): it ends holding the
/// tombstones, so no value comes back from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_a_replica_missed_reach_it_through_anti_entropy() {
    const KEYS: usize = 30;
    let mut c = TestCluster::start_with(&quorra_bin!(), 3, |_, cfg| anti_entropy_only(cfg))
        .expect("cluster");
    c.wait_converged(CONVERGE).await.expect("converged");
    write_keys(&c, "doomed-", KEYS, "?w=3").await;
    c.nodes[2].kill9();
    c.wait_seen_as("n3", "down", CONVERGE)
        .await
        .expect("n3 down");
    for i in 0..KEYS {
        let r = c
            .client(i % 2)
            .delete("b", &format!("doomed-{i}"), None)
            .await
            .expect("delete");
        assert_eq!(r.status, 204, "delete {i}: {}", r.text());
    }
    c.nodes[2].restart().expect("restart n3");
    c.wait_seen_as("n3", "up", CONVERGE).await.expect("n3 up");
    let cr = &c;
    TestCluster::eventually(
        Duration::from_secs(240),
        "n3 holds every tombstone",
        || async move {
            for i in 0..KEYS {
                let a = cr
                    .client(2)
                    .get_path(&format!("/v1/debug/replica/b/doomed-{i}"))
                    .await;
                let Ok(a) = a else { return false };
                let v: Value = serde_json::from_slice(&a.body).unwrap_or(Value::Null);
                let tombstone = v["siblings"]
                    .as_array()
                    .is_some_and(|s| !s.is_empty() && s.iter().all(|s| s["deleted"] == true));
                if !tombstone {
                    return false;
                }
            }
            true
        },
    )
    .await
    .expect("tombstones on n3");
    c.nodes[0].pause().expect("pause n1");
    c.nodes[1].pause().expect("pause n2");
    for i in 0..KEYS {
        let got = c
            .client(2)
            .get_path(&format!("/v1/kv/b/doomed-{i}?r=1&pr=1"))
            .await
            .expect("get");
        assert_eq!(
            got.status,
            404,
            "doomed-{i} through n3 alone: {}",
            got.text()
        );
    }
    c.nodes[0].resume().expect("resume n1");
    c.nodes[1].resume().expect("resume n2");
}
