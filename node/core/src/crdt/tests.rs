//! Tests of the data types: the named conflict rules, the JSON format, and
//! property tests over histories of a small cluster: every stored type
//! (DVV objects and each CRDT) obeys the merge laws through one generic
//! check, replicas that exchanged everything agree, no increment is lost,
//! and a state holds no more actors than there are replicas.

use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::merge::merged;
use crate::write::{apply_client_write, Change};
use crate::{ConflictMode, Limits};

fn actor(i: usize) -> Actor {
    Actor::new(format!("n{i}"), 1)
}

fn op(t: Datatype, v: serde_json::Value) -> CrdtOp {
    parse_op(t, &v).expect("a valid operation")
}

/// Applies `o` at replica `i` with the context `ctx` of a read.
fn apply(state: &mut CrdtValue, i: usize, o: &CrdtOp, ctx: &VersionVector, now: u64) {
    state.apply(o, &actor(i), ctx, now).expect("apply");
}

fn none() -> VersionVector {
    VersionVector::new()
}

#[test]
fn a_concurrent_add_and_remove_of_one_element_keeps_it() {
    let mut a = CrdtValue::empty(Datatype::Set);
    apply(
        &mut a,
        0,
        &op(Datatype::Set, json!({"add": ["x"]})),
        &none(),
        1,
    );
    let mut b = a.clone();
    // Replica 1 removes x as it read it; replica 0 adds x again meanwhile.
    let seen = b.clock();
    apply(
        &mut b,
        1,
        &op(Datatype::Set, json!({"remove": ["x"]})),
        &seen,
        2,
    );
    assert_eq!(render(&b), json!([]));
    apply(
        &mut a,
        0,
        &op(Datatype::Set, json!({"add": ["x"]})),
        &none(),
        3,
    );
    assert_eq!(render(&merged(&a, &b)), json!(["x"]), "add wins");
    assert_eq!(render(&merged(&b, &a)), json!(["x"]));
    // A remove with the context of the merged read removes it for good.
    let mut m = merged(&a, &b);
    let seen = m.clock();
    apply(
        &mut m,
        1,
        &op(Datatype::Set, json!({"remove": ["x"]})),
        &seen,
        4,
    );
    assert_eq!(render(&merged(&m, &a)), json!([]));
}

#[test]
fn concurrent_updates_of_different_map_fields_both_survive() {
    let base = CrdtValue::empty(Datatype::Map);
    let (mut a, mut b) = (base.clone(), base);
    apply(
        &mut a,
        0,
        &op(
            Datatype::Map,
            json!({"update": {"visits_counter": {"increment": 2}, "name_register": {"set": "ann"}}}),
        ),
        &none(),
        10,
    );
    apply(
        &mut b,
        1,
        &op(
            Datatype::Map,
            json!({"update": {"tags_set": {"add": ["x", "y"]}, "prefs_map": {"update": {"dark_flag": {"enable": true}, "size_counter": {"increment": -3}}}}}),
        ),
        &none(),
        11,
    );
    let want = json!({
        "name_register": "ann",
        "prefs_map": {"dark_flag": true, "size_counter": -3},
        "tags_set": ["x", "y"],
        "visits_counter": 2,
    });
    assert_eq!(render(&merged(&a, &b)), want);
    assert_eq!(render(&merged(&b, &a)), want);
}

#[test]
fn a_removed_map_field_keeps_a_concurrent_update_with_the_value_its_updater_built() {
    let mut a = CrdtValue::empty(Datatype::Map);
    let inc = |n: i64| {
        op(
            Datatype::Map,
            json!({"update": {"c_counter": {"increment": n}}}),
        )
    };
    apply(&mut a, 0, &inc(5), &none(), 1);
    let mut b = a.clone();
    // Replica 1 removes the field it saw at 5; replica 0 adds 1 meanwhile.
    let seen = b.clock();
    apply(
        &mut b,
        1,
        &op(Datatype::Map, json!({"remove": ["c_counter"]})),
        &seen,
        2,
    );
    apply(&mut a, 0, &inc(1), &none(), 3);
    let m = merged(&a, &b);
    assert_eq!(m, merged(&b, &a));
    assert_eq!(
        render(&m),
        json!({"c_counter": 6}),
        "the update's version survives whole"
    );
    // A remove that saw everything removes it.
    let mut gone = m.clone();
    let seen = gone.clock();
    apply(
        &mut gone,
        1,
        &op(Datatype::Map, json!({"remove": ["c_counter"]})),
        &seen,
        4,
    );
    assert_eq!(render(&merged(&gone, &m)), json!({}));
}

