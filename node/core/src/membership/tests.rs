//! Membership rules, then whole clusters simulated with a virtual clock and
//! a lossless in-memory network whose links can be cut.

use std::collections::BTreeSet;

use super::*;

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7000 + i as u16))
}

fn info(i: usize, incarnation: u64, status: Status) -> MemberInfo {
    MemberInfo {
        id: format!("n{i}"),
        peer_addr: addr(i),
        http_addr: addr(100 + i),
        zone: None,
        incarnation,
        status,
    }
}

#[test]
fn newer_incarnation_or_worse_status_wins() {
    let up5 = info(1, 5, Status::Up);
    assert!(info(1, 5, Status::Suspect).supersedes(&up5));
    assert!(info(1, 5, Status::Down).supersedes(&info(1, 5, Status::Suspect)));
    assert!(!info(1, 5, Status::Up).supersedes(&info(1, 5, Status::Suspect)));
    assert!(info(1, 6, Status::Up).supersedes(&info(1, 5, Status::Down)));
    assert!(!info(1, 4, Status::Up).supersedes(&up5));
    assert!(info(1, 0, Status::Removed).supersedes(&up5));
    assert!(!info(1, 9, Status::Up).supersedes(&info(1, 0, Status::Removed)));
}

#[test]
fn a_suspected_node_refutes() {
    let mut m = Membership::new(
        info(1, 10, Status::Up),
        vec![],
        GossipConfig::default(),
        0,
        1,
    );
    m.handle_message(
        "n2",
        GossipMsg::Ping {
            updates: vec![info(1, 10, Status::Suspect)],
        },
        5,
    );
    let me = m.get("n1").expect("self");
    assert_eq!((me.status, me.incarnation), (Status::Up, 11));
    // Old news about itself changes nothing.
    let v = m.version();
    m.handle_message(
        "n2",
        GossipMsg::Ping {
            updates: vec![info(1, 3, Status::Down)],
        },
        6,
    );
    assert_eq!(m.version(), v);
}

/// A simulated cluster: node i listens on addr(i).
struct Sim {
    nodes: Vec<Option<Membership>>,
    cut: BTreeSet<(usize, usize)>,
    now: u64,
    config: GossipConfig,
}

impl Sim {
    fn new(n: usize, config: GossipConfig) -> Self {
        let mut sim = Self {
            nodes: Vec::new(),
            cut: BTreeSet::new(),
            now: 0,
            config,
        };
        for i in 0..n {
            let m = sim.boot(i);
            sim.nodes.push(Some(m));
        }
        sim
    }

    fn boot(&self, i: usize) -> Membership {
        // Node 0 is the seed of everyone.
        let seeds = if i == 0 { vec![] } else { vec![addr(0)] };
        Membership::new(
            info(i, 1_000 + self.now, Status::Up),
            seeds,
            self.config,
            self.now,
            1 + i as u64,
        )
    }

    fn index(a: SocketAddr) -> usize {
        (a.port() - 7000) as usize
    }

    fn link(&self, a: usize, b: usize) -> bool {
        self.nodes[b].is_some() && !self.cut.contains(&(a, b)) && !self.cut.contains(&(b, a))
    }

    fn ping(&mut self, from: usize, to: usize, msg: GossipMsg) -> Option<GossipMsg> {
        if !self.link(from, to) {
            return None;
        }
        let now = self.now;
        let sender = format!("n{from}");
        self.nodes[to].as_mut()?.handle_message(&sender, msg, now)
    }

    fn step(&mut self) {
        self.now += 50;
        let now = self.now;
        for i in 0..self.nodes.len() {
            let Some(node) = self.nodes[i].as_mut() else {
                continue;
            };
            let actions = node.handle_timeout(now);
            self.run(i, actions);
        }
    }

