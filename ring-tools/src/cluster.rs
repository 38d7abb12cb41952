//! The online commands on the layout and the members: `status`, and the
//! staged changes (`join`, `leave`, `remove`, `replace`, `clear`,
//! `n-val`), shown as a plan, then committed, as Riak's `riak admin
//! cluster` and Garage's `garage layout` work; with `--commit` the change
//! is committed at once and followed to its handover with a progress bar.
//!
//! Every call goes through the client library's [`AdminClient`].

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use quorra_client::admin::{AdminClient, Stage};
use serde_json::{json, Value};

use crate::output::ids;

/// How often progress is polled.
const POLL: Duration = Duration::from_millis(250);
/// The longest one node's status may take in a poll or in `status` (a
/// paused node must not stall the others for the admin timeout).
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(3);

/// A layout view (`GET /v1/admin/layout`) as text.
pub fn layout_text(l: &Value) -> String {
    let mut out = format!(
        "cluster {} layout version {} (digest {}), {} partitions x {} replicas\n",
        l["cluster"].as_str().unwrap_or("?"),
        l["version"],
        l["digest"].as_str().unwrap_or("?"),
        l["partitions"],
        l["replicas"],
    );
    out.push_str("node             zone         weight  slots\n");
    if let Some(roles) = l["roles"].as_object() {
        for (id, r) in roles {
            let _ = writeln!(
                out,
                "{id:<16} {:<12} {:>6}  {:>5}",
                r["zone"].as_str().unwrap_or("-"),
                r["weight"].as_u64().unwrap_or(0),
                r["slots"].as_u64().unwrap_or(0),
            );
        }
    }
    if let Some(idle) = l["members_without_data"].as_array() {
        for id in idle {
            let _ = writeln!(
                out,
                "{:<16} (member, holds no data)",
                id.as_str().unwrap_or("?")
            );
        }
    }
    let staged = l["staged"].as_object().filter(|s| !s.is_empty());
    let n_vals = l["staged_n_val"].as_object().filter(|s| !s.is_empty());
    if staged.is_none() && n_vals.is_none() {
        out.push_str("nothing staged\n");
        return out;
    }
    out.push_str("staged:\n");
    for (id, s) in staged.into_iter().flatten() {
        let _ = writeln!(
            out,
            "  {id}: {} (staged by {})",
            change_text(&s["change"]),
            s["by"].as_str().unwrap_or("?")
        );
    }
    for (bucket, s) in n_vals.into_iter().flatten() {
        let _ = writeln!(
            out,
            "  bucket {bucket}: n_val {} (staged by {})",
            s["n_val"],
            s["by"].as_str().unwrap_or("?")
        );
    }
    out
}

