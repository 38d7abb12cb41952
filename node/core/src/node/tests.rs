//! Decision tests of the node state machine: events in, effects out, no
//! network and no disk. Each case states a situation (who is down, where
//! the key lives) and the effect the coordinator must produce.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use super::*;
use crate::layout::Layout;
use crate::membership::{GossipConfig, MemberInfo, SavedTable};
use crate::proto::{Coordinate, Operation, ReplicaGet, ReplicaPut, ReplicaStored, Reply};
use crate::{
    BucketName, BucketProps, ConflictMode, Content, ErrorCode, Key, Limits, Object,
    QuorumOverrides, VersionVector,
};

const NODES: [&str; 5] = ["n1", "n2", "n3", "n4", "n5"];

fn addr(id: &str) -> SocketAddr {
    let i: u16 = id[1..].parse().expect("nK");
    SocketAddr::from(([127, 0, 0, 1], 7000 + i))
}

fn info(id: &str, status: Status) -> MemberInfo {
    MemberInfo {
        id: id.into(),
        peer_addr: addr(id),
        http_addr: addr(id),
        zone: None,
        incarnation: 1,
        status,
    }
}

fn props(n: u8, r: u8, w: u8, pr: u8, pw: u8) -> BucketProps {
    BucketProps {
        datatype: None,
        n_val: n,
        r,
        w,
        dw: 0,
        pr,
        pw,
        conflict_mode: ConflictMode::Siblings,
    }
}

fn now() -> Now {
    Now {
        mono_ms: 1_000,
        wall_ms: 1_000,
    }
}

/// Node `me` of a five-node cluster that has joined, seeing `down` down.
fn node_with(me: &str, down: &[&str], p: BucketProps, planted: Option<Planted>) -> Node {
    build(me, down, p, planted, 100)
}

fn build(
    me: &str,
    down: &[&str],
    p: BucketProps,
    planted: Option<Planted>,
    max_rounds: usize,
) -> Node {
    let all: BTreeSet<String> = NODES.iter().map(|s| s.to_string()).collect();
    let bootstrap = crate::layout::Bootstrap {
        shape: crate::layout::Shape {
            partitions: 64,
            tokens: 16,
        },
        buckets: crate::bucket::BucketTable {
            defaults: p,
            named: BTreeMap::new(),
        },
    };
    let mut m = Membership::new(
        info(me, Status::Up),
        Vec::new(),
        all.clone(),
        bootstrap.clone(),
        GossipConfig::default(),
        0,
        7,
    );
    let members = NODES
        .iter()
        .filter(|id| **id != me)
        .map(|id| {
            let status = if down.contains(id) {
                Status::Down
            } else {
                Status::Up
            };
            info(id, status)
        })
        .collect();
    m.restore(
        SavedTable {
            layout: Some(Layout::found(&all, bootstrap)),
            members,
            vote: None,
            transfer: None,
        },
        0,
    );
    let settings = Settings {
        partitions: 64,
        tokens: 16,
        replica_timeout_ms: 100,
        request_timeout_ms: 300,
        gossip_tick_ms: 50,
        handoff: HandoffSettings {
            interval_ms: 1_000,
            rate_per_second: 100,
            max_hint_age_ms: 0,
        },
        max_rounds,
        transfer_bytes_per_second: 0,
        cleanup_grace_ms: 5_000,
        anti_entropy: crate::node::AntiEntropySettings { interval_ms: 0 },
        tombstones: crate::node::TombstoneSettings { grace_ms: 0 },
        planted,
    };
    let mut node = Node::new(settings, m, now(), 1);
    drain(&mut node);
    node
}

fn node(me: &str, down: &[&str]) -> Node {
    node_with(me, down, props(3, 2, 2, 0, 0), None)
}

fn drain(node: &mut Node) -> Vec<Effect> {
    std::iter::from_fn(|| node.poll_effect())
        .filter(|e| !matches!(e, Effect::Event(_) | Effect::SaveTable { .. }))
        .collect()
}

fn bucket() -> BucketName {
    BucketName::parse("b", &Limits::default()).expect("bucket")
}

/// The first key whose preference list (of 3) satisfies `pred`.
fn key_where(node: &Node, pred: impl Fn(&[&str]) -> bool) -> (Key, Vec<String>) {
    (0..10_000)
        .find_map(|i| {
            let key = Key::parse(format!("k{i}").into_bytes(), &Limits::default()).ok()?;
            let p = node.ring().partition_of(b"b", key.as_bytes());
            let order: Vec<String> = node.ring().order(p).map(str::to_owned).collect();
            let prefs: Vec<&str> = order.iter().take(3).map(String::as_str).collect();
            pred(&prefs).then_some((key, order))
        })
        .expect("a key like that")
}

fn put(key: &Key) -> Request {
    Request::Write {
        bucket: bucket(),
        key: key.clone(),
        context: VersionVector::new(),
        operation: Operation::Put(Content::value(b"v".to_vec(), "text/plain", 0)),
        quorum: QuorumOverrides::default(),
    }
}

fn get(key: &Key, q: QuorumOverrides) -> Request {
    Request::Get {
        bucket: bucket(),
        key: key.clone(),
        quorum: q,
    }
}

fn written(node: &str) -> Object {
    crate::write::apply_client_write(
        None,
        &VersionVector::new(),
        &crate::Actor::new(node, 1),
        Content::value(b"v".to_vec(), "text/plain", 1).into(),
        ConflictMode::Siblings,
        &Limits::default(),
    )
    .expect("write")
}

/// The transmits among `effects`: (call, node it must answer for, request).
fn transmits(effects: &[Effect]) -> Vec<(CallId, String, PeerRequest)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Transmit(t) => Some((t.call, t.node.clone()?, t.request.clone())),
            _ => None,
        })
        .collect()
}

fn store_ops(effects: &[Effect]) -> Vec<(StoreId, StoreOp)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Store { id, op } => Some((*id, op.clone())),
            _ => None,
        })
        .collect()
}

