//! `quorra-bench` as a library: the runner behind the binary, so tests can
//! drive a real cluster with it.
//!
//! YCSB-style workloads against Quorra (client library or
//! HTTP) and its peers (Redis, etcd, Garage's K2V), with HDR latency
//! histograms.
//!
//! `quorra-bench run …` loads records, warms up, measures for a bounded
//! number of operations or seconds, and writes a JSON report;
//! `quorra-bench report DIR` turns every report in DIR into a markdown
//! table and SVG plots. `bench/compare.sh` runs the side-by-side comparison.

pub mod cpu;
pub mod driver;
pub mod garage;
pub mod plot;
pub mod report;
pub mod table;
pub mod workload;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::ValueEnum;

use driver::Driver;
use report::{Recorder, RunReport};
use workload::{key_name, Distribution, Generator, Op, Workload};

/// Longest measurement a run may ask for.
const MAX_SECONDS: u64 = 600;

/// The store under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// Quorra through the client library (QUIC).
    Quorra,
    /// Quorra through its HTTP API.
    QuorraHttp,
    /// Redis.
    Redis,
    /// etcd through its v3 JSON gateway.
    Etcd,
    /// Garage through its K2V API.
    Garage,
}

/// How late tokio's timer may wake a paced worker on its own (its wheel
/// has millisecond slots): lateness beyond it is the store's.
const TIMER_SLACK: Duration = Duration::from_millis(2);

/// Where Garage's K2V API takes the bench's requests.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct K2vArgs {
    /// Garage: the K2V bucket.
    #[arg(long, default_value = "bench")]
    pub k2v_bucket: String,
    /// Garage: the access key's id.
    #[arg(long, env = "QUORRA_BENCH_K2V_KEY_ID", default_value = "")]
    pub k2v_key_id: String,
    /// Garage: the access key's secret.
    #[arg(
        long,
        env = "QUORRA_BENCH_K2V_SECRET",
        default_value = "",
        hide_env_values = true
    )]
    pub k2v_secret: String,
    /// Garage: the region (`s3_region` of its configuration).
    #[arg(long, default_value = "garage")]
    pub k2v_region: String,
}

/// Settings of one run.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// The store.
    #[arg(long, value_enum)]
    pub target: Target,
    /// YCSB workload (a, b, c, d, f) or a pure write load.
    #[arg(long, value_enum, default_value = "a")]
    pub workload: Workload,
    /// Key choice (default: the workload's own).
    #[arg(long, value_enum)]
    pub distribution: Option<Distribution>,
    /// Records loaded before measuring.
    #[arg(long, default_value_t = 10_000)]
    pub records: u64,
    /// Operations to measure (default: measure for --seconds).
    #[arg(long)]
    pub operations: Option<u64>,
    /// Seconds to measure when --operations is not given (at most 600).
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Seconds of warm-up before measuring.
    #[arg(long, default_value_t = 2)]
    pub warmup: u64,
    /// Concurrent workers.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Target operations per second over all workers (default: as fast as
    /// they go). Operations are scheduled at a fixed pace, and latency is
    /// counted from each operation's scheduled start, so a store that falls
    /// behind shows it in its percentiles (no coordinated omission).
    #[arg(long)]
    pub rate: Option<u64>,
    /// Bytes per value.
    #[arg(long, default_value_t = 1024)]
    pub value_size: usize,
    /// Elements each set holds before the set-add workload measures.
    #[arg(long, default_value_t = 1_000)]
    pub set_size: u64,
    /// Quorra: fsync before acknowledging (dw=1).
    #[arg(long)]
    pub dw: bool,
    /// Load records with blind inserts (no read first): only for a store
    /// that holds none of them yet, or Quorra keeps each reload as a
    /// sibling.
    #[arg(long)]
    pub blind_load: bool,
    /// Quorra: peer addresses of nodes (client library).
    #[arg(long, value_delimiter = ',')]
    pub seeds: Vec<SocketAddr>,
    /// Quorra: the cluster's certificate dir.
    #[arg(long)]
    pub cert_dir: Option<PathBuf>,
    /// Quorra: the client certificate's name.
    #[arg(long, default_value = "bench")]
    pub cert_name: String,
    /// HTTP base URLs (Quorra HTTP nodes, etcd client URLs, or Garage's
    /// K2V API addresses).
    #[arg(long, value_delimiter = ',')]
    pub urls: Vec<String>,
    /// Redis URL.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    /// Garage's K2V API: bucket and access key.
    #[command(flatten)]
    pub k2v: K2vArgs,
    /// How the store was started, in words, for the report.
    #[arg(long)]
    pub durability: Option<String>,
    /// Name of the run in reports (default: target and workload).
    #[arg(long)]
    pub label: Option<String>,
    /// The store's processes (PIDs; their descendants count too), whose CPU
    /// time per operation the report gives.
    #[arg(long, value_delimiter = ',')]
    pub server_pid: Vec<u32>,
    /// Directory for the JSON report.
    #[arg(long, default_value = "bench-results")]
    pub out: PathBuf,
}

