//! The request path: any node takes any request and coordinates it over
//! the key's replicas.
//!
//! - **Writes** are coordinated by a node in the key's preference list; a
//!   node outside it forwards the write to the first one inside that may
//!   coordinate, then the next. The coordinator versions the write with its
//!   own actor (a storage effect), sends the new object to the other
//!   replicas and answers after `w` acknowledgements, `dw` durable and `pw`
//!   from primaries; replication goes on after the answer.
//! - **Reads** ask the replicas, answer with the merge of the first `r`
//!   replies (`pr` from primaries), then wait for the rest and send the
//!   merge to every replica that lacked part of it (read repair).
//! - **Deletes** are writes of a tombstone. A delete without a context
//!   first reads at the read quorum and deletes what that read saw, so a
//!   coordinator that lacks the key still deletes it everywhere.

use std::collections::{BTreeSet, VecDeque};

use super::{Call, CallFailure, ClientId, Event, Failure, InboundId, Node, Now, Planted, Wait};
use super::{StoreFailure, StoreOp, Stored};
use crate::proto::{Coordinate, Operation, Refusal, ReplicaGet, ReplicaPut, Reply};
use crate::quorum::{self, Needs, Plan, Target};
use crate::round::{ReadRound, WriteRounds};
use crate::write::Change;
use crate::{Actor, BucketName, BucketProps, ConflictMode, Content, ErrorCode, Key, Object};
use crate::{QuorumOverrides, VersionVector};

/// Who waits for a round's answer.
#[derive(Debug)]
pub(super) enum ReplyTo {
    /// A client of this node.
    Client(ClientId),
    /// A peer that forwarded a write here.
    Peer(InboundId),
    /// A delete without context, waiting for its read.
    Delete(Box<(WriteJob, Self)>),
}

/// A write to coordinate.
#[derive(Debug, Clone)]
pub(super) struct WriteJob {
    pub(super) bucket: BucketName,
    pub(super) key: Key,
    pub(super) context: VersionVector,
    pub(super) operation: Operation,
    pub(super) quorum: QuorumOverrides,
    /// Forwarded here by a peer: never forwarded again.
    pub(super) forwarded: bool,
    /// A delete whose context is settled: the node the client asked read
    /// the key and took what it saw (even nothing) as the context, or a
    /// peer forwarded it (and had done so). A blind delete is resolved
    /// once, where it enters: a forward that arrives late or twice, or
    /// goes on to the next replica, deletes what the client could have
    /// seen, never a write acknowledged after the delete was.
    pub(super) read_first: bool,
}

/// A read under way.
#[derive(Debug)]
pub(super) struct ReadState {
    round: ReadRound,
    bucket: BucketName,
    key: Key,
    mode: ConflictMode,
    to: Option<ReplyTo>,
}

/// A write under way.
#[derive(Debug)]
pub(super) struct WriteState {
    round: WriteRounds,
    bucket: BucketName,
    key: Key,
    mode: ConflictMode,
    durable: bool,
    /// Per replica set (after the change, and before it while the
    /// partition moves): whether this node is one of its primaries.
    me_primary: Vec<bool>,
    /// Once stored locally.
    object: Option<Object>,
    to: Option<ReplyTo>,
    /// The key's primaries, and those that have the write (acknowledged
    /// it, or a stand-in holds it for them): the coordinator keeps a hint
    /// for each of the others.
    primaries: Vec<String>,
    covered: BTreeSet<String>,
    /// The layout version it was routed by: until it ends, this node does
    /// not acknowledge a later one (see [`crate::layout::Layout::acked`]).
    pub(super) layout: u64,
}

/// Where a key's requests go.
pub(super) struct Route {
    props: BucketProps,
    /// The key's nodes by rank: its replicas, then fallbacks.
    order: Vec<String>,
    /// While its partition moves: the replicas before the change first.
    before: Option<Vec<String>>,
    /// How many of those hold the key's bucket (its `n_val` before the
    /// change).
    before_n: u8,
}

/// A write being forwarded to the key's replicas in turn.
#[derive(Debug)]
pub(super) struct Forward {
    to: ReplyTo,
    job: WriteJob,
    /// Replicas not tried yet, in order.
    rest: VecDeque<String>,
    /// A replica that got the write and did not answer: it may have taken it.
    maybe_taken: Option<String>,
    /// The last refusal from a replica that did nothing (busy, not joined).
    refused: Option<(ErrorCode, String)>,
    /// Why the last one failed.
    last: String,
}