#[test]
fn a_counter_field_removed_and_written_again_counts_every_new_increment() {
    let inc = |n: i64| {
        op(
            Datatype::Map,
            json!({"update": {"c_counter": {"increment": n}}}),
        )
    };
    let mut a = CrdtValue::empty(Datatype::Map);
    apply(&mut a, 0, &inc(5), &none(), 1);
    let mut b = a.clone();
    apply(&mut b, 1, &inc(1), &none(), 2);
    // Replica 0 removes the field it saw at 5, then adds 1 again.
    let seen = a.clock();
    apply(
        &mut a,
        0,
        &op(Datatype::Map, json!({"remove": ["c_counter"]})),
        &seen,
        3,
    );
    apply(&mut a, 0, &inc(1), &none(), 4);
    // The 5 it removed is gone; its new 1 and replica 1's 1 both count.
    assert_eq!(render(&merged(&a, &b)), json!({"c_counter": 2}));
    assert_eq!(render(&merged(&b, &a)), json!({"c_counter": 2}));
}

#[test]
fn concurrent_register_writes_are_all_kept_until_one_with_their_context() {
    let mut a = CrdtValue::empty(Datatype::Register);
    let mut b = a.clone();
    apply(
        &mut a,
        0,
        &op(Datatype::Register, json!({"set": "x"})),
        &none(),
        1,
    );
    apply(
        &mut b,
        1,
        &op(Datatype::Register, json!({"set": {"y": 1}})),
        &none(),
        1,
    );
    let mut m = merged(&a, &b);
    assert_eq!(render(&m), json!(["x", {"y": 1}]));
    let seen = m.clock();
    apply(
        &mut m,
        2,
        &op(Datatype::Register, json!({"set": 3})),
        &seen,
        2,
    );
    assert_eq!(render(&merged(&m, &a)), json!([3]));
}

#[test]
fn a_blind_register_write_through_the_same_replica_keeps_the_value_beside_it() {
    let mut r = CrdtValue::empty(Datatype::Register);
    apply(
        &mut r,
        0,
        &op(Datatype::Register, json!({"set": "a"})),
        &none(),
        1,
    );
    apply(
        &mut r,
        0,
        &op(Datatype::Register, json!({"set": "b"})),
        &none(),
        2,
    );
    assert_eq!(render(&r), json!(["a", "b"]));
    let seen = r.clock();
    apply(
        &mut r,
        0,
        &op(Datatype::Register, json!({"set": "c"})),
        &seen,
        3,
    );
    assert_eq!(render(&r), json!(["c"]));
}

#[test]
fn a_concurrent_enable_wins_over_a_disable() {
    let mut a = CrdtValue::empty(Datatype::Flag);
    apply(
        &mut a,
        0,
        &op(Datatype::Flag, json!({"enable": true})),
        &none(),
        1,
    );
    let mut b = a.clone();
    let seen = b.clock();
    apply(
        &mut b,
        1,
        &op(Datatype::Flag, json!({"enable": false})),
        &seen,
        2,
    );
    assert_eq!(render(&b), json!(false));
    apply(
        &mut a,
        0,
        &op(Datatype::Flag, json!({"enable": true})),
        &none(),
        3,
    );
    assert_eq!(render(&merged(&a, &b)), json!(true));
}

