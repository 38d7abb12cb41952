//! Golden fixtures for the formats that outlive a process: the wire
//! envelope peers exchange (a replica write, its answer, and a full-table
//! gossip message with a layout) and the causal context clients hold (the stored
//! record's fixture is checked by `quorra-node`'s store tests, against the
//! same directory). Each test decodes bytes checked into the repo and
//! re-encodes them to the same bytes, so a format change is a visible
//! decision: a new fixture (and a version bump), never an accident.
//!
//! `QUORRA_BLESS=1 cargo test -p quorra-core --test golden` rewrites the
//! fixtures from the current encoders; commit them only on purpose.

use std::collections::BTreeSet;
use std::path::PathBuf;

use quorra_core::context::{CausalContext, ContextKey};
use quorra_core::layout::{Layout, Shape};
use quorra_core::membership::{Gossip, GossipMsg, MemberInfo, Standing, Status};
use quorra_core::proto::{Envelope, Message, ReplicaPut, ReplicaStored, Reply};
use quorra_core::{Actor, BucketName, ConflictMode, Content, Key, Limits, Object, VersionVector};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

fn hex(bytes: &[u8]) -> String {
    let mut s: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    s.push('\n');
    s
}

fn unhex(s: &str) -> Vec<u8> {
    let s = s.trim();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex fixture"))
        .collect()
}

/// The fixture's text, or (with `QUORRA_BLESS=1`) `current` written to it.
fn golden(name: &str, current: &str) -> String {
    let path = fixture(name);
    if std::env::var_os("QUORRA_BLESS").is_some() {
        std::fs::write(&path, current).expect("write fixture");
    }
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; bless it with QUORRA_BLESS=1", path.display()))
}

fn bucket() -> BucketName {
    BucketName::parse("photos", &Limits::default()).expect("bucket")
}

fn key() -> Key {
    Key::parse(b"cat.jpg".to_vec(), &Limits::default()).expect("key")
}

/// An object with two siblings and a tombstone-free clock.
fn object() -> Object {
    let mut o = Object::new();
    for (node, value) in [("n1", "a"), ("n2", "b")] {
        o.update(
            &VersionVector::new(),
            &Actor::new(node, 0x0123_4567_89ab_cdef),
            Content::value(value.as_bytes().to_vec(), "text/plain", 1_700_000_000_000),
            ConflictMode::Siblings,
        )
        .expect("update");
    }
    o
}

#[test]
fn the_wire_envelope_keeps_its_bytes() {
    let request = Envelope::new(Message::Request {
        id: 42,
        request: ReplicaPut {
            bucket: bucket(),
            key: key(),
            object: object(),
            mode: ConflictMode::Siblings,
            durable: true,
            hint_for: Some("n3".into()),
        }
        .into(),
    });
    let reply = Reply::answer::<ReplicaPut>(Ok(ReplicaStored { durable: true }));
    let response = Envelope::new(Message::Response {
        id: Some(42),
        reply: reply.clone(),
    });
    let gossip = Envelope::new(Message::Request {
        id: 7,
        request: full_table().into(),
    });
    for (name, message) in [
        ("envelope-replica-put.hex", &request),
        ("envelope-stored.hex", &response),
        ("envelope-gossip.hex", &gossip),
    ] {
        let bytes = rmp_serde::to_vec(message).expect("encode");
        let fixed = unhex(&golden(name, &hex(&bytes)));
        assert_eq!(hex(&bytes), hex(&fixed), "{name}: the encoding changed");
        // Decoding the fixture and encoding it again gives the same bytes.
        let decoded: Envelope<Message> = rmp_serde::from_slice(&fixed).expect("decode");
        assert_eq!(&decoded, message);
        assert_eq!(rmp_serde::to_vec(&decoded).expect("encode"), fixed);
    }
    // The answer decodes as the answer to the request it answers.
    assert_eq!(
        reply.decode::<ReplicaPut>(),
        Ok(Ok(ReplicaStored { durable: true }))
    );
}

/// A member's full table with its layout, as push-pull sends it.
fn full_table() -> Gossip {
    let initial: BTreeSet<String> = ["n1".to_string(), "n2".into()].into();
    let layout = Layout::found(&initial, Shape::default());
    let me = MemberInfo {
        id: "n1".into(),
        peer_addr: "10.0.0.1:7000".parse().expect("addr"),
        http_addr: "10.0.0.1:8098".parse().expect("addr"),
        zone: Some("z1".into()),
        incarnation: 1_700_000_000_000,
        status: Status::Up,
    };
    Gossip {
        standing: Standing::Member(layout.stamp()),
        layout: Some(Box::new(layout)),
        msg: GossipMsg::PushPull { members: vec![me] },
    }
}

#[test]
fn the_causal_context_keeps_its_bytes() {
    let secret = [7u8; 32];
    let ctx_key = ContextKey::new(&secret);
    let context = CausalContext(object().clock().clone());
    let encoded = context.encode(&ctx_key, &bucket(), &key());
    let fixed = golden("context-v2.txt", &format!("{encoded}\n"));
    assert_eq!(encoded, fixed.trim(), "the context encoding changed");
    let decoded = CausalContext::decode(fixed.trim(), 16 * 1024, &ctx_key, &bucket(), &key())
        .expect("the fixture decodes");
    assert_eq!(decoded.0, *object().clock());
    assert_eq!(decoded.encode(&ctx_key, &bucket(), &key()), fixed.trim());
}