fn answers(effects: &[Effect]) -> Vec<Result<Option<Object>, Failure>> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Answer { result, .. } => Some(result.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_node_outside_the_preference_list_forwards_and_a_primary_coordinates() {
    let mut n = node("n1", &[]);
    // (n1 in the preference list?, what the write turns into)
    for (primary, expect_forward) in [(false, true), (true, false)] {
        let (key, order) = key_where(&n, |p| p.contains(&"n1") == primary);
        n.handle_client(1, put(&key), now());
        let effects = drain(&mut n);
        let sent = transmits(&effects);
        if expect_forward {
            assert_eq!(sent.len(), 1, "{effects:?}");
            assert_eq!(sent[0].1, order[0], "to the first replica");
            assert!(matches!(sent[0].2, PeerRequest::Coordinate(_)));
            assert!(store_ops(&effects).is_empty(), "nothing stored here");
        } else {
            assert!(sent.is_empty(), "stores first: {effects:?}");
            let ops = store_ops(&effects);
            assert!(matches!(ops[..], [(_, StoreOp::Coordinate { .. })]));
        }
    }
}

#[test]
fn a_forward_that_timed_out_makes_a_later_refusal_not_definite() {
    let mut n = node("n1", &[]);
    let (key, order) = key_where(&n, |p| !p.contains(&"n1"));
    n.handle_client(1, put(&key), now());
    let first = transmits(&drain(&mut n));
    n.handle_reply(
        first[0].0,
        None,
        Err(CallFailure::Lost("timeout".into())),
        now(),
    );
    let second = transmits(&drain(&mut n));
    assert_eq!(second[0].1, order[1], "the next replica");
    let refusal = Reply::error(ErrorCode::StorageError, "disk");
    n.handle_reply(second[0].0, Some(order[1].as_str()), Ok(refusal), now());
    let result = answers(&drain(&mut n));
    let failure = result[0].clone().expect_err("refused");
    assert!(matches!(failure, Failure::MaybeTaken(_)), "{failure:?}");
    assert!(!failure.definite());
    assert_eq!(failure.code(), ErrorCode::Timeout);
}

#[test]
fn a_down_primary_is_replaced_by_the_nearest_fallback_with_a_hint() {
    let probe = node("n1", &[]);
    let (key, order) = key_where(&probe, |p| p[0] != "n1" && p[1] != "n1" && p[2] != "n1");
    let down = order[1].clone();
    let mut n = node("n1", &[down.as_str()]);
    n.handle_client(1, get(&key, QuorumOverrides::default()), now());
    let effects = drain(&mut n);
    let mut asked: Vec<(String, Option<String>)> = transmits(&effects)
        .into_iter()
        .map(|(_, node, req)| match req {
            PeerRequest::ReplicaGet(ReplicaGet { hint_for, .. }) => (node, hint_for),
            other => panic!("{other:?}"),
        })
        .collect();
    // n1 is the first node past the preference list, or a later one.
    for op in store_ops(&effects) {
        if let (_, StoreOp::Read { hint_for, .. }) = op {
            asked.push(("n1".into(), hint_for));
        }
    }
    asked.sort();
    let fallback = order[3].clone();
    let mut expected = vec![
        (order[0].clone(), None),
        (order[2].clone(), None),
        (fallback, Some(down)),
    ];
    expected.sort();
    assert_eq!(asked, expected);
}

#[test]
fn a_replica_put_is_a_hint_for_another_node_and_a_merge_otherwise() {
    let key = Key::parse(b"k".to_vec(), &Limits::default()).expect("key");
    // (hint_for, is it kept as a hint?)
    let cases = [(None, false), (Some("n1"), false), (Some("n3"), true)];
    for (hint_for, hint) in cases {
        let mut n = node("n1", &[]);
        let req = ReplicaPut {
            bucket: bucket(),
            key: key.clone(),
            object: written("n2"),
            mode: ConflictMode::Siblings,
            durable: true,
            hint_for: hint_for.map(str::to_owned),
        }
        .into();
        n.handle_peer(9, "n2", req, now());
        let ops = store_ops(&drain(&mut n));
        match (&ops[..], hint) {
            ([(_, StoreOp::Hint { owner, .. })], true) => assert_eq!(owner, "n3"),
            ([(_, StoreOp::Merge { durable, .. })], false) => assert!(durable),
            other => panic!("{hint_for:?}: {other:?}"),
        }
        // The answer waits for the store.
        let id = ops[0].0;
        n.handle_stored(id, Ok(Stored::Done), now());
        let responses: Vec<_> = drain(&mut n);
        assert_eq!(
            responses,
            [Effect::Respond {
                inbound: 9,
                reply: Reply::answer::<ReplicaPut>(Ok(ReplicaStored { durable: true }))
            }]
        );
    }
}

/// Runs a handoff round on `n` holding one hint for `owner`, answered by
/// `reply`; returns the effects after the reply.
fn deliver_one(n: &mut Node, owner: &str, reply: Result<Reply, CallFailure>) -> Vec<Effect> {
    let hint = Hint {
        owner: owner.into(),
        bucket: bucket(),
        key: Key::parse(b"k".to_vec(), &Limits::default()).expect("key"),
        object: written("n1"),
        created_ms: 0,
    };
    let later = Now {
        mono_ms: 2_000,
        wall_ms: 2_000,
    };
    n.handle_timeout(later);
    // Owners in order; the round asks each reachable owner for its hints.
    loop {
        let effects = drain(n);
        let ops = store_ops(&effects);
        let Some((id, StoreOp::HintsFor { owner: o, .. })) = ops.first().cloned() else {
            let sent = transmits(&effects);
            let (call, to, req) = sent.into_iter().next().expect("a delivery");
            assert_eq!(to, owner);
            assert!(matches!(
                req,
                PeerRequest::ReplicaPut(ReplicaPut {
                    durable: true,
                    hint_for: None,
                    ..
                })
            ));
            n.handle_reply(call, Some(owner), reply, later);
            return drain(n);
        };
        let hints = if o == owner {
            vec![hint.clone()]
        } else {
            Vec::new()
        };
        n.handle_stored(id, Ok(Stored::Hints(hints)), later);
    }
}

#[test]
fn a_hint_is_deleted_only_after_its_owner_stored_it() {
    // (the owner's answer, whether the hint is deleted)
    let refused = Reply::error(ErrorCode::StorageError, "disk");
    let cases = [
        (
            Ok(Reply::answer::<ReplicaPut>(Ok(ReplicaStored {
                durable: true,
            }))),
            true,
        ),
        (Ok(refused), false),
        (Err(CallFailure::Lost("timeout".into())), false),
    ];
    for (reply, deleted) in cases {
        let mut n = node("n1", &[]);
        let effects = deliver_one(&mut n, "n4", reply.clone());
        let deletes = store_ops(&effects)
            .into_iter()
            .filter(|(_, op)| matches!(op, StoreOp::DeleteHint(_)))
            .count();
        assert_eq!(deletes, usize::from(deleted), "{reply:?}: {effects:?}");
    }
}

#[test]
fn a_hint_for_a_member_that_holds_no_data_goes_to_the_keys_replicas_now() {
    // n9 was a member and holds no role (it left, or was removed dead);
    // n2 holds one and is down.
    let mut n = node("n1", &["n2"]);
    let gossip = crate::membership::GossipMsg::Ping {
        updates: vec![info("n9", Status::Down)],
    };
    n.membership.handle_message("n3", gossip.into(), 0);
    let key = Key::parse(b"k".to_vec(), &Limits::default()).expect("key");
    let p = n.ring().partition_of(b"b", b"k");
    let replicas: BTreeSet<String> = n.ring().order(p).take(3).map(str::to_owned).collect();
    let later = Now {
        mono_ms: 2_000,
        wall_ms: 2_000,
    };
    n.handle_timeout(later);
    let mut rehomed = Vec::new();
    let mut asked = BTreeSet::new();
    for _ in 0..20 {
        let effects = drain(&mut n);
        let deliveries: Vec<String> = transmits(&effects)
            .into_iter()
            .filter(|(_, _, r)| matches!(r, PeerRequest::ReplicaPut(_)))
            .map(|(_, to, _)| to)
            .collect();
        assert!(deliveries.is_empty(), "no hint is sent: {deliveries:?}");
        let Some((id, op)) = store_ops(&effects).into_iter().next() else {
            break;
        };
        let result = match op {
            StoreOp::HintsFor { owner, .. } if owner != "n9" => {
                asked.insert(owner);
                Stored::Hints(Vec::new())
            }
            StoreOp::HintsFor { owner, .. } => {
                asked.insert(owner.clone());
                let hint = Hint {
                    owner,
                    bucket: bucket(),
                    key: key.clone(),
                    object: written("n1"),
                    created_ms: 0,
                };
                Stored::Hints(vec![hint])
            }
            StoreOp::Rehome {
                hint,
                owners,
                local,
                ..
            } => {
                rehomed.push((hint.owner.clone(), owners, local));
                Stored::HintDeleted(true)
            }
            other => panic!("unexpected {other:?}"),
        };
        n.handle_stored(id, Ok(result), later);
    }
    assert!(
        asked.contains("n9"),
        "the departed owner's hints are read: {asked:?}"
    );
    assert!(
        !asked.contains("n2"),
        "a down owner with a role waits: {asked:?}"
    );
    assert_eq!(rehomed.len(), 1, "{rehomed:?}");
    let (owner, owners, local) = &rehomed[0];
    assert_eq!(owner, "n9");
    let mut to: BTreeSet<String> = owners.iter().cloned().collect();
    if *local {
        to.insert("n1".into());
    }
    assert_eq!(to, replicas, "exactly the key's replicas now");
}

#[test]
fn quorum_answers_count_primaries_for_pr() {
    // Reads with r=2 and pr as given, one primary down (a fallback stands
    // in), and every asked node answering.
    let probe = node("n1", &[]);
    let (key, order) = key_where(&probe, |p| !p.contains(&"n1"));
    let down = order[0].clone();
    // (pr, answered?)
    for (pr, ok) in [(0, true), (2, true), (3, false)] {
        let mut n = node_with("n1", &[down.as_str()], props(3, 2, 2, 0, 0), None);
        let q = QuorumOverrides {
            pr: Some(pr),
            r: Some(2.max(pr)),
            ..QuorumOverrides::default()
        };
        n.handle_client(1, get(&key, q), now());
        let mut effects = drain(&mut n);
        // Each replica answers "nothing here".
        for (call, to, _) in transmits(&effects) {
            n.handle_reply(
                call,
                Some(&to),
                Ok(Reply::answer::<ReplicaGet>(Ok(None))),
                now(),
            );
            effects.extend(drain(&mut n));
        }
        for (id, _) in store_ops(&effects) {
            n.handle_stored(id, Ok(Stored::Read(None)), now());
            effects.extend(drain(&mut n));
        }
        let result = answers(&effects);
        assert_eq!(result.len(), 1, "pr={pr}: answered once: {effects:?}");
        assert_eq!(result[0].is_ok(), ok, "pr={pr}: {result:?}");
    }
}

#[test]
fn a_planted_fallback_counted_as_a_primary_meets_pr_it_should_not() {
    let probe = node("n1", &[]);
    let (key, order) = key_where(&probe, |p| !p.contains(&"n1"));
    let down = order[0].clone();
    let p = props(3, 2, 2, 0, 0);
    let mut n = node_with(
        "n1",
        &[down.as_str()],
        p,
        Some(Planted::FallbackCountedAsPrimary),
    );
    let q = QuorumOverrides {
        pr: Some(3),
        r: Some(3),
        ..QuorumOverrides::default()
    };
    n.handle_client(1, get(&key, q), now());
    let mut effects = drain(&mut n);
    for (call, to, _) in transmits(&effects) {
        n.handle_reply(
            call,
            Some(&to),
            Ok(Reply::answer::<ReplicaGet>(Ok(None))),
            now(),
        );
        effects.extend(drain(&mut n));
    }
    for (id, _) in store_ops(&effects) {
        n.handle_stored(id, Ok(Stored::Read(None)), now());
        effects.extend(drain(&mut n));
    }
    assert!(answers(&effects)[0].is_ok(), "the bug shows: pr=3 met");
}

#[test]
fn a_write_with_pw_waits_for_primaries_not_fallbacks() {
    let probe = node("n1", &[]);
    let (key, order) = key_where(&probe, |p| p[0] == "n1");
    let down = order[1].clone();
    // w=2 pw=2: n1 (primary) and the fallback for `down` acknowledge
    // first; the answer waits for the third primary.
    let mut n = node_with("n1", &[down.as_str()], props(3, 2, 2, 0, 2), None);
    n.handle_client(1, put(&key), now());
    let ops = store_ops(&drain(&mut n));
    n.handle_stored(ops[0].0, Ok(Stored::Written(written("n1"))), now());
    let sent = transmits(&drain(&mut n));
    let (fallback, primary): (Vec<_>, Vec<_>) = sent.into_iter().partition(|(_, _, r)| {
        matches!(
            r,
            PeerRequest::ReplicaPut(ReplicaPut {
                hint_for: Some(_),
                ..
            })
        )
    });
    let stored = || {
        Ok(Reply::answer::<ReplicaPut>(Ok(ReplicaStored {
            durable: false,
        })))
    };
    n.handle_reply(fallback[0].0, Some(&fallback[0].1), stored(), now());
    assert!(answers(&drain(&mut n)).is_empty(), "w met, pw not");
    n.handle_reply(primary[0].0, Some(&primary[0].1), stored(), now());
    let result = answers(&drain(&mut n));
    assert!(matches!(result[..], [Ok(Some(_))]), "{result:?}");
}

#[test]
fn a_delete_without_context_reads_first_and_deletes_what_it_saw() {
    let mut n = node("n1", &[]);
    let (key, _) = key_where(&n, |p| p[0] == "n1");
    let delete = Request::Write {
        bucket: bucket(),
        key: key.clone(),
        context: VersionVector::new(),
        operation: Operation::Delete,
        quorum: QuorumOverrides::default(),
    };
    n.handle_client(1, delete, now());
    let mut effects = drain(&mut n);
    let seen = written("n2");
    for (call, to, req) in transmits(&effects) {
        assert!(matches!(req, PeerRequest::ReplicaGet(_)), "reads first");
        n.handle_reply(
            call,
            Some(&to),
            Ok(Reply::answer::<ReplicaGet>(Ok(Some(seen.clone())))),
            now(),
        );
        effects.extend(drain(&mut n));
    }
    // The read answers after r=2 replies; the delete follows at once.
    let context = store_ops(&effects)
        .into_iter()
        .find_map(|(_, op)| match op {
            StoreOp::Coordinate { context, .. } => Some(context),
            _ => None,
        });
    assert_eq!(context.as_ref(), Some(seen.clock()), "deletes what it saw");
}

#[test]
fn a_node_that_has_not_joined_refuses_to_coordinate() {
    let me = info("n1", Status::Up);
    let m = Membership::new(
        me,
        vec![addr("n2")],
        BTreeSet::new(),
        crate::layout::Shape {
            partitions: 64,
            tokens: 16,
        },
        GossipConfig::default(),
        0,
        1,
    );
    let mut n = Node::new(node("n1", &[]).settings().clone(), m, now(), 1);
    let key = Key::parse(b"k".to_vec(), &Limits::default()).expect("key");
    n.handle_client(1, put(&key), now());
    let result = answers(&drain(&mut n));
    assert_eq!(result, [Err(Failure::NotJoined)]);
}

#[test]
fn past_the_round_limit_client_and_forwarded_writes_are_refused_overloaded() {
    let mut n = build("n1", &[], props(3, 2, 2, 0, 0), None, 1);
    let (key, _) = key_where(&n, |p| p[0] == "n1");
    // One read under way fills the limit of one.
    n.handle_client(1, get(&key, QuorumOverrides::default()), now());
    assert!(answers(&drain(&mut n)).is_empty(), "the read waits");
    n.handle_client(2, put(&key), now());
    let refused = answers(&drain(&mut n));
    assert!(matches!(refused[..], [Err(Failure::Busy)]), "{refused:?}");
    let forwarded = crate::proto::Coordinate {
        bucket: bucket(),
        key,
        context: VersionVector::new(),
        operation: Operation::Delete,
        quorum: QuorumOverrides::default(),
    };
    n.handle_peer(7, "n2", forwarded.into(), now());
    let effects = drain(&mut n);
    let [Effect::Respond { inbound: 7, reply }] = &effects[..] else {
        panic!("one answer, nothing stored or sent: {effects:?}");
    };
    let code = reply.refused().map(|r| r.parts().0);
    assert_eq!(code, Some(ErrorCode::Overloaded));
}

#[test]
fn the_coordinator_keeps_a_hint_for_each_primary_that_missed_a_write() {
    let probe = node("n1", &[]);
    let (key, order) = key_where(&probe, |p| p[0] == "n1");
    let others: Vec<&str> = order[3..].iter().map(String::as_str).collect();
    // (down, replies) -> the primaries hinted: a primary down with no
    // fallback to stand in; a primary that fails with no spare left; and,
    // when every primary acknowledges, none.
    let (x, y) = (order[1].as_str(), order[2].as_str());
    // (nodes down, replies: node and success, primaries hinted)
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, bool)>, Vec<&'a str>);
    let cases: [Case; 3] = [
        ([vec![x], others.clone()].concat(), vec![(y, true)], vec![x]),
        (others.clone(), vec![(x, false), (y, true)], vec![x]),
        (others.clone(), vec![(x, true), (y, true)], vec![]),
    ];
    for (down, replies, hinted) in cases {
        let mut n = node("n1", &down);
        n.handle_client(1, put(&key), now());
        let ops = store_ops(&drain(&mut n));
        n.handle_stored(ops[0].0, Ok(Stored::Written(written("n1"))), now());
        let sent = transmits(&drain(&mut n));
        let mut effects = Vec::new();
        for (call, to, _) in sent {
            let ok = replies
                .iter()
                .find(|(id, _)| *id == to)
                .is_some_and(|r| r.1);
            let reply = if ok {
                Ok(Reply::answer::<ReplicaPut>(Ok(ReplicaStored {
                    durable: false,
                })))
            } else {
                Err(CallFailure::Lost("timeout".into()))
            };
            n.handle_reply(call, Some(&to), reply, now());
            effects.extend(drain(&mut n));
        }
        let kept: Vec<String> = store_ops(&effects)
            .into_iter()
            .filter_map(|(_, op)| match op {
                StoreOp::Hint { owner, durable, .. } => {
                    assert!(durable, "a coordinator's hint is fsynced");
                    Some(owner)
                }
                _ => None,
            })
            .collect();
        assert_eq!(kept, hinted, "down {down:?}, replies {replies:?}");
        assert!(
            matches!(answers(&effects)[..], [Ok(Some(_))]),
            "the write succeeds: {effects:?}"
        );
    }
}

