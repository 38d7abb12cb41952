//! `quorra cluster ...`: the operator's side of layout changes, over a
//! node's HTTP admin endpoints (`/v1/admin/layout/...`), as Riak's
//! `riak admin cluster` and Garage's `garage layout` work: stage changes,
//! look at the plan, commit it.

use clap::{Args, Subcommand};
use serde_json::{json, Value};

/// Settings for `quorra cluster`.
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// Any node's HTTP URL.
    #[arg(long, env = "QUORRA_URL", default_value = "http://127.0.0.1:8098")]
    pub url: String,
    /// Print the node's JSON answer instead of text.
    #[arg(long)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub action: ClusterAction,
}

/// The layout actions.
#[derive(Debug, Clone, Subcommand)]
pub enum ClusterAction {
    /// Show the committed layout and what is staged.
    Status,
    /// Stage giving a member data (a join), or a new zone or weight.
    Join {
        /// The node.
        node: String,
        /// Its zone (default: the zone it reports).
        #[arg(long)]
        zone: Option<String>,
        /// Its weight (default 1).
        #[arg(long)]
        weight: Option<u32>,
    },
    /// Stage a node leaving: its data moves to the others.
    Leave {
        /// The node (default: the node asked).
        node: Option<String>,
    },
    /// Stage removing a node (a dead one: its data is rebuilt elsewhere).
    Remove {
        /// The node.
        node: String,
    },
    /// Stage a member taking a dead node's place and data in one move.
    Replace {
        /// The node to replace.
        dead: String,
        /// The member (holding no data yet) taking its place.
        new: String,
    },
    /// Undo what is staged for a node.
    Clear {
        /// The node.
        node: String,
    },
    /// Stage a bucket's new n_val (it moves data: plan and commit it like
    /// a node's change; its current n_val clears what is staged).
    NVal {
        /// The bucket.
        bucket: String,
        /// Its new n_val (its quorum values must fit it).
        n_val: u8,
    },
    /// Show what committing the staged changes would move.
    Plan,
    /// Commit the staged changes as the next layout version.
    Commit {
        /// The layout version the plan was made against (default: the
        /// node's current one, as `plan` shows it).
        #[arg(long)]
        version: Option<u64>,
    },
}

/// Runs `quorra cluster`.
pub async fn run(args: ClusterArgs) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()?;
    let base = args.url.trim_end_matches('/').to_owned();
    let call = |method: reqwest::Method, path: &str, body: Option<Value>| {
        let mut req = http.request(method, format!("{base}/v1/admin/layout{path}"));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let base = base.clone();
        async move {
            let resp = req
                .send()
                .await
                .map_err(|e| anyhow::anyhow!("{base}: {e}"))?;
            let status = resp.status();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            if !status.is_success() {
                let code = body["error"]["code"].as_str().unwrap_or("?");
                let msg = body["error"]["message"].as_str().unwrap_or("");
                anyhow::bail!("{status} {code}: {msg}");
            }
            Ok::<Value, anyhow::Error>(body)
        }
    };
    use reqwest::Method;
    let answer = match &args.action {
        ClusterAction::Status => {
            let mut layout = call(Method::GET, "", None).await?;
            // The asked node's transfers, when partitions move.
            let status: Value = http
                .get(format!("{base}/v1/cluster/status"))
                .send()
                .await
                .map_err(|e| anyhow::anyhow!("{base}: {e}"))?
                .json()
                .await
                .unwrap_or(Value::Null);
            layout["moving"] = status["layout"]["moving"].clone();
            layout["transfers"] = status["transfers"].clone();
            layout["node"] = status["node"].clone();
            layout
        }
        ClusterAction::Join { node, zone, weight } => {
            let body = json!({"node": node, "zone": zone, "weight": weight});
            call(Method::POST, "/join", Some(body)).await?
        }
        ClusterAction::Leave { node } => {
            call(Method::POST, "/leave", Some(json!({ "node": node }))).await?
        }
        ClusterAction::Remove { node } => {
            call(Method::POST, "/remove", Some(json!({ "node": node }))).await?
        }
        ClusterAction::Replace { dead, new } => {
            let body = json!({"node": dead, "with": new});
            call(Method::POST, "/replace", Some(body)).await?
        }
        ClusterAction::Clear { node } => {
            call(Method::POST, "/clear", Some(json!({ "node": node }))).await?
        }
        ClusterAction::NVal { bucket, n_val } => {
            let body = json!({"bucket": bucket, "n_val": n_val});
            call(Method::POST, "/n_val", Some(body)).await?
        }
        ClusterAction::Plan => call(Method::GET, "/plan", None).await?,
        ClusterAction::Commit { version } => {
            let version = match version {
                Some(v) => *v,
                None => call(Method::GET, "", None).await?["version"]
                    .as_u64()
                    .ok_or_else(|| anyhow::anyhow!("the node did not say its layout version"))?,
            };
            call(Method::POST, "/commit", Some(json!({ "version": version }))).await?
        }
    };
    let text = if args.json {
        format!("{}\n", serde_json::to_string_pretty(&answer)?)
    } else if matches!(args.action, ClusterAction::Plan) {
        plan_text(&answer)
    } else if matches!(args.action, ClusterAction::Commit { .. }) {
        format!(
            "committed layout version {}\n{}",
            answer["version"],
            layout_text(&answer)
        )
    } else {
        layout_text(&answer)
    };
    emit(&text)
}

