use std::sync::Arc;

use quorra_core::{BucketName, ConflictMode, Content, Key, Limits, VersionVector};

use super::*;
use crate::storage::memory::MemEngine;
use crate::storage::rocks::RocksEngine;

fn bk(b: &str, k: &str) -> (BucketName, Key) {
    let l = Limits::default();
    (
        BucketName::parse(b, &l).expect("bucket"),
        Key::parse(k.as_bytes().to_vec(), &l).expect("key"),
    )
}

fn put(store: &ObjectStore, b: &BucketName, k: &Key, ctx: &VersionVector, v: &str) -> Object {
    store
        .coordinate(
            b,
            k,
            ctx,
            Content::value(v.as_bytes().to_vec(), "text/plain", 1),
            ConflictMode::Siblings,
            Durability::Buffered,
        )
        .expect("put")
}

const BUDGET: HintBudget = HintBudget {
    max_hints: 1_000,
    max_bytes: 1 << 30,
};

fn live(o: &Object) -> Vec<String> {
    let mut v: Vec<String> = o
        .live_siblings()
        .map(|s| String::from_utf8_lossy(&s.content.value).into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn corrupt_record_is_reported_and_never_returned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine: Arc<dyn Engine> = Arc::new(RocksEngine::open(dir.path()).expect("open"));
    let store = ObjectStore::open(engine.clone(), "n1").expect("store");
    let (b, k) = bk("users", "alice");
    put(&store, &b, &k, &VersionVector::new(), "precious");
    let actor_before = store.actor();

    // Flip one byte of the value through the engine's raw API.
    let skey = store.object_key(&b, &k);
    let mut raw = engine
        .get(Space::Objects, &skey)
        .expect("raw get")
        .expect("present");
    let pos = raw
        .windows(8)
        .position(|w| w == b"precious")
        .expect("value bytes in record");
    raw[pos] ^= 0x20;
    engine
        .put(Space::Objects, &skey, &raw, Durability::Fsync)
        .expect("raw put");

    assert_eq!(
        store.get(&b, &k).expect("get"),
        None,
        "corrupt bytes never returned"
    );
    assert_eq!(store.corruptions(), 1, "the corruption is reported");

    // Coordinating on a key it lost, the node takes a new actor epoch (kv679).
    let o = put(&store, &b, &k, &VersionVector::new(), "new");
    assert_ne!(store.actor(), actor_before);
    assert_eq!(o.siblings()[0].dot.actor, store.actor());
    assert_eq!(
        live(&store.get(&b, &k).expect("get").expect("present")),
        ["new"]
    );
}

#[test]
fn truncated_and_unknown_records_are_corrupt() {
    assert_eq!(decode_record(b"\x01abc"), Err(CorruptRecord::Truncated(4)));
    assert_eq!(
        decode_record(&[9u8; 20]),
        Err(CorruptRecord::UnknownFormat(9))
    );
    let good = encode_record(&Object::new()).expect("encode");
    assert_eq!(decode_record(&good), Ok(Object::new()));
}

#[test]
fn same_context_concurrent_puts_all_survive() {
    let store = Arc::new(ObjectStore::open(Arc::new(MemEngine::new()), "n1").expect("store"));
    let (b, k) = bk("cart", "k");
    let base = put(&store, &b, &k, &VersionVector::new(), "v0");
    let ctx = base.clock().clone();
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let (store, b, k, ctx) = (store.clone(), b.clone(), k.clone(), ctx.clone());
            std::thread::spawn(move || {
                put(&store, &b, &k, &ctx, &format!("w{i}"));
            })
        })
        .collect();
    for h in handles {
        h.join().expect("writer");
    }
    let o = store.get(&b, &k).expect("get").expect("present");
    assert_eq!(
        live(&o),
        (0..8).map(|i| format!("w{i}")).collect::<Vec<_>>()
    );
    let resolved = put(&store, &b, &k, o.clock(), "merged");
    assert_eq!(live(&resolved), ["merged"]);
}