#[test]
fn a_forward_refused_before_any_work_goes_to_the_next_replica() {
    // (the first replica's refusal, whether the write goes on to the next)
    let cases = [
        (ErrorCode::Overloaded, true),
        (ErrorCode::QuorumUnavailable, true),
        (ErrorCode::TooManySiblings, false),
    ];
    for (code, next) in cases {
        let mut n = node("n1", &[]);
        let (key, order) = key_where(&n, |p| !p.contains(&"n1"));
        n.handle_client(1, put(&key), now());
        let first = transmits(&drain(&mut n));
        let refusal = Reply::error(code, "no");
        n.handle_reply(first[0].0, Some(order[0].as_str()), Ok(refusal), now());
        let effects = drain(&mut n);
        let sent = transmits(&effects);
        if next {
            assert_eq!(sent.len(), 1, "{code}: {effects:?}");
            assert_eq!(sent[0].1, order[1], "{code}: to the next replica");
        } else {
            assert!(sent.is_empty(), "{code}: {effects:?}");
            let result = answers(&effects);
            assert!(
                matches!(result[..], [Err(Failure::Remote { .. })]),
                "{result:?}"
            );
        }
    }
}

#[test]
fn a_forward_every_replica_refuses_before_any_work_is_a_definite_refusal() {
    let mut n = node("n1", &[]);
    let (key, order) = key_where(&n, |p| !p.contains(&"n1"));
    n.handle_client(1, put(&key), now());
    let mut effects = drain(&mut n);
    for replica in &order[..3] {
        let sent = transmits(&effects);
        assert_eq!(sent.len(), 1, "{effects:?}");
        assert_eq!(&sent[0].1, replica);
        let busy = Reply::error(ErrorCode::Overloaded, "busy");
        n.handle_reply(sent[0].0, Some(replica.as_str()), Ok(busy), now());
        effects = drain(&mut n);
    }
    let result = answers(&effects);
    let [Err(failure)] = &result[..] else {
        panic!("one failed answer: {effects:?}");
    };
    assert_eq!(failure.code(), ErrorCode::Overloaded, "{failure:?}");
    assert!(failure.definite(), "nothing was taken: {failure:?}");
}