async fn connect(a: &RunArgs) -> anyhow::Result<(Driver, String)> {
    Ok(match a.target {
        Target::Quorra => {
            let dir = a
                .cert_dir
                .clone()
                .context("--cert-dir is needed for --target quorra")?;
            if a.seeds.is_empty() {
                bail!("--seeds is needed for --target quorra");
            }
            let config =
                quorra_client::ClientConfig::new(a.seeds.clone(), dir, a.cert_name.clone());
            let d = if a.dw {
                "n=3 w=2, dw=1 (fsync)"
            } else {
                "n=3 w=2, no fsync"
            };
            (Driver::quorra(config, a.dw).await?, d.into())
        }
        Target::QuorraHttp => {
            if a.urls.is_empty() {
                bail!("--urls is needed for --target quorra-http");
            }
            let d = if a.dw {
                "HTTP, n=3 w=2, dw=1 (fsync)"
            } else {
                "HTTP, n=3 w=2, no fsync"
            };
            (Driver::quorra_http(a.urls.clone(), a.dw)?, d.into())
        }
        Target::Redis => (
            Driver::redis(&a.redis_url).await?,
            "1 node, no persistence".into(),
        ),
        Target::Etcd => {
            if a.urls.is_empty() {
                bail!("--urls is needed for --target etcd");
            }
            (
                Driver::etcd(a.urls.clone())?,
                "raft, fsync per commit".into(),
            )
        }
        Target::Garage => {
            let k = &a.k2v;
            if a.urls.is_empty() || k.k2v_key_id.is_empty() || k.k2v_secret.is_empty() {
                bail!("--urls, --k2v-key-id and --k2v-secret are needed for --target garage");
            }
            let k2v = garage::K2v::new(
                a.urls.clone(),
                &k.k2v_bucket,
                &k.k2v_key_id,
                &k.k2v_secret,
                &k.k2v_region,
            )?;
            (
                Driver::Garage(k2v),
                "K2V, n=3 quorum 2, metadata_fsync = false (its default)".into(),
            )
        }
    })
}

/// Elements added to a set per request while loading.
const LOAD_BATCH: u64 = 1_000;

/// The `e`-th element of set `i` (16 bytes, as a short tag or id).
fn element(i: u64, e: u64) -> String {
    format!("{i:06x}-{e:09x}")
}

/// Gives the data-type workloads' buckets their types (through the first
/// of `--urls`, a node's HTTP address); a bucket that has its type keeps
/// it.
async fn datatype_buckets(a: &RunArgs) -> anyhow::Result<()> {
    if !matches!(a.target, Target::Quorra | Target::QuorraHttp) {
        return Ok(());
    }
    let url = a.urls.first().context(
        "--urls (a node's HTTP address) is needed to give the data-type buckets their types",
    )?;
    let http = reqwest::Client::new();
    for (bucket, t) in [(driver::COUNTERS, "counter"), (driver::SETS, "set")] {
        let r = http
            .put(format!("{url}/v1/buckets/{bucket}/props"))
            .json(&serde_json::json!({ "datatype": t }))
            .send()
            .await?;
        let status = r.status().as_u16();
        let body = r.text().await?;
        if status != 200 && !body.contains("bucket_props_fixed") {
            bail!("setting {bucket} to {t} answered {status}: {body}");
        }
    }
    Ok(())
}

