//! Deciding the next layout version: single-decree Paxos, one instance per
//! version.
//!
//! A layout commit names the version it was staged against, `v`, and asks
//! the cluster to make its layout version `v + 1`. Two operators may commit
//! at once through different nodes; exactly one layout may become `v + 1`,
//! or nodes would disagree on where keys live. Gossip cannot decide that
//! (the highest version wins, but two different layouts of one version tie),
//! so the voters of layout `v` (its members holding data) decide it, as
//! Cassandra decides lightweight transactions: a value is chosen once a
//! majority of voters accepted it under one ballot, and any later proposer
//! that hears of an accepted value must carry it forward, so a chosen value
//! can never be replaced.
//!
//! - [`Acceptor`]: what each voter keeps for the version being decided (the
//!   highest ballot it promised and the value it accepted). The driver must
//!   make it durable before a reply leaves the node.
//! - [`Proposer`]: one commit attempt. It prepares with a ballot, then asks
//!   the voters to accept either its own value or the accepted value a
//!   promise carried; it ends [`Outcome::Chosen`] (saying whether the
//!   chosen value is its own), [`Outcome::Behind`] (the version was decided
//!   already), [`Outcome::Outbid`] (a higher ballot came first: retry with a
//!   higher round, or report the conflict) or [`Outcome::Unknown`] (outbid
//!   after asking to accept: retry before reporting anything).
//!
//! What the driver owes the protocol (to wire it into the node): the
//! acceptor state and the layout it votes from are saved together, with
//! fsync, before a reply leaves; `advance` follows a layout only once that
//! layout is durable; a node that lost its disk does not vote on the
//! version it rejoined during; ballots are never reused (`attempt`); and a
//! proposer needs at least one voter.
//!
//! Both are pure: messages in, messages out, generic over the value.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// A proposal number: rounds first, then the proposer's id, then a number
/// the proposer draws afresh for each attempt, so no two attempts share a
/// ballot (not two on one node, nor one before and one after a restart).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ballot {
    /// The round.
    pub round: u64,
    /// The proposing node.
    pub node: String,
    /// Unique per attempt (random, or a durable counter).
    pub attempt: u64,
}

/// What proposers and acceptors say to each other about one version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Message<V> {
    /// Phase 1: promise to ignore ballots below `ballot` for `version`.
    Prepare {
        /// The version being decided.
        version: u64,
        /// The proposer's ballot.
        ballot: Ballot,
    },
    /// Phase 1 answer: promised, with the value accepted before, if any.
    Promise {
        /// The version.
        version: u64,
        /// The ballot promised.
        ballot: Ballot,
        /// The value this acceptor accepted for `version`, and under which
        /// ballot.
        accepted: Option<(Ballot, V)>,
    },
    /// Phase 2: accept `value` as `version` under `ballot`.
    Accept {
        /// The version.
        version: u64,
        /// The proposer's ballot.
        ballot: Ballot,
        /// The value.
        value: V,
    },
    /// Phase 2 answer: accepted.
    Accepted {
        /// The version.
        version: u64,
        /// The ballot accepted under.
        ballot: Ballot,
    },
    /// Refused: the acceptor promised a higher ballot.
    Outbid {
        /// The version.
        version: u64,
        /// The higher ballot.
        promised: Ballot,
    },
    /// Refused: the acceptor is past `version`; here is what it has.
    Decided {
        /// The acceptor's version.
        version: u64,
        /// Its value.
        value: V,
    },
}

/// One voter's state for the version under decision. Durable: saved before
/// any reply built from it leaves the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acceptor<V> {
    /// The version being decided: one past the acceptor's own.
    version: u64,
    promised: Option<Ballot>,
    accepted: Option<(Ballot, V)>,
    /// Silent for `version`: the node lost what it promised for it.
    #[serde(default)]
    abstain: bool,
}

impl<V: Clone> Acceptor<V> {
    /// An acceptor whose own value is at `current` (so it decides
    /// `current + 1`).
    pub fn new(current: u64) -> Self {
        Self {
            version: current.saturating_add(1),
            promised: None,
            accepted: None,
            abstain: false,
        }
    }

