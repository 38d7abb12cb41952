//! `/openapi.json` against what a node serves: every documented operation
//! reaches its handler, every other method on a documented path is `405`,
//! every object schema is closed, and every operation documents the JSON
//! error. (schemathesis then checks the answers against the document:
//! `scripts/schemathesis.sh`, a phase of the test command.)

use std::time::Duration;

use quorra_tests::cluster::TestCluster;
use quorra_tests::quorra_bin;
use reqwest::Method;
use serde_json::{json, Value};

/// A concrete path for a documented one.
fn concrete(path: &str) -> String {
    path.replace("{bucket}", "b")
        .replace("{key}", "k/x")
        .replace("{id}", "t")
        .replace("{name}", "n")
        .replace("{action}", "clear")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_and_the_router_list_the_same_routes() {
    let c = TestCluster::start_with(&quorra_bin!(), 1, |_, cfg| cfg.fault_injection = true)
        .expect("cluster");
    c.wait_converged(Duration::from_secs(30))
        .await
        .expect("ready");
    let http = c.client(0);
    let a = http.get_path("/openapi.json").await.expect("document");
    assert_eq!(a.status, 200, "{}", a.text());
    let doc: Value = serde_json::from_slice(&a.body).expect("JSON");
    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.len() >= 20, "{} paths", paths.len());

    let methods = [
        Method::GET,
        Method::PUT,
        Method::POST,
        Method::DELETE,
        Method::PATCH,
    ];
    let mut operations = 0;
    for (path, item) in paths {
        let at = concrete(path);
        assert!(
            !at.contains('{'),
            "a parameter the test does not fill: {path}"
        );
        for m in &methods {
            let documented = item.get(m.as_str().to_lowercase()).is_some();
            let body = matches!(*m, Method::PUT | Method::POST).then(|| json!({}));
            let a = http
                .send(m.clone(), &at, body.as_ref())
                .await
                .expect("request");
            let code = a.error_code();
            if documented {
                operations += 1;
                // A handler answered: not the router's fallbacks.
                assert_ne!(
                    code.as_deref(),
                    Some("method_not_allowed"),
                    "{m} {path} is documented but not routed: {}",
                    a.text()
                );
                assert!(
                    !(code.as_deref() == Some("route_not_found")
                        && a.text().contains("no such resource")),
                    "{m} {path} is documented but not routed: {}",
                    a.text()
                );
                assert_ne!(a.status, 500, "{m} {path}: {}", a.text());
            } else {
                assert_eq!(
                    (a.status, code.as_deref()),
                    (405, Some("method_not_allowed")),
                    "{m} {path} is served but not documented: {}",
                    a.text()
                );
            }
        }
        // Every operation answers refusals with the JSON error.
        for (m, op) in item.as_object().expect("path item") {
            assert_eq!(
                op["responses"]["default"]["content"]["application/json"]["schema"]["$ref"],
                json!("#/components/schemas/ErrorBody"),
                "{m} {path}"
            );
        }
    }
    assert!(operations >= 30, "{operations} operations");
    // A path nobody documented is the router's 404.
    let a = http.get_path("/v1/nowhere").await.expect("request");
    assert_eq!(a.error_code().as_deref(), Some("route_not_found"));

    // Closed schemas: every object with named fields allows no others.
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    for name in ["ErrorBody", "StatusShown", "Layout", "Members", "CrdtShown"] {
        assert!(schemas.contains_key(name), "{name} missing");
    }
    let mut open = Vec::new();
    walk(&doc, &mut |o| {
        if o.get("type") == Some(&json!("object"))
            && o.contains_key("properties")
            && o.get("additionalProperties") != Some(&json!(false))
        {
            open.push(Value::Object(o.clone()));
        }
    });
    assert!(open.is_empty(), "open object schemas: {open:?}");

    // And the node serves after all of it.
    let w = http.put("b", "after", "v", None, "").await.expect("put");
    assert_eq!(w.status, 204, "{}", w.text());
}

fn walk(v: &Value, f: &mut impl FnMut(&serde_json::Map<String, Value>)) {
    match v {
        Value::Object(o) => {
            f(o);
            o.values().for_each(|v| walk(v, f));
        }
        Value::Array(a) => a.iter().for_each(|v| walk(v, f)),
        _ => {}
    }
}
