//! Hardening (issue R): each test here closes one way to lose an
//! acknowledged write or to break a node with bad input, on real node
//! processes over real QUIC, RocksDB and HTTP.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use quorra_core::{Actor, VersionVector};
use quorra_tests::cluster::TestCluster;
use quorra_tests::quorra_bin;
use serde_json::Value;

const CONVERGE: Duration = Duration::from_secs(30);

/// A blind DELETE through a replica that never saw the key used to answer
/// 204 and touch no other replica: the value lived on. Every delete now runs
/// a write round, with the clock of a quorum read when no context is given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blind_delete_through_a_replica_that_lacks_the_key_deletes() {
    let mut c = TestCluster::start(&quorra_bin!(), 3).expect("cluster");
    c.wait_converged(CONVERGE).await.expect("converged");

    // n3 misses the write (three nodes: no fallback, so no hint either).
    c.nodes[2].kill9();
    let r = c
        .client(0)
        .put("b", "gone", "v1", None, "?w=2")
        .await
        .expect("put");
    assert_eq!(r.status, 204, "{}", r.text());
    c.nodes[2].restart().expect("restart");
    c.wait_seen_as("n3", "up", CONVERGE).await.expect("n3 up");
    assert!(
        c.replica_values(2, "b", "gone").await.is_empty(),
        "n3 must lack the key for this test"
    );

    let d = c.client(2).delete("b", "gone", None).await.expect("delete");
    assert_eq!(d.status, 204, "{}", d.text());
    // Every replica's own copy loses the value (replication past the write
    // quorum finishes in the background: wait for it, bounded).
    let cr = &c;
    let deleted = TestCluster::eventually(
        Duration::from_secs(10),
        "deleted everywhere",
        || async move {
            for i in 0..3 {
                if !cr.replica_values(i, "b", "gone").await.is_empty() {
                    return false;
                }
            }
            true
        },
    )
    .await;
    if let Err(e) = deleted {
        for n in &c.nodes {
            eprintln!("--- {} ---\n{}", n.id, n.log_tail());
        }
        let left: Vec<Vec<String>> = replica_copies(&c).await;
        panic!("the delete must delete on every replica: {e}; replicas hold {left:?}");
    }
}

async fn replica_copies(c: &TestCluster) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for i in 0..c.nodes.len() {
        out.push(c.replica_values(i, "b", "gone").await);
    }
    out
}

/// A context names counters of the node's own actors. A forged one used to
/// be trusted: `u64::MAX` overflowed the dot counter, and invented actors
/// were joined into the clock. Contexts are now authenticated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_or_overflowing_context_is_refused_with_bad_context() {
    let c = TestCluster::start(&quorra_bin!(), 1).expect("cluster");
    let client = c.client(0);
    let r = client.put("b", "k", "v1", None, "").await.expect("put");
    assert_eq!(r.status, 204, "{}", r.text());
    let real = r.context.expect("context");

    // The node's real actor, as anyone who reads the node's log can learn,
    // at the top of the counter range, inside a context the node issued
    // (its tag kept); and a context made up whole.
    let actor = own_actor(&c, 0).await;
    let overflow = retagged(&real, [(actor.clone(), u64::MAX)].into_iter().collect());
    let invented = retagged(
        &real,
        (0..40)
            .map(|i| (Actor::new(format!("ghost{i}"), 7), 1))
            .collect(),
    );
    for (what, ctx) in [("overflowing", overflow), ("invented", invented)] {
        let r = client
            .put("b", "k", "v2", Some(&ctx), "")
            .await
            .expect("put");
        assert_eq!(
            (r.status, r.error_code().as_deref()),
            (400, Some("bad_context")),
            "an {what} context must be refused: {}",
            r.text()
        );
        let d = client.delete("b", "k", Some(&ctx)).await.expect("delete");
        assert_eq!(
            (d.status, d.error_code().as_deref()),
            (400, Some("bad_context")),
            "an {what} context must be refused on delete: {}",
            d.text()
        );
    }
    // The node still serves, and the value is the one acknowledged.
    let got = client.get("b", "k").await.expect("get");
    assert_eq!(got.values(), ["v1"]);
    let r = client
        .put("b", "k", "v3", got.context.as_deref(), "")
        .await
        .expect("put with the real context");
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(client.get("b", "k").await.expect("get").values(), ["v3"]);
}

