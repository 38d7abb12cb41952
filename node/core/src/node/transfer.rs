//! Moving partitions after a layout change: each node copies the partitions
//! it gains from the replicas they had before, then the cluster hands reads
//! over to the new replicas, and the old ones drop what they gave away.
//!
//! - **Copy.** For every partition it gains, a node pulls the objects of
//!   every replica before the change that is not down (a write acknowledged
//!   before the change may be on only `w` of them), chunk by chunk
//!   ([`Pull`], at most [`MAX_PULLS`] at once and
//!   `Settings::transfer_bytes_per_second`), and merges each chunk with
//!   fsync before it records its cursor. The cursors are saved with the
//!   member table, so a restart resumes where it stopped, and progress never
//!   goes back. A partition that cannot progress says why
//!   ([`TransferStatus::stalled`]).
//! - **Synced.** Once every gained partition is copied, the node records in
//!   its layout that it has synced this version; gossip spreads it.
//! - **Handover.** When every new replica has synced, a data-holding node
//!   commits the handover version (the same assignment, nothing moving):
//!   from then on reads go to the new replicas and writes only to them.
//! - **Cleanup.** After the handover a node deletes the partitions it no
//!   longer holds, as Cassandra's `nodetool cleanup` does.
//!
//! Writes during the move reach both sets (see [`crate::round::WriteRounds`]),
//! so what is written after the copy started is on the new replicas too.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{Call, Event, Node, Now, StoreOp, Wait};
use crate::layout::{Layout, Scope};
use crate::membership::Status;
use crate::proto::{Chunk, Pull, Pulled, Refusal};

/// Partitions copied at once.
pub(super) const MAX_PULLS: usize = 2;
/// Bytes asked for per chunk.
pub(super) const CHUNK_BYTES: u32 = 1 << 20;
/// How long a pull may take (ms).
const PULL_TIMEOUT_MS: u64 = 5_000;
/// Wait before asking a replica again after a failure (ms).
const RETRY_MS: u64 = 1_000;
/// Per data-holding node, by rank, the wait before it commits a handover
/// that became possible (ms): the first tries at once, the next after it.
const HANDOVER_STAGGER_MS: u64 = 2_000;

/// One gained partition's copy, as saved.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PartitionCopy {
    /// Replicas before the change still to copy from, in order.
    pub sources: Vec<String>,
    /// Where the copy from the first of them stands.
    pub cursor: Option<Vec<u8>>,
    /// Objects copied so far (all sources).
    pub keys: u64,
    /// Bytes copied so far.
    pub bytes: u64,
    /// Replicas copied from completely.
    #[serde(default)]
    pub copied_from: u32,
    /// The buckets copied (all but an `n_val` change's others).
    #[serde(default)]
    pub scope: Scope,
}

/// A node's copying for one move, saved with its member table.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CopyProgress {
    /// Which move: a fingerprint of the assignment before it.
    pub from: u64,
    /// The layout version the copy is for.
    pub version: u64,
    /// Gained partitions still copying.
    pub pending: BTreeMap<u32, PartitionCopy>,
    /// Gained partitions copied.
    pub done: BTreeSet<u32>,
    /// Objects and bytes of the partitions copied.
    pub copied_keys: u64,
    /// Bytes of the partitions copied.
    pub copied_bytes: u64,
}

/// What `/v1/cluster/status` shows of a node's transfers.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TransferStatus {
    /// The layout version being copied for (0: none).
    pub version: u64,
    /// Partitions this node gains.
    pub gaining: usize,
    /// Of those, copied.
    pub copied: usize,
    /// Objects copied.
    pub keys: u64,
    /// Bytes copied.
    pub bytes: u64,
    /// Partitions that cannot progress, and why.
    #[cfg_attr(feature = "openapi", schema(value_type = BTreeMap<String, String>))]
    pub stalled: BTreeMap<u32, String>,
    /// Nodes the handover waits for (still copying).
    pub waiting_for: Vec<String>,
}