/// A staged plan (`GET /v1/admin/layout/plan`) as text.
pub fn plan_text(p: &Value) -> String {
    let mut out = format!(
        "plan: layout version {} -> {}\n",
        p["from_version"], p["to_version"]
    );
    if let Some(changes) = p["changes"].as_object() {
        for (id, c) in changes {
            let _ = writeln!(out, "  {id}: {}", change_text(c));
        }
    }
    if let Some(n_vals) = p["n_val_changes"].as_object() {
        for (bucket, c) in n_vals {
            let _ = writeln!(out, "  bucket {bucket}: n_val {} -> {}", c["from"], c["to"]);
        }
    }
    if let Some(copies) = p["bucket_copies"].as_array().filter(|c| !c.is_empty()) {
        let _ = writeln!(
            out,
            "{} partition copies of single buckets (n_val changes)",
            copies.len()
        );
    }
    let _ = writeln!(
        out,
        "moving {} of {} replica slots ({:.1}%), about {} keys and {} bytes",
        p["slots_moving"],
        p["slots"],
        p["share_moving"].as_f64().unwrap_or(0.0) * 100.0,
        p["keys_estimated"],
        p["bytes_estimated"],
    );
    out.push_str("node             before   after\n");
    let before = p["slots_before"].as_object();
    let after = p["slots_after"].as_object();
    let mut nodes: Vec<&String> = before
        .into_iter()
        .chain(after)
        .flat_map(|m| m.keys())
        .collect();
    nodes.sort();
    nodes.dedup();
    let count = |m: Option<&serde_json::Map<String, Value>>, id: &str| {
        m.and_then(|m| m.get(id))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    for id in nodes {
        let _ = writeln!(
            out,
            "{id:<16} {:>6}  {:>6}",
            count(before, id),
            count(after, id)
        );
    }
    if let Some(transfers) = p["transfers"].as_array() {
        let _ = writeln!(out, "{} partitions change hands:", transfers.len());
        for t in transfers.iter().take(20) {
            let _ = writeln!(
                out,
                "  partition {:>3}: copied from {} to {}, given up by {} (~{} keys)",
                t["partition"].as_u64().unwrap_or(0),
                ids(&t["from"]),
                ids(&t["to"]),
                ids(&t["leaving"]),
                t["keys_estimated"],
            );
        }
        if transfers.len() > 20 {
            let _ = writeln!(
                out,
                "  ... and {} more (--json lists all)",
                transfers.len() - 20
            );
        }
    }
    out
}

/// A staged change as text.
fn change_text(c: &Value) -> String {
    if let Some(role) = c.get("set") {
        return format!(
            "join (zone {}, weight {})",
            role["zone"].as_str().unwrap_or("-"),
            role["weight"].as_u64().unwrap_or(1)
        );
    }
    if let Some(new) = c.get("replace_by").and_then(Value::as_str) {
        return format!("replaced by {new}");
    }
    match c.as_str() {
        Some("remove") => "leave (its data moves to the others)".into(),
        Some("keep") => "cleared".into(),
        _ => c.to_string(),
    }
}

/// What a staging command does after staging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Then {
    /// Commit the plan at once.
    pub commit: bool,
    /// Follow the transfer to its handover.
    pub wait: bool,
    /// The longest wait for a handover.
    pub timeout: Duration,
}

/// Stages `change`, shows the plan, and commits and follows it when asked.
/// Returns the JSON answer and its text.
pub async fn stage(
    admin: &AdminClient,
    change: &Stage,
    then: Then,
) -> anyhow::Result<(Value, String)> {
    let layout = admin.stage(change).await?;
    let mut text = layout_text(&layout);
    let plan = match admin.plan().await {
        Ok(plan) => plan,
        // Clearing the last staged change leaves nothing to plan.
        Err(e) if e.code() == Some("invalid_parameter") && !then.commit => {
            return Ok((json!({ "layout": layout }), text));
        }
        Err(e) => return Err(e.into()),
    };
    text.push_str(&plan_text(&plan));
    let version = plan["from_version"].as_u64().unwrap_or(0);
    if !then.commit {
        let _ = writeln!(
            text,
            "commit with: ring-tools commit --version {version} (add --wait to follow the transfer)"
        );
        return Ok((json!({ "layout": layout, "plan": plan }), text));
    }
    let (committed, more) = commit(admin, version, then).await?;
    text.push_str(&more);
    Ok((
        json!({ "layout": layout, "plan": plan, "committed": committed }),
        text,
    ))
}

/// Commits what was staged against `version`; with `then.wait`, follows
/// the transfer until every node has handed over.
pub async fn commit(
    admin: &AdminClient,
    version: u64,
    then: Then,
) -> anyhow::Result<(Value, String)> {
    let committed = admin.commit(version).await?;
    let mut text = format!(
        "committed layout version {}\n{}",
        committed["version"],
        layout_text(&committed)
    );
    let mut answer = json!({ "layout": committed });
    if then.wait {
        let new = committed["version"].as_u64().unwrap_or(version + 1);
        let done = follow(admin, new, then.timeout).await?;
        let _ = writeln!(
            text,
            "handed over: every node is on layout version {} ({} partitions copied, {} keys, {} bytes, in {:.1} s)",
            done["version"],
            done["copied"],
            done["keys"],
            done["bytes"],
            done["seconds"].as_f64().unwrap_or(0.0)
        );
        answer["handover"] = done;
    }
    Ok((answer, text))
}