#[test]
fn too_many_siblings_is_refused_and_changes_nothing() {
    let store = ObjectStore::open(Arc::new(MemEngine::new()), "n1")
        .expect("store")
        .with_limits(Limits {
            max_siblings: 2,
            ..Limits::default()
        });
    let (b, k) = bk("b", "k");
    for v in ["a", "b"] {
        put(&store, &b, &k, &VersionVector::new(), v);
    }
    let err = store
        .coordinate(
            &b,
            &k,
            &VersionVector::new(),
            Content::value(b"c".to_vec(), "text/plain", 1),
            ConflictMode::Siblings,
            Durability::Buffered,
        )
        .expect_err("refused");
    assert!(matches!(
        err,
        StoreError::Refused(Refused::TooManySiblings { count: 3, limit: 2 })
    ));
    assert_eq!(
        live(&store.get(&b, &k).expect("get").expect("present")),
        ["a", "b"]
    );
}

#[test]
fn a_delete_writes_a_tombstone_covering_its_context_even_on_a_missing_key() {
    let store = ObjectStore::open(Arc::new(MemEngine::new()), "n1").expect("store");
    let (b, k) = bk("b", "k");
    put(&store, &b, &k, &VersionVector::new(), "x");
    let seen = put(&store, &b, &k, &VersionVector::new(), "y");
    let tomb = |b: &BucketName, k: &Key, ctx: &VersionVector| {
        store
            .coordinate(
                b,
                k,
                ctx,
                Content::tombstone(2),
                ConflictMode::Siblings,
                Durability::Buffered,
            )
            .expect("delete")
    };
    assert!(tomb(&b, &k, seen.clock()).is_deleted());
    // A key this replica never saw still gets a tombstone (the read the
    // coordinator does first may have seen it elsewhere).
    let (b2, k2) = bk("b", "never");
    let o = tomb(&b2, &k2, &VersionVector::new());
    assert!(o.is_deleted());
    assert_eq!(o.siblings().len(), 1);
}

#[test]
fn an_object_past_the_limit_is_refused_and_changes_nothing() {
    let store = ObjectStore::open(Arc::new(MemEngine::new()), "n1")
        .expect("store")
        .with_limits(Limits {
            max_value_bytes: 1000,
            max_object_bytes: Some(2500),
            ..Limits::default()
        });
    let (b, k) = bk("b", "k");
    let big = "x".repeat(1000);
    put(&store, &b, &k, &VersionVector::new(), &big);
    put(&store, &b, &k, &VersionVector::new(), &big);
    let err = store
        .coordinate(
            &b,
            &k,
            &VersionVector::new(),
            Content::value(big.clone().into_bytes(), "text/plain", 1),
            ConflictMode::Siblings,
            Durability::Buffered,
        )
        .expect_err("refused");
    assert!(
        matches!(err, StoreError::ObjectTooLarge { limit: 2500, .. }),
        "{err}"
    );
    assert_eq!(
        store
            .get(&b, &k)
            .expect("get")
            .expect("kept")
            .siblings()
            .len(),
        2
    );
    // The same cap holds on the replica path.
    let mut three = store.get(&b, &k).expect("get").expect("kept");
    three
        .update(
            &VersionVector::new(),
            &quorra_core::Actor::new("n2", 1),
            Content::value(big.into_bytes(), "text/plain", 1),
            ConflictMode::Siblings,
        )
        .expect("update");
    assert!(matches!(
        store.merge_replica(&b, &k, &three, ConflictMode::Siblings, Durability::Buffered),
        Err(StoreError::ObjectTooLarge { .. })
    ));
}

