//! Access control on real nodes: bearer tokens with per-bucket grants over
//! HTTP, and the same grants binding client certificates over QUIC. Every
//! refusal is followed by a check that the node still serves.

use quorra_client::ClientError;
use quorra_tests::cluster::TestCluster;
use quorra_tests::http::{Answer, Client as Http};
use quorra_tests::quorra_bin;
use serde_json::{json, Value};

fn json_of(a: &Answer) -> Value {
    serde_json::from_slice(&a.body).unwrap_or(Value::Null)
}

/// Creates a token through `admin` and returns `ID.SECRET`.
async fn create_token(admin: &Http, id: &str, grants: Value) -> String {
    let a = admin
        .post_json("/v1/admin/tokens", &json!({"id": id, "grants": grants}))
        .await
        .expect("create token");
    assert_eq!(a.status, 201, "create {id}: {}", a.text());
    let v = json_of(&a);
    assert_eq!(v["activated"], true, "every member has token {id}: {v}");
    v["token"].as_str().expect("token").to_owned()
}

fn refused(a: &Answer, status: u16, code: &str, what: &str) {
    assert_eq!(
        (a.status, a.error_code().as_deref()),
        (status, Some(code)),
        "{what}: {}",
        a.text()
    );
}

/// The node still answers reads and writes for a caller allowed them
/// (each call writes a key of its own).
async fn still_serves(root: &Http) {
    static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let key = format!(
        "alive-{}",
        CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let w = root
        .put("app-data", &key, "yes", None, "")
        .await
        .expect("put");
    assert_eq!(w.status, 204, "{}", w.text());
    let r = root.get("app-data", &key).await.expect("get");
    assert_eq!((r.status, r.text()), (200, "yes".to_owned()));
}

/// A request: method, path, JSON body.
type Call<'a> = (reqwest::Method, &'a str, Option<Value>);

