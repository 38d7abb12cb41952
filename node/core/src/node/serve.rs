//! Serving peers: a replica's read, storing a replica's object (hint or
//! merge), coordinating a forwarded write, and the failure detector's
//! messages. Every answer is an [`super::Effect::Respond`].

use super::coordinator::{ReplyTo, WriteJob};
use super::{Call, InboundId, Node, Now, StoreOp, Wait};
use crate::membership::GossipMsg;
use crate::proto::{PeerRequest, PeerResponse};
use crate::ErrorCode;

impl Node {
    pub(super) fn serve(&mut self, inbound: InboundId, from: &str, request: PeerRequest, now: Now) {
        match request {
            PeerRequest::Gossip(msg) => {
                let response = match self.membership.handle_message(from, msg, now.mono_ms) {
                    Some(reply) => PeerResponse::Gossip(reply),
                    None => PeerResponse::Ok,
                };
                self.respond(inbound, response);
            }
            PeerRequest::IndirectPing { target } => {
                let ping = self.membership.envelope(GossipMsg::Ping {
                    updates: Vec::new(),
                });
                let timeout = self.membership.config().probe_timeout_ms;
                let call = Call::IndirectHelper { inbound };
                self.send(target, None, PeerRequest::Gossip(ping), timeout, call, now);
            }
            PeerRequest::ReplicaGet {
                bucket,
                key,
                hint_for,
            } => {
                let mode = self.settings.bucket_props(&bucket).conflict_mode;
                let op = StoreOp::Read {
                    bucket,
                    key,
                    hint_for,
                    mode,
                };
                self.store(op, Wait::ServeRead { inbound });
            }
            PeerRequest::ReplicaPut {
                bucket,
                key,
                object,
                mode,
                durable,
                hint_for,
            } => {
                let op = self.hint_or_merge(&bucket, &key, object, mode, durable, hint_for, now);
                self.store(op, Wait::ServePut { inbound, durable });
            }
            PeerRequest::Coordinate {
                bucket,
                key,
                context,
                operation,
                quorum,
            } => {
                let job = WriteJob {
                    bucket,
                    key,
                    context,
                    operation,
                    quorum,
                    forwarded: true,
                    read_first: false,
                };
                self.write(job, ReplyTo::Peer(inbound), now);
            }
            // The driver answers clients itself (it authenticates their
            // contexts); one that reaches the machine is a driver's bug.
            PeerRequest::Client(_) => self.respond(
                inbound,
                PeerResponse::Error {
                    code: ErrorCode::Internal,
                    message: "client requests are not peer requests".into(),
                },
            ),
        }
    }
}