    fn run(&mut self, i: usize, actions: Vec<Action>) {
        let now = self.now;
        for a in actions {
            match a {
                Action::Probe { target, addr, msg } => {
                    let reply = self.ping(i, Self::index(addr), msg);
                    if let Some(node) = self.nodes[i].as_mut() {
                        let more = node.probe_result(&target, reply, now);
                        self.run(i, more);
                    }
                }
                Action::IndirectProbe {
                    via,
                    target,
                    target_addr,
                } => {
                    let via = Self::index(via);
                    let reached = self.link(i, via)
                        && self
                            .ping(
                                via,
                                Self::index(target_addr),
                                GossipMsg::Ping { updates: vec![] },
                            )
                            .is_some();
                    if let Some(node) = self.nodes[i].as_mut() {
                        node.indirect_result(&target, reached, now);
                    }
                }
                Action::PushPull { addr, msg } => {
                    let to = Self::index(addr);
                    if let Some(reply) = self.ping(i, to, msg) {
                        if let Some(node) = self.nodes[i].as_mut() {
                            node.handle_push_pull_reply(&format!("n{to}"), reply, now);
                        }
                    }
                }
            }
        }
    }

    /// Steps until `done` holds or `limit_ms` of virtual time passes.
    fn run_until(&mut self, limit_ms: u64, done: impl Fn(&Self) -> bool) -> Option<u64> {
        let start = self.now;
        while self.now - start <= limit_ms {
            if done(self) {
                return Some(self.now - start);
            }
            self.step();
        }
        None
    }

    fn all_see(&self, who: &str, status: Status) -> bool {
        self.nodes
            .iter()
            .flatten()
            .filter(|m| m.me() != who)
            .all(|m| m.status(who) == Some(status))
    }
}

#[test]
fn members_converge_through_a_seed() {
    let mut sim = Sim::new(5, GossipConfig::default());
    let took = sim.run_until(10_000, |s| {
        (0..5).all(|i| s.all_see(&format!("n{i}"), Status::Up))
    });
    assert!(took.is_some(), "five nodes converge to all-up");
    for m in sim.nodes.iter().flatten() {
        assert_eq!(m.ring_members().len(), 5);
    }
}

#[test]
fn a_dead_node_is_down_everywhere_within_the_bound_and_back_after_restart() {
    let config = GossipConfig::default();
    let mut sim = Sim::new(5, config);
    sim.run_until(10_000, |s| {
        (0..5).all(|i| s.all_see(&format!("n{i}"), Status::Up))
    })
    .expect("converged");
    sim.nodes[3] = None;
    let bound = config.detection_bound_ms(5);
    let took = sim.run_until(bound, |s| s.all_see("n3", Status::Down));
    assert!(took.is_some(), "n3 down everywhere within {bound} ms");
    // Down is not removed: the ring still has it.
    assert!(sim.nodes[0]
        .as_ref()
        .expect("n0")
        .ring_members()
        .iter()
        .any(|m| m.id == "n3"));

    sim.nodes[3] = Some(sim.boot(3));
    let took = sim.run_until(10_000, |s| {
        s.all_see("n3", Status::Up)
            && (0..5).all(|i| {
                s.nodes[3]
                    .as_ref()
                    .is_some_and(|m| i == 3 || m.status(&format!("n{i}")) == Some(Status::Up))
            })
    });
    assert!(
        took.is_some(),
        "a restarted node rejoins without operator action"
    );
}

#[test]
fn indirect_probes_prevent_false_suspicion() {
    let mut sim = Sim::new(4, GossipConfig::default());
    sim.run_until(10_000, |s| {
        (0..4).all(|i| s.all_see(&format!("n{i}"), Status::Up))
    })
    .expect("converged");
    // n1 and n2 cannot talk directly, but both reach n0 and n3.
    sim.cut.insert((1, 2));
    let suspected = sim.run_until(20_000, |s| {
        s.nodes
            .iter()
            .flatten()
            .any(|m| m.members().any(|x| x.status != Status::Up))
    });
    assert_eq!(
        suspected, None,
        "nobody is suspected while indirect probes succeed"
    );
}

