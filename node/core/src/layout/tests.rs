//! Tests of the layout: identity, staging, commits, placement shares,
//! bucket properties and n_val changes.

use super::*;
use proptest::prelude::*;

fn ids(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn the_id_depends_on_the_member_set_only() {
    let a = ClusterId::founded_by(&ids(&["n1", "n2", "n3"]), Shape::default());
    let b = ClusterId::founded_by(
        &["n3".to_string(), "n1".into(), "n2".into(), "n1".into()],
        Shape::default(),
    );
    assert_eq!(a, b);
    assert_ne!(
        a,
        ClusterId::founded_by(&ids(&["n1", "n2"]), Shape::default())
    );
    assert_ne!(
        ClusterId::founded_by(&ids(&["ab", "c"]), Shape::default()),
        ClusterId::founded_by(&ids(&["a", "bc"]), Shape::default())
    );
    assert_eq!(a.as_str().len(), 32);
    let other_shape = Shape {
        partitions: 128,
        ..Shape::default()
    };
    assert_ne!(
        a,
        ClusterId::founded_by(&ids(&["n1", "n2", "n3"]), other_shape)
    );
}

#[test]
fn ids_from_the_network_are_checked() {
    assert!(ClusterId::try_from("0".repeat(32)).is_ok());
    assert_eq!(ClusterId::try_from("x".repeat(32)), Err(LayoutError::BadId));
    assert_eq!(ClusterId::try_from("0".repeat(33)), Err(LayoutError::BadId));
    let bytes = rmp_serde::to_vec(&"zz".repeat(16)).expect("encode");
    assert!(rmp_serde::from_slice::<ClusterId>(&bytes).is_err());
}

#[test]
fn layouts_of_other_clusters_do_not_merge() {
    let mut a = Layout::found(&ids(&["n1"]), Shape::default());
    let b = Layout::found(&ids(&["n2"]), Shape::default());
    assert!(matches!(a.merge(&b), Err(LayoutError::OtherCluster { .. })));
    assert_eq!(a, Layout::found(&ids(&["n1"]), Shape::default()));
}

#[test]
fn admitting_a_member_commits_nothing() {
    let mut a = Layout::found(&ids(&["n1", "n2", "n3"]), Shape::default());
    let digest = a.digest();
    assert!(a.admit("n4"));
    assert!(!a.admit("n4"));
    assert_eq!(a.version, 1);
    assert_eq!(a.digest(), digest, "a member without a role holds nothing");
    assert!(!a.roles.contains_key("n4"));
    a.check().expect("valid");
}

fn founded3() -> Layout {
    let mut l = Layout::found(&ids(&["n1", "n2", "n3"]), Shape::default());
    l.admit("n4");
    l
}

fn role() -> Role {
    Role {
        zone: None,
        weight: 1,
    }
}

#[test]
fn a_commit_takes_the_staged_changes_and_moves_about_the_ideal_share() {
    let mut l = founded3();
    assert_eq!(l.next(), Err(StageError::NothingStaged));
    l.stage("n1", "n4", Change::Set(role())).expect("stage");
    let plan = l.plan().expect("plan");
    assert_eq!((plan.from, plan.to), (1, 2));
    assert_eq!(plan.slots, 256 * 3);
    // The ideal is a quarter of the slots; at most 1.1 times that.
    assert!(plan.moved * 4 <= plan.slots * 11 / 10, "{}", plan.moved);
    assert_eq!(plan.loads_after["n4"], plan.moved);
    let next = plan.next;
    assert_eq!(next.version, 2);
    assert!(next.staged.is_empty());
    assert!(next.roles.contains_key("n4"));
    next.check().expect("valid");
    assert_ne!(next.digest(), l.digest());
}

#[test]
fn staging_checks_what_it_is_given() {
    let mut l = founded3();
    let e = l.stage("n1", "n9", Change::Set(role()));
    assert_eq!(e, Err(StageError::NotAMember("n9".into())));
    let heavy = Role {
        zone: None,
        weight: MAX_WEIGHT + 1,
    };
    assert_eq!(
        l.stage("n1", "n4", Change::Set(heavy)),
        Err(StageError::BadWeight(MAX_WEIGHT + 1))
    );
    assert_eq!(
        l.stage("n1", "n4", Change::Remove),
        Err(StageError::NoRole("n4".into(), 1))
    );
    assert!(matches!(
        l.stage("n1", "n1", Change::ReplaceBy("n2".into())),
        Err(StageError::BadReplacement(..))
    ));
    for id in ["n1", "n2", "n3"] {
        l.stage("n1", id, Change::Remove).expect("stage");
    }
    assert_eq!(l.next(), Err(StageError::NoneLeft));
    l.stage("n1", "n2", Change::Keep).expect("stage");
    let next = l.next().expect("one left");
    assert_eq!(next.roles.keys().collect::<Vec<_>>(), ["n2"]);
}

#[test]
fn a_replacement_takes_the_dead_nodes_slots_and_moves_nothing_else() {
    let mut l = founded3();
    let before = l.assignment.clone().expect("assigned");
    l.stage("n1", "n2", Change::ReplaceBy("n4".into()))
        .expect("stage");
    let next = l.next().expect("next");
    let after = next.assignment.expect("assigned");
    assert!(!next.roles.contains_key("n2"));
    for p in 0..256 {
        let old: Vec<&str> = before.replicas(p).collect();
        let new: Vec<&str> = after.replicas(p).collect();
        let renamed: Vec<&str> = old
            .iter()
            .map(|&id| if id == "n2" { "n4" } else { id })
            .collect();
        assert_eq!(new, renamed, "partition {p}");
    }
}

#[test]
fn equal_versions_with_other_commits_are_reported_and_ours_kept() {
    let mut a = founded3();
    let mut b = a.clone();
    a.stage("n1", "n4", Change::Set(role())).expect("stage");
    b.stage("n2", "n1", Change::Remove).expect("stage");
    let a2 = a.next().expect("a");
    let b2 = b.next().expect("b");
    let mut merged = a2.clone();
    let m = merged.merge(&b2).expect("same cluster");
    let (version, ours, theirs) = m.diverged.expect("reported");
    assert_eq!((version, ours, theirs), (2, a2.digest(), b2.digest()));
    assert_eq!(merged.digest(), a2.digest(), "ours kept");
    // A later version wins over both.
    let mut c = b2.clone();
    c.stage("n2", "n4", Change::Set(role())).expect("stage");
    let c3 = c.next().expect("c");
    assert_eq!(merged.merge(&c3).map(|m| m.diverged), Ok(None));
    assert_eq!(merged.digest(), c3.digest());
}

#[test]
fn forged_layouts_fail_the_check() {
    let good = founded3();
    let mut l = good.clone();
    l.shape = Some(Shape {
        partitions: 3,
        tokens: 1,
    });
    assert!(l.check().is_err());
    let mut l = good.clone();
    if let Some(a) = &mut l.assignment {
        a.table[0].push(u16::MAX);
    }
    assert!(l.check().is_err());
    let mut l = good.clone();
    l.roles.insert("stranger".into(), role());
    assert!(l.check().is_err());
    let mut l = good;
    l.replicas = 0;
    assert!(l.check().is_err());
}

#[test]
fn a_legacy_layout_is_upgraded_the_same_everywhere() {
    let mut a = Layout::found(&ids(&["n1", "n2"]), Shape::default());
    a.roles.clear();
    a.assignment = None;
    let mut b = a.clone();
    assert!(a.upgrade(|_| None));
    assert!(b.upgrade(|_| None));
    assert!(!a.upgrade(|_| None));
    assert_eq!(a, b);
    assert_eq!(a.roles.len(), 2);
    a.check().expect("valid");
}

/// A chain of versions, each committed from the one before with a
/// staged change, as the cluster decides them.
fn history() -> Vec<Layout> {
    let mut l = Layout::found(&ids(&["n1", "n2", "n3"]), Shape::default());
    let mut out = vec![l.clone()];
    for (i, id) in ["n4", "n5", "n6"].iter().enumerate() {
        l.admit(id);
        l.stage("n1", id, Change::Set(role())).expect("stage");
        l = l.next().expect("next");
        assert_eq!(l.version, i as u64 + 2);
        out.push(l.clone());
    }
    out
}

fn layout() -> impl Strategy<Value = Layout> {
    (
        0usize..4,
        proptest::collection::btree_set(prop_oneof!["n7", "n8", "n9"], 0..3),
        proptest::collection::vec(
            (prop_oneof!["n1", "n2", "n7"], any::<bool>(), 0u64..3),
            0..3,
        ),
    )
        .prop_map(|(v, extra, staged)| {
            let mut l = history()[v].clone();
            l.members.extend(extra);
            for (node, set, by) in staged {
                let change = if set {
                    Change::Set(role())
                } else {
                    Change::Remove
                };
                l.members.insert(node.to_owned());
                let staged = Staged {
                    seq: l.applied + 1 + by,
                    by: format!("n{by}"),
                    change,
                };
                l.staged.insert(node.to_owned(), staged);
            }
            l
        })
}

proptest! {
    /// Merging is commutative and idempotent, keeps every member either
    /// side had (no join is ever lost), and takes the higher committed
    /// version.
    #[test]
    fn merge_is_the_same_whoever_merges(a in layout(), b in layout()) {
        let mut ab = a.clone();
        let m = ab.merge(&b).expect("same cluster");
        prop_assert_eq!(m.diverged, None);
        let mut ba = b.clone();
        ba.merge(&a).expect("same cluster");
        prop_assert_eq!(&ab, &ba);
        prop_assert!(ab.members.is_superset(&a.members));
        prop_assert!(ab.members.is_superset(&b.members));
        prop_assert_eq!(ab.version, a.version.max(b.version));
        let again = ab.clone();
        prop_assert_eq!(ab.merge(&again).map(|m| m.changed), Ok(false));
        prop_assert_eq!(ab.merge(&a).map(|m| m.changed), Ok(false));
        prop_assert!(ab.staged.values().all(|s| s.seq > ab.applied));
    }
}

#[test]
fn bucket_properties_change_as_a_version_of_their_own_within_their_rules() {
    let lww = BucketProps {
        conflict_mode: ConflictMode::Lww,
        ..BucketProps::default()
    };
    let founded = BucketTable {
        defaults: BucketProps::default(),
        named: [("sessions".to_owned(), lww)].into(),
    };
    let layout = Layout::found(
        &ids(&["n1", "n2", "n3"]),
        Bootstrap {
            shape: Shape::default(),
            buckets: founded.clone(),
        },
    );
    assert_eq!(layout.buckets.as_ref(), Some(&founded), "founded with them");
    let quorum = BucketProps { r: 1, w: 3, ..lww };
    let next = layout
        .with_bucket(&founded, "sessions", quorum)
        .expect("quorum defaults change");
    assert_eq!(next.version, 2);
    assert_eq!(next.assignment, layout.assignment, "no data moves");
    assert_eq!(next.roles, layout.roles);
    assert_ne!(next.digest(), layout.digest(), "the digest covers buckets");
    let table = next.buckets.clone().expect("table");
    assert_eq!(table.props("sessions"), quorum);
    assert_eq!(table.props("other"), BucketProps::default());
    next.check().expect("a valid layout");
    // A bucket not named takes the defaults: a quorum of its own is
    // fine, a conflict mode or n_val of its own is not (it may hold
    // objects already).
    let own = BucketProps {
        r: 3,
        ..BucketProps::default()
    };
    assert!(next.with_bucket(&table, "fresh", own).is_ok());
    for (bucket, props, fixed_mode) in [
        (
            "sessions",
            BucketProps {
                r: 1,
                w: 3,
                ..BucketProps::default()
            },
            true,
        ),
        ("fresh", lww, true),
        (
            "sessions",
            BucketProps {
                n_val: 2,
                r: 1,
                w: 1,
                ..lww
            },
            false,
        ),
        (
            "fresh",
            BucketProps {
                n_val: 5,
                ..BucketProps::default()
            },
            false,
        ),
    ] {
        let refused = next.with_bucket(&table, bucket, props);
        if fixed_mode {
            assert!(
                matches!(refused, Err(BucketChangeError::ModeFixed { .. })),
                "{refused:?}"
            );
        } else {
            assert!(
                matches!(refused, Err(BucketChangeError::NValMovesData { .. })),
                "{refused:?}"
            );
        }
    }
    let bad = BucketProps { r: 9, ..lww };
    assert!(matches!(
        next.with_bucket(&table, "sessions", bad),
        Err(BucketChangeError::Invalid(_))
    ));
    let mut moving = next.clone();
    moving.moving = moving.assignment.clone();
    assert_eq!(
        moving.with_bucket(&table, "sessions", lww),
        Err(BucketChangeError::Moving)
    );
    // A forged table is refused as a whole layout.
    let mut forged = next;
    if let Some(b) = forged.buckets.as_mut() {
        b.named.insert("bad name".into(), lww);
    }
    assert!(forged.check().is_err());
}

/// Four members whose bucket `small` keeps 2 copies, the rest 3.
fn with_small_bucket() -> Layout {
    let small = BucketProps {
        n_val: 2,
        r: 1,
        w: 1,
        ..BucketProps::default()
    };
    let table = BucketTable {
        defaults: BucketProps::default(),
        named: [("small".to_string(), small)].into(),
    };
    let bootstrap = Bootstrap {
        shape: Shape::default(),
        buckets: table,
    };
    Layout::found(&ids(&["n1", "n2", "n3", "n4"]), bootstrap)
}

#[test]
fn an_n_val_change_is_staged_planned_and_copies_only_its_bucket() {
    let mut l = with_small_bucket();
    assert_eq!(l.replicas, 3, "the largest n_val");
    // Quorum values must fit the new n_val; it is undone by staging
    // the current one.
    let mut strict = l.clone();
    assert!(matches!(
        strict.stage_n_val("n1", "other", 1),
        Err(StageError::BadNVal(..))
    ));
    strict.stage_n_val("n1", "small", 2).expect("staged");
    assert_eq!(strict.next(), Err(StageError::NothingStaged));

    l.stage_n_val("n1", "small", 3).expect("staged");
    let plan = l.plan().expect("plan");
    assert_eq!(plan.n_vals, vec![("small".to_string(), 2, 3)]);
    assert_eq!(plan.moved, 0, "no slot changes owner");
    assert_eq!(plan.bucket_copies.len(), 256, "one new copy per partition");
    let next = plan.next;
    assert_eq!(next.assignment, l.assignment, "the same replicas");
    assert_eq!(next.moving.as_ref(), l.assignment.as_ref());
    assert_eq!(next.moving_buckets, l.buckets);
    assert_eq!(
        next.buckets.as_ref().map(|t| t.props("small").n_val),
        Some(3)
    );
    assert!(next.staged_n_val.is_empty());
    let a = next.assignment.as_ref().expect("assigned");
    for id in ["n1", "n2", "n3", "n4"] {
        for (p, scope) in next.gains(id) {
            // The third replica copies the small bucket, nothing else.
            assert_eq!(a.replicas(p).nth(2), Some(id));
            assert_eq!(scope, Scope::Only(["small".to_string()].into()));
            assert!(scope.covers("small") && !scope.covers("other"));
        }
    }
    // Another n_val change waits for the handover.
    let mut again = next.clone();
    again.stage_n_val("n1", "small", 2).expect("staged");
    assert_eq!(again.next(), Err(StageError::NValWhileMoving));
    let mut synced = next.clone();
    for id in ["n1", "n2", "n3", "n4"] {
        synced.mark_synced(id, next.version);
    }
    let done = synced.handover().expect("handover");
    assert_eq!(
        (done.moving.as_ref(), done.moving_buckets.as_ref()),
        (None, None)
    );
    done.check().expect("valid");
}

#[test]
fn an_n_val_past_the_assigned_replicas_assigns_more_and_copies_them() {
    let mut l = Layout::found(
        &ids(&["n1", "n2", "n3", "n4", "n5", "n6"]),
        with_small_bucket()
            .buckets
            .clone()
            .map(|buckets| Bootstrap {
                shape: Shape::default(),
                buckets,
            })
            .expect("a table"),
    );
    l.stage_n_val("n1", "small", 5).expect("staged");
    let next = l.next().expect("next");
    assert_eq!(next.replicas, 5, "every rank a bucket uses is assigned");
    let a = next.assignment.as_ref().expect("assigned");
    assert!((0..a.partitions()).all(|p| a.replicas(p).count() == 5));
    // The fourth and fifth replicas of each partition copy the small
    // bucket; a default bucket's copies stay on the first three.
    let mut fourth_and_fifth = 0;
    for id in ["n1", "n2", "n3", "n4", "n5", "n6"] {
        for (p, scope) in next.gains(id) {
            let rank = a.replicas(p).position(|r| r == id).expect("assigned");
            let was = l
                .assignment
                .as_ref()
                .and_then(|b| b.replicas(p).position(|r| r == id));
            if rank >= 3 {
                fourth_and_fifth += 1;
                assert!(scope.covers("small") && !scope.covers("other"));
            } else {
                // A default bucket is copied only by a new replica.
                assert_eq!(scope.covers("other"), was.is_none(), "{p} {id}");
            }
        }
    }
    assert!(fourth_and_fifth >= 2 * 256 - 256 / 4, "{fourth_and_fifth}");
}

#[test]
fn two_replacements_by_one_node_are_refused_at_commit() {
    let mut l = Layout::found(&ids(&["n1", "n2", "n3", "n4"]), Shape::default());
    l.admit("n5");
    l.stage("n1", "n3", Change::ReplaceBy("n5".into()))
        .expect("staged");
    l.stage("n2", "n4", Change::ReplaceBy("n5".into()))
        .expect("staged: each is fine alone");
    assert_eq!(
        l.next(),
        Err(StageError::BadReplacement("n5".into(), "n4".into()))
    );
    l.stage("n1", "n4", Change::Keep).expect("cleared");
    let next = l.next().expect("one replacement");
    assert!(next.roles.contains_key("n5") && !next.roles.contains_key("n3"));
    next.check().expect("valid");
}

#[test]
fn the_access_policy_is_a_version_of_its_own_and_outlives_later_commits() {
    use crate::access::{secret_sha256, AccessChange, Grant, Perm};
    let l = founded3();
    let digest = l.digest();
    let admin = AccessChange::PutToken {
        id: "root".into(),
        secret_sha256: secret_sha256("s"),
        grants: vec![Grant::new("*", [Perm::Admin])],
        replace: false,
    };
    let with = l.with_access(&admin).expect("policy");
    assert_eq!(with.version, l.version + 1);
    let mut only_access_differs = with.clone();
    only_access_differs.access = None;
    assert_ne!(
        with.digest(),
        only_access_differs.digest(),
        "the digest covers the policy"
    );
    assert_eq!(
        Layout {
            version: l.version,
            ..only_access_differs
        }
        .digest(),
        digest,
        "without a policy the digest is as before policies"
    );
    assert!(with.access.as_ref().is_some_and(|p| p.closed()));
    with.check().expect("valid");
    // It travels in gossip and is saved as the layout is (msgpack arrays).
    let bytes = rmp_serde::to_vec(&with).expect("encode");
    assert_eq!(
        rmp_serde::from_slice::<Layout>(&bytes).expect("decode"),
        with
    );
    let without = rmp_serde::to_vec(&l).expect("encode");
    assert_eq!(
        rmp_serde::from_slice::<Layout>(&without).expect("decode"),
        l
    );

    // A node at the version before takes it by merge.
    let mut other = l.clone();
    assert!(other.merge(&with).expect("merge").changed);
    assert_eq!(other.access, with.access);

    // A node change committed after it keeps it.
    let mut staged = with.clone();
    staged
        .stage("n1", "n4", Change::Set(role()))
        .expect("stage");
    let next = staged.next().expect("next");
    assert_eq!(next.access, with.access);

    // A forged policy (tokens without an admin) is refused from the network.
    let mut forged = with;
    if let Some(p) = forged.access.as_mut() {
        p.tokens
            .values_mut()
            .for_each(|t| t.grants = vec![Grant::new("*", [Perm::Read])]);
    }
    assert!(forged.check().is_err());

    // A policy emptied again is none: the encoding earlier builds read.
    let emptied = l
        .with_access(&admin)
        .and_then(|w| w.with_access(&AccessChange::DeleteToken { id: "root".into() }))
        .expect("emptied");
    assert_eq!(emptied.access, None);
}
