//! Quorum counting and the choice of replicas, as plain functions and state
//! machines: the async coordinator only feeds them replies.
//!
//! [`plan`] picks who a request goes to: each primary in the preference list
//! that this node believes reachable, and for each one it believes down, the
//! next reachable node past the preference list with a hint naming the
//! primary (sloppy quorum). [`Tracker`] counts replies against `w`/`r`, `dw`
//! and `pw`/`pr`, and says as early as possible whether the request has
//! succeeded or can no longer succeed.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One replica a request is sent to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// The node.
    pub node: String,
    /// Whether it is in the key's preference list.
    pub primary: bool,
    /// For a fallback: the primary it stands in for.
    pub hint_for: Option<String>,
}

/// The replicas of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Where to send first.
    pub targets: Vec<Target>,
    /// Reachable fallbacks not used yet, nearest first: stand-ins for targets
    /// that fail.
    pub spares: Vec<String>,
    /// A planted bug, set only by the simulator's tests: stand-ins count
    /// as primaries.
    pub planted_fallbacks_count_as_primaries: bool,
}

/// Chooses the replicas for a key whose ranked nodes are `order`, with
/// `n` replicas, given which nodes this node believes reachable.
pub fn plan(order: &[&str], n: usize, reachable: impl Fn(&str) -> bool) -> Plan {
    let n = n.min(order.len());
    let (primaries, rest) = order.split_at(n);
    let mut spares: Vec<String> = rest
        .iter()
        .filter(|id| reachable(id))
        .map(|id| id.to_string())
        .collect();
    spares.reverse(); // pop() takes the nearest
    let mut targets = Vec::with_capacity(n);
    for p in primaries {
        if reachable(p) {
            targets.push(Target {
                node: p.to_string(),
                primary: true,
                hint_for: None,
            });
        } else if let Some(f) = spares.pop() {
            targets.push(Target {
                node: f,
                primary: false,
                hint_for: Some(p.to_string()),
            });
        }
    }
    spares.reverse();
    Plan {
        targets,
        spares,
        planted_fallbacks_count_as_primaries: false,
    }
}

impl Plan {
    /// Takes the nearest spare to stand in for a failed target; the hint
    /// names the primary the failed target was (or stood in for).
    pub fn substitute(&mut self, failed: &Target) -> Option<Target> {
        if self.spares.is_empty() {
            return None;
        }
        let node = self.spares.remove(0);
        let hint_for = failed
            .hint_for
            .clone()
            .or_else(|| Some(failed.node.clone()));
        Some(Target {
            node,
            primary: self.planted_fallbacks_count_as_primaries,
            hint_for,
        })
    }
}

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Needs {
    /// Replies (`r`) or acknowledgements (`w`).
    pub total: u8,
    /// Of those, durable ones (`dw`; 0 for reads).
    pub durable: u8,
    /// Of those, from primaries (`pr` or `pw`).
    pub primary: u8,
}

/// Where a request stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Still waiting.
    Pending,
    /// Enough replies.
    Done,
    /// Can no longer succeed.
    Failed(Shortfall),
}

/// Why a quorum was not met: what was needed, what came back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shortfall {
    /// What was needed.
    pub needs: Needs,
    /// Successful replies.
    pub got: u8,
    /// Of those, durable.
    pub durable: u8,
    /// Of those, from primaries.
    pub primary: u8,
    /// Replicas asked.
    pub asked: u8,
}

/// A request whose explicit quorum options ask for more replicas than a
/// cluster of `members` nodes has: refused as a shortfall before anything
/// is sent, never silently capped. (Bucket defaults are capped instead:
/// see [`crate::bucket::BucketProps::for_ring`].)
pub fn beyond_cluster(q: &crate::bucket::QuorumOverrides, members: usize) -> Option<Shortfall> {
    let members = u8::try_from(members).unwrap_or(u8::MAX);
    let explicit = [q.r, q.w, q.dw, q.pr, q.pw];
    if !explicit.iter().flatten().any(|&v| v > members) {
        return None;
    }
    let total =
        q.r.unwrap_or(0)
            .max(q.w.unwrap_or(0))
            .max(q.dw.unwrap_or(0));
    Some(Shortfall {
        needs: Needs {
            total: total.max(q.pr.unwrap_or(0)).max(q.pw.unwrap_or(0)),
            durable: q.dw.unwrap_or(0),
            primary: q.pr.unwrap_or(0).max(q.pw.unwrap_or(0)),
        },
        got: 0,
        durable: 0,
        primary: 0,
        asked: members,
    })
}

