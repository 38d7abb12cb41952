//! Deterministic simulation of the Quorra node, and the Jepsen-style
//! checkers shared with the real-process fault suite.
//!
//! A simulated cluster runs the node's own state machine
//! (`quorra_core::node::Node`, the one `quorra-node` drives over QUIC and
//! RocksDB) over a seeded network that drops, delays, duplicates and
//! reorders messages, with crashes, restarts, partitions, disk faults (a
//! disk that loses unsynced writes and corrupts records), clock skew and a
//! wiped disk. This crate holds only those models, the clients and the
//! checkers: `tests/boundary.rs` fails if it reaches into the core for
//! anything but the machine, its protocol and the types they use. Clients
//! run the set and register workloads and record a [`History`]; after the
//! faults heal, every node is read and [`check()`] looks for lost and
//! unexpected values.
//!
//! A run is a pure function of its [`Config`] (which a seed fully
//! determines), so a failing seed replays exactly:
//! `QUORRA_SIM_SEED=<seed> cargo test -p quorra-sim --test simulation replay`.
//!
//! The simulator does not run QUIC, RocksDB or tokio: those are covered by
//! the cross-process tests in `tests/`. It covers what they cannot: many
//! nodes, thousands of fault schedules, in seconds.

pub mod check;
mod disk;
pub mod history;
mod node;
pub mod rng;
pub mod schedule;
mod world;

use std::fmt;
use std::ops::RangeInclusive;

pub use check::{check, check_strong_reads, FinalRead, Report, StrongRead};
pub use history::{History, Op, OpKind, Outcome};
pub use node::Quorum;
pub use quorra_core::node::Planted;
pub use quorra_core::ConflictMode;

/// The bucket every simulated key lives in.
pub const BUCKET: &str = "sim";

/// A deliberate bug, to prove the checkers catch what they claim to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bug {
    /// A bug planted in the node's own state machine.
    Node(Planted),
    /// The disk model reads a corrupt record as missing, and the node keeps
    /// its actor epoch (kv679 through corruption).
    CorruptionReadAsMissing,
}

/// One simulation run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The seed everything derives from.
    pub seed: u64,
    /// Nodes.
    pub nodes: usize,
    /// Concurrent clients.
    pub clients: usize,
    /// Keys per workload (set and register).
    pub keys: usize,
    /// Operations each client runs.
    pub ops_per_client: usize,
    /// The bucket's quorum settings.
    pub quorum: Quorum,
    /// Whether faults are injected.
    pub faults: bool,
    /// Whether a disk may be wiped (only where `w` >= 2 can survive it).
    pub wipes: bool,
    /// Every node is an initial member (a would-be founder) with the next
    /// node as its seed; otherwise node 0 founds alone and is everyone's
    /// seed, as `quorra dev-cluster` did before initial members.
    pub all_founders: bool,
    /// A layout change an operator makes during the workload, or none.
    pub layout_change: Option<schedule::LayoutChange>,
    /// A deliberate bug, or none.
    pub bug: Option<Bug>,
    /// Whether nodes run anti-entropy (then a run ends waiting for every
    /// replica to converge; without it, a full read at `r = n` repairs
    /// what a wipe or a `w=1` write left behind).
    pub anti_entropy: bool,
    /// One node down this long (virtual ms) from early in the workload
    /// (0: none): longer than the tombstone grace, so it misses deletes
    /// whose tombstones become due while it is away.
    pub outage_ms: u64,
}

impl Config {
    /// The run for `seed`, with between `nodes` nodes: cluster size,
    /// clients, keys and quorum settings all derive from the seed.
    pub fn from_seed(seed: u64, nodes: RangeInclusive<usize>) -> Self {
        let mut rng = rng::Rng::new(seed ^ 0x5151_5151_5151_5151);
        let nodes = rng.between(*nodes.start() as u64, *nodes.end() as u64) as usize;
        let quorum = match rng.below(20) {
            0..=12 => quorum(3, 2, 2, 0),
            13..=15 => quorum(3, 2, 2, 2),
            16..=17 => quorum(3, 1, 1, 0),
            _ => quorum(5.min(nodes as u8), 3, 3, 0),
        };
        Self {
            seed,
            nodes,
            clients: rng.between(2, 6) as usize,
            keys: rng.between(1, 3) as usize,
            ops_per_client: rng.between(8, 20) as usize,
            quorum,
            faults: true,
            wipes: quorum.w >= 2,
            all_founders: rng.below(2) == 0,
            layout_change: None,
            bug: None,
            anti_entropy: true,
            outage_ms: 0,
        }
        .with_layout_change(seed)
    }

    /// Most runs change the layout during the workload: a node held out
    /// of the first layout joins, a node leaves, a node dies for good
    /// and is removed, or the bucket's n_val goes up by one (only where the cluster keeps at least `n`
    /// data-holding nodes; a dead node only where `w` >= 3, so with one
    /// more disk wiped every acknowledged write still has a copy).
    /// Drawn from a stream of its own, so the rest of the run's shape does
    /// not depend on it.
    fn with_layout_change(mut self, seed: u64) -> Self {
        let mut rng = rng::Rng::new(seed ^ 0x4c41_594f_5554_0001);
        let spare = self.nodes > usize::from(self.quorum.n);
        self.layout_change = match rng.below(4) {
            0 if spare && !self.all_founders => {
                Some(schedule::LayoutChange::JoinLate(self.nodes - 1))
            }
            1 if spare => {
                let i = 1 + rng.below(self.nodes as u64 - 1) as usize;
                Some(schedule::LayoutChange::Leave(i))
            }
            2 if spare && self.quorum.w >= 3 => {
                let i = 1 + rng.below(self.nodes as u64 - 1) as usize;
                Some(schedule::LayoutChange::RemoveDead(i))
            }
            3 if spare && rng.below(2) == 0 => Some(schedule::LayoutChange::RaiseNVal),
            _ => None,
        };
        self
    }
}