#[test]
fn a_partitioned_node_is_refuted_back_to_up_after_healing() {
    let mut sim = Sim::new(4, GossipConfig::default());
    sim.run_until(10_000, |s| {
        (0..4).all(|i| s.all_see(&format!("n{i}"), Status::Up))
    })
    .expect("converged");
    for other in [0, 1, 3] {
        sim.cut.insert((2, other));
    }
    sim.run_until(20_000, |s| s.all_see("n2", Status::Down))
        .expect("isolated node marked down");
    sim.cut.clear();
    let healed = sim.run_until(20_000, |s| {
        (0..4).all(|i| s.all_see(&format!("n{i}"), Status::Up))
    });
    assert!(
        healed.is_some(),
        "after the partition heals, everyone is up again"
    );
}

#[test]
fn joining_needs_the_table_of_a_member() {
    let me = info(1, 10, Status::Up);
    // Listed among its own seeds: a founder, a member at once.
    let founder = Membership::new(
        me.clone(),
        vec![addr(1), addr(2)],
        GossipConfig::default(),
        0,
        1,
    );
    assert!(founder.has_joined());
    // Another node's seed only: joining.
    let mut m = Membership::new(me.clone(), vec![addr(2)], GossipConfig::default(), 0, 1);
    assert!(!m.has_joined());
    // The table of another joining node does not make it a member...
    let joining_peer = GossipMsg::PushPull {
        members: vec![info(2, 5, Status::Joining)],
        from: Some("n2".into()),
    };
    m.handle_push_pull_reply("n2", joining_peer, 1);
    assert!(!m.has_joined());
    // ...nor a table that does not say who sent it...
    let anonymous = GossipMsg::PushPull {
        members: vec![info(3, 5, Status::Up)],
        from: None,
    };
    m.handle_push_pull_reply("n3", anonymous, 2);
    assert!(!m.has_joined());
    // ...the table of a member does.
    let member = GossipMsg::PushPull {
        members: vec![info(3, 5, Status::Up), info(2, 5, Status::Joining)],
        from: Some("n3".into()),
    };
    m.handle_push_pull_reply("n3", member, 3);
    assert!(m.has_joined());
}

#[test]
fn a_push_pull_reply_joins_only_on_its_senders_own_word() {
    let me = info(1, 10, Status::Up);
    let mut m = Membership::new(me, vec![addr(2)], GossipConfig::default(), 0, 1);
    // n2 answers, claiming to be n3.
    let claims = GossipMsg::PushPull {
        members: vec![info(3, 5, Status::Up)],
        from: Some("n3".into()),
    };
    m.handle_push_pull_reply("n2", claims, 1);
    assert!(!m.has_joined());
}

fn member_of_three() -> Membership {
    let mut m = Membership::new(
        info(1, 10, Status::Up),
        vec![],
        GossipConfig::default(),
        0,
        1,
    );
    for i in [2, 3] {
        m.handle_message(
            &format!("n{i}"),
            GossipMsg::Ping {
                updates: vec![info(i, 5, Status::Up)],
            },
            1,
        );
    }
    m
}

#[test]
fn only_a_member_itself_may_move_or_revive_itself() {
    let mut m = member_of_three();
    let v = m.version();
    // n2 announces that n3 moved, and that n3 is alive at a newer
    // incarnation: both refused.
    let mut moved = info(3, 6, Status::Up);
    moved.peer_addr = addr(99);
    let revived = info(3, 6, Status::Up);
    let mut leaving = info(3, 5, Status::Leaving);
    leaving.http_addr = addr(98);
    for forged in [moved, revived, leaving] {
        m.handle_message(
            "n2",
            GossipMsg::Ping {
                updates: vec![forged],
            },
            2,
        );
    }
    assert_eq!(m.get("n3"), Some(&info(3, 5, Status::Up)));
    assert_eq!(m.refused(), 3);
    assert_eq!(m.version(), v);
    // n3 itself may.
    let mut moved = info(3, 6, Status::Up);
    moved.peer_addr = addr(99);
    m.handle_message(
        "n3",
        GossipMsg::Ping {
            updates: vec![moved.clone()],
        },
        3,
    );
    assert_eq!(m.get("n3"), Some(&moved));
}

