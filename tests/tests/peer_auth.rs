//! Peers authenticate with mutual TLS against the cluster CA: a peer whose
//! certificate comes from another CA can neither join nor send requests.

use std::time::Duration;

use quorra_core::auth::Role;
use quorra_core::membership::Gossip;
use quorra_core::membership::{GossipMsg, MemberInfo, Status};
use quorra_core::proto::{ClusterInfo, IndirectPing, Request};
use quorra_node::net::certs::{generate, generate_role, NodeCerts};
use quorra_node::net::transport::Transport;
use quorra_tests::cluster::TestCluster;
use quorra_tests::quorra_bin;

fn intruder_push_pull() -> Gossip {
    GossipMsg::PushPull {
        members: vec![MemberInfo {
            id: "intruder".into(),
            peer_addr: "127.0.0.1:9".parse().expect("addr"),
            http_addr: "127.0.0.1:9".parse().expect("addr"),
            zone: None,
            incarnation: u64::MAX - 1,
            status: Status::Up,
        }],
    }
    .into()
}

/// A ping with nothing to tell.
fn ping() -> Gossip {
    GossipMsg::Ping { updates: vec![] }.into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_from_another_ca_cannot_join_or_send() {
    let c = TestCluster::start(&quorra_bin!(), 2).expect("cluster");
    c.wait_converged(Duration::from_secs(20))
        .await
        .expect("converged");
    let target = c.nodes[0].peer.expect("peer address");

    // Another CA, another cluster: its certificate is refused.
    let foreign = tempfile::tempdir().expect("tempdir");
    generate(foreign.path(), &["intruder".into()]).expect("foreign CA");
    let certs = NodeCerts::load(foreign.path(), "intruder").expect("load");
    let t = Transport::bind("127.0.0.1:0".parse().expect("addr"), &certs, 1 << 20).expect("bind");
    let result = t
        .ask(target, intruder_push_pull(), Duration::from_secs(5))
        .await;
    assert!(
        result.is_err(),
        "foreign CA must be refused, got {result:?}"
    );
    let members = c
        .client(0)
        .get_path("/v1/cluster/members")
        .await
        .expect("members")
        .text();
    assert!(
        !members.contains("intruder"),
        "the intruder did not join: {members}"
    );

    // The same request with a certificate from the cluster's own CA works:
    // the refusal above was the certificate, not the request.
    generate(&c.certs, &["n9".into()]).expect("cluster CA signs n9");
    let certs = NodeCerts::load(&c.certs, "n9").expect("load");
    let t = Transport::bind("127.0.0.1:0".parse().expect("addr"), &certs, 1 << 20).expect("bind");
    let answer = t
        .ask(target, ping(), Duration::from_secs(5))
        .await
        .expect("member CA accepted");
    assert!(matches!(answer, Ok(Some(_))), "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_frames_are_refused_and_the_node_keeps_serving() {
    let c = TestCluster::start(&quorra_bin!(), 1).expect("cluster");
    let target = c.nodes[0].peer.expect("peer address");
    generate(&c.certs, &["probe".into()]).expect("cert");
    let certs = NodeCerts::load(&c.certs, "probe").expect("load");
    let t = Transport::bind("127.0.0.1:0".parse().expect("addr"), &certs, 64 << 20).expect("bind");

    // A frame far over the node's limit (2 x 8 MiB + 1 MiB).
    let huge: Gossip = GossipMsg::PushPull {
        members: (0..200_000)
            .map(|i| MemberInfo {
                id: format!("m{i:0>100}"),
                peer_addr: "127.0.0.1:9".parse().expect("addr"),
                http_addr: "127.0.0.1:9".parse().expect("addr"),
                zone: None,
                incarnation: 1,
                status: Status::Up,
            })
            .collect(),
    }
    .into();
    match t.ask(target, huge, Duration::from_secs(10)).await {
        Ok(Err(refusal)) => {
            let (_, message) = refusal.parts();
            assert!(message.contains("exceeds"), "{message}")
        }
        Err(_) => {} // the node may reset the stream before answering
        Ok(Ok(other)) => panic!("an oversized frame must be refused, got {other:?}"),
    }
    // The node still serves peers and clients.
    let ok = t
        .ask(target, ping(), Duration::from_secs(5))
        .await
        .expect("still serving peers");
    assert!(matches!(ok, Ok(Some(_))), "{ok:?}");
    let put = c.client(0).put("b", "k", "v", None, "").await.expect("put");
    assert_eq!(put.status, 204);
}

/// Every kind of peer request a node accepts from another node.
fn every_peer_request(target: std::net::SocketAddr) -> Vec<(&'static str, Request)> {
    use quorra_core::proto::{Coordinate, Operation, ReplicaGet, ReplicaPut};
    use quorra_core::{BucketName, Content, Key, Limits, Object, QuorumOverrides, VersionVector};
    let l = Limits::default();
    let bucket = BucketName::parse("b", &l).expect("bucket");
    let key = Key::parse(b"k".to_vec(), &l).expect("key");
    let mut object = Object::new();
    object
        .update(
            &VersionVector::new(),
            &quorra_core::Actor::new("n1", 1),
            Content::value(b"planted".to_vec(), "text/plain", 1),
            quorra_core::ConflictMode::Siblings,
        )
        .expect("update");
    vec![
        ("gossip ping", ping().into()),
        ("push-pull", intruder_push_pull().into()),
        ("indirect ping", IndirectPing { target }.into()),
        (
            "replica get",
            ReplicaGet {
                bucket: bucket.clone(),
                key: key.clone(),
                hint_for: None,
            }
            .into(),
        ),
        (
            "replica put",
            ReplicaPut {
                bucket: bucket.clone(),
                key: key.clone(),
                object,
                mode: quorra_core::ConflictMode::Siblings,
                durable: false,
                hint_for: None,
            }
            .into(),
        ),
        (
            "forwarded write",
            Coordinate {
                bucket,
                key,
                context: VersionVector::new(),
                operation: Operation::Put(Content::value(b"forged".to_vec(), "text/plain", 1)),
                quorum: QuorumOverrides::default(),
            }
            .into(),
        ),
    ]
}

/// A client or admin certificate (made the way the README tells users to
/// make one) may send client requests and nothing else: no gossip, no
/// replica reads or writes, no indirect pings, no forwarded writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_cannot_act_as_a_node() {
    let c = TestCluster::start(&quorra_bin!(), 1).expect("cluster");
    let target = c.nodes[0].peer.expect("peer address");
    generate_role(&c.certs, Role::Client, &["app".into()]).expect("client cert");
    generate_role(&c.certs, Role::Admin, &["ops".into()]).expect("admin cert");
    for name in ["app", "ops"] {
        refused_every_peer_request(&c, name, target).await;
    }
}

async fn refused_every_peer_request(c: &TestCluster, name: &str, target: std::net::SocketAddr) {
    let certs = NodeCerts::load(&c.certs, name).expect("load");
    let t = Transport::bind("127.0.0.1:0".parse().expect("addr"), &certs, 1 << 20).expect("bind");
    for (what, req) in every_peer_request(target) {
        let answer = t
            .request(target, &req, Duration::from_secs(5))
            .await
            .expect("the node answers");
        match answer.refused().map(|r| r.parts().0) {
            Some(code) if code.as_str() == "forbidden" => {}
            other => panic!("certificate {name} sent a {what} and got {answer:?}: {other:?}"),
        }
    }
    // Nothing it sent was stored, and client requests still work.
    assert_eq!(c.client(0).get("b", "k").await.expect("get").status, 404);
    let info = t
        .ask(target, ClusterInfo, Duration::from_secs(5))
        .await
        .expect("client request");
    assert!(info.is_ok(), "{info:?}");
}

/// What node `observer` believes about member `id`.
async fn member_seen_by(c: &TestCluster, observer: usize, id: &str) -> serde_json::Value {
    let a = c
        .client(observer)
        .get_path("/v1/cluster/members")
        .await
        .expect("members");
    let v: serde_json::Value = serde_json::from_slice(&a.body).expect("json");
    v["members"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["id"] == id).cloned())
        .unwrap_or(serde_json::Value::Null)
}

