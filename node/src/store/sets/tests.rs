//! Split sets in the store: what an add costs the engine, that the split
//! set reads as the set the same operations make in memory, and that
//! updates, whole states, hints, corruption and dropped partitions keep
//! header and elements together.

use std::sync::Arc;

use quorra_core::crdt::{self, CrdtOp, CrdtValue, Datatype, SetUpdate};
use quorra_core::layout::Scope;
use quorra_core::merge::Merge;
use quorra_core::write::Change;
use quorra_core::{BucketName, ConflictMode, Key, Limits, Object, VersionVector};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::super::{HintBudget, ObjectStore};
use super::elements_prefix;
use crate::storage::memory::MemEngine;
use crate::storage::rocks::RocksEngine;
use crate::storage::{Durability, Engine, Space};

fn bk(key: &str) -> (BucketName, Key) {
    let l = Limits::default();
    (
        BucketName::parse("sets", &l).expect("bucket"),
        Key::parse(key.as_bytes().to_vec(), &l).expect("key"),
    )
}

fn set_op(add: &[String], remove: &[String], context: VersionVector) -> Change {
    Change::Crdt {
        op: CrdtOp::Set {
            add: add.to_vec(),
            remove: remove.to_vec(),
        },
        datatype: Datatype::Set,
        context,
        timestamp_ms: 1,
    }
}

/// A set operation through `store`; a remove names the context of a read
/// of it (an add needs none).
fn op(store: &ObjectStore, key: &str, add: &[String], remove: &[String]) -> Object {
    let (b, k) = bk(key);
    let ctx = match remove {
        [] => VersionVector::new(),
        _ => store
            .get(&b, &k)
            .expect("get")
            .and_then(|o| crdt::read_clock(&o))
            .unwrap_or_default(),
    };
    store
        .coordinate(
            &b,
            &k,
            &VersionVector::new(),
            set_op(add, remove, ctx),
            ConflictMode::Siblings,
            Durability::Buffered,
        )
        .expect("set operation")
}

fn merge(store: &ObjectStore, key: &str, incoming: &Object) {
    let (b, k) = bk(key);
    store
        .merge_replica(
            &b,
            &k,
            incoming,
            ConflictMode::Siblings,
            Durability::Buffered,
        )
        .expect("merge");
}

fn state(store: &ObjectStore, key: &str) -> Option<CrdtValue> {
    let (b, k) = bk(key);
    let o = store.get(&b, &k).expect("get")?;
    crdt::collapse(&o).expect("a state")
}

fn members(store: &ObjectStore, key: &str) -> Vec<String> {
    match state(store, key) {
        Some(CrdtValue::Set(s)) => s.members().cloned().collect(),
        other => panic!("not a set: {other:?}"),
    }
}

fn element_records(engine: &dyn Engine) -> usize {
    let mut n = 0;
    engine
        .scan(Space::Elements, b"", &mut |_, _| {
            n += 1;
            true
        })
        .expect("scan");
    n
}

fn elements(from: usize, n: usize) -> Vec<String> {
    (from..from + n)
        .map(|i| format!("element-{i:08}"))
        .collect()
}

/// Corrupts a stored record through the engine's raw API (its checksum
/// no longer matches).
fn flip_last_byte(engine: &dyn Engine, space: Space, key: &[u8]) {
    let mut raw = engine.get(space, key).expect("get").expect("present");
    let last = raw.len() - 1;
    raw[last] ^= 0xff;
    engine
        .put(space, key, &raw, Durability::Buffered)
        .expect("raw put");
}

fn bytes_written(engine: &dyn Engine) -> u64 {
    engine.sync_counts().expect("counted").bytes_written
}

/// Adding one element to a set of 100,000 writes a header and an entry
/// (a few hundred bytes) to the engine, at the coordinator and at a
/// replica sent the update, not the megabytes of the whole set; and both
/// read back the same 100,001 elements.
#[test]
fn an_add_to_a_set_of_100000_writes_a_few_kilobytes() {
    let dirs = [tempfile::tempdir(), tempfile::tempdir()].map(|d| d.expect("tempdir"));
    let engines: Vec<Arc<dyn Engine>> = dirs
        .iter()
        .map(|d| Arc::new(RocksEngine::open(d.path()).expect("open")) as Arc<dyn Engine>)
        .collect();
    let coordinator = ObjectStore::open(engines[0].clone(), "n1").expect("store");
    let replica = ObjectStore::open(engines[1].clone(), "n2").expect("store");
    for batch in 0..100 {
        let update = op(&coordinator, "big", &elements(batch * 1000, 1000), &[]);
        merge(&replica, "big", &update);
    }
    let before = [0, 1].map(|i| bytes_written(engines[i].as_ref()));
    let update = op(&coordinator, "big", &elements(100_000, 1), &[]);
    let coordinated = bytes_written(engines[0].as_ref()) - before[0];
    merge(&replica, "big", &update);
    let merged = bytes_written(engines[1].as_ref()) - before[1];
    assert!(
        coordinated <= 2048 && merged <= 2048,
        "an add to a set of 100,000 wrote {coordinated} bytes at the coordinator and {merged} at the replica"
    );
    let update = SetUpdate::of_object(&update).expect("an update is replicated");
    assert_eq!(update.size, 100_001);
    assert_eq!(members(&coordinator, "big").len(), 100_001);
    let (b, k) = bk("big");
    assert_eq!(
        coordinator.get(&b, &k).expect("get"),
        replica.get(&b, &k).expect("get"),
        "replicas with the same set hold the same version"
    );
    assert_eq!(element_records(engines[0].as_ref()), 100_001);
}