#[test]
fn the_hint_budget_counts_hints_and_bytes() {
    let store = ObjectStore::open(Arc::new(MemEngine::new()), "n1").expect("store");
    let (b, k) = bk("b", "k");
    let o = put(&store, &b, &k, &VersionVector::new(), &"v".repeat(500));
    let mode = ConflictMode::Siblings;
    let by_count = HintBudget {
        max_hints: 1,
        max_bytes: 1 << 30,
    };
    store
        .store_hint("n2", &b, &k, &o, mode, Durability::Buffered, by_count, 1)
        .expect("first hint");
    // Merging into the hint it holds is not a new hint.
    store
        .store_hint("n2", &b, &k, &o, mode, Durability::Buffered, by_count, 2)
        .expect("same hint again");
    assert!(matches!(
        store.store_hint("n3", &b, &k, &o, mode, Durability::Buffered, by_count, 3),
        Err(StoreError::HintBudgetFull { hints: 1, .. })
    ));
    let by_bytes = HintBudget {
        max_hints: 1_000,
        max_bytes: store.hint_bytes() + 100,
    };
    assert!(matches!(
        store.store_hint("n3", &b, &k, &o, mode, Durability::Buffered, by_bytes, 3),
        Err(StoreError::HintBudgetFull { .. })
    ));
    assert_eq!(store.hints_held(), 1);
    let hint = store.hints_for("n2", 10).expect("list").remove(0);
    assert_eq!(hint.created_ms, 1, "age runs from the first write");
    assert!(store.delete_hint(&hint).expect("delete"));
    assert_eq!((store.hints_held(), store.hint_bytes()), (0, 0));
}

#[test]
fn identity_is_kept_checked_and_renewed_when_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = {
        let engine = Arc::new(RocksEngine::open(dir.path()).expect("open"));
        let store = ObjectStore::open(engine, "n1").expect("store");
        store.close().expect("clean stop");
        store.actor()
    };
    let engine: Arc<dyn Engine> = Arc::new(RocksEngine::open(dir.path()).expect("reopen"));
    let store = ObjectStore::open(engine.clone(), "n1").expect("store");
    assert_eq!(
        store.actor(),
        first,
        "a restart after a clean stop keeps the actor"
    );
    drop(store);
    let after_crash = ObjectStore::open(engine.clone(), "n1").expect("store");
    assert_ne!(
        after_crash.actor(),
        first,
        "a start after an unclean stop takes a new epoch"
    );
    after_crash.close().expect("clean stop");
    drop(after_crash);
    assert!(matches!(
        ObjectStore::open(engine.clone(), "n2"),
        Err(StoreError::WrongNode { .. })
    ));
    drop(engine);

    let wiped = tempfile::tempdir().expect("tempdir");
    let engine = Arc::new(RocksEngine::open(wiped.path()).expect("open"));
    let renewed = ObjectStore::open(engine, "n1").expect("store").actor();
    assert_eq!(renewed.node, "n1");
    assert_ne!(renewed.epoch, first.epoch, "a wiped dir gets a new epoch");
}

#[test]
fn objects_are_keyed_by_the_top_of_their_hash() {
    let store = ObjectStore::open(Arc::new(MemEngine::new()), "n1").expect("store");
    let (b, k) = bk("b", "k");
    let key = store.object_key(&b, &k);
    let prefix = u32::from_be_bytes([key[0], key[1], key[2], key[3]]);
    assert_eq!(u64::from(prefix), key_hash(b"b", b"k") >> 32);
    assert_eq!(&key[4..], b"\x01bk");
}

#[test]
fn hints_are_kept_merged_listed_and_deleted_once_delivered() {
    let store = ObjectStore::open(Arc::new(MemEngine::new()), "n1").expect("store");
    let (b, k) = bk("b", "k");
    let (b2, k2) = bk("b", "other/key");
    let a = put(&store, &b, &k, &VersionVector::new(), "a");
    let mode = ConflictMode::Siblings;
    store
        .store_hint("n2", &b, &k, &a, mode, Durability::Buffered, BUDGET, 1)
        .expect("hint");
    store
        .store_hint("n2", &b2, &k2, &a, mode, Durability::Buffered, BUDGET, 1)
        .expect("hint");
    store
        .store_hint("n3", &b, &k, &a, mode, Durability::Buffered, BUDGET, 1)
        .expect("hint");
    let counts = store.hint_counts().expect("counts");
    assert_eq!(counts.get("n2").map(|c| c.0), Some(2));
    assert_eq!(counts.get("n3").map(|c| c.0), Some(1));

    let hints = store.hints_for("n2", 10).expect("list");
    assert_eq!(hints.len(), 2);
    assert!(hints.iter().any(|h| h.key == k2 && h.bucket == b2));
    // A hint that changed after it was read is not deleted.
    let newer = put(&store, &b, &k, &VersionVector::new(), "b");
    store
        .store_hint("n2", &b, &k, &newer, mode, Durability::Buffered, BUDGET, 2)
        .expect("hint");
    let stale = hints.iter().find(|h| h.key == k).expect("hint for k");
    assert!(!store.delete_hint(stale).expect("delete"));
    assert_eq!(
        live(&store.get_hint("n2", &b, &k).expect("get").expect("held")),
        ["a", "b"]
    );
    for h in store.hints_for("n2", 10).expect("list") {
        assert!(store.delete_hint(&h).expect("delete"));
    }
    assert_eq!(store.hint_counts().expect("counts").get("n2"), None);
    assert_eq!(
        store.hint_counts().expect("counts").get("n3").map(|c| c.0),
        Some(1)
    );
}