/// A member's own record (address, incarnation, liveness) is taken only from
/// that member's certificate; a suspicion about another member still
/// spreads, as SWIM needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cannot_announce_another_nodes_address_but_its_suspicion_spreads() {
    let c = TestCluster::start(&quorra_bin!(), 3).expect("cluster");
    c.wait_converged(Duration::from_secs(30))
        .await
        .expect("converged");
    let n2 = member_seen_by(&c, 2, "n2").await;
    let n2_addr = n2["peer_addr"].as_str().expect("addr").to_owned();
    let n2_inc = n2["incarnation"].as_u64().expect("incarnation");
    let target = c.nodes[2].peer.expect("n3 peer address");

    // n1's certificate tells n3 that n2 moved.
    let certs = NodeCerts::load(&c.certs, "n1").expect("n1 cert");
    let t = Transport::bind("127.0.0.1:0".parse().expect("addr"), &certs, 1 << 20).expect("bind");
    let moved = MemberInfo {
        id: "n2".into(),
        peer_addr: "127.0.0.1:9".parse().expect("addr"),
        http_addr: "127.0.0.1:9".parse().expect("addr"),
        zone: None,
        incarnation: n2_inc + 1,
        status: Status::Up,
    };
    let moved: Gossip = GossipMsg::Ping {
        updates: vec![moved],
    }
    .into();
    t.ask(target, moved, Duration::from_secs(5))
        .await
        .expect("n3 answers")
        .expect("n3 takes the gossip");

    // n1's suspicion of n2 at its current incarnation reaches n2 through
    // n3, and n2 refutes it with a higher incarnation.
    let suspect = MemberInfo {
        id: "n2".into(),
        peer_addr: n2_addr.parse().expect("addr"),
        http_addr: n2["http_addr"]
            .as_str()
            .expect("http")
            .parse()
            .expect("addr"),
        zone: None,
        incarnation: n2_inc,
        status: Status::Suspect,
    };
    let suspect: Gossip = GossipMsg::Ping {
        updates: vec![suspect],
    }
    .into();
    t.ask(target, suspect, Duration::from_secs(5))
        .await
        .expect("n3 answers")
        .expect("n3 takes the gossip");
    let cr = &c;
    TestCluster::eventually(Duration::from_secs(20), "n2 refutes", || async move {
        member_seen_by(cr, 1, "n2").await["incarnation"].as_u64() > Some(n2_inc)
    })
    .await
    .expect("the suspicion spread from n3 to n2");
    let seen = member_seen_by(&c, 2, "n2").await;
    assert_eq!(
        seen["peer_addr"].as_str(),
        Some(n2_addr.as_str()),
        "n3 took n1's word for n2's address: {seen}"
    );
}