impl fmt::Display for Shortfall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "quorum not met: needed {} replies ({} from primaries, {} durable); got {} ({} from primaries, {} durable) from {} replicas asked",
            self.needs.total,
            self.needs.primary,
            self.needs.durable,
            self.got,
            self.primary,
            self.durable,
            self.asked
        )
    }
}

/// Counts replies against [`Needs`].
#[derive(Debug, Clone)]
pub struct Tracker {
    needs: Needs,
    got: u8,
    durable: u8,
    primary: u8,
    asked: u8,
    pending: u8,
    pending_primary: u8,
}

impl Tracker {
    /// A tracker for a request needing `needs`.
    pub fn new(needs: Needs) -> Self {
        Self {
            needs,
            got: 0,
            durable: 0,
            primary: 0,
            asked: 0,
            pending: 0,
            pending_primary: 0,
        }
    }

    /// A request went out to a replica.
    pub fn sent(&mut self, primary: bool) {
        self.asked = self.asked.saturating_add(1);
        self.pending = self.pending.saturating_add(1);
        if primary {
            self.pending_primary = self.pending_primary.saturating_add(1);
        }
    }

    fn settle(&mut self, primary: bool) {
        self.pending = self.pending.saturating_sub(1);
        if primary {
            self.pending_primary = self.pending_primary.saturating_sub(1);
        }
    }

    /// A replica answered successfully.
    pub fn succeeded(&mut self, primary: bool, durable: bool) -> Progress {
        self.settle(primary);
        self.got = self.got.saturating_add(1);
        if durable {
            self.durable = self.durable.saturating_add(1);
        }
        if primary {
            self.primary = self.primary.saturating_add(1);
        }
        self.progress()
    }

    /// A replica failed or timed out.
    pub fn failed(&mut self, primary: bool) -> Progress {
        self.settle(primary);
        self.progress()
    }

    /// Where the request stands.
    pub fn progress(&self) -> Progress {
        let n = &self.needs;
        if self.got >= n.total && self.durable >= n.durable && self.primary >= n.primary {
            return Progress::Done;
        }
        let hopeless = self.got + self.pending < n.total
            || self.durable + self.pending < n.durable
            || self.primary + self.pending_primary < n.primary;
        if hopeless {
            Progress::Failed(self.shortfall())
        } else {
            Progress::Pending
        }
    }

    /// What came back so far against what was needed.
    pub fn shortfall(&self) -> Shortfall {
        Shortfall {
            needs: self.needs,
            got: self.got,
            durable: self.durable,
            primary: self.primary,
            asked: self.asked,
        }
    }

    /// Replies still outstanding.
    pub fn pending(&self) -> u8 {
        self.pending
    }
}

#[cfg(test)]
mod capacity_tests {
    use super::*;
    use crate::bucket::QuorumOverrides;

