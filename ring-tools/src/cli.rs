//! The command line: what each subcommand takes, and the dispatch. Errors
//! become `anyhow` here, at the binary's edge.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use quorra_client::admin::{AdminClient, Stage};
use quorra_core::layout::Layout;
use quorra_core::ring::Ring;
use serde_json::json;

use crate::cluster::{self, Then};
use crate::describe::{self, NodeSpec, Params};
use crate::drill::{self, faults::Fault, faults::Provider, workload::Load};
use crate::output::emit;
use crate::simulate::Step;
use crate::{draw, explain, locate, ownership, repair, simulate};

/// Plan, simulate and administer Quorra rings and clusters.
#[derive(Debug, Parser)]
#[command(name = "ring-tools", version, about)]
pub struct Cli {
    /// Node HTTP URLs, tried in order (comma-separated or repeated).
    #[arg(
        long,
        global = true,
        env = "QUORRA_URL",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:8098"
    )]
    pub url: Vec<String>,
    /// A cluster admin's bearer token (`ID.SECRET`), for a cluster that
    /// has tokens.
    #[arg(long, global = true, env = "QUORRA_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// A cluster described on the command line, or fetched from `--url`.
#[derive(Debug, Clone, Args)]
pub struct Describe {
    /// Nodes: a count (`5`: n1..n5) or `ID[@ZONE][:WEIGHT],...`. Without
    /// it, the layout of the live cluster at `--url`.
    #[arg(long)]
    pub nodes: Option<String>,
    /// With --nodes: zones for the nodes that name none, in turn (`a,b,c`).
    #[arg(long, value_delimiter = ',')]
    pub zones: Vec<String>,
    /// With --nodes: partitions, a power of two [default: 256].
    #[arg(long)]
    pub partitions: Option<u32>,
    /// With --nodes: replicas of each key [default: 3].
    #[arg(long = "n")]
    pub n_val: Option<u8>,
    /// With --nodes: tokens per node, which order the fallbacks [default: 64].
    #[arg(long)]
    pub tokens: Option<u16>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Ownership per node, balance against the fair share, zone spread, and
    /// with --fail the load each survivor carries after a loss (offline
    /// with --nodes; else the live layout, with any staged plan).
    Plan {
        /// The cluster.
        #[command(flatten)]
        describe: Describe,
        /// A node or a zone to lose (the N+1 check).
        #[arg(long)]
        fail: Option<String>,
        /// The cluster's load before the loss, in percent of capacity.
        #[arg(long, default_value_t = 60.0)]
        load: f64,
    },
    /// What joins and removals would move, against the ideal.
    Simulate {
        /// The cluster.
        #[command(flatten)]
        describe: Describe,
        /// Nodes joining: a count or `ID[@ZONE][:WEIGHT],...` (one step).
        #[arg(long)]
        add: Option<String>,
        /// Nodes leaving: ids, comma-separated (one step, after --add).
        #[arg(long, value_delimiter = ',')]
        remove: Vec<String>,
        /// Steps in order: `+COUNT`, `+ID[@ZONE][:WEIGHT]`, `-ID` (repeat).
        #[arg(long = "step", allow_hyphen_values = true)]
        steps: Vec<String>,
        /// Keys sampled to count the keys that move.
        #[arg(long, default_value_t = 100_000)]
        keys: usize,
    },
    /// A key's partition, preference list and fallbacks.
    Locate {
        /// The cluster.
        #[command(flatten)]
        describe: Describe,
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
    },
    /// Draw the ring, coloured by owner and zone (.svg or .png).
    Draw {
        /// The cluster.
        #[command(flatten)]
        describe: Describe,
        /// The picture file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Members, states, zones, layout version, hints, transfers and
    /// anti-entropy progress of a live cluster.
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
        /// What to do after staging.
        #[command(flatten)]
        then: ThenArgs,
    },
    /// Stage a node leaving: its data moves to the others.
    Leave {
        /// The node (default: the node asked).
        node: Option<String>,
        /// What to do after staging.
        #[command(flatten)]
        then: ThenArgs,
    },
    /// Stage removing a dead node: its data is rebuilt from the others.
    Remove {
        /// The node.
        node: String,
        /// What to do after staging.
        #[command(flatten)]
        then: ThenArgs,
    },
    /// Stage a member taking a dead node's place and data in one move.
    Replace {
        /// The node replaced.
        dead: String,
        /// The member (holding no data yet) taking its place.
        new: String,
        /// What to do after staging.
        #[command(flatten)]
        then: ThenArgs,
    },
    /// Undo what is staged for a node.
    Clear {
        /// The node.
        node: String,
    },
    /// Stage a bucket's new n_val (it moves data: plan and commit it).
    NVal {
        /// The bucket.
        bucket: String,
        /// Its new n_val.
        n_val: u8,
        /// What to do after staging.
        #[command(flatten)]
        then: ThenArgs,
    },
    /// Commit the staged changes as the next layout version.
    Commit {
        /// The layout version the plan was made against (default: the
        /// current one).
        #[arg(long)]
        version: Option<u64>,
        /// Follow the transfer to its handover, with a progress bar.
        #[arg(long)]
        wait: bool,
        /// The longest wait.
        #[arg(long, default_value_t = 600)]
        timeout_secs: u64,
    },
    /// Anti-entropy now, for one partition or all, with a progress bar.
    Repair {
        /// The partition (default: every partition).
        #[arg(long)]
        partition: Option<u32>,
        /// The longest wait.
        #[arg(long, default_value_t = 600)]
        timeout_secs: u64,
    },
    /// Each replica's versions and siblings of a key, the hints pending
    /// for them, and its partition's anti-entropy state.
    Explain {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
    },
    /// The failover drill: take a node out under load, bring it back,
    /// report RTO and RPO.
    Drill(DrillArgs),
}