    /// The acceptor of a node that lost its disk and rejoined at
    /// `current`: it may have promised or accepted for `current + 1`
    /// before and cannot know what, so it stays silent on that version
    /// (as if down) and votes again from the next.
    pub fn abstaining(current: u64) -> Self {
        Self {
            abstain: true,
            ..Self::new(current)
        }
    }

    /// The version this acceptor decides.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The node's own value moved to `current` (a decided version arrived):
    /// forget what was promised for older versions.
    pub fn advance(&mut self, current: u64) {
        if current >= self.version {
            *self = Self::new(current);
        }
    }

    /// Answers a proposer. `current` is the node's own value: the answer to
    /// a proposer deciding a version this node is already past.
    pub fn handle(&mut self, msg: Message<V>, current: &V) -> Option<Message<V>> {
        let (version, ballot) = match &msg {
            Message::Prepare { version, ballot }
            | Message::Accept {
                version, ballot, ..
            } => (*version, ballot.clone()),
            _ => return None,
        };
        if version < self.version {
            return Some(Message::Decided {
                version: self.version - 1,
                value: current.clone(),
            });
        }
        if version > self.version || self.abstain {
            // This node lags: it cannot vote until gossip brings it the
            // versions before. Silence, as if it were down.
            return None;
        }
        if self.promised.as_ref().is_some_and(|p| *p > ballot) {
            return Some(Message::Outbid {
                version,
                promised: self.promised.clone()?,
            });
        }
        match msg {
            Message::Prepare { .. } => {
                self.promised = Some(ballot.clone());
                Some(Message::Promise {
                    version,
                    ballot,
                    accepted: self.accepted.clone(),
                })
            }
            Message::Accept { value, .. } => {
                self.promised = Some(ballot.clone());
                self.accepted = Some((ballot.clone(), value));
                Some(Message::Accepted { version, ballot })
            }
            _ => None,
        }
    }
}

/// How a commit attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome<V> {
    /// A majority accepted `value`: it is the version. `ours` says whether
    /// it is the value this proposer wanted (if not, another commit won and
    /// this one carried it forward).
    Chosen {
        /// The chosen value.
        value: V,
        /// Whether it is this proposer's own.
        ours: bool,
    },
    /// The version was decided before: a voter is at `version` with
    /// `value`. `ours` when that is the version this proposer decides and
    /// the value is its own (an earlier attempt of it won).
    Behind {
        /// The voter's version.
        version: u64,
        /// Its value.
        value: V,
        /// Whether it is this proposer's value for its version.
        ours: bool,
    },
    /// A voter promised a higher ballot before this attempt asked anyone
    /// to accept: its value was not chosen by it. Retry with a round above
    /// `promised.round`, or give up.
    Outbid {
        /// The higher ballot.
        promised: Ballot,
    },
    /// Outbid after asking voters to accept: a majority may have accepted
    /// this value already. Not a failure: retry (a new attempt learns the
    /// chosen value) before telling anyone the commit failed.
    Unknown {
        /// The higher ballot.
        promised: Ballot,
    },
}

#[derive(Debug, Clone)]
enum Phase<V> {
    Preparing(BTreeMap<String, Option<(Ballot, V)>>),
    Accepting {
        value: V,
        accepted: BTreeSet<String>,
    },
    Done,
}

/// One commit attempt for one version.
#[derive(Debug, Clone)]
pub struct Proposer<V> {
    version: u64,
    ballot: Ballot,
    voters: BTreeSet<String>,
    want: V,
    phase: Phase<V>,
}

impl<V: Clone + PartialEq> Proposer<V> {
    /// A proposer for `version` (one past the value it was staged against)
    /// that wants `want`, asking `voters`, with `ballot`. Send the returned
    /// message to every voter (this node included, if it is one).
    pub fn new(
        version: u64,
        ballot: Ballot,
        voters: BTreeSet<String>,
        want: V,
    ) -> (Self, Message<V>) {
        let prepare = Message::Prepare {
            version,
            ballot: ballot.clone(),
        };
        let p = Self {
            version,
            ballot,
            voters,
            want,
            phase: Phase::Preparing(BTreeMap::new()),
        };
        (p, prepare)
    }

