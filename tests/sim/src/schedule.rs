//! Random fault schedules: crashes and restarts, partitions (symmetric and
//! one-way), failing and slow disks, clock skew and, where the quorum
//! settings can survive it, one disk that loses data: wiped, losing its
//! unsynced writes to a power loss, or with a corrupt record.

use crate::rng::Rng;
use crate::Config;

/// One fault (or its end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// kill -9: memory lost, disk kept.
    Crash(usize),
    /// Start a crashed node again.
    Restart(usize),
    /// Crash and lose the disk: the node comes back empty, with a new actor
    /// epoch.
    Wipe(usize),
    /// Crash and lose every write not synced, as a power loss does.
    PowerLoss(usize),
    /// Corrupt one stored record (the pick among its keys).
    Corrupt(usize, u64),
    /// Cut these nodes off from the rest, both ways.
    Partition(Vec<usize>),
    /// Drop every message from the first node to the second, replies
    /// included. (The real nodes' fault switch drops the requests one node
    /// sends to another; replies on the other's own requests still flow.)
    OneWay(usize, usize),
    /// Restore every link.
    Heal,
    /// Make a node's disk fail every operation (or work again).
    DiskFailing(usize, bool),
    /// Add this many ms to every storage operation of a node.
    DiskSlow(usize, u64),
    /// Shift a node's wall clock by this many ms.
    ClockSkew(usize, i64),
    /// An operator commits a layout change (retried until it is in).
    Layout(LayoutChange),
}

/// A layout change an operator makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayoutChange {
    /// The node, up from the start but held out of the first layout,
    /// gets a role: its partitions move to it.
    JoinLate(usize),
    /// The node's role is taken away: its partitions move to the others.
    Leave(usize),
    /// The node is killed for good (it never restarts), then removed: its
    /// partitions are rebuilt on the others from the surviving replicas.
    RemoveDead(usize),
    /// The bucket's `n_val` goes up by one (staged and committed): every
    /// key gets a copy on its next replica.
    RaiseNVal,
}

/// Faults with the virtual ms (from the workload's start) they happen at.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// The faults, in no particular order.
    pub faults: Vec<(u64, Fault)>,
    /// How long faults go on.
    pub window_ms: u64,
}

impl Schedule {
    /// A random schedule for `config` (none when its faults are off).
    pub fn random(rng: &mut Rng, config: &Config) -> Self {
        let window_ms = rng.between(3_000, 8_000);
        let mut faults = Vec::new();
        if !config.faults {
            if let Some(change) = config.layout_change {
                faults.push((window_ms / 2, Fault::Layout(change)));
            }
            return Self { faults, window_ms };
        }
        let n = config.nodes as u64;
        let mut wiped = false;
        for _ in 0..rng.between(2, 8) {
            let at = rng.below(window_ms);
            let len = rng.between(200, 3_000);
            let i = rng.below(n) as usize;
            match rng.below(10) {
                0..=2 => {
                    faults.push((at, Fault::Crash(i)));
                    faults.push((at + len, Fault::Restart(i)));
                }
                3..=5 => {
                    let size = rng.between(1, (n / 2).max(1));
                    let mut side: Vec<usize> = Vec::new();
                    while (side.len() as u64) < size {
                        let j = rng.below(n) as usize;
                        if !side.contains(&j) {
                            side.push(j);
                        }
                    }
                    side.sort_unstable();
                    faults.push((at, Fault::Partition(side)));
                    faults.push((at + len, Fault::Heal));
                }
                6 => {
                    let j = rng.below(n) as usize;
                    if i != j {
                        faults.push((at, Fault::OneWay(i, j)));
                        faults.push((at + len, Fault::Heal));
                    }
                }
                7 => {
                    faults.push((at, Fault::DiskFailing(i, true)));
                    faults.push((at + len, Fault::DiskFailing(i, false)));
                }
                8 => {
                    faults.push((at, Fault::DiskSlow(i, rng.between(20, 400))));
                    faults.push((at + len, Fault::DiskSlow(i, 0)));
                    let skew = rng.between(0, 10_000) as i64 - 5_000;
                    faults.push((at, Fault::ClockSkew(i, skew)));
                }
                _ => {
                    // A node listed alone as initial member founds again
                    // when wiped (see README, Reliability): with node 0 the
                    // only founder, never its disk. With every node an
                    // initial member, any disk: it rejoins.
                    if config.wipes && !wiped && (i != 0 || config.all_founders) {
                        wiped = true;
                        match rng.below(3) {
                            0 => faults.push((at, Fault::Wipe(i))),
                            1 => faults.push((at, Fault::PowerLoss(i))),
                            _ => faults.push((at, Fault::Corrupt(i, rng.next_u64()))),
                        }
                        faults.push((at + len, Fault::Restart(i)));
                    } else {
                        faults.push((at, Fault::Crash(i)));
                        faults.push((at + len, Fault::Restart(i)));
                    }
                }
            }
        }
        if let Some(change) = config.layout_change {
            faults.push((rng.below(window_ms), Fault::Layout(change)));
        }
        let mut window_ms = window_ms;
        if config.outage_ms > 0 {
            let i = rng.below(n) as usize;
            faults.push((300, Fault::Crash(i)));
            faults.push((300 + config.outage_ms, Fault::Restart(i)));
            window_ms = window_ms.max(config.outage_ms + 600);
        }
        faults.sort_by_key(|(at, _)| *at);
        Self { faults, window_ms }
    }

    /// One line per fault, for reports.
    pub fn describe(&self) -> Vec<String> {
        self.faults
            .iter()
            .map(|(at, f)| format!("+{at}ms {f:?}"))
            .collect()
    }
}
