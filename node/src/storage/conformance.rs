//! The one test suite every [`Engine`] must pass.

use super::{Durability, Engine, Space, WriteOp};

/// Runs every conformance check against a fresh, empty engine.
pub(crate) fn run(engine: &dyn Engine) {
    missing_keys_read_as_none(engine);
    put_get_overwrite_delete(engine);
    spaces_are_isolated(engine);
    batches_apply_together(engine);
    scan_visits_prefix_in_order(engine);
    durable_writes_and_sync(engine);
}

fn missing_keys_read_as_none(e: &dyn Engine) {
    for s in Space::ALL {
        assert_eq!(e.get(s, b"absent").expect("get"), None);
    }
}

fn put_get_overwrite_delete(e: &dyn Engine) {
    e.put(Space::Objects, b"a", b"1", Durability::Buffered)
        .expect("put");
    assert_eq!(
        e.get(Space::Objects, b"a").expect("get"),
        Some(b"1".to_vec())
    );
    e.put(Space::Objects, b"a", b"2", Durability::Buffered)
        .expect("put");
    assert_eq!(
        e.get(Space::Objects, b"a").expect("get"),
        Some(b"2".to_vec())
    );
    e.delete(Space::Objects, b"a", Durability::Buffered)
        .expect("delete");
    assert_eq!(e.get(Space::Objects, b"a").expect("get"), None);
    // Binary keys and empty values are kept exactly.
    e.put(Space::Objects, &[0, 255, 0], b"", Durability::Buffered)
        .expect("put");
    assert_eq!(
        e.get(Space::Objects, &[0, 255, 0]).expect("get"),
        Some(vec![])
    );
    e.delete(Space::Objects, &[0, 255, 0], Durability::Buffered)
        .expect("delete");
}

fn spaces_are_isolated(e: &dyn Engine) {
    e.put(Space::Hints, b"same", b"hint", Durability::Buffered)
        .expect("put");
    e.put(Space::Meta, b"same", b"meta", Durability::Buffered)
        .expect("put");
    assert_eq!(e.get(Space::Objects, b"same").expect("get"), None);
    assert_eq!(
        e.get(Space::Hints, b"same").expect("get"),
        Some(b"hint".to_vec())
    );
    assert_eq!(
        e.get(Space::Meta, b"same").expect("get"),
        Some(b"meta".to_vec())
    );
    let mut seen = 0;
    e.scan(Space::Objects, b"", &mut |_, _| {
        seen += 1;
        true
    })
    .expect("scan");
    assert_eq!(seen, 0, "objects space sees no other space's keys");
    e.delete(Space::Hints, b"same", Durability::Buffered)
        .expect("delete");
    e.delete(Space::Meta, b"same", Durability::Buffered)
        .expect("delete");
}

fn batches_apply_together(e: &dyn Engine) {
    e.put(Space::Objects, b"gone", b"x", Durability::Buffered)
        .expect("put");
    e.write(
        vec![
            WriteOp::Put {
                space: Space::Objects,
                key: b"b1".to_vec(),
                value: b"1".to_vec(),
            },
            WriteOp::Put {
                space: Space::Hints,
                key: b"b2".to_vec(),
                value: b"2".to_vec(),
            },
            WriteOp::Delete {
                space: Space::Objects,
                key: b"gone".to_vec(),
            },
        ],
        Durability::Fsync,
    )
    .expect("batch");
    assert_eq!(
        e.get(Space::Objects, b"b1").expect("get"),
        Some(b"1".to_vec())
    );
    assert_eq!(
        e.get(Space::Hints, b"b2").expect("get"),
        Some(b"2".to_vec())
    );
    assert_eq!(e.get(Space::Objects, b"gone").expect("get"), None);
    e.delete(Space::Objects, b"b1", Durability::Buffered)
        .expect("delete");
    e.delete(Space::Hints, b"b2", Durability::Buffered)
        .expect("delete");
}

fn scan_visits_prefix_in_order(e: &dyn Engine) {
    for k in [&b"p/3"[..], b"p/1", b"p/2", b"q/1", b"o/9", b"p"] {
        e.put(Space::Objects, k, k, Durability::Buffered)
            .expect("put");
    }
    let mut keys = Vec::new();
    e.scan(Space::Objects, b"p/", &mut |k, v| {
        assert_eq!(k, v);
        keys.push(k.to_vec());
        true
    })
    .expect("scan");
    assert_eq!(
        keys,
        vec![b"p/1".to_vec(), b"p/2".to_vec(), b"p/3".to_vec()]
    );

    let mut first = Vec::new();
    e.scan(Space::Objects, b"p/", &mut |k, _| {
        first.push(k.to_vec());
        false
    })
    .expect("scan");
    assert_eq!(first, vec![b"p/1".to_vec()], "scan stops when told");

    let mut from = Vec::new();
    e.scan_from(Space::Objects, b"p/", b"p/1\0", &mut |k, _| {
        from.push(k.to_vec());
        true
    })
    .expect("scan_from");
    assert_eq!(
        from,
        vec![b"p/2".to_vec(), b"p/3".to_vec()],
        "a scan from a cursor starts at it and stays in the prefix"
    );
    let mut before = Vec::new();
    e.scan_from(Space::Objects, b"p/", b"a", &mut |k, _| {
        before.push(k.to_vec());
        true
    })
    .expect("scan_from");
    assert_eq!(
        before.len(),
        3,
        "a cursor before the prefix starts at the prefix"
    );

    let mut all = 0;
    e.scan(Space::Objects, b"", &mut |_, _| {
        all += 1;
        true
    })
    .expect("scan");
    assert_eq!(all, 6);
    for k in [&b"p/3"[..], b"p/1", b"p/2", b"q/1", b"o/9", b"p"] {
        e.delete(Space::Objects, k, Durability::Buffered)
            .expect("delete");
    }
}

fn durable_writes_and_sync(e: &dyn Engine) {
    e.put(Space::Meta, b"d", b"1", Durability::Fsync)
        .expect("durable put");
    e.sync().expect("sync");
    assert_eq!(e.get(Space::Meta, b"d").expect("get"), Some(b"1".to_vec()));
    e.delete(Space::Meta, b"d", Durability::Fsync)
        .expect("delete");
}
