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
            100,
            Durability::Buffered,
        )
        .expect("put")
}

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
    let store = ObjectStore::open(engine.clone(), "n1", 256).expect("store");
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
    let store = Arc::new(ObjectStore::open(Arc::new(MemEngine::new()), "n1", 256).expect("store"));
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
    let store = ObjectStore::open(Arc::new(MemEngine::new()), "n1", 256).expect("store");
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
            2,
            Durability::Buffered,
        )
        .expect_err("refused");
    assert!(matches!(
        err,
        StoreError::TooManySiblings { count: 3, limit: 2 }
    ));
    assert_eq!(
        live(&store.get(&b, &k).expect("get").expect("present")),
        ["a", "b"]
    );
}

#[test]
fn delete_without_context_removes_what_was_seen() {
    let store = ObjectStore::open(Arc::new(MemEngine::new()), "n1", 256).expect("store");
    let (b, k) = bk("b", "k");
    put(&store, &b, &k, &VersionVector::new(), "x");
    put(&store, &b, &k, &VersionVector::new(), "y");
    let o = store
        .coordinate_delete(
            &b,
            &k,
            &VersionVector::new(),
            Content::tombstone(2),
            ConflictMode::Siblings,
            Durability::Buffered,
        )
        .expect("delete")
        .expect("tombstone written");
    assert!(o.is_deleted());
    let (b2, k2) = bk("b", "never");
    let none = store
        .coordinate_delete(
            &b2,
            &k2,
            &VersionVector::new(),
            Content::tombstone(2),
            ConflictMode::Siblings,
            Durability::Buffered,
        )
        .expect("delete");
    assert_eq!(none, None);
}

#[test]
fn identity_is_kept_checked_and_renewed_when_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = {
        let engine = Arc::new(RocksEngine::open(dir.path()).expect("open"));
        ObjectStore::open(engine, "n1", 64).expect("store").actor()
    };
    let engine: Arc<dyn Engine> = Arc::new(RocksEngine::open(dir.path()).expect("reopen"));
    assert_eq!(
        ObjectStore::open(engine.clone(), "n1", 64)
            .expect("store")
            .actor(),
        first,
        "a restart keeps the actor"
    );
    assert!(matches!(
        ObjectStore::open(engine.clone(), "n2", 64),
        Err(StoreError::WrongNode { .. })
    ));
    assert!(matches!(
        ObjectStore::open(engine.clone(), "n1", 128),
        Err(StoreError::PartitionsChanged {
            found: 64,
            configured: 128
        })
    ));
    drop(engine);

    let wiped = tempfile::tempdir().expect("tempdir");
    let engine = Arc::new(RocksEngine::open(wiped.path()).expect("open"));
    let renewed = ObjectStore::open(engine, "n1", 64).expect("store").actor();
    assert_eq!(renewed.node, "n1");
    assert_ne!(renewed.epoch, first.epoch, "a wiped dir gets a new epoch");
}

#[test]
fn objects_are_grouped_by_partition() {
    let store = ObjectStore::open(Arc::new(MemEngine::new()), "n1", 256).expect("store");
    let (b, k) = bk("b", "k");
    let key = store.object_key(&b, &k);
    let p = u32::from_be_bytes([key[0], key[1], key[2], key[3]]);
    assert!(p < 256);
    assert_eq!(&key[4..], b"\x01bk");
}

#[test]
fn hints_are_kept_merged_listed_and_deleted_once_delivered() {
    let store = ObjectStore::open(Arc::new(MemEngine::new()), "n1", 256).expect("store");
    let (b, k) = bk("b", "k");
    let (b2, k2) = bk("b", "other/key");
    let a = put(&store, &b, &k, &VersionVector::new(), "a");
    let mode = ConflictMode::Siblings;
    store
        .store_hint("n2", &b, &k, &a, mode, Durability::Buffered)
        .expect("hint");
    store
        .store_hint("n2", &b2, &k2, &a, mode, Durability::Buffered)
        .expect("hint");
    store
        .store_hint("n3", &b, &k, &a, mode, Durability::Buffered)
        .expect("hint");
    let counts = store.hint_counts().expect("counts");
    assert_eq!(counts.get("n2"), Some(&2));
    assert_eq!(counts.get("n3"), Some(&1));

    let hints = store.hints_for("n2", 10).expect("list");
    assert_eq!(hints.len(), 2);
    assert!(hints.iter().any(|h| h.key == k2 && h.bucket == b2));
    // A hint that changed after it was read is not deleted.
    let newer = put(&store, &b, &k, &VersionVector::new(), "b");
    store
        .store_hint("n2", &b, &k, &newer, mode, Durability::Buffered)
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
    assert_eq!(store.hint_counts().expect("counts").get("n3"), Some(&1));
}
