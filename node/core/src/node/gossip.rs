//! Failure detection and the ring: the membership state machine's actions
//! become peer requests, its changes a new ring, a saved member table and
//! word to the driver that a peer restarted.

use super::{ring_of, Call, Effect, Event, Node, Now};
use crate::layout::Layout;
use crate::membership::Action;
use crate::proto::IndirectPing;
use std::sync::Arc;

impl Node {
    /// The failure detector's tick.
    pub(super) fn gossip_tick(&mut self, now: Now) {
        let actions = self.membership.handle_timeout(now.mono_ms);
        self.run_actions(actions, now);
        self.after_membership();
    }

    /// Sends what the membership asks for.
    pub(super) fn run_actions(&mut self, actions: Vec<Action>, now: Now) {
        let probe = self.membership.config().probe_timeout_ms;
        for action in actions {
            match action {
                // Only the target's own certificate answers for it.
                Action::Probe { target, addr, msg } => {
                    let node = Some(target.clone());
                    let call = Call::Probe { target };
                    self.send(addr, node, msg.into(), probe, call, now);
                }
                Action::IndirectProbe {
                    via,
                    target,
                    target_addr,
                } => {
                    let request = IndirectPing {
                        target: target_addr,
                    }
                    .into();
                    let call = Call::IndirectOrigin { target };
                    self.send(via, None, request, probe * 2, call, now);
                }
                Action::PushPull { addr, msg } => {
                    self.send(addr, None, msg.into(), probe * 2, Call::PushPull, now);
                }
            }
        }
    }

    /// After anything that may have changed membership: report what it
    /// noticed; if the member table changed, rebuild the ring, save the
    /// table and name the peers that restarted.
    pub(super) fn after_membership(&mut self) {
        for notice in self.membership.take_notices() {
            self.effect(Effect::Notice(notice));
        }
        if self.membership.version() == self.saved_version {
            return;
        }
        self.saved_version = self.membership.version();
        self.effect(Effect::SaveTable {
            version: self.saved_version,
            table: Box::new(self.membership.saved()),
            done: None,
        });
        let me = self.me().to_owned();
        let restarted: Vec<_> = self
            .membership
            .members()
            .filter(|m| m.id != me)
            .filter_map(|m| {
                let old = self.incarnations.insert(m.id.clone(), m.incarnation)?;
                (old != m.incarnation).then_some(m.peer_addr)
            })
            .collect();
        for addr in restarted {
            self.effect(Effect::PeerRestarted(addr));
        }
        let digest = self.membership.layout().map(Layout::digest);
        if digest != self.ring_digest {
            self.ring = Arc::new(ring_of(&self.membership, self.settings.partitions));
            self.event(Event::RingRebuilt {
                members: self.ring.members().len(),
            });
            self.ring_digest = digest;
        }
    }
}