#[test]
fn in_a_map_the_later_register_write_wins_even_behind_a_skewed_clock() {
    let set = |v: &str| op(Datatype::Map, json!({"update": {"r_register": {"set": v}}}));
    let mut a = CrdtValue::empty(Datatype::Map);
    // Replica 0's clock is far ahead.
    apply(&mut a, 0, &set("first"), &none(), 1_000_000);
    let mut b = a.clone();
    apply(&mut b, 1, &set("second"), &none(), 5);
    assert_eq!(render(&merged(&a, &b))["r_register"], json!("second"));
}

#[test]
fn operations_that_do_not_fit_are_refused_with_their_codes() {
    let wrong = parse_op(Datatype::Counter, &json!({"add": ["x"]})).expect_err("wrong");
    assert_eq!(wrong.code(), ErrorCode::WrongDatatype);
    let set = op(Datatype::Set, json!({"remove": ["x"]}));
    assert_eq!(
        set.check(Datatype::Set, false)
            .expect_err("no context")
            .code(),
        ErrorCode::ContextRequired
    );
    set.check(Datatype::Set, true).expect("with a context");
    assert_eq!(
        set.check(Datatype::Counter, true).expect_err("type").code(),
        ErrorCode::WrongDatatype
    );
    let bad_field = parse_op(
        Datatype::Map,
        &json!({"update": {"visits": {"increment": 1}}}),
    );
    assert_eq!(
        bad_field.expect_err("suffix").code(),
        ErrorCode::InvalidParameter
    );
    let field_type = parse_op(
        Datatype::Map,
        &json!({"update": {"visits_counter": {"add": ["x"]}}}),
    );
    assert_eq!(
        field_type.expect_err("type").code(),
        ErrorCode::WrongDatatype
    );
    let disable = op(
        Datatype::Map,
        json!({"update": {"on_flag": {"enable": false}}}),
    );
    assert_eq!(
        disable.check(Datatype::Map, false).expect_err("ctx").code(),
        ErrorCode::ContextRequired
    );
    // Nesting deeper than the limit.
    let mut deep = json!({"set": 1});
    let mut t = Datatype::Register;
    for _ in 0..=MAX_DEPTH + 1 {
        let field = if t == Datatype::Register {
            "r_register"
        } else {
            "m_map"
        };
        deep = json!({"update": {field: deep}});
        t = Datatype::Map;
    }
    assert_eq!(
        parse_op(Datatype::Map, &deep).expect_err("deep").code(),
        ErrorCode::InvalidParameter
    );
    assert_eq!(
        parse_op(Datatype::Counter, &json!({"increment": 1.5}))
            .expect_err("not whole")
            .code(),
        ErrorCode::InvalidParameter
    );
}

#[test]
fn a_state_survives_its_content_encoding() {
    let mut s = CrdtValue::empty(Datatype::Map);
    apply(
        &mut s,
        0,
        &op(
            Datatype::Map,
            json!({"update": {"t_set": {"add": ["a"]}, "m_map": {"update": {"n_counter": {"increment": 4}}}}}),
        ),
        &none(),
        1,
    );
    let c = s.to_content(7);
    assert_eq!(CrdtValue::from_content(&c).expect("decode"), s);
    let plain = Content::value(b"hello".to_vec(), "text/plain", 1);
    assert_eq!(
        CrdtValue::from_content(&plain).expect_err("plain").code(),
        ErrorCode::WrongDatatype
    );
}