fn quorum(n: u8, r: u8, w: u8, dw: u8) -> Quorum {
    Quorum {
        n,
        r,
        w,
        dw,
        pw: 0,
        mode: ConflictMode::Siblings,
    }
}

/// What a run did and what the checker found.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// The run.
    pub config: Config,
    /// The checker's findings.
    pub report: Report,
    /// Whether the cluster formed before the workload.
    pub formed: bool,
    /// Merges that met one dot with two contents: a node reused a dot
    /// (kv679). The merge keeps both, so nothing is lost, but a node must
    /// never do it.
    pub dot_collisions: usize,
    /// Values a merge brought back to a key whose tombstone was reaped,
    /// caught by the reaped tombstone's marker and deleted again (a late
    /// hint may do it; a reap before every replica held the tombstone
    /// does).
    pub resurrections_caught: usize,
    /// Deleted values alive at the end on some replica although a reaped
    /// tombstone had deleted them: the reaping rule broken.
    pub resurrected: Vec<String>,
    /// Tombstones reaped while a replica of their key still held a value
    /// they deleted: the reaping rule broken, whether or not the value
    /// came back.
    pub reaped_early: Vec<String>,
    /// Tombstones reaped (every replica holding them, past the grace).
    pub reaped: usize,
    /// Hints deleted before their owner durably stored what they held (the
    /// handoff rule broken, whether or not a write was lost for it).
    pub hints_deleted_early: Vec<String>,
    /// Writes acknowledged while their partition moved, held by fewer than
    /// `w` of the replicas before the move (which serve reads until the
    /// handover).
    pub dual_quorum_violations: Vec<String>,
    /// Keys whose replicas still held different versions once anti-entropy
    /// had its time after the faults healed.
    pub diverged: Vec<String>,
    /// Whether it settled (every node up and seen up, no hints, nothing in
    /// flight) after the faults healed.
    pub settled: bool,
    /// The fault schedule.
    pub faults: Vec<String>,
    /// A digest of every event processed, in order: equal digests, equal runs.
    pub trace: u64,
    /// Events processed.
    pub events: u64,
    /// Virtual time at the end (ms).
    pub virtual_ms: u64,
    /// What the clients did.
    pub history: History,
}

impl RunResult {
    /// Whether the run is correct: formed, settled, nothing lost or invented.
    pub fn ok(&self) -> bool {
        self.formed
            && self.settled
            && self.report.valid()
            && self.dot_collisions == 0
            && self.resurrected.is_empty()
            && self.reaped_early.is_empty()
            && self.hints_deleted_early.is_empty()
            && self.dual_quorum_violations.is_empty()
            && self.diverged.is_empty()
    }
}

impl fmt::Display for RunResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        let q = c.quorum;
        writeln!(
            f,
            "seed {} ({} nodes{}, n={} r={} w={} dw={}, {} clients x {} ops, layout change {:?}, bug {:?}): formed {}, settled {}, {} events, {} virtual ms, {} tombstones reaped, trace {:016x}",
            c.seed, c.nodes, if c.all_founders { ", all founders" } else { "" }, q.n, q.r, q.w, q.dw, c.clients, c.ops_per_client, c.layout_change, c.bug,
            self.formed, self.settled, self.events, self.virtual_ms, self.reaped, self.trace
        )?;
        if let Some(first) = self.dual_quorum_violations.first() {
            writeln!(
                f,
                "  {} writes acknowledged without w replicas before the move, first: {first}",
                self.dual_quorum_violations.len()
            )?;
        }
        if let Some(first) = self.diverged.first() {
            writeln!(
                f,
                "  {} keys never converged on their replicas (anti-entropy), first: {first}",
                self.diverged.len()
            )?;
        }
        if let Some(first) = self.resurrected.first() {
            writeln!(
                f,
                "  {} deleted values alive again after their tombstone was reaped, first: {first}",
                self.resurrected.len()
            )?;
        }
        if let Some(first) = self.reaped_early.first() {
            writeln!(
                f,
                "  {} tombstones reaped too early, first: {first}",
                self.reaped_early.len()
            )?;
        }
        if self.resurrections_caught > 0 {
            writeln!(
                f,
                "  {} values brought back to reaped keys, caught by markers",
                self.resurrections_caught
            )?;
        }
        if self.dot_collisions > 0 {
            writeln!(f, "  {} merges met a reused dot", self.dot_collisions)?;
        }
        if let Some(first) = self.hints_deleted_early.first() {
            writeln!(
                f,
                "  {} hints deleted early; the first: {first}",
                self.hints_deleted_early.len()
            )?;
        }
        writeln!(f, "  {}", self.report)?;
        for fault in &self.faults {
            writeln!(f, "  fault {fault}")?;
        }
        write!(
            f,
            "  replay: QUORRA_SIM_SEED={} cargo test -p quorra-sim --test simulation replay -- --nocapture",
            c.seed
        )
    }
}

/// Runs one simulation.
pub fn run(config: &Config) -> RunResult {
    world::World::new(config.clone()).run()
}
