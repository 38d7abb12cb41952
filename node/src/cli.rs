//! The `quorra` command line: `quorra node` runs one node, `quorra
//! dev-cluster` runs a local cluster of them.
//!
//! Every `quorra node` setting can come from the TOML file (`--config`), a
//! `QUORRA_*` environment variable, or a flag; flags beat the environment,
//! which beats the file, which beats the defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::config::NodeConfig;
use crate::devcluster::{self, DevClusterArgs};

/// Quorra: a leaderless, Dynamo-style distributed key-value store.
#[derive(Debug, Parser)]
#[command(name = "quorra", version, about, long_about = None)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one node.
    Node(Box<NodeArgs>),
    /// Run a local cluster of nodes under one directory (for development).
    DevCluster(DevClusterArgs),
    /// Create the cluster CA and secret (if absent) and certificates for
    /// nodes, clients and admins.
    Certs(CertsArgs),
    /// Ask a node whether it is ready (its `/ready`): exit 0 if so, 1 if
    /// not or unreachable. For health checks in images without curl.
    Ready(ReadyArgs),
    /// Serve the HTTP API from a process that stores nothing: keys through
    /// the token-aware client, every other route forwarded to a node.
    Gateway(crate::http::gateway::GatewayArgs),
}

/// Settings for `quorra ready`.
#[derive(Debug, Clone, Args)]
pub struct ReadyArgs {
    /// The node's HTTP address (the one it listens on).
    #[arg(long, env = "QUORRA_HTTP_ADDR", default_value = "127.0.0.1:8098")]
    pub http_addr: SocketAddr,
    /// How long to wait for the answer, in milliseconds.
    #[arg(long, default_value_t = 2_000)]
    pub timeout_ms: u64,
    /// Ask over HTTPS (a node with `http_tls`). Like a Kubernetes HTTPS
    /// probe, it does not verify the certificate: it asks the node on this
    /// host whether it is ready, and sends no secret.
    #[arg(long, env = "QUORRA_HTTPS")]
    pub https: bool,
}

/// Settings for `quorra certs`.
#[derive(Debug, Clone, Args)]
pub struct CertsArgs {
    /// Directory for ca.pem, ca-key.pem, cluster-secret and NAME.pem /
    /// NAME-key.pem per certificate. An existing CA and secret there are
    /// reused, existing certificates are kept.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Node ids to create node certificates for, comma-separated (the
    /// only certificates that may act as a cluster member).
    #[arg(long, value_delimiter = ',', required_unless_present_any = ["clients", "admins"])]
    pub nodes: Vec<String>,
    /// Names of applications to create client certificates for
    /// (client requests only), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub clients: Vec<String>,
    /// Names of operators to create admin certificates for (client
    /// requests and admin operations), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub admins: Vec<String>,
}

