use std::sync::Arc;

use quorra_core::hashtree::{segment_of, HashTree};
use quorra_core::proto::Pulled;
use quorra_core::{BucketName, ConflictMode, Content, Key, Limits, VersionVector};

use super::super::ObjectStore;
use crate::storage::memory::MemEngine;
use crate::storage::rocks::RocksEngine;
use crate::storage::{Durability, Engine, Space};

const PARTITIONS: u32 = 16;

/// The key hash the store files `bucket`/`key` under.
fn hash_of(bucket: &BucketName, key: &Key) -> u64 {
    quorra_core::hash::key_hash(bucket.as_str().as_bytes(), key.as_bytes())
}

fn bk(k: &str) -> (BucketName, Key) {
    let l = Limits::default();
    (
        BucketName::parse("b", &l).expect("bucket"),
        Key::parse(k.as_bytes().to_vec(), &l).expect("key"),
    )
}

fn put(store: &ObjectStore, k: &str, v: &str) {
    let (b, k) = bk(k);
    store
        .coordinate(
            &b,
            &k,
            &VersionVector::new(),
            Content::value(v.as_bytes().to_vec(), "text/plain", 1),
            ConflictMode::Siblings,
            Durability::Buffered,
        )
        .expect("put");
}

fn partition(k: &str) -> u32 {
    let (b, k) = bk(k);
    quorra_core::hash::partition_of(hash_of(&b, &k), PARTITIONS)
}

/// The tree a scan of the store's objects in `p` gives, computed here
/// from what a read returns.
fn rebuilt(store: &ObjectStore, names: &[String], p: u32) -> HashTree {
    let mut tree = HashTree::new();
    for name in names.iter().filter(|n| partition(n) == p) {
        let (b, k) = bk(name);
        if let Some(o) = store.get(&b, &k).expect("get") {
            let skey = store.object_key(&b, &k);
            let segment = segment_of(hash_of(&b, &k), PARTITIONS);
            tree.update(segment, &skey, None, Some(o.version_digest()));
        }
    }
    tree
}

#[test]
fn a_tree_kept_by_writes_equals_a_rebuild_and_is_built_once() {
    let store = ObjectStore::open(Arc::new(MemEngine::new()), "n1").expect("store");
    let names: Vec<String> = (0..300).map(|i| format!("k{i}")).collect();
    for n in &names[..100] {
        put(&store, n, "first");
    }
    let p = partition(&names[0]);
    let before = store.tree(p, PARTITIONS).expect("tree");
    assert_eq!(store.tree_builds(), 1);
    assert_eq!(before, rebuilt(&store, &names, p));
    // Writes, overwrites, deletes and merges update it in place.
    for n in &names {
        put(&store, n, "second");
    }
    for n in &names[..50] {
        let (b, k) = bk(n);
        let seen = store.get(&b, &k).expect("get").expect("there");
        store
            .coordinate(
                &b,
                &k,
                seen.clock(),
                Content::tombstone(2),
                ConflictMode::Siblings,
                Durability::Buffered,
            )
            .expect("delete");
    }
    let other = ObjectStore::open(Arc::new(MemEngine::new()), "n2").expect("store");
    put(&other, &names[7], "from n2");
    let (b, k) = bk(&names[7]);
    let theirs = other.get(&b, &k).expect("get").expect("there");
    store
        .merge_replica(
            &b,
            &k,
            &theirs,
            ConflictMode::Siblings,
            Durability::Buffered,
        )
        .expect("merge");
    let kept = store.tree(p, PARTITIONS).expect("tree");
    assert_eq!(store.tree_builds(), 1, "an exchange reuses the tree");
    assert_ne!(kept, before);
    assert_eq!(kept, rebuilt(&store, &names, p));
    // Another ring shape starts over.
    store.tree(0, PARTITIONS * 2).expect("tree");
    assert_eq!(store.tree_builds(), 2);
}

#[test]
fn a_corrupt_record_drops_its_partitions_tree_and_the_rebuild_leaves_it_out() {
    let engine: Arc<dyn Engine> = Arc::new(MemEngine::new());
    let store = ObjectStore::open(engine.clone(), "n1").expect("store");
    let names: Vec<String> = (0..100).map(|i| format!("k{i}")).collect();
    for n in &names {
        put(&store, n, "precious");
    }
    let victim = &names[3];
    let p = partition(victim);
    let before = store.tree(p, PARTITIONS).expect("tree");
    let (b, k) = bk(victim);
    let skey = store.object_key(&b, &k);
    let mut raw = engine
        .get(Space::Objects, &skey)
        .expect("get")
        .expect("there");
    let last = raw.len() - 1;
    raw[last] ^= 1;
    engine
        .put(Space::Objects, &skey, &raw, Durability::Buffered)
        .expect("put");
    // The tree holds the digest of the write: rot is invisible to it.
    assert_eq!(store.tree(p, PARTITIONS).expect("tree"), before);
    assert_eq!(store.get(&b, &k).expect("get"), None, "quarantined");
    let after = store.tree(p, PARTITIONS).expect("tree");
    assert_eq!(store.tree_builds(), 2, "rebuilt after the quarantine");
    assert_ne!(after, before);
    assert_eq!(after, rebuilt(&store, &names, p));
}