#[test]
fn a_read_context_naming_more_of_this_actor_than_the_copy_holds_asks_for_a_new_epoch() {
    let inc = Change::Crdt {
        op: CrdtOp::Set {
            add: vec!["a".into()],
            remove: vec![],
        },
        datatype: Datatype::Set,
        context: VersionVector::new(),
        timestamp_ms: 1,
    };
    let lim = Limits::default();
    let me = actor(0);
    let o1 = apply_client_write(
        None,
        &none(),
        &me,
        inc.clone(),
        ConflictMode::Siblings,
        &lim,
    )
    .expect("first");
    let o2 = apply_client_write(Some(&o1), &none(), &me, inc, ConflictMode::Siblings, &lim)
        .expect("second");
    // The node lost o2 (unsynced) and holds o1; a client read o2.
    let seen = collapse(&o2).expect("state").expect("some").clock();
    let remove = Change::Crdt {
        op: CrdtOp::Set {
            add: vec![],
            remove: vec!["a".into()],
        },
        datatype: Datatype::Set,
        context: seen,
        timestamp_ms: 2,
    };
    let e = apply_client_write(
        Some(&o1),
        &none(),
        &me,
        remove,
        ConflictMode::Siblings,
        &lim,
    )
    .expect_err("stale");
    assert_eq!(e, crate::write::Refused::StaleActor(me));
}

// ---- Property tests over histories ----

/// What a history does: apply an operation at a replica (as a client that
/// read replica `read_from`), or send one replica's state to another.
#[derive(Debug, Clone)]
enum Step {
    Op {
        at: usize,
        read_from: usize,
        op: serde_json::Value,
    },
    Sync {
        from: usize,
        to: usize,
    },
}

const REPLICAS: usize = 3;

fn element() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a", "b", "c", "d"]).prop_map(str::to_owned)
}

fn json_op(t: Datatype, depth: u32) -> BoxedStrategy<serde_json::Value> {
    match t {
        Datatype::Counter => (-5i64..6).prop_map(|n| json!({"increment": n})).boxed(),
        Datatype::Set => prop_oneof![
            prop::collection::vec(element(), 1..3).prop_map(|a| json!({"add": a})),
            prop::collection::vec(element(), 1..3).prop_map(|r| json!({"remove": r})),
            (element(), element()).prop_map(|(a, r)| json!({"add": [a], "remove": [r]})),
        ]
        .boxed(),
        Datatype::Register => (0u8..4).prop_map(|v| json!({"set": v})).boxed(),
        Datatype::Flag => any::<bool>().prop_map(|on| json!({"enable": on})).boxed(),
        Datatype::Map => {
            let mut fields = vec![
                ("a_counter", Datatype::Counter),
                ("b_set", Datatype::Set),
                ("c_register", Datatype::Register),
                ("d_flag", Datatype::Flag),
            ];
            if depth < 2 {
                fields.push(("e_map", Datatype::Map));
            }
            let names: Vec<&'static str> = fields.iter().map(|f| f.0).collect();
            let update = prop::sample::select(fields).prop_flat_map(move |(name, ft)| {
                json_op(ft, depth + 1).prop_map(move |o| (name.to_owned(), o))
            });
            prop_oneof![
                3 => prop::collection::vec(update, 1..3).prop_map(|us| {
                    let fields: serde_json::Map<String, serde_json::Value> = us.into_iter().collect();
                    json!({"update": fields})
                }),
                1 => prop::sample::select(names).prop_map(|n| json!({"remove": [n]})),
            ]
            .boxed()
        }
    }
}

fn steps(t: Datatype) -> impl Strategy<Value = Vec<Step>> {
    let step = prop_oneof![
        3 => (0..REPLICAS, 0..REPLICAS, json_op(t, 0))
            .prop_map(|(at, read_from, op)| Step::Op { at, read_from, op }),
        2 => (0..REPLICAS, 0..REPLICAS).prop_map(|(from, to)| Step::Sync { from, to }),
    ];
    prop::collection::vec(step, 0..30)
}

/// The replicas' states after `steps`, and the sum of the increments (for
/// counters).
fn run(t: Datatype, steps: &[Step]) -> (Vec<CrdtValue>, i128) {
    let (replicas, total, _) = run_with_history(t, steps);
    (replicas, total)
}