impl Node {
    /// What coordinating a request starts from: the bucket's properties
    /// with the request's overrides, capped to the ring, and the key's
    /// ranked nodes. Only a node that joined may coordinate: with a partial
    /// ring it would pick the wrong replicas.
    fn route(&self, bucket: &BucketName, key: &Key, q: &QuorumOverrides) -> Result<Route, Failure> {
        if !self.has_joined() {
            return Err(Failure::NotJoined);
        }
        let members = self.ring.members().len();
        // Options that do not fit the bucket are invalid whatever the
        // cluster; options that fit it but not the cluster are a shortfall.
        let props = self
            .bucket_props(bucket)
            .with_overrides(q)
            .map_err(|e| Failure::InvalidQuorum(e.to_string()))?;
        if let Some(short) = quorum::beyond_cluster(q, members) {
            return Err(Failure::Unavailable(short));
        }
        let p = self
            .ring
            .partition_of(bucket.as_str().as_bytes(), key.as_bytes());
        let order: Vec<String> = self.ring.order(p).map(str::to_owned).collect();
        let props = props.for_ring(members);
        // While the partition moves, the replicas before the change come
        // first in a second order (they hold what was written before), the
        // others after them as fallbacks; the bucket's keys are on as many
        // of them as its n_val before the change.
        let before_n = self
            .membership
            .layout()
            .and_then(|l| l.moving_buckets.as_ref())
            .map_or(props.n_val, |t| {
                t.props(bucket.as_str()).for_ring(members).n_val
            });
        let before = self.ring.moving_from(p).and_then(|before| {
            let mut was: Vec<&str> = before.iter().take(usize::from(before_n)).copied().collect();
            let mut now: Vec<&str> = order
                .iter()
                .take(usize::from(props.n_val))
                .map(String::as_str)
                .collect();
            was.sort_unstable();
            now.sort_unstable();
            if was == now {
                return None;
            }
            let mut o: Vec<String> = before.into_iter().map(str::to_owned).collect();
            let rest: Vec<String> = order.iter().filter(|id| !o.contains(id)).cloned().collect();
            o.extend(rest);
            Some(o)
        });
        Ok(Route {
            props,
            order,
            before,
            before_n,
        })
    }

    fn plan(&self, order: &[String], n: u8) -> Plan {
        let refs: Vec<&str> = order.iter().map(String::as_str).collect();
        let mut plan = quorum::plan(&refs, usize::from(n), |id| self.is_reachable(id));
        if self.settings.planted == Some(Planted::FallbackCountedAsPrimary) {
            plan.planted_fallbacks_count_as_primaries = true;
            for t in &mut plan.targets {
                t.primary = true;
            }
        }
        plan
    }

    /// Answers whoever waits for a request.
    pub(super) fn answer(
        &mut self,
        to: ReplyTo,
        result: Result<Option<Object>, Failure>,
        now: Now,
    ) {
        match to {
            ReplyTo::Client(client) => self.effect(super::Effect::Answer { client, result }),
            ReplyTo::Peer(inbound) => {
                let answer = result.map_err(Refusal::from);
                self.respond(inbound, Reply::answer::<Coordinate>(answer));
            }
            ReplyTo::Delete(waiting) => {
                let (mut job, to) = *waiting;
                match result {
                    Ok(seen) => {
                        job.context = seen.map(|o| o.clock().clone()).unwrap_or_default();
                        job.read_first = true;
                        self.write(job, to, now);
                    }
                    Err(f) => self.answer(to, Err(f), now),
                }
            }
        }
    }

    // ---- reads ----