/// A gossiped incarnation of u64::MAX neither wraps nor panics a node, nor
/// leaves the accused member unable to refute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incarnation_of_u64_max_cannot_silence_a_member() {
    let c = TestCluster::start(&quorra_bin!(), 3).expect("cluster");
    c.wait_converged(Duration::from_secs(30))
        .await
        .expect("converged");
    let n2 = member_seen_by(&c, 0, "n2").await;
    let certs = NodeCerts::load(&c.certs, "n1").expect("n1 cert");
    let t = Transport::bind("127.0.0.1:0".parse().expect("addr"), &certs, 1 << 20).expect("bind");
    let accusation = MemberInfo {
        id: "n2".into(),
        peer_addr: n2["peer_addr"].as_str().expect("a").parse().expect("addr"),
        http_addr: n2["http_addr"].as_str().expect("h").parse().expect("addr"),
        zone: None,
        incarnation: u64::MAX,
        status: Status::Down,
    };
    for i in [2, 1] {
        let target = c.nodes[i].peer.expect("peer");
        let accuse: Gossip = GossipMsg::Ping {
            updates: vec![accusation.clone()],
        }
        .into();
        t.ask(target, accuse, Duration::from_secs(5))
            .await
            .expect("the node answers")
            .expect("the node takes the gossip");
    }
    // Every node sees n2 up, and n2 still serves.
    c.wait_seen_as("n2", "up", Duration::from_secs(20))
        .await
        .expect("n2 is up everywhere");
    for i in 0..3 {
        let seen = member_seen_by(&c, i, "n2").await;
        assert_ne!(seen["incarnation"].as_u64(), Some(u64::MAX), "{seen}");
    }
    let r = c
        .client(1)
        .put("b", "k", "v", None, "?w=3")
        .await
        .expect("put");
    assert_eq!(r.status, 204, "{}", r.text());
}