/// [`run`], with every state each replica held on the way.
fn run_with_history(t: Datatype, steps: &[Step]) -> (Vec<CrdtValue>, i128, Vec<Vec<CrdtValue>>) {
    let mut replicas = vec![CrdtValue::empty(t); REPLICAS];
    let mut history = vec![Vec::new(); REPLICAS];
    let mut total = 0i128;
    for (now, step) in steps.iter().enumerate() {
        match step {
            Step::Op { at, read_from, op } => {
                let o = parse_op(t, op).expect("generated ops parse");
                // The coordinator may not have seen what the read saw: its
                // removes wait for it (deferred).
                let ctx = replicas[*read_from].clock();
                replicas[*at]
                    .apply(&o, &actor(*at), &ctx, now as u64)
                    .expect("apply");
                if let CrdtOp::Increment(n) = o {
                    total += i128::from(n);
                }
            }
            Step::Sync { from, to } => {
                let s = replicas[*from].clone();
                replicas[*to].merge(&s);
            }
        }
        for (i, r) in replicas.iter().enumerate() {
            history[i].push(r.clone());
        }
    }
    (replicas, total, history)
}

/// The merge laws, for any stored type.
fn laws<T: Merge + Clone + PartialEq + std::fmt::Debug>(
    x: &T,
    y: &T,
    z: &T,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(merged(x, y), merged(y, x), "commutative");
    prop_assert_eq!(
        merged(&merged(x, y), z),
        merged(x, &merged(y, z)),
        "associative"
    );
    prop_assert_eq!(&merged(x, x), x, "idempotent");
    let all = merged(&merged(x, y), z);
    prop_assert_eq!(merged(&all, y), all.clone(), "absorbs what it saw");
    Ok(())
}

fn datatype() -> impl Strategy<Value = Datatype> {
    prop::sample::select(Datatype::ALL.to_vec())
}

/// The same history through the write rules: each replica is a DVV object
/// whose siblings hold states, as stored on disk.
fn run_objects(t: Datatype, steps: &[Step]) -> Vec<Object> {
    let lim = Limits::default();
    let mut replicas = vec![Object::new(); REPLICAS];
    for (now, step) in steps.iter().enumerate() {
        match step {
            Step::Op { at, read_from, op } => {
                let o = parse_op(t, op).expect("generated ops parse");
                let read = collapse(&replicas[*read_from]).expect("states");
                let ctx = read.map(|s| s.clock()).unwrap_or_default();
                let change = Change::Crdt {
                    op: o,
                    datatype: t,
                    context: ctx,
                    timestamp_ms: now as u64,
                };
                replicas[*at] = apply_client_write(
                    Some(&replicas[*at]),
                    &VersionVector::new(),
                    &actor(*at),
                    change,
                    ConflictMode::Siblings,
                    &lim,
                )
                .expect("write");
            }
            Step::Sync { from, to } => {
                let s = replicas[*from].clone();
                Merge::merge(&mut replicas[*to], &s);
            }
        }
    }
    replicas
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn every_data_type_obeys_the_merge_laws((t, s) in datatype().prop_flat_map(|t| (Just(t), steps(t)))) {
        let (r, _, history) = run_with_history(t, &s);
        laws(&r[0], &r[1], &r[2])?;
        // A state absorbs every state it grew from: an old copy arriving
        // late changes nothing.
        for (i, states) in history.iter().enumerate() {
            for old in states {
                prop_assert_eq!(&merged(&r[i], old), &r[i]);
            }
        }
    }

    #[test]
    fn dvv_objects_holding_states_obey_the_merge_laws((t, s) in datatype().prop_flat_map(|t| (Just(t), steps(t)))) {
        let r = run_objects(t, &s);
        laws(&r[0], &r[1], &r[2])?;
    }

    #[test]
    fn replicas_that_exchanged_everything_show_one_value((t, s) in datatype().prop_flat_map(|t| (Just(t), steps(t)))) {
        let (r, _) = run(t, &s);
        let all = merged(&merged(&r[0], &r[1]), &r[2]);
        let objects = run_objects(t, &s);
        let all_objects = merged(&merged(&objects[0], &objects[1]), &objects[2]);
        let through_objects = collapse(&all_objects).expect("states");
        // Through the write rules the value is the one the states give.
        let shown = through_objects.map(|v| render(&v)).unwrap_or_else(|| render(&CrdtValue::empty(t)));
        prop_assert_eq!(shown, render(&all));
    }

    #[test]
    fn no_increment_is_lost(s in steps(Datatype::Counter)) {
        let (r, total) = run(Datatype::Counter, &s);
        let all = merged(&merged(&r[0], &r[1]), &r[2]);
        prop_assert_eq!(render(&all), json!(total as i64));
        let objects = run_objects(Datatype::Counter, &s);
        let all_objects = merged(&merged(&objects[0], &objects[1]), &objects[2]);
        let v = collapse(&all_objects).expect("states").map_or(json!(0), |v| render(&v));
        prop_assert_eq!(v, json!(total as i64));
    }

    #[test]
    fn a_state_holds_no_more_actors_than_replicas((t, s) in datatype().prop_flat_map(|t| (Just(t), steps(t)))) {
        // However many clients sent the operations, only the replicas
        // that applied them are actors.
        let (r, _) = run(t, &s);
        let all = merged(&merged(&r[0], &r[1]), &r[2]);
        prop_assert!(all.clock().len() <= REPLICAS);
        if let CrdtValue::Counter(c) = &all {
            prop_assert!(c.actors() <= REPLICAS);
        }
    }
}

