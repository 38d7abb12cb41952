//! Tests of the DVV-set rules: the named hard cases, then property tests over
//! histories made by a small simulated cluster of replicas.

use proptest::prelude::*;

use super::*;

fn a(n: &str) -> Actor {
    Actor::new(n, 1)
}

fn val(v: &str, ts: u64) -> Content {
    Content::value(v.as_bytes().to_vec(), "text/plain", ts)
}

fn values(o: &Object) -> Vec<String> {
    let mut v: Vec<String> = o
        .live_siblings()
        .map(|s| String::from_utf8_lossy(&s.content.value).into_owned())
        .collect();
    v.sort();
    v
}

const SIB: ConflictMode = ConflictMode::Siblings;

#[test]
fn same_context_same_coordinator_keeps_both_writes() {
    // The case that breaks a plain vector clock with the coordinator as actor.
    let mut o = Object::new();
    o.update(&VersionVector::new(), &a("n1"), val("v0", 1), SIB)
        .expect("update");
    let ctx = o.clock().clone();
    o.update(&ctx, &a("n1"), val("alice", 2), SIB)
        .expect("update");
    o.update(&ctx, &a("n1"), val("bob", 3), SIB)
        .expect("update");
    assert_eq!(values(&o), ["alice", "bob"]);

    // A write carrying the context of both replaces them.
    let both = o.clock().clone();
    o.update(&both, &a("n1"), val("merged", 4), SIB)
        .expect("update");
    assert_eq!(values(&o), ["merged"]);
    assert_eq!(o.siblings().len(), 1);
}

#[test]
fn replicas_agree_on_the_version_digest_exactly_when_they_hold_one_version() {
    let mut o = Object::new();
    o.update(&VersionVector::new(), &a("n1"), val("x", 1), SIB)
        .expect("update");
    let mut replica = Object::new();
    replica.merge(&o, SIB);
    assert_eq!(o.version_digest(), replica.version_digest());
    // A concurrent write elsewhere is another version, merged or not.
    let mut other = Object::new();
    other
        .update(&VersionVector::new(), &a("n2"), val("x", 1), SIB)
        .expect("update");
    assert_ne!(o.version_digest(), other.version_digest());
    replica.merge(&other, SIB);
    assert_ne!(o.version_digest(), replica.version_digest());
    o.merge(&other, SIB);
    assert_eq!(o.version_digest(), replica.version_digest());
}

#[test]
fn blind_write_becomes_a_sibling() {
    let mut o = Object::new();
    o.update(&VersionVector::new(), &a("n1"), val("x", 1), SIB)
        .expect("update");
    o.update(&VersionVector::new(), &a("n1"), val("y", 2), SIB)
        .expect("update");
    assert_eq!(values(&o), ["x", "y"]);
}

#[test]
fn lww_keeps_the_latest_timestamp() {
    let lww = ConflictMode::Lww;
    let mut o = Object::new();
    o.update(&VersionVector::new(), &a("n1"), val("new", 20), lww)
        .expect("update");
    o.update(&VersionVector::new(), &a("n1"), val("old", 10), lww)
        .expect("update");
    assert_eq!(values(&o), ["new"]);
    o.update(&VersionVector::new(), &a("n2"), val("newest", 30), lww)
        .expect("update");
    assert_eq!(values(&o), ["newest"]);
}

#[test]
fn delete_leaves_a_tombstone_that_a_context_write_replaces() {
    let mut o = Object::new();
    o.update(&VersionVector::new(), &a("n1"), val("x", 1), SIB)
        .expect("update");
    let ctx = o.clock().clone();
    o.update(&ctx, &a("n1"), Content::tombstone(2), SIB)
        .expect("update");
    assert!(o.is_deleted());
    assert_eq!(o.siblings().len(), 1);
    let ctx = o.clock().clone();
    o.update(&ctx, &a("n1"), val("back", 3), SIB)
        .expect("update");
    assert_eq!(values(&o), ["back"]);
    assert_eq!(o.siblings().len(), 1);
}