/// Settings for `quorra node`. Each overrides the config file.
#[derive(Debug, Clone, Default, Args)]
pub struct NodeArgs {
    /// TOML config file. Relative paths in it are relative to its directory.
    #[arg(long, env = "QUORRA_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// This node's id, unique in the cluster [default: n1].
    #[arg(long, env = "QUORRA_NODE_ID")]
    pub node_id: Option<String>,
    /// Data directory (RocksDB lives in DIR/db) [default: quorra-data/n1].
    #[arg(long, env = "QUORRA_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// HTTP listen address; port 0 picks a free port [default: 127.0.0.1:8098].
    #[arg(long, env = "QUORRA_HTTP_ADDR", value_name = "ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// Peer (QUIC) listen address; unset, the node runs alone.
    #[arg(long, env = "QUORRA_PEER_ADDR", value_name = "ADDR")]
    pub peer_addr: Option<SocketAddr>,
    /// Peer addresses of nodes to join through, comma-separated.
    #[arg(
        long,
        env = "QUORRA_SEEDS",
        value_name = "ADDRS",
        value_delimiter = ','
    )]
    pub seeds: Option<Vec<SocketAddr>>,
    /// Node ids that found the cluster, comma-separated, the same on each
    /// of them; read only until the node is in a cluster.
    #[arg(
        long,
        env = "QUORRA_INITIAL_MEMBERS",
        value_name = "IDS",
        value_delimiter = ','
    )]
    pub initial_members: Option<Vec<String>>,
    /// This node's failure domain (rack, availability zone).
    #[arg(long, env = "QUORRA_ZONE")]
    pub zone: Option<String>,
    /// Directory with the cluster certificates (see `quorra certs`).
    #[arg(long, env = "QUORRA_CERT_DIR", value_name = "DIR")]
    pub cert_dir: Option<PathBuf>,
    /// Partitions of the key space, a power of two fixed at cluster creation
    /// [default: 256].
    #[arg(long, env = "QUORRA_PARTITIONS")]
    pub partitions: Option<u32>,
    /// Largest value accepted, in bytes [default: 8388608].
    #[arg(long, env = "QUORRA_MAX_VALUE_BYTES", value_name = "BYTES")]
    pub max_value_bytes: Option<usize>,
    /// Longest key accepted, in bytes [default: 1024].
    #[arg(long, env = "QUORRA_MAX_KEY_BYTES", value_name = "BYTES")]
    pub max_key_bytes: Option<usize>,
    /// Most siblings an object may hold before writes are refused [default: 100].
    #[arg(long, env = "QUORRA_MAX_SIBLINGS")]
    pub max_siblings: Option<usize>,
    /// Per-request timeout in milliseconds [default: 5000].
    #[arg(long, env = "QUORRA_REQUEST_TIMEOUT_MS", value_name = "MS")]
    pub request_timeout_ms: Option<u64>,
    /// Requests served at once before refusing with `overloaded` [default: 1024].
    #[arg(long, env = "QUORRA_MAX_CONCURRENT_REQUESTS")]
    pub max_concurrent_requests: Option<usize>,
    /// RocksDB's memory (block cache and memtables) in MiB [default: 256].
    #[arg(long, env = "QUORRA_MEMORY_BUDGET_MB", value_name = "MIB")]
    pub memory_budget_mb: Option<u64>,
    /// Replicas of each key, for buckets without their own setting
    /// [default: 3].
    #[arg(long, env = "QUORRA_N_VAL")]
    pub n_val: Option<u8>,
    /// Replicas a read waits for, by default [default: 2].
    #[arg(long, env = "QUORRA_R")]
    pub r: Option<u8>,
    /// Replicas a write waits for, by default [default: 2].
    #[arg(long, env = "QUORRA_W")]
    pub w: Option<u8>,
    /// Time between anti-entropy exchanges in ms; 0 turns them off
    /// [default: 250].
    #[arg(long, env = "QUORRA_ANTI_ENTROPY_INTERVAL_MS", value_name = "MS")]
    pub anti_entropy_interval_ms: Option<u64>,
    /// Log filter, e.g. `info` or `quorra_node=debug` [default: info].
    #[arg(long, env = "QUORRA_LOG", value_name = "FILTER")]
    pub log: Option<String>,
    /// Log lines as `text` or `json` [default: text].
    #[arg(long, env = "QUORRA_LOG_FORMAT", value_enum)]
    pub log_format: Option<crate::config::LogFormat>,
}

impl NodeArgs {
    /// The config file (if any) with these settings applied, validated.
    pub fn resolve(&self) -> Result<NodeConfig, crate::config::ConfigError> {
        let mut c = match &self.config {
            Some(path) => NodeConfig::from_file(path)?,
            None => NodeConfig::default(),
        };
        if let Some(v) = &self.node_id {
            c.node_id = v.clone();
            if self.config.is_none() && self.data_dir.is_none() {
                c.data_dir = PathBuf::from("quorra-data").join(v);
            }
        }
        if let Some(v) = &self.data_dir {
            c.data_dir = v.clone();
        }
        if let Some(v) = self.http_addr {
            c.http_addr = v;
        }
        if let Some(v) = self.peer_addr {
            c.peer_addr = Some(v);
        }
        if let Some(v) = &self.seeds {
            c.seeds = v.clone();
        }
        if let Some(v) = &self.initial_members {
            c.initial_members = v.clone();
        }
        if let Some(v) = &self.zone {
            c.zone = Some(v.clone());
        }
        if let Some(v) = &self.cert_dir {
            c.cert_dir = Some(v.clone());
        }
        if let Some(v) = self.partitions {
            c.partitions = v;
        }
        if let Some(v) = self.max_value_bytes {
            c.limits.max_value_bytes = v;
        }
        if let Some(v) = self.max_key_bytes {
            c.limits.max_key_bytes = v;
        }
        if let Some(v) = self.max_siblings {
            c.limits.max_siblings = v;
        }
        if let Some(v) = self.anti_entropy_interval_ms {
            c.anti_entropy.interval_ms = v;
        }
        if let Some(v) = self.request_timeout_ms {
            c.request_timeout_ms = v;
        }
        if let Some(v) = self.max_concurrent_requests {
            c.max_concurrent_requests = v;
        }
        if let Some(v) = self.memory_budget_mb {
            c.memory_budget_mb = v;
        }
        if let Some(v) = self.n_val {
            c.bucket_defaults.n_val = v;
        }
        if let Some(v) = self.r {
            c.bucket_defaults.r = v;
        }
        if let Some(v) = self.w {
            c.bucket_defaults.w = v;
        }
        if let Some(v) = &self.log {
            c.log = v.clone();
        }
        if let Some(v) = self.log_format {
            c.log_format = v;
        }
        c.validate()?;
        Ok(c)
    }
}

