//! Jepsen-style checkers: given a history and the final reads taken after
//! the faults healed, what was lost, what appeared from nowhere, and how long
//! clients went without a successful operation.
//!
//! - **Set** keys (Jepsen's 2013 Riak test): every acknowledged element must
//!   be in the final set (the union of the final read's siblings).
//! - **Register** keys: an acknowledged write may vanish only if a write
//!   that read it superseded it, and that one is itself accounted for: the
//!   accounted writes are the final siblings and, transitively, every value a
//!   write that took effect had read.
//!   A delete whose client read nothing carries no context: it is a blind
//!   delete, which deletes whatever its own quorum read sees, so every value
//!   written before it completed may vanish through it.
//! - Everywhere: no value that was never written may appear, in a final read
//!   or in what a write observed.
//!
//! Elements of operations that timed out (`Unknown`) or failed and still
//! appear are *recovered*: allowed, and counted.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::history::{History, OpKind, Outcome};

/// One read taken after the faults healed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinalRead {
    /// The node the read went through.
    pub via: String,
    /// The key.
    pub key: String,
    /// Each sibling's decoded value (`None`: not a JSON array of integers),
    /// or the read's error.
    pub result: Result<Vec<Option<Vec<u64>>>, String>,
}

/// What the checker found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Operations acknowledged.
    pub acked: usize,
    /// Operations that timed out or failed part-way.
    pub unknown: usize,
    /// Operations refused.
    pub failed: usize,
    /// Acknowledged elements or writes missing from a final read:
    /// `(key, value, via)`.
    pub lost: BTreeSet<(String, u64, String)>,
    /// Values that were never written but were read: `(key, value)`.
    pub unexpected: BTreeSet<(String, u64)>,
    /// Sibling values that are not JSON arrays of integers, per key.
    pub garbled: BTreeSet<String>,
    /// Unacknowledged values that made it after all.
    pub recovered: BTreeSet<(String, u64)>,
    /// Final reads that failed: `(key, via, error)`.
    pub failed_reads: Vec<(String, String, String)>,
    /// Elements a read that heard every primary (`pr = n`) missed, though
    /// they were acknowledged before it began: `(key, element)`.
    pub stale_reads: BTreeSet<(String, u64)>,
    /// The longest stretch with no operation acknowledged, while clients were
    /// running (ms).
    pub longest_unavailable_ms: u64,
}

impl Report {
    /// Whether the history is free of lost and unexpected values and every
    /// final read succeeded.
    pub fn valid(&self) -> bool {
        self.lost.is_empty()
            && self.unexpected.is_empty()
            && self.garbled.is_empty()
            && self.failed_reads.is_empty()
            && self.stale_reads.is_empty()
    }

    /// Lost values, counted once per (key, value) whatever node read them.
    pub fn lost_values(&self) -> BTreeSet<(&str, u64)> {
        self.lost.iter().map(|(k, v, _)| (k.as_str(), *v)).collect()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} acknowledged, {} unknown, {} failed; lost {}, unexpected {}, garbled keys {}, recovered {}, failed final reads {}; longest unavailability {} ms",
            self.acked,
            self.unknown,
            self.failed,
            self.lost_values().len(),
            self.unexpected.len(),
            self.garbled.len(),
            self.recovered.len(),
            self.failed_reads.len(),
            self.longest_unavailable_ms
        )?;
        for (k, v) in self.lost_values().iter().take(10) {
            write!(f, "\n  lost {k}={v}")?;
        }
        for (k, v) in self.unexpected.iter().take(10) {
            write!(f, "\n  unexpected {k}={v}")?;
        }
        for (k, v) in self.stale_reads.iter().take(10) {
            write!(
                f,
                "\n  a pr = n read of {k} missed {v}, acknowledged before it"
            )?;
        }
        for (k, via, e) in self.failed_reads.iter().take(10) {
            write!(f, "\n  final read of {k} via {via} failed: {e}")?;
        }
        Ok(())
    }
}

#[derive(Default)]
struct KeyOps {
    /// Every value attempted, with its outcome.
    attempted: BTreeMap<u64, Outcome>,
    /// Register writes: value → values it observed (for writes whose read
    /// succeeded).
    observed: BTreeMap<u64, Vec<u64>>,
    /// Values that deletes which may have taken effect had read: a delete
    /// with that context removes them legitimately.
    deleted: BTreeSet<u64>,
    /// Values deletes read (whatever their outcome): someone wrote them.
    delete_observed: Vec<u64>,
    /// When each register write was invoked.
    invoked: BTreeMap<u64, u64>,
    /// When the latest blind delete (one whose client read nothing, so it
    /// sent no context) that may have taken effect completed: it deletes
    /// whatever its own quorum read saw, which may be any value written
    /// before it completed.
    blind_delete_until: Option<u64>,
    register: bool,
}

/// A successful read that needed every primary (`pr = n`) during the
/// workload, while no replica had lost data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrongRead {
    /// The key (a set key).
    pub key: String,
    /// When the read was sent.
    pub invoked_ms: u64,
    /// The elements it returned.
    pub seen: BTreeSet<u64>,
}

