//! One request's round over its replicas, as sans-IO state machines.
//!
//! The node's async coordinator and the deterministic simulator both drive
//! these: they send to the targets a round names, feed the replies back in,
//! and act on what the round says (answer the client, ask a stand-in, repair
//! a stale replica). So the rules the simulator checks under random faults
//! are the rules the node runs, not a copy of them.
//!
//! - [`WriteRound`]: the coordinator stored the write locally; the round
//!   sends it to the other replicas, substitutes fallbacks for failures and
//!   says once when `w`/`dw`/`pw` are met or can no longer be.
//! - [`ReadRound`]: asks the replicas, answers with the merge of the first
//!   `r` replies (`pr` of them primaries), and once every replica answered,
//!   names the stale ones for read repair.

use crate::quorum::{Needs, Plan, Progress, Shortfall, Target, Tracker};
use crate::{ConflictMode, Object};

/// What a reply changed: whom to ask next, and the answer once known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step<T> {
    /// A stand-in to send the request to, for a target that failed.
    pub send: Option<Target>,
    /// The client's answer, given exactly once per round.
    pub answer: Option<Result<T, Shortfall>>,
}

impl<T> Step<T> {
    fn none() -> Self {
        Self {
            send: None,
            answer: None,
        }
    }
}

/// Fails early when the plan cannot meet the quorum even if every replica
/// answers, so nothing is written for a request bound to fail.
pub fn precheck(plan: &Plan, needs: Needs) -> Result<(), Shortfall> {
    let total = (plan.targets.len() + plan.spares.len()) as u8;
    let primaries = plan.targets.iter().filter(|t| t.primary).count() as u8;
    if total < needs.total || total < needs.durable || primaries < needs.primary {
        return Err(Shortfall {
            needs,
            got: 0,
            durable: 0,
            primary: 0,
            asked: 0,
        });
    }
    Ok(())
}

/// The merge of every object given (`None` when there is none).
pub fn merge_all<'a>(
    objects: impl IntoIterator<Item = &'a Option<Object>>,
    mode: ConflictMode,
) -> Option<Object> {
    let mut merged: Option<Object> = None;
    for o in objects.into_iter().flatten() {
        match merged.as_mut() {
            Some(m) => m.merge(o, mode),
            None => merged = Some(o.clone()),
        }
    }
    merged
}

/// A write's replication round, after the coordinator stored it.
#[derive(Debug, Clone)]
pub struct WriteRound {
    plan: Plan,
    tracker: Tracker,
    answered: bool,
}

impl WriteRound {
    /// A round for a write coordinated by `me`, which is counted as one of
    /// the replicas (it stores the write first). Fails when the plan cannot
    /// meet `needs` even if every replica answers.
    pub fn new(
        mut plan: Plan,
        needs: Needs,
        me: &str,
        me_primary: bool,
    ) -> Result<Self, Shortfall> {
        if !plan.targets.iter().any(|t| t.node == me) {
            plan.targets.insert(
                0,
                Target {
                    node: me.to_owned(),
                    primary: me_primary,
                    hint_for: None,
                },
            );
        }
        // The coordinator is never its own stand-in: one machine must not
        // count twice.
        plan.spares.retain(|s| s != me);
        precheck(&plan, needs)?;
        // The coordinator's own copy is not sent anywhere; every other
        // target counts as asked from the start, so the coordinator's own
        // acknowledgement is judged against everything still to come.
        plan.targets.retain(|t| t.node != me);
        Ok(Self::asking(plan, needs, Some(me_primary)))
    }

    /// A round in which the coordinator's own copy does not count (it is
    /// not one of the replicas): every target is asked.
    fn without_coordinator(plan: Plan, needs: Needs) -> Result<Self, Shortfall> {
        precheck(&plan, needs)?;
        Ok(Self::asking(plan, needs, None))
    }

    /// A round asking `plan`'s targets, plus the coordinator's own copy
    /// when it counts (`Some(primary)`).
    fn asking(plan: Plan, needs: Needs, me_primary: Option<bool>) -> Self {
        let mut tracker = Tracker::new(needs);
        if let Some(primary) = me_primary {
            tracker.sent(primary);
        }
        for t in &plan.targets {
            tracker.sent(t.primary);
        }
        Self {
            plan,
            tracker,
            answered: false,
        }
    }