/// Random adds and removes (with a read's context, some stale) through
/// the split store read back as the set the same operations make in
/// memory, and a remove through a write's answer context removes what
/// the set held.
#[test]
fn a_split_set_reads_as_the_set_its_operations_make_in_memory() {
    let engine: Arc<dyn Engine> = Arc::new(MemEngine::new());
    let store = ObjectStore::open(engine.clone(), "n1").expect("store");
    let actor = store.actor();
    let mut oracle = CrdtValue::empty(Datatype::Set);
    let mut rng = StdRng::seed_from_u64(7);
    let mut stale = VersionVector::new();
    let (b, k) = bk("s");
    for step in 0..300 {
        let pick = |rng: &mut StdRng| -> Vec<String> {
            (0..rng.random_range(0..4))
                .map(|_| format!("e{}", rng.random_range(0..20)))
                .collect()
        };
        let (add, remove) = (pick(&mut rng), pick(&mut rng));
        let ctx = if rng.random_bool(0.3) {
            stale.clone()
        } else {
            oracle.clock()
        };
        if step % 10 == 0 {
            stale = oracle.clock();
        }
        let change = set_op(&add, &remove, ctx.clone());
        let written = store
            .coordinate(
                &b,
                &k,
                &VersionVector::new(),
                change,
                ConflictMode::Siblings,
                Durability::Buffered,
            )
            .expect("op");
        let cop = CrdtOp::Set {
            add: add.clone(),
            remove: remove.clone(),
        };
        oracle.apply(&cop, &actor, &ctx, 1).expect("oracle");
        let answer = SetUpdate::of_object(&written).expect("an update");
        assert_eq!(crdt::read_clock(&written), Some(oracle.clock()));
        let CrdtValue::Set(want) = &oracle else {
            unreachable!()
        };
        assert_eq!(answer.size, want.members().count() as u64, "step {step}");
        assert_eq!(state(&store, "s").as_ref(), Some(&oracle), "step {step}");
    }
    // Every element record belongs to a member.
    assert_eq!(element_records(engine.as_ref()), members(&store, "s").len());
}

/// Updates from two coordinators reach replicas in different orders,
/// mixed with a whole state: the replicas end with the same set, in the
/// same version, and it is the join of the coordinators' sets.
#[test]
fn updates_in_any_order_and_whole_states_converge_to_one_version() {
    let stores: Vec<ObjectStore> = ["n1", "n2", "n3", "n4"]
        .iter()
        .map(|id| ObjectStore::open(Arc::new(MemEngine::new()), id).expect("store"))
        .collect();
    let (a, b) = (&stores[0], &stores[1]);
    let mut updates = Vec::new();
    for i in 0..6 {
        updates.push(op(a, "s", &elements(i, 2), &[]));
        updates.push(op(b, "s", &elements(10 + i, 1), &[]));
    }
    updates.push(op(a, "s", &[], &elements(0, 3)));
    let whole_a = a.get(&bk("s").0, &bk("s").1).expect("get").expect("a set");
    for u in updates.iter().rev() {
        merge(&stores[2], "s", u);
    }
    merge(&stores[3], "s", &whole_a);
    for u in &updates {
        merge(&stores[3], "s", u);
    }
    let (bucket, key) = bk("s");
    let got: Vec<Object> = stores[2..]
        .iter()
        .map(|s| s.get(&bucket, &key).expect("get").expect("a set"))
        .collect();
    assert_eq!(got[0], got[1], "one state, one version");
    assert_eq!(got[0].siblings().len(), 1);
    let mut want = state(a, "s").expect("a");
    Merge::merge(&mut want, &state(b, "s").expect("b"));
    assert_eq!(state(&stores[2], "s"), Some(want));
    // An update whose coordinator's earlier one never arrives (lost with
    // its disk) shows at once: an acknowledged add never waits for an
    // unacknowledged one.
    let lone = ObjectStore::open(Arc::new(MemEngine::new()), "n5").expect("store");
    merge(&lone, "s", &updates[2]);
    let SetUpdate { ops, .. } = SetUpdate::of_object(&updates[2]).expect("an update");
    let quorra_core::crdt::SetDelta::Add { members: added, .. } = &ops[0] else {
        panic!("an add");
    };
    assert_eq!(&members(&lone, "s"), added);
    // A coordinator's whole set merged back changes nothing.
    merge(&stores[2], "s", &whole_a);
    assert_eq!(
        stores[2].get(&bucket, &key).expect("get").as_ref(),
        Some(&got[0])
    );
}