/// Requests from the Rust client (QUIC) are held to the node's limits as
/// HTTP requests are: names, value, content type. A bucket name past the
/// hard limit of 255 bytes (which would alias other storage keys) does not
/// even decode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_client_requests_are_held_to_the_same_limits() {
    use quorra_core::proto::{Operation, Write};
    use quorra_core::{BucketName, Content, Key, Limits, QuorumOverrides};
    let c = TestCluster::start_with(&quorra_bin!(), 1, |_, cfg| {
        cfg.limits.max_key_bytes = 64;
        cfg.limits.max_value_bytes = 1024;
    })
    .expect("cluster");
    let target = c.nodes[0].peer.expect("peer address");
    generate_role(&c.certs, Role::Client, &["app".into()]).expect("client cert");
    let certs = NodeCerts::load(&c.certs, "app").expect("load");
    let t = Transport::bind("127.0.0.1:0".parse().expect("addr"), &certs, 1 << 20).expect("bind");
    let loose = Limits {
        max_bucket_bytes: 300,
        max_key_bytes: 4096,
        ..Limits::default()
    };
    let name = |b: &str, k: &[u8]| {
        (
            BucketName::parse(b, &loose).expect("bucket"),
            Key::parse(k.to_vec(), &loose).expect("key"),
        )
    };
    let write = |(bucket, key): (BucketName, Key), content: Content| Write {
        bucket,
        key,
        context: None,
        operation: Operation::Put(content),
        quorum: QuorumOverrides::default(),
    };
    let small = || Content::value(b"v".to_vec(), "text/plain", 0);
    let long_type = Content::value(b"v".to_vec(), "x".repeat(1000), 0);
    let cases = [
        (
            "a key over the limit",
            write(name("b", &[b'k'; 100]), small()),
            "key_too_long",
        ),
        (
            "a value over the limit",
            write(
                name("b", b"k"),
                Content::value(vec![0; 2000], "text/plain", 0),
            ),
            "value_too_large",
        ),
        (
            "a long content type",
            write(name("b", b"k"), long_type),
            "invalid_parameter",
        ),
        (
            "a bucket past the hard limit",
            write(name(&"b".repeat(300), b"k"), small()),
            "invalid_parameter",
        ),
    ];
    for (what, req, code) in cases {
        match t.ask(target, req, Duration::from_secs(5)).await {
            Ok(Err(refusal)) if refusal.clone().parts().0.as_str() == code => {}
            other => panic!("{what} must be refused with {code}, got {other:?}"),
        }
    }
    // Nothing was stored, and the node serves on.
    assert_eq!(c.client(0).get("b", "k").await.expect("get").status, 404);
    let r = c
        .client(0)
        .put("b", "k", "fine", None, "")
        .await
        .expect("put");
    assert_eq!(r.status, 204, "{}", r.text());
}