/// Runs a network of `nodes` (by id) until nothing is in flight, delivering
/// messages in an order `seed` shuffles; saves complete at once. Returns
/// each commit's outcome, by the node it was made at.
fn run_commits(
    nodes: &mut BTreeMap<String, Node>,
    seed: u64,
) -> BTreeMap<String, Result<Layout, CommitFailure>> {
    enum Msg {
        Request {
            from: String,
            to: String,
            call: CallId,
            request: PeerRequest,
        },
        Reply {
            to: String,
            from: String,
            call: CallId,
            reply: Reply,
        },
    }
    let mut rng = seed | 1;
    let mut next = move |n: usize| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % n as u64) as usize
    };
    let mut t = now();
    let mut flight: Vec<Msg> = Vec::new();
    let mut routes: BTreeMap<(String, InboundId), (String, CallId)> = BTreeMap::new();
    let mut outcomes = BTreeMap::new();
    let mut inbound: InboundId = 0;
    for _ in 0..100_000 {
        for (id, node) in nodes.iter_mut() {
            while let Some(e) = node.poll_effect() {
                match e {
                    // Only the commit's messages travel (gossip is lost).
                    Effect::Transmit(tx) if matches!(tx.request, PeerRequest::Decide(_)) => flight
                        .push(Msg::Request {
                            from: id.clone(),
                            to: tx.node.clone().expect("to a node"),
                            call: tx.call,
                            request: tx.request,
                        }),
                    Effect::Respond { inbound, reply } => {
                        if let Some((to, call)) = routes.remove(&(id.clone(), inbound)) {
                            flight.push(Msg::Reply {
                                to,
                                from: id.clone(),
                                call,
                                reply,
                            });
                        }
                    }
                    Effect::SaveTable { done: Some(s), .. } => {
                        node.handle_stored(s, Ok(Stored::Done), t);
                    }
                    Effect::Committed { result, .. } => {
                        outcomes.insert(id.clone(), result);
                    }
                    _ => {}
                }
            }
        }
        if flight.is_empty() {
            if nodes.values().all(|n| n.commits.is_empty()) {
                return outcomes;
            }
            t.mono_ms += 10;
            for node in nodes.values_mut() {
                node.handle_timeout(t);
            }
            continue;
        }
        let i = next(flight.len());
        match flight.swap_remove(i) {
            Msg::Request {
                from,
                to,
                call,
                request,
            } => {
                inbound += 1;
                routes.insert((to.clone(), inbound), (from.clone(), call));
                // A request to a node not in the map is lost.
                if let Some(n) = nodes.get_mut(&to) {
                    n.handle_peer(inbound, &from, request, t);
                }
            }
            Msg::Reply {
                to,
                from,
                call,
                reply,
            } => {
                if let Some(n) = nodes.get_mut(&to) {
                    n.handle_reply(call, Some(&from), Ok(reply), t);
                }
            }
        }
    }
    panic!("the commits did not end");
}