#[test]
fn a_thousand_clients_through_three_replicas_leave_three_actors() {
    let mut replicas = vec![CrdtValue::empty(Datatype::Map); REPLICAS];
    for client in 0..1_000usize {
        let at = client % REPLICAS;
        let o = op(
            Datatype::Map,
            json!({"update": {"hits_counter": {"increment": 1}, "who_set": {"add": [format!("c{client}")]}}}),
        );
        apply(&mut replicas[at], at, &o, &none(), client as u64);
    }
    let all = merged(&merged(&replicas[0], &replicas[1]), &replicas[2]);
    assert_eq!(all.clock().len(), REPLICAS);
    assert_eq!(render(&all)["hits_counter"], json!(1_000));
    assert_eq!(
        render(&all)["who_set"].as_array().map(Vec::len),
        Some(1_000)
    );
}

#[test]
fn a_set_stored_in_format_1_reads_as_the_same_set() {
    // Format 1 held a set as the crate's Orswot.
    #[derive(serde::Serialize)]
    enum OldValue {
        #[allow(dead_code)]
        Counter(Counter),
        Set(FieldSet),
    }
    let mut old = FieldSet::new();
    let add = old.add_all(
        ["a".to_owned(), "b".to_owned()],
        next_dot(&old.clock(), &actor(0)).expect("dot"),
    );
    old.apply(add);
    // A remove naming adds of actor 1 not seen yet: it waits.
    let mut ctx = Clock::new();
    ctx.apply(crdts::Dot::new(actor(1), 2));
    old.apply(old.rm("late".to_owned(), RmCtx { clock: ctx }));
    let mut bytes = vec![FORMAT_V1];
    rmp_serde::encode::write(&mut bytes, &OldValue::Set(old.clone())).expect("encode");
    let v = CrdtValue::from_content(&Content::value(bytes, CONTENT_TYPE, 1)).expect("decodes");
    assert_eq!(render(&v), json!(["a", "b"]));
    assert_eq!(v.clock(), to_vv(&old.clock()));
    let CrdtValue::Set(mut set) = v else {
        panic!("a set")
    };
    for (n, members) in [(1, vec!["late".to_owned()]), (2, vec![])] {
        set.apply(crdts::orswot::Op::Add {
            dot: crdts::Dot::new(actor(1), n),
            members,
        });
    }
    assert_eq!(
        set.members().collect::<Vec<_>>(),
        ["a", "b"],
        "the waiting remove came along"
    );
    // And the new format keeps it.
    let again = CrdtValue::Set(set);
    assert_eq!(
        CrdtValue::from_content(&again.to_content(2)).expect("decode"),
        again
    );
}