    /// Reads a key (tombstones included: the driver decides what a deleted
    /// object looks like to its client).
    pub(super) fn read(
        &mut self,
        bucket: BucketName,
        key: Key,
        q: QuorumOverrides,
        to: ReplyTo,
        now: Now,
    ) {
        let Route {
            props,
            order,
            before,
            before_n,
        } = match self.route(&bucket, &key, &q) {
            Ok(r) => r,
            Err(f) => return self.answer(to, Err(f), now),
        };
        // Reads stay with the replicas before a move until the handover.
        let (order, n) = match before {
            Some(before) => (before, before_n),
            None => (order, props.n_val),
        };
        let needs = Needs {
            total: props.r.min(n),
            durable: 0,
            primary: props.pr.min(n),
        };
        let plan = self.plan(&order, n);
        let mut round = match ReadRound::new(plan, needs, props.conflict_mode) {
            Ok(r) => r,
            Err(s) => return self.answer(to, Err(Failure::Unavailable(s)), now),
        };
        let id = self.next_id();
        let targets = round.start();
        self.reads.insert(
            id,
            ReadState {
                round,
                bucket,
                key,
                mode: props.conflict_mode,
                to: Some(to),
            },
        );
        for t in targets {
            self.send_read(id, t, now);
        }
    }

    fn send_read(&mut self, round: u64, target: Target, now: Now) {
        let Some(state) = self.reads.get(&round) else {
            return;
        };
        let (bucket, key, mode) = (state.bucket.clone(), state.key.clone(), state.mode);
        if target.node == self.me() {
            let hint_for = target.hint_for.clone();
            let op = StoreOp::Read {
                bucket,
                key,
                hint_for,
                mode,
            };
            return self.store(op, Wait::ReadLocal { round, target });
        }
        let node = target.node.clone();
        let request = ReplicaGet {
            bucket,
            key,
            hint_for: target.hint_for.clone(),
        }
        .into();
        let timeout = self.settings.replica_timeout_ms;
        self.send_to(&node, request, timeout, Call::Read { round, target }, now);
    }

    /// A replica answered a read (or failed).
    pub(super) fn read_reply(
        &mut self,
        round: u64,
        target: Target,
        result: Result<Option<Object>, ()>,
        now: Now,
    ) {
        let Some(state) = self.reads.get_mut(&round) else {
            return;
        };
        let step = state.round.reply(target, result);
        let answer = step
            .answer
            .and_then(|a| Some((state.to.take()?, a.map_err(Failure::Unavailable))));
        let done = !state.round.pending() && step.send.is_none();
        if let Some((to, a)) = answer {
            self.answer(to, a, now);
        }
        if let Some(sub) = step.send {
            self.send_read(round, sub, now);
        }
        if done {
            if let Some(state) = self.reads.remove(&round) {
                self.read_repair(state, now);
            }
        }
    }

    /// Every replica answered or failed: the stale ones get the merge.
    fn read_repair(&mut self, state: ReadState, now: Now) {
        let Some((merged, stale)) = state.round.repairs() else {
            return;
        };
        for target in stale {
            self.event(Event::ReadRepair {
                node: target.node.clone(),
            });
            if target.node == self.me() {
                let op = self.hint_or_merge(
                    &state.bucket,
                    &state.key,
                    merged.clone(),
                    state.mode,
                    false,
                    target.hint_for.clone(),
                    now,
                );
                self.store(op, Wait::Repair);
                continue;
            }
            let request = ReplicaPut {
                bucket: state.bucket.clone(),
                key: state.key.clone(),
                object: merged.clone(),
                mode: state.mode,
                durable: false,
                hint_for: target.hint_for.clone(),
            }
            .into();
            let timeout = self.settings.replica_timeout_ms;
            self.send_to(&target.node, request, timeout, Call::Repair, now);
        }
    }

    // ---- writes ----

