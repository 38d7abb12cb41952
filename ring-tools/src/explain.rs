//! `ring-tools explain BUCKET KEY`: why a read shows siblings or an old
//! value. It reads the key on every replica and fallback by itself (the
//! per-replica read, never merged), compares their clocks, and says which
//! replica is behind and what will bring it up to date: the hints pending
//! for it, and its partition's last anti-entropy exchange.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use quorra_client::admin::AdminClient;
use serde_json::{json, Value};

use crate::cluster::member_urls;

/// A replica's clock: actor → counter.
type Clock = BTreeMap<String, u64>;

fn clock_of(replica: &Value) -> Clock {
    replica["clock"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| Some((e["actor"].as_str()?.to_owned(), e["counter"].as_u64()?)))
        .collect()
}

/// Whether `a` has seen everything `b` has.
fn covers(a: &Clock, b: &Clock) -> bool {
    b.iter()
        .all(|(actor, n)| a.get(actor).copied().unwrap_or(0) >= *n)
}

/// Reads and explains the key.
pub async fn explain(
    admin: &AdminClient,
    bucket: &str,
    key: &str,
) -> anyhow::Result<(Value, String)> {
    let loc = admin.locate(bucket, key).await?;
    let partition = loc["partition"].as_u64().unwrap_or(0);
    let urls: BTreeMap<String, String> = member_urls(admin).await?.into_iter().collect();
    let replicas: Vec<String> = str_list(&loc["preference_list"]);
    let fallbacks: Vec<String> = str_list(&loc["fallbacks"]);
    let mut nodes = Vec::new();
    for (role, id) in replicas
        .iter()
        .map(|id| ("replica", id))
        .chain(fallbacks.iter().map(|id| ("fallback", id)))
    {
        let Some(url) = urls.get(id) else {
            nodes.push(json!({"node": id, "role": role, "answered": false}));
            continue;
        };
        let node = admin.node(url);
        let (copy, status) = (node.replica(bucket, key).await, node.status().await);
        let status = status.ok();
        let ae_age = status
            .as_ref()
            .map(|s| s["anti_entropy"]["last_exchange_age_ms"][partition.to_string()].clone());
        let hints = status.as_ref().map(|s| s["hints_by_owner"].clone());
        nodes.push(json!({
            "node": id,
            "role": role,
            "answered": copy.is_ok(),
            "copy": copy.ok(),
            "hints_by_owner": hints,
            "last_exchange_age_ms": ae_age,
        }));
    }
    let findings = findings(&nodes, &replicas);
    let answer = json!({
        "bucket": bucket,
        "key": key,
        "partition": partition,
        "preference_list": replicas,
        "fallbacks": fallbacks,
        "nodes": nodes,
        "findings": findings,
    });
    let text = explain_text(&answer);
    Ok((answer, text))
}

fn str_list(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect()
}

/// What the copies say, one sentence each.
fn findings(nodes: &[Value], replicas: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let copies: Vec<(&str, Clock, &Value)> = nodes
        .iter()
        .filter(|n| n["role"] == "replica" && n["answered"] == true)
        .map(|n| {
            (
                n["node"].as_str().unwrap_or("?"),
                clock_of(&n["copy"]),
                &n["copy"],
            )
        })
        .collect();
    let silent: Vec<&str> = nodes
        .iter()
        .filter(|n| n["role"] == "replica" && n["answered"] != true)
        .filter_map(|n| n["node"].as_str())
        .collect();
    if !silent.is_empty() {
        out.push(format!(
            "{} did not answer: reads use the other replicas, writes a fallback (hinted handoff)",
            silent.join(",")
        ));
    }
    if copies.is_empty() {
        out.push("no replica answered".to_owned());
        return out;
    }
    if copies.iter().all(|(_, _, c)| c["found"] != true) {
        out.push("no replica holds the key".to_owned());
        return out;
    }
    for (id, clock, copy) in &copies {
        // Behind: another replica has seen all this one has, and more.
        let ahead = copies
            .iter()
            .any(|(other, c, _)| other != id && covers(c, clock) && c != clock);
        if !ahead {
            continue;
        }
        let hints: u64 = nodes
            .iter()
            .filter(|n| n["node"] != *id)
            .filter_map(|n| n["hints_by_owner"][*id].as_u64())
            .sum();
        let age = nodes
            .iter()
            .find(|n| n["node"] == *id)
            .and_then(|n| n["last_exchange_age_ms"].as_u64());
        out.push(format!(
            "{id} is behind ({}): a read at r={} repairs it; {hints} hint(s) for {id} are pending on other nodes; its partition's last anti-entropy exchange was {}",
            if copy["found"] == true { "an older version" } else { "no copy" },
            replicas.len(),
            age.map_or_else(|| "not since it started".to_owned(), |ms| format!("{:.0} s ago", ms as f64 / 1000.0)),
        ));
    }
    // Replicas none of which has seen all the others have: each took
    // writes the others missed.
    let newest = copies
        .iter()
        .find(|(_, c, _)| copies.iter().all(|(_, other, _)| covers(c, other)));
    if newest.is_none() {
        let heads: Vec<&str> = copies
            .iter()
            .filter(|(id, c, _)| {
                !copies
                    .iter()
                    .any(|(o, other, _)| o != id && covers(other, c) && other != c)
            })
            .map(|(id, _, _)| *id)
            .collect();
        out.push(format!(
            "{} hold concurrent versions: a read merges them into siblings and read repair writes the merge back",
            heads.join(", ")
        ));
    }
    let siblings = copies
        .iter()
        .map(|(_, _, copy)| {
            copy["siblings"]
                .as_array()
                .map_or(0, |s| s.iter().filter(|s| s["deleted"] != true).count())
        })
        .max()
        .unwrap_or(0);
    if siblings > 1 {
        out.push(format!(
            "{siblings} siblings: writes that did not see each other (no context, or the same old context); write once with the context of a read to resolve them"
        ));
    }
    if out.is_empty() {
        out.push("every replica holds the same version".to_owned());
    }
    out
}

