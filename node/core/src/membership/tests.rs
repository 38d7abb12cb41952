//! Membership rules, then whole clusters simulated with a virtual clock and
//! a lossless in-memory network whose links can be cut.

use std::collections::BTreeSet;

use super::*;

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7000 + i as u16))
}

/// The initial member list of a node that founds a cluster of its own.
fn solo(i: usize) -> BTreeSet<String> {
    BTreeSet::from([format!("n{i}")])
}

/// The initial member list `n{i}` for each of `nodes`.
fn initial(nodes: &[usize]) -> BTreeSet<String> {
    nodes.iter().map(|i| format!("n{i}")).collect()
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
        solo(1),
        Shape::default(),
        GossipConfig::default(),
        0,
        1,
    );
    m.handle_message(
        "n2",
        GossipMsg::Ping {
            updates: vec![info(1, 10, Status::Suspect)],
        }
        .into(),
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
        }
        .into(),
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
    /// When set, nodes `0..founders` are all initial members, with the
    /// first three as everyone's seeds: every one a would-be founder.
    founders: Option<usize>,
}

impl Sim {
    fn new(n: usize, config: GossipConfig) -> Self {
        let mut sim = Self {
            nodes: Vec::new(),
            cut: BTreeSet::new(),
            now: 0,
            config,
            founders: None,
        };
        for i in 0..n {
            let m = sim.boot(i);
            sim.nodes.push(Some(m));
        }
        sim
    }

    /// `n` nodes, each a would-be founder.
    fn founders(n: usize, config: GossipConfig) -> Self {
        let mut sim = Self::new(0, config);
        sim.founders = Some(n);
        for i in 0..n {
            let m = sim.boot(i);
            sim.nodes.push(Some(m));
        }
        sim
    }