    /// Coordinates a write, or forwards it when this node is not in the
    /// key's preference list.
    pub(super) fn write(&mut self, job: WriteJob, to: ReplyTo, now: Now) {
        let Route {
            props,
            order,
            before,
            before_n,
        } = match self.route(&job.bucket, &job.key, &job.quorum) {
            Ok(r) => r,
            Err(f) => return self.answer(to, Err(f), now),
        };
        // Each replica set with its n: after the change, and before it.
        let sets: Vec<(Vec<String>, u8)> = std::iter::once((order, props.n_val))
            .chain(before.map(|b| (b, before_n)))
            .collect();
        let primaries_of = |(o, n): &(Vec<String>, u8)| o[..usize::from(*n).min(o.len())].to_vec();
        let me_primary: Vec<bool> = sets
            .iter()
            .map(|set| primaries_of(set).iter().any(|id| id == self.me()))
            .collect();
        let mut primaries: Vec<String> = Vec::new();
        for set in &sets {
            for id in primaries_of(set) {
                if !primaries.contains(&id) {
                    primaries.push(id);
                }
            }
        }
        let primary_anywhere = me_primary.iter().any(|p| *p);
        // The entry checked the operation against this node's layout too;
        // a forwarder with another layout could not.
        let fits = match (&job.operation, props.datatype) {
            (Operation::Crdt(op), t) => {
                crate::crdt::check_op(t, &job.bucket, op, !job.context.is_empty())
            }
            (Operation::Put(_) | Operation::Delete, Some(datatype)) => {
                Err(crate::crdt::CrdtError::NotPlain {
                    bucket: job.bucket.to_string(),
                    datatype,
                })
            }
            (Operation::Put(_) | Operation::Delete, None) => Ok(()),
        };
        if let Err(e) = fits {
            return self.answer(to, Err(Failure::Datatype(e)), now);
        }
        if matches!(job.operation, Operation::Delete) && job.context.is_empty() && !job.read_first {
            let (bucket, key, q) = (job.bucket.clone(), job.key.clone(), job.quorum);
            return self.read(bucket, key, q, ReplyTo::Delete(Box::new((job, to))), now);
        }
        if job.forwarded && !primary_anywhere {
            // The forwarder's layout names this node, this node's does not
            // (one of the two is behind): a copy here would be on no
            // replica, so refuse before any work and let it try the next.
            let why = format!(
                "not a replica of this key in layout version {}",
                self.membership.layout().map_or(0, |l| l.version)
            );
            return self.answer(to, Err(Failure::NotAReplica(why)), now);
        }
        if !job.forwarded && !primary_anywhere {
            let rest = primaries.iter().cloned().collect();
            let fwd = Forward {
                to,
                job,
                rest,
                maybe_taken: None,
                refused: None,
                last: "no reachable node in the preference list".into(),
            };
            return self.forward_next(fwd, now);
        }
        // A set with fewer replicas (a bucket's n_val before it grew)
        // needs no more acknowledgements than it has replicas.
        let needs: Vec<Needs> = sets
            .iter()
            .map(|(_, n)| Needs {
                total: props.w.min(*n),
                durable: props.dw.min(*n),
                primary: props.pw.min(*n),
            })
            .collect();
        let plans = sets.iter().map(|(o, n)| self.plan(o, *n)).collect();
        let me = self.me().to_owned();
        let mut round = match WriteRounds::new(plans, &needs, &me, &me_primary) {
            Ok(r) => r,
            Err(s) => return self.answer(to, Err(Failure::Unavailable(s)), now),
        };
        if self.settings.planted == Some(Planted::WriteCountsOnlyNewReplicas) {
            round.plant_first_set_only();
        }
        let durable = props.dw > 0;
        let mut mode = props.conflict_mode;
        let mut actor = None;
        match self.settings.planted {
            Some(Planted::CoordinatorDropsSiblings) => mode = ConflictMode::Lww,
            Some(Planted::ClockAsOnlyActor) => actor = Some(Actor::new("clock", 1)),
            _ => {}
        }
        let (context, change) = match job.operation {
            Operation::Put(mut content) => {
                content.timestamp_ms = now.wall_ms;
                (job.context, Change::Put(content))
            }
            Operation::Delete => (job.context, Change::Put(Content::tombstone(now.wall_ms))),
            Operation::Crdt(op) => {
                let datatype = props.datatype.unwrap_or_else(|| op.datatype());
                let change = Change::Crdt {
                    op,
                    datatype,
                    context: job.context,
                    timestamp_ms: now.wall_ms,
                };
                (VersionVector::new(), change)
            }
        };
        let id = self.next_id();
        self.writes.insert(
            id,
            WriteState {
                round,
                bucket: job.bucket.clone(),
                key: job.key.clone(),
                mode: props.conflict_mode,
                durable,
                me_primary,
                object: None,
                to: Some(to),
                primaries,
                covered: BTreeSet::new(),
                layout: self.membership.layout().map_or(0, |l| l.version),
            },
        );
        let op = StoreOp::Coordinate {
            bucket: job.bucket,
            key: job.key,
            context,
            change,
            mode,
            durable,
            actor,
        };
        self.store(op, Wait::Coordinate { round: id });
    }