#[test]
fn trees_are_kept_across_a_clean_stop_and_rebuilt_after_a_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let names: Vec<String> = (0..200).map(|i| format!("k{i}")).collect();
    let p = partition(&names[0]);
    let kept = {
        let engine: Arc<dyn Engine> = Arc::new(RocksEngine::open(dir.path()).expect("open"));
        let store = ObjectStore::open(engine, "n1").expect("store");
        store.tree(p, PARTITIONS).expect("tree");
        for n in &names {
            put(&store, n, "v");
        }
        let kept = store.tree(p, PARTITIONS).expect("tree");
        store.close().expect("close");
        kept
    };
    {
        let engine: Arc<dyn Engine> = Arc::new(RocksEngine::open(dir.path()).expect("open"));
        let store = ObjectStore::open(engine, "n1").expect("store");
        assert_eq!(store.tree(p, PARTITIONS).expect("tree"), kept);
        assert_eq!(store.tree_builds(), 0, "loaded, not built");
        put(&store, &names[0], "after");
        // No clean stop: the saved trees were deleted when loaded.
    }
    let engine: Arc<dyn Engine> = Arc::new(RocksEngine::open(dir.path()).expect("open"));
    let store = ObjectStore::open(engine, "n1").expect("store");
    let tree = store.tree(p, PARTITIONS).expect("tree");
    assert_eq!(store.tree_builds(), 1, "rebuilt after the crash");
    assert_eq!(tree, rebuilt(&store, &names, p));
    assert_ne!(tree, kept);
}

#[test]
fn segment_keys_list_exactly_the_keys_of_their_segments() {
    let store = ObjectStore::open(Arc::new(MemEngine::new()), "n1").expect("store");
    let names: Vec<String> = (0..500).map(|i| format!("k{i}")).collect();
    for n in &names {
        put(&store, n, "v");
    }
    let p = partition(&names[0]);
    let (b0, k0) = bk(&names[0]);
    let s = segment_of(hash_of(&b0, &k0), PARTITIONS) as u16;
    let listed = store.segment_keys(p, PARTITIONS, &[s]).expect("keys");
    let want: Vec<&String> = names
        .iter()
        .filter(|n| {
            let (b, k) = bk(n);
            partition(n) == p && segment_of(hash_of(&b, &k), PARTITIONS) as u16 == s
        })
        .collect();
    assert!(!want.is_empty());
    let mut got: Vec<String> = listed
        .iter()
        .map(|k| String::from_utf8_lossy(k.key.as_bytes()).into_owned())
        .collect();
    got.sort();
    let mut want: Vec<String> = want.into_iter().cloned().collect();
    want.sort();
    assert_eq!(got, want);
    let first = listed.iter().find(|k| k.key == k0).expect("listed");
    let stored = store.get(&b0, &k0).expect("get").expect("there");
    assert_eq!(first.digest, stored.version_digest());
}

#[test]
fn an_exchange_merges_what_it_is_sent_and_reads_within_its_budget() {
    let a = ObjectStore::open(Arc::new(MemEngine::new()), "n1").expect("store");
    let other = ObjectStore::open(Arc::new(MemEngine::new()), "n2").expect("store");
    put(&other, "x", "from n2");
    let (b, x) = bk("x");
    let theirs = other.get(&b, &x).expect("get").expect("there");
    put(&a, "y", "yy");
    put(&a, "z", "zz");
    let sent = vec![(
        Pulled {
            bucket: b.clone(),
            key: x.clone(),
            object: theirs.clone(),
        },
        ConflictMode::Siblings,
    )];
    let wanted = vec![bk("y"), bk("missing"), bk("z")];
    let all = a.exchange(&sent, &wanted, 1 << 20).expect("exchange");
    assert_eq!(a.get(&b, &x).expect("get"), Some(theirs));
    assert_eq!(all.answered, 3);
    assert_eq!(all.objects.len(), 2, "a key not held is left out");
    // A budget of one byte still looks at one key, and says so.
    let one = a.exchange(&[], &wanted, 1).expect("exchange");
    assert_eq!((one.answered, one.objects.len()), (1, 1));
}