/// A copy of `engine` with only `Space::Meta` (the node's identity and
/// markers, all fsynced): as after a power loss that took the object writes
/// still in the page cache, or a restore of an older backup.
fn after_power_loss(engine: &dyn Engine) -> Arc<dyn Engine> {
    let copy = MemEngine::new();
    let mut ops = Vec::new();
    engine
        .scan(Space::Meta, b"", &mut |k, v| {
            ops.push(crate::storage::WriteOp::Put {
                space: Space::Meta,
                key: k.to_vec(),
                value: v.to_vec(),
            });
            true
        })
        .expect("scan");
    copy.write(ops, Durability::Fsync).expect("copy");
    Arc::new(copy)
}

/// kv679 after an unsynced loss: the node's next write on the key must
/// not reuse the dot its lost write had, or the replicas holding that write
/// keep it and drop the new one.
#[test]
fn a_write_after_losing_unsynced_writes_never_reuses_a_dot() {
    let engine = Arc::new(MemEngine::new());
    let store = ObjectStore::open(engine.clone(), "n1").expect("store");
    let (b, k) = bk("b", "k");
    // Acknowledged with w=3: the other replicas hold it.
    let on_other_replicas = put(&store, &b, &k, &VersionVector::new(), "acknowledged");
    drop(store);
    let store = ObjectStore::open(after_power_loss(engine.as_ref()), "n1").expect("reopen");
    assert_eq!(
        store.get(&b, &k).expect("get"),
        None,
        "the write was lost here"
    );
    let new = put(&store, &b, &k, &VersionVector::new(), "next");
    let (old_dot, new_dot) = (&on_other_replicas.siblings()[0].dot, &new.siblings()[0].dot);
    assert_ne!(old_dot, new_dot, "the dot was reused");
    let mut replica = on_other_replicas.clone();
    replica.merge(&new, ConflictMode::Siblings);
    assert_eq!(live(&replica), ["acknowledged", "next"]);
}

/// Evidence of lost local writes (another replica holds a dot of this
/// node's actor above what it holds for the key) makes the node take a new
/// epoch before it coordinates again, even when the node stopped cleanly
/// (a data dir restored from an older backup).
#[test]
fn evidence_of_lost_writes_takes_a_new_epoch() {
    let engine = Arc::new(MemEngine::new());
    let store = ObjectStore::open(engine.clone(), "n1").expect("store");
    let (b, k) = bk("b", "k");
    let held_elsewhere = put(&store, &b, &k, &VersionVector::new(), "v1");
    let before = store.actor();
    store.close().expect("clean stop");
    drop(store);
    let store = ObjectStore::open(after_power_loss(engine.as_ref()), "n1").expect("reopen");
    assert_eq!(store.actor(), before, "a clean stop keeps the epoch");
    store
        .merge_replica(
            &b,
            &k,
            &held_elsewhere,
            ConflictMode::Siblings,
            Durability::Buffered,
        )
        .expect("read repair brings it back");
    assert_ne!(
        store.actor(),
        before,
        "new epoch on evidence from a replica"
    );

    // The same through a client's context.
    let engine = Arc::new(MemEngine::new());
    let store = ObjectStore::open(engine.clone(), "n1").expect("store");
    let seen = put(&store, &b, &k, &VersionVector::new(), "v1");
    let before = store.actor();
    store.close().expect("clean stop");
    drop(store);
    let store = ObjectStore::open(after_power_loss(engine.as_ref()), "n1").expect("reopen");
    put(&store, &b, &k, seen.clock(), "v2");
    assert_ne!(
        store.actor(),
        before,
        "new epoch on evidence from a context"
    );
}

