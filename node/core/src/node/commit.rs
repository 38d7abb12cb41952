//! Layout changes: staging a change, and committing the staged changes as
//! the next layout version.
//!
//! Staging edits this node's layout and spreads by gossip. A commit names
//! the version it was staged against; this node proposes the next version
//! to the voters of the current one (the nodes holding data) and a
//! majority decides it ([`crate::decide`], single-decree Paxos), so of two
//! concurrent commits exactly one becomes the next version and the other is
//! told so ([`CommitFailure::Conflict`]). A voter saves its vote, with
//! fsync, before its answer leaves it; this node counts its own vote only
//! once it is saved too.
//!
//! A proposer outbid by another (two operators at once) tries again with a
//! higher round after a short backoff, a bounded number of times: the
//! retry learns the value the other one got chosen, if any.

use std::collections::BTreeSet;

use super::{Call, ClientId, Effect, InboundId, Node, Now, Wait};
use crate::decide::{Ballot, Message as Vote, Outcome, Proposer};
use crate::layout::{Change, Layout};
use crate::membership::LayoutChangeError;
use crate::proto::{Decide, Refusal, Reply};

/// Attempts before a contended commit gives up.
const MAX_ATTEMPTS: u32 = 8;
/// Backoff unit between attempts (ms); each attempt waits longer, with a
/// per-node jitter so two dueling proposers stop colliding.
const BACKOFF_MS: u64 = 40;
/// How long a voter may take to answer (ms).
const VOTE_TIMEOUT_MS: u64 = 2_000;

