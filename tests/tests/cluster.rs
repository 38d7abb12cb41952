//! Real clusters of 3 and 5 `quorra node` processes on loopback, with real
//! QUIC (mutual TLS) and real RocksDB: replication, quorums, sloppy quorum
//! and hinted handoff, read repair, failure detection.

use std::time::Duration;

use quorra_tests::cluster::{test_gossip, TestCluster};
use quorra_tests::quorra_bin;

const CONVERGE: Duration = Duration::from_secs(20);

/// The failure detection bound for `n` nodes with the test timings, plus
/// slack for process scheduling on a loaded 2-core machine.
fn detection_limit(n: usize) -> Duration {
    Duration::from_millis(test_gossip().detection_bound_ms(n) + 2_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_and_survive_a_kill() {
    let mut c = TestCluster::start(&quorra_bin!(), 3).expect("cluster");
    c.wait_converged(CONVERGE).await.expect("converged");

    // A write through any node is read through every other.
    for writer in 0..3 {
        let key = format!("k{writer}");
        let r = c
            .client(writer)
            .put("b", &key, format!("from n{}", writer + 1), None, "")
            .await
            .expect("put");
        assert_eq!(r.status, 204, "{}", r.text());
        for reader in 0..3 {
            let got = c.client(reader).get("b", &key).await.expect("get");
            assert_eq!(
                (got.status, got.text()),
                (200, format!("from n{}", writer + 1))
            );
        }
    }

    // kill -9 one node: with n=3, r=w=2, reads and writes keep succeeding.
    c.nodes[2].kill9();
    for i in 0..10 {
        let key = format!("after-kill-{i}");
        let r = c
            .client(i % 2)
            .put("b", &key, "v", None, "?w=2")
            .await
            .expect("put");
        assert_eq!(r.status, 204, "write {i}: {}", r.text());
        let got = c.client((i + 1) % 2).get("b", &key).await.expect("get");
        assert_eq!((got.status, got.text()), (200, "v".to_owned()), "read {i}");
    }
    let old = c.client(1).get("b", "k2").await.expect("get");
    assert_eq!(old.status, 200);

    // The killed node is marked down on every node within the bound...
    let limit = detection_limit(3);
    let took = c
        .wait_seen_as("n3", "down", limit)
        .await
        .expect("n3 down everywhere");
    eprintln!("n3 seen down by all in {took:?} (limit {limit:?})");
    // ...and is back up after a restart, without operator action.
    c.nodes[2].restart().expect("restart");
    c.wait_seen_as("n3", "up", CONVERGE)
        .await
        .expect("n3 up again");
    let got = c.client(2).get("b", "after-kill-3").await.expect("get");
    assert_eq!(got.status, 200, "the restarted node serves reads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_any_node_writes_every_node_reads() {
    let c = TestCluster::start(&quorra_bin!(), 5).expect("cluster");
    c.wait_converged(CONVERGE).await.expect("converged");
    for writer in 0..5 {
        let key = format!("five-{writer}");
        let r = c
            .client(writer)
            .put("b", &key, format!("v{writer}"), None, "")
            .await
            .expect("put");
        assert_eq!(r.status, 204, "{}", r.text());
        for reader in 0..5 {
            let got = c.client(reader).get("b", &key).await.expect("get");
            assert_eq!(
                (got.status, got.text()),
                (200, format!("v{writer}")),
                "n{} reads {key}",
                reader + 1
            );
        }
    }
    // Exactly the preference list holds each key.
    let (prefs, fallbacks) = c.locate("b", "five-0").await.expect("locate");
    assert_eq!((prefs.len(), fallbacks.len()), (3, 2));
    for id in &prefs {
        assert_eq!(
            c.replica_values(c.index(id), "b", "five-0").await,
            ["v0"],
            "{id} holds it"
        );
    }
    for id in &fallbacks {
        assert!(
            c.replica_values(c.index(id), "b", "five-0")
                .await
                .is_empty(),
            "{id} does not"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sloppy_quorum_hints_and_handoff() {
    let mut c = TestCluster::start_with(&quorra_bin!(), 5, |_, cfg| {
        cfg.log = "quorra_node=debug".into()
    })
    .expect("cluster");
    c.wait_converged(CONVERGE).await.expect("converged");
    let (prefs, fallbacks) = c.locate("b", "sloppy").await.expect("locate");
    let (a, b, d) = (c.index(&prefs[0]), c.index(&prefs[1]), c.index(&prefs[2]));

    // Two of three primaries down.
    c.nodes[b].kill9();
    c.nodes[d].kill9();
    for id in [&prefs[1], &prefs[2]] {
        c.wait_seen_as(id, "down", detection_limit(5))
            .await
            .expect("down");
    }

    // w=2 succeeds by sloppy quorum; pw=2 is refused with the counts.
    let r = c
        .client(a)
        .put("b", "sloppy", "hinted", None, "?w=2")
        .await
        .expect("put");
    assert_eq!(r.status, 204, "{}", r.text());
    let refused = c
        .client(a)
        .put("b", "sloppy", "never", None, "?w=2&pw=2")
        .await
        .expect("put");
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert_eq!(refused.error_code().as_deref(), Some("quorum_unavailable"));
    assert!(
        refused.text().contains("from primaries"),
        "{}",
        refused.text()
    );
    let got = c.client(a).get("b", "sloppy").await.expect("get");
    assert_eq!(got.values(), ["hinted"], "the refused write left nothing");

    // The fallbacks hold hints, not replicas.
    let fallback_idx: Vec<usize> = fallbacks.iter().map(|f| c.index(f)).collect();
    let mut held = 0;
    for &f in &fallback_idx {
        held += c.hints_pending(f).await.expect("status");
        assert!(c.replica_values(f, "b", "sloppy").await.is_empty());
    }
    assert!(held >= 1, "a fallback holds the hint");

    // More writes while the two are down, through every live node: each key
    // with a down primary gets hints on its fallbacks.
    let live: Vec<usize> = (0..5).filter(|&i| i != b && i != d).collect();
    let keys: Vec<String> = (0..20).map(|i| format!("hinted-{i}")).collect();
    for (i, key) in keys.iter().enumerate() {
        let r = c
            .client(live[i % live.len()])
            .put("b", key, format!("v-{key}"), None, "?w=2")
            .await
            .expect("put");
        assert_eq!(r.status, 204, "{key}: {}", r.text());
    }

    // Hints are durable: a fallback killed and restarted still holds them.
    let mut holder = None;
    for &f in &fallback_idx {
        if c.hints_pending(f).await.unwrap_or(0) > 0 {
            holder = Some(f);
        }
    }
    let holder = holder.expect("a fallback holds hints");
    let before = c.hints_pending(holder).await.expect("status");
    c.nodes[holder].kill9();
    c.nodes[holder].restart().expect("restart");
    assert_eq!(
        c.hints_pending(holder).await,
        Some(before),
        "hints survive a kill -9"
    );

    // The owners return: every hint is delivered, replica by replica, and
    // the hints are gone.
    c.nodes[b].restart().expect("restart");
    c.nodes[d].restart().expect("restart");
    let cr = &c;
    TestCluster::eventually(CONVERGE, "every hint delivered", || async move {
        let mut all = true;
        for i in 0..5 {
            all &= cr.hints_pending(i).await == Some(0);
        }
        all
    })
    .await
    .expect("handoff");
    // Every node knows every other again before placements are compared.
    c.wait_converged(CONVERGE)
        .await
        .expect("converged after restarts");
    for id in &prefs {
        assert_eq!(
            c.replica_values(c.index(id), "b", "sloppy").await,
            ["hinted"],
            "{id} got its write"
        );
    }
    let mut missing = Vec::new();
    for key in &keys {
        let (owners, _) = c.locate("b", key).await.expect("locate");
        for id in &owners {
            if c.replica_values(c.index(id), "b", key).await != [format!("v-{key}")] {
                missing.push(format!("{id} lacks {key} (owners {owners:?})"));
            }
        }
    }
    if !missing.is_empty() {
        for n in &c.nodes {
            eprintln!("--- {} ---\n{}", n.id, n.log_tail());
        }
        panic!(
            "hinted writes not delivered: {missing:?}; killed {} and {}, holder {}",
            prefs[1], prefs[2], c.nodes[holder].id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_repairs_a_stale_replica() {
    let mut c = TestCluster::start_with(&quorra_bin!(), 3, |_, cfg| {
        cfg.log = "quorra_node=debug".into()
    })
    .expect("cluster");
    c.wait_converged(CONVERGE).await.expect("converged");
    let r = c
        .client(0)
        .put("b", "rr", "v1", None, "?w=3")
        .await
        .expect("put");
    assert_eq!(r.status, 204, "{}", r.text());
    let ctx = r.context.expect("context");

    // n3 misses v2 (three nodes: no fallback, so no hint either).
    c.nodes[2].kill9();
    let r = c
        .client(0)
        .put("b", "rr", "v2", Some(&ctx), "?w=2")
        .await
        .expect("put");
    assert_eq!(r.status, 204, "{}", r.text());
    c.nodes[2].restart().expect("restart");
    c.wait_seen_as("n3", "up", CONVERGE).await.expect("n3 up");
    assert_eq!(c.replica_values(2, "b", "rr").await, ["v1"], "n3 is stale");

    let got = c.client(0).get("b", "rr").await.expect("get");
    assert_eq!(got.values(), ["v2"]);
    let cr = &c;
    let repaired = TestCluster::eventually(
        Duration::from_secs(10),
        "read repair of n3",
        // Each read repairs the replicas that answered it; on a loaded
        // machine the restarted node may miss the first one.
        || async move {
            let _ = cr.client(0).get("b", "rr").await;
            cr.replica_values(2, "b", "rr").await == ["v2"]
        },
    )
    .await;
    if let Err(e) = repaired {
        for n in &c.nodes {
            eprintln!("--- {} ---\n{}", n.id, n.log_tail());
        }
        panic!("{e}");
    }
}

/// Three nodes with n = 3 have no fallback to stand in for a dead one: its
/// coordinators keep a durable hint for each write it misses, and hand them
/// over when it is back. With no read in between, the returned node alone
/// (the other two paused, `r=1&pr=1`) serves every key within 60 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_no_fallback_gets_every_write_it_missed_through_hints() {
    let mut c = TestCluster::start(&quorra_bin!(), 3).expect("cluster");
    c.wait_converged(CONVERGE).await.expect("converged");
    c.nodes[2].kill9();
    for i in 0..100 {
        let r = c
            .client(i % 2)
            .put("b", &format!("missed-{i}"), format!("v{i}"), None, "?w=2")
            .await
            .expect("put");
        assert_eq!(r.status, 204, "write {i}: {}", r.text());
    }
    // Once n3 is known down, every call to it has ended, and each write's
    // coordinator holds a hint for it: 100 in all.
    c.wait_seen_as("n3", "down", detection_limit(3))
        .await
        .expect("n3 down");
    let cr = &c;
    TestCluster::eventually(Duration::from_secs(10), "100 hints for n3", || async move {
        let held = cr.hints_pending(0).await.unwrap_or(0) + cr.hints_pending(1).await.unwrap_or(0);
        held == 100
    })
    .await
    .expect("a hint per missed write");
    let keys: Vec<String> = (0..100).map(|i| format!("missed-{i}")).collect();
    let seen = n3_alone_after_handoff(&mut c, &keys).await;
    let mut missing = Vec::new();
    for (i, (status, body)) in seen.into_iter().enumerate() {
        if (status, body.as_str()) != (200, format!("v{i}").as_str()) {
            if missing.is_empty() {
                eprintln!("missed-{i} through n3 alone: {status} {body}");
            }
            missing.push(i);
        }
    }
    assert!(
        missing.is_empty(),
        "n3 alone lacks {} of 100 keys it missed, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}

/// Deletes reach a replica that was down for them the same way: the
/// coordinators keep the tombstones as hints, and once it is back and they
/// are handed over, the node alone (the other two paused) finds every
/// deleted key gone rather than serving its old value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_a_down_replica_missed_reach_it_through_hints() {
    let mut c = TestCluster::start(&quorra_bin!(), 3).expect("cluster");
    c.wait_converged(CONVERGE).await.expect("converged");
    for i in 0..20 {
        let r = c
            .client(0)
            .put("b", &format!("doomed-{i}"), "v", None, "?w=3")
            .await
            .expect("put");
        assert_eq!(r.status, 204, "write {i}: {}", r.text());
    }
    c.nodes[2].kill9();
    c.wait_seen_as("n3", "down", detection_limit(3))
        .await
        .expect("n3 down");
    for i in 0..20 {
        // No context: the coordinator reads first and deletes what it saw.
        let r = c
            .client(i % 2)
            .delete("b", &format!("doomed-{i}"), None)
            .await
            .expect("delete");
        assert_eq!(r.status, 204, "delete {i}: {}", r.text());
    }
    let keys: Vec<String> = (0..20).map(|i| format!("doomed-{i}")).collect();
    let seen = n3_alone_after_handoff(&mut c, &keys).await;
    let alive: Vec<(usize, u16)> = seen
        .into_iter()
        .enumerate()
        .filter(|(_, (status, _))| *status != 404)
        .map(|(i, (status, _))| (i, status))
        .collect();
    assert!(
        alive.is_empty(),
        "n3 alone still serves {} of 20 deleted keys: {alive:?}",
        alive.len()
    );
}

/// Restarts n3 (killed earlier), waits until n1 and n2 have handed over
/// every hint they held for it, then reads `keys` through n3 alone (n1 and
/// n2 paused meanwhile) with `r=1&pr=1`: each key's status and body.
async fn n3_alone_after_handoff(c: &mut TestCluster, keys: &[String]) -> Vec<(u16, String)> {
    c.nodes[2].restart().expect("restart");
    c.wait_seen_as("n3", "up", CONVERGE)
        .await
        .expect("n3 up again");
    let cr = &*c;
    TestCluster::eventually(Duration::from_secs(60), "the hints for n3 delivered", || async move {
        cr.hints_pending(0).await == Some(0) && cr.hints_pending(1).await == Some(0)
    })
    .await
    .expect("handoff");
    c.nodes[0].pause().expect("pause n1");
    c.nodes[1].pause().expect("pause n2");
    let mut seen = Vec::new();
    for key in keys {
        let got = c
            .client(2)
            .get_path(&format!("/v1/kv/b/{key}?r=1&pr=1"))
            .await
            .expect("get");
        seen.push((got.status, got.text()));
    }
    c.nodes[0].resume().expect("resume n1");
    c.nodes[1].resume().expect("resume n2");
    seen
}