/// A member as a node knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its id.
    pub id: String,
    /// Its HTTP base URL.
    pub url: String,
    /// Its peer (QUIC) address, where clients connect.
    pub peer: Option<std::net::SocketAddr>,
}

/// Every member with an HTTP address, from the members a node knows.
pub async fn members(admin: &AdminClient) -> anyhow::Result<Vec<Member>> {
    let members = admin.members().await?;
    Ok(members["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| {
            Some(Member {
                id: m["id"].as_str()?.to_owned(),
                url: format!("http://{}", m["http_addr"].as_str()?),
                peer: m["peer_addr"].as_str().and_then(|a| a.parse().ok()),
            })
        })
        .collect())
}

/// Every member's id and HTTP URL.
pub async fn member_urls(admin: &AdminClient) -> anyhow::Result<Vec<(String, String)>> {
    Ok(members(admin)
        .await?
        .into_iter()
        .map(|m| (m.id, m.url))
        .collect())
}

/// Waits until every reachable member holds a layout past `committed`
/// with nothing moving, showing the partitions copied so far.
async fn follow(admin: &AdminClient, committed: u64, timeout: Duration) -> anyhow::Result<Value> {
    let started = Instant::now();
    let bar = crate::output::progress_bar("transfer", "partitions copied", 0);
    let mut last = json!({});
    // Each node's counters at their highest: a node resets them once its
    // transfer is handed over.
    let mut seen: std::collections::BTreeMap<String, [u64; 4]> = Default::default();
    let poll = admin.with_call_timeout(STATUS_TIMEOUT);
    // The members a committed change moves data between are known now.
    let urls = member_urls(admin).await?;
    loop {
        let mut done = true;
        let mut version = u64::MAX;
        let mut stalled = Vec::new();
        for (id, url) in &urls {
            let Ok(s) = poll.node(url).status().await else {
                continue;
            };
            let t = &s["transfers"];
            let now = ["gaining", "copied", "keys", "bytes"].map(|k| t[k].as_u64().unwrap_or(0));
            let max = seen.entry(id.clone()).or_default();
            for (m, n) in max.iter_mut().zip(now) {
                *m = (*m).max(n);
            }
            if let Some(st) = t["stalled"].as_object().filter(|s| !s.is_empty()) {
                stalled.push(format!("{id}: {} stalled", st.len()));
            }
            let v = s["layout"]["version"].as_u64().unwrap_or(0);
            version = version.min(v);
            done &= v > committed || (v == committed && s["layout"]["moving"] == false);
        }
        let total = |i: usize| seen.values().map(|v| v[i]).sum::<u64>();
        let [gaining, copied, keys, bytes] = [0, 1, 2, 3].map(total);
        bar.set_length(gaining);
        bar.set_position(copied);
        bar.set_message(stalled.join(", "));
        last = json!({
            "version": version,
            "gaining": gaining,
            "copied": copied,
            "keys": keys,
            "bytes": bytes,
            "seconds": started.elapsed().as_secs_f64(),
        });
        if done && version != u64::MAX {
            bar.finish_and_clear();
            return Ok(last);
        }
        if started.elapsed() > timeout {
            bar.abandon();
            anyhow::bail!(
                "the transfer did not finish within {timeout:?}; last seen: {last}; see `ring-tools status`"
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `ring-tools status`: every member with its state, zone and layout
/// version, hints pending, transfers and anti-entropy progress, from each
/// member's own status.
pub async fn status(admin: &AdminClient) -> anyhow::Result<(Value, String)> {
    let view = admin.layout_view().await?;
    let members = admin.members().await?;
    let poll = admin.with_call_timeout(STATUS_TIMEOUT);
    let mut rows = Vec::new();
    for m in members["members"].as_array().into_iter().flatten() {
        let id = m["id"].as_str().unwrap_or("?").to_owned();
        let url = format!("http://{}", m["http_addr"].as_str().unwrap_or("?"));
        let s = poll.node(&url).status().await.ok();
        let s = s.as_ref();
        let ae = s.map(|s| &s["anti_entropy"]);
        rows.push(json!({
            "id": id,
            "url": url,
            "status": m["status"],
            "zone": m["zone"],
            "incarnation": m["incarnation"],
            "holds_data": view["roles"].get(&id).is_some(),
            "answered": s.is_some(),
            "layout_version": s.map(|s| s["layout"]["version"].clone()),
            "moving": s.map(|s| s["layout"]["moving"].clone()),
            "hints_pending": s.map(|s| s["hints_pending"].clone()),
            "transfers": s.map(|s| s["transfers"].clone()),
            "anti_entropy": ae.map(|a| json!({
                "partitions_held": a["partitions_held"],
                "never_exchanged": a["partitions_never_exchanged"],
                "oldest_exchange_age_ms": a["oldest_exchange_age_ms"],
                "exchanges": a["exchanges"],
                "running": a["running"],
                "requested": a["requested"],
            })),
            "tombstones_held": s.map(|s| s["tombstones"]["held"].clone()),
        }));
    }
    let answer = json!({ "layout": view, "members": rows });
    Ok((answer.clone(), status_text(&answer)))
}

fn status_text(s: &Value) -> String {
    let l = &s["layout"];
    let mut out = format!(
        "cluster {} layout version {}, {} partitions x {} replicas\n",
        l["cluster"].as_str().unwrap_or("?"),
        l["version"],
        l["partitions"],
        l["replicas"]
    );
    let _ = writeln!(
        out,
        "{:<10} {:<8} {:<10} {:>5} {:>7} {:>6} {:>9} {:>12} {:>10}",
        "node", "state", "zone", "data", "layout", "hints", "transfer", "ae exchanged", "ae oldest"
    );
    for m in s["members"].as_array().into_iter().flatten() {
        let t = &m["transfers"];
        let transfer = if t["gaining"].as_u64().unwrap_or(0) > 0 {
            format!("{}/{}", t["copied"], t["gaining"])
        } else {
            "-".to_owned()
        };
        let ae = &m["anti_entropy"];
        let oldest = ae["oldest_exchange_age_ms"].as_u64().map_or_else(
            || "-".to_owned(),
            |ms| format!("{:.0}s", ms as f64 / 1000.0),
        );
        let answered = m["answered"] == true;
        let _ = writeln!(
            out,
            "{:<10} {:<8} {:<10} {:>5} {:>7} {:>6} {:>9} {:>12} {:>10}",
            m["id"].as_str().unwrap_or("?"),
            m["status"].as_str().unwrap_or("?"),
            m["zone"].as_str().unwrap_or("-"),
            if m["holds_data"] == true { "yes" } else { "no" },
            if answered {
                m["layout_version"].to_string()
            } else {
                "?".into()
            },
            if answered {
                m["hints_pending"].to_string()
            } else {
                "?".into()
            },
            transfer,
            if answered {
                let held = ae["partitions_held"].as_u64().unwrap_or(0);
                let never = ae["never_exchanged"].as_u64().unwrap_or(0);
                format!("{}/{held}", held.saturating_sub(never))
            } else {
                "?".into()
            },
            oldest,
        );
    }
    for m in s["members"].as_array().into_iter().flatten() {
        let t = &m["transfers"];
        if m["moving"] == true && t["gaining"].as_u64().unwrap_or(0) > 0 {
            let _ = writeln!(
                out,
                "partitions moving: {} has copied {} of the {} partitions it gains ({} keys, {} bytes){}",
                m["id"].as_str().unwrap_or("?"),
                t["copied"],
                t["gaining"],
                t["keys"],
                t["bytes"],
                match ids(&t["waiting_for"]) {
                    w if w.is_empty() => String::new(),
                    w => format!("; handover waits for {w}"),
                },
            );
        }
        for (p, why) in t["stalled"].as_object().into_iter().flatten() {
            let _ = writeln!(
                out,
                "  {} partition {p} stalled: {}",
                m["id"].as_str().unwrap_or("?"),
                why.as_str().unwrap_or("?")
            );
        }
    }
    let staged = l["staged"].as_object().map_or(0, |s| s.len());
    if staged > 0 {
        let _ = writeln!(out, "{staged} change(s) staged: see `ring-tools plan`");
    }
    out
}
