//! Micro-benchmarks of the pure core on the request path: placing a key on
//! the ring, a DVV update and a replica merge, and a replica write's
//! envelope encoded and decoded as it crosses the wire.
//!
//! `cargo bench -p quorra-core --bench core` (criterion prints each
//! estimate with its spread; compare runs made together).

// criterion_group! defines an undocumented public function.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use std::hint::black_box;

use quorra_core::proto::{Envelope, Message, PeerRequest, ReplicaPut, Request};
use quorra_core::ring::{Ring, RingMember};
use quorra_core::{Actor, BucketName, ConflictMode, Content, Key, Limits, Object, VersionVector};

fn bucket() -> BucketName {
    BucketName::parse("bench", &Limits::default()).expect("bucket name")
}

fn key(i: u64) -> Key {
    Key::parse(format!("user{i:012}").into_bytes(), &Limits::default()).expect("key")
}

fn value() -> Content {
    Content::value(
        vec![b'x'; 1024],
        "application/octet-stream",
        1_700_000_000_000,
    )
}

/// An object written by `writers` replicas concurrently: that many siblings.
fn object_with_siblings(writers: usize) -> Object {
    let mut o = Object::new();
    for w in 0..writers {
        let actor = Actor::new(format!("n{w}"), 1);
        o.update(
            &VersionVector::new(),
            &actor,
            value(),
            ConflictMode::Siblings,
        )
        .expect("update");
    }
    o
}

fn ring(c: &mut Criterion) {
    let members: Vec<RingMember> = (1..=5).map(|i| RingMember::new(format!("n{i}"))).collect();
    let ring = Ring::by_tokens(&members, 256, 64);
    let mut i = 0u64;
    c.bench_function("ring: locate a key (256 partitions, 5 nodes, n=3)", |b| {
        b.iter(|| {
            i += 1;
            let k = format!("user{i:012}");
            black_box(ring.locate(b"bench", k.as_bytes(), 3).1.len())
        })
    });
}

fn versions(c: &mut Criterion) {
    let actor = Actor::new("n1", 1);
    let one = object_with_siblings(1);
    let ctx = one.clock().clone();
    c.bench_function("dvv: update an object with its read context", |b| {
        b.iter_batched(
            || one.clone(),
            |mut o| {
                o.update(&ctx, &actor, value(), ConflictMode::Siblings)
                    .expect("update");
                o
            },
            BatchSize::SmallInput,
        )
    });
    let three = object_with_siblings(3);
    let mut newer = three.clone();
    newer
        .update(three.clock(), &actor, value(), ConflictMode::Siblings)
        .expect("update");
    c.bench_function("dvv: merge a newer replica over 3 siblings", |b| {
        b.iter_batched(
            || three.clone(),
            |mut o| {
                o.merge(&newer, ConflictMode::Siblings);
                o
            },
            BatchSize::SmallInput,
        )
    });
}

fn envelopes(c: &mut Criterion) {
    let message = Envelope::new(Message::Request {
        id: 42,
        request: Request::Peer(PeerRequest::ReplicaPut(ReplicaPut {
            bucket: bucket(),
            key: key(7),
            object: object_with_siblings(1),
            mode: ConflictMode::Siblings,
            durable: false,
            hint_for: None,
        })),
    });
    c.bench_function("envelope: encode a 1 KiB replica write", |b| {
        b.iter(|| black_box(rmp_serde::to_vec(&message).expect("encode")))
    });
    let bytes = rmp_serde::to_vec(&message).expect("encode");
    c.bench_function("envelope: decode a 1 KiB replica write", |b| {
        b.iter(|| {
            let m: Envelope<Message> = rmp_serde::from_slice(black_box(&bytes)).expect("decode");
            m
        })
    });
}

criterion_group!(benches, ring, versions, envelopes);
criterion_main!(benches);
