//! The split set against the `crdts` crate's Orswot: operations delivered
//! as deltas late, twice and out of order, through loaded entries as a
//! per-element store applies them, mixed with full-state merges, end where
//! the crate ends with every operation applied in order; and an add to a
//! large set touches one entry.

use std::collections::BTreeMap;

use crdts::{CmRDT, Orswot};
use proptest::prelude::*;

use super::*;

const REPLICAS: usize = 3;

fn actor(i: usize) -> Actor {
    Actor::new(format!("n{i}"), 1)
}

/// Applies `op` as a store keeping one record per element does: load the
/// entries it touches, apply to the header, write back what changed.
fn apply_split(set: &OrSet, op: SetDelta) -> OrSet {
    let mut entries: BTreeMap<String, Clock> =
        set.entries().map(|(e, c)| (e.clone(), c.clone())).collect();
    let mut header = set.header().clone();
    let mut loaded = Loaded::new(
        header
            .touched_by(&op)
            .into_iter()
            .map(|e| (e.clone(), entries.get(&e).cloned())),
    );
    header.apply(&mut loaded, op);
    // The stored header's count and hash follow the changes alone.
    let mut split = crate::crdt::SplitHeader::of(set);
    for (e, before, dots) in loaded.changes() {
        split.changed(e, before, dots);
        entries.set(e, dots.cloned());
    }
    split.header = header.clone();
    let out = OrSet::from_parts(header, entries);
    assert_eq!(
        split,
        crate::crdt::SplitHeader::of(&out),
        "digest kept by changes"
    );
    out
}

#[derive(Debug, Clone)]
enum Step {
    /// A client that read `read_from` adds or removes `element` through
    /// replica `at`.
    Op {
        at: usize,
        read_from: usize,
        element: u8,
        add: bool,
    },
    /// Replica `to` receives the delta of operation `nth` (modulo those
    /// made so far).
    Deliver { to: usize, nth: usize },
    /// Replica `to` merges operation `nth` as a state of its own
    /// ([`OrSet::of_op`]).
    DeliverAsState { to: usize, nth: usize },
    /// Replica `to` merges replica `from`'s whole state.
    Sync { from: usize, to: usize },
}

/// The operation of [`Step::Op`]: an add as replica `at`, or a remove with
/// the context of a read of replica `read_from`.
fn make_op(replicas: &[OrSet], at: usize, read_from: usize, element: u8, add: bool) -> SetDelta {
    let e = format!("e{element}");
    if add {
        replicas[at].add_op(&actor(at), [e]).expect("dot")
    } else {
        OrSet::rm_op(replicas[read_from].clock().clone(), [e])
    }
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let step = prop_oneof![
        3 => (0..REPLICAS, 0..REPLICAS, 0u8..6, any::<bool>())
            .prop_map(|(at, read_from, element, add)| Step::Op { at, read_from, element, add }),
        3 => (0..REPLICAS, any::<usize>()).prop_map(|(to, nth)| Step::Deliver { to, nth }),
        2 => (0..REPLICAS, any::<usize>()).prop_map(|(to, nth)| Step::DeliverAsState { to, nth }),
        1 => (0..REPLICAS, 0..REPLICAS).prop_map(|(from, to)| Step::Sync { from, to }),
    ];
    prop::collection::vec(step, 0..60)
}