/// The machine's transfer state (not saved: rebuilt from the progress).
#[derive(Debug, Default)]
pub(super) struct Transfers {
    /// Partitions with a pull or merge under way.
    busy: BTreeSet<u32>,
    /// The progress last saved to disk.
    durable: Option<CopyProgress>,
    /// Partitions that failed, and until when they wait.
    retry_at: BTreeMap<u32, u64>,
    stalled: BTreeMap<u32, String>,
    /// Bytes received in the current second, and which second.
    window: (u64, u64),
    /// The layout version this node last dropped partitions for.
    cleaned: u64,
    /// When this node first saw the layout version it will clean up for
    /// (version, mono ms).
    clean_since: Option<(u64, u64)>,
    /// When a handover became possible (mono ms), per layout version.
    handover_since: Option<(u64, u64)>,
    /// The layout version whose save this node waits for to acknowledge it.
    acking: Option<u64>,
    /// Why no copy may start yet: members that have not acknowledged the
    /// version (as of the last tick).
    unacked: Option<String>,
}

/// A fingerprint of the assignment and bucket properties a move starts
/// from.
fn fingerprint(layout: &Layout) -> u64 {
    let bytes = rmp_serde::to_vec(&(&layout.moving, &layout.moving_buckets)).unwrap_or_default();
    crate::hash::checksum(&bytes)
}

impl Node {
    /// The copy progress this node saved.
    fn progress(&self) -> CopyProgress {
        self.membership.transfer().cloned().unwrap_or_default()
    }

    /// Every tick: start pulls, note a finished copy, hand over, clean up.
    pub(super) fn transfer_tick(&mut self, now: Now) {
        let Some(layout) = self.membership.layout().cloned() else {
            return;
        };
        self.acknowledge(&layout);
        if layout.moving.is_none() {
            self.transfers.handover_since = None;
            if self.membership.transfer().is_some() {
                self.membership.set_transfer(None);
            }
            return self.cleanup(&layout, now);
        }
        let me = self.me().to_owned();
        let mut progress = self.progress();
        let from = fingerprint(&layout);
        if progress.from != from {
            progress = CopyProgress {
                from,
                ..CopyProgress::default()
            };
            self.transfers.busy.clear();
            self.transfers.stalled.clear();
        }
        progress.version = layout.version;
        // Partitions gained now (a commit mid-move may change them).
        let gains = layout.gains(&me);
        progress
            .pending
            .retain(|p, c| gains.get(p).is_some_and(|s| *s == c.scope));
        progress.done.retain(|p| gains.contains_key(p));
        for (&p, scope) in &gains {
            if progress.done.contains(&p) || progress.pending.contains_key(&p) {
                continue;
            }
            let sources = self
                .ring
                .moving_from(p)
                .unwrap_or_default()
                .into_iter()
                .filter(|id| *id != me)
                .map(str::to_owned)
                .collect();
            progress.pending.insert(
                p,
                PartitionCopy {
                    sources,
                    scope: scope.clone(),
                    ..PartitionCopy::default()
                },
            );
        }
        if progress != self.progress() {
            self.membership.set_transfer(Some(progress.clone()));
        }
        if progress.pending.is_empty() {
            if let Some(l) = self.membership.layout() {
                if l.synced.get(&me).copied().unwrap_or(0) < l.version {
                    self.membership.mark_synced(layout.version);
                    self.event(Event::TransferSynced {
                        version: layout.version,
                    });
                }
            }
            return self.try_handover(&layout, now);
        }
        self.transfers.unacked = self.waiting_for_acks(&layout);
        if self.transfers.unacked.is_some() {
            return;
        }
        self.start_pulls(&progress, now);
    }

    /// Acknowledges the layout version once the table holding it is saved
    /// and no write routed by a version before it is still under way.
    fn acknowledge(&mut self, layout: &Layout) {
        let version = layout.version;
        let acked = layout.acked.get(self.me()).copied().unwrap_or(0);
        if acked >= version || self.transfers.acking == Some(version) {
            return;
        }
        if self.writes.values().any(|w| w.layout < version) {
            return;
        }
        self.transfers.acking = Some(version);
        self.save_then(Wait::LayoutSaved(version));
    }

    /// The table holding layout `version` was saved (or not).
    pub(super) fn layout_saved(&mut self, version: u64, saved: bool) {
        if self.transfers.acking == Some(version) {
            self.transfers.acking = None;
        }
        if saved {
            self.membership.mark_acked(version);
        }
    }

