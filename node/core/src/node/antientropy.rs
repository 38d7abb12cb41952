//! Active anti-entropy: this node compares its hash tree of each partition
//! it replicates ([`crate::hashtree`]) with every other replica's, lists
//! the keys of the segments that differ, and repairs both sides with
//! normal merges (siblings and tombstones kept). So a replica that no read
//! touches still converges: a `w=1` write whose replication failed, a
//! dropped hint, a wiped disk, a record quarantined as corrupt.
//!
//! One exchange runs at a time, one step at a time (a storage operation
//! or a request), and the next starts `interval_ms` after the last ended:
//! anti-entropy never has more than one partition's work in flight, so its
//! share of the node is bounded by its interval. An operator can ask for a
//! partition (or all) at once ([`Node::request_repair`]).
//!
//! While a partition moves, its replicas before and after the change all
//! take part, so nothing written on either side during the move is missed.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::{Call, InboundId, Node, Now, StoreFailure, StoreOp, Stored, Wait};
use crate::hashtree::{Exchange as TreeExchange, HashTree, SEGMENTS};
use crate::proto::{Exchange, Fetched, KeyDigest, Pulled, Refusal, Reply, SegmentKeys, TreeHashes};
use crate::{BucketName, ErrorCode, Key};

/// Anti-entropy settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AntiEntropySettings {
    /// Time between the end of one exchange and the start of the next
    /// (ms); 0 turns anti-entropy off (on-demand repairs still run).
    pub interval_ms: u64,
}

/// Segments whose keys are listed per request.
const SEGMENTS_PER_LIST: usize = 64;
/// Keys pushed or fetched per request (and about [`super::transfer`]'s
/// chunk of bytes at most).
const KEYS_PER_REPAIR: usize = 128;
/// How long a peer may take to answer one step.
const STEP_TIMEOUT_MS: u64 = 10_000;

/// What anti-entropy did since this node started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AntiEntropyStats {
    /// Exchanges of one partition with one replica that ended.
    pub exchanges: u64,
    /// Those that stopped early (a replica did not answer).
    pub failed: u64,
    /// Bytes of tree hashes received to compare.
    pub bytes_compared: u64,
    /// Objects fetched from other replicas and merged here.
    pub keys_fetched: u64,
    /// Objects sent to other replicas.
    pub keys_pushed: u64,
}

/// Anti-entropy as the status shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AntiEntropyStatus {
    /// Whether exchanges run on their own (`interval_ms` > 0).
    pub enabled: bool,
    /// The counters.
    pub stats: AntiEntropyStats,
    /// Each partition's last exchange with all its replicas (wall ms).
    pub last_exchange: BTreeMap<u32, u64>,
    /// The partition being exchanged now, if any.
    pub running: Option<u32>,
    /// Partitions an operator asked for, not started yet.
    pub requested: usize,
}

/// The anti-entropy state of a node.
#[derive(Debug, Default)]
pub(super) struct AntiEntropy {
    /// When the next exchange may start (monotonic ms).
    next_at: u64,
    run: Option<Run>,
    next_run: u64,
    /// The next partition of the cycle.
    cursor: u32,
    /// Partitions an operator asked for, ahead of the cycle.
    requested: VecDeque<u32>,
    last: BTreeMap<u32, u64>,
    stats: AntiEntropyStats,
}

/// One partition's exchange with its other replicas, one at a time.
#[derive(Debug)]
struct Run {
    id: u64,
    partition: u32,
    partitions: u32,
    /// Replicas still to compare with.
    peers: VecDeque<String>,
    /// The one being compared with.
    peer: String,
    /// This node's tree.
    tree: HashTree,
    exchange: TreeExchange,
    /// Differing segments still to list.
    segments: Vec<u16>,
    /// The segments being listed.
    batch: Vec<u16>,
    /// Keys to send to the peer, and to fetch from it.
    push: VecDeque<(BucketName, Key)>,
    fetch: VecDeque<(BucketName, Key)>,
    /// The hash questions sent to the peer.
    asked: Vec<(u8, u16)>,
    /// This node's keys of the batch.
    mine: Vec<KeyDigest>,
    /// How many keys the last exchange request asked for.
    asked_keys: usize,
    /// Whether an exchange with some peer stopped early.
    failed: bool,
    /// This exchange's counts.
    differing: u64,
    fetched: u64,
    pushed: u64,
}

