//! Node configuration: one TOML file, overridden by `QUORRA_*` environment
//! variables and command-line flags (flags win), validated before anything
//! starts.
//!
//! Relative paths in a config file are relative to the file's directory, so a
//! config and its data dir can move together.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use quorra_core::bucket::LimitsError;
use quorra_core::membership::GossipConfig;
use quorra_core::{BucketName, BucketProps, Limits};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Everything a node needs to start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's id: unique in the cluster, stable across restarts.
    pub node_id: String,
    /// Where the node keeps its RocksDB data.
    pub data_dir: PathBuf,
    /// Address the HTTP API listens on (port 0 picks a free port).
    pub http_addr: SocketAddr,
    /// Address peers reach this node on (QUIC, UDP). Unset: the node runs
    /// alone, without a peer transport.
    pub peer_addr: Option<SocketAddr>,
    /// Peer addresses of nodes to join through (this node's own address
    /// may be among them, so every node can share one list).
    pub seeds: Vec<SocketAddr>,
    /// The node ids that found the cluster, the same list on each of them
    /// (as etcd's `initial-cluster`). Read only while a node has no cluster
    /// yet: a node listed here founds the cluster once every listed node is
    /// up and agrees, never alone and never twice; a node not listed joins
    /// an existing cluster through its seeds. Leave it empty on nodes added
    /// later. A node with a peer address needs this or seeds.
    pub initial_members: Vec<String>,
    /// This node's failure domain (rack, availability zone); replicas are
    /// spread over zones.
    pub zone: Option<String>,
    /// Directory with `ca.pem`, `ID.pem` and `ID-key.pem` (see `quorra
    /// certs`); required with `peer_addr`.
    pub cert_dir: Option<PathBuf>,
    /// HTTPS for the HTTP API: a certificate chain and its key (PEM).
    /// Unset: plain HTTP (keep it on a trusted network, or behind a proxy
    /// that terminates TLS, since bearer tokens travel in every request).
    pub http_tls: Option<HttpTls>,
    /// Virtual-node tokens this node places on the ring.
    pub tokens: u16,
    /// How long a replica may take to answer, in milliseconds.
    pub replica_timeout_ms: u64,
    /// Failure detection timings.
    pub gossip: GossipConfig,
    /// Hinted handoff.
    pub handoff: HandoffConfig,
    /// Active anti-entropy.
    pub anti_entropy: AntiEntropyConfig,
    /// Tombstone reaping.
    pub tombstones: TombstoneConfig,
    /// Number of partitions of the key space: a power of two, fixed when the
    /// cluster is created.
    pub partitions: u32,
    /// Per-request timeout, in milliseconds.
    pub request_timeout_ms: u64,
    /// Client requests (HTTP and QUIC together) served at once; more are
    /// refused with `overloaded`.
    pub max_concurrent_requests: usize,
    /// Requests from other nodes served at once; more are refused with
    /// `overloaded` (the sender counts it as a failed replica).
    pub max_concurrent_peer_requests: usize,
    /// Reads and writes under way on this node, replication and read
    /// repair after their answers included; a client request past it is
    /// refused `overloaded`, so a slow replica cannot grow a node's memory
    /// without limit.
    pub max_background_tasks: usize,
    /// Most bytes per second this node copies when partitions move to it
    /// after a layout change (0: no limit).
    pub transfer_bytes_per_second: u64,
    /// How long after a handover reaches this node it deletes the
    /// partitions it gave away, in milliseconds (time for the new layout to
    /// reach every node).
    pub cleanup_grace_ms: u64,
    /// RocksDB's memory, block cache and memtables together, in MiB (16
    /// to 1,048,576): what a node's storage takes however many keys it
    /// holds. The default suits a small machine; give a dedicated server
    /// about a third of its memory.
    pub memory_budget_mb: u64,
    /// Log filter (`info`, `quorra_node=debug`, …), as `RUST_LOG`.
    pub log: String,
    /// Log lines as text or JSON (one object per line, the request's id
    /// and the span fields included).
    pub log_format: LogFormat,
    /// Size limits on client input.
    pub limits: Limits,
    /// Properties of every bucket not listed under `buckets`.
    pub bucket_defaults: BucketProps,
    /// Per-bucket overrides of `bucket_defaults`.
    pub buckets: BTreeMap<String, BucketOverrides>,
    /// Serve `PUT /v1/debug/faults` (dropped peer links, slow or failing
    /// disk, clock skew) for fault-tolerance tests. Never in production.
    pub fault_injection: bool,
    /// Tests only, with `fault_injection`: keep the write-ahead log in the
    /// process until a sync, so killing the node loses every unsynced
    /// write, as a power loss would.
    pub crash_test_lose_unsynced: bool,
}

