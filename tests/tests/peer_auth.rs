//! Peers authenticate with mutual TLS against the cluster CA: a peer whose
//! certificate comes from another CA can neither join nor send requests.

use std::time::Duration;

use quorra_core::membership::{GossipMsg, MemberInfo, Status};
use quorra_core::proto::{PeerRequest, PeerResponse};
use quorra_node::net::certs::{generate, NodeCerts};
use quorra_node::net::transport::Transport;
use quorra_tests::cluster::TestCluster;
use quorra_tests::quorra_bin;

fn intruder_push_pull() -> PeerRequest {
    PeerRequest::Gossip(GossipMsg::PushPull {
        members: vec![MemberInfo {
            id: "intruder".into(),
            peer_addr: "127.0.0.1:9".parse().expect("addr"),
            http_addr: "127.0.0.1:9".parse().expect("addr"),
            zone: None,
            incarnation: u64::MAX - 1,
            status: Status::Up,
        }],
        from: None,
    })
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
        .request(target, &intruder_push_pull(), Duration::from_secs(5))
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
    let ping = PeerRequest::Gossip(GossipMsg::Ping { updates: vec![] });
    let answer = t
        .request(target, &ping, Duration::from_secs(5))
        .await
        .expect("member CA accepted");
    assert!(matches!(answer, PeerResponse::Gossip(_)), "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_frames_are_refused_and_the_node_keeps_serving() {
    let c = TestCluster::start(&quorra_bin!(), 1).expect("cluster");
    let target = c.nodes[0].peer.expect("peer address");
    generate(&c.certs, &["probe".into()]).expect("cert");
    let certs = NodeCerts::load(&c.certs, "probe").expect("load");
    let t = Transport::bind("127.0.0.1:0".parse().expect("addr"), &certs, 64 << 20).expect("bind");

    // A frame far over the node's limit (2 x 8 MiB + 1 MiB).
    let huge = PeerRequest::Gossip(GossipMsg::PushPull {
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
        from: None,
    });
    match t.request(target, &huge, Duration::from_secs(10)).await {
        Ok(PeerResponse::Error { message, .. }) => {
            assert!(message.contains("exceeds"), "{message}")
        }
        Err(_) => {} // the node may reset the stream before answering
        Ok(other) => panic!("an oversized frame must be refused, got {other:?}"),
    }
    // The node still serves peers and clients.
    let ping = PeerRequest::Gossip(GossipMsg::Ping { updates: vec![] });
    let ok = t
        .request(target, &ping, Duration::from_secs(5))
        .await
        .expect("still serving peers");
    assert!(matches!(ok, PeerResponse::Gossip(_)));
    let put = c.client(0).put("b", "k", "v", None, "").await.expect("put");
    assert_eq!(put.status, 204);
}