/// Loads, warms up, measures, writes the JSON report into `a.out`, and
/// returns it.
pub async fn run(a: RunArgs) -> anyhow::Result<RunReport> {
    if a.concurrency == 0 || a.records == 0 || a.value_size == 0 {
        bail!("--concurrency, --records and --value-size must be at least 1");
    }
    let seconds = a.seconds.min(MAX_SECONDS);
    let (driver, durability) = connect(&a).await?;
    if matches!(a.workload, Workload::Counter | Workload::SetAdd) {
        datatype_buckets(&a).await?;
    }
    let durability = a.durability.clone().unwrap_or(durability);
    let distribution = a.distribution.unwrap_or(a.workload.default_distribution());
    let value: Arc<Vec<u8>> = Arc::new((0..a.value_size).map(|i| b'a' + (i % 26) as u8).collect());

    // Load.
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut loaders = Vec::new();
    for _ in 0..a.concurrency {
        let (driver, next, value, records) =
            (driver.clone(), next.clone(), value.clone(), a.records);
        let (workload, set_size, blind_load) = (a.workload, a.set_size, a.blind_load);
        loaders.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= records {
                    return Ok::<(), anyhow::Error>(());
                }
                match workload {
                    Workload::Counter => driver.increment(&key_name(i)).await?,
                    Workload::SetAdd => {
                        // In batches, so a large set loads in few requests.
                        let mut from = 0;
                        while from < set_size {
                            let to = (from + LOAD_BATCH).min(set_size);
                            let batch = (from..to).map(|e| element(i, e)).collect();
                            driver.set_add(&key_name(i), batch).await?;
                            from = to;
                        }
                    }
                    _ if blind_load => driver.insert(&key_name(i), &value).await?,
                    _ => driver.write(&key_name(i), &value).await?,
                }
            }
        }));
    }
    for l in loaders {
        l.await??;
    }
    eprintln!("loaded {} records in {:.1?}", a.records, started.elapsed());

    let inserted = Arc::new(AtomicU64::new(a.records));
    // Warm-up, unrecorded.
    phase(
        &driver,
        &a,
        distribution,
        &inserted,
        &value,
        None,
        Duration::from_secs(a.warmup),
        1,
    )
    .await;
    // Measure.
    let cpu_before = cpu::sample(&a.server_pid);
    let started = Instant::now();
    let rec = phase(
        &driver,
        &a,
        distribution,
        &inserted,
        &value,
        a.operations,
        Duration::from_secs(seconds),
        2,
    )
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    let (server_cpu, client_cpu) = cpu::used(&cpu_before, &cpu::sample(&a.server_pid));
    if !a.server_pid.is_empty() && server_cpu.is_none() {
        eprintln!(
            "warning: no process of --server-pid {:?} was found",
            a.server_pid
        );
    }
    let label = a.label.clone().unwrap_or_else(|| {
        format!(
            "{:?}-{:?}{}",
            a.target,
            a.workload,
            if a.dw { "-dw" } else { "" }
        )
        .to_lowercase()
    });
    let report = RunReport::new(
        label,
        format!("{:?}", a.target).to_lowercase(),
        durability,
        format!("{:?}", a.workload).to_lowercase(),
        format!("{distribution:?}").to_lowercase(),
        a.records,
        a.concurrency,
        a.value_size,
        elapsed,
        &rec,
    )
    .with_cpu(server_cpu, client_cpu);
    report::write_run(&a.out, &report)?;
    Ok(report)
}