/// A corrupt record met on the replica path (a merge) is kept aside as
/// evidence, and the node takes a new epoch, as on the coordinate path.
#[test]
fn a_corrupt_record_met_by_a_merge_is_kept_and_rotates_the_epoch() {
    let engine: Arc<dyn Engine> = Arc::new(MemEngine::new());
    let store = ObjectStore::open(engine.clone(), "n1").expect("store");
    let (b, k) = bk("b", "k");
    put(&store, &b, &k, &VersionVector::new(), "precious");
    let before = store.actor();
    let skey = store.object_key(&b, &k);
    let mut raw = engine
        .get(Space::Objects, &skey)
        .expect("get")
        .expect("raw");
    let last = raw.len() - 1;
    raw[last] ^= 0x55;
    engine
        .put(Space::Objects, &skey, &raw, Durability::Fsync)
        .expect("corrupt it");
    let mut incoming = Object::new();
    incoming
        .update(
            &VersionVector::new(),
            &quorra_core::Actor::new("n2", 9),
            Content::value(b"other".to_vec(), "text/plain", 1),
            ConflictMode::Siblings,
        )
        .expect("update");
    store
        .merge_replica(
            &b,
            &k,
            &incoming,
            ConflictMode::Siblings,
            Durability::Buffered,
        )
        .expect("merge");
    assert_ne!(store.actor(), before, "new epoch after a corrupt record");
    let mut evidence = Vec::new();
    engine
        .scan(Space::Meta, b"quarantine/", &mut |_, v| {
            evidence.push(v.to_vec());
            true
        })
        .expect("scan");
    assert_eq!(evidence, [raw], "the corrupt bytes are kept as evidence");
}

/// The stored record format (format byte, checksum, msgpack object) keeps
/// its bytes: a change needs a new fixture and a new format number. The
/// fixture sits with the core's other golden files; `QUORRA_BLESS=1`
/// rewrites it.
#[test]
fn the_stored_record_keeps_its_bytes() {
    let mut object = quorra_core::Object::new();
    for (node, value) in [("n1", "a"), ("n2", "b")] {
        object
            .update(
                &VersionVector::new(),
                &quorra_core::Actor::new(node, 0x0123_4567_89ab_cdef),
                Content::value(value.as_bytes().to_vec(), "text/plain", 1_700_000_000_000),
                ConflictMode::Siblings,
            )
            .expect("update");
    }
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("core/tests/golden/record-v1.hex");
    let encoded = encode_record(&object).expect("encode");
    let hex: String = encoded.iter().map(|b| format!("{b:02x}")).collect();
    if std::env::var_os("QUORRA_BLESS").is_some() {
        std::fs::write(&path, format!("{hex}\n")).expect("bless");
    }
    let fixed = std::fs::read_to_string(&path).expect("fixture");
    assert_eq!(hex, fixed.trim(), "the record format changed");
    let bytes: Vec<u8> = (0..fixed.trim().len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&fixed[i..i + 2], 16).expect("hex"))
        .collect();
    let decoded = decode_record(&bytes).expect("the fixture decodes");
    assert_eq!(decoded, object);
    assert_eq!(encode_record(&decoded).expect("encode"), bytes);
}

