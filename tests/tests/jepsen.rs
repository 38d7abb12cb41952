//! Jepsen-style fault suite over real node processes: clients run the set
//! and register workloads over HTTP while the nemesis kills, pauses,
//! partitions, slows and breaks disks, skews clocks and wipes a disk; after
//! the faults heal, every key is read through every node and checked.
//!
//! Defaults keep it to about a minute. A soak is one variable away:
//! `QUORRA_JEPSEN_SECS=600 QUORRA_JEPSEN_SEED=7 cargo test -p quorra-tests
//! --test jepsen -- --nocapture`.

use std::time::{Duration, Instant};

use quorra_tests::cluster::TestCluster;
use quorra_tests::jepsen::{run_clients, settle_and_check};
use quorra_tests::nemesis::Nemesis;
use quorra_tests::quorra_bin;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} must be a number"))
        })
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_acknowledged_write_is_lost_under_faults() -> anyhow::Result<()> {
    let secs = env_u64("QUORRA_JEPSEN_SECS", 30);
    let seed = env_u64("QUORRA_JEPSEN_SEED", 1);
    let (nodes, clients, keys) = (5, 10, 3);
    let mut cluster = TestCluster::start_with(&quorra_bin!(), nodes, |_, c| {
        c.fault_injection = true;
        // Every repair mechanism runs, as in production.
        c.anti_entropy = quorra_node::config::AntiEntropyConfig::default();
        c.replica_timeout_ms = 1_000;
        c.request_timeout_ms = 2_500;
    })?;
    cluster.wait_converged(Duration::from_secs(30)).await?;
    let urls: Vec<String> = cluster.nodes.iter().map(|n| n.url.clone()).collect();
    let t0 = Instant::now();
    let until = t0 + Duration::from_secs(secs);
    let workload =
        tokio::spawn(async move { run_clients(&urls, clients, keys, seed, t0, until).await });

    let mut nemesis = Nemesis::new(seed);
    let mut rng = quorra_sim::rng::Rng::new(seed);
    // Bounded in time and in count; each fault holds for a while, then
    // heals, and the next one comes after a short gap: on purpose before
    // the cluster has fully recovered (hints still draining, suspicions not
    // yet refuted), as Jepsen's nemeses do.
    for round in 0..1_000 {
        if Instant::now() + Duration::from_secs(3) >= until {
            break;
        }
        let fault = nemesis.draw(nodes, round);
        nemesis.inject(&mut cluster, &fault).await?;
        tokio::time::sleep(Duration::from_millis(1_000 + rng.below(1_500))).await;
        nemesis.heal(&mut cluster, &fault).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let history = workload.await?;

    // With a wiped disk and no anti-entropy yet, only a read of every
    // replica is sure to find every write (see README, Reliability).
    let r = nemesis.wiped.then_some(3);
    let report = settle_and_check(&cluster, &history, keys, r).await?;
    println!("seed {seed}, {secs} s, faults {:?}\n{report}", nemesis.log);
    assert!(
        report.acked >= 50,
        "too few acknowledged writes to mean anything: {report}"
    );
    assert!(
        report.valid(),
        "seed {seed}: {report}\nfaults: {:?}",
        nemesis.log
    );
    Ok(())
}

/// What Reliability says of `lww` buckets, on real nodes with real clock
/// skew: the write with the highest timestamp wins, not the last one, even
/// when the later write carries the earlier one's context.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lww_follows_the_clock_not_the_order() -> anyhow::Result<()> {
    use quorra_core::ConflictMode;
    use quorra_node::config::BucketOverrides;
    use serde_json::json;

    let cluster = TestCluster::start_with(&quorra_bin!(), 3, |_, c| {
        c.fault_injection = true;
        c.buckets.insert(
            "clock".into(),
            BucketOverrides {
                conflict_mode: Some(ConflictMode::Lww),
                ..BucketOverrides::default()
            },
        );
    })?;
    cluster.wait_converged(Duration::from_secs(30)).await?;
    let set_skew = |ms: i64| {
        let c = &cluster;
        async move {
            for i in 0..c.nodes.len() {
                let a = c
                    .client(i)
                    .put_json("/v1/debug/faults", &json!({ "clock_skew_ms": ms }))
                    .await?;
                anyhow::ensure!(a.status == 200, "{}", a.text());
            }
            anyhow::Ok(())
        }
    };
    let n1 = cluster.client(0);
    // Every clock an hour fast: the first write is stamped in the future.
    set_skew(3_600_000).await?;
    let first = n1.put("clock", "k", "first", None, "").await?;
    assert_eq!(first.status, 204, "{}", first.text());
    set_skew(0).await?;
    let read = n1.get("clock", "k").await?;
    assert_eq!(read.text(), "first");
    // A later write, even with the first one's context, loses to it.
    let second = n1
        .put("clock", "k", "second", read.context.as_deref(), "")
        .await?;
    assert_eq!(second.status, 204, "{}", second.text());
    let after = n1.get("clock", "k").await?;
    assert_eq!((after.status, after.text()), (200, "first".to_owned()));
    // The same two writes in a siblings bucket keep the order.
    let s1 = n1.put("ordered", "k", "first", None, "").await?;
    assert_eq!(s1.status, 204);
    let r = n1.get("ordered", "k").await?;
    n1.put("ordered", "k", "second", r.context.as_deref(), "")
        .await?;
    assert_eq!(n1.get("ordered", "k").await?.text(), "second");
    Ok(())
}