/// Peer requests and QUIC client requests past their concurrency limits are
/// refused with `overloaded` rather than queued: a slow disk holds each
/// request's permit, so some of a burst must be refused, and some served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_the_concurrency_limits_are_refused_overloaded() {
    use quorra_core::proto::{Get, ReplicaGet};
    use quorra_core::{BucketName, Key, Limits, QuorumOverrides};
    let c = TestCluster::start_with(&quorra_bin!(), 1, |_, cfg| {
        cfg.fault_injection = true;
        cfg.max_concurrent_requests = 1;
        cfg.max_concurrent_peer_requests = 1;
    })
    .expect("cluster");
    let slow = c
        .client(0)
        .put_json(
            "/v1/debug/faults",
            &serde_json::json!({ "disk_delay_ms": 400 }),
        )
        .await
        .expect("faults");
    assert_eq!(slow.status, 200, "{}", slow.text());
    let target = c.nodes[0].peer.expect("peer address");
    generate(&c.certs, &["peer".into()]).expect("node cert");
    generate_role(&c.certs, Role::Client, &["app".into()]).expect("client cert");
    let limits = Limits::default();
    let bucket = BucketName::parse("b", &limits).expect("bucket");
    let key = Key::parse(b"k".to_vec(), &limits).expect("key");
    let peer_req: Request = ReplicaGet {
        bucket: bucket.clone(),
        key: key.clone(),
        hint_for: None,
    }
    .into();
    let client_req: Request = Get {
        bucket,
        key,
        quorum: QuorumOverrides::default(),
    }
    .into();
    for (who, req) in [("peer", peer_req), ("app", client_req)] {
        let certs = NodeCerts::load(&c.certs, who).expect("load");
        let t = std::sync::Arc::new(
            Transport::bind("127.0.0.1:0".parse().expect("addr"), &certs, 1 << 20).expect("bind"),
        );
        let burst: Vec<_> = (0..6)
            .map(|_| {
                let (t, req) = (t.clone(), req.clone());
                tokio::spawn(async move { t.request(target, &req, Duration::from_secs(10)).await })
            })
            .collect();
        let (mut served, mut overloaded) = (0, 0);
        for answer in burst {
            let reply = answer.await.expect("task");
            match reply.as_ref().map(|r| r.refused().map(|r| r.parts())) {
                Ok(Some((code, _))) if code.as_str() == "overloaded" => overloaded += 1,
                Ok(Some((code, message))) => panic!("{who}: unexpected error {code}: {message}"),
                Ok(None) => served += 1,
                Err(e) => panic!("{who}: {e}"),
            }
        }
        assert!(
            overloaded > 0,
            "{who}: none of six refused past a limit of 1"
        );
        assert!(served > 0, "{who}: none of six served");
    }
    // HTTP shares the client permits, through tower's load shedding: a
    // JSON `503 overloaded` at once, never a queue.
    let burst: Vec<_> = (0..6)
        .map(|i| {
            let http = c.client(0);
            tokio::spawn(async move { http.get("b", &format!("k{i}")).await })
        })
        .collect();
    let (mut served, mut overloaded) = (0, 0);
    for answer in burst {
        let a = answer.await.expect("task").expect("answer");
        match (a.status, a.error_code().as_deref()) {
            (503, Some("overloaded")) => overloaded += 1,
            (404, Some("not_found")) => served += 1,
            other => panic!("unexpected {other:?}: {}", a.text()),
        }
    }
    assert!(
        overloaded > 0 && served > 0,
        "{served} served, {overloaded} refused"
    );
}

/// A request past the request timeout answers a JSON `504 timeout`, and
/// the node keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_timeout_is_a_json_504() {
    let c = TestCluster::start_with(&quorra_bin!(), 1, |_, cfg| {
        cfg.fault_injection = true;
        cfg.request_timeout_ms = 300;
    })
    .expect("cluster");
    let http = c.client(0);
    assert_eq!(
        http.put("b", "k", "v", None, "").await.expect("put").status,
        204
    );
    let slow = http
        .put_json(
            "/v1/debug/faults",
            &serde_json::json!({ "disk_delay_ms": 1000 }),
        )
        .await
        .expect("faults");
    assert_eq!(slow.status, 200, "{}", slow.text());
    let late = http.get("b", "k").await.expect("get");
    assert_eq!(
        (late.status, late.error_code().as_deref()),
        (504, Some("timeout")),
        "{}",
        late.text()
    );
    let healed = http
        .put_json(
            "/v1/debug/faults",
            &serde_json::json!({ "disk_delay_ms": 0 }),
        )
        .await
        .expect("faults");
    assert_eq!(healed.status, 200, "{}", healed.text());
    // The read that timed out may still hold the slowed disk a moment.
    let http = &http;
    TestCluster::eventually(Duration::from_secs(10), "served again", || async move {
        http.get("b", "k")
            .await
            .is_ok_and(|a| a.status == 200 && a.text() == "v")
    })
    .await
    .expect("the node serves after the timeout");
}