    /// The coordinator's own store of the write finished: replicate it.
    pub(super) fn coordinated(
        &mut self,
        round: u64,
        result: Result<Stored, StoreFailure>,
        now: Now,
    ) {
        let object = match result {
            Ok(Stored::Written(o)) => o,
            other => {
                let failure = match other {
                    Err(f) => f,
                    Ok(o) => StoreFailure {
                        code: ErrorCode::Internal,
                        message: format!("storage answered {o:?}"),
                    },
                };
                if let Some(to) = self.writes.remove(&round).and_then(|s| s.to) {
                    self.answer(to, Err(Failure::Store(failure)), now);
                }
                return;
            }
        };
        let Some(state) = self.writes.get_mut(&round) else {
            return;
        };
        state.object = Some(object.clone());
        if state.me_primary.iter().any(|p| *p) {
            state.covered.insert(self.membership.me().to_owned());
        }
        let early = state.round.stored_locally(&state.me_primary, state.durable);
        let targets = state.round.start();
        // With w=1 (and dw, pw met locally) the answer is known now:
        // replication goes on behind it.
        if let Some(answer) = early {
            if let Some(to) = state.to.take() {
                let result = answer.map(|()| Some(object)).map_err(Failure::Unavailable);
                self.answer(to, result, now);
            }
        }
        for t in targets {
            self.send_write(round, t, now);
        }
        self.write_done(round, now);
    }

    fn send_write(&mut self, round: u64, target: Target, now: Now) {
        let Some(state) = self.writes.get(&round) else {
            return;
        };
        let Some(object) = state.object.clone() else {
            return;
        };
        let request = ReplicaPut {
            bucket: state.bucket.clone(),
            key: state.key.clone(),
            object,
            mode: state.mode,
            durable: state.durable,
            hint_for: target.hint_for.clone(),
        }
        .into();
        let node = target.node.clone();
        let timeout = self.settings.replica_timeout_ms;
        self.send_to(&node, request, timeout, Call::Write { round, target }, now);
    }

    /// A replica acknowledged a write (`Ok(durable)`) or failed.
    pub(super) fn write_reply(
        &mut self,
        round: u64,
        target: Target,
        result: Result<bool, ()>,
        now: Now,
    ) {
        let Some(state) = self.writes.get_mut(&round) else {
            return;
        };
        if result.is_ok() {
            let holds_for = target
                .hint_for
                .clone()
                .unwrap_or_else(|| target.node.clone());
            state.covered.insert(holds_for);
        }
        let (subs, answer) = state.round.reply(&target, result);
        let answer = answer.and_then(|a| {
            let object = state.object.clone();
            Some((
                state.to.take()?,
                a.map(|()| object).map_err(Failure::Unavailable),
            ))
        });
        if let Some((to, a)) = answer {
            self.answer(to, a, now);
        }
        for sub in subs {
            self.send_write(round, sub, now);
        }
        self.write_done(round, now);
    }

    /// Ends a write round once no reply is outstanding.
    fn write_done(&mut self, round: u64, now: Now) {
        let Some(state) = self.writes.get_mut(&round) else {
            return;
        };
        if state.round.pending() {
            return;
        }
        let finish = state.round.finish();
        let object = state.object.clone();
        if let Some(state) = self.writes.remove(&round) {
            if let Some(object) = &object {
                self.hint_missed(&state, object, now);
            }
            if let (Some(answer), Some(to)) = (finish, state.to) {
                let result = answer.map(|()| object).map_err(Failure::Unavailable);
                self.answer(to, result, now);
            }
        }
    }

    /// Keeps a durable hint, on this node, for each primary of a finished
    /// write that has neither the write nor a stand-in holding it: one
    /// that was down with no fallback to take its place (three nodes with
    /// n = 3), or that failed with no spare left. Hinted handoff delivers
    /// it when the primary is back, as Cassandra's coordinator hints do.
    fn hint_missed(&mut self, state: &WriteState, object: &Object, now: Now) {
        let me = self.me().to_owned();
        let missed: Vec<String> = state
            .primaries
            .iter()
            .filter(|p| **p != me && !state.covered.contains(*p))
            .cloned()
            .collect();
        for owner in missed {
            self.event(Event::MissedWriteHinted {
                owner: owner.clone(),
            });
            let op = StoreOp::Hint {
                owner,
                bucket: state.bucket.clone(),
                key: state.key.clone(),
                object: object.clone(),
                mode: state.mode,
                durable: true,
                created_ms: now.wall_ms,
            };
            self.store(op, Wait::MissedHint);
        }
    }