    /// Why a copy or a cleanup for `layout` must wait: live members that
    /// have not acknowledged its version (a node that is down coordinates
    /// nothing meanwhile).
    fn waiting_for_acks(&self, layout: &Layout) -> Option<String> {
        if self.settings.planted == Some(super::Planted::CopyBeforeAcknowledged) {
            return None;
        }
        let waiting = layout.unacked(|id| {
            id == self.me()
                || self
                    .membership
                    .status(id)
                    .is_some_and(|s| !matches!(s, Status::Down | Status::Removed))
        });
        (!waiting.is_empty()).then(|| {
            format!(
                "waiting for {} to acknowledge layout version {}",
                waiting.join(", "),
                layout.version
            )
        })
    }

    fn start_pulls(&mut self, progress: &CopyProgress, now: Now) {
        let mut finished = Vec::new();
        let layout_roles: BTreeSet<String> = self
            .membership
            .layout()
            .map(|l| l.roles.keys().cloned().collect())
            .unwrap_or_default();
        let second = now.mono_ms / 1_000;
        if self.transfers.window.0 != second {
            self.transfers.window = (second, 0);
        }
        let rate = self.settings.transfer_bytes_per_second;
        for (&p, copy) in &progress.pending {
            if self.transfers.busy.len() >= MAX_PULLS {
                break;
            }
            if rate > 0 && self.transfers.window.1 >= rate {
                break;
            }
            if self.transfers.busy.contains(&p)
                || self
                    .transfers
                    .retry_at
                    .get(&p)
                    .is_some_and(|&at| at > now.mono_ms)
            {
                continue;
            }
            // A replica down now is waited for (a write may be on it and
            // on no other live replica before the change), unless it holds
            // no role any more: a removed dead node, whose partitions are
            // rebuilt from the survivors.
            let source = copy
                .sources
                .iter()
                .find(|id| self.is_reachable(id))
                .cloned();
            let gone = |id: &String| !layout_roles.contains(id.as_str());
            if source.is_none() && copy.copied_from > 0 && copy.sources.iter().all(gone) {
                finished.push(p);
                continue;
            }
            let Some(source) = source else {
                let why = if copy.sources.is_empty() {
                    "no replica before the change is left to copy from".to_owned()
                } else {
                    format!(
                        "no replica before the change is reachable ({})",
                        copy.sources.join(", ")
                    )
                };
                self.transfers.stalled.insert(p, why);
                continue;
            };
            self.transfers.stalled.remove(&p);
            self.transfers.busy.insert(p);
            // The cursor belongs to the first source; another one starts over.
            let after = if copy.sources.first() == Some(&source) {
                copy.cursor.clone()
            } else {
                None
            };
            let request = Pull {
                partition: p,
                after: after.map(serde_bytes::ByteBuf::from),
                max_bytes: CHUNK_BYTES,
            };
            let call = Call::Pull {
                partition: p,
                source: source.clone(),
            };
            self.send_to(&source, request.into(), PULL_TIMEOUT_MS, call, now);
        }
        if !finished.is_empty() {
            let mut progress = self.progress();
            for p in finished {
                self.finish_partition(&mut progress, p);
            }
            self.save_progress(progress);
        }
    }

    /// Saves the copy progress with the table (fsynced); the status shows
    /// it once it is on disk, so what it shows never goes back after a
    /// restart.
    fn save_progress(&mut self, progress: CopyProgress) {
        self.membership.set_transfer(Some(progress.clone()));
        self.save_then(Wait::ProgressSaved(Box::new(progress)));
    }

    /// A progress save finished.
    pub(super) fn progress_saved(&mut self, progress: CopyProgress, saved: bool) {
        if saved {
            self.transfers.durable = Some(progress);
        }
    }

    fn finish_partition(&mut self, progress: &mut CopyProgress, partition: u32) {
        let copy = progress.pending.remove(&partition).unwrap_or_default();
        progress.copied_keys += copy.keys;
        progress.copied_bytes += copy.bytes;
        progress.done.insert(partition);
        self.transfers.stalled.remove(&partition);
        self.event(Event::PartitionCopied {
            partition,
            keys: copy.keys,
            pending: progress.pending.len(),
        });
    }