/// The certificate the HTTP API answers with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpTls {
    /// The certificate chain, leaf first (PEM), relative to the config
    /// file's directory.
    pub cert_file: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// For people: one line per event, span fields in front.
    #[default]
    Text,
    /// For log pipelines: one JSON object per line.
    Json,
}

/// Hinted handoff settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HandoffConfig {
    /// Time between delivery rounds, in milliseconds.
    pub interval_ms: u64,
    /// Most hints delivered per second, so a returning node is not flattened.
    pub rate_per_second: u32,
    /// Most hints kept; past it new hints are dropped (counted in
    /// `quorra_hints_dropped_total`) and writes carry on.
    pub max_hints: u64,
    /// Most bytes of hints kept; past it new hints are dropped as above.
    pub max_hint_bytes: u64,
    /// Hints older than this (ms since first taken) are dropped, counted in
    /// `quorra_hints_expired_total`, and left to read repair (Cassandra's
    /// max hint window). 0, the default, keeps them until delivered: until
    /// anti-entropy exists, a dropped hint can be the only copy of an
    /// acknowledged write held by fallbacks.
    pub max_hint_age_ms: u64,
}

impl Default for HandoffConfig {
    fn default() -> Self {
        Self {
            interval_ms: 1_000,
            rate_per_second: 500,
            max_hints: 1_000_000,
            max_hint_bytes: 4 * 1024 * 1024 * 1024,
            max_hint_age_ms: 0,
        }
    }
}

/// Active anti-entropy settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AntiEntropyConfig {
    /// Time from the end of one exchange (one partition with its other
    /// replicas) to the start of the next, in milliseconds: the pace, and
    /// so the cost, of anti-entropy. 0 turns it off; `POST
    /// /v1/admin/repair` still runs.
    pub interval_ms: u64,
    /// Object records the scrub re-reads per second to check their
    /// checksums (a corrupt one is moved aside and repaired from another
    /// replica by the next exchange). 0 turns the scrub off.
    pub scrub_records_per_second: u64,
}

impl Default for AntiEntropyConfig {
    fn default() -> Self {
        Self {
            interval_ms: 250,
            scrub_records_per_second: 100,
        }
    }
}

/// Tombstone reaping settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TombstoneConfig {
    /// How long after a delete its tombstone may be reaped, in
    /// milliseconds, once every replica of the key holds it (checked by
    /// asking each, after anti-entropy compared the partition). 0 keeps
    /// tombstones for ever. A node out of the cluster for longer (removed
    /// while down, or restored from a backup) must be wiped before it
    /// rejoins.
    pub grace_ms: u64,
}

impl Default for TombstoneConfig {
    fn default() -> Self {
        Self {
            // One day. Reaping waits for every replica anyway: the grace
            // is the margin for what that check cannot see (a late hint,
            // a node restored from a backup).
            grace_ms: 86_400_000,
        }
    }
}