    // ---- forwarding ----

    /// Sends a forwarded write to the next replica that may coordinate.
    fn forward_next(&mut self, mut fwd: Forward, now: Now) {
        // Only to members that may coordinate: a joining node would refuse.
        while let Some(node) = fwd.rest.pop_front() {
            if !self.can_coordinate(&node) {
                continue;
            }
            let job = &fwd.job;
            let request = Coordinate {
                bucket: job.bucket.clone(),
                key: job.key.clone(),
                context: job.context.clone(),
                operation: job.operation.clone(),
                quorum: job.quorum,
            }
            .into();
            let timeout = self.settings.request_timeout_ms;
            return self.send_to(&node, request, timeout, Call::Forward(fwd), now);
        }
        // Every replica that answered refused before doing anything, and
        // none may have taken it: a definite refusal, theirs.
        let failure = match (fwd.maybe_taken.is_none(), fwd.refused) {
            (true, Some((code, message))) => Failure::Remote { code, message },
            _ => Failure::NoCoordinator(fwd.last),
        };
        self.answer(fwd.to, Err(failure), now);
    }

    /// The replica a write was forwarded to answered, or did not.
    pub(super) fn forward_answered(
        &mut self,
        mut fwd: Forward,
        node: String,
        result: Result<Result<Option<Object>, Refusal>, CallFailure>,
        now: Now,
    ) {
        match result {
            Ok(Ok(o)) => {
                self.event(Event::Forwarded);
                self.answer(fwd.to, Ok(o), now);
            }
            // A coordinator that got the request and did not answer may
            // have taken the write: a later refusal is no definite outcome.
            // Refused before doing anything (too busy, not in the cluster
            // yet): the next replica may take it.
            Ok(Err(Refusal::Error { code, message }))
                if matches!(code, ErrorCode::Overloaded | ErrorCode::QuorumUnavailable) =>
            {
                fwd.last = format!("{node}: {code}: {message}");
                fwd.refused = Some((code, message));
                self.forward_next(fwd, now);
            }
            Ok(Err(Refusal::Error { code, message })) => {
                let failure = match fwd.maybe_taken {
                    Some(earlier) => Failure::MaybeTaken(format!(
                        "{node} refused it ({code}: {message}), but {earlier} may have taken it"
                    )),
                    None => Failure::Remote { code, message },
                };
                self.answer(fwd.to, Err(failure), now);
            }
            Ok(Err(Refusal::Unavailable(s))) => {
                self.answer(fwd.to, Err(Failure::Unavailable(s)), now)
            }
            // Never sent: nothing taken.
            Err(CallFailure::NotSent(e)) => {
                fwd.last = format!("{node}: {e}");
                self.forward_next(fwd, now);
            }
            // A data-type operation is not idempotent: one that may have
            // been applied is not sent to another coordinator.
            Err(CallFailure::Lost(e)) if matches!(fwd.job.operation, Operation::Crdt(_)) => {
                let why = format!("{node} may have applied it: {e}");
                self.answer(fwd.to, Err(Failure::MaybeTaken(why)), now);
            }
            Err(CallFailure::Lost(e)) => {
                fwd.last = format!("{node}: {e}");
                fwd.maybe_taken.get_or_insert(node);
                self.forward_next(fwd, now);
            }
        }
    }

    /// The storage operation for a replica's object: kept as a hint when
    /// this node stands in for another, merged into its own copy otherwise.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn hint_or_merge(
        &self,
        bucket: &BucketName,
        key: &Key,
        object: Object,
        mode: ConflictMode,
        durable: bool,
        hint_for: Option<String>,
        now: Now,
    ) -> StoreOp {
        match hint_for {
            Some(owner) if owner != self.me() => StoreOp::Hint {
                owner,
                bucket: bucket.clone(),
                key: key.clone(),
                object,
                mode,
                durable,
                created_ms: now.wall_ms,
            },
            _ => StoreOp::Merge {
                bucket: bucket.clone(),
                key: key.clone(),
                object,
                mode,
                durable,
            },
        }
    }
}