/// What a staging command does next.
#[derive(Debug, Clone, Args)]
pub struct ThenArgs {
    /// Commit the plan at once (after showing it).
    #[arg(long)]
    pub commit: bool,
    /// With --commit: follow the transfer to its handover.
    #[arg(long, requires = "commit")]
    pub wait: bool,
    /// The longest wait.
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
}

impl From<&ThenArgs> for Then {
    fn from(t: &ThenArgs) -> Self {
        Self {
            commit: t.commit,
            wait: t.wait,
            timeout: Duration::from_secs(t.timeout_secs),
        }
    }
}

/// `ring-tools drill`.
#[derive(Debug, Clone, Args)]
pub struct DrillArgs {
    /// Yes, take a node of this live cluster down.
    #[arg(long)]
    pub yes: bool,
    /// The node to take out.
    #[arg(long)]
    pub node: String,
    /// How.
    #[arg(long, value_enum, default_value_t = Fault::Kill)]
    pub fault: Fault,
    /// A `quorra dev-cluster` directory: signals by PID (kill, pause).
    #[arg(long, conflicts_with_all = ["compose", "down_cmd"])]
    pub dev_cluster: Option<PathBuf>,
    /// A docker-compose project name: docker kill/start, pause/unpause,
    /// network disconnect/connect.
    #[arg(long, conflicts_with = "down_cmd")]
    pub compose: Option<String>,
    /// A shell command that takes the node out ($QUORRA_DRILL_NODE,
    /// $QUORRA_DRILL_FAULT).
    #[arg(long, requires = "up_cmd")]
    pub down_cmd: Option<String>,
    /// A shell command that brings it back.
    #[arg(long, requires = "down_cmd")]
    pub up_cmd: Option<String>,
    /// The client certificate dir (default: DIR/certs with --dev-cluster).
    #[arg(long)]
    pub certs: Option<PathBuf>,
    /// The certificate name.
    #[arg(long, default_value = "admin")]
    pub name: String,
    /// Seconds of load before the fault.
    #[arg(long, default_value_t = 5.0)]
    pub before: f64,
    /// Seconds the node stays out.
    #[arg(long, default_value_t = 10.0)]
    pub down: f64,
    /// Seconds of load after it serves again.
    #[arg(long, default_value_t = 5.0)]
    pub after: f64,
    /// Requests per second.
    #[arg(long, default_value_t = 200)]
    pub rate: u32,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    pub workers: u32,
    /// Read quorum.
    #[arg(long, default_value_t = 2)]
    pub r: u8,
    /// Write quorum.
    #[arg(long, default_value_t = 2)]
    pub w: u8,
    /// The bucket written.
    #[arg(long, default_value = "drill")]
    pub bucket: String,
    /// Seconds to wait for the node to serve and the cluster to converge.
    #[arg(long, default_value_t = 120)]
    pub converge_timeout: u64,
    /// Draw latency and errors over time to this SVG file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

/// The layout a command works on: described, or fetched.
async fn layout_of(admin: &AdminClient, d: &Describe) -> anyhow::Result<Layout> {
    let Some(spec) = &d.nodes else {
        anyhow::ensure!(
            d.zones.is_empty() && d.partitions.is_none() && d.n_val.is_none() && d.tokens.is_none(),
            "--zones, --partitions, --n and --tokens describe a cluster with --nodes; without --nodes the live layout at --url is used as it is"
        );
        return Ok(admin.layout().await?);
    };
    let mut nodes = describe::parse_nodes(spec)?;
    describe::spread_zones(&mut nodes, &d.zones, 0);
    let defaults = Params::default();
    let params = Params {
        partitions: d.partitions.unwrap_or(defaults.partitions),
        n_val: d.n_val.unwrap_or(defaults.n_val),
        tokens: d.tokens.unwrap_or(defaults.tokens),
    };
    Ok(describe::found(&nodes, params)?)
}

/// The steps of `simulate`: `--add`, then `--remove`, then each `--step`.
fn steps(
    layout: &Layout,
    zones: &[String],
    add: Option<&str>,
    remove: &[String],
    extra: &[String],
) -> anyhow::Result<Vec<Step>> {
    // The live or described nodes took the zones in turn before these.
    let mut known: usize = layout.roles.len();
    let mut next_number = layout
        .members
        .iter()
        .filter_map(|id| id.strip_prefix('n')?.parse::<usize>().ok())
        .max()
        .unwrap_or(0)
        + 1;
    let mut adding = |spec: &str| -> anyhow::Result<Vec<NodeSpec>> {
        let mut nodes = match spec.parse::<usize>() {
            Ok(count) => {
                let nodes = describe::numbered(next_number, count);
                next_number += count;
                nodes
            }
            Err(_) => describe::parse_nodes(spec)?,
        };
        known = describe::spread_zones(&mut nodes, zones, known);
        Ok(nodes)
    };
    let mut out = Vec::new();
    if let Some(a) = add {
        out.push(Step::Add(adding(a)?));
    }
    if !remove.is_empty() {
        out.push(Step::Remove(remove.to_vec()));
    }
    for s in extra {
        if let Some(a) = s.strip_prefix('+') {
            out.push(Step::Add(adding(a)?));
        } else if let Some(r) = s.strip_prefix('-') {
            out.push(Step::Remove(
                r.split(',').map(|x| x.trim().to_owned()).collect(),
            ));
        } else {
            anyhow::bail!("--step {s:?}: a step is +COUNT, +ID[@ZONE][:WEIGHT] or -ID");
        }
    }
    anyhow::ensure!(
        !out.is_empty(),
        "nothing to simulate: give --add, --remove or --step"
    );
    Ok(out)
}

/// Runs the command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let urls = cli.url.clone();
    let token = cli.token.clone();
    let admin = || AdminClient::new(urls.clone()).map(|a| a.with_token(token.clone()));
    let (answer, text) = match &cli.command {
        Command::Plan {
            describe,
            fail,
            load,
        } => {
            let layout = layout_of(&admin()?, describe).await?;
            let own = ownership::ownership(&layout);
            let mut answer = json!({ "ownership": own });
            let mut text = own.text();
            if let Some(what) = fail {
                let failed = ownership::resolve_failed(&layout, what).ok_or_else(|| {
                    anyhow::anyhow!("--fail {what}: no node or zone of that name holds data")
                })?;
                let f = ownership::fail_load(&layout, &failed, *load);
                text.push_str(&f.text());
                answer["fail"] = serde_json::to_value(&f)?;
            }
            let staged = !layout.staged.is_empty() || !layout.n_val_changes().is_empty();
            if describe.nodes.is_none() && staged {
                let a = admin()?;
                if let Ok(plan) = a.plan().await {
                    text.push_str("staged changes:\n");
                    text.push_str(&cluster::plan_text(&plan));
                    text.push_str(&format!(
                        "commit with: ring-tools commit --version {}\n",
                        plan["from_version"]
                    ));
                    answer["staged_plan"] = plan;
                }
            }
            (answer, text)
        }
        Command::Simulate {
            describe,
            add,
            remove,
            steps: extra,
            keys,
        } => {
            let layout = layout_of(&admin()?, describe).await?;
            let steps = steps(&layout, &describe.zones, add.as_deref(), remove, extra)?;
            let sim = simulate::simulate(&layout, &steps, *keys)?;
            (serde_json::to_value(&sim)?, sim.text())
        }
        Command::Locate {
            describe,
            bucket,
            key,
        } => {
            let layout = layout_of(&admin()?, describe).await?;
            let loc = locate::locate(&layout, &Ring::build(&layout), bucket, key);
            (serde_json::to_value(&loc)?, loc.text())
        }
        Command::Draw { describe, out } => {
            let layout = layout_of(&admin()?, describe).await?;
            let labelled = draw::draw(&layout, out)?;
            let answer = json!({ "out": out, "version": layout.version });
            let mut text = format!(
                "drew layout version {} to {}\n",
                layout.version,
                out.display()
            );
            if !labelled {
                text.push_str("warning: no system font found: the PNG has no labels (install a font, e.g. Debian's fonts-dejavu-core, or draw to .svg)\n");
            }
            (answer, text)
        }
        Command::Status => cluster::status(&admin()?).await?,
        Command::Join {
            node,
            zone,
            weight,
            then,
        } => {
            let change = Stage::Join {
                node: node.clone(),
                zone: zone.clone(),
                weight: *weight,
            };
            cluster::stage(&admin()?, &change, then.into()).await?
        }
        Command::Leave { node, then } => {
            cluster::stage(&admin()?, &Stage::Leave(node.clone()), then.into()).await?
        }
        Command::Remove { node, then } => {
            cluster::stage(&admin()?, &Stage::Remove(node.clone()), then.into()).await?
        }
        Command::Replace { dead, new, then } => {
            let change = Stage::Replace {
                dead: dead.clone(),
                new: new.clone(),
            };
            cluster::stage(&admin()?, &change, then.into()).await?
        }
        Command::Clear { node } => {
            let then = Then {
                commit: false,
                wait: false,
                timeout: Duration::ZERO,
            };
            cluster::stage(&admin()?, &Stage::Clear(node.clone()), then).await?
        }
        Command::NVal {
            bucket,
            n_val,
            then,
        } => {
            let change = Stage::NVal {
                bucket: bucket.clone(),
                n_val: *n_val,
            };
            cluster::stage(&admin()?, &change, then.into()).await?
        }
        Command::Commit {
            version,
            wait,
            timeout_secs,
        } => {
            let a = admin()?;
            let version = match version {
                Some(v) => *v,
                None => a.layout_view().await?["version"]
                    .as_u64()
                    .ok_or_else(|| anyhow::anyhow!("the node did not say its layout version"))?,
            };
            let then = Then {
                commit: true,
                wait: *wait,
                timeout: Duration::from_secs(*timeout_secs),
            };
            cluster::commit(&a, version, then).await?
        }
        Command::Repair {
            partition,
            timeout_secs,
        } => repair::repair(&admin()?, *partition, Duration::from_secs(*timeout_secs)).await?,
        Command::Explain { bucket, key } => explain::explain(&admin()?, bucket, key).await?,
        Command::Drill(d) => drill_run(&admin()?, d).await?,
    };
    emit(cli.json, &answer, &text)?;
    Ok(())
}