/// Bucket properties that differ from the defaults; unset fields inherit
/// (the same patch `PUT /v1/buckets/{bucket}/props` takes).
pub type BucketOverrides = quorra_core::bucket::PropsPatch;

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            node_id: "n1".into(),
            data_dir: PathBuf::from("quorra-data/n1"),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8098)),
            peer_addr: None,
            seeds: Vec::new(),
            initial_members: Vec::new(),
            zone: None,
            cert_dir: None,
            http_tls: None,
            tokens: quorra_core::ring::DEFAULT_TOKENS,
            replica_timeout_ms: 2_000,
            gossip: GossipConfig::default(),
            handoff: HandoffConfig::default(),
            anti_entropy: AntiEntropyConfig::default(),
            tombstones: TombstoneConfig::default(),
            partitions: 256,
            request_timeout_ms: 5_000,
            max_concurrent_requests: 1_024,
            max_concurrent_peer_requests: 4_096,
            max_background_tasks: 4_096,
            transfer_bytes_per_second: 64 * 1024 * 1024,
            cleanup_grace_ms: 30_000,
            memory_budget_mb: (crate::storage::rocks::DEFAULT_MEMORY_BUDGET_BYTES >> 20) as u64,
            log: "info".into(),
            log_format: LogFormat::Text,
            limits: Limits::default(),
            bucket_defaults: BucketProps::default(),
            buckets: BTreeMap::new(),
            fault_injection: false,
            crash_test_lose_unsynced: false,
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for a node config.
    #[error("config file {path} is invalid: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said (with line and column).
        message: String,
    },
    /// A value is out of range.
    #[error("invalid config: {0}")]
    Invalid(String),
    /// A limit is out of range.
    #[error("invalid config: {0}")]
    Limits(#[from] LimitsError),
}

