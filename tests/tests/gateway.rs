//! `quorra gateway` in front of a real 3-node cluster: one HTTP suite
//! ([`quorra_tests::suite::api_contract`]) through a node and through the
//! gateway, and the gateway checking tokens and grants as a node does.

use std::time::Duration;

use quorra_tests::cluster::TestCluster;
use quorra_tests::http::Client;
use quorra_tests::{quorra_bin, suite, Gateway};
use serde_json::{json, Value};

fn gateway_of(c: &TestCluster) -> Gateway {
    quorra_node::net::certs::generate_role(
        &c.certs,
        quorra_core::auth::Role::Admin,
        &["gateway".into()],
    )
    .expect("admin certificate");
    let seeds: Vec<_> = c.nodes.iter().filter_map(|n| n.peer).collect();
    Gateway::start(&quorra_bin!(), &c.certs, "gateway", &seeds).expect("gateway")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_http_suite_through_a_node_and_a_gateway() {
    let c = TestCluster::start(&quorra_bin!(), 3).expect("cluster");
    c.wait_converged(Duration::from_secs(30))
        .await
        .expect("converged");
    let gw = gateway_of(&c);
    suite::api_contract(&c.client(0), "node").await;
    suite::api_contract(&Client::new(&gw.url), "gateway").await;
    // What the gateway wrote, a node reads, and the other way round.
    let node = c.client(1);
    let through = Client::new(&gw.url);
    let a = node.get("suite-gateway", "fresh").await.expect("get");
    assert_eq!((a.status, a.text()), (200, "new".to_owned()));
    let a = through.get("suite-node", "fresh").await.expect("get");
    assert_eq!((a.status, a.text()), (200, "new".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_checks_tokens_as_a_node_does() {
    let c = TestCluster::start(&quorra_bin!(), 3).expect("cluster");
    c.wait_converged(Duration::from_secs(30))
        .await
        .expect("converged");
    let gw = gateway_of(&c);
    let open = Client::new(&gw.url);
    let make = |id: &str, grants: Value| json!({"id": id, "grants": grants});
    // The first token, through the gateway (forwarded to a node).
    let root_token = token_of(
        &open
            .post_json(
                "/v1/admin/tokens",
                &make(
                    "root",
                    json!([{"bucket": "*", "allow": ["read", "write", "admin"]}]),
                ),
            )
            .await
            .expect("root token"),
    );
    let root = open.with_bearer(&root_token);
    let ro_token = token_of(
        &root
            .post_json(
                "/v1/admin/tokens",
                &make("ro", json!([{"bucket": "app", "allow": ["read"]}])),
            )
            .await
            .expect("ro token"),
    );
    let ro = open.with_bearer(&ro_token);

    // The gateway learns the policy within about a second: from then on
    // a request without a token is refused by the gateway itself.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let a = open.put("app", "k", "v", None, "").await.expect("put");
        if a.status == 401 {
            assert_eq!(a.error_code().as_deref(), Some("unauthorized"));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the gateway still serves without a token: {} {}",
            a.status,
            a.text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let w = root.put("app", "k", "v1", None, "").await.expect("put");
    assert_eq!(w.status, 204, "{}", w.text());
    // A read-only token reads (once the gateway has learnt it, within
    // about a second), and may not write, delete, or go elsewhere.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let r = loop {
        let r = ro.get("app", "k").await.expect("read");
        if r.status != 401 || std::time::Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!((r.status, r.text()), (200, "v1".to_owned()));
    let w = ro
        .put("app", "k", "x", r.context.as_deref(), "")
        .await
        .expect("put");
    assert_eq!(
        (w.status, w.error_code().as_deref()),
        (403, Some("forbidden"))
    );
    let d = ro.delete("app", "k", None).await.expect("delete");
    assert_eq!(d.status, 403);
    let o = ro.get("other", "k").await.expect("read");
    assert_eq!(o.status, 403, "{}", o.text());
    // A wrong secret, and a forwarded admin route with an app token.
    let wrong = open.with_bearer("root.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    assert_eq!(wrong.get("app", "k").await.expect("get").status, 401);
    let a = ro.get_path("/v1/admin/tokens").await.expect("admin route");
    assert_eq!(a.status, 403, "{}", a.text());
    // A write-only token's data-type write answers no value.
    let a = root
        .put_json("/v1/buckets/hits/props", &json!({"datatype": "counter"}))
        .await
        .expect("props");
    assert_eq!(a.status, 200, "{}", a.text());
    let wo_token = token_of(
        &root
            .post_json(
                "/v1/admin/tokens",
                &make("wo", json!([{"bucket": "hits", "allow": ["write"]}])),
            )
            .await
            .expect("wo token"),
    );
    let wo = open.with_bearer(&wo_token);
    let a = eventually_status(&wo, "/v1/crdt/hits/c", &json!({"increment": 2}), 200).await;
    let shown: Value = serde_json::from_slice(&a.body).expect("json");
    assert_eq!(shown["type"], "counter", "{shown}");
    assert!(
        shown.get("value").is_none(),
        "a write-only caller saw {shown}"
    );
    let a = wo.get_path("/v1/crdt/hits/c").await.expect("read");
    assert_eq!(a.status, 403, "{}", a.text());

    // A revocation reaches the gateway: the token is refused there.
    let a = root
        .delete_path("/v1/admin/tokens/ro")
        .await
        .expect("revoke");
    assert_eq!(a.status, 200, "{}", a.text());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while ro.get("app", "k").await.expect("read").status != 401 {
        assert!(
            std::time::Instant::now() < deadline,
            "the revoked token still reads through the gateway"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // And it serves on.
    let r = root.get("app", "k").await.expect("read");
    assert_eq!((r.status, r.text()), (200, "v1".to_owned()));

    // A gateway whose certificate is not a cluster admin's is not sent the
    // policy: it refuses to start rather than serve as if open.
    quorra_node::net::certs::generate_role(
        &c.certs,
        quorra_core::auth::Role::Client,
        &["not-admin".into()],
    )
    .expect("client certificate");
    let seeds: Vec<_> = c.nodes.iter().filter_map(|n| n.peer).collect();
    let refused = Gateway::start(&quorra_bin!(), &c.certs, "not-admin", &seeds);
    assert!(refused.is_err(), "a gateway started without the policy");
}

fn token_of(a: &quorra_tests::http::Answer) -> String {
    assert_eq!(a.status, 201, "{}", a.text());
    serde_json::from_slice::<Value>(&a.body).expect("json")["token"]
        .as_str()
        .expect("token")
        .to_owned()
}

/// POSTs `body` to `path` until it answers `want` (the gateway learns a
/// bucket's type within about a second), at most 10 s.
async fn eventually_status(
    http: &Client,
    path: &str,
    body: &Value,
    want: u16,
) -> quorra_tests::http::Answer {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let a = http.post_json(path, body).await.expect("post");
        if a.status == want || std::time::Instant::now() > deadline {
            assert_eq!(a.status, want, "{}", a.text());
            return a;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
