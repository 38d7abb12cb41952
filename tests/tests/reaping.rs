//! Tombstone reaping on real nodes: a tombstone is reaped only once every
//! replica of its key holds it and the grace period has passed, nothing
//! deleted comes back, and the engine itself lets go of the key after a
//! compaction.

use std::time::Duration;

use quorra_tests::cluster::TestCluster;
use quorra_tests::quorra_bin;
use serde_json::Value;

const CONVERGE: Duration = Duration::from_secs(30);
const KEYS: usize = 24;
const GRACE_MS: u64 = 5_000;

/// Node `i`'s tombstone counter `name` (`None`: unreadable).
async fn tombstones(c: &TestCluster, i: usize, name: &str) -> Option<u64> {
    let a = c.client(i).get_path("/v1/cluster/status").await.ok()?;
    let v: Value = serde_json::from_slice(&a.body).ok()?;
    v["tombstones"][name].as_u64()
}

/// The sum of counter `name` over nodes `which`.
async fn total(c: &TestCluster, which: &[usize], name: &str) -> u64 {
    let mut sum = 0;
    for &i in which {
        sum += tombstones(c, i, name).await.unwrap_or(0);
    }
    sum
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tombstone_is_reaped_only_once_every_replica_holds_it() {
    let c = TestCluster::start_with(&quorra_bin!(), 3, |_, cfg| {
        cfg.tombstones.grace_ms = GRACE_MS;
        // Short exchange cycles: reaping passes follow exchanges.
        cfg.partitions = 64;
        cfg.anti_entropy.interval_ms = 20;
    })
    .expect("cluster");
    c.wait_converged(CONVERGE).await.expect("converged");
    let keys: Vec<String> = (0..KEYS).map(|i| format!("doomed-{i}")).collect();
    let mut first_not_n3 = 0;
    for k in &keys {
        let r = c
            .client(0)
            .put("b", k, "precious", None, "?w=3")
            .await
            .expect("put");
        assert_eq!(r.status, 204, "write {k}: {}", r.text());
        let (prefs, _) = c.locate("b", k).await.expect("locate");
        first_not_n3 += u64::from(prefs.first().is_some_and(|p| p != "n3"));
    }

    // n3 misses every delete, and stays away for longer than the grace.
    c.nodes[2].pause().expect("pause n3");
    for (i, k) in keys.iter().enumerate() {
        let r = c.client(i % 2).delete("b", k, None).await.expect("delete");
        assert_eq!(r.status, 204, "delete {k}: {}", r.text());
    }
    // Until every tombstone of n1's and n2's partitions was listed past
    // its grace in two passes (so each at least once after it: a pass
    // lists all of its partition's due tombstones), or one was reaped.
    TestCluster::eventually(
        Duration::from_secs(120),
        "the reapers looked at every tombstone past its grace",
        || async {
            total(&c, &[0, 1], "listed").await >= 2 * first_not_n3
                || total(&c, &[0, 1], "reaped").await > 0
        },
    )
    .await
    .expect("reaping passes");
    assert_eq!(
        total(&c, &[0, 1], "reaped").await,
        0,
        "nothing is reaped while n3 lacks the tombstones"
    );
    for i in [0, 1] {
        assert_eq!(
            tombstones(&c, i, "held").await,
            Some(KEYS as u64),
            "n{} keeps every tombstone",
            i + 1
        );
    }

    // Back: n3 gets the tombstones, then every replica reaps them.
    c.nodes[2].resume().expect("resume n3");
    c.wait_seen_as("n3", "up", CONVERGE).await.expect("n3 up");
    TestCluster::eventually(
        Duration::from_secs(120),
        "every tombstone reaped on every replica",
        || async {
            let mut all = true;
            for i in 0..3 {
                all &= tombstones(&c, i, "held").await == Some(0);
            }
            all
        },
    )
    .await
    .expect("reaped");
    // (A key may be reaped twice: an exchange can bring a replica's
    // tombstone back to the reaper before that replica's delete lands.)
    assert!(total(&c, &[0, 1, 2], "reaped").await >= KEYS as u64);

    // Nothing came back: not on any replica, not through any node, and no
    // replica tried to bring a value back.
    for k in &keys {
        for i in 0..3 {
            let mine = c
                .client(i)
                .get_path(&format!("/v1/debug/replica/b/{k}"))
                .await
                .expect("replica");
            let mine: Value = serde_json::from_slice(&mine.body).expect("json");
            assert_eq!(mine["found"], false, "{k} on n{}: {mine}", i + 1);
            let read = c
                .client(i)
                .get_path(&format!("/v1/kv/b/{k}?r=3"))
                .await
                .expect("get");
            assert_eq!(read.status, 404, "{k} through n{}: {}", i + 1, read.text());
        }
    }
    assert_eq!(total(&c, &[0, 1, 2], "resurrections").await, 0);

    // And the engine lets go of them: no deletion marker after compaction.
    for i in 0..3 {
        let a = c
            .client(i)
            .post_json("/v1/admin/compact", &Value::Null)
            .await
            .expect("compact");
        assert_eq!(a.status, 200, "compact n{}: {}", i + 1, a.text());
        let v: Value = serde_json::from_slice(&a.body).expect("json");
        assert_eq!(v["deletion_markers"], 0, "n{}: {v}", i + 1);
        assert_eq!(tombstones(&c, i, "held").await, Some(0));
    }
}