    /// A source answered a pull (or failed).
    pub(super) fn pulled(
        &mut self,
        partition: u32,
        source: String,
        result: Result<Chunk, String>,
        now: Now,
    ) {
        let chunk = match result {
            Ok(chunk) => chunk,
            Err(why) => {
                self.transfers.busy.remove(&partition);
                self.transfers
                    .retry_at
                    .insert(partition, now.mono_ms + RETRY_MS);
                self.transfers
                    .stalled
                    .insert(partition, format!("copying from {source} failed: {why}"));
                return;
            }
        };
        let bytes: u64 = chunk.objects.iter().map(|o| approx_size(&o.object)).sum();
        self.transfers.window.1 += bytes;
        // An n_val change copies only the buckets it concerns.
        let scope = self
            .membership
            .transfer()
            .and_then(|t| t.pending.get(&partition))
            .map(|c| c.scope.clone())
            .unwrap_or_default();
        let objects: Vec<(Pulled, crate::ConflictMode)> = chunk
            .objects
            .into_iter()
            .filter(|o| scope.covers(o.bucket.as_str()))
            .map(|o| {
                let mode = self.bucket_props(&o.bucket).conflict_mode;
                (o, mode)
            })
            .collect();
        let keys = objects.len() as u64;
        let next = chunk.next.map(serde_bytes::ByteBuf::into_vec);
        let done = CopiedChunk {
            partition,
            source,
            next,
            keys,
            bytes,
        };
        if objects.is_empty() {
            return self.copied(done, Ok(()));
        }
        let op = StoreOp::MergeAll {
            objects,
            durable: true,
        };
        self.store(op, Wait::Copied(done));
    }

    /// A chunk is merged (with fsync): record where the copy stands.
    pub(super) fn copied(&mut self, done: CopiedChunk, result: Result<(), String>) {
        let CopiedChunk {
            partition,
            source,
            next,
            keys,
            bytes,
        } = done;
        self.transfers.busy.remove(&partition);
        if let Err(why) = result {
            self.transfers
                .stalled
                .insert(partition, format!("storing a chunk failed: {why}"));
            return;
        }
        let mut progress = self.progress();
        let Some(copy) = progress.pending.get_mut(&partition) else {
            return;
        };
        if copy.sources.first() != Some(&source) {
            // The source ahead was skipped (down): this one goes first now.
            copy.sources.retain(|s| *s != source);
            copy.sources.insert(0, source.clone());
            copy.cursor = None;
        }
        copy.keys += keys;
        copy.bytes += bytes;
        match next {
            Some(cursor) => copy.cursor = Some(cursor),
            None => {
                copy.sources.remove(0);
                copy.cursor = None;
                copy.copied_from += 1;
            }
        }
        if copy.sources.is_empty() {
            self.finish_partition(&mut progress, partition);
        }
        self.save_progress(progress);
    }

    /// Commits the handover once every new replica synced, staggered by
    /// rank so data-holding nodes do not all propose at once.
    fn try_handover(&mut self, layout: &Layout, now: Now) {
        if !self.commits.is_empty() {
            return;
        }
        let Ok(want) = layout.handover() else {
            return;
        };
        let Some(rank) = layout.roles.keys().position(|id| id == self.me()) else {
            return;
        };
        let since = first_seen(&mut self.transfers.handover_since, layout.version, now);
        if now.mono_ms < since + HANDOVER_STAGGER_MS * rank as u64 {
            return;
        }
        self.transfers.handover_since = Some((layout.version, now.mono_ms + 10_000));
        self.start_commit(None, layout, want, now);
    }

    /// After a handover: drop what this node no longer holds (partitions,
    /// or a bucket's keys after its `n_val` went down), once the new
    /// version had time to reach every node and every live one
    /// acknowledged it (a node still on the version before would read
    /// them here).
    fn cleanup(&mut self, layout: &Layout, now: Now) {
        if self.transfers.cleaned >= layout.version {
            return;
        }
        let since = first_seen(&mut self.transfers.clean_since, layout.version, now);
        if now.mono_ms < since + self.settings.cleanup_grace_ms {
            return;
        }
        // A node still routing by the version before reads here.
        if self.waiting_for_acks(layout).is_some() {
            return;
        }
        self.transfers.cleaned = layout.version;
        let Some(a) = &layout.assignment else {
            return;
        };
        // A bucket's keys stay on the first n_val of a partition's ranks
        // (assigned replicas first): this node drops those of every bucket
        // whose n_val does not reach its rank (all of them where it has no
        // rank: partitions given away; some, after an n_val went down).
        let table = self.membership.bucket_table();
        let me = self.me();
        let gone: Vec<(u32, Scope)> = (0..a.partitions())
            .filter_map(|p| {
                let rank = self.ring.order(p).position(|id| id == me);
                let kept = |n: u8| rank.is_some_and(|r| r < usize::from(n));
                let scope = if !kept(table.defaults.n_val) {
                    Scope::AllBut(
                        table
                            .named
                            .iter()
                            .filter(|(_, props)| kept(props.n_val))
                            .map(|(b, _)| b.clone())
                            .collect(),
                    )
                } else {
                    Scope::Only(
                        table
                            .named
                            .iter()
                            .filter(|(_, props)| !kept(props.n_val))
                            .map(|(b, _)| b.clone())
                            .collect(),
                    )
                };
                (!scope.is_empty()).then_some((p, scope))
            })
            .collect();
        if gone.is_empty() {
            return;
        }
        self.event(Event::PartitionsDropped {
            partitions: gone.len(),
        });
        let op = StoreOp::DropPartitions {
            dropped: gone,
            partitions: a.partitions(),
        };
        self.store(op, Wait::Dropped);
    }