fn five() -> BTreeMap<String, Node> {
    NODES
        .iter()
        .map(|id| (id.to_string(), node(id, &[])))
        .collect()
}

#[test]
fn a_commit_makes_the_next_version_on_every_voter() {
    let mut nodes = five();
    let n1 = nodes.get_mut("n1").expect("n1");
    n1.stage("n5", crate::layout::Change::Remove)
        .expect("staged");
    n1.handle_commit(1, 1, now());
    let outcomes = run_commits(&mut nodes, 7);
    let layout = outcomes["n1"].clone().expect("committed");
    assert_eq!(layout.version, 2);
    assert!(!layout.roles.contains_key("n5"));
    assert_eq!(nodes["n1"].membership().layout(), Some(&layout));
    assert!(
        !nodes["n1"].ring().order(0).any(|id| id == "n5"),
        "the ring follows the committed layout"
    );
    // Committing against a version that is gone is refused at once.
    let n1 = nodes.get_mut("n1").expect("n1");
    n1.handle_commit(2, 1, now());
    let outcomes = run_commits(&mut nodes, 7);
    assert!(
        matches!(
            outcomes["n1"],
            Err(CommitFailure::Stale {
                against: 1,
                current: 2
            })
        ),
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes["n1"].clone().map_err(|e| e.code()),
        Err(ErrorCode::LayoutConflict)
    );
}