/// A set stored whole (as earlier builds did, under a coordinator's dot)
/// is split by its next operation, elements and all.
#[test]
fn a_set_stored_whole_is_split_by_its_next_operation() {
    let engine: Arc<dyn Engine> = Arc::new(MemEngine::new());
    let store = ObjectStore::open(engine.clone(), "n1").expect("store");
    let (b, k) = bk("old");
    let whole = quorra_core::write::apply_client_write(
        None,
        &VersionVector::new(),
        &store.actor(),
        set_op(&elements(0, 5), &[], VersionVector::new()),
        ConflictMode::Siblings,
        &Limits::default(),
    )
    .expect("a whole state");
    let skey = store.object_key(&b, &k);
    engine
        .put(
            Space::Objects,
            &skey,
            &super::super::encode_record(&whole).expect("record"),
            Durability::Buffered,
        )
        .expect("raw put");
    assert_eq!(element_records(engine.as_ref()), 0);
    op(&store, "old", &elements(5, 1), &[]);
    assert_eq!(members(&store, "old"), elements(0, 6));
    assert_eq!(element_records(engine.as_ref()), 6, "split");
    // Now split, the next operation touches one entry.
    let update = op(&store, "old", &elements(6, 1), &[]);
    assert!(SetUpdate::of_object(&update).is_some());
    assert_eq!(members(&store, "old"), elements(0, 7));
}

/// A corrupt element record makes its key corrupt: counted, read as
/// missing, every record of the key gone; the next operation starts from
/// an empty set under a new actor.
#[test]
fn a_corrupt_element_makes_its_whole_key_corrupt() {
    let engine: Arc<dyn Engine> = Arc::new(MemEngine::new());
    let store = ObjectStore::open(engine.clone(), "n1").expect("store");
    op(&store, "s", &elements(0, 3), &[]);
    op(&store, "t", &elements(0, 2), &[]);
    let (b, k) = bk("s");
    let prefix = elements_prefix(&store.object_key(&b, &k));
    let victim = [prefix.as_slice(), elements(1, 1)[0].as_bytes()].concat();
    flip_last_byte(engine.as_ref(), Space::Elements, &victim);
    let actor = store.actor();
    assert_eq!(store.get(&b, &k).expect("get"), None);
    assert_eq!(store.corruptions(), 1);
    assert_ne!(store.actor(), actor, "a new actor");
    assert_eq!(element_records(engine.as_ref()), 2, "only t's are left");
    op(&store, "s", &elements(7, 1), &[]);
    assert_eq!(members(&store, "s"), elements(7, 1));
    assert_eq!(members(&store, "t"), elements(0, 2));
}

/// Updates held as hints for a peer are joined into one state; dropping
/// the partitions a set lives in drops its elements too.
#[test]
fn hints_join_set_updates_and_dropped_partitions_take_their_elements() {
    let engine: Arc<dyn Engine> = Arc::new(MemEngine::new());
    let store = ObjectStore::open(engine.clone(), "n1").expect("store");
    let helper = ObjectStore::open(Arc::new(MemEngine::new()), "n2").expect("store");
    let (b, k) = bk("s");
    let budget = HintBudget {
        max_hints: 10,
        max_bytes: 1 << 20,
    };
    for i in 0..5 {
        let update = op(&helper, "s", &elements(i, 1), &[]);
        store
            .store_hint(
                "n3",
                &b,
                &k,
                &update,
                ConflictMode::Siblings,
                Durability::Buffered,
                budget,
                1,
            )
            .expect("hint");
    }
    let hint = store.get_hint("n3", &b, &k).expect("get").expect("held");
    assert_eq!(hint.siblings().len(), 1, "joined");
    assert_eq!(
        crdt::collapse(&hint).expect("state"),
        state(&helper, "s"),
        "the hint holds every update"
    );
    op(&store, "s", &elements(0, 4), &[]);
    // A set whose header record is unreadable goes with its elements too.
    op(&store, "u", &elements(0, 3), &[]);
    let (ub, uk) = bk("u");
    flip_last_byte(engine.as_ref(), Space::Objects, &store.object_key(&ub, &uk));
    assert_eq!(element_records(engine.as_ref()), 7);
    let all: Vec<(u32, Scope)> = (0..8).map(|p| (p, Scope::default())).collect();
    store.drop_partitions(&all, 8).expect("drop");
    assert_eq!(element_records(engine.as_ref()), 0);
    assert_eq!(store.get(&b, &k).expect("get"), None);
}