impl NodeConfig {
    /// Reads a TOML config file. Relative paths in it are resolved against the
    /// file's directory.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config: Self = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        if let Some(dir) = path.parent() {
            if config.data_dir.is_relative() {
                config.data_dir = dir.join(&config.data_dir);
            }
            if let Some(certs) = config.cert_dir.as_mut().filter(|c| c.is_relative()) {
                *certs = dir.join(&*certs);
            }
            if let Some(tls) = config.http_tls.as_mut() {
                for file in [&mut tls.cert_file, &mut tls.key_file] {
                    if file.is_relative() {
                        *file = dir.join(&*file);
                    }
                }
            }
        }
        Ok(config)
    }

    /// The config as TOML text.
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        toml::to_string(self).map_err(|e| ConfigError::Invalid(e.to_string()))
    }

    /// How long a replica may take to answer.
    pub fn replica_timeout(&self) -> Duration {
        Duration::from_millis(self.replica_timeout_ms)
    }

    /// The request timeout.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// The ring shape this node is configured with (fixed in the cluster's
    /// layout when it is founded).
    pub fn shape(&self) -> quorra_core::layout::Shape {
        quorra_core::layout::Shape {
            partitions: self.partitions,
            tokens: self.tokens,
        }
    }

    /// Every named bucket's effective properties (names were checked by
    /// [`Self::validate`]).
    pub fn bucket_table(&self) -> std::collections::BTreeMap<String, BucketProps> {
        self.buckets
            .keys()
            .filter_map(|name| {
                let bucket = BucketName::parse(name, &Limits::hard()).ok()?;
                Some((name.clone(), self.bucket_props(&bucket)))
            })
            .collect()
    }

    /// The properties of `bucket`.
    pub fn bucket_props(&self, bucket: &BucketName) -> BucketProps {
        match self.buckets.get(bucket.as_str()) {
            Some(o) => o.apply(self.bucket_defaults),
            None => self.bucket_defaults,
        }
    }

    /// Checks every value; the message names the setting at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        let (grace, hint_age) = (self.tombstones.grace_ms, self.handoff.max_hint_age_ms);
        if grace > 0 && hint_age > grace {
            return invalid(format!(
                "tombstones.grace_ms ({grace}) is shorter than handoff.max_hint_age_ms ({hint_age}): \
                 a hint delivered after its key's tombstone was reaped would bring deleted data back; \
                 raise the grace period or lower the hint age"
            ));
        }
        if !node_id_ok(&self.node_id) {
            return invalid(format!(
                "node_id {:?} must be 1 to 64 characters of A-Z a-z 0-9 _ . -",
                self.node_id
            ));
        }
        if self.data_dir.as_os_str().is_empty() {
            return invalid("data_dir must not be empty".into());
        }
        if !self.partitions.is_power_of_two() || !(1..=65_536).contains(&self.partitions) {
            return invalid(format!(
                "partitions must be a power of two from 1 to 65536, got {}",
                self.partitions
            ));
        }
        if self.peer_addr.is_some() && self.cert_dir.is_none() {
            return invalid("peer_addr needs cert_dir: peers authenticate with the cluster's certificates (see `quorra certs`)".into());
        }
        if self.peer_addr.is_none() && !self.seeds.is_empty() {
            return invalid(
                "seeds need peer_addr: a node joins a cluster over its peer address".into(),
            );
        }
        for (i, id) in self.initial_members.iter().enumerate() {
            if !node_id_ok(id) {
                return invalid(format!(
                    "initial_members: {id:?} is not a node id (1 to 64 characters of A-Z a-z 0-9 _ . -)"
                ));
            }
            if self.initial_members[..i].contains(id) {
                return invalid(format!("initial_members lists {id:?} twice"));
            }
        }
        if self.peer_addr.is_none()
            && !self.initial_members.is_empty()
            && self.initial_members != [self.node_id.clone()]
        {
            return invalid(
                "initial_members need peer_addr: a node without one is a cluster of its own".into(),
            );
        }
        if self.peer_addr.is_some() && self.seeds.is_empty() && self.initial_members.is_empty() {
            return invalid(format!(
                "a node with peer_addr needs initial_members (to found a new cluster, e.g. \
                 initial_members = [\"{}\"] for one of its own) or seeds (to join one)",
                self.node_id
            ));
        }
        if let Some(zone) = &self.zone {
            if zone.is_empty() || zone.len() > 64 {
                return invalid(format!("zone {zone:?} must be 1 to 64 characters"));
            }
        }
        if self.tokens == 0 {
            return invalid("tokens must be at least 1".into());
        }
        if self.replica_timeout_ms == 0
            || self.gossip.probe_interval_ms == 0
            || self.gossip.probe_timeout_ms == 0
        {
            return invalid("replica_timeout_ms, gossip.probe_interval_ms and gossip.probe_timeout_ms must be at least 1".into());
        }
        if self.handoff.interval_ms == 0 || self.handoff.rate_per_second == 0 {
            return invalid(
                "handoff.interval_ms and handoff.rate_per_second must be at least 1".into(),
            );
        }
        if self.request_timeout_ms == 0 {
            return invalid("request_timeout_ms must be at least 1".into());
        }
        if !(16..=1 << 20).contains(&self.memory_budget_mb) {
            return invalid(format!(
                "memory_budget_mb must be from 16 to 1048576 (MiB), not {}",
                self.memory_budget_mb
            ));
        }
        if self.crash_test_lose_unsynced && !self.fault_injection {
            return invalid(
                "crash_test_lose_unsynced is for tests and needs fault_injection = true".into(),
            );
        }
        for (name, v) in [
            ("max_concurrent_requests", self.max_concurrent_requests),
            (
                "max_concurrent_peer_requests",
                self.max_concurrent_peer_requests,
            ),
            ("max_background_tasks", self.max_background_tasks),
        ] {
            if v == 0 {
                return invalid(format!("{name} must be at least 1"));
            }
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log) {
            return invalid(format!("log filter {:?} is invalid: {e}", self.log));
        }
        self.limits.validate()?;
        check_props("bucket_defaults", &self.bucket_defaults)?;
        for name in self.buckets.keys() {
            let bucket = BucketName::parse(name, &self.limits)
                .map_err(|e| ConfigError::Invalid(format!("buckets.{name}: {e}")))?;
            check_props(&format!("buckets.{name}"), &self.bucket_props(&bucket))?;
        }
        Ok(())
    }
}