#[test]
fn concurrent_writes_on_two_replicas_merge_to_siblings() {
    let mut x = Object::new();
    let mut y = Object::new();
    x.update(&VersionVector::new(), &a("n1"), val("x", 1), SIB)
        .expect("update");
    y.update(&VersionVector::new(), &a("n2"), val("y", 1), SIB)
        .expect("update");
    let mut m = x.clone();
    m.merge(&y, SIB);
    assert_eq!(values(&m), ["x", "y"]);
    // A replica that resolved the conflict wins over a stale one.
    let ctx = m.clock().clone();
    m.update(&ctx, &a("n1"), val("xy", 2), SIB).expect("update");
    let mut stale = x.clone();
    stale.merge(&m, SIB);
    assert_eq!(values(&stale), ["xy"]);
    assert!(m.dominates(&x, SIB));
    assert!(!x.dominates(&m, SIB));
}

#[test]
fn new_epoch_never_reuses_dots() {
    // kv679: a replica that lost its data must not reissue (n1, 1).
    let mut survivor = Object::new();
    survivor
        .update(
            &VersionVector::new(),
            &Actor::new("n1", 1),
            val("old", 1),
            SIB,
        )
        .expect("update");
    let mut wiped = Object::new(); // n1 after a disk wipe, new epoch
    wiped
        .update(
            &VersionVector::new(),
            &Actor::new("n1", 2),
            val("new", 2),
            SIB,
        )
        .expect("update");
    survivor.merge(&wiped, SIB);
    assert_eq!(values(&survivor), ["new", "old"]);

    // With the old epoch the new write would have been swallowed: this is
    // the bug the epoch prevents.
    let mut survivor = Object::new();
    survivor
        .update(
            &VersionVector::new(),
            &Actor::new("n1", 1),
            val("old", 1),
            SIB,
        )
        .expect("update");
    let mut reused = Object::new();
    reused
        .update(
            &VersionVector::new(),
            &Actor::new("n1", 1),
            val("new", 2),
            SIB,
        )
        .expect("update");
    // A reused dot with other content is kept beside the old one, and
    // counted, in either order: never silently one of them.
    let mut a_then_b = survivor.clone();
    assert_eq!(a_then_b.merge_counting(&reused, SIB), 2);
    assert_eq!(values(&a_then_b), ["new", "old"]);
    let mut b_then_a = reused.clone();
    b_then_a.merge(&survivor, SIB);
    assert_eq!(a_then_b, b_then_a);
    // A context that saw the dot replaces both.
    let ctx = a_then_b.clock().clone();
    a_then_b
        .update(&ctx, &Actor::new("n1", 1), val("resolved", 3), SIB)
        .expect("update");
    assert_eq!(values(&a_then_b), ["resolved"]);
}

#[test]
fn an_overflowing_context_is_an_error_not_a_wrap() {
    let mut o = Object::new();
    let me = a("n1");
    let forged: VersionVector = [(me.clone(), u64::MAX)].into_iter().collect();
    let before = o.clone();
    assert_eq!(
        o.update(&forged, &me, val("x", 1), SIB),
        Err(VersionError::CounterOverflow {
            actor: me.clone(),
            counter: u64::MAX
        })
    );
    assert_eq!(o, before, "a refused write changes nothing");
    // One below the top still works, once.
    let almost: VersionVector = [(me.clone(), u64::MAX - 1)].into_iter().collect();
    let dot = o
        .update(&almost, &me, val("y", 1), SIB)
        .expect("last counter");
    assert_eq!(dot.counter, u64::MAX);
    assert!(o
        .update(&VersionVector::new(), &me, val("z", 1), SIB)
        .is_err());
}

#[test]
fn serde_round_trip() {
    let mut o = Object::new();
    o.update(&VersionVector::new(), &a("n1"), val("x", 1), SIB)
        .expect("update");
    o.update(&VersionVector::new(), &a("n2"), val("y", 2), SIB)
        .expect("update");
    let bytes = rmp_serde::to_vec(&o).expect("encode");
    let back: Object = rmp_serde::from_slice(&bytes).expect("decode");
    assert_eq!(back, o);
}

// ---- property tests over simulated histories ----------------------------