    #[test]
    fn explicit_quorums_past_the_cluster_are_refused_not_capped() {
        let q = |w, dw| QuorumOverrides {
            w,
            dw,
            ..QuorumOverrides::default()
        };
        assert_eq!(beyond_cluster(&q(Some(2), None), 2), None);
        assert_eq!(beyond_cluster(&QuorumOverrides::default(), 1), None);
        let s = beyond_cluster(&q(Some(3), Some(3)), 2).expect("refused");
        assert_eq!(
            (s.needs.total, s.needs.durable, s.asked, s.got),
            (3, 3, 2, 0)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORDER: [&str; 5] = ["a", "b", "c", "d", "e"];

    #[test]
    fn all_up_goes_to_the_primaries() {
        let p = plan(&ORDER, 3, |_| true);
        let nodes: Vec<&str> = p.targets.iter().map(|t| t.node.as_str()).collect();
        assert_eq!(nodes, ["a", "b", "c"]);
        assert!(p.targets.iter().all(|t| t.primary && t.hint_for.is_none()));
        assert_eq!(p.spares, ["d", "e"]);
    }

    #[test]
    fn down_primaries_get_the_nearest_fallbacks_with_hints() {
        let p = plan(&ORDER, 3, |id| id != "a" && id != "c");
        assert_eq!(
            p.targets,
            vec![
                Target {
                    node: "d".into(),
                    primary: false,
                    hint_for: Some("a".into())
                },
                Target {
                    node: "b".into(),
                    primary: true,
                    hint_for: None
                },
                Target {
                    node: "e".into(),
                    primary: false,
                    hint_for: Some("c".into())
                },
            ]
        );
        assert!(p.spares.is_empty());
        // No fallback left: the down primary is simply not asked.
        let p = plan(&ORDER[..3], 3, |id| id != "a");
        assert_eq!(p.targets.len(), 2);
    }

    #[test]
    fn failed_targets_are_substituted_with_the_right_hint() {
        let mut p = plan(&ORDER, 3, |_| true);
        let failed = p.targets[1].clone();
        let sub = p.substitute(&failed).expect("spare");
        assert_eq!(
            sub,
            Target {
                node: "d".into(),
                primary: false,
                hint_for: Some("b".into())
            }
        );
        let again = p.substitute(&sub).expect("spare");
        assert_eq!(
            again.hint_for.as_deref(),
            Some("b"),
            "the hint still names the owner"
        );
        assert_eq!(p.substitute(&again), None);
    }

    fn needs(total: u8, durable: u8, primary: u8) -> Needs {
        Needs {
            total,
            durable,
            primary,
        }
    }

    #[test]
    fn write_quorum_counts_acks() {
        let mut t = Tracker::new(needs(2, 0, 0));
        for _ in 0..3 {
            t.sent(true);
        }
        assert_eq!(t.succeeded(true, false), Progress::Pending);
        assert_eq!(t.failed(true), Progress::Pending);
        assert_eq!(t.succeeded(true, false), Progress::Done);
    }

    #[test]
    fn fails_as_soon_as_hopeless() {
        let mut t = Tracker::new(needs(2, 0, 0));
        for _ in 0..3 {
            t.sent(true);
        }
        assert_eq!(t.failed(true), Progress::Pending);
        match t.failed(true) {
            Progress::Failed(s) => {
                assert_eq!((s.got, s.asked), (0, 3));
                assert!(s.to_string().contains("needed 2 replies"), "{s}");
            }
            other => panic!("expected failure, got {other:?}"),
        }
    }

    #[test]
    fn sloppy_acks_do_not_count_for_pw() {
        // One primary and two fallbacks: w=2 could be met, pw=2 never.
        let mut t = Tracker::new(needs(2, 0, 2));
        t.sent(true);
        t.sent(false);
        t.sent(false);
        match t.succeeded(true, false) {
            Progress::Failed(s) => assert_eq!((s.got, s.primary, s.asked), (1, 1, 3)),
            other => panic!("pw=2 with one primary asked must fail, got {other:?}"),
        }
        // Two primaries: the sloppy ack does not finish it, the second
        // primary's does.
        let mut t = Tracker::new(needs(2, 0, 2));
        t.sent(true);
        t.sent(true);
        t.sent(false);
        assert_eq!(t.succeeded(false, false), Progress::Pending);
        assert_eq!(t.succeeded(true, false), Progress::Pending);
        assert_eq!(t.succeeded(true, false), Progress::Done);
    }

    #[test]
    fn durable_acks_count_for_dw() {
        let mut t = Tracker::new(needs(2, 2, 0));
        t.sent(true);
        t.sent(true);
        t.sent(true);
        assert_eq!(t.succeeded(true, true), Progress::Pending);
        assert_eq!(
            t.succeeded(true, false),
            Progress::Pending,
            "w met, dw not yet"
        );
        assert_eq!(t.succeeded(true, true), Progress::Done);
    }

    #[test]
    fn reads_need_r_replies_and_pr_primaries() {
        let mut t = Tracker::new(needs(2, 0, 1));
        t.sent(false);
        t.sent(false);
        t.sent(true);
        assert_eq!(t.succeeded(false, false), Progress::Pending);
        assert_eq!(
            t.succeeded(false, false),
            Progress::Pending,
            "r met, pr not"
        );
        assert_eq!(t.succeeded(true, false), Progress::Done);
    }
}