    fn majority(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    /// Whether the attempt has ended.
    pub fn done(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }

    /// A voter's answer. Returns a message to send to every voter, or the
    /// outcome once there is one (after which answers are ignored).
    pub fn handle(
        &mut self,
        from: &str,
        msg: Message<V>,
    ) -> Option<Result<Message<V>, Outcome<V>>> {
        if !self.voters.contains(from) || self.done() {
            return None;
        }
        match msg {
            Message::Decided { version, value } if version >= self.version => {
                self.phase = Phase::Done;
                let ours = version == self.version && value == self.want;
                Some(Err(Outcome::Behind {
                    version,
                    value,
                    ours,
                }))
            }
            Message::Outbid { version, promised }
                if version == self.version && promised > self.ballot =>
            {
                let asked = matches!(self.phase, Phase::Accepting { .. });
                self.phase = Phase::Done;
                Some(Err(if asked {
                    Outcome::Unknown { promised }
                } else {
                    Outcome::Outbid { promised }
                }))
            }
            Message::Promise {
                version,
                ballot,
                accepted,
            } if version == self.version && ballot == self.ballot => {
                let majority = self.majority();
                let Phase::Preparing(promises) = &mut self.phase else {
                    return None;
                };
                promises.insert(from.to_owned(), accepted);
                if promises.len() < majority {
                    return None;
                }
                // A value a voter accepted may have been chosen: carry the
                // one with the highest ballot forward instead of ours.
                let value = promises
                    .values()
                    .flatten()
                    .max_by(|a, b| a.0.cmp(&b.0))
                    .map_or_else(|| self.want.clone(), |(_, v)| v.clone());
                self.phase = Phase::Accepting {
                    value: value.clone(),
                    accepted: BTreeSet::new(),
                };
                Some(Ok(Message::Accept {
                    version: self.version,
                    ballot: self.ballot.clone(),
                    value,
                }))
            }
            Message::Accepted { version, ballot }
                if version == self.version && ballot == self.ballot =>
            {
                let majority = self.majority();
                let Phase::Accepting { value, accepted } = &mut self.phase else {
                    return None;
                };
                accepted.insert(from.to_owned());
                if accepted.len() < majority {
                    return None;
                }
                let value = value.clone();
                let ours = value == self.want;
                self.phase = Phase::Done;
                Some(Err(Outcome::Chosen { value, ours }))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ballot(round: u64, node: &str) -> Ballot {
        Ballot {
            round,
            node: node.into(),
            attempt: 0,
        }
    }

    fn voters(n: usize) -> BTreeSet<String> {
        (1..=n).map(|i| format!("v{i}")).collect()
    }

    #[test]
    fn a_lone_proposer_gets_its_value_chosen() {
        let mut acceptors: BTreeMap<String, Acceptor<&str>> = voters(3)
            .into_iter()
            .map(|v| (v, Acceptor::new(4)))
            .collect();
        let (mut p, prepare) = Proposer::new(5, ballot(1, "a"), voters(3), "mine");
        let mut outcome = None;
        let mut pending: Vec<Message<&str>> = vec![prepare];
        while let Some(msg) = pending.pop() {
            for (id, a) in &mut acceptors {
                if let Some(reply) = a.handle(msg.clone(), &"old") {
                    match p.handle(id, reply) {
                        Some(Ok(next)) => pending.push(next),
                        Some(Err(o)) => outcome = Some(o),
                        None => {}
                    }
                }
            }
        }
        assert_eq!(
            outcome,
            Some(Outcome::Chosen {
                value: "mine",
                ours: true
            })
        );
    }

    #[test]
    fn a_rejoined_voter_is_silent_on_the_version_it_may_have_voted_on() {
        let mut a: Acceptor<&str> = Acceptor::abstaining(4);
        let prepare = Message::Prepare {
            version: 5,
            ballot: ballot(1, "a"),
        };
        assert_eq!(a.handle(prepare, &"four"), None);
        a.advance(5);
        let prepare = Message::Prepare {
            version: 6,
            ballot: ballot(1, "a"),
        };
        assert!(matches!(
            a.handle(prepare, &"five"),
            Some(Message::Promise { version: 6, .. })
        ));
    }

    #[test]
    fn a_proposer_behind_the_voters_learns_the_decided_value() {
        let mut a: Acceptor<&str> = Acceptor::new(7);
        let (mut p, prepare) = Proposer::new(5, ballot(1, "a"), voters(1), "mine");
        let reply = a.handle(prepare, &"seven").expect("an answer");
        assert_eq!(
            p.handle("v1", reply),
            Some(Err(Outcome::Behind {
                version: 7,
                value: "seven",
                ours: false
            }))
        );
    }

    #[test]
    fn a_value_accepted_by_one_voter_is_carried_forward() {
        // v1 accepted "theirs" under ballot 1; a proposer with ballot 2
        // whose majority includes v1 must propose "theirs", not its own.
        let mut a1: Acceptor<&str> = Acceptor::new(0);
        let mut a2: Acceptor<&str> = Acceptor::new(0);
        a1.handle(
            Message::Accept {
                version: 1,
                ballot: ballot(1, "b"),
                value: "theirs",
            },
            &"",
        );
        let (mut p, prepare) = Proposer::new(1, ballot(2, "a"), voters(3), "mine");
        let r1 = a1.handle(prepare.clone(), &"").expect("promise");
        let r2 = a2.handle(prepare, &"").expect("promise");
        assert_eq!(p.handle("v1", r1), None);
        let Some(Ok(Message::Accept { value, .. })) = p.handle("v2", r2) else {
            panic!("an accept after two promises of three");
        };
        assert_eq!(value, "theirs");
    }

    #[test]
    fn a_lower_ballot_is_outbid() {
        let mut a: Acceptor<&str> = Acceptor::new(0);
        a.handle(
            Message::Prepare {
                version: 1,
                ballot: ballot(5, "b"),
            },
            &"",
        );
        let (mut p, prepare) = Proposer::new(1, ballot(3, "a"), voters(1), "mine");
        let reply = a.handle(prepare, &"").expect("an answer");
        assert_eq!(
            p.handle("v1", reply),
            Some(Err(Outcome::Outbid {
                promised: ballot(5, "b")
            }))
        );
    }

    /// A network of acceptors and competing proposers: messages delivered
    /// in an order picked by `choices`, some dropped, each outbid proposer
    /// retrying with a higher round, and a chosen value applied by every
    /// acceptor at once (as the commit and gossip do). Returns each
    /// proposer's last outcome.
    fn race(
        acceptors: usize,
        proposers: usize,
        choices: &[u16],
        one_node: bool,
    ) -> Vec<Option<Outcome<String>>> {
        // Proposers on one node differ only by their attempt numbers.
        let ballot = |round: u64, i: usize| Ballot {
            round,
            node: if one_node {
                "p".into()
            } else {
                format!("p{i}")
            },
            attempt: i as u64,
        };
        let ids = voters(acceptors);
        let mut accs: BTreeMap<String, Acceptor<String>> =
            ids.iter().map(|v| (v.clone(), Acceptor::new(0))).collect();
        let mut current = String::from("v0");
        // In flight: (to acceptor, from proposer, message) and replies.
        let mut to_acc: Vec<(String, usize, Message<String>)> = Vec::new();
        let mut to_prop: Vec<(usize, String, Message<String>)> = Vec::new();
        let mut props: Vec<Proposer<String>> = Vec::new();
        let mut outcomes: Vec<Option<Outcome<String>>> = vec![None; proposers];
        let want = |i: usize| format!("value-{i}");
        for i in 0..proposers {
            let (p, prep) = Proposer::new(1, ballot(1, i), ids.clone(), want(i));
            props.push(p);
            for v in &ids {
                to_acc.push((v.clone(), i, prep.clone()));
            }
        }
        let mut c = choices.iter().copied().cycle();
        for _ in 0..20_000 {
            if to_acc.is_empty() && to_prop.is_empty() {
                break;
            }
            let pick = usize::from(c.next().unwrap_or(0));
            let drop = pick % 17 == 0;
            if (pick / 2) % 2 == 0 && !to_acc.is_empty() || to_prop.is_empty() {
                let (to, from, msg) = to_acc.remove(pick % to_acc.len());
                if drop {
                    continue;
                }
                if let Some(reply) = accs.get_mut(&to).and_then(|a| a.handle(msg, &current)) {
                    to_prop.push((from, to, reply));
                }
            } else {
                let (to, from, msg) = to_prop.remove(pick % to_prop.len());
                if drop {
                    continue;
                }
                match props[to].handle(&from, msg) {
                    Some(Ok(next)) => {
                        for v in &ids {
                            to_acc.push((v.clone(), to, next.clone()));
                        }
                    }
                    Some(Err(Outcome::Outbid { promised } | Outcome::Unknown { promised })) => {
                        let b = ballot(promised.round + 1, to);
                        let (p, prep) = Proposer::new(1, b, ids.clone(), want(to));
                        props[to] = p;
                        for v in &ids {
                            to_acc.push((v.clone(), to, prep.clone()));
                        }
                    }
                    Some(Err(o)) => {
                        if let Outcome::Chosen { value, .. } = &o {
                            current = value.clone();
                            for a in accs.values_mut() {
                                a.advance(1);
                            }
                        }
                        outcomes[to] = Some(o);
                    }
                    None => {}
                }
            }
            // A proposer whose messages were all dropped tries again.
            if to_acc.is_empty() && to_prop.is_empty() {
                for (i, p) in props.iter_mut().enumerate() {
                    if outcomes[i].is_none() {
                        let b = ballot(p.ballot.round + 1, i);
                        let (np, prep) = Proposer::new(1, b, ids.clone(), want(i));
                        *p = np;
                        for v in &ids {
                            to_acc.push((v.clone(), i, prep.clone()));
                        }
                    }
                }
            }
        }
        outcomes
    }

    /// The values outcomes report as version 1, and how many proposers
    /// learned that their own value is it.
    fn verdicts(outcomes: &[Option<Outcome<String>>]) -> (BTreeSet<String>, usize) {
        let mut values = BTreeSet::new();
        let mut winners = 0;
        for (i, o) in outcomes.iter().enumerate() {
            let value = match o {
                Some(Outcome::Chosen { value, .. } | Outcome::Behind { value, .. }) => value,
                Some(Outcome::Unknown { .. } | Outcome::Outbid { .. }) | None => continue,
            };
            values.insert(value.clone());
            if *value == format!("value-{i}") {
                winners += 1;
            }
        }
        (values, winners)
    }

    proptest! {
        /// Safety: whatever the interleaving, drops and retries, every
        /// proposer that learns the version learns the same value, and at
        /// most one learns that it is its own.
        #[test]
        fn at_most_one_value_is_ever_chosen(
            acceptors in 1usize..6,
            proposers in 2usize..4,
            choices in proptest::collection::vec(any::<u16>(), 1..64),
            one_node in any::<bool>(),
        ) {
            let outcomes = race(acceptors, proposers, &choices, one_node);
            let (values, winners) = verdicts(&outcomes);
            prop_assert!(values.len() <= 1, "{outcomes:?}");
            prop_assert!(winners <= 1, "{outcomes:?}");
        }
    }

    #[test]
    fn without_losses_two_racing_commits_end_with_one_winner() {
        // Delivery orders from a fixed seed, no drops (17 never divides
        // these picks): both commits end, both learn one value, and exactly
        // one learns it is its own (the other, that another commit won).
        for seed in 0u16..200 {
            let choices: Vec<u16> = (0..64u16)
                .map(|i| {
                    let x = seed.wrapping_mul(31).wrapping_add(i.wrapping_mul(7919));
                    if x % 17 == 0 {
                        x ^ 1
                    } else {
                        x
                    }
                })
                .collect();
            let outcomes = race(3, 2, &choices, seed % 2 == 0);
            let (values, winners) = verdicts(&outcomes);
            assert!(
                outcomes.iter().all(Option::is_some),
                "seed {seed}: {outcomes:?}"
            );
            assert_eq!(values.len(), 1, "seed {seed}: {outcomes:?}");
            assert_eq!(winners, 1, "seed {seed}: {outcomes:?}");
        }
    }
}