/// Runs the workload with every worker until `operations` are done or
/// `limit` passes; both bounds hold.
#[allow(clippy::too_many_arguments)]
async fn phase(
    driver: &Driver,
    a: &RunArgs,
    distribution: Distribution,
    inserted: &Arc<AtomicU64>,
    value: &Arc<Vec<u8>>,
    operations: Option<u64>,
    limit: Duration,
    seed: u64,
) -> Recorder {
    let start = Instant::now();
    let budget = Arc::new(AtomicU64::new(operations.unwrap_or(u64::MAX)));
    let mut workers = Vec::new();
    let workers_n = a.concurrency.max(1) as f64;
    for w in 0..a.concurrency {
        let (driver, inserted, value, budget) = (
            driver.clone(),
            inserted.clone(),
            value.clone(),
            budget.clone(),
        );
        let mut generator =
            Generator::new(a.workload, distribution, a.records, seed * 1_000 + w as u64);
        // Each worker's share of the rate: one operation per `interval`,
        // the workers' slots staggered across it.
        let interval = a
            .rate
            .filter(|r| *r > 0)
            .map(|r| Duration::from_secs_f64(a.concurrency as f64 / r as f64));
        let (set_size, blind_load) = (a.set_size, a.blind_load);
        workers.push(tokio::spawn(async move {
            let mut rec = Recorder::new();
            let mut added = 0u64;
            let mut next = interval.map(|i| start + i.mul_f64(w as f64 / workers_n));
            while start.elapsed() < limit {
                if budget
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1))
                    .is_err()
                {
                    break;
                }
                // Paced: wait for this worker's next slot, and count latency
                // from it.
                let scheduled = match (next.as_mut(), interval) {
                    (Some(n), Some(i)) => {
                        let slot = *n;
                        *n += i;
                        tokio::time::sleep_until(tokio::time::Instant::from_std(slot)).await;
                        if start.elapsed() >= limit {
                            break;
                        }
                        Some(slot)
                    }
                    _ => None,
                };
                let op = generator.op();
                // Latency counts from the scheduled start when the worker is
                // behind (the store fell behind the pace); a wake-up within
                // the timer's own granularity counts from now.
                let now = Instant::now();
                let t = match scheduled {
                    Some(slot) if now.duration_since(slot) > TIMER_SLACK => slot,
                    _ => now,
                };
                let ok = match op {
                    Op::Read => {
                        driver
                            .read(&key_name(generator.key(inserted.load(Ordering::Relaxed))))
                            .await
                    }
                    Op::Update => {
                        let k = key_name(generator.key(inserted.load(Ordering::Relaxed)));
                        driver.write(&k, &value).await
                    }
                    Op::Insert if blind_load => {
                        let k = key_name(inserted.fetch_add(1, Ordering::Relaxed));
                        driver.insert(&k, &value).await
                    }
                    Op::Insert => {
                        let k = key_name(inserted.fetch_add(1, Ordering::Relaxed));
                        driver.write(&k, &value).await
                    }
                    Op::ReadModifyWrite => {
                        let k = key_name(generator.key(inserted.load(Ordering::Relaxed)));
                        driver.read_modify_write(&k, &value).await
                    }
                    Op::Increment => {
                        let k = key_name(generator.key(inserted.load(Ordering::Relaxed)));
                        driver.increment(&k).await
                    }
                    Op::SetAdd => {
                        let i = generator.key(inserted.load(Ordering::Relaxed));
                        // A new element each time: past the loaded ones.
                        let e = set_size + (seed << 40) + ((w as u64) << 32) + added;
                        added += 1;
                        driver.set_add(&key_name(i), vec![element(i, e)]).await
                    }
                }
                .is_ok();
                let second = start.elapsed().as_secs() as usize;
                rec.record(op.name(), t.elapsed().as_micros() as u64, ok, second);
            }
            rec
        }));
    }
    let mut all = Recorder::new();
    for w in workers {
        if let Ok(rec) = w.await {
            all.merge(rec);
        }
    }
    all
}