/// Sends `req` with `token` to node `i`, expects the refusal, then checks
/// that node `i` still serves.
async fn refused_then_serves(
    c: &TestCluster,
    roots: &[Http],
    i: usize,
    token: &str,
    req: Call<'_>,
    (status, code): (u16, &str),
    what: &str,
) {
    let (method, path, body) = req;
    let mut r = reqwest::Client::new()
        .request(method, format!("{}{path}", c.nodes[i].url))
        .header("authorization", format!("Bearer {token}"));
    if let Some(b) = body {
        r = r
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let resp = r.send().await.expect("answer");
    let got = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    assert_eq!(
        (got, v["error"]["code"].as_str()),
        (status, Some(code)),
        "{what}: {text}"
    );
    still_serves(&roots[i]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_close_the_http_api_and_bind_each_caller_to_its_buckets() {
    use reqwest::Method;
    let c = TestCluster::start(&quorra_bin!(), 3).expect("cluster");
    c.wait_converged(std::time::Duration::from_secs(30))
        .await
        .expect("converged");
    let open = c.client(0);
    // No token yet: the API is open, as before tokens existed.
    let w = open
        .put("app-data", "k0", "v0", None, "")
        .await
        .expect("put");
    assert_eq!(w.status, 204);
    let listed = json_of(&open.get_path("/v1/admin/tokens").await.expect("list"));
    assert_eq!(listed["closed"], false, "{listed}");
    let a = open
        .put_json(
            "/v1/buckets/app-counts/props",
            &json!({"datatype": "counter"}),
        )
        .await
        .expect("props");
    assert_eq!(a.status, 200, "{}", a.text());

    // The first token must be a cluster admin's: no lock-out.
    let a = open
        .post_json(
            "/v1/admin/tokens",
            &json!({"id": "early", "grants": [{"bucket": "*", "allow": ["read"]}]}),
        )
        .await
        .expect("post");
    refused(
        &a,
        412,
        "precondition_failed",
        "a first token that is no admin",
    );
    for bad in [
        json!({"id": "a.b", "grants": [{"bucket": "*", "allow": ["admin"]}]}),
        json!({"id": "x", "grants": [{"bucket": "a b", "allow": ["read"]}]}),
        json!({"id": "x", "grants": [{"bucket": "*", "allow": ["fly"]}]}),
        json!({"grants": []}),
    ] {
        let a = open
            .post_json("/v1/admin/tokens", &bad)
            .await
            .expect("post");
        refused(&a, 400, "invalid_parameter", &bad.to_string());
    }

    let root_token = create_token(
        &open,
        "root",
        json!([{"bucket": "*", "allow": ["read", "write", "admin"]}]),
    )
    .await;
    let roots: Vec<Http> = (0..3)
        .map(|i| c.client(i).with_bearer(&root_token))
        .collect();
    let root = &roots[1];

    // Every node now wants a token; liveness and metrics stay open.
    for (i, root) in roots.iter().enumerate() {
        let a = c.client(i).get("app-data", "k0").await.expect("get");
        refused(&a, 401, "unauthorized", "no token");
        for open_path in ["/health", "/metrics"] {
            let a = c.client(i).get_path(open_path).await.expect("open path");
            assert_eq!(a.status, 200, "{open_path}");
        }
        still_serves(root).await;
    }
    // The admin library (and so ring-tools, `--token` / QUORRA_TOKEN).
    let tools = quorra_client::admin::AdminClient::new([c.nodes[2].url.clone()]).expect("admin");
    let e = tools.layout().await.expect_err("no token");
    assert_eq!(e.code(), Some("unauthorized"), "{e}");
    let layout = tools.with_token(Some(root_token.clone())).layout().await;
    assert!(layout.is_ok(), "{layout:?}");
    // Any case of the scheme works (RFC 9110).
    let lower = reqwest::Client::new()
        .get(format!("{}/v1/kv/app-data/k0", c.nodes[0].url))
        .header("authorization", format!("bearer {root_token}"))
        .send()
        .await
        .expect("get");
    assert_eq!(lower.status(), 200);

    let root_secret = root_token.split_once('.').expect("id.secret").1.to_owned();
    let get_k0 = || (Method::GET, "/v1/kv/app-data/k0", None);
    for (token, what) in [
        (format!("{root_token}x"), "a secret too long"),
        (
            format!("root.{}", "A".repeat(root_secret.len())),
            "a wrong secret",
        ),
        ("root".to_owned(), "no secret"),
        (
            format!("nobody.{root_secret}"),
            "an unknown id with a known secret",
        ),
    ] {
        refused_then_serves(&c, &roots, 2, &token, get_k0(), (401, "unauthorized"), what).await;
    }

    let app_token = create_token(
        &root.clone(),
        "app",
        json!([{"bucket": "app-*", "allow": ["read", "write"]}]),
    )
    .await;
    let ro_token = create_token(
        root,
        "ro",
        json!([{"bucket": "app-data", "allow": ["read"]}]),
    )
    .await;
    let wo_token = create_token(
        root,
        "wo",
        json!([{"bucket": "app-counts", "allow": ["write"]}]),
    )
    .await;
    // A create never replaces a token silently.
    let again = root
        .post_json(
            "/v1/admin/tokens",
            &json!({"id": "ro", "grants": [{"bucket": "x", "allow": ["read"]}]}),
        )
        .await
        .expect("post");
    refused(
        &again,
        412,
        "precondition_failed",
        "creating an existing id",
    );
    let app = c.client(2).with_bearer(&app_token);
    let ro = c.client(0).with_bearer(&ro_token);

    // Within its grants, a token reads and writes.
    assert_eq!(
        app.put("app-data", "k", "v1", None, "")
            .await
            .expect("put")
            .status,
        204
    );
    assert_eq!(
        app.put("app-logs", "k", "l", None, "")
            .await
            .expect("put")
            .status,
        204
    );
    let r = ro.get("app-data", "k").await.expect("get");
    assert_eq!((r.status, r.text()), (200, "v1".to_owned()));
    let counted = app
        .post_json("/v1/crdt/app-counts/c", &json!({"increment": 5}))
        .await
        .expect("post");
    assert_eq!(json_of(&counted)["value"], 5, "{}", counted.text());
    // A write-only token's write answer shows no value.
    let blind = c
        .client(1)
        .with_bearer(&wo_token)
        .post_json("/v1/crdt/app-counts/c", &json!({"increment": 1}))
        .await
        .expect("post");
    assert_eq!(blind.status, 200, "{}", blind.text());
    let v = json_of(&blind);
    assert!(v.get("value").is_none() && v["context"].is_string(), "{v}");
    // Cluster views need any valid token, and never show the policy.
    assert_eq!(
        app.get_path("/v1/cluster/members")
            .await
            .expect("members")
            .status,
        200
    );
    let layout = app.get_path("/v1/cluster/layout").await.expect("layout");
    assert_eq!(layout.status, 200);
    for hidden in ["secret_sha256", "\"root\"", "access\":{"] {
        assert!(!layout.text().contains(hidden), "{hidden} in the layout");
    }

    // The wrong bucket, a read-only token writing or deleting, an app
    // token on admin, debug and bucket-admin routes: 403, and the node
    // that refused keeps serving.
    let forbidden = (403, "forbidden");
    let cases: Vec<(usize, &str, Call<'_>, &str)> = vec![
        (
            2,
            &app_token,
            (Method::PUT, "/v1/kv/other/k", None),
            "app writes outside app-*",
        ),
        (
            2,
            &app_token,
            (Method::GET, "/v1/kv/other/k", None),
            "app reads outside app-*",
        ),
        (
            0,
            &ro_token,
            (Method::PUT, "/v1/kv/app-data/k", None),
            "read-only token writes",
        ),
        (
            0,
            &ro_token,
            (Method::DELETE, "/v1/kv/app-data/k", None),
            "read-only token deletes",
        ),
        (
            1,
            &ro_token,
            (Method::GET, "/v1/kv/app-logs/k", None),
            "read-only token, other bucket",
        ),
        (
            1,
            &ro_token,
            (
                Method::POST,
                "/v1/crdt/app-counts/c",
                Some(json!({"increment": 1})),
            ),
            "read-only token on a counter it may not read either",
        ),
        (
            1,
            &wo_token,
            (Method::GET, "/v1/crdt/app-counts/c", None),
            "write-only token reads",
        ),
        (
            0,
            &ro_token,
            (Method::GET, "/v1/kv/app-counts/c", None),
            "a bucket's type is not shown to who may not read it",
        ),
        (
            2,
            &wo_token,
            (Method::GET, "/v1/crdt/app-data/k", None),
            "nor that a bucket is plain",
        ),
        (
            2,
            &app_token,
            (Method::GET, "/v1/admin/layout", None),
            "app token, layout admin",
        ),
        (
            2,
            &app_token,
            (Method::GET, "/v1/admin/tokens", None),
            "app token lists tokens",
        ),
        (
            0,
            &app_token,
            (Method::GET, "/v1/debug/replica/app-data/k", None),
            "app token, replica",
        ),
        (
            0,
            &app_token,
            (
                Method::PUT,
                "/v1/buckets/app-data/props",
                Some(json!({"r": 1})),
            ),
            "app token changes bucket properties",
        ),
    ];
    for (i, token, req, what) in cases {
        refused_then_serves(&c, &roots, i, token, req, forbidden, what).await;
    }
    let r = root.get("app-data", "k").await.expect("get");
    assert_eq!(r.text(), "v1", "no refused write landed");
    let replica = root
        .get_path("/v1/debug/replica/app-data/k")
        .await
        .expect("replica");
    assert_eq!(replica.status, 200, "an admin reads one replica");

    // The list shows ids and grants, never a secret or its hash.
    let listed = root.get_path("/v1/admin/tokens").await.expect("list");
    let v = json_of(&listed);
    assert_eq!(v["closed"], true);
    let ids: Vec<&str> = v["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .filter_map(|t| t["id"].as_str())
        .collect();
    assert_eq!(ids, ["app", "ro", "root", "wo"]);
    for token in [&root_token, &app_token, &ro_token, &wo_token] {
        let secret = token.split_once('.').expect("id.secret").1;
        assert!(!listed.text().contains(secret), "a secret is listed");
        assert!(!listed
            .text()
            .contains(&quorra_core::access::secret_sha256(secret)));
    }

    // Rotation: a new secret, the old one refused.
    let rotated = root
        .post_json(
            "/v1/admin/tokens",
            &json!({"id": "ro", "grants": [{"bucket": "app-data", "allow": ["read"]}], "replace": true}),
        )
        .await
        .expect("rotate");
    assert_eq!(rotated.status, 201, "{}", rotated.text());
    let new_ro = json_of(&rotated)["token"]
        .as_str()
        .expect("token")
        .to_owned();
    refused_then_serves(
        &c,
        &roots,
        0,
        &ro_token,
        get_k0(),
        (401, "unauthorized"),
        "a rotated secret",
    )
    .await;
    let r = c
        .client(0)
        .with_bearer(&new_ro)
        .get("app-data", "k0")
        .await
        .expect("get");
    assert_eq!(r.status, 200);

    // Revoked is revoked on every node.
    let a = root
        .delete_path("/v1/admin/tokens/app")
        .await
        .expect("revoke");
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(json_of(&a)["activated"], true);
    for i in 0..3 {
        refused_then_serves(
            &c,
            &roots,
            i,
            &app_token,
            get_k0(),
            (401, "unauthorized"),
            "revoked",
        )
        .await;
    }
    // The last cluster admin cannot go while other tokens remain; once
    // every token is gone the API is open again.
    let a = root
        .delete_path("/v1/admin/tokens/root")
        .await
        .expect("delete");
    refused(&a, 412, "precondition_failed", "deleting the last admin");
    still_serves(root).await;
    for id in ["ro", "wo", "root"] {
        let a = root
            .delete_path(&format!("/v1/admin/tokens/{id}"))
            .await
            .expect("delete");
        assert_eq!(a.status, 200, "{id}: {}", a.text());
    }
    let r = c.client(0).get("app-data", "k0").await.expect("get");
    assert_eq!((r.status, r.text()), (200, "v0".to_owned()), "open again");
}

async fn bytes_of(client: &quorra_client::Client, bucket: &str, key: &str) -> Vec<Vec<u8>> {
    let fetched = client.get(bucket, key).await.expect("read");
    fetched.values.into_iter().map(|v| v.bytes).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_grants_bind_quic_clients_as_tokens_bind_http() {
    let c = TestCluster::start(&quorra_bin!(), 3).expect("cluster");
    c.wait_converged(std::time::Duration::from_secs(30))
        .await
        .expect("converged");
    let admin = c.client(0);
    let app = c.quic_client("app", None).await;
    let ro = c.quic_client("ro", None).await;
    let stranger = c.quic_client("stranger", None).await;
    // Open cluster, no entries: a client certificate reaches every bucket.
    stranger
        .put("other", "k", "s0", None)
        .await
        .expect("open cluster");

    for (name, grants) in [
        (
            "app",
            json!([{"bucket": "app-*", "allow": ["read", "write"]}]),
        ),
        ("ro", json!([{"bucket": "app-data", "allow": ["read"]}])),
    ] {
        let a = admin
            .put_json(
                &format!("/v1/admin/certs/{name}"),
                &json!({"grants": grants}),
            )
            .await
            .expect("grant");
        assert_eq!(a.status, 200, "{}", a.text());
        assert_eq!(json_of(&a)["activated"], true);
    }
    app.put("app-data", "k", "v1", None)
        .await
        .expect("within its grant");
    assert_eq!(bytes_of(&ro, "app-data", "k").await, [b"v1".to_vec()]);

    let forbidden = |r: Result<(), ClientError>, what: &str| match r {
        Err(ClientError::Forbidden(m)) => assert!(m.contains("permission"), "{what}: {m}"),
        other => panic!("{what}: {other:?}"),
    };
    forbidden(
        app.put("other", "k", "x", None).await.map(drop),
        "app writes outside app-*",
    );
    forbidden(
        app.get("other", "k").await.map(drop),
        "app reads outside app-*",
    );
    forbidden(
        ro.put("app-data", "k", "x", None).await.map(drop),
        "read-only writes",
    );
    forbidden(
        ro.delete("app-data", "k", None).await.map(drop),
        "read-only deletes",
    );
    app.get("app-data", "k")
        .await
        .expect("the node still serves");

    // Once the cluster has tokens it is closed for certificates too: one
    // with no grant of its own (the QUIC form of a missing token) reaches
    // nothing, so QUIC cannot bypass what HTTP refuses.
    let root_token = create_token(
        &admin,
        "root",
        json!([{"bucket": "*", "allow": ["read", "write", "admin"]}]),
    )
    .await;
    forbidden(
        stranger.get("other", "k").await.map(drop),
        "an ungranted certificate",
    );

    // A write-only certificate's write answer carries the context, not
    // the values; and the layout a client gets leaves the policy out.
    let grant = json!({"grants": [{"bucket": "app-data", "allow": ["write"]}]});
    let root = c.client(0).with_bearer(&root_token);
    let a = root
        .put_json("/v1/admin/certs/wo", &grant)
        .await
        .expect("grant");
    assert_eq!(a.status, 200, "{}", a.text());
    let target = c.nodes[0].peer.expect("peer address");
    quorra_node::net::certs::generate_role(
        &c.certs,
        quorra_core::auth::Role::Client,
        &["wo".into()],
    )
    .expect("cert");
    let certs = quorra_node::net::certs::NodeCerts::load(&c.certs, "wo").expect("load");
    let t = quorra_node::net::transport::Transport::bind(
        "127.0.0.1:0".parse().expect("addr"),
        &certs,
        1 << 20,
    )
    .expect("bind");
    let limits = quorra_core::Limits::default();
    let write = quorra_core::proto::Write {
        bucket: quorra_core::BucketName::parse("app-data", &limits).expect("bucket"),
        key: quorra_core::Key::parse(b"k".to_vec(), &limits).expect("key"),
        context: None,
        operation: quorra_core::proto::Operation::Put(quorra_core::Content::value(
            b"blind".to_vec(),
            "text/plain",
            0,
        )),
        quorum: quorra_core::QuorumOverrides::default(),
    };
    let std_timeout = std::time::Duration::from_secs(5);
    let answer = t
        .ask(target, write, std_timeout)
        .await
        .expect("answer")
        .expect("written");
    assert!(
        answer.object.is_none() && answer.context.is_some(),
        "{answer:?}"
    );
    let shape = t
        .ask(target, quorra_core::proto::ClusterInfo, std_timeout)
        .await
        .expect("answer")
        .expect("shape");
    assert!(
        shape.layout.is_some_and(|l| l.access.is_none()),
        "the policy is hidden"
    );
    // A cluster admin's certificate (a gateway's) gets the policy, to
    // check callers' tokens with; a client certificate's client does not.
    quorra_node::net::certs::generate_role(
        &c.certs,
        quorra_core::auth::Role::Admin,
        &["gateway".into()],
    )
    .expect("admin cert");
    let seeds = c.nodes.iter().filter_map(|n| n.peer).collect();
    let gateway = quorra_client::Client::connect(quorra_client::ClientConfig::new(
        seeds, &c.certs, "gateway",
    ))
    .await
    .expect("admin client");
    let policy = gateway.access_policy().expect("an admin sees the policy");
    assert!(policy.tokens.contains_key("root"), "{policy:?}");
    assert!(policy.certs.contains_key("wo"), "{policy:?}");
    assert_eq!(app.access_policy(), None, "a client certificate does not");
    assert_eq!(
        gateway.bucket_props("app-data"),
        app.bucket_props("app-data"),
        "both see the bucket table"
    );
    forbidden(
        stranger.put("other", "k", "x", None).await.map(drop),
        "an ungranted certificate",
    );
    let read = app.get("app-data", "k").await.expect("read");
    app.put("app-data", "k", "v2", Some(&read.context))
        .await
        .expect("granted certificates keep working");
    assert_eq!(bytes_of(&ro, "app-data", "k").await, [b"v2".to_vec()]);
}