fn explain_text(a: &Value) -> String {
    let mut out = format!(
        "{}/{}: partition {}, replicas {}, fallbacks {}\n",
        a["bucket"].as_str().unwrap_or(""),
        a["key"].as_str().unwrap_or(""),
        a["partition"],
        crate::output::ids(&a["preference_list"]),
        crate::output::ids(&a["fallbacks"]),
    );
    for n in a["nodes"].as_array().into_iter().flatten() {
        let copy = &n["copy"];
        let what = if n["answered"] != true {
            "no answer".to_owned()
        } else if copy["found"] != true {
            "no copy".to_owned()
        } else {
            let clock: Vec<String> = clock_of(copy)
                .iter()
                .map(|(a, c)| format!("{a}:{c}"))
                .collect();
            let sibs: Vec<String> = copy["siblings"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| {
                    if s["deleted"] == true {
                        "(deleted)".to_owned()
                    } else {
                        format!("{:?}", s["value"].as_str().unwrap_or(""))
                    }
                })
                .collect();
            format!("clock [{}] siblings {}", clock.join(" "), sibs.join(", "))
        };
        let _ = writeln!(
            out,
            "  {:<8} {:<8} {what}",
            n["node"].as_str().unwrap_or("?"),
            n["role"].as_str().unwrap_or("?")
        );
    }
    for f in a["findings"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "- {}", f.as_str().unwrap_or(""));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(clock: &[(&str, u64)], values: &[&str]) -> Value {
        json!({
            "found": true,
            "clock": clock.iter().map(|(a, c)| json!({"actor": a, "counter": c})).collect::<Vec<_>>(),
            "siblings": values.iter().map(|v| json!({"value": v, "deleted": false})).collect::<Vec<_>>(),
        })
    }

    fn node(id: &str, copy: Value) -> Value {
        json!({"node": id, "role": "replica", "answered": true, "copy": copy,
               "hints_by_owner": {"n3": 2}, "last_exchange_age_ms": 4000})
    }

    #[test]
    fn a_replica_behind_is_named_with_its_hints() {
        let nodes = [
            node("n1", copy(&[("a", 2)], &["new"])),
            node("n2", copy(&[("a", 2)], &["new"])),
            node("n3", copy(&[("a", 1)], &["old"])),
        ];
        let f = findings(&nodes, &["n1".into(), "n2".into(), "n3".into()]);
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(f[0].starts_with("n3 is behind"), "{f:?}");
        assert!(f[0].contains("4 hint(s)"), "{f:?}");
    }

    #[test]
    fn concurrent_replicas_are_not_called_behind() {
        let nodes = [
            node("n1", copy(&[("a", 1)], &["x"])),
            node("n2", copy(&[("b", 1)], &["y"])),
        ];
        let f = findings(&nodes, &["n1".into(), "n2".into()]);
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(f[0].starts_with("n1, n2 hold concurrent versions"), "{f:?}");
        let silent = [json!({"node": "n1", "role": "replica", "answered": false})];
        let f = findings(&silent, &["n1".into()]);
        assert!(f.contains(&"no replica answered".to_owned()), "{f:?}");
    }

    #[test]
    fn siblings_and_agreement_are_told_apart() {
        let two = copy(&[("a", 1), ("b", 1)], &["x", "y"]);
        let f = findings(
            &[node("n1", two.clone()), node("n2", two)],
            &["n1".into(), "n2".into()],
        );
        assert!(f[0].starts_with("2 siblings"), "{f:?}");
        let one = copy(&[("a", 1)], &["x"]);
        let f = findings(
            &[node("n1", one.clone()), node("n2", one)],
            &["n1".into(), "n2".into()],
        );
        assert_eq!(f, ["every replica holds the same version"]);
    }
}