    /// A peer pulls a chunk of a partition.
    pub(super) fn serve_pull(&mut self, inbound: super::InboundId, pull: Pull) {
        let max_bytes = pull.max_bytes.clamp(1, CHUNK_BYTES) as usize;
        let op = StoreOp::Scan {
            partition: pull.partition,
            partitions: self.ring.partitions(),
            after: pull.after.map(serde_bytes::ByteBuf::into_vec),
            max_bytes,
        };
        self.store(op, Wait::ServePull { inbound });
    }

    /// Answers a pull with what the scan found.
    pub(super) fn scanned(
        &mut self,
        inbound: super::InboundId,
        result: Result<super::Stored, super::StoreFailure>,
    ) {
        let answer = match result {
            Ok(super::Stored::Scanned(chunk)) => Ok(chunk),
            Err(f) => Err(Refusal::error(f.code, f.message)),
            Ok(other) => Err(Refusal::error(
                crate::ErrorCode::Internal,
                format!("storage answered {other:?}"),
            )),
        };
        self.respond(inbound, crate::proto::Reply::answer::<Pull>(answer));
    }

    /// What this node's transfers look like.
    pub fn transfer_status(&self) -> TransferStatus {
        let Some(layout) = self.membership.layout() else {
            return TransferStatus::default();
        };
        if layout.moving.is_none() {
            return TransferStatus::default();
        }
        // What is on disk: a restart resumes from there. Progress of an
        // earlier move (kept until this one's first save) is not this
        // move's: until then every partition gained is still to copy.
        let from = fingerprint(layout);
        let Some(progress) = [self.transfers.durable.as_ref(), self.membership.transfer()]
            .into_iter()
            .flatten()
            .find(|p| p.from == from)
            .cloned()
        else {
            return TransferStatus {
                version: layout.version,
                gaining: layout.gains(self.me()).len(),
                waiting_for: layout.copying(),
                ..TransferStatus::default()
            };
        };
        let gaining = progress.pending.len() + progress.done.len();
        let (mut keys, mut bytes) = (progress.copied_keys, progress.copied_bytes);
        for c in progress.pending.values() {
            keys += c.keys;
            bytes += c.bytes;
        }
        TransferStatus {
            version: layout.version,
            gaining,
            copied: progress.done.len(),
            keys,
            bytes,
            stalled: match &self.transfers.unacked {
                // Every partition not started waits for the same.
                Some(why) => progress
                    .pending
                    .keys()
                    .filter(|p| !self.transfers.busy.contains(p))
                    .map(|&p| (p, why.clone()))
                    .chain(self.transfers.stalled.clone())
                    .collect(),
                None => self.transfers.stalled.clone(),
            },
            waiting_for: layout.copying(),
        }
    }
}

/// A merged chunk's bookkeeping.
#[derive(Debug)]
pub(super) struct CopiedChunk {
    pub(super) partition: u32,
    pub(super) source: String,
    pub(super) next: Option<Vec<u8>>,
    pub(super) keys: u64,
    pub(super) bytes: u64,
}

/// About how many bytes an object's values take.
fn approx_size(o: &crate::Object) -> u64 {
    o.siblings()
        .iter()
        .map(|s| s.content.value.len() as u64 + 64)
        .sum()
}

/// When this node first saw `version` in `slot` (a version and a time),
/// recording now when the slot holds another version.
fn first_seen(slot: &mut Option<(u64, u64)>, version: u64, now: Now) -> u64 {
    match *slot {
        Some((v, at)) if v == version => at,
        _ => {
            *slot = Some((version, now.mono_ms));
            now.mono_ms
        }
    }
}
