//! HTTPS for the HTTP API (`http_tls`): a node answers over TLS with the
//! certificate it is given; a client that trusts its CA reads and writes;
//! a client that does not, and plain HTTP on the same port, are refused
//! without harm to the node, which keeps serving.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use quorra_node::config::HttpTls;
use quorra_tests::cluster::TestCluster;
use quorra_tests::quorra_bin;

fn https_client(ca: Option<&[u8]>, name: &str, addr: SocketAddr) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .resolve(name, addr);
    if let Some(pem) = ca {
        b = b.add_root_certificate(reqwest::Certificate::from_pem(pem).expect("CA"));
    }
    b.build().expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_over_https() {
    // The node's own cluster certificate (names `quorra` and `n1`) serves
    // HTTPS here; a deployment gives one its clients trust.
    let c = TestCluster::start_with(&quorra_bin!(), 1, |_, cfg| {
        let certs = cfg.cert_dir.clone().expect("certs");
        cfg.http_tls = Some(HttpTls {
            cert_file: certs.join("n1.pem"),
            key_file: certs.join("n1-key.pem"),
        });
    })
    .expect("node");
    let node = &c.nodes[0];
    assert!(node.url.starts_with("https://"), "{}", node.url);
    let addr: SocketAddr = node.url["https://".len()..].parse().expect("addr");
    let ca = std::fs::read(c.dir().join("certs/ca.pem")).expect("ca.pem");
    let trusted = https_client(Some(&ca), "n1", addr);
    let base = format!("https://n1:{}", addr.port());

    // Ready within the harness's bound (the node founds its cluster alone).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = trusted.get(format!("{base}/ready")).send().await;
        if r.as_ref().is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "not ready over https: {r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let put = trusted
        .put(format!("{base}/v1/kv/b/k"))
        .body("over tls")
        .send()
        .await
        .expect("put");
    assert_eq!(put.status(), 204);
    let got = trusted
        .get(format!("{base}/v1/kv/b/k"))
        .send()
        .await
        .expect("get");
    assert_eq!(got.status(), 200);
    assert_eq!(got.text().await.expect("body"), "over tls");

    // A client that does not trust the CA refuses the node's certificate.
    let untrusting = https_client(None, "n1", addr);
    let e = untrusting
        .get(format!("{base}/health"))
        .send()
        .await
        .expect_err("an unknown CA must fail the handshake");
    assert!(e.is_connect(), "{e:?}");

    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let r = plain.get(format!("http://{addr}/health")).send().await;
    assert!(
        r.as_ref().map_or(true, |r| !r.status().is_success()),
        "plain HTTP was served: {r:?}"
    );

    // The health-check command asks over HTTPS when told to; plain, it
    // gets no ready answer from a TLS port.
    let ready = |https: bool| {
        let mut cmd = std::process::Command::new(quorra_bin!());
        cmd.args(["ready", "--http-addr", &addr.to_string()]);
        if https {
            cmd.arg("--https");
        }
        cmd.output().expect("quorra ready")
    };
    let over_tls = ready(true);
    assert!(
        over_tls.status.success(),
        "{}",
        String::from_utf8_lossy(&over_tls.stderr)
    );
    assert!(!ready(false).status.success(), "plain HTTP was answered");

    // The node serves on.
    let got = trusted
        .get(format!("{base}/v1/kv/b/k"))
        .send()
        .await
        .expect("get after");
    assert_eq!(got.status(), 200);
}