/// A partition scan (transfers, full syncs) sends a split set whole, read
/// under its key's lock, and counts its elements against the chunk's
/// budget: a chunk of large sets holds one of them, not every header.
#[test]
fn a_partition_scan_sends_sets_whole_and_counts_their_elements() {
    let engine: Arc<dyn Engine> = Arc::new(MemEngine::new());
    let store = ObjectStore::open(engine, "n1").expect("store");
    let keys = ["s1", "s2", "s3"];
    for k in keys {
        op(&store, k, &elements(0, 500), &[]);
    }
    let mut after: Option<Vec<u8>> = None;
    let mut seen = Vec::new();
    loop {
        let chunk = store
            .scan_partition(0, 1, after.as_deref(), 4096)
            .expect("scan");
        assert_eq!(chunk.objects.len(), 1, "one 500-element set fills a chunk");
        for p in &chunk.objects {
            let Ok(Some(CrdtValue::Set(s))) = crdt::collapse(&p.object) else {
                panic!("a whole set");
            };
            assert_eq!(s.members().count(), 500);
            seen.push(String::from_utf8_lossy(p.key.as_bytes()).into_owned());
        }
        match chunk.next {
            Some(n) => after = Some(n.to_vec()),
            None => break,
        }
    }
    seen.sort();
    assert_eq!(seen, keys);
}

/// A set is held to the value limit at its coordinator (`value_too_large`)
/// and to the object limit on every replica path, as a whole object is:
/// it is read and sent whole, so it must fit a peer frame.
#[test]
fn a_set_past_the_limits_is_refused_and_changes_nothing() {
    let limits = Limits {
        max_value_bytes: 1000,
        ..Limits::default()
    };
    let small = ObjectStore::open(Arc::new(MemEngine::new()), "n1")
        .expect("store")
        .with_limits(limits);
    let big = ObjectStore::open(Arc::new(MemEngine::new()), "n2").expect("store");
    let (b, k) = bk("s");
    op(&small, "s", &elements(0, 10), &[]);
    let e = small
        .coordinate(
            &b,
            &k,
            &VersionVector::new(),
            set_op(&elements(10, 100), &[], VersionVector::new()),
            ConflictMode::Siblings,
            Durability::Buffered,
        )
        .expect_err("past the value limit");
    assert_eq!(e.code(), quorra_core::ErrorCode::ValueTooLarge, "{e}");
    let update = op(&big, "s", &elements(100, 200), &[]);
    let e = small
        .merge_replica(
            &b,
            &k,
            &update,
            ConflictMode::Siblings,
            Durability::Buffered,
        )
        .expect_err("past the object limit");
    assert_eq!(e.code(), quorra_core::ErrorCode::ObjectTooLarge, "{e}");
    let whole = big.get(&b, &k).expect("get").expect("a set");
    let e = small
        .merge_replica(&b, &k, &whole, ConflictMode::Siblings, Durability::Buffered)
        .expect_err("past the object limit");
    assert_eq!(e.code(), quorra_core::ErrorCode::ObjectTooLarge, "{e}");
    assert_eq!(members(&small, "s"), elements(0, 10), "nothing changed");
}

/// The scrub checks a split set whole: a rotten element record, or one
/// lost (its header counted it), makes the key corrupt, moved aside for
/// anti-entropy to bring back; a sound set is left alone.
#[test]
fn the_scrub_finds_a_rotten_or_lost_element() {
    let engine: Arc<dyn Engine> = Arc::new(MemEngine::new());
    let store = ObjectStore::open(engine.clone(), "n1").expect("store");
    for k in ["rot", "lost", "sound"] {
        op(&store, k, &elements(0, 5), &[]);
    }
    let element_of = |key: &str, i: usize| {
        let (b, k) = bk(key);
        let prefix = elements_prefix(&store.object_key(&b, &k));
        [prefix.as_slice(), elements(i, 1)[0].as_bytes()].concat()
    };
    flip_last_byte(engine.as_ref(), Space::Elements, &element_of("rot", 2));
    engine
        .delete(
            Space::Elements,
            &element_of("lost", 3),
            Durability::Buffered,
        )
        .expect("raw delete");
    let mut after = None;
    while let Some(next) = store.scrub(after.as_deref(), 4).expect("scrub") {
        after = Some(next);
    }
    assert_eq!(store.scrub_stats().corrupt, 2);
    assert_eq!(state(&store, "rot"), None);
    assert_eq!(state(&store, "lost"), None);
    assert_eq!(members(&store, "sound"), elements(0, 5));
    assert_eq!(element_records(engine.as_ref()), 5, "only the sound set's");
}