/// A step of an exchange, named for the storage operation or request it
/// waits on.
#[derive(Debug)]
pub(super) enum Step {
    /// This node's tree.
    Tree,
    /// The peer's hashes.
    Hashes,
    /// This node's keys of the batch's segments.
    MyKeys,
    /// The peer's keys.
    TheirKeys,
    /// This node's objects to push.
    Read,
    /// The peer merged ours and sent its own.
    Exchanged,
    /// Theirs merged here.
    Merged,
}

impl Node {
    /// Asks for an exchange of `partition` (`None`: every partition this
    /// node replicates) as soon as the one under way ends, whatever the
    /// interval. Returns how many partitions were queued.
    pub fn request_repair(&mut self, partition: Option<u32>, now: Now) -> usize {
        let mine = self.partitions_held();
        let wanted: Vec<u32> = match partition {
            Some(p) => mine.into_iter().filter(|&q| q == p).collect(),
            None => mine,
        };
        for &p in &wanted {
            if !self.ae.requested.contains(&p) {
                self.ae.requested.push_back(p);
            }
        }
        if self.ae.run.is_none() && !self.reaping() {
            self.ae.next_at = now.mono_ms;
            self.anti_entropy_tick(now);
        }
        wanted.len()
    }

    /// What anti-entropy did and is doing.
    pub fn anti_entropy_status(&self) -> AntiEntropyStatus {
        AntiEntropyStatus {
            enabled: self.settings.anti_entropy.interval_ms > 0,
            stats: self.ae.stats.clone(),
            last_exchange: self.ae.last.clone(),
            running: self.ae.run.as_ref().map(|r| r.partition),
            requested: self.ae.requested.len(),
        }
    }

    /// When anti-entropy wants [`Self::handle_timeout`] next.
    pub(super) fn anti_entropy_timer(&self) -> Option<u64> {
        let on = self.settings.anti_entropy.interval_ms > 0 || !self.ae.requested.is_empty();
        let idle = self.ae.run.is_none() && !self.reaping();
        (on && idle && self.has_joined()).then_some(self.ae.next_at)
    }

    /// Starts the next exchange if one is due.
    pub(super) fn anti_entropy_tick(&mut self, now: Now) {
        if self.ae.run.is_some()
            || self.reaping()
            || now.mono_ms < self.ae.next_at
            || !self.has_joined()
        {
            return;
        }
        let automatic = self.settings.anti_entropy.interval_ms > 0;
        let partition = match self.ae.requested.pop_front() {
            Some(p) => Some(p),
            None if automatic => self.next_in_cycle(),
            None => None,
        };
        let Some(partition) = partition else {
            self.ae.next_at = now.mono_ms + self.settings.anti_entropy.interval_ms.max(1_000);
            return;
        };
        let holders = self.holders(partition);
        let peers: VecDeque<String> = holders
            .iter()
            .filter(|id| *id != self.me() && self.is_reachable(id))
            .cloned()
            .collect();
        if peers.is_empty() {
            self.schedule_next(now);
            // A partition this node alone replicates: nothing to compare.
            if holders.len() == 1 {
                self.start_reap(partition, now);
            }
            return;
        }
        let id = self.ae.next_run;
        self.ae.next_run += 1;
        self.ae.run = Some(Run {
            id,
            partition,
            partitions: self.ring.partitions(),
            peers,
            peer: String::new(),
            tree: HashTree::new(),
            exchange: TreeExchange::default(),
            segments: Vec::new(),
            batch: Vec::new(),
            push: VecDeque::new(),
            fetch: VecDeque::new(),
            asked: Vec::new(),
            mine: Vec::new(),
            asked_keys: 0,
            failed: false,
            differing: 0,
            fetched: 0,
            pushed: 0,
        });
        let op = StoreOp::Tree {
            partition,
            partitions: self.ring.partitions(),
        };
        self.store(
            op,
            Wait::AntiEntropy {
                run: id,
                step: Step::Tree,
            },
        );
    }

    /// Every partition this node holds a replica of, before or after a
    /// move.
    pub fn partitions_held(&self) -> Vec<u32> {
        if !self.has_joined() {
            return Vec::new();
        }
        (0..self.ring.partitions())
            .filter(|&p| self.holders(p).iter().any(|id| id == self.me()))
            .collect()
    }