/// Contexts are authenticated under the cluster's secret, so any node takes
/// a context another node issued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_context_from_one_node_is_accepted_by_another() {
    let c = TestCluster::start(&quorra_bin!(), 3).expect("cluster");
    c.wait_converged(CONVERGE).await.expect("converged");
    let r = c
        .client(0)
        .put("b", "shared", "v1", None, "?w=3")
        .await
        .expect("put");
    assert_eq!(r.status, 204, "{}", r.text());
    let read = c.client(0).get("b", "shared").await.expect("get");
    let ctx = read.context.expect("context");
    let w = c
        .client(2)
        .put("b", "shared", "v2", Some(&ctx), "?w=3")
        .await
        .expect("put through n3");
    assert_eq!(w.status, 204, "{}", w.text());
    let got = c
        .client(1)
        .get_path("/v1/kv/b/shared?r=3")
        .await
        .expect("get");
    assert_eq!(got.values(), ["v2"], "n1's context replaced v1 through n3");
}

/// Siblings could add up past the frame limit: such an object could be
/// neither replicated nor read at r >= 2. The whole object is now capped
/// below the frame limit, with `object_too_large`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_object_fits_the_wire() {
    let c = TestCluster::start_with(&quorra_bin!(), 3, |_, cfg| {
        cfg.limits.max_value_bytes = 64 * 1024;
    })
    .expect("cluster");
    c.wait_converged(CONVERGE).await.expect("converged");
    let value = vec![b'x'; 60 * 1024];
    let mut accepted = 0;
    let mut refused = 0;
    // 30 blind writes of 60 KiB: 1.8 MiB of siblings, over the 1.1 MiB
    // frame limit these limits give.
    for i in 0..30 {
        let r = c
            .client(0)
            .put("b", "big", value.clone(), None, "?w=3")
            .await
            .expect("put");
        match (r.status, r.error_code().as_deref()) {
            (204, _) => accepted += 1,
            (413, Some("object_too_large")) => refused += 1,
            other => panic!(
                "write {i}: neither stored nor refused cleanly: {other:?} {}",
                r.text()
            ),
        }
    }
    assert!(
        accepted > 0 && refused > 0,
        "{accepted} accepted, {refused} refused"
    );
    // What was accepted reads back from every replica.
    let got = c.client(1).get_path("/v1/kv/b/big?r=3").await.expect("get");
    assert_eq!(got.status, 300, "{}", got.text());
}

/// `vv` in the context format (a format byte, msgpack, a 32-byte tag) with
/// the tag of the real context `real`: what a client that edits a context
/// can send.
fn retagged(real: &str, vv: VersionVector) -> String {
    let bytes = URL_SAFE_NO_PAD.decode(real).expect("base64");
    let tag = &bytes[bytes.len() - 32..];
    let mut out = vec![bytes[0]];
    out.extend(rmp_serde::to_vec(&vv).expect("encode"));
    out.extend_from_slice(tag);
    URL_SAFE_NO_PAD.encode(out)
}

/// A node's actor, from the replica debug view of a key it wrote.
async fn own_actor(c: &TestCluster, i: usize) -> Actor {
    let a = c
        .client(i)
        .get_path("/v1/debug/replica/b/k")
        .await
        .expect("replica view");
    let v: Value = serde_json::from_slice(&a.body).expect("json");
    // "node@epoch-in-hex:counter"
    let dot = v["siblings"][0]["dot"].as_str().expect("dot").to_owned();
    let (actor, _) = dot.rsplit_once(':').expect("counter");
    let (node, epoch) = actor.split_once('@').expect("epoch");
    Actor::new(node, u64::from_str_radix(epoch, 16).expect("hex epoch"))
}