async fn drill_run(
    admin: &AdminClient,
    d: &DrillArgs,
) -> anyhow::Result<(serde_json::Value, String)> {
    anyhow::ensure!(
        d.yes,
        "the drill takes node {} of the cluster at {} down on purpose: pass --yes to run it",
        d.node,
        admin.urls().join(",")
    );
    let provider = match (&d.dev_cluster, &d.compose, &d.down_cmd, &d.up_cmd) {
        (Some(dir), _, _, _) => Provider::DevCluster(dir.clone()),
        (_, Some(project), _, _) => Provider::compose(project.clone()),
        (_, _, Some(down), Some(up)) => Provider::Hooks {
            down: down.clone(),
            up: up.clone(),
        },
        _ => anyhow::bail!(
            "say how to take the node out: --dev-cluster DIR, --compose PROJECT, or --down-cmd and --up-cmd"
        ),
    };
    let certs = match (&d.certs, &d.dev_cluster) {
        (Some(c), _) => c.clone(),
        (None, Some(dir)) => dir.join("certs"),
        (None, None) => anyhow::bail!("--certs DIR: the client certificate dir"),
    };
    for (name, v) in [
        ("--before", d.before),
        ("--down", d.down),
        ("--after", d.after),
    ] {
        anyhow::ensure!(
            v.is_finite() && (0.0..=3600.0).contains(&v),
            "{name} is seconds from 0 to 3600, got {v}"
        );
    }
    let secs = Duration::from_secs_f64;
    // Load runs through the phases, the wait for the node to serve again
    // included: the budget bounds the run, it must not end it early.
    let total = d.before + d.down + d.after + d.converge_timeout as f64;
    let plan = drill::Plan {
        node: d.node.clone(),
        fault: d.fault,
        provider,
        certs,
        name: d.name.clone(),
        before: secs(d.before),
        down_for: secs(d.down),
        after: secs(d.after),
        load: Load {
            bucket: d.bucket.clone(),
            run: format!("drill-{}", std::process::id()),
            rate: d.rate.clamp(1, 100_000),
            workers: d.workers.clamp(1, 256),
            quorum: quorra_core::QuorumOverrides {
                r: Some(d.r),
                w: Some(d.w),
                ..Default::default()
            },
            max_requests: (f64::from(d.rate.clamp(1, 100_000)) * (total + 60.0)) as u64,
        },
        converge_timeout: Duration::from_secs(d.converge_timeout),
        plot: d.plot.clone(),
    };
    drill::run(admin, plan).await
}
