//! The tombstone index, the conditional reap, markers and resurrections,
//! on a real RocksDB.

use std::sync::Arc;

use quorra_core::proto::KeyDigest;
use quorra_core::{BucketName, ConflictMode, Content, Key, Limits, Object, VersionVector};

use crate::storage::rocks::RocksEngine;
use crate::storage::{Durability, Engine, Space};
use crate::store::ObjectStore;

fn key(k: &str) -> (BucketName, Key) {
    let l = Limits::default();
    (
        BucketName::parse("b", &l).expect("bucket"),
        Key::parse(k.as_bytes().to_vec(), &l).expect("key"),
    )
}

fn write(store: &ObjectStore, k: &str, ctx: &VersionVector, content: Content) -> Object {
    let (b, k) = key(k);
    store
        .coordinate(
            &b,
            &k,
            ctx,
            content,
            ConflictMode::Siblings,
            Durability::Buffered,
        )
        .expect("write")
}

fn value(v: &str, at: u64) -> Content {
    Content::value(v.as_bytes().to_vec(), "text/plain", at)
}

/// Every tombstone of partition 0 of 1 written before `before`.
fn listed(store: &ObjectStore, before: u64) -> Vec<KeyDigest> {
    store.tombstones(0, 1, before, 100).expect("list")
}

fn open(dir: &std::path::Path) -> (Arc<dyn Engine>, ObjectStore) {
    let engine: Arc<dyn Engine> = Arc::new(RocksEngine::open(dir).expect("open"));
    let store = ObjectStore::open(engine.clone(), "n1").expect("store");
    (engine, store)
}

#[test]
fn a_tombstone_is_indexed_listed_after_its_grace_and_reaped_only_at_its_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (engine, store) = open(dir.path());
    let v = write(&store, "gone", &VersionVector::new(), value("v", 10));
    let t = write(&store, "gone", v.clock(), Content::tombstone(100));
    write(&store, "kept", &VersionVector::new(), value("w", 10));
    assert_eq!(store.tombstone_counts().held, 1);
    assert!(listed(&store, 99).is_empty(), "within its grace");
    let due = listed(&store, 100);
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].digest, t.version_digest());

    // Another version (a replica that holds something else) is not reaped.
    let mut other = due[0].clone();
    other.digest ^= 1;
    assert_eq!(
        store.reap(&[other.clone()], true, 500).expect("reap"),
        vec![false]
    );
    assert_eq!(store.tombstone_counts().held, 1);

    assert_eq!(store.reap(&due, false, 500).expect("check"), vec![true]);
    assert_eq!(store.reap(&due, true, 500).expect("reap"), vec![true]);
    let (b, k) = key("gone");
    assert_eq!(store.get(&b, &k).expect("get"), None);
    let counts = store.tombstone_counts();
    assert_eq!((counts.held, counts.markers), (0, 1));

    // Gone from the engine too, once compacted.
    let before = engine.deletion_markers(Space::Objects).expect("markers");
    assert!(
        before >= Some(1),
        "the engine keeps the delete until then: {before:?}"
    );
    engine.compact(Space::Objects).expect("compact");
    assert_eq!(
        engine.deletion_markers(Space::Objects).expect("markers"),
        Some(0)
    );

    // The marker outlives the grace once more, then goes.
    listed(&store, 499);
    assert_eq!(store.tombstone_counts().markers, 1);
    listed(&store, 501);
    assert_eq!(store.tombstone_counts().markers, 0);
}

#[test]
fn a_value_a_reaped_tombstone_deleted_comes_back_counted_and_deleted_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_engine, store) = open(dir.path());
    let old = write(&store, "k", &VersionVector::new(), value("old", 10));
    write(&store, "k", old.clock(), Content::tombstone(100));
    let due = listed(&store, 100);
    assert_eq!(store.reap(&due, true, 200).expect("reap"), vec![true]);

    // A replica that missed the delete sends the old value back.
    let (b, k) = key("k");
    let merged = store
        .merge_replica(&b, &k, &old, ConflictMode::Siblings, Durability::Buffered)
        .expect("merge");
    assert!(merged.is_deleted(), "deleted again: {merged:?}");
    let counts = store.tombstone_counts();
    assert_eq!(counts.resurrections, 1);
    assert_eq!(
        (counts.held, counts.markers),
        (1, 0),
        "the tombstone is back"
    );

    // A new value is not a resurrection, and its clock covers the old one.
    let due = listed(&store, 100);
    assert_eq!(store.reap(&due, true, 300).expect("reap"), vec![true]);
    let new = write(&store, "k", &VersionVector::new(), value("new", 400));
    assert!(new.clock().covers(&old.siblings()[0].dot));
    let again = store
        .merge_replica(&b, &k, &old, ConflictMode::Siblings, Durability::Buffered)
        .expect("merge");
    let live: Vec<&[u8]> = again
        .live_siblings()
        .map(|s| s.content.value.as_slice())
        .collect();
    assert_eq!(live, vec![b"new".as_slice()]);
    assert_eq!(store.tombstone_counts().resurrections, 1);
}

#[test]
fn a_data_dir_from_before_the_index_is_indexed_when_opened() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (engine, store) = open(dir.path());
        let v = write(&store, "gone", &VersionVector::new(), value("v", 10));
        write(&store, "gone", v.clock(), Content::tombstone(100));
        // As a build without the index left it.
        engine
            .write(
                vec![
                    crate::storage::WriteOp::Delete {
                        space: Space::Meta,
                        key: b"tombstone_index".to_vec(),
                    },
                    crate::storage::WriteOp::Delete {
                        space: Space::Meta,
                        key: [
                            b"tombstone/".as_slice(),
                            &store.object_key(&key("gone").0, &key("gone").1),
                        ]
                        .concat(),
                    },
                ],
                Durability::Fsync,
            )
            .expect("unindex");
        store.close().expect("close");
    }
    let (_engine, store) = open(dir.path());
    assert_eq!(store.tombstone_counts().held, 1);
    assert_eq!(listed(&store, 100).len(), 1);
}