#[test]
fn of_two_concurrent_commits_exactly_one_wins_and_the_other_is_told() {
    // Different changes, and the very same change committed twice: two
    // commits are two proposals either way.
    let cases = [[("n1", "n5"), ("n2", "n4")], [("n1", "n5"), ("n2", "n5")]];
    for seed in 1..=64 {
        let mut nodes = five();
        for (at, leaves) in cases[seed as usize % 2] {
            let n = nodes.get_mut(at).expect("node");
            n.stage(leaves, crate::layout::Change::Remove)
                .expect("staged");
            n.handle_commit(1, 1, now());
        }
        let outcomes = run_commits(&mut nodes, seed);
        let won: Vec<&Layout> = outcomes.values().filter_map(|o| o.as_ref().ok()).collect();
        assert_eq!(won.len(), 1, "seed {seed}: {outcomes:?}");
        let lost: Vec<&CommitFailure> =
            outcomes.values().filter_map(|o| o.as_ref().err()).collect();
        assert!(
            matches!(lost[..], [CommitFailure::Conflict { version: 2 }]),
            "seed {seed}: {lost:?}"
        );
        // Both proposers now hold the one chosen version.
        assert_eq!(
            nodes["n1"].membership().layout().map(Layout::digest),
            Some(won[0].digest()),
            "seed {seed}"
        );
        assert_eq!(
            nodes["n2"].membership().layout().map(Layout::digest),
            Some(won[0].digest()),
            "seed {seed}"
        );
    }
}

#[test]
fn a_commit_without_a_majority_of_voters_is_not_decided() {
    let mut nodes = five();
    for gone in ["n3", "n4", "n5"] {
        nodes.remove(gone);
    }
    let n1 = nodes.get_mut("n1").expect("n1");
    n1.stage("n5", crate::layout::Change::Remove)
        .expect("staged");
    n1.handle_commit(1, 1, now());
    // Requests to the missing voters go nowhere and time out.
    let outcomes = run_commits(&mut nodes, 3);
    assert!(
        matches!(
            outcomes["n1"],
            Err(CommitFailure::Unavailable {
                answered: 5,
                voters: 5,
                version: 2
            })
        ),
        "{outcomes:?}"
    );
    assert_eq!(
        nodes["n1"].membership().layout().map(|l| l.version),
        Some(1)
    );
}

/// Node `me` of five, `down` down, that adopted the layout removing n5:
/// a move under way.
fn mid_move(me: &str, down: &[&str], planted: Option<Planted>) -> (Node, Layout) {
    let mut n = node_with(me, down, props(3, 2, 2, 0, 0), planted);
    let next = remove_n5(&mut n);
    (n, next)
}

/// Gives `n` the next layout version, which removes n5 (a move); returns it.
fn remove_n5(n: &mut Node) -> Layout {
    let mut l = n.membership().layout().cloned().expect("a layout");
    l.stage("n1", "n5", crate::layout::Change::Remove)
        .expect("staged");
    let next = l.next().expect("the next version");
    n.membership.adopt(&next);
    n.after_membership();
    next
}

/// Runs the timers at `t`, completing every save at once; the effects
/// other than saves and events.
fn tick(n: &mut Node, t: Now) -> Vec<Effect> {
    n.handle_timeout(t);
    let mut out = Vec::new();
    while let Some(e) = n.poll_effect() {
        match e {
            Effect::SaveTable { done: Some(s), .. } => n.handle_stored(s, Ok(Stored::Done), t),
            Effect::SaveTable { .. } | Effect::Event(_) => {}
            other => out.push(other),
        }
    }
    out
}

fn pulls(effects: &[Effect]) -> usize {
    transmits(effects)
        .iter()
        .filter(|(_, _, r)| matches!(r, PeerRequest::Pull(_)))
        .count()
}

#[test]
fn a_move_copies_only_once_every_live_member_acknowledged_its_version() {
    for planted in [None, Some(Planted::CopyBeforeAcknowledged)] {
        let (mut n, next) = mid_move("n1", &["n4"], planted);
        assert!(!next.gains("n1").is_empty(), "n1 gains partitions");
        let mut t = now();
        let mut effects = Vec::new();
        for _ in 0..2 {
            t.mono_ms += 100;
            effects.extend(tick(&mut n, t));
        }
        let layout = n.membership().layout().cloned().expect("layout");
        assert_eq!(
            layout.acked.get("n1"),
            Some(&next.version),
            "it acknowledged the version once saved"
        );
        if planted.is_some() {
            assert!(pulls(&effects) > 0, "the planted bug copies at once");
            continue;
        }
        // n2, n3 and n5 are live and may still route by version 1: a
        // write of theirs would reach the replicas before the move only.
        assert_eq!(pulls(&effects), 0, "{effects:?}");
        let why = n.transfer_status().stalled.into_values().next();
        assert_eq!(
            why.as_deref(),
            Some("waiting for n2, n3, n5 to acknowledge layout version 2"),
        );
        // n4 is down: it coordinates nothing, and is not waited for.
        let mut acked = layout.clone();
        for id in ["n2", "n3", "n5"] {
            acked.mark_acked(id, next.version);
        }
        n.membership.adopt(&acked);
        t.mono_ms += 100;
        let effects = tick(&mut n, t);
        assert!(pulls(&effects) > 0, "{effects:?}");
    }
}