    /// The next partition of the cycle that this node holds.
    fn next_in_cycle(&mut self) -> Option<u32> {
        let partitions = self.ring.partitions();
        for _ in 0..partitions {
            let p = self.ae.cursor % partitions;
            self.ae.cursor = (p + 1) % partitions;
            if self.holders(p).iter().any(|id| id == self.me()) {
                return Some(p);
            }
        }
        None
    }

    /// Partition `p`'s replicas: its replica slots, and while it moves the
    /// replicas before the change too.
    pub(super) fn holders(&self, p: u32) -> Vec<String> {
        let mut out: Vec<String> = self
            .ring
            .order(p)
            .take(self.ring.replicas())
            .map(str::to_owned)
            .collect();
        for id in self.ring.moving_from(p).unwrap_or_default() {
            if !out.iter().any(|o| o == id) {
                out.push(id.to_owned());
            }
        }
        out
    }

    /// The nodes that hold `bucket`'s keys of partition `p`: the first
    /// `n_val` replicas, and while it moves the first `n_val` before.
    pub(super) fn key_holders(&self, bucket: &BucketName, p: u32) -> BTreeSet<String> {
        let members = self.ring.members().len();
        let n = usize::from(self.bucket_props(bucket).for_ring(members).n_val);
        let before_n = self
            .membership
            .layout()
            .and_then(|l| l.moving_buckets.as_ref())
            .map_or(n, |t| {
                usize::from(t.props(bucket.as_str()).for_ring(members).n_val)
            });
        let mut out: BTreeSet<String> = self.ring.order(p).take(n).map(str::to_owned).collect();
        if let Some(before) = self.ring.moving_from(p) {
            out.extend(before.into_iter().take(before_n).map(str::to_owned));
        }
        out
    }

    pub(super) fn schedule_next(&mut self, now: Now) {
        self.ae.run = None;
        self.ae.next_at = now.mono_ms + self.settings.anti_entropy.interval_ms;
        if !self.ae.requested.is_empty() {
            self.ae.next_at = now.mono_ms;
        }
    }

    /// The run waiting on step `id`, if it is still the current one.
    fn current(&mut self, id: u64) -> Option<&mut Run> {
        self.ae.run.as_mut().filter(|r| r.id == id)
    }

    /// Compares with the next replica, or ends the run.
    fn next_peer(&mut self, now: Now) {
        let Some(run) = self.ae.run.as_mut() else {
            return;
        };
        let Some(peer) = run.peers.pop_front() else {
            let (partition, failed) = (run.partition, run.failed);
            if !failed {
                self.ae.last.insert(partition, now.wall_ms);
            }
            self.schedule_next(now);
            // Compared with every replica: its tombstones may be reaped.
            if !failed {
                self.start_reap(partition, now);
            }
            return;
        };
        let (exchange, first) = TreeExchange::start();
        run.peer = peer.clone();
        run.exchange = exchange;
        let question = (first.0, first.1 as u16);
        run.asked = vec![question];
        let request = TreeHashes {
            partition: run.partition,
            partitions: run.partitions,
            questions: run.asked.clone(),
        };
        self.send_step(request.into(), Step::Hashes, now);
    }

    /// Sends the current exchange's next request to its peer; the answer
    /// comes back as `step`.
    fn send_step(&mut self, request: crate::proto::PeerRequest, step: Step, now: Now) {
        let Some(run) = self.ae.run.as_ref() else {
            return;
        };
        let (peer, call) = (run.peer.clone(), Call::AntiEntropy { run: run.id, step });
        self.send_to(&peer, request, STEP_TIMEOUT_MS, call, now);
    }

    /// Lists the keys of the next batch of differing segments, or ends the
    /// exchange with this peer.
    fn list_step(&mut self, now: Now) {
        let Some(run) = self.ae.run.as_mut() else {
            return;
        };
        if run.segments.is_empty() {
            return self.end_peer(None, now);
        }
        let n = run.segments.len().min(SEGMENTS_PER_LIST);
        run.batch = run.segments.drain(..n).collect();
        let op = StoreOp::SegmentKeys {
            partition: run.partition,
            partitions: run.partitions,
            segments: run.batch.clone(),
        };
        let wait = Wait::AntiEntropy {
            run: run.id,
            step: Step::MyKeys,
        };
        self.store(op, wait);
    }

