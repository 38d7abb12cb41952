//! YCSB core workloads and key choosers, as pure, seeded generators.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// One operation of a workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Read a record.
    Read,
    /// Overwrite a record.
    Update,
    /// Add a new record.
    Insert,
    /// Read a record, then write it back changed.
    ReadModifyWrite,
    /// Add one to a counter (a data-type bucket).
    Increment,
    /// Add a new element to a set (a data-type bucket).
    SetAdd,
}

impl Op {
    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Update => "update",
            Self::Insert => "insert",
            Self::ReadModifyWrite => "rmw",
            Self::Increment => "increment",
            Self::SetAdd => "set_add",
        }
    }
}

/// The YCSB core workloads, plus a pure write load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Workload {
    /// 50% read, 50% update (session store).
    A,
    /// 95% read, 5% update (photo tagging).
    B,
    /// 100% read (user profile cache).
    C,
    /// 95% read of recent records, 5% insert (status updates).
    D,
    /// 50% read, 50% read-modify-write (user database).
    F,
    /// 100% update.
    Write,
    /// 100% counter increments (a `counter` bucket; Redis: INCR).
    Counter,
    /// 100% adds of a new element to a set of `--set-size` elements (a
    /// `set` bucket; Redis: SADD).
    SetAdd,
}

impl Workload {
    /// The operation mix, as (op, weight in percent).
    pub fn mix(self) -> &'static [(Op, u32)] {
        match self {
            Self::A => &[(Op::Read, 50), (Op::Update, 50)],
            Self::B => &[(Op::Read, 95), (Op::Update, 5)],
            Self::C => &[(Op::Read, 100)],
            Self::D => &[(Op::Read, 95), (Op::Insert, 5)],
            Self::F => &[(Op::Read, 50), (Op::ReadModifyWrite, 50)],
            Self::Write => &[(Op::Update, 100)],
            Self::Counter => &[(Op::Increment, 100)],
            Self::SetAdd => &[(Op::SetAdd, 100)],
        }
    }

    /// The key distribution YCSB uses for it, unless overridden.
    pub fn default_distribution(self) -> Distribution {
        match self {
            Self::D => Distribution::Latest,
            _ => Distribution::Zipfian,
        }
    }
}

/// How keys are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Distribution {
    /// Every record equally likely.
    Uniform,
    /// A few records are hot (YCSB's zipfian, theta 0.99).
    Zipfian,
    /// The most recently inserted records are hot.
    Latest,
}

/// YCSB's zipfian generator over `0..n` (Gray et al., "Quickly generating
/// billion-record synthetic databases").
#[derive(Debug, Clone)]
pub struct Zipfian {
    n: u64,
    theta: f64,
    alpha: f64,
    zetan: f64,
    eta: f64,
}

fn zeta(n: u64, theta: f64) -> f64 {
    (1..=n).map(|i| 1.0 / (i as f64).powf(theta)).sum()
}

impl Zipfian {
    /// A generator over `0..n` with YCSB's theta of 0.99.
    pub fn new(n: u64) -> Self {
        let n = n.max(1);
        let theta = 0.99;
        let zetan = zeta(n, theta);
        let zeta2 = zeta(2, theta);
        Self {
            n,
            theta,
            alpha: 1.0 / (1.0 - theta),
            zetan,
            eta: (1.0 - (2.0 / n as f64).powf(1.0 - theta)) / (1.0 - zeta2 / zetan),
        }
    }

    /// The next value; 0 is the hottest.
    pub fn sample(&self, rng: &mut impl Rng) -> u64 {
        let u: f64 = rng.random();
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1.min(self.n - 1);
        }
        let v = (self.n as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        v.min(self.n - 1)
    }
}

/// Picks operations and keys for one worker.
#[derive(Debug)]
pub struct Generator {
    rng: StdRng,
    mix: &'static [(Op, u32)],
    distribution: Distribution,
    zipf: Zipfian,
    records: u64,
}

impl Generator {
    /// A generator for `workload` over `records` loaded records.
    pub fn new(workload: Workload, distribution: Distribution, records: u64, seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            mix: workload.mix(),
            distribution,
            zipf: Zipfian::new(records),
            records: records.max(1),
        }
    }

    /// The next operation.
    pub fn op(&mut self) -> Op {
        let roll = self.rng.random_range(0..100);
        let mut acc = 0;
        for &(op, weight) in self.mix {
            acc += weight;
            if roll < acc {
                return op;
            }
        }
        self.mix[0].0
    }

    /// The record for a read or update, given how many records exist now
    /// (`latest` counts from the newest).
    pub fn key(&mut self, existing: u64) -> u64 {
        let existing = existing.max(1);
        match self.distribution {
            Distribution::Uniform => self.rng.random_range(0..existing),
            // Scatter the hot ranks over the key space, as YCSB does, so the
            // hot keys do not share a partition.
            Distribution::Zipfian => {
                scramble(self.zipf.sample(&mut self.rng), self.records).min(existing - 1)
            }
            Distribution::Latest => {
                existing - 1 - self.zipf.sample(&mut self.rng).min(existing - 1)
            }
        }
    }
}

fn scramble(rank: u64, n: u64) -> u64 {
    // FNV-1a of the rank, folded into the key space.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in rank.to_le_bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h % n.max(1)
}

/// The name of record `i`.
pub fn key_name(i: u64) -> String {
    format!("user{i:012}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes_add_up_to_100() {
        for w in [
            Workload::A,
            Workload::B,
            Workload::C,
            Workload::D,
            Workload::F,
            Workload::Write,
            Workload::Counter,
            Workload::SetAdd,
        ] {
            assert_eq!(w.mix().iter().map(|(_, p)| p).sum::<u32>(), 100, "{w:?}");
        }
    }

    #[test]
    fn zipfian_is_skewed_and_in_range() {
        let z = Zipfian::new(1000);
        let mut rng = StdRng::seed_from_u64(7);
        let mut counts = vec![0u32; 1000];
        for _ in 0..100_000 {
            counts[z.sample(&mut rng) as usize] += 1;
        }
        assert!(counts[0] > counts[10] && counts[10] > counts[500]);
        assert!(
            counts[0] > 5_000,
            "the hottest key gets a large share: {}",
            counts[0]
        );
    }

    #[test]
    fn operation_mix_follows_the_workload() {
        let mut g = Generator::new(Workload::B, Distribution::Uniform, 100, 1);
        let reads = (0..10_000).filter(|_| g.op() == Op::Read).count();
        assert!((9_300..9_700).contains(&reads), "{reads}");
    }

    #[test]
    fn latest_prefers_new_records() {
        let mut g = Generator::new(Workload::D, Distribution::Latest, 1000, 3);
        let recent = (0..10_000).filter(|_| g.key(1000) >= 900).count();
        assert!(recent > 5_000, "{recent}");
    }
}