/// One hint its owner cannot accept used to stop every later hint to that
/// owner, for good. A failing hint is now retried with backoff while the
/// others keep flowing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_hint_its_owner_refuses_does_not_wedge_the_others() {
    // n4 takes smaller objects than the others (a limit lowered on one node
    // during a rolling config change): the big hint is refused for good.
    let mut c = TestCluster::start_with(&quorra_bin!(), 4, |i, cfg| {
        cfg.limits.max_value_bytes = if i == 3 { 64 * 1024 } else { 1024 * 1024 };
        // Objects up to twice the largest value: n4 takes 128 KiB, the
        // others 2 MiB.
        cfg.limits.max_object_bytes = None;
    })
    .expect("cluster");
    c.wait_converged(CONVERGE).await.expect("converged");

    // Keys n4 owns whose stand-in is the same node, the big one first in
    // the hint store's order (by partition).
    let mut by_holder: std::collections::BTreeMap<String, Vec<(u64, String)>> = Default::default();
    for i in 0..400 {
        let key = format!("h{i}");
        let (partition, prefs, fallbacks) = c.placement("b", &key).await.expect("locate");
        if let (true, Some(f)) = (prefs.iter().any(|p| p == "n4"), fallbacks.first().cloned()) {
            by_holder.entry(f).or_default().push((partition, key));
        }
    }
    let (holder, mut keys) = by_holder
        .into_iter()
        .max_by_key(|(_, k)| k.len())
        .expect("keys n4 owns");
    keys.sort();
    let (big_partition, big) = keys[0].clone();
    let small: Vec<String> = keys
        .iter()
        .filter(|(p, _)| *p > big_partition)
        .take(10)
        .map(|(_, k)| k.clone())
        .collect();
    assert!(small.len() >= 5, "too few keys after {big}: {keys:?}");
    let holder = c.index(&holder);

    c.nodes[3].kill9();
    c.wait_seen_as("n4", "down", CONVERGE)
        .await
        .expect("n4 down");
    let writer = (holder + 1) % 3;
    for _ in 0..5 {
        let r = c
            .client(writer)
            .put("b", &big, vec![b'x'; 300 * 1024], None, "")
            .await
            .expect("put big");
        assert_eq!(r.status, 204, "{}", r.text());
    }
    for k in &small {
        let r = c
            .client(writer)
            .put("b", k, format!("value-{k}"), None, "")
            .await
            .expect("put small");
        assert_eq!(r.status, 204, "{}", r.text());
    }
    let held = c.hints_pending(holder).await.unwrap_or(0);
    assert!(held as usize > small.len(), "{held} hints held");

    c.nodes[3].restart().expect("restart n4");
    c.wait_seen_as("n4", "up", CONVERGE).await.expect("n4 up");
    let cr = &c;
    let small = &small;
    let delivered = TestCluster::eventually(
        Duration::from_secs(30),
        "small hints delivered",
        || async move {
            for k in small {
                if cr.replica_values(3, "b", k).await != [format!("value-{k}")] {
                    return false;
                }
            }
            true
        },
    )
    .await;
    if let Err(e) = delivered {
        eprintln!("--- holder ---\n{}", c.nodes[holder].log_tail());
        eprintln!("--- n4 ---\n{}", c.nodes[3].log_tail());
        panic!("{e}");
    }
    // The refused hint is kept (not dropped), to be retried.
    assert!(c.hints_pending(holder).await.unwrap_or(0) >= 1);
}

/// How many of `keys` node 0 still holds.
async fn held(c: &TestCluster, keys: &[String]) -> usize {
    let mut n = 0;
    for k in keys {
        if c.client(0).get("b", k).await.expect("get").status == 200 {
            n += 1;
        }
    }
    n
}

/// Writes `keys` through node 0 with `query`, each acknowledged.
async fn write_all(c: &TestCluster, keys: &[String], query: &str) {
    for k in keys {
        let r = c
            .client(0)
            .put("b", k, "v", None, query)
            .await
            .expect("put");
        assert_eq!(r.status, 204, "{}", r.text());
    }
}