/// Whether `id` may be a node id.
fn node_id_ok(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn check_props(at: &str, p: &BucketProps) -> Result<(), ConfigError> {
    p.validate()
        .map_err(|e| ConfigError::Invalid(format!("{at}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_round_trip() {
        let c = NodeConfig::default();
        c.validate().expect("defaults valid");
        let text = c.to_toml().expect("toml");
        let back: NodeConfig = toml::from_str(&text).expect("parse");
        assert_eq!(back, c);
    }

    #[test]
    fn file_paths_are_relative_to_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("quorra.toml");
        std::fs::write(
            &path,
            "node_id = \"a\"\ndata_dir = \"data\"\n[buckets.logs]\nconflict_mode = \"lww\"\n",
        )
        .expect("write");
        let c = NodeConfig::from_file(&path).expect("load");
        assert_eq!(c.data_dir, dir.path().join("data"));
        c.validate().expect("valid");
        let logs = BucketName::parse("logs", &c.limits).expect("bucket");
        assert_eq!(
            c.bucket_props(&logs).conflict_mode,
            quorra_core::ConflictMode::Lww
        );
        assert_eq!(c.bucket_props(&logs).n_val, 3, "unset fields inherit");
    }

    #[test]
    fn bad_files_name_the_problem() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("q.toml");
        std::fs::write(&path, "node_idd = \"a\"\n").expect("write");
        let e = NodeConfig::from_file(&path).expect_err("unknown key");
        assert!(e.to_string().contains("node_idd"), "{e}");
        std::fs::write(&path, "partitions = \"many\"\n").expect("write");
        let e = NodeConfig::from_file(&path).expect_err("wrong type");
        assert!(e.to_string().contains("partitions"), "{e}");
        let e = NodeConfig::from_file(&dir.path().join("missing.toml")).expect_err("missing");
        assert!(e.to_string().contains("missing.toml"), "{e}");
    }

    #[test]
    fn validation_names_the_setting() {
        type Change = Box<dyn Fn(&mut NodeConfig)>;
        let cases: Vec<(Change, &str)> = vec![
            (Box::new(|c| c.node_id = "a b".into()), "node_id"),
            (Box::new(|c| c.partitions = 100), "partitions"),
            (
                Box::new(|c| c.limits.max_value_bytes = 0),
                "max_value_bytes",
            ),
            (Box::new(|c| c.bucket_defaults.r = 4), "r must be"),
            (
                Box::new(|c| c.bucket_defaults.dw = 3),
                "dw (3) must not exceed w",
            ),
            (Box::new(|c| c.log = "=!=".into()), "log filter"),
            (
                Box::new(|c| c.peer_addr = Some("127.0.0.1:1".parse().expect("addr"))),
                "peer_addr needs cert_dir",
            ),
            (
                Box::new(|c| c.seeds = vec!["127.0.0.1:1".parse().expect("addr")]),
                "seeds need peer_addr",
            ),
            (
                Box::new(|c| {
                    c.peer_addr = Some("127.0.0.1:1".parse().expect("addr"));
                    c.cert_dir = Some("certs".into());
                }),
                "needs initial_members",
            ),
            (
                Box::new(|c| c.initial_members = vec!["n1".into(), "n 2".into()]),
                "initial_members: \"n 2\"",
            ),
            (
                Box::new(|c| c.initial_members = vec!["n1".into(), "n1".into()]),
                "lists \"n1\" twice",
            ),
            (
                Box::new(|c| c.initial_members = vec!["n1".into(), "n2".into()]),
                "initial_members need peer_addr",
            ),
            (
                Box::new(|c| {
                    c.buckets
                        .insert("bad name".into(), BucketOverrides::default());
                }),
                "buckets.bad name",
            ),
        ];
        for (change, expect) in cases {
            let mut c = NodeConfig::default();
            change(&mut c);
            let e = c.validate().expect_err(expect);
            assert!(
                e.to_string().contains(expect),
                "{e} should mention {expect}"
            );
        }
    }
}