/// Writes `text` to stdout; a reader that went away (`| head`) is not an
/// error.
fn emit(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// A layout as text.
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
            out.push_str(&format!(
                "{id:<16} {:<12} {:>6}  {:>5}\n",
                r["zone"].as_str().unwrap_or("-"),
                r["weight"].as_u64().unwrap_or(0),
                r["slots"].as_u64().unwrap_or(0),
            ));
        }
    }
    if let Some(idle) = l["members_without_data"].as_array() {
        for id in idle {
            out.push_str(&format!(
                "{:<16} (member, holds no data)\n",
                id.as_str().unwrap_or("?")
            ));
        }
    }
    if l["moving"] == true {
        let t = &l["transfers"];
        out.push_str(&format!(
            "partitions moving: {} has copied {} of the {} partitions it gains ({} keys, {} bytes); handover waits for {}\n",
            l["node"].as_str().unwrap_or("this node"),
            t["copied"],
            t["gaining"],
            t["keys"],
            t["bytes"],
            match ids(&t["waiting_for"]) {
                w if w.is_empty() => "no copy: it is being committed".to_owned(),
                w => w,
            },
        ));
        if let Some(stalled) = t["stalled"].as_object() {
            for (p, why) in stalled {
                out.push_str(&format!(
                    "  partition {p} stalled: {}\n",
                    why.as_str().unwrap_or("?")
                ));
            }
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
        out.push_str(&format!(
            "  {id}: {} (staged by {})\n",
            change_text(&s["change"]),
            s["by"].as_str().unwrap_or("?")
        ));
    }
    for (bucket, s) in n_vals.into_iter().flatten() {
        out.push_str(&format!(
            "  bucket {bucket}: n_val {} (staged by {})\n",
            s["n_val"],
            s["by"].as_str().unwrap_or("?")
        ));
    }
    out.push_str("see `quorra cluster plan`, then `quorra cluster commit`\n");
    out
}

/// A plan as text.
pub fn plan_text(p: &Value) -> String {
    let mut out = format!(
        "plan: layout version {} -> {}\n",
        p["from_version"], p["to_version"]
    );
    if let Some(changes) = p["changes"].as_object() {
        for (id, c) in changes {
            out.push_str(&format!("  {id}: {}\n", change_text(c)));
        }
    }
    if let Some(n_vals) = p["n_val_changes"].as_object() {
        for (bucket, c) in n_vals {
            out.push_str(&format!(
                "  bucket {bucket}: n_val {} -> {}\n",
                c["from"], c["to"]
            ));
        }
    }
    if let Some(copies) = p["bucket_copies"].as_array().filter(|c| !c.is_empty()) {
        out.push_str(&format!(
            "{} partition copies of single buckets (n_val changes)\n",
            copies.len()
        ));
    }
    out.push_str(&format!(
        "moving {} of {} replica slots ({:.1}%), about {} keys and {} bytes\n",
        p["slots_moving"],
        p["slots"],
        p["share_moving"].as_f64().unwrap_or(0.0) * 100.0,
        p["keys_estimated"],
        p["bytes_estimated"],
    ));
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
    for id in nodes {
        let b = before
            .and_then(|m| m.get(id))
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let a = after
            .and_then(|m| m.get(id))
            .and_then(Value::as_u64)
            .unwrap_or(0);
        out.push_str(&format!("{id:<16} {b:>6}  {a:>6}\n"));
    }
    if let Some(transfers) = p["transfers"].as_array() {
        out.push_str(&format!("{} partitions change hands:\n", transfers.len()));
        for t in transfers.iter().take(20) {
            out.push_str(&format!(
                "  partition {:>3}: copied from {} to {}, given up by {} (~{} keys)\n",
                t["partition"].as_u64().unwrap_or(0),
                ids(&t["from"]),
                ids(&t["to"]),
                ids(&t["leaving"]),
                t["keys_estimated"],
            ));
        }
        if transfers.len() > 20 {
            out.push_str(&format!(
                "  ... and {} more (--json lists all)\n",
                transfers.len() - 20
            ));
        }
    }
    out.push_str(&format!(
        "commit with: quorra cluster commit --version {}\n",
        p["from_version"]
    ));
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

/// A JSON list of node ids as `a,b,c`.
fn ids(v: &Value) -> String {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}