/// A `dw` acknowledgement means the write-ahead log was fsynced. In crash
/// mode a killed node loses every write not yet synced, as in a power loss
/// (a plain kill -9 keeps the OS cache, so it cannot tell fsync from no
/// fsync). There `dw=1` writes survive and writes without `dw` do not; and
/// with the sync taken out of the `dw` path (a bug planted behind the fault
/// switch) the same check loses `dw` writes: it can fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dw_writes_survive_a_crash_that_loses_unsynced_writes() {
    let mut c = TestCluster::start_with(&quorra_bin!(), 1, |_, cfg| {
        cfg.fault_injection = true;
        cfg.crash_test_lose_unsynced = true;
    })
    .expect("cluster");
    let keys = |p: &str| -> Vec<String> { (0..20).map(|i| format!("{p}{i}")).collect() };
    let (durable, buffered, unsynced) = (keys("d"), keys("b"), keys("s"));

    write_all(&c, &durable, "?dw=1").await;
    write_all(&c, &buffered, "").await;
    c.nodes[0].kill9();
    c.nodes[0].restart().expect("restart");
    assert_eq!(held(&c, &durable).await, 20, "every dw write survives");
    let kept = held(&c, &buffered).await;
    assert!(
        kept < 20,
        "the crash mode loses unsynced writes ({kept} of 20 kept)"
    );

    // The planted bug: dw writes are no longer synced.
    let a = c
        .client(0)
        .put_json(
            "/v1/debug/faults",
            &serde_json::json!({ "skip_sync": true }),
        )
        .await
        .expect("faults");
    assert_eq!(a.status, 200, "{}", a.text());
    write_all(&c, &unsynced, "?dw=1").await;
    c.nodes[0].kill9();
    c.nodes[0].restart().expect("restart");
    let kept = held(&c, &unsynced).await;
    assert!(
        kept < 20,
        "with the sync removed from the dw path, dw writes must be lost ({kept} of 20 kept)"
    );
}

/// kv679 on real processes: a node that lost its unsynced writes in a
/// crash never reuses their dots, so its next write (acknowledged with
/// w=3, dw=3) is kept by the replicas that hold the lost one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_after_a_crash_that_lost_unsynced_writes_are_kept() {
    let mut c = TestCluster::start_with(&quorra_bin!(), 3, |_, cfg| {
        cfg.fault_injection = true;
        cfg.crash_test_lose_unsynced = true;
    })
    .expect("cluster");
    c.wait_converged(CONVERGE).await.expect("converged");
    // n1 coordinates (every node is a replica of every key here).
    let r = c
        .client(0)
        .put("b", "k679", "before", None, "?w=3")
        .await
        .expect("put");
    assert_eq!(r.status, 204, "{}", r.text());
    c.nodes[0].kill9();
    c.nodes[0].restart().expect("restart");
    c.wait_seen_as("n1", "up", CONVERGE).await.expect("n1 up");
    assert!(
        c.replica_values(0, "b", "k679").await.is_empty(),
        "n1 lost the unsynced write"
    );
    let r = c
        .client(0)
        .put("b", "k679", "after", None, "?w=3&dw=3")
        .await
        .expect("put");
    assert_eq!(r.status, 204, "{}", r.text());
    for i in 1..3 {
        assert_eq!(
            c.replica_values(i, "b", "k679").await,
            ["after", "before"],
            "replica {i} kept both writes"
        );
    }
}

/// A request's explicit quorum past what the cluster can give is refused
/// with the counts, never silently capped; capped bucket defaults show in
/// `/v1/cluster/status`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_quorums_past_the_cluster_are_refused_not_capped() {
    let c = TestCluster::start(&quorra_bin!(), 2).expect("cluster");
    c.wait_converged(CONVERGE).await.expect("converged");
    for (what, answer) in [
        ("w=3", c.client(0).put("b", "cap", "v", None, "?w=3").await),
        (
            "dw=3",
            c.client(0).put("b", "cap", "v", None, "?dw=3").await,
        ),
        ("r=3", c.client(0).get_path("/v1/kv/b/cap?r=3").await),
    ] {
        let a = answer.expect("answer");
        assert_eq!(
            (a.status, a.error_code().as_deref()),
            (503, Some("quorum_unavailable")),
            "{what} on two nodes: {}",
            a.text()
        );
    }
    assert_eq!(c.client(0).get("b", "cap").await.expect("get").status, 404);
    let r = c
        .client(0)
        .put("b", "cap", "v", None, "")
        .await
        .expect("put");
    assert_eq!(r.status, 204, "defaults are capped: {}", r.text());
    let s = c
        .client(0)
        .get_path("/v1/cluster/status")
        .await
        .expect("status");
    let v: Value = serde_json::from_slice(&s.body).expect("json");
    assert_eq!(v["bucket_defaults"]["capped"], true, "{v}");
    assert_eq!(v["bucket_defaults"]["effective"]["n_val"], 2, "{v}");
}