#[test]
fn a_suspicion_spreads_only_at_the_known_incarnation() {
    let mut m = member_of_three();
    // n2 suspects n3 at the incarnation n1 knows: taken, and passed on.
    m.handle_message(
        "n2",
        GossipMsg::Ping {
            updates: vec![info(3, 5, Status::Suspect)],
        },
        2,
    );
    assert_eq!(m.status("n3"), Some(Status::Suspect));
    let ack = m.handle_message("n3", GossipMsg::Ping { updates: vec![] }, 3);
    let Some(GossipMsg::Ack { updates }) = ack else {
        panic!("an ack")
    };
    assert!(updates.contains(&info(3, 5, Status::Suspect)));
    // At a forged incarnation (u64::MAX): refused, and nothing wraps.
    let mut m = member_of_three();
    m.handle_message(
        "n2",
        GossipMsg::Ping {
            updates: vec![info(3, u64::MAX, Status::Down)],
        },
        2,
    );
    assert_eq!(m.get("n3"), Some(&info(3, 5, Status::Up)));
    assert_eq!(m.refused(), 1);
}

#[test]
fn an_accusation_at_u64_max_is_refuted_past_the_own_incarnation() {
    let mut m = member_of_three();
    m.handle_message(
        "n2",
        GossipMsg::Ping {
            updates: vec![info(1, u64::MAX, Status::Down)],
        },
        2,
    );
    let me = m.get("n1").expect("self");
    assert_eq!((me.status, me.incarnation), (Status::Up, 11));
    // And a node whose own incarnation is already at the top neither
    // wraps nor panics.
    let mut top = Membership::new(
        info(1, u64::MAX, Status::Up),
        vec![],
        GossipConfig::default(),
        0,
        1,
    );
    top.handle_message(
        "n2",
        GossipMsg::Ping {
            updates: vec![info(1, u64::MAX, Status::Suspect)],
        },
        2,
    );
    assert_eq!(top.get("n1").map(|m| m.incarnation), Some(u64::MAX));
}

#[test]
fn a_restored_table_counts_only_if_saved_as_a_member() {
    let me = info(1, 10, Status::Up);
    let saved_joining = vec![info(1, 9, Status::Joining), info(2, 5, Status::Up)];
    let mut m = Membership::new(me.clone(), vec![addr(2)], GossipConfig::default(), 0, 1);
    m.restore(saved_joining, 0);
    assert!(
        !m.has_joined(),
        "a table saved while joining is not the cluster's"
    );
    assert!(
        m.get("n2").is_some(),
        "its peers still serve to find the cluster"
    );
    let saved_member = vec![info(1, 9, Status::Up), info(2, 5, Status::Up)];
    let mut m = Membership::new(me, vec![addr(2)], GossipConfig::default(), 0, 1);
    m.restore(saved_member, 0);
    assert!(m.has_joined());
}

#[test]
fn a_forged_introduction_cannot_pin_a_member() {
    // n2 introduces n3, unknown to n1, at the top of the incarnation range
    // and at a wrong address; n3's own word replaces it.
    let mut m = Membership::new(
        info(1, 10, Status::Up),
        vec![],
        GossipConfig::default(),
        0,
        1,
    );
    let mut forged = info(3, u64::MAX, Status::Down);
    forged.peer_addr = addr(99);
    m.handle_message(
        "n2",
        GossipMsg::Ping {
            updates: vec![forged],
        },
        1,
    );
    assert_eq!(m.get("n3").map(|r| r.incarnation), Some(u64::MAX));
    m.handle_message(
        "n3",
        GossipMsg::Ping {
            updates: vec![info(3, 5, Status::Up)],
        },
        2,
    );
    assert_eq!(m.get("n3"), Some(&info(3, 5, Status::Up)));
    // From then on the usual rules hold: older news from n3 itself is old.
    m.handle_message(
        "n3",
        GossipMsg::Ping {
            updates: vec![info(3, 4, Status::Up)],
        },
        3,
    );
    assert_eq!(m.get("n3"), Some(&info(3, 5, Status::Up)));
}