/// Checks reads that heard every primary: each must hold every set element
/// acknowledged before it began. The element's coordinator, a primary, had
/// stored it; nothing removes an element from a set; so a read that really
/// heard every primary cannot miss it. (A read answered by a stand-in
/// counted as a primary can.)
pub fn check_strong_reads(history: &History, reads: &[StrongRead], report: &mut Report) {
    for read in reads {
        for op in history.ops.iter().filter(|o| o.key == read.key) {
            if let OpKind::SetAdd { element } = op.kind {
                if op.outcome == Outcome::Ok
                    && op.completed_ms < read.invoked_ms
                    && !read.seen.contains(&element)
                {
                    report.stale_reads.insert((read.key.clone(), element));
                }
            }
        }
    }
}

/// Checks `history` against `finals`.
pub fn check(history: &History, finals: &[FinalRead]) -> Report {
    let mut report = Report {
        acked: history.count(Outcome::Ok),
        unknown: history.count(Outcome::Unknown),
        failed: history.count(Outcome::Fail),
        longest_unavailable_ms: longest_unavailable(history),
        ..Report::default()
    };
    let mut keys: BTreeMap<&str, KeyOps> = BTreeMap::new();
    for op in &history.ops {
        let k = keys.entry(op.key.as_str()).or_default();
        match &op.kind {
            OpKind::SetAdd { element } => {
                k.attempted.insert(*element, op.outcome);
            }
            OpKind::RegWrite { value, observed } => {
                k.register = true;
                k.attempted.insert(*value, op.outcome);
                k.observed.insert(*value, observed.clone());
                k.invoked.insert(*value, op.invoked_ms);
            }
            OpKind::RegDelete { observed } => {
                k.register = true;
                k.delete_observed.extend(observed.iter().copied());
                if op.outcome != Outcome::Fail {
                    k.deleted.extend(observed.iter().copied());
                    if observed.is_empty() {
                        k.blind_delete_until = k.blind_delete_until.max(Some(op.completed_ms));
                    }
                }
            }
        }
    }
    // What writes observed must have been written by someone.
    for (key, k) in &keys {
        for v in k.observed.values().flatten().chain(&k.delete_observed) {
            if !k.attempted.contains_key(v) {
                report.unexpected.insert((key.to_string(), *v));
            }
        }
    }
    let empty = KeyOps::default();
    for read in finals {
        let siblings = match &read.result {
            Ok(s) => s,
            Err(e) => {
                report
                    .failed_reads
                    .push((read.key.clone(), read.via.clone(), e.clone()));
                continue;
            }
        };
        let k = keys.get(read.key.as_str()).unwrap_or(&empty);
        let mut present = BTreeSet::new();
        for s in siblings {
            match s {
                Some(values) => present.extend(values.iter().copied()),
                None => {
                    report.garbled.insert(read.key.clone());
                }
            }
        }
        for v in &present {
            match k.attempted.get(v) {
                None => {
                    report.unexpected.insert((read.key.clone(), *v));
                }
                Some(Outcome::Ok) => {}
                Some(_) => {
                    report.recovered.insert((read.key.clone(), *v));
                }
            }
        }
        let accounted = if k.register {
            let mut roots: BTreeSet<u64> = present.union(&k.deleted).copied().collect();
            if let Some(until) = k.blind_delete_until {
                roots.extend(
                    k.invoked
                        .iter()
                        .filter(|(_, &at)| at < until)
                        .map(|(v, _)| *v),
                );
            }
            supersession_closure(&roots, &k.observed)
        } else {
            present
        };
        for (v, outcome) in &k.attempted {
            if *outcome == Outcome::Ok && !accounted.contains(v) {
                report.lost.insert((read.key.clone(), *v, read.via.clone()));
            }
        }
    }
    report
}

/// The present values plus, transitively, every value a present (or
/// accounted) write had read before superseding it.
fn supersession_closure(
    present: &BTreeSet<u64>,
    observed: &BTreeMap<u64, Vec<u64>>,
) -> BTreeSet<u64> {
    let mut accounted = present.clone();
    let mut frontier: Vec<u64> = present.iter().copied().collect();
    while let Some(v) = frontier.pop() {
        for seen in observed.get(&v).into_iter().flatten() {
            if accounted.insert(*seen) {
                frontier.push(*seen);
            }
        }
    }
    accounted
}