    /// The coordinator stored the write (durably or not). Returns the answer
    /// when that alone meets the quorum (`w=1`).
    pub fn stored_locally(
        &mut self,
        me_primary: bool,
        durable: bool,
    ) -> Option<Result<(), Shortfall>> {
        let progress = self.tracker.succeeded(me_primary, durable);
        self.answer(progress)
    }

    /// The replicas to send the write to now (once).
    pub fn start(&mut self) -> Vec<Target> {
        std::mem::take(&mut self.plan.targets)
    }

    /// A replica answered: `Ok(durable)` or a failure.
    pub fn reply(&mut self, target: &Target, result: Result<bool, ()>) -> Step<()> {
        let mut step = Step::none();
        let progress = match result {
            Ok(durable) => self.tracker.succeeded(target.primary, durable),
            Err(()) => {
                self.tracker.failed(target.primary);
                if let Some(sub) = self.plan.substitute(target) {
                    self.tracker.sent(sub.primary);
                    step.send = Some(sub);
                }
                self.tracker.progress()
            }
        };
        step.answer = self.answer(progress);
        step
    }

    /// Whether replies are still outstanding.
    pub fn pending(&self) -> bool {
        self.tracker.pending() > 0
    }

    /// The answer when every reply is in and none was given yet.
    pub fn finish(&mut self) -> Option<Result<(), Shortfall>> {
        if self.answered {
            return None;
        }
        self.answered = true;
        Some(match self.tracker.progress() {
            Progress::Done => Ok(()),
            _ => Err(self.tracker.shortfall()),
        })
    }

    fn answer(&mut self, progress: Progress) -> Option<Result<(), Shortfall>> {
        if self.answered {
            return None;
        }
        let answer = match progress {
            Progress::Pending => return None,
            Progress::Done => Ok(()),
            Progress::Failed(s) => Err(s),
        };
        self.answered = true;
        Some(answer)
    }
}

/// A write's replication while its partition moves: one [`WriteRound`]
/// per replica set (the replicas after the change, then those before it),
/// each needing its own quorum, over one set of requests. A node in both
/// sets with the same role gets the write once and its answer counts for
/// both. The write succeeds only when every set's quorum is met, so an
/// acknowledged write is on `w` replicas that serve reads now and on `w`
/// that will serve them after the handover.
#[derive(Debug, Clone)]
pub struct WriteRounds {
    rounds: Vec<WriteRound>,
    /// Per round, the requests it waits for.
    outstanding: Vec<Vec<Target>>,
    answered: bool,
    /// A planted bug (simulator tests only): only the first set decides.
    planted_first_set_only: bool,
}

