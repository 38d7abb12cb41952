//! Micro-benchmarks of the storage record: an object encoded as the
//! checksummed record RocksDB stores, and decoded and verified on a read.
//!
//! `cargo bench -p quorra-node --bench record`.

// criterion_group! defines an undocumented public function.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;

use quorra_core::{Actor, ConflictMode, Content, Object, VersionVector};
use quorra_node::store::{decode_record, encode_record};

fn record(c: &mut Criterion) {
    for siblings in [1usize, 3] {
        let mut object = Object::new();
        for w in 0..siblings {
            let content = Content::value(vec![b'x'; 1024], "application/octet-stream", 1);
            object
                .update(
                    &VersionVector::new(),
                    &Actor::new(format!("n{w}"), 1),
                    content,
                    ConflictMode::Siblings,
                )
                .expect("update");
        }
        c.bench_function(
            &format!("record: encode 1 KiB x {siblings} sibling(s)"),
            |b| b.iter(|| black_box(encode_record(&object).expect("encode"))),
        );
        let bytes = encode_record(&object).expect("encode");
        c.bench_function(
            &format!("record: decode 1 KiB x {siblings} sibling(s)"),
            |b| b.iter(|| black_box(decode_record(&bytes).expect("decode"))),
        );
    }
}

criterion_group!(benches, record);
criterion_main!(benches);