    /// Sends what is left to push and asks for what is left to fetch, a
    /// chunk at a time; then the next batch of segments.
    fn repair_step(&mut self, now: Now) {
        let Some(run) = self.ae.run.as_mut() else {
            return;
        };
        let id = run.id;
        if !run.push.is_empty() {
            let op = StoreOp::Exchange {
                objects: Vec::new(),
                wanted: run.push.iter().take(KEYS_PER_REPAIR).cloned().collect(),
                max_bytes: super::transfer::CHUNK_BYTES as usize,
            };
            return self.store(
                op,
                Wait::AntiEntropy {
                    run: id,
                    step: Step::Read,
                },
            );
        }
        if !run.fetch.is_empty() {
            return self.exchange_with_peer(Vec::new(), now);
        }
        self.list_step(now);
    }

    /// Sends `objects` to the peer and asks for the next keys to fetch.
    fn exchange_with_peer(&mut self, objects: Vec<Pulled>, now: Now) {
        let Some(run) = self.ae.run.as_mut() else {
            return;
        };
        let wanted: Vec<(BucketName, Key)> =
            run.fetch.iter().take(KEYS_PER_REPAIR).cloned().collect();
        run.pushed += objects.len() as u64;
        run.asked_keys = wanted.len();
        let request = Exchange { objects, wanted };
        self.send_step(request.into(), Step::Exchanged, now);
    }

    /// The exchange with the current peer ended (`failed`: why it stopped
    /// early).
    fn end_peer(&mut self, failed: Option<String>, now: Now) {
        let Some(run) = self.ae.run.as_mut() else {
            return;
        };
        let bytes = run.exchange.bytes;
        let fetched = std::mem::take(&mut run.fetched);
        let pushed = std::mem::take(&mut run.pushed);
        let event = super::Event::Exchanged {
            partition: run.partition,
            peer: std::mem::take(&mut run.peer),
            bytes_compared: bytes,
            keys_differing: std::mem::take(&mut run.differing),
            keys_fetched: fetched,
            keys_pushed: pushed,
            failed: failed.clone(),
        };
        run.failed |= failed.is_some();
        run.segments.clear();
        run.push.clear();
        run.fetch.clear();
        let stats = &mut self.ae.stats;
        stats.exchanges += 1;
        stats.failed += u64::from(failed.is_some());
        stats.bytes_compared += bytes;
        stats.keys_fetched += fetched;
        stats.keys_pushed += pushed;
        self.event(event);
        self.next_peer(now);
    }

    /// A storage operation of an exchange finished.
    pub(super) fn anti_entropy_stored(
        &mut self,
        id: u64,
        step: Step,
        result: Result<Stored, StoreFailure>,
        now: Now,
    ) {
        let Some(run) = self.current(id) else {
            return;
        };
        match (step, result) {
            (Step::Tree, Ok(Stored::Tree(tree))) => {
                run.tree = *tree;
                self.next_peer(now);
            }
            (Step::MyKeys, Ok(Stored::Keys(mine))) => {
                run.mine = mine;
                let request = SegmentKeys {
                    partition: run.partition,
                    partitions: run.partitions,
                    segments: run.batch.clone(),
                };
                self.send_step(request.into(), Step::TheirKeys, now);
            }
            (Step::Read, Ok(Stored::Objects(Fetched { objects, answered }))) => {
                // At least one key is looked at each time.
                let n = (answered as usize).max(1).min(run.push.len());
                run.push.drain(..n);
                self.exchange_with_peer(objects, now);
            }
            (Step::Merged, Ok(_)) => self.repair_step(now),
            (_, Err(f)) => self.end_peer(Some(format!("local storage: {}", f.message)), now),
            (step, Ok(other)) => {
                self.end_peer(Some(format!("storage answered {other:?} to {step:?}")), now);
            }
        }
    }