#[derive(Debug, Clone)]
enum Op {
    /// A client writes through `replica`, with the `ctx`-th context it read
    /// earlier (or none: a blind write).
    Put {
        replica: usize,
        ctx: Option<usize>,
        ts: u64,
    },
    /// A client reads `replica`, keeping its context for a later put.
    Read { replica: usize },
    /// Anti-entropy / replication: `to` merges `from`'s state.
    Sync { from: usize, to: usize },
    /// A put whose context a client forged: `replica`'s own actor at
    /// `counter` (up to `u64::MAX`), or an invented actor.
    Forged {
        replica: usize,
        counter: u64,
        invented: bool,
    },
    /// `replica` loses its state but keeps its actor: its next writes
    /// reuse dots (what actor epochs and the node-wide counter prevent).
    Wipe { replica: usize },
}

const REPLICAS: usize = 3;

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..REPLICAS, proptest::option::of(0usize..64), 0u64..50)
            .prop_map(|(replica, ctx, ts)| Op::Put { replica, ctx, ts }),
        2 => (0..REPLICAS).prop_map(|replica| Op::Read { replica }),
        2 => (0..REPLICAS, 0..REPLICAS).prop_map(|(from, to)| Op::Sync { from, to }),
        1 => (0..REPLICAS, prop_oneof![Just(u64::MAX), Just(u64::MAX - 1), 0u64..10], any::<bool>())
            .prop_map(|(replica, counter, invented)| Op::Forged { replica, counter, invented }),
    ]
}

/// Histories that may also lose a replica's state (and so reuse dots).
fn op_with_wipes() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => op(),
        1 => (0..REPLICAS).prop_map(|replica| Op::Wipe { replica }),
    ]
}

/// The outcome of a history: each replica's object, and every write made,
/// with its dot and the context it carried.
struct History {
    replicas: Vec<Object>,
    writes: Vec<(Dot, VersionVector, String)>,
}

fn run(ops: &[Op], mode: ConflictMode) -> History {
    let actors: Vec<Actor> = (0..REPLICAS)
        .map(|i| Actor::new(format!("n{i}"), 42))
        .collect();
    let mut replicas = vec![Object::new(); REPLICAS];
    let mut contexts: Vec<VersionVector> = Vec::new();
    let mut writes = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        match *op {
            Op::Put { replica, ctx, ts } => {
                let ctx = match ctx {
                    Some(k) if !contexts.is_empty() => contexts[k % contexts.len()].clone(),
                    _ => VersionVector::new(),
                };
                let name = format!("w{i}");
                // A forged context may have run the counter to the top:
                // then the write is refused whole.
                if let Ok(dot) =
                    replicas[replica].update(&ctx, &actors[replica], val(&name, ts), mode)
                {
                    writes.push((dot, ctx, name));
                }
            }
            Op::Forged {
                replica,
                counter,
                invented,
            } => {
                let mut ctx = replicas[replica].clock().clone();
                let actor = if invented {
                    Actor::new("ghost", 7)
                } else {
                    actors[replica].clone()
                };
                ctx.witness(&actor, counter);
                let name = format!("w{i}");
                let before = replicas[replica].clone();
                match replicas[replica].update(&ctx, &actors[replica], val(&name, 0), mode) {
                    Ok(dot) => writes.push((dot, ctx, name)),
                    // Refused whole: nothing changed.
                    Err(VersionError::CounterOverflow { .. }) => {
                        assert_eq!(replicas[replica], before);
                    }
                }
            }
            Op::Wipe { replica } => replicas[replica] = Object::new(),
            Op::Read { replica } => contexts.push(replicas[replica].clock().clone()),
            Op::Sync { from, to } if from != to => {
                let src = replicas[from].clone();
                replicas[to].merge(&src, mode);
            }
            Op::Sync { .. } => {}
        }
    }
    History { replicas, writes }
}

fn converge(replicas: &[Object], mode: ConflictMode) -> Object {
    let mut all = Object::new();
    for r in replicas {
        all.merge(r, mode);
    }
    all
}

fn merged(x: &Object, y: &Object, mode: ConflictMode) -> Object {
    let mut m = x.clone();
    m.merge(y, mode);
    m
}