/// Keys spread over the partitions of any count: a scan of one partition
/// returns exactly its keys, however the chunks fall, and dropping some
/// partitions deletes exactly theirs.
#[test]
fn partitions_of_any_count_are_scanned_and_dropped_by_hash_range() {
    let store = ObjectStore::open(Arc::new(MemEngine::new()), "n1").expect("store");
    let mut names = Vec::new();
    for i in 0..300 {
        let (b, k) = bk(if i % 3 == 0 { "b" } else { "other" }, &format!("k{i}"));
        put(&store, &b, &k, &VersionVector::new(), "v");
        names.push((b, k));
    }
    let partition = |b: &BucketName, k: &Key, q: u32| {
        partition_of(key_hash(b.as_str().as_bytes(), k.as_bytes()), q)
    };
    for q in [1u32, 2, 8, 64] {
        let mut seen = 0;
        for p in 0..q {
            let mut got = Vec::new();
            let mut after: Option<Vec<u8>> = None;
            loop {
                // Small chunks: the cursor is exercised on every partition.
                let chunk = store
                    .scan_partition(p, q, after.as_deref(), 200)
                    .expect("scan");
                got.extend(
                    chunk
                        .objects
                        .iter()
                        .map(|o| (o.bucket.clone(), o.key.clone())),
                );
                match chunk.next {
                    Some(n) => after = Some(n.into_vec()),
                    None => break,
                }
            }
            let mut want: Vec<_> = names
                .iter()
                .filter(|(b, k)| partition(b, k, q) == p)
                .cloned()
                .collect();
            want.sort();
            let mut sorted = got.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted.len(), got.len(), "q={q} p={p}: no key twice");
            assert_eq!(sorted, want, "q={q} p={p}: exactly the partition's keys");
            seen += got.len();
        }
        assert_eq!(seen, names.len(), "q={q}: every key in one partition");
        let usage = store.partition_usage(q).expect("usage");
        assert_eq!(
            usage.values().map(|u| u.0).sum::<u64>(),
            names.len() as u64,
            "q={q}: usage counts every key once"
        );
    }
    // Partition 1 whole; of partition 5, bucket b only (an n_val that
    // went down).
    use quorra_core::layout::Scope;
    let only_b = Scope::Only(["b".to_string()].into());
    let actor = store.actor();
    let dropped = store
        .drop_partitions(&[(1, Scope::default()), (5, only_b)], 8)
        .expect("drop");
    // The node may coordinate these keys again, without the copies that
    // hold its dots: it must not issue those dots again.
    assert_ne!(
        store.actor(),
        actor,
        "dropping keys takes a new actor epoch"
    );
    let goes = |b: &BucketName, k: &Key| {
        let p = partition(b, k, 8);
        p == 1 || (p == 5 && b.as_str() == "b")
    };
    let gone = names.iter().filter(|(b, k)| goes(b, k)).count();
    assert!(names
        .iter()
        .any(|(b, k)| partition(b, k, 8) == 5 && b.as_str() != "b"));
    assert_eq!(dropped, gone as u64);
    for (b, k) in &names {
        let kept = store.get(b, k).expect("get").is_some();
        assert_eq!(kept, !goes(b, k), "{b:?} {k:?}");
    }
}

/// A data dir written by a build that keyed objects by partition number is
/// rewritten on open (objects and hints), even one a crash left half done.
#[test]
fn a_data_dir_keyed_by_partition_number_is_rewritten_on_open() {
    let engine: Arc<dyn Engine> = Arc::new(MemEngine::new());
    let store = ObjectStore::open(engine.clone(), "n1").expect("store");
    let mode = ConflictMode::Siblings;
    let mut names = Vec::new();
    for i in 0..50 {
        let (b, k) = bk("b", &format!("k{i}"));
        let o = put(&store, &b, &k, &VersionVector::new(), &format!("v{i}"));
        store
            .store_hint("n2", &b, &k, &o, mode, Durability::Buffered, BUDGET, 1)
            .expect("hint");
        names.push((b, k));
    }
    store.close().expect("close");
    drop(store);
    // The first format: partition (of 64) instead of the hash prefix, for
    // all but every fifth key (a rewrite a crash cut short).
    for space in [Space::Objects, Space::Hints] {
        let mut all = Vec::new();
        engine
            .scan(space, b"", &mut |k, v| {
                all.push((k.to_vec(), v.to_vec()));
                true
            })
            .expect("scan");
        for (i, (k, v)) in all.into_iter().enumerate() {
            if i % 5 == 0 {
                continue;
            }
            let at = if space == Space::Hints { 3 } else { 0 };
            let prefix = u32::from_be_bytes(k[at..at + 4].try_into().expect("4 bytes"));
            let old_partition = prefix >> 26;
            let old = [&k[..at], &old_partition.to_be_bytes(), &k[at + 4..]].concat();
            engine
                .write(
                    vec![
                        WriteOp::Delete {
                            space,
                            key: k.clone(),
                        },
                        WriteOp::Put {
                            space,
                            key: old,
                            value: v,
                        },
                    ],
                    Durability::Buffered,
                )
                .expect("write");
        }
    }
    engine
        .delete(Space::Meta, META_KEY_FORMAT, Durability::Buffered)
        .expect("unmark");
    let store = ObjectStore::open(engine.clone(), "n1").expect("reopen");
    for (i, (b, k)) in names.iter().enumerate() {
        let o = store.get(b, k).expect("get").expect("object kept");
        assert_eq!(live(&o), vec![format!("v{i}")]);
    }
    assert_eq!(
        store.hints_for("n2", 1_000).expect("hints").len(),
        names.len()
    );
    assert_eq!(store.hints_held(), names.len() as u64);
    let mut count = 0;
    engine
        .scan(Space::Objects, b"", &mut |_, _| {
            count += 1;
            true
        })
        .expect("scan");
    assert_eq!(count, names.len(), "no key left in the old format");
}

