//! Serving peers: a replica's read, storing a replica's object (hint or
//! merge), coordinating a forwarded write, and the failure detector's
//! messages. Every answer is an [`super::Effect::Respond`].

use super::antientropy::AntiEntropyRequest;
use super::coordinator::{ReplyTo, WriteJob};
use super::{Call, Failure, InboundId, Node, Now, StoreOp, Wait};
use crate::membership::{Gossip, GossipMsg};
use crate::proto::{Coordinate, Decide, IndirectPing, PeerRequest, ReplicaGet, ReplicaPut, Reply};

impl Node {
    pub(super) fn serve(&mut self, inbound: InboundId, from: &str, request: PeerRequest, now: Now) {
        match request {
            PeerRequest::Gossip(msg) => {
                let reply = self.membership.handle_message(from, msg, now.mono_ms);
                self.respond(inbound, Reply::answer::<Gossip>(Ok(reply)));
            }
            PeerRequest::IndirectPing(IndirectPing { target }) => {
                let ping = self.membership.envelope(GossipMsg::Ping {
                    updates: Vec::new(),
                });
                let timeout = self.membership.config().probe_timeout_ms;
                let call = Call::IndirectHelper { inbound };
                self.send(target, None, ping.into(), timeout, call, now);
            }
            PeerRequest::ReplicaGet(ReplicaGet {
                bucket,
                key,
                hint_for,
            }) => {
                let mode = self.bucket_props(&bucket).conflict_mode;
                let op = StoreOp::Read {
                    bucket,
                    key,
                    hint_for,
                    mode,
                };
                self.store(op, Wait::ServeRead { inbound });
            }
            PeerRequest::ReplicaPut(ReplicaPut {
                bucket,
                key,
                object,
                mode,
                durable,
                hint_for,
            }) => {
                let op = self.hint_or_merge(&bucket, &key, object, mode, durable, hint_for, now);
                self.store(op, Wait::ServePut { inbound, durable });
            }
            PeerRequest::Decide(Decide(msg)) => self.serve_decide(inbound, *msg),
            PeerRequest::Pull(pull) => self.serve_pull(inbound, pull),
            PeerRequest::TreeHashes(h) => {
                self.serve_anti_entropy(inbound, AntiEntropyRequest::Hashes(h))
            }
            PeerRequest::SegmentKeys(k) => {
                self.serve_anti_entropy(inbound, AntiEntropyRequest::Keys(k))
            }
            PeerRequest::Exchange(x) => {
                self.serve_anti_entropy(inbound, AntiEntropyRequest::Exchange(x))
            }
            PeerRequest::Reap(r) => self.serve_reap(inbound, r, now),
            PeerRequest::Coordinate(Coordinate {
                bucket,
                key,
                context,
                operation,
                quorum,
            }) => {
                // A forwarded write is a round like a client's, within the
                // same bound.
                if self.at_round_limit() {
                    let busy = Err(Failure::Busy.into());
                    return self.respond(inbound, Reply::answer::<Coordinate>(busy));
                }
                let job = WriteJob {
                    bucket,
                    key,
                    context,
                    operation,
                    quorum,
                    forwarded: true,
                    // The node the client asked settled a blind delete.
                    read_first: true,
                };
                self.write(job, ReplyTo::Peer(inbound), now);
            }
        }
    }
}