    /// A peer answered a step of an exchange (or did not).
    pub(super) fn anti_entropy_answered(
        &mut self,
        id: u64,
        step: Step,
        result: Result<Reply, super::CallFailure>,
        now: Now,
    ) {
        if self.current(id).is_none() {
            return;
        }
        let outcome = match step {
            Step::Hashes => {
                super::answer::<TreeHashes>(result).map(|a| a.map(|h| self.hashes(h, now)))
            }
            Step::TheirKeys => {
                super::answer::<SegmentKeys>(result).map(|a| a.map(|k| self.compare_keys(k, now)))
            }
            Step::Exchanged => {
                super::answer::<Exchange>(result).map(|a| a.map(|f| self.fetched(f, now)))
            }
            other => Ok(Err(Refusal::error(
                ErrorCode::Internal,
                format!("a reply to {other:?}"),
            ))),
        };
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(refusal)) => {
                let (code, message) = refusal.parts();
                self.end_peer(Some(format!("refused ({code:?}): {message}")), now);
            }
            Err(failure) => self.end_peer(Some(failure.to_string()), now),
        }
    }

    /// The peer's hashes: descend where they differ, or list the keys of
    /// the segments that do.
    fn hashes(&mut self, answers: Vec<Option<Vec<u64>>>, now: Now) {
        let Some(run) = self.ae.run.as_mut() else {
            return;
        };
        let asked = std::mem::take(&mut run.asked);
        let mut next = Vec::new();
        for ((depth, index), answer) in asked.into_iter().zip(answers) {
            let q = (depth, usize::from(index));
            next.extend(run.exchange.answer(&run.tree, q, answer.as_deref()));
        }
        if next.is_empty() {
            run.segments = run
                .exchange
                .segments()
                .iter()
                .filter_map(|&s| u16::try_from(s).ok())
                .collect();
            return self.list_step(now);
        }
        run.asked = next
            .into_iter()
            .filter_map(|(d, i)| Some((d, u16::try_from(i).ok()?)))
            .collect();
        let request = TreeHashes {
            partition: run.partition,
            partitions: run.partitions,
            questions: run.asked.clone(),
        };
        self.send_step(request.into(), Step::Hashes, now);
    }

    /// The peer's keys of the batch: what each side lacks, or holds in
    /// another version, goes to the other (if it holds that key's bucket).
    fn compare_keys(&mut self, theirs: Vec<KeyDigest>, now: Now) {
        let Some(run) = self.ae.run.as_ref() else {
            return;
        };
        let partition = run.partition;
        let peer = run.peer.clone();
        let mine: BTreeMap<(BucketName, Key), u64> = run
            .mine
            .iter()
            .map(|k| ((k.bucket.clone(), k.key.clone()), k.digest))
            .collect();
        let theirs: BTreeMap<(BucketName, Key), u64> = theirs
            .into_iter()
            .map(|k| ((k.bucket, k.key), k.digest))
            .collect();
        let me = self.me().to_owned();
        let mut push = VecDeque::new();
        let mut fetch = VecDeque::new();
        let mut differing = 0;
        let keys: BTreeSet<&(BucketName, Key)> = mine.keys().chain(theirs.keys()).collect();
        for k in keys {
            let (a, b) = (mine.get(k), theirs.get(k));
            if a == b {
                continue;
            }
            differing += 1;
            let holders = self.key_holders(&k.0, partition);
            if a.is_some() && holders.contains(&peer) {
                push.push_back(k.clone());
            }
            if b.is_some() && holders.contains(&me) {
                fetch.push_back(k.clone());
            }
        }
        let Some(run) = self.ae.run.as_mut() else {
            return;
        };
        run.mine.clear();
        run.differing += differing;
        run.push = push;
        run.fetch = fetch;
        self.repair_step(now);
    }

    /// The peer merged what was pushed and sent what was asked for: merge
    /// it here (what this node holds), then go on.
    fn fetched(&mut self, fetched: Fetched, now: Now) {
        let Some(run) = self.ae.run.as_mut() else {
            return;
        };
        let id = run.id;
        let answered = (fetched.answered as usize).min(run.asked_keys);
        if answered == 0 && run.asked_keys > 0 {
            return self.end_peer(
                Some("the replica answered none of the keys asked".into()),
                now,
            );
        }
        run.fetch.drain(..answered.min(run.fetch.len()));
        run.fetched += fetched.objects.len() as u64;
        let objects = self.held_here(fetched.objects);
        let op = StoreOp::Exchange {
            objects,
            wanted: Vec::new(),
            max_bytes: 0,
        };
        self.store(
            op,
            Wait::AntiEntropy {
                run: id,
                step: Step::Merged,
            },
        );
    }

    /// The objects of keys this node holds (as it sees the layout), each
    /// with its bucket's conflict mode: what it merges from an exchange.
    fn held_here(&self, objects: Vec<Pulled>) -> Vec<(Pulled, crate::ConflictMode)> {
        let me = self.me();
        objects
            .into_iter()
            .filter(|o| {
                let p = self
                    .ring
                    .partition_of(o.bucket.as_str().as_bytes(), o.key.as_bytes());
                self.key_holders(&o.bucket, p).contains(me)
            })
            .map(|o| {
                let mode = self.bucket_props(&o.bucket).conflict_mode;
                (o, mode)
            })
            .collect()
    }

    // ---- serving a peer's exchange ----

    /// A peer's exchange request: checked, then a storage operation.
    pub(super) fn serve_anti_entropy(&mut self, inbound: InboundId, request: AntiEntropyRequest) {
        let partitions = self.ring.partitions();
        let refuse = |what: String| Reply::error(ErrorCode::InvalidParameter, what);
        match request {
            AntiEntropyRequest::Hashes(h) => {
                if h.partitions != partitions || h.partition >= partitions || h.questions.len() > 64
                {
                    let why = format!(
                        "tree hashes of partition {} of {} (this node has {partitions}), {} questions",
                        h.partition,
                        h.partitions,
                        h.questions.len()
                    );
                    return self.respond(inbound, refuse(why));
                }
                let op = StoreOp::Tree {
                    partition: h.partition,
                    partitions,
                };
                let served = Served::Tree(h.questions);
                self.store(op, Wait::ServeAntiEntropy { inbound, served });
            }
            AntiEntropyRequest::Keys(k) => {
                if k.partitions != partitions
                    || k.partition >= partitions
                    || k.segments.len() > SEGMENTS
                    || k.segments.iter().any(|&s| usize::from(s) >= SEGMENTS)
                {
                    let why = format!(
                        "keys of {} segments of partition {} of {} (this node has {partitions})",
                        k.segments.len(),
                        k.partition,
                        k.partitions
                    );
                    return self.respond(inbound, refuse(why));
                }
                let op = StoreOp::SegmentKeys {
                    partition: k.partition,
                    partitions,
                    segments: k.segments,
                };
                let served = Served::Keys;
                self.store(op, Wait::ServeAntiEntropy { inbound, served });
            }
            AntiEntropyRequest::Exchange(x) => {
                if x.wanted.len() > 4 * KEYS_PER_REPAIR {
                    let why = format!("{} keys wanted at once", x.wanted.len());
                    return self.respond(inbound, refuse(why));
                }
                let objects = self.held_here(x.objects);
                let op = StoreOp::Exchange {
                    objects,
                    wanted: x.wanted,
                    max_bytes: super::transfer::CHUNK_BYTES as usize,
                };
                let served = Served::Exchange;
                self.store(op, Wait::ServeAntiEntropy { inbound, served });
            }
        }
    }

    /// Answers a peer's exchange request with what storage found.
    pub(super) fn anti_entropy_served(
        &mut self,
        inbound: InboundId,
        served: Served,
        result: Result<Stored, StoreFailure>,
    ) {
        let reply = match (served, result) {
            (Served::Tree(questions), Ok(Stored::Tree(tree))) => {
                let answers = questions
                    .iter()
                    .map(|&(d, i)| tree.children(d, usize::from(i)))
                    .collect();
                Reply::answer::<TreeHashes>(Ok(answers))
            }
            (Served::Keys, Ok(Stored::Keys(keys))) => Reply::answer::<SegmentKeys>(Ok(keys)),
            (Served::Exchange, Ok(Stored::Objects(fetched))) => {
                Reply::answer::<Exchange>(Ok(fetched))
            }
            (_, other) => Reply::refusal(super::refusal(other)),
        };
        self.respond(inbound, reply);
    }
}

/// A peer's anti-entropy request.
#[derive(Debug)]
pub(super) enum AntiEntropyRequest {
    Hashes(TreeHashes),
    Keys(SegmentKeys),
    Exchange(Exchange),
}

/// What a served request waits on.
#[derive(Debug)]
pub(super) enum Served {
    Tree(Vec<(u8, u16)>),
    Keys,
    Exchange,
}
