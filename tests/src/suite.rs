//! One HTTP suite, run against a node and against a gateway in front of
//! the same cluster (`tests/gateway.rs`): what a caller of the HTTP API
//! relies on, whichever process answers.

use serde_json::{json, Value};

use crate::http::Client;

fn json_of(a: &crate::http::Answer) -> Value {
    serde_json::from_slice(&a.body).unwrap_or(Value::Null)
}

/// Keys, siblings and contexts, create-only writes, deletes, data types,
/// bucket properties, cluster views, the document and bad input, through
/// `http`. `tag` keeps the keys and buckets of two runs apart.
pub async fn api_contract(http: &Client, tag: &str) {
    let b = format!("suite-{tag}");
    // Write, read back with its content type and context.
    let w = http.put(&b, "k", "v1", None, "").await.expect("put");
    assert_eq!(w.status, 204, "{tag}: {}", w.text());
    let first = w.context.expect("a write answers a context");
    let r = http.get(&b, "k").await.expect("get");
    assert_eq!((r.status, r.text()), (200, "v1".to_owned()), "{tag}");
    assert_eq!(r.content_type.as_deref(), Some("text/plain"), "{tag}");

    // A blind write beside it: siblings, 300 with both; resolved with the
    // context covering both.
    let w = http
        .put(&b, "k", "v2", Some(&first), "")
        .await
        .expect("put");
    assert_eq!(w.status, 204, "{tag}");
    let w = http
        .put(&b, "k", "v3", Some(&first), "")
        .await
        .expect("put");
    assert_eq!(w.status, 204, "{tag}");
    let r = http.get(&b, "k").await.expect("get");
    assert_eq!(r.status, 300, "{tag}: {}", r.text());
    assert_eq!(r.values(), ["v2", "v3"], "{tag}");
    let both = r.context.expect("context");
    let w = http
        .put(&b, "k", "v4", Some(&both), "?w=3")
        .await
        .expect("put");
    assert_eq!(w.status, 204, "{tag}");
    let r = http.get(&b, "k").await.expect("get");
    assert_eq!((r.status, r.text()), (200, "v4".to_owned()), "{tag}");

    // Create-only: 412 over a value, 204 where there is none.
    let w = http
        .put_with(&b, "k", "again", &[("if-none-match", "*")])
        .await
        .expect("create");
    assert_eq!(w.status, 412, "{tag}: {}", w.text());
    assert_eq!(w.error_code().as_deref(), Some("precondition_failed"));
    let w = http
        .put_with(&b, "fresh", "new", &[("if-none-match", "*")])
        .await
        .expect("create");
    assert_eq!(w.status, 204, "{tag}: {}", w.text());

    // Delete with the context read: gone.
    let r = http.get(&b, "k").await.expect("get");
    let d = http
        .delete(&b, "k", r.context.as_deref())
        .await
        .expect("delete");
    assert_eq!(d.status, 204, "{tag}");
    assert_eq!(http.get(&b, "k").await.expect("get").status, 404, "{tag}");

    // A data type: a counter bucket, then increments.
    let counters = format!("counters-{tag}");
    let p = http
        .put_json(
            &format!("/v1/buckets/{counters}/props"),
            &json!({"datatype": "counter"}),
        )
        .await
        .expect("props");
    assert_eq!(p.status, 200, "{tag}: {}", p.text());
    assert_eq!(json_of(&p)["props"]["datatype"], "counter", "{tag}");
    // A gateway learns the bucket's type within about a second.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let inc = loop {
        let a = http
            .post_json(&format!("/v1/crdt/{counters}/c"), &json!({"increment": 2}))
            .await
            .expect("increment");
        if a.status == 200 || std::time::Instant::now() > deadline {
            break a;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(inc.status, 200, "{tag}: {}", inc.text());
    let a = http
        .post_json(&format!("/v1/crdt/{counters}/c"), &json!({"increment": 3}))
        .await
        .expect("increment");
    assert_eq!(json_of(&a)["value"], 5, "{tag}: {}", a.text());
    let a = http
        .get_path(&format!("/v1/crdt/{counters}/c"))
        .await
        .expect("read");
    assert_eq!(
        (json_of(&a)["type"].clone(), json_of(&a)["value"].clone()),
        (json!("counter"), json!(5)),
        "{tag}"
    );
    // A plain write to it, and an operation of another type: refused.
    let w = http.put(&counters, "c", "x", None, "").await.expect("put");
    assert_eq!(w.error_code().as_deref(), Some("wrong_datatype"), "{tag}");
    let a = http
        .post_json(&format!("/v1/crdt/{counters}/c"), &json!({"add": ["a"]}))
        .await
        .expect("op");
    assert_eq!(a.status, 400, "{tag}: {}", a.text());

    // Cluster views and the document.
    let m = http.get_path("/v1/cluster/members").await.expect("members");
    assert_eq!(m.status, 200, "{tag}");
    assert_eq!(
        json_of(&m)["members"].as_array().map(Vec::len),
        Some(3),
        "{tag}"
    );
    let d = http.get_path("/openapi.json").await.expect("document");
    assert_eq!(d.status, 200, "{tag}");
    assert!(
        json_of(&d)["paths"]["/v1/kv/{bucket}/{key}"].is_object(),
        "{tag}"
    );

    // Bad input: a clear code each, and it serves on.
    let a = http
        .put("bad bucket", "k", "v", None, "")
        .await
        .expect("put");
    assert_eq!(a.error_code().as_deref(), Some("invalid_bucket"), "{tag}");
    let a = http.put(&b, "k", "v", None, "?x=1").await.expect("put");
    assert_eq!(
        a.error_code().as_deref(),
        Some("invalid_parameter"),
        "{tag}"
    );
    let a = http.get(&b, "k?r=99").await.expect("get");
    assert_eq!(a.status, 400, "{tag}: {}", a.text());
    let a = http
        .put(&b, "k", "v", Some("not a context!"), "")
        .await
        .expect("put");
    assert_eq!(a.error_code().as_deref(), Some("invalid_context"), "{tag}");
    let a = http.get_path("/v1/nowhere").await.expect("get");
    assert_eq!(a.status, 404, "{tag}");
    let w = http.put(&b, "after", "ok", None, "").await.expect("put");
    assert_eq!(w.status, 204, "{tag}: serves on");
}