#[test]
fn the_transfer_status_shows_no_counters_of_an_earlier_move() {
    let (mut n, next) = mid_move("n1", &["n4"], None);
    let gains = next.gains("n1").len();
    assert!(gains > 0);
    // Progress saved by the move before this one, all of it copied.
    let earlier = CopyProgress {
        from: 1,
        version: 1,
        done: (0..40).collect(),
        copied_keys: 500,
        ..CopyProgress::default()
    };
    n.membership.set_transfer(Some(earlier));
    let status = n.transfer_status();
    assert_eq!(
        (status.gaining, status.copied, status.keys),
        (gains, 0, 0),
        "{status:?}"
    );
    assert_eq!(status.version, next.version);
}

#[test]
fn a_node_acknowledges_a_version_only_after_its_writes_routed_by_the_one_before_end() {
    let mut n = node("n1", &[]);
    let (key, _) = key_where(&n, |p| p.contains(&"n1"));
    n.handle_client(1, put(&key), now());
    let effects = drain(&mut n);
    let (id, _) = store_ops(&effects)
        .into_iter()
        .next()
        .expect("stored first");
    n.handle_stored(id, Ok(Stored::Written(written("n1"))), now());
    let sent = transmits(&drain(&mut n));
    assert!(!sent.is_empty(), "the write goes to the other replicas");
    // A move is committed while the write is under way.
    let next = remove_n5(&mut n);
    let mut t = now();
    t.mono_ms += 60;
    tick(&mut n, t);
    let acked = |n: &Node| {
        n.membership()
            .layout()
            .and_then(|l| l.acked.get("n1").copied())
    };
    assert_eq!(acked(&n), None, "a write routed by version 1 is in flight");
    // The replicas answer: the write ends, and the version is acknowledged.
    for (call, from, _) in sent {
        let reply = Reply::answer::<ReplicaPut>(Ok(ReplicaStored { durable: false }));
        n.handle_reply(call, Some(&from), Ok(reply), t);
    }
    drain(&mut n);
    assert!(n.writes.is_empty(), "the write ended");
    t.mono_ms += 60;
    tick(&mut n, t);
    assert_eq!(acked(&n), Some(next.version));
}

#[test]
fn a_blind_delete_is_resolved_where_it_enters_and_a_late_forward_deletes_nothing_newer() {
    let blind = |key: &Key| Request::Write {
        bucket: bucket(),
        key: key.clone(),
        context: VersionVector::new(),
        operation: Operation::Delete,
        quorum: QuorumOverrides::default(),
    };
    // The node the client asked, outside the key's preference list,
    // reads before it forwards anything.
    let mut entry = node("n1", &[]);
    let (key, _) = key_where(&entry, |p| !p.contains(&"n1"));
    entry.handle_client(1, blind(&key), now());
    let sent = transmits(&drain(&mut entry));
    assert!(!sent.is_empty());
    assert!(
        sent.iter()
            .all(|(_, _, r)| matches!(r, PeerRequest::ReplicaGet(_))),
        "reads first: {sent:?}"
    );
    // A replica that receives the forwarded delete (late, or twice: it
    // was settled where it entered) writes the tombstone with the context
    // it carries and reads nothing: what it holds now may be a write
    // acknowledged after the delete.
    let mut replica = node("n2", &[]);
    let (key, _) = key_where(&replica, |p| p[0] == "n2");
    let forwarded = Coordinate {
        bucket: bucket(),
        key: key.clone(),
        context: VersionVector::new(),
        operation: Operation::Delete,
        quorum: QuorumOverrides::default(),
    };
    replica.handle_peer(1, "n1", forwarded.into(), now());
    let effects = drain(&mut replica);
    assert!(transmits(&effects).is_empty(), "no read: {effects:?}");
    let context = store_ops(&effects)
        .into_iter()
        .find_map(|(_, op)| match op {
            StoreOp::Coordinate { context, .. } => Some(context),
            _ => None,
        });
    assert_eq!(context, Some(VersionVector::new()), "{effects:?}");
}

#[test]
fn a_raised_n_val_copies_the_buckets_keys_to_the_replica_that_gains_it() {
    let mut n = node("n1", &[]);
    let v1 = n.membership().layout().cloned().expect("a layout");
    // small: n_val 2, then raised back to 3 (the replicas stay).
    let mut l = v1.clone();
    l.stage_n_val("n1", "small", 2).expect("staged");
    let mut v2 = l.next().expect("v2");
    for id in NODES {
        v2.mark_synced(id, v2.version);
    }
    let mut v3 = v2.handover().expect("v3");
    v3.stage_n_val("n1", "small", 3).expect("staged");
    let mut v4 = v3.next().expect("v4");
    for id in NODES {
        v4.mark_acked(id, v4.version);
    }
    assert_eq!(v4.assignment, v1.assignment, "the same replicas");
    n.membership.adopt(&v4);
    n.after_membership();
    let gains = v4.gains("n1");
    assert!(!gains.is_empty());
    let mut t = now();
    let mut sent = Vec::new();
    for _ in 0..3 {
        t.mono_ms += 100;
        sent.extend(transmits(&tick(&mut n, t)));
    }
    let pulls: Vec<_> = sent
        .into_iter()
        .filter_map(|(call, to, r)| match r {
            PeerRequest::Pull(pull) => Some((call, to, pull)),
            _ => None,
        })
        .collect();
    assert!(!pulls.is_empty(), "it pulls");
    let (call, from, pull) = pulls[0].clone();
    assert!(gains.contains_key(&pull.partition));
    let object = |bucket: &str| crate::proto::Pulled {
        bucket: BucketName::parse(bucket, &Limits::default()).expect("bucket"),
        key: Key::parse(b"k".to_vec(), &Limits::default()).expect("key"),
        object: written("n2"),
    };
    let chunk = crate::proto::Chunk {
        objects: vec![object("small"), object("other")],
        next: None,
    };
    n.handle_reply(
        call,
        Some(&from),
        Ok(Reply::answer::<crate::proto::Pull>(Ok(chunk))),
        t,
    );
    let merged: Vec<String> = store_ops(&drain(&mut n))
        .into_iter()
        .flat_map(|(_, op)| match op {
            StoreOp::MergeAll { objects, .. } => objects
                .into_iter()
                .map(|(o, _)| o.bucket.as_str().to_owned())
                .collect(),
            _ => Vec::new(),
        })
        .collect();
    assert_eq!(merged, ["small"], "only the bucket whose n_val grew");
}