/// The longest gap between acknowledgements (or between the first
/// invocation and the first acknowledgement, or the last one and the end).
fn longest_unavailable(history: &History) -> u64 {
    let Some(start) = history.ops.iter().map(|o| o.invoked_ms).min() else {
        return 0;
    };
    let end = history
        .ops
        .iter()
        .map(|o| o.completed_ms)
        .max()
        .unwrap_or(start);
    let mut oks: Vec<u64> = history
        .ops
        .iter()
        .filter(|o| o.outcome == Outcome::Ok)
        .map(|o| o.completed_ms)
        .collect();
    oks.sort_unstable();
    let mut last = start;
    let mut longest = 0;
    for t in oks.into_iter().chain(std::iter::once(end)) {
        longest = longest.max(t.saturating_sub(last));
        last = last.max(t);
    }
    longest
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Op;

    fn op(key: &str, kind: OpKind, outcome: Outcome, at: u64) -> Op {
        Op {
            client: 0,
            key: key.into(),
            kind,
            invoked_ms: at,
            completed_ms: at + 1,
            outcome,
        }
    }

    fn add(e: u64, outcome: Outcome, at: u64) -> Op {
        op("s", OpKind::SetAdd { element: e }, outcome, at)
    }

    fn final_read(key: &str, siblings: Vec<Vec<u64>>) -> FinalRead {
        FinalRead {
            via: "n0".into(),
            key: key.into(),
            result: Ok(siblings.into_iter().map(Some).collect()),
        }
    }

    #[test]
    fn set_reports_lost_unexpected_and_recovered() {
        let mut h = History::default();
        h.push(add(1, Outcome::Ok, 0));
        h.push(add(2, Outcome::Ok, 10));
        h.push(add(3, Outcome::Unknown, 20));
        h.push(add(4, Outcome::Fail, 30));
        let r = check(&h, &[final_read("s", vec![vec![1, 3], vec![9]])]);
        assert!(!r.valid());
        assert_eq!(r.lost_values(), BTreeSet::from([("s", 2)]));
        assert_eq!(r.unexpected, BTreeSet::from([("s".to_string(), 9)]));
        assert_eq!(r.recovered, BTreeSet::from([("s".to_string(), 3)]));
        let ok = check(&h, &[final_read("s", vec![vec![1], vec![2, 3]])]);
        assert!(ok.valid(), "{ok}");
    }

    #[test]
    fn a_register_value_may_vanish_by_a_delete_that_read_it_and_no_other() {
        let mut h = History::default();
        let w = |value, observed: Vec<u64>, at| {
            op("r", OpKind::RegWrite { value, observed }, Outcome::Ok, at)
        };
        h.push(w(1, vec![], 0));
        h.push(w(2, vec![], 5)); // a concurrent sibling the delete did not read
        h.push(op(
            "r",
            OpKind::RegDelete { observed: vec![1] },
            Outcome::Ok,
            10,
        ));
        // 1 deleted with a context that saw it: accounted; 2 must remain.
        assert!(check(&h, &[final_read("r", vec![vec![2]])]).valid());
        let r = check(&h, &[final_read("r", vec![])]);
        assert_eq!(r.lost_values(), BTreeSet::from([("r", 2)]));
        // A refused delete removes nothing.
        let mut h = History::default();
        h.push(w(1, vec![], 0));
        h.push(op(
            "r",
            OpKind::RegDelete { observed: vec![1] },
            Outcome::Fail,
            10,
        ));
        assert_eq!(
            check(&h, &[final_read("r", vec![])]).lost_values(),
            BTreeSet::from([("r", 1)])
        );
    }

    #[test]
    fn register_writes_may_vanish_only_when_superseded() {
        let reg = |value, observed: Vec<u64>, outcome, at| {
            op("r", OpKind::RegWrite { value, observed }, outcome, at)
        };
        let mut h = History::default();
        h.push(reg(1, vec![], Outcome::Ok, 0));
        h.push(reg(2, vec![1], Outcome::Unknown, 10)); // read 1, replaced it
        h.push(reg(3, vec![2], Outcome::Ok, 20)); // read 2: 2 took effect
        h.push(reg(4, vec![], Outcome::Ok, 30)); // concurrent, saw nothing
        let r = check(&h, &[final_read("r", vec![vec![3], vec![4]])]);
        assert!(r.valid(), "1 and 2 are superseded through 3: {r}");
        let r = check(&h, &[final_read("r", vec![vec![3]])]);
        assert_eq!(r.lost_values(), BTreeSet::from([("r", 4)]));
        // A value read that nobody wrote.
        h.push(reg(5, vec![77], Outcome::Ok, 40));
        let r = check(&h, &[final_read("r", vec![vec![3], vec![4], vec![5]])]);
        assert_eq!(r.unexpected, BTreeSet::from([("r".to_string(), 77)]));
    }

    #[test]
    fn failed_and_garbled_final_reads_are_invalid() {
        let mut h = History::default();
        h.push(add(1, Outcome::Ok, 0));
        let failed = FinalRead {
            via: "n1".into(),
            key: "s".into(),
            result: Err("quorum_unavailable".into()),
        };
        assert!(!check(&h, &[failed]).valid());
        let garbled = FinalRead {
            via: "n1".into(),
            key: "s".into(),
            result: Ok(vec![None, Some(vec![1])]),
        };
        assert_eq!(
            check(&h, &[garbled]).garbled,
            BTreeSet::from(["s".to_string()])
        );
    }

    #[test]
    fn unavailability_is_the_longest_gap_between_acks() {
        let mut h = History::default();
        h.push(add(1, Outcome::Ok, 0)); // ok at 1
        h.push(add(2, Outcome::Unknown, 5)); // ends at 6
        h.push(add(3, Outcome::Fail, 100)); // ends at 101
        h.push(add(4, Outcome::Ok, 500)); // ok at 501
        assert_eq!(check(&h, &[]).longest_unavailable_ms, 500);
    }
}