    fn boot(&self, i: usize) -> Membership {
        if let Some(n) = self.founders {
            let all: Vec<usize> = (0..n).collect();
            // The same seed list on every node, as operators write it.
            return Membership::new(
                info(i, 1_000 + self.now, Status::Up),
                (0..n.min(3)).map(addr).collect(),
                initial(&all),
                Shape::default(),
                self.config,
                self.now,
                1 + i as u64,
            );
        }
        // Node 0 founds the cluster and is the seed of everyone.
        let seeds = if i == 0 { vec![] } else { vec![addr(0)] };
        Membership::new(
            info(i, 1_000 + self.now, Status::Up),
            seeds,
            solo(0),
            Shape::default(),
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

    fn ping(&mut self, from: usize, to: usize, msg: Gossip) -> Option<Gossip> {
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
                                GossipMsg::Ping { updates: vec![] }.into(),
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
    // Full-table exchanges spread every admission to every layout.
    let took = sim.run_until(10 * GossipConfig::default().push_pull_interval_ms, |s| {
        s.nodes
            .iter()
            .flatten()
            .all(|m| m.layout().is_some_and(|l| l.members.len() == 5))
    });
    assert!(took.is_some(), "every layout admits all five");
}

/// Every live node's cluster id (`None` while it has none).
fn clusters(sim: &Sim) -> BTreeSet<Option<ClusterId>> {
    sim.nodes
        .iter()
        .flatten()
        .map(|m| m.layout().map(|l| l.cluster.clone()))
        .collect()
}

#[test]
fn would_be_founders_form_one_cluster_and_a_wiped_one_rejoins_it() {
    let mut sim = Sim::founders(5, GossipConfig::default());
    // Until every initial member is up, nobody founds.
    sim.nodes[4] = None;
    assert_eq!(
        sim.run_until(10_000, |s| clusters(s) != BTreeSet::from([None])),
        None
    );
    sim.nodes[4] = Some(sim.boot(4));
    sim.run_until(20_000, |s| {
        (0..5).all(|i| s.all_see(&format!("n{i}"), Status::Up))
            && clusters(s).len() == 1
            && s.nodes.iter().flatten().all(Membership::has_joined)
    })
    .expect("one cluster of five");
    let founded = Layout::found(&initial(&[0, 1, 2, 3, 4]), Shape::default());
    for m in sim.nodes.iter().flatten() {
        assert_eq!(m.layout(), Some(&founded));
    }
    // n2 loses its disk and comes back with the same config: it joins the
    // same cluster rather than founding one.
    sim.nodes[2] = Some(sim.boot(2));
    sim.run_until(20_000, |s| {
        s.nodes[2].as_ref().is_some_and(Membership::has_joined)
    })
    .expect("the wiped node joins");
    assert_eq!(
        clusters(&sim),
        BTreeSet::from([Some(founded.cluster.clone())])
    );
    assert_eq!(
        sim.nodes[2].as_mut().map(|m| m
            .take_notices()
            .iter()
            .any(|n| matches!(n, Notice::Joined { .. }))),
        Some(true)
    );
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
    // Down is an opinion, not a removal: n3 is Down (asserted above),
    // never Removed.

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

/// A member's full table, as its push-pull sends it.
fn table_of(m: &Membership) -> Gossip {
    m.full_table()
}

#[test]
fn joining_needs_the_layout_of_a_member() {
    let me = info(1, 10, Status::Up);
    // Listed alone in its initial members: founds at once.
    let founder = Membership::new(
        me.clone(),
        vec![addr(1), addr(2)],
        solo(1),
        Shape::default(),
        GossipConfig::default(),
        0,
        1,
    );
    assert!(founder.has_joined());
    assert_eq!(founder.status("n1"), Some(Status::Up));
    // Not an initial member: joining, however many seeds it lists.
    let mut m = Membership::new(
        me.clone(),
        vec![addr(1), addr(2)],
        BTreeSet::new(),
        Shape::default(),
        GossipConfig::default(),
        0,
        1,
    );
    assert!(!m.has_joined());
    // The table of another joining node does not make it a member...
    let joining_peer = Membership::new(
        info(2, 5, Status::Up),
        vec![],
        BTreeSet::new(),
        Shape::default(),
        GossipConfig::default(),
        0,
        2,
    );
    m.handle_push_pull_reply("n2", table_of(&joining_peer), 1);
    assert!(!m.has_joined());
    // ...nor a layout that comes without its sender's word that it is a
    // member of that cluster...
    let member = Membership::new(
        info(3, 5, Status::Up),
        vec![],
        solo(3),
        Shape::default(),
        GossipConfig::default(),
        0,
        3,
    );
    let mut unstamped = table_of(&member);
    unstamped.standing = Standing::Unjoined {
        founding: None,
        buckets: None,
    };
    m.handle_push_pull_reply("n3", unstamped, 2);
    assert!(!m.has_joined());
    // ...the table of a member does: it joins that cluster and adds itself
    // to the layout.
    m.handle_push_pull_reply("n3", table_of(&member), 3);
    assert!(m.has_joined());
    let layout = m.layout().expect("joined").clone();
    assert_eq!(Some(&layout.cluster), member.layout().map(|l| &l.cluster));
    assert_eq!(layout.members, initial(&[1, 3]));
    // Admitted, it holds nothing until a commit gives it a role.
    assert_eq!(layout.version, 1);
    assert!(!layout.roles.contains_key("n1"));
    assert_eq!(
        m.take_notices(),
        vec![Notice::Joined {
            cluster: layout.cluster.clone(),
            via: "n3".into()
        }]
    );
}

/// The standing a would-be founder of `initial` sends.
fn would_found(nodes: &[usize]) -> Standing {
    Standing::Unjoined {
        founding: Some(ClusterId::founded_by(&initial(nodes), Shape::default())),
        buckets: Some(crate::bucket::BucketTable::default().digest()),
    }
}

fn ping_from(standing: Standing) -> Gossip {
    Gossip {
        standing,
        layout: None,
        msg: GossipMsg::Ping { updates: vec![] },
    }
}

#[test]
fn an_initial_member_founds_once_every_initial_member_would_found_the_same() {
    let mut m = Membership::new(
        info(1, 10, Status::Up),
        vec![addr(2)],
        initial(&[1, 2, 3]),
        Shape::default(),
        GossipConfig::default(),
        0,
        1,
    );
    assert!(!m.has_joined(), "alone it does not found");
    m.handle_message("n2", ping_from(would_found(&[1, 2, 3])), 1);
    assert!(!m.has_joined(), "n3 not heard from yet");
    // n2 passing on n3's record is not n3's word.
    let mut passes_on = ping_from(would_found(&[1, 2, 3]));
    passes_on.msg = GossipMsg::Ping {
        updates: vec![info(3, 5, Status::Joining)],
    };
    m.handle_message("n2", passes_on, 2);
    assert!(!m.has_joined());
    // n3 with a different list (or none) blocks founding, and says why.
    m.handle_message("n3", ping_from(would_found(&[1, 3])), 3);
    assert!(!m.has_joined());
    assert!(matches!(
        m.take_notices().as_slice(),
        [Notice::InitialMembersDiffer { peer, .. }] if peer == "n3"
    ));
    m.handle_message("n3", ping_from(would_found(&[1, 2, 3])), 4);
    assert!(m.has_joined());
    let layout = m.layout().expect("founded");
    assert_eq!(
        *layout,
        Layout::found(&initial(&[1, 2, 3]), Shape::default())
    );
    assert_eq!(m.status("n1"), Some(Status::Up));
}

#[test]
fn founders_with_other_bucket_properties_do_not_found() {
    let mut m = Membership::new(
        info(1, 10, Status::Up),
        vec![addr(2)],
        initial(&[1, 2]),
        Shape::default(),
        GossipConfig::default(),
        0,
        1,
    );
    let lww = crate::bucket::BucketTable {
        defaults: crate::bucket::BucketProps {
            conflict_mode: crate::bucket::ConflictMode::Lww,
            ..Default::default()
        },
        named: Default::default(),
    };
    let other = Standing::Unjoined {
        founding: Some(ClusterId::founded_by(&initial(&[1, 2]), Shape::default())),
        buckets: Some(lww.digest()),
    };
    m.handle_message("n2", ping_from(other), 1);
    assert!(!m.has_joined(), "founded with other bucket properties");
    assert!(matches!(
        m.take_notices().as_slice(),
        [Notice::FoundersBucketsDiffer { peer }] if peer == "n2"
    ));
    m.handle_message("n2", ping_from(would_found(&[1, 2])), 2);
    assert!(m.has_joined(), "the same properties found");
}

#[test]
fn a_node_that_heard_of_its_cluster_never_founds_it_again() {
    // A wiped initial member: its peers have the layout. Even hearing
    // every other initial member unjoined afterwards (they lost their disks
    // too, say), once it has heard of the cluster it only joins.
    let mut m = Membership::new(
        info(1, 10, Status::Up),
        vec![addr(2)],
        initial(&[1, 2, 3]),
        Shape::default(),
        GossipConfig::default(),
        0,
        1,
    );
    let layout = Layout::found(&initial(&[1, 2, 3]), Shape::default());
    m.handle_message("n2", ping_from(Standing::Member(layout.stamp())), 1);
    m.handle_message("n2", ping_from(would_found(&[1, 2, 3])), 2);
    m.handle_message("n3", ping_from(would_found(&[1, 2, 3])), 3);
    assert!(!m.has_joined());
    // It joins on a member's layout.
    let table = Gossip {
        standing: Standing::Member(layout.stamp()),
        layout: Some(Box::new(layout.clone())),
        msg: GossipMsg::PushPull {
            members: vec![info(2, 5, Status::Up)],
        },
    };
    m.handle_push_pull_reply("n2", table, 4);
    assert_eq!(
        m.layout(),
        Some(&layout),
        "already a member: nothing to add"
    );
}

#[test]
fn a_node_of_another_cluster_is_refused_both_ways() {
    let mut m = member_of_three();
    m.take_notices();
    let ours = m.layout().expect("member").cluster.clone();
    let other = Layout::found(&initial(&[7]), Shape::default());
    let v = m.version();
    let foreign = Gossip {
        standing: Standing::Member(other.stamp()),
        layout: Some(Box::new(other.clone())),
        msg: GossipMsg::PushPull {
            members: vec![info(7, 5, Status::Up), info(2, 99, Status::Up)],
        },
    };
    let reply = m
        .handle_message("n7", foreign.clone(), 1)
        .expect("an answer");
    assert_eq!(m.version(), v, "nothing taken");
    assert_eq!(m.get("n7"), None);
    assert_eq!(m.foreign(), 1);
    assert_eq!(
        reply,
        Gossip {
            standing: m.standing(),
            layout: None,
            msg: GossipMsg::PushPull { members: vec![] }
        },
        "the answer carries only our standing"
    );
    assert_eq!(
        m.take_notices(),
        vec![Notice::ForeignCluster {
            peer: "n7".into(),
            theirs: other.cluster.clone(),
            ours: Some(ours.clone())
        }]
    );
    // Reported once per peer, counted every time.
    m.handle_message("n7", foreign, 2);
    assert_eq!(m.foreign(), 2);
    assert!(m.take_notices().is_empty());
    // The foreign node refuses our answer in turn.
    let mut theirs = Membership::new(
        info(7, 5, Status::Up),
        vec![addr(1)],
        solo(7),
        Shape::default(),
        GossipConfig::default(),
        0,
        7,
    );
    theirs.handle_push_pull_reply("n1", reply, 3);
    assert_eq!(theirs.get("n1"), None);
    assert_eq!(theirs.foreign(), 1);
    // A joining node takes the first cluster it hears of, then no other.
    let mut joiner = Membership::new(
        info(5, 5, Status::Up),
        vec![addr(1)],
        BTreeSet::new(),
        Shape::default(),
        GossipConfig::default(),
        0,
        5,
    );
    joiner.handle_message("n1", ping_from(m.standing()), 4);
    joiner.handle_push_pull_reply("n7", table_of(&theirs), 5);
    assert!(!joiner.has_joined());
    assert_eq!(joiner.foreign(), 1);
    joiner.handle_push_pull_reply("n1", table_of(&m), 6);
    assert_eq!(joiner.layout().map(|l| &l.cluster), Some(&ours));
}

#[test]
fn a_joined_nodes_layout_spreads_by_merge() {
    let mut m = member_of_three();
    let mut joined = m.layout().expect("member").clone();
    joined.admit("n4");
    let table = Gossip {
        standing: Standing::Member(joined.stamp()),
        layout: Some(Box::new(joined.clone())),
        msg: GossipMsg::PushPull { members: vec![] },
    };
    let v = m.version();
    m.handle_message("n4", table, 1);
    assert_eq!(m.layout(), Some(&joined));
    assert!(
        m.version() > v,
        "a layout change is saved like a record change"
    );
}

fn member_of_three() -> Membership {
    let mut m = Membership::new(
        info(1, 10, Status::Up),
        vec![],
        solo(1),
        Shape::default(),
        GossipConfig::default(),
        0,
        1,
    );
    for i in [2, 3] {
        m.handle_message(
            &format!("n{i}"),
            GossipMsg::Ping {
                updates: vec![info(i, 5, Status::Up)],
            }
            .into(),
            1,
        );
    }
    m
}

#[test]
fn only_a_member_itself_may_move_itself_and_others_relay_it_up_a_bounded_step() {
    let mut m = member_of_three();
    let v = m.version();
    // n2 announces that n3 moved, that it is leaving from elsewhere, and
    // that it is alive far past the incarnation n1 knows: all refused.
    let mut moved = info(3, 6, Status::Up);
    moved.peer_addr = addr(99);
    let far = info(3, 5 + MAX_RELAYED_STEP + 1, Status::Up);
    let mut leaving = info(3, 5, Status::Leaving);
    leaving.http_addr = addr(98);
    for forged in [moved, far, leaving] {
        m.handle_message(
            "n2",
            GossipMsg::Ping {
                updates: vec![forged],
            }
            .into(),
            2,
        );
    }
    assert_eq!(m.get("n3"), Some(&info(3, 5, Status::Up)));
    assert_eq!(m.refused(), 3);
    assert_eq!(m.version(), v);
    // n3's refutation relayed by n2 (up, one incarnation on, same place):
    // taken, so refutations spread as fast as suspicions.
    m.handle_message(
        "n2",
        GossipMsg::Ping {
            updates: vec![info(3, 6, Status::Up)],
        }
        .into(),
        3,
    );
    assert_eq!(m.get("n3"), Some(&info(3, 6, Status::Up)));
    // n3 itself may move.
    let mut moved = info(3, 7, Status::Up);
    moved.peer_addr = addr(99);
    m.handle_message(
        "n3",
        GossipMsg::Ping {
            updates: vec![moved.clone()],
        }
        .into(),
        4,
    );
    assert_eq!(m.get("n3"), Some(&moved));
}

#[test]
fn a_suspicion_past_a_relayed_incarnation_is_refuted_past_it() {
    // Relays may have raised n1's incarnation in others' views (by bounded
    // steps); its refutation must outrank what they hold.
    let mut m = member_of_three();
    m.handle_message(
        "n2",
        GossipMsg::Ping {
            updates: vec![info(1, 10 + MAX_RELAYED_STEP, Status::Suspect)],
        }
        .into(),
        2,
    );
    let me = m.get("n1").expect("self");
    assert_eq!(
        (me.status, me.incarnation),
        (Status::Up, 10 + MAX_RELAYED_STEP + 1)
    );
}

#[test]
fn a_suspicion_spreads_only_at_the_known_incarnation() {
    let mut m = member_of_three();
    // n2 suspects n3 at the incarnation n1 knows: taken, and passed on.
    m.handle_message(
        "n2",
        GossipMsg::Ping {
            updates: vec![info(3, 5, Status::Suspect)],
        }
        .into(),
        2,
    );
    assert_eq!(m.status("n3"), Some(Status::Suspect));
    let ack = m.handle_message("n3", GossipMsg::Ping { updates: vec![] }.into(), 3);
    let Some(GossipMsg::Ack { updates }) = ack.map(|g| g.msg) else {
        panic!("an ack")
    };
    assert!(updates.contains(&info(3, 5, Status::Suspect)));
    // At a forged incarnation (u64::MAX): refused, and nothing wraps.
    let mut m = member_of_three();
    m.handle_message(
        "n2",
        GossipMsg::Ping {
            updates: vec![info(3, u64::MAX, Status::Down)],
        }
        .into(),
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
        }
        .into(),
        2,
    );
    let me = m.get("n1").expect("self");
    assert_eq!((me.status, me.incarnation), (Status::Up, 11));
    // And a node whose own incarnation is already at the top neither
    // wraps nor panics.
    let mut top = Membership::new(
        info(1, u64::MAX, Status::Up),
        vec![],
        solo(1),
        Shape::default(),
        GossipConfig::default(),
        0,
        1,
    );
    top.handle_message(
        "n2",
        GossipMsg::Ping {
            updates: vec![info(1, u64::MAX, Status::Suspect)],
        }
        .into(),
        2,
    );
    assert_eq!(top.get("n1").map(|m| m.incarnation), Some(u64::MAX));
}

#[test]
fn a_restored_table_counts_only_if_saved_with_a_layout() {
    let me = info(1, 10, Status::Up);
    let joining = || {
        Membership::new(
            me.clone(),
            vec![addr(2)],
            initial(&[1, 2]),
            Shape::default(),
            GossipConfig::default(),
            0,
            1,
        )
    };
    let members = vec![info(1, 9, Status::Up), info(2, 5, Status::Up)];
    let mut m = joining();
    m.restore(
        SavedTable {
            layout: None,
            members: members.clone(),
            vote: None,
            transfer: None,
        },
        0,
    );
    assert!(
        !m.has_joined(),
        "a table saved while joining is not the cluster's"
    );
    assert!(
        m.get("n2").is_some(),
        "its peers still serve to find the cluster"
    );
    let layout = Layout::found(&initial(&[1, 2]), Shape::default());
    let mut m = joining();
    m.restore(
        SavedTable {
            layout: Some(layout.clone()),
            members,
            vote: None,
            transfer: None,
        },
        0,
    );
    assert!(m.has_joined());
    assert_eq!(m.layout(), Some(&layout));
    assert_eq!(m.status("n1"), Some(Status::Up));
    // And it round-trips.
    assert_eq!(m.saved().layout, Some(layout));
}

#[test]
fn a_forged_introduction_cannot_pin_a_member() {
    // n2 introduces n3, unknown to n1, at the top of the incarnation range
    // and at a wrong address; n3's own word replaces it.
    let mut m = Membership::new(
        info(1, 10, Status::Up),
        vec![],
        solo(1),
        Shape::default(),
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
        }
        .into(),
        1,
    );
    assert_eq!(m.get("n3").map(|r| r.incarnation), Some(u64::MAX));
    m.handle_message(
        "n3",
        GossipMsg::Ping {
            updates: vec![info(3, 5, Status::Up)],
        }
        .into(),
        2,
    );
    assert_eq!(m.get("n3"), Some(&info(3, 5, Status::Up)));
    // From then on the usual rules hold: older news from n3 itself is old.
    m.handle_message(
        "n3",
        GossipMsg::Ping {
            updates: vec![info(3, 4, Status::Up)],
        }
        .into(),
        3,
    );
    assert_eq!(m.get("n3"), Some(&info(3, 5, Status::Up)));
}

#[test]
fn a_chain_of_relays_cannot_walk_a_member_out_of_reach() {
    // n2 relays n3 up at ever higher incarnations in one message, then
    // accuses it there: each relay is measured from what n3 said itself
    // (5), so the walk stops within one step and the accusation, at a
    // number n3 never had, is refused.
    let mut m = member_of_three();
    let step = MAX_RELAYED_STEP;
    let mut chain: Vec<MemberInfo> = [5 + step, 5 + 2 * step, 5 + 3 * step]
        .into_iter()
        .map(|i| info(3, i, Status::Up))
        .collect();
    chain.push(info(3, 5 + 3 * step, Status::Down));
    m.handle_message("n2", GossipMsg::Ping { updates: chain }.into(), 2);
    let seen = m.get("n3").expect("n3");
    assert_eq!((seen.status, seen.incarnation), (Status::Up, 5 + step));
    // n3's own word moves the base: relays reach one step past it.
    m.handle_message(
        "n3",
        GossipMsg::Ping {
            updates: vec![info(3, 5 + step + 1, Status::Up)],
        }
        .into(),
        3,
    );
    m.handle_message(
        "n2",
        GossipMsg::Ping {
            updates: vec![info(3, 5 + 2 * step, Status::Up)],
        }
        .into(),
        4,
    );
    assert_eq!(m.get("n3").map(|i| i.incarnation), Some(5 + 2 * step));
}

#[test]
fn a_node_configured_with_another_shape_follows_its_clusters() {
    let other = Shape {
        partitions: 128,
        ..Shape::default()
    };
    let me = info(1, 10, Status::Up);
    let founder = Membership::new(
        info(3, 5, Status::Up),
        vec![],
        solo(3),
        Shape::default(),
        GossipConfig::default(),
        0,
        3,
    );
    // Joining a member of a cluster of another shape: it joins with the
    // cluster's shape, and says that its configuration is not followed.
    let mut m = Membership::new(
        me.clone(),
        vec![addr(3)],
        BTreeSet::new(),
        other,
        GossipConfig::default(),
        0,
        1,
    );
    m.handle_push_pull_reply("n3", table_of(&founder), 1);
    assert!(m.has_joined(), "a joiner follows its cluster's shape");
    assert_eq!(m.layout().map(Layout::shape), Some(Shape::default()));
    assert!(m.take_notices().iter().any(|n| matches!(
        n,
        Notice::ShapeDiffers { theirs, ours, .. } if *theirs == Shape::default() && *ours == other
    )));
    // A saved layout of another shape is taken back, over the layout a
    // lone initial member reconfigured since founds at start.
    let mut restarted = Membership::new(
        info(3, 6, Status::Up),
        vec![],
        solo(3),
        other,
        GossipConfig::default(),
        0,
        3,
    );
    restarted.restore(founder.saved(), 1);
    assert!(restarted.has_joined());
    assert_eq!(
        restarted.saved().layout,
        founder.saved().layout,
        "the saved layout, shape and all, is the node's"
    );
    assert!(restarted
        .take_notices()
        .iter()
        .any(|n| matches!(n, Notice::ShapeDiffers { peer: None, .. })));
    // Founders of different shapes would found different clusters.
    assert_ne!(
        ClusterId::founded_by(&solo(1), Shape::default()),
        ClusterId::founded_by(&solo(1), other)
    );
}

#[test]
fn a_joiner_follows_the_clusters_bucket_properties_and_says_which_differ() {
    use crate::bucket::{BucketProps, BucketTable, ConflictMode};
    let lww = BucketProps {
        conflict_mode: ConflictMode::Lww,
        ..BucketProps::default()
    };
    let theirs = BucketTable {
        defaults: BucketProps::default(),
        named: [("sessions".to_owned(), lww)].into(),
    };
    let founder = Membership::new(
        info(3, 5, Status::Up),
        vec![],
        solo(3),
        Bootstrap {
            shape: Shape::default(),
            buckets: theirs.clone(),
        },
        GossipConfig::default(),
        0,
        3,
    );
    assert_eq!(
        founder.bucket_table(),
        &theirs,
        "founded with its configuration"
    );
    for (ours, differ) in [
        (theirs.clone(), vec![]),
        (BucketTable::default(), vec!["sessions".to_owned()]),
    ] {
        let mut m = Membership::new(
            info(1, 10, Status::Up),
            vec![addr(3)],
            BTreeSet::new(),
            Bootstrap {
                shape: Shape::default(),
                buckets: ours.clone(),
            },
            GossipConfig::default(),
            0,
            1,
        );
        assert_eq!(m.bucket_table(), &ours, "unjoined: its configuration");
        for now in 1..3 {
            m.handle_push_pull_reply("n3", table_of(&founder), now);
        }
        assert!(m.has_joined());
        assert_eq!(m.bucket_table(), &theirs, "joined: the cluster's");
        let said: Vec<Vec<String>> = m
            .take_notices()
            .into_iter()
            .filter_map(|n| match n {
                Notice::BucketsDiffer { buckets, .. } => Some(buckets),
                _ => None,
            })
            .collect();
        if differ.is_empty() {
            assert!(said.is_empty(), "{said:?}");
        } else {
            assert_eq!(said, vec![differ], "said once, naming the bucket");
        }
    }
}