/// The replicas after `steps`, each operation applied through loaded
/// entries (as a per-element store does) and checked against the whole
/// set, and every operation made, in the order made (a causal order).
fn play(steps: &[Step]) -> Result<(Vec<OrSet>, Vec<SetDelta>), TestCaseError> {
    let mut replicas = vec![OrSet::default(); REPLICAS];
    let mut log: Vec<SetDelta> = Vec::new();
    for step in steps {
        match step {
            Step::Op {
                at,
                read_from,
                element,
                add,
            } => {
                let op = make_op(&replicas, *at, *read_from, *element, *add);
                let mut whole = replicas[*at].clone();
                whole.apply(op.clone());
                replicas[*at] = apply_split(&replicas[*at], op.clone());
                prop_assert_eq!(&replicas[*at], &whole, "split and whole agree");
                log.push(op);
            }
            Step::Deliver { to, nth } if !log.is_empty() => {
                let op = log[nth % log.len()].clone();
                let mut whole = replicas[*to].clone();
                whole.apply(op.clone());
                replicas[*to] = apply_split(&replicas[*to], op);
                prop_assert_eq!(&replicas[*to], &whole, "split and whole agree");
            }
            Step::DeliverAsState { to, nth } if !log.is_empty() => {
                let op = log[nth % log.len()].clone();
                let mut applied = replicas[*to].clone();
                applied.apply(op.clone());
                replicas[*to].merge(&OrSet::of_op(op));
                prop_assert_eq!(
                    &replicas[*to],
                    &applied,
                    "merging an operation's state applies it"
                );
            }
            Step::Deliver { .. } | Step::DeliverAsState { .. } => {}
            Step::Sync { from, to } => {
                let other = replicas[*from].clone();
                replicas[*to].merge(&other);
            }
        }
    }
    Ok((replicas, log))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn deltas_in_any_order_end_where_the_crate_ends_in_order(s in steps()) {
        let (mut replicas, log) = play(&s)?;
        let mut oracle: Orswot<String, Actor> = Orswot::new();
        for op in &log {
            oracle.apply(op.clone());
        }
        let mut expected: Vec<String> = oracle.read().val.into_iter().collect();
        expected.sort();
        for r in &mut replicas {
            // The rest arrives, newest first.
            for op in log.iter().rev() {
                *r = apply_split(r, op.clone());
            }
            prop_assert_eq!(r.members().cloned().collect::<Vec<_>>(), expected.clone());
            prop_assert_eq!(r.clock(), &oracle.clock());
            prop_assert_eq!(r.header(), &SetHeader { clock: oracle.clock(), ..SetHeader::default() }, "nothing left waiting");
        }
        prop_assert_eq!(&replicas[0], &replicas[1]);
        prop_assert_eq!(&replicas[1], &replicas[2]);
    }

    #[test]
    fn whole_states_with_waiting_operations_obey_the_merge_laws(s in steps()) {
        let (replicas, log) = play(&s)?;
        let m = crate::merge::merged;
        let (x, y, z) = (&replicas[0], &replicas[1], &replicas[2]);
        prop_assert_eq!(m(x, y), m(y, x), "commutative");
        prop_assert_eq!(m(&m(x, y), z), m(x, &m(y, z)), "associative");
        prop_assert_eq!(&m(x, x), x, "idempotent");
        // And an operation's own state ([`OrSet::of_op`]) with them.
        for op in &log {
            let d = OrSet::of_op(op.clone());
            prop_assert_eq!(m(x, &d), m(&d, x), "commutative with an operation's state");
            prop_assert_eq!(m(&m(x, y), &d), m(x, &m(y, &d)), "associative with it");
            prop_assert_eq!(&m(&d, &d), &d, "an operation's state is idempotent");
        }
    }
}

#[test]
fn an_add_to_a_set_of_100000_touches_one_entry_and_a_small_header() {
    let me = actor(0);
    let mut set = OrSet::default();
    for chunk in (0..100_000u32).collect::<Vec<_>>().chunks(1_000) {
        let op = set
            .add_op(&me, chunk.iter().map(|i| format!("element-{i:08}")))
            .expect("dot");
        set.apply(op);
    }
    assert_eq!(set.members().count(), 100_000);
    let op = set.add_op(&me, ["one more".to_owned()]).expect("dot");
    let mut header = set.header().clone();
    let touched = header.touched_by(&op);
    assert_eq!(touched.len(), 1);
    let mut loaded = Loaded::new(touched.into_iter().map(|e| (e, None)));
    header.apply(&mut loaded, op);
    assert_eq!(loaded.changes().count(), 1);
    let header_bytes = rmp_serde::to_vec(&header).expect("encode").len();
    assert!(header_bytes < 100, "header is {header_bytes} bytes");
}

#[test]
fn an_add_ahead_of_its_actors_earlier_one_shows_at_once_and_the_earlier_one_still_applies() {
    let (a, b) = (actor(0), actor(1));
    let mut origin = OrSet::default();
    let first = origin.add_op(&a, ["x".to_owned()]).expect("dot");
    origin.apply(first.clone());
    let second = origin.add_op(&a, ["y".to_owned()]).expect("dot");
    origin.apply(second.clone());
    let mut replica = OrSet::default();
    let own = replica.add_op(&b, ["z".to_owned()]).expect("dot");
    replica.apply(own);
    replica.apply(second);
    assert_eq!(
        replica.members().collect::<Vec<_>>(),
        ["y", "z"],
        "y shows though x has not arrived (x may never: lost with its coordinator)"
    );
    assert_eq!(replica.clock().get(&a), 0, "the context does not claim x");
    // A full-state merge with a replica that never saw y keeps it.
    let mut other = OrSet::default();
    let o = other.add_op(&b, ["w".to_owned()]).expect("dot");
    other.apply(o);
    let mut merged = replica.clone();
    merged.merge(&other);
    assert!(merged.members().any(|m| m == "y"));
    replica.apply(first);
    assert_eq!(replica.members().collect::<Vec<_>>(), ["x", "y", "z"]);
    assert_eq!(replica.clock().get(&a), 2);
    assert_eq!(replica.header().cloud.len(), 0, "the gap closed");
}