/// An engine whose syncs fail while `failing` is set: the writes reach it,
/// their durability does not.
struct SyncFails {
    inner: MemEngine,
    failing: std::sync::atomic::AtomicBool,
}

impl Engine for SyncFails {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        self.inner.get(space, key)
    }
    fn write(&self, ops: Vec<WriteOp>, durability: Durability) -> Result<(), EngineError> {
        self.inner.write(ops, durability)
    }
    fn scan_from(
        &self,
        space: Space,
        prefix: &[u8],
        start: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), EngineError> {
        self.inner.scan_from(space, prefix, start, visit)
    }
    fn sync(&self) -> Result<(), EngineError> {
        if self.failing.load(Ordering::Relaxed) {
            return Err(EngineError::Injected);
        }
        self.inner.sync()
    }
}

/// A durable write whose sync fails is refused, but it reached the engine
/// (readers see it): the partition's tree and the hint counters count it,
/// so they still match what the engine holds.
#[test]
fn a_write_whose_sync_failed_is_refused_and_still_counted() {
    use crate::storage::commit::GroupCommit;
    let raw = Arc::new(SyncFails {
        inner: MemEngine::new(),
        failing: std::sync::atomic::AtomicBool::new(false),
    });
    let engine: Arc<dyn Engine> = Arc::new(GroupCommit::new(raw.clone()));
    let store = ObjectStore::open(engine.clone(), "n1").expect("store");
    let (b, k) = bk("users", "alice");
    const PARTITIONS: u32 = 8;
    let p = partition_of_key(&store.object_key(&b, &k), PARTITIONS).expect("partition");
    let before = store.tree(p, PARTITIONS).expect("tree");

    raw.failing.store(true, Ordering::Relaxed);
    let refused = store.coordinate(
        &b,
        &k,
        &VersionVector::new(),
        Content::value(b"v".to_vec(), "text/plain", 1),
        ConflictMode::Siblings,
        Durability::Fsync,
    );
    assert!(
        matches!(refused, Err(StoreError::Engine(EngineError::Unsynced(_)))),
        "{refused:?}"
    );
    let hinted = store.store_hint(
        "n2",
        &b,
        &k,
        &put(&store, &b, &k, &VersionVector::new(), "w"),
        ConflictMode::Siblings,
        Durability::Fsync,
        BUDGET,
        1,
    );
    assert!(hinted.is_err(), "{hinted:?}");
    raw.failing.store(false, Ordering::Relaxed);

    assert_eq!(
        live(&store.get(&b, &k).expect("get").expect("held")),
        ["v", "w"]
    );
    assert_eq!(store.hints_held(), 1);
    let tree = store.tree(p, PARTITIONS).expect("tree");
    assert_ne!(tree.root(), before.root(), "the tree counts the write");
    // The same engine, opened afresh, builds its trees from a scan.
    let fresh = ObjectStore::open(engine, "n1").expect("reopen");
    assert_eq!(fresh.tree(p, PARTITIONS).expect("tree").root(), tree.root());
    assert_eq!(fresh.hints_held(), 1);
}