fn mode() -> impl Strategy<Value = ConflictMode> {
    prop_oneof![Just(ConflictMode::Siblings), Just(ConflictMode::Lww)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn merge_is_commutative(ops in prop::collection::vec(op_with_wipes(), 0..40), m in mode()) {
        let h = run(&ops, m);
        let (x, y) = (&h.replicas[0], &h.replicas[1]);
        prop_assert_eq!(merged(x, y, m), merged(y, x, m));
    }

    #[test]
    fn merge_is_associative(ops in prop::collection::vec(op_with_wipes(), 0..40), m in mode()) {
        let h = run(&ops, m);
        let (x, y, z) = (&h.replicas[0], &h.replicas[1], &h.replicas[2]);
        prop_assert_eq!(
            merged(&merged(x, y, m), z, m),
            merged(x, &merged(y, z, m), m)
        );
    }

    #[test]
    fn merge_is_idempotent(ops in prop::collection::vec(op_with_wipes(), 0..40), m in mode()) {
        let h = run(&ops, m);
        for r in &h.replicas {
            prop_assert_eq!(&merged(r, r, m), r);
        }
        let all = converge(&h.replicas, m);
        for r in &h.replicas {
            // Merging in something already seen changes nothing.
            prop_assert_eq!(merged(&all, r, m), all.clone());
        }
    }

    #[test]
    fn invariants_hold(ops in prop::collection::vec(op_with_wipes(), 0..40), m in mode()) {
        let h = run(&ops, m);
        for r in h.replicas.iter().chain(std::iter::once(&converge(&h.replicas, m))) {
            for w in r.siblings().windows(2) {
                prop_assert!(w[0] < w[1], "siblings sorted, unique");
            }
            for s in r.siblings() {
                prop_assert!(r.clock().covers(&s.dot), "clock covers every sibling");
            }
            if m == ConflictMode::Lww {
                prop_assert!(r.siblings().len() <= 1);
            }
        }
    }

    /// No write is dropped unless a later write's context saw it: after the
    /// replicas converge, the values left are exactly the writes no context
    /// covers.
    #[test]
    fn no_concurrent_write_is_lost(ops in prop::collection::vec(op(), 0..60)) {
        let h = run(&ops, SIB);
        let all = converge(&h.replicas, SIB);
        let mut expected: Vec<String> = h
            .writes
            .iter()
            .filter(|(dot, _, _)| !h.writes.iter().any(|(_, ctx, _)| ctx.covers(dot)))
            .map(|(_, _, name)| name.clone())
            .collect();
        expected.sort();
        prop_assert_eq!(values(&all), expected);
    }

    /// A dot reused with other content never silently loses either value:
    /// whatever order replicas merge in, both stay until a context that saw
    /// the dot replaces them.
    #[test]
    fn colliding_dots_keep_both_values(order in Just(()).prop_perturb(|_, mut rng| {
        let mut v = vec![0usize, 1, 2];
        for i in (1..3).rev() {
            v.swap(i, (rng.next_u32() as usize) % (i + 1));
        }
        v
    })) {
        let n1 = Actor::new("n1", 1);
        let mut states = [Object::new(), Object::new(), Object::new()];
        states[0].update(&VersionVector::new(), &n1, val("first", 1), SIB).expect("update");
        states[1].update(&VersionVector::new(), &n1, val("reused", 2), SIB).expect("update");
        states[2].update(&VersionVector::new(), &Actor::new("n2", 1), val("other", 3), SIB).expect("update");
        let mut all = Object::new();
        for i in order {
            all.merge(&states[i], SIB);
        }
        prop_assert_eq!(values(&all), ["first", "other", "reused"]);
    }

    /// In lww mode every replica ends with the greatest (timestamp, dot).
    #[test]
    fn lww_converges_to_the_greatest(ops in prop::collection::vec(op(), 1..60)) {
        let ops: Vec<Op> = ops.into_iter().filter(|o| !matches!(o, Op::Forged { .. })).collect();
        let h = run(&ops, ConflictMode::Lww);
        let all = converge(&h.replicas, ConflictMode::Lww);
        let winner = h
            .writes
            .iter()
            .zip(ops.iter().filter_map(|o| match o { Op::Put { ts, .. } => Some(*ts), _ => None }))
            .max_by(|(w1, t1), (w2, t2)| (t1, &w1.0).cmp(&(t2, &w2.0)))
            .map(|((_, _, name), _)| name.clone());
        prop_assert_eq!(values(&all).first().cloned(), winner);
    }
}