/// Runs the command line; the process exit code comes back.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Node(args) => runtime.block_on(run_node(*args)),
        Command::DevCluster(args) => runtime.block_on(devcluster::run(args)),
        Command::Certs(args) => certs(&args),
        Command::Ready(args) if args.https => runtime.block_on(ready_https(&args)),
        Command::Ready(args) => ready(&args),
        Command::Gateway(args) => runtime.block_on(async {
            init_tracing(&args.log, crate::config::LogFormat::Text);
            crate::http::gateway::run(args, shutdown_signal()).await
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn certs(args: &CertsArgs) -> anyhow::Result<()> {
    use quorra_core::auth::Role;
    let kinds = [
        (Role::Node, &args.nodes),
        (Role::Client, &args.clients),
        (Role::Admin, &args.admins),
    ];
    let mut seen = std::collections::BTreeSet::new();
    for (role, names) in kinds {
        for id in names {
            let ok = !id.is_empty()
                && id.len() <= 64
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
            anyhow::ensure!(
                ok,
                "{} name {id:?} must be 1 to 64 characters of A-Z a-z 0-9 _ . -",
                role.as_str()
            );
            anyhow::ensure!(
                seen.insert(id.clone()),
                "{id:?} is named twice: each certificate has one name and one role"
            );
        }
    }
    let mut written = Vec::new();
    for (role, names) in kinds {
        written.extend(crate::net::certs::generate_role(&args.out, role, names)?);
    }
    for path in &written {
        println!("wrote {}", path.display());
    }
    if written.is_empty() {
        println!(
            "nothing to do: every certificate exists in {}",
            args.out.display()
        );
    }
    Ok(())
}

/// `GET /ready` over HTTPS, the certificate unverified: the status decides.
async fn ready_https(args: &ReadyArgs) -> anyhow::Result<()> {
    let timeout = std::time::Duration::from_millis(args.timeout_ms.max(1));
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .danger_accept_invalid_certs(true)
        .no_proxy()
        .build()?;
    let answer = client
        .get(format!("https://{}/ready", args.http_addr))
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.http_addr))?;
    let status = answer.status();
    let body = answer.text().await.unwrap_or_default();
    anyhow::ensure!(
        status.is_success(),
        "{} is not ready: {status} {body}",
        args.http_addr
    );
    println!("ready: {body}");
    Ok(())
}

/// `GET /ready` over plain HTTP/1.0: the status line decides.
fn ready(args: &ReadyArgs) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let timeout = std::time::Duration::from_millis(args.timeout_ms.max(1));
    let mut stream = std::net::TcpStream::connect_timeout(&args.http_addr, timeout)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.http_addr))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET /ready HTTP/1.0\r\nHost: {}\r\n\r\n",
        args.http_addr
    )?;
    let mut answer = Vec::new();
    stream.take(64 * 1024).read_to_end(&mut answer)?;
    let answer = String::from_utf8_lossy(&answer);
    let status = answer.lines().next().unwrap_or_default();
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default().trim();
    anyhow::ensure!(
        status.split_whitespace().nth(1) == Some("200"),
        "{} is not ready: {status} {body}",
        args.http_addr
    );
    println!("ready: {body}");
    Ok(())
}

async fn run_node(args: NodeArgs) -> anyhow::Result<()> {
    let config = args.resolve()?;
    init_tracing(&config.log, config.log_format);
    crate::server::run(config, shutdown_signal()).await?;
    Ok(())
}

/// Logs to stderr with `filter`, as text or JSON.
pub fn init_tracing(filter: &str, format: crate::config::LogFormat) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        crate::config::LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        crate::config::LogFormat::Json => builder.json().with_current_span(true).try_init(),
    };
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cannot watch SIGTERM: {e}; stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