/// Why a commit did not make the next layout version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitFailure {
    /// The layout changed since the plan was made.
    #[error("the plan was made against layout version {against}, the cluster is at version {current}: look at the new plan and commit again")]
    Stale {
        /// The version named.
        against: u64,
        /// This node's version.
        current: u64,
    },
    /// Another commit became version `version` first.
    #[error("another change became layout version {version} first: look at the new plan (or the bucket's properties) and try again")]
    Conflict {
        /// The version decided.
        version: u64,
    },
    /// Nothing to commit, or a change that cannot be made.
    #[error(transparent)]
    Refused(#[from] LayoutChangeError),
    /// Too few voters answered.
    #[error("the commit was not decided: {answered} of {voters} voters answered, a majority must; nothing changed unless a later plan shows version {version}")]
    Unavailable {
        /// Voters that answered.
        answered: usize,
        /// Voters asked.
        voters: usize,
        /// The version that was being decided.
        version: u64,
    },
    /// Outbid again and again by other commits.
    #[error("other commits kept outbidding this one; look at the plan and retry")]
    Contended,
    /// Bucket properties that cannot be set so.
    #[error(transparent)]
    Bucket(#[from] crate::layout::BucketChangeError),
    /// An access policy change that cannot be made.
    #[error(transparent)]
    Access(#[from] crate::access::PolicyError),
}

impl CommitFailure {
    /// The stable code for this failure.
    pub fn code(&self) -> crate::ErrorCode {
        use crate::ErrorCode;
        match self {
            Self::Stale { .. } | Self::Conflict { .. } => ErrorCode::LayoutConflict,
            Self::Refused(LayoutChangeError::NotJoined) | Self::Unavailable { .. } => {
                ErrorCode::QuorumUnavailable
            }
            Self::Refused(LayoutChangeError::Stage(_)) => ErrorCode::InvalidParameter,
            Self::Contended => ErrorCode::Timeout,
            Self::Bucket(crate::layout::BucketChangeError::Invalid(_)) => {
                ErrorCode::InvalidParameter
            }
            Self::Bucket(crate::layout::BucketChangeError::Moving) => ErrorCode::LayoutConflict,
            Self::Bucket(_) => ErrorCode::BucketPropsFixed,
            Self::Access(e) => e.code(),
        }
    }
}

/// One commit under way.
#[derive(Debug)]
pub(super) struct Commit {
    client: Option<ClientId>,
    want: Layout,
    proposer: Proposer<Layout>,
    voters: BTreeSet<String>,
    /// Voters that answered (or failed) since the last message sent.
    answered: BTreeSet<String>,
    attempts: u32,
    retry_at: Option<u64>,
}

impl Node {
    /// Stages `change` for `node`; returns the layout with it.
    pub fn stage(&mut self, node: &str, change: Change) -> Result<Layout, LayoutChangeError> {
        self.membership.stage(node, change)?;
        self.after_membership();
        self.membership
            .layout()
            .cloned()
            .ok_or(LayoutChangeError::NotJoined)
    }

    /// Stages `n_val` for `bucket`; returns the layout with it.
    pub fn stage_n_val(&mut self, bucket: &str, n_val: u8) -> Result<Layout, LayoutChangeError> {
        self.membership.stage_n_val(bucket, n_val)?;
        self.after_membership();
        self.membership
            .layout()
            .cloned()
            .ok_or(LayoutChangeError::NotJoined)
    }

    /// The properties of `bucket` in force (the cluster's).
    pub fn bucket_props(&self, bucket: &crate::BucketName) -> crate::BucketProps {
        self.membership.bucket_table().props(bucket.as_str())
    }

    /// Every bucket's properties in force (the cluster's).
    pub fn bucket_table(&self) -> &crate::bucket::BucketTable {
        self.membership.bucket_table()
    }

    /// Sets what `patch` names of `bucket`'s properties over the rest, as
    /// a layout version of its own (decided like any commit, moving no
    /// data); the outcome comes as [`Effect::Committed`]. A patch that
    /// changes nothing makes no version.
    pub fn handle_bucket_props(
        &mut self,
        client: ClientId,
        bucket: &crate::BucketName,
        patch: crate::bucket::PropsPatch,
        now: Now,
    ) {
        let Some(layout) = self.membership.layout() else {
            return self.committed(client, Err(LayoutChangeError::NotJoined.into()));
        };
        let current = self.membership.bucket_table().clone();
        let props = patch.apply(current.props(bucket.as_str()));
        if props == current.props(bucket.as_str()) && layout.buckets.is_some() {
            let layout = layout.clone();
            return self.committed(client, Ok(layout));
        }
        let want = match layout.with_bucket(&current, bucket.as_str(), props) {
            Ok(want) => want,
            Err(e) => return self.committed(client, Err(CommitFailure::Bucket(e))),
        };
        let layout = layout.clone();
        self.start_commit(Some(client), &layout, want, now);
    }

    /// Makes `change` to the access policy, as a layout version of its own
    /// (decided like any commit, moving no data); the outcome comes as
    /// [`Effect::Committed`].
    pub fn handle_access(
        &mut self,
        client: ClientId,
        change: &crate::access::AccessChange,
        now: Now,
    ) {
        let Some(layout) = self.membership.layout() else {
            return self.committed(client, Err(LayoutChangeError::NotJoined.into()));
        };
        let want = match layout.with_access(change) {
            Ok(want) => want,
            Err(e) => return self.committed(client, Err(CommitFailure::Access(e))),
        };
        let layout = layout.clone();
        self.start_commit(Some(client), &layout, want, now);
    }

    /// The cluster's access policy (`None`: never set; the API is open).
    pub fn access_policy(&self) -> Option<&crate::access::AccessPolicy> {
        self.membership.layout().and_then(|l| l.access.as_ref())
    }

    /// Commits the changes staged against layout version `against`; the
    /// outcome comes as [`Effect::Committed`].
    pub fn handle_commit(&mut self, client: ClientId, against: u64, now: Now) {
        let Some(layout) = self.membership.layout() else {
            return self.committed(client, Err(LayoutChangeError::NotJoined.into()));
        };
        if layout.version != against {
            let stale = CommitFailure::Stale {
                against,
                current: layout.version,
            };
            return self.committed(client, Err(stale));
        }
        let want = match layout.next() {
            Ok(next) => next,
            Err(e) => return self.committed(client, Err(LayoutChangeError::from(e).into())),
        };
        let layout = layout.clone();
        self.start_commit(Some(client), &layout, want, now);
    }

    /// Proposes `want` as the version after `layout`'s to its voters; the
    /// outcome goes to `client` (none for the node's own handover).
    pub(super) fn start_commit(
        &mut self,
        client: Option<ClientId>,
        layout: &Layout,
        mut want: Layout,
        now: Now,
    ) {
        let voters: BTreeSet<String> = layout.roles.keys().cloned().collect();
        let id = self.next_id();
        want.committed_by = Some(format!("{}#{id}", self.me()));
        let ballot = self.ballot(0);
        let (proposer, prepare) = Proposer::new(want.version, ballot, voters.clone(), want.clone());
        self.commits.insert(
            id,
            Commit {
                client,
                want,
                proposer,
                voters,
                answered: BTreeSet::new(),
                attempts: 1,
                retry_at: None,
            },
        );
        self.ask_voters(id, prepare, now);
    }

    /// A ballot above every round this node has seen.
    fn ballot(&mut self, seen: u64) -> Ballot {
        self.max_round = self.max_round.max(seen).saturating_add(1);
        Ballot {
            round: self.max_round,
            node: self.me().to_owned(),
            attempt: self.next_id(),
        }
    }

    /// Sends `msg` to every voter of commit `id` (this node's own vote is
    /// cast locally, and counted once saved).
    fn ask_voters(&mut self, id: u64, msg: Vote<Layout>, now: Now) {
        let Some(c) = self.commits.get_mut(&id) else {
            return;
        };
        c.answered.clear();
        let voters: Vec<String> = c.voters.iter().cloned().collect();
        let me = self.me().to_owned();
        for voter in voters {
            if voter == me {
                let answer = self.membership.decide(msg.clone());
                self.save_then(Wait::OwnVote { commit: id, answer });
            } else {
                let call = Call::Decide { commit: id };
                self.send_to(
                    &voter,
                    Decide(Box::new(msg.clone())).into(),
                    VOTE_TIMEOUT_MS,
                    call,
                    now,
                );
            }
        }
    }

    /// Saves the table durably, then carries on with `wait`.
    pub(super) fn save_then(&mut self, wait: Wait) {
        let id = self.next_id();
        self.stores.insert(id, wait);
        self.saved_version = self.membership.version();
        self.effect(Effect::SaveTable {
            version: self.saved_version,
            table: Box::new(self.membership.saved()),
            done: Some(id),
        });
    }

    /// A peer proposes: vote, and answer once the vote is saved.
    pub(super) fn serve_decide(&mut self, inbound: InboundId, msg: Vote<Layout>) {
        let answer = self.membership.decide(msg);
        self.save_then(Wait::Vote { inbound, answer });
    }

    /// This node's vote is saved: answer the proposer.
    pub(super) fn vote_saved(
        &mut self,
        inbound: InboundId,
        answer: Option<Vote<Layout>>,
        saved: bool,
    ) {
        let reply = if saved {
            Reply::answer::<Decide>(Ok(answer))
        } else {
            let why = "cannot save the vote durably";
            Reply::answer::<Decide>(Err(Refusal::error(crate::ErrorCode::Internal, why)))
        };
        self.respond(inbound, reply);
    }

    /// A voter answered commit `id` (`None`: it could not, or did not).
    pub(super) fn vote_answered(
        &mut self,
        id: u64,
        voter: &str,
        answer: Option<Vote<Layout>>,
        now: Now,
    ) {
        let Some(c) = self.commits.get_mut(&id) else {
            return;
        };
        if c.retry_at.is_some() || !c.voters.contains(voter) {
            return;
        }
        c.answered.insert(voter.to_owned());
        let step = answer.and_then(|msg| c.proposer.handle(voter, msg));
        match step {
            Some(Ok(next)) => self.ask_voters(id, next, now),
            Some(Err(outcome)) => self.outcome(id, outcome, now),
            None => {
                if c.answered.len() == c.voters.len() && !c.proposer.done() {
                    let failure = CommitFailure::Unavailable {
                        answered: c.answered.len(),
                        voters: c.voters.len(),
                        version: c.want.version,
                    };
                    self.finish(id, Err(failure));
                }
            }
        }
    }

    fn outcome(&mut self, id: u64, outcome: Outcome<Layout>, now: Now) {
        match outcome {
            Outcome::Chosen { value, .. } | Outcome::Behind { value, .. } => {
                // Ours when the decided version is the one this commit
                // proposed: a voter's answer carries its whole layout
                // (members, staged, synced moved on), so compare the
                // commit, not the whole value.
                let want = self.commits.get(&id).map(|c| &c.want);
                let ours = want.is_some_and(|w| {
                    w.version == value.version && w.committed_by == value.committed_by
                });
                self.membership.adopt(&value);
                self.after_membership();
                let result = if ours {
                    Ok(value)
                } else {
                    Err(CommitFailure::Conflict {
                        version: value.version,
                    })
                };
                self.finish(id, result);
            }
            Outcome::Outbid { promised } | Outcome::Unknown { promised } => {
                self.max_round = self.max_round.max(promised.round);
                let jitter = crate::hash::checksum(self.me().as_bytes()) % BACKOFF_MS;
                let Some(c) = self.commits.get_mut(&id) else {
                    return;
                };
                if c.attempts >= MAX_ATTEMPTS {
                    return self.finish(id, Err(CommitFailure::Contended));
                }
                let wait = BACKOFF_MS * u64::from(c.attempts) + jitter;
                c.attempts += 1;
                c.retry_at = Some(now.mono_ms + wait);
            }
        }
    }

    /// Commits whose backoff is over try again.
    pub(super) fn commit_timers(&mut self, now: Now) {
        let due: Vec<u64> = self
            .commits
            .iter()
            .filter(|(_, c)| c.retry_at.is_some_and(|at| at <= now.mono_ms))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let ballot = self.ballot(0);
            let Some(c) = self.commits.get_mut(&id) else {
                continue;
            };
            c.retry_at = None;
            let (proposer, prepare) =
                Proposer::new(c.want.version, ballot, c.voters.clone(), c.want.clone());
            c.proposer = proposer;
            self.ask_voters(id, prepare, now);
        }
    }

    /// When the next commit retry is due.
    pub(super) fn next_commit_timer(&self) -> Option<u64> {
        self.commits.values().filter_map(|c| c.retry_at).min()
    }

    fn finish(&mut self, id: u64, result: Result<Layout, CommitFailure>) {
        if let Some(c) = self.commits.remove(&id) {
            match c.client {
                Some(client) => self.committed(client, result),
                None => self.event(super::Event::Handover {
                    result: result.map(|l| l.version).map_err(|e| e.to_string()),
                }),
            }
        }
    }

    fn committed(&mut self, client: ClientId, result: Result<Layout, CommitFailure>) {
        self.effect(Effect::Committed { client, result });
    }
}