#[test]
fn after_an_n_val_went_down_the_replica_past_it_drops_that_buckets_keys_only() {
    let mut n = node("n1", &[]);
    let mut l = n.membership().layout().cloned().expect("a layout");
    l.stage_n_val("n1", "small", 2).expect("staged");
    let mut v2 = l.next().expect("v2");
    for id in NODES {
        v2.mark_synced(id, v2.version);
    }
    let mut v3 = v2.handover().expect("v3");
    for id in NODES {
        v3.mark_acked(id, v3.version);
    }
    n.membership.adopt(&v3);
    n.after_membership();
    let mut t = now();
    let mut dropped = Vec::new();
    for _ in 0..3 {
        // Past the cleanup grace.
        t.mono_ms += 6_000;
        for (_, op) in store_ops(&tick(&mut n, t)) {
            if let StoreOp::DropPartitions { dropped: d, .. } = op {
                dropped.extend(d);
            }
        }
    }
    // A third replica drops small's keys; a node past the third (holding
    // none of the partition) drops all; the first two keep everything.
    let small = crate::layout::Scope::Only(["small".to_string()].into());
    let want: Vec<(u32, crate::layout::Scope)> = (0..64)
        .filter_map(|p| match n.ring().order(p).position(|id| id == "n1") {
            Some(0 | 1) => None,
            Some(2) => Some((p, small.clone())),
            _ => Some((p, crate::layout::Scope::default())),
        })
        .collect();
    assert!(want.iter().any(|(_, s)| *s == small));
    assert_eq!(dropped, want);
}

/// A reaping pass of n1 over the partition of a key whose replicas are
/// n1 (first), then two others: n1 lists the key's tombstone, asks the
/// other two in turn, each answering `held` (`None`: no answer). Returns
/// the keys n1 deletes (its own commit) and the replicas told to delete.
fn reap_pass(
    down: &[&str],
    held: [Option<bool>; 2],
) -> (Vec<crate::proto::KeyDigest>, Vec<String>) {
    let (key, order) = key_where(&node("n1", &[]), |p| p[0] == "n1");
    let mut n = node("n1", down);
    n.settings.tombstones.grace_ms = 500;
    let p = n.ring().partition_of(b"b", key.as_bytes());
    assert!(n.start_reap(p, now()));
    let ops = store_ops(&drain(&mut n));
    let [(id, StoreOp::Tombstones { before_ms, .. })] = ops.as_slice() else {
        panic!("a listing first: {ops:?}");
    };
    assert_eq!(*before_ms, now().wall_ms - 500, "the grace period is kept");
    let tombstone = crate::proto::KeyDigest {
        bucket: bucket(),
        key,
        digest: 7,
    };
    n.handle_stored(*id, Ok(Stored::Keys(vec![tombstone])), now());
    let mut asked = Vec::new();
    let mut effects = drain(&mut n);
    for answer in held {
        let sent = transmits(&effects);
        let Some((call, to, PeerRequest::Reap(r))) = sent.first().cloned() else {
            break;
        };
        assert!(!r.commit, "every replica is asked before any deletes");
        assert_eq!(sent.len(), 1, "one replica at a time");
        asked.push(to.clone());
        let reply = match answer {
            Some(h) => Ok(Reply::answer::<crate::proto::Reap>(Ok(vec![h]))),
            None => Err(CallFailure::Lost("timed out".into())),
        };
        n.handle_reply(call, Some(&to), reply, now());
        effects = drain(&mut n);
    }
    assert!(asked.iter().all(|a| order[1..3].contains(a)), "{asked:?}");
    let deleted_here = store_ops(&effects)
        .into_iter()
        .filter_map(|(_, op)| match op {
            StoreOp::Reap { keys, commit, .. } => commit.then_some(keys),
            _ => None,
        })
        .flatten()
        .collect();
    let told = transmits(&effects)
        .into_iter()
        .filter_map(|(_, to, req)| matches!(req, PeerRequest::Reap(r) if r.commit).then_some(to))
        .collect();
    (deleted_here, told)
}

#[test]
fn a_tombstone_is_reaped_only_when_every_replica_holds_it() {
    let (here, told) = reap_pass(&[], [Some(true), Some(true)]);
    assert_eq!(here.len(), 1, "both replicas hold it: reaped here");
    assert_eq!(told.len(), 2, "and on both of them");
    for held in [
        [Some(true), Some(false)],
        [Some(false), Some(true)],
        [Some(true), None],
    ] {
        let (here, told) = reap_pass(&[], held);
        assert!(here.is_empty() && told.is_empty(), "{held:?}: kept");
    }
}

#[test]
fn a_tombstone_with_a_replica_down_is_kept_without_asking() {
    let n = node("n1", &[]);
    let (_, order) = key_where(&n, |p| p[0] == "n1");
    let (here, told) = reap_pass(&[order[2].as_str()], [Some(true), Some(true)]);
    assert!(here.is_empty() && told.is_empty());
}