impl WriteRounds {
    /// Rounds for `plans` (the first is the set after the change), with
    /// `me_primary[i]` saying whether the coordinator `me` is a primary of
    /// set `i`. Fails when one set cannot meet its `needs[i]`.
    pub fn new(
        plans: Vec<Plan>,
        needs: &[Needs],
        me: &str,
        me_primary: &[bool],
    ) -> Result<Self, Shortfall> {
        // The coordinator's copy counts in each set it is a replica of
        // (and, a replica of none, as a stand-in in the first, as ever).
        let counts = counted_sets(me_primary);
        let rounds = plans
            .into_iter()
            .zip(needs.iter().copied())
            .zip(me_primary)
            .zip(&counts)
            .map(|(((mut plan, needs), &primary), &counted)| {
                if counted {
                    return WriteRound::new(plan, needs, me, primary);
                }
                // The coordinator is not a replica of this set: its own copy
                // counts for nothing here (nor does it stand in for one).
                plan.targets.retain(|t| t.node != me);
                plan.spares.retain(|s| s != me);
                WriteRound::without_coordinator(plan, needs)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let outstanding = vec![Vec::new(); rounds.len()];
        Ok(Self {
            rounds,
            outstanding,
            answered: false,
            planted_first_set_only: false,
        })
    }

    /// Plants the bug of counting only the set after the change.
    pub fn plant_first_set_only(&mut self) {
        self.planted_first_set_only = true;
    }

    /// The coordinator stored the write.
    pub fn stored_locally(
        &mut self,
        me_primary: &[bool],
        durable: bool,
    ) -> Option<Result<(), Shortfall>> {
        let counts = counted_sets(me_primary);
        for ((round, &primary), counted) in self.rounds.iter_mut().zip(me_primary).zip(counts) {
            if counted {
                round.stored_locally(primary, durable);
            }
        }
        self.answer()
    }

    /// The requests to send now (once): each distinct target of any set.
    pub fn start(&mut self) -> Vec<Target> {
        let mut out: Vec<Target> = Vec::new();
        for (i, round) in self.rounds.iter_mut().enumerate() {
            for t in round.start() {
                if !out.iter().any(|o| same_request(o, &t)) {
                    out.push(t.clone());
                }
                self.outstanding[i].push(t);
            }
        }
        out
    }

    /// A replica answered a request (or failed). Returns the stand-ins to
    /// ask, and the answer once known.
    pub fn reply(
        &mut self,
        target: &Target,
        result: Result<bool, ()>,
    ) -> (Vec<Target>, Option<Result<(), Shortfall>>) {
        let mut send: Vec<Target> = Vec::new();
        for (i, round) in self.rounds.iter_mut().enumerate() {
            let waiting = &mut self.outstanding[i];
            let Some(at) = waiting.iter().position(|t| same_request(t, target)) else {
                continue;
            };
            let own = waiting.swap_remove(at);
            let step = round.reply(&own, result);
            if let Some(sub) = step.send {
                if !send.iter().any(|o| same_request(o, &sub)) {
                    send.push(sub.clone());
                }
                waiting.push(sub);
            }
        }
        (send, self.answer())
    }

    /// Whether replies are still outstanding.
    pub fn pending(&self) -> bool {
        self.rounds.iter().any(WriteRound::pending)
    }

    /// The answer when every reply is in and none was given yet.
    pub fn finish(&mut self) -> Option<Result<(), Shortfall>> {
        if self.answered {
            return None;
        }
        self.answered = true;
        let deciding = if self.planted_first_set_only {
            1
        } else {
            self.rounds.len()
        };
        for round in self.rounds.iter().take(deciding) {
            if round.tracker.progress() != Progress::Done {
                return Some(Err(round.tracker.shortfall()));
            }
        }
        Some(Ok(()))
    }

    fn answer(&mut self) -> Option<Result<(), Shortfall>> {
        if self.answered {
            return None;
        }
        let deciding = if self.planted_first_set_only {
            1
        } else {
            self.rounds.len()
        };
        let mut done = true;
        for round in self.rounds.iter().take(deciding) {
            match round.tracker.progress() {
                Progress::Done => {}
                Progress::Pending => done = false,
                Progress::Failed(s) => {
                    self.answered = true;
                    return Some(Err(s));
                }
            }
        }
        if done {
            self.answered = true;
            return Some(Ok(()));
        }
        None
    }
}

/// In which sets the coordinator's own copy counts.
fn counted_sets(me_primary: &[bool]) -> Vec<bool> {
    let anywhere = me_primary.iter().any(|p| *p);
    me_primary
        .iter()
        .enumerate()
        .map(|(i, &p)| p || (i == 0 && !anywhere))
        .collect()
}

/// Whether two targets are the same request (a node holding the write for
/// itself, or for the same primary).
fn same_request(a: &Target, b: &Target) -> bool {
    a.node == b.node && a.hint_for == b.hint_for
}

/// A read's round over the replicas.
#[derive(Debug, Clone)]
pub struct ReadRound {
    plan: Plan,
    tracker: Tracker,
    mode: ConflictMode,
    replies: Vec<(Target, Option<Object>)>,
    answered: bool,
}

impl ReadRound {
    /// A round for `plan`; fails when it cannot meet `needs`.
    pub fn new(plan: Plan, needs: Needs, mode: ConflictMode) -> Result<Self, Shortfall> {
        precheck(&plan, needs)?;
        Ok(Self {
            plan,
            tracker: Tracker::new(needs),
            mode,
            replies: Vec::new(),
            answered: false,
        })
    }

    /// The replicas to ask now.
    pub fn start(&mut self) -> Vec<Target> {
        let targets = self.plan.targets.clone();
        for t in &targets {
            self.tracker.sent(t.primary);
        }
        targets
    }

    /// A replica answered with its object (or nothing), or failed.
    pub fn reply(
        &mut self,
        target: Target,
        result: Result<Option<Object>, ()>,
    ) -> Step<Option<Object>> {
        let mut step = Step::none();
        let progress = match result {
            Ok(object) => {
                let primary = target.primary;
                self.replies.push((target, object));
                self.tracker.succeeded(primary, false)
            }
            Err(()) => {
                self.tracker.failed(target.primary);
                if let Some(sub) = self.plan.substitute(&target) {
                    self.tracker.sent(sub.primary);
                    step.send = Some(sub);
                }
                self.tracker.progress()
            }
        };
        if !self.answered {
            match progress {
                Progress::Pending => {}
                Progress::Done => {
                    self.answered = true;
                    step.answer = Some(Ok(self.merged()));
                }
                Progress::Failed(s) => {
                    self.answered = true;
                    step.answer = Some(Err(s));
                }
            }
        }
        step
    }

    /// Whether replies are still outstanding.
    pub fn pending(&self) -> bool {
        self.tracker.pending() > 0
    }

    /// The merge of every reply so far.
    pub fn merged(&self) -> Option<Object> {
        merge_all(self.replies.iter().map(|(_, o)| o), self.mode)
    }

    /// Once every replica answered: the merged object and the replicas that
    /// lack part of it, to be sent the merge (read repair).
    pub fn repairs(self) -> Option<(Object, Vec<Target>)> {
        let merged = self.merged()?;
        let stale = self
            .replies
            .into_iter()
            .filter(|(_, reply)| {
                reply
                    .as_ref()
                    .is_none_or(|o| !o.dominates(&merged, self.mode))
            })
            .map(|(t, _)| t)
            .collect();
        Some((merged, stale))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quorum::plan;
    use crate::{Actor, Content, VersionVector};

    #[test]
    fn a_write_while_its_partition_moves_needs_w_from_both_sets() {
        let t = |n: &str| Target {
            node: n.into(),
            primary: true,
            hint_for: None,
        };
        let up = |_: &str| true;
        // "d" coordinates: a replica after the move, not one before it.
        let now = plan(&["a", "b", "d"], 3, up);
        let before = plan(&["a", "b", "c"], 3, up);
        let mut r = WriteRounds::new(vec![now, before], &[needs(2, 0, 0); 2], "d", &[true, false])
            .expect("round");
        assert_eq!(r.stored_locally(&[true, false], false), None);
        let sent: Vec<String> = r.start().into_iter().map(|t| t.node).collect();
        assert_eq!(sent, ["a", "b", "c"], "one request per node");
        // "d" and "a" make the set after; the set before has only "a".
        assert_eq!(r.reply(&t("a"), Ok(false)).1, None);
        assert_eq!(r.reply(&t("c"), Ok(false)).1, Some(Ok(())));
        // Every set failing its quorum fails the write.
        let now = plan(&["a", "b", "d"], 3, up);
        let before = plan(&["a", "b", "c"], 3, up);
        let mut r = WriteRounds::new(vec![now, before], &[needs(2, 0, 0); 2], "d", &[true, false])
            .expect("round");
        r.stored_locally(&[true, false], false);
        r.start();
        assert_eq!(r.reply(&t("b"), Ok(false)).1, None);
        assert_eq!(r.reply(&t("a"), Err(())).1, None);
        assert!(matches!(r.reply(&t("c"), Err(())).1, Some(Err(_))));
    }

    fn needs(total: u8, durable: u8, primary: u8) -> Needs {
        Needs {
            total,
            durable,
            primary,
        }
    }

    fn written(node: &str, value: &[u8]) -> Object {
        let mut o = Object::new();
        o.update(
            &VersionVector::new(),
            &Actor::new(node, 1),
            Content::value(value.to_vec(), "text/plain", 1),
            ConflictMode::Siblings,
        )
        .expect("update");
        o
    }

    #[test]
    fn write_answers_once_after_w_and_substitutes_failures() {
        let p = plan(&["a", "b", "c", "d"], 3, |_| true);
        let mut round = WriteRound::new(p, needs(2, 0, 0), "a", true).expect("plan");
        assert_eq!(round.stored_locally(true, false), None);
        let targets = round.start();
        let nodes: Vec<&str> = targets.iter().map(|t| t.node.as_str()).collect();
        assert_eq!(nodes, ["b", "c"], "the coordinator does not send to itself");
        let step = round.reply(&targets[0], Err(()));
        let sub = step.send.expect("a stand-in for b");
        assert_eq!(
            (sub.node.as_str(), sub.hint_for.as_deref()),
            ("d", Some("b"))
        );
        assert_eq!(step.answer, None);
        assert_eq!(round.reply(&sub, Ok(false)).answer, Some(Ok(())));
        // Later replies change nothing the client sees.
        assert_eq!(round.reply(&targets[1], Ok(false)).answer, None);
        assert!(!round.pending());
        assert_eq!(round.finish(), None);
    }

    #[test]
    fn a_coordinator_outside_the_preference_list_counts_once() {
        // The coordinator "d" is a spare of this key (rings briefly differ).
        let p = plan(&["a", "b", "c", "d"], 3, |_| true);
        let mut round = WriteRound::new(p, needs(2, 0, 0), "d", false).expect("plan");
        assert_eq!(round.stored_locally(false, false), None);
        let targets = round.start();
        let nodes: Vec<&str> = targets.iter().map(|t| t.node.as_str()).collect();
        assert_eq!(nodes, ["a", "b", "c"]);
        // "a" fails: "d" must not stand in for it, it already holds the write.
        let step = round.reply(&targets[0], Err(()));
        assert_eq!(step.send, None);
        assert_eq!(round.reply(&targets[1], Err(())).answer, None);
        assert!(matches!(
            round.reply(&targets[2], Err(())).answer,
            Some(Err(_))
        ));
    }

    #[test]
    fn w1_is_met_by_the_coordinator_alone() {
        let p = plan(&["a", "b", "c"], 3, |_| true);
        let mut round = WriteRound::new(p, needs(1, 0, 0), "a", true).expect("plan");
        assert_eq!(round.stored_locally(true, false), Some(Ok(())));
        assert_eq!(
            round.start().len(),
            2,
            "replication goes on behind the answer"
        );
    }

    #[test]
    fn write_fails_early_when_the_plan_is_too_small() {
        let p = plan(&["a", "b", "c"], 3, |id| id == "a");
        let err =
            WriteRound::new(p, needs(2, 0, 0), "a", true).expect_err("one node cannot ack w=2");
        assert_eq!(err.asked, 0);
    }

    #[test]
    fn read_answers_with_the_merge_and_names_stale_replicas() {
        let p = plan(&["a", "b", "c"], 3, |_| true);
        let mut round = ReadRound::new(p, needs(2, 0, 0), ConflictMode::Siblings).expect("plan");
        let t = round.start();
        let x = written("a", b"x");
        assert_eq!(round.reply(t[0].clone(), Ok(Some(x.clone()))).answer, None);
        let answer = round.reply(t[1].clone(), Ok(None)).answer;
        assert_eq!(answer, Some(Ok(Some(x.clone()))));
        assert_eq!(round.reply(t[2].clone(), Err(())).answer, None);
        assert!(!round.pending());
        let (merged, stale) = round.repairs().expect("something to repair");
        assert_eq!(merged, x);
        let stale: Vec<&str> = stale.iter().map(|t| t.node.as_str()).collect();
        assert_eq!(
            stale,
            ["b"],
            "failed replicas are not repaired, empty ones are"
        );
    }
}
