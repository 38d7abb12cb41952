use super::*;
use crate::auth::{authorize_bucket, Principal, Role};

/// A secret of the right length, all `c`.
fn secret(c: char) -> String {
    c.to_string().repeat(SECRET_LEN)
}

fn admin_token(id: &str, s: &str) -> AccessChange {
    token(
        id,
        s,
        vec![Grant::new("*", [Perm::Read, Perm::Write, Perm::Admin])],
    )
}

fn token(id: &str, s: &str, grants: Vec<Grant>) -> AccessChange {
    AccessChange::PutToken {
        id: id.into(),
        secret_sha256: secret_sha256(s),
        grants,
        replace: false,
    }
}

#[test]
fn patterns_name_a_bucket_every_bucket_or_a_prefix() {
    let exact = Grant::new("users", [Perm::Read]);
    assert!(exact.covers("users") && !exact.covers("users2") && !exact.covers("user"));
    let prefix = Grant::new("app-*", [Perm::Read]);
    assert!(prefix.covers("app-") && prefix.covers("app-logs") && !prefix.covers("ap"));
    let all = Grant::new("*", [Perm::Write]);
    assert!(all.covers("anything"));
    assert!(all.allows("x", Perm::Write) && !all.allows("x", Perm::Read));
    for bad in ["", "a b", "a*b*", "x/y", &"b".repeat(256)] {
        let g = Grant::new(bad, [Perm::Read]);
        assert!(g.validate().is_err(), "{bad:?}");
    }
    assert!(Grant::new("b", []).validate().is_err());
}

#[test]
fn the_first_token_must_be_a_cluster_admin_and_the_last_admin_stays() {
    let open = AccessPolicy::default();
    assert!(!open.closed());
    let reader = token("ro", "s1", vec![Grant::new("b", [Perm::Read])]);
    assert!(matches!(open.apply(&reader), Err(PolicyError::LockOut(_))));
    let p = open.apply(&admin_token("root", "s0")).expect("admin first");
    assert!(p.closed());
    let p = p.apply(&reader).expect("then others");
    assert!(matches!(
        p.apply(&AccessChange::DeleteToken { id: "root".into() }),
        Err(PolicyError::LockOut(_))
    ));
    // A create never replaces a token silently; a rotation says so.
    assert!(matches!(
        p.apply(&admin_token("root", "s9")),
        Err(PolicyError::Exists(_))
    ));
    let demoted = AccessChange::PutToken {
        id: "root".into(),
        secret_sha256: secret_sha256("s0"),
        grants: vec![Grant::new("*", [Perm::Read])],
        replace: true,
    };
    // Demoting the only admin is the same lock-out.
    assert!(matches!(p.apply(&demoted), Err(PolicyError::LockOut(_))));
    let p = p
        .apply(&AccessChange::DeleteToken { id: "ro".into() })
        .expect("delete reader");
    let p = p
        .apply(&AccessChange::DeleteToken { id: "root".into() })
        .expect("the last token goes: the cluster is open again");
    assert!(!p.closed());
    assert!(matches!(
        p.apply(&AccessChange::DeleteToken { id: "root".into() }),
        Err(PolicyError::Missing(_))
    ));
}

#[test]
fn changes_out_of_shape_are_refused() {
    let p = AccessPolicy::default();
    for id in ["", "a.b", "a b", &"x".repeat(MAX_ID_LEN + 1)] {
        assert!(
            matches!(p.apply(&admin_token(id, "s")), Err(PolicyError::Invalid(_))),
            "{id:?}"
        );
    }
    let bad_hash = AccessChange::PutToken {
        id: "t".into(),
        secret_sha256: "zz".into(),
        grants: vec![Grant::new("*", [Perm::Admin])],
        replace: false,
    };
    assert!(matches!(p.apply(&bad_hash), Err(PolicyError::Invalid(_))));
    let no_grants = AccessChange::PutCert {
        name: "app".into(),
        grants: vec![],
    };
    assert_eq!(
        p.apply(&no_grants).unwrap_err().code(),
        ErrorCode::InvalidParameter
    );
}

#[test]
fn a_token_authenticates_by_its_secret_until_revoked() {
    let (right, wrong) = (secret('a'), secret('b'));
    let p = AccessPolicy::default()
        .apply(&admin_token("root", &right))
        .expect("admin");
    let (id, grants) = p
        .authenticate(&format!("root.{right}"))
        .expect("right secret");
    assert_eq!(id, "root");
    assert!(is_cluster_admin(grants));
    assert_eq!(
        p.authenticate(&format!("root.{wrong}")),
        Err(BadToken::Unknown)
    );
    assert_eq!(
        p.authenticate(&format!("nobody.{right}")),
        Err(BadToken::Unknown)
    );
    // Shapes that cannot be a token are refused before any hashing.
    assert_eq!(
        p.authenticate(&format!("root.{right}x")),
        Err(BadToken::Malformed)
    );
    assert_eq!(
        p.authenticate(&format!("root.{}", "a".repeat(100_000))),
        Err(BadToken::Malformed)
    );
    assert_eq!(p.authenticate("root"), Err(BadToken::Malformed));
    assert_eq!(
        p.authenticate(&format!(".{right}")),
        Err(BadToken::Malformed)
    );
    let p = p
        .apply(&AccessChange::DeleteToken { id: "root".into() })
        .expect("revoke");
    assert_eq!(
        p.authenticate(&format!("root.{right}")),
        Err(BadToken::Unknown)
    );
}

#[test]
fn grants_narrow_a_principal_to_its_buckets_and_permissions() {
    let ro =
        Principal::new(Role::Client, "token:ro").with_grants(vec![Grant::new("b", [Perm::Read])]);
    assert!(authorize_bucket(&ro, "b", Perm::Read).is_ok());
    let denied = authorize_bucket(&ro, "b", Perm::Write).unwrap_err();
    assert_eq!(denied.code(), ErrorCode::Forbidden);
    assert!(
        denied
            .to_string()
            .contains("no write permission on bucket b"),
        "{denied}"
    );
    assert!(authorize_bucket(&ro, "other", Perm::Read).is_err());
    assert!(authorize_bucket(&ro, "b", Perm::Admin).is_err());

    let bucket_admin = Principal::new(Role::Client, "token:ba")
        .with_grants(vec![Grant::new("logs-*", [Perm::Admin])]);
    assert!(authorize_bucket(&bucket_admin, "logs-1", Perm::Admin).is_ok());
    assert!(authorize_bucket(&bucket_admin, "logs-1", Perm::Read).is_err());

    // Without grants, the role decides: client read/write, admin too.
    let client = Principal::new(Role::Client, "app");
    assert!(authorize_bucket(&client, "any", Perm::Write).is_ok());
    assert!(authorize_bucket(&client, "any", Perm::Admin).is_err());
    let admin = Principal::new(Role::Admin, "ops");
    assert!(authorize_bucket(&admin, "any", Perm::Admin).is_ok());
    // Grants never lift a role: a certificate without a role stays out.
    let none = Principal::from_uris([], "cn").with_grants(vec![Grant::new("*", [Perm::Read])]);
    assert!(authorize_bucket(&none, "b", Perm::Read).is_err());
}

#[test]
fn a_policy_from_the_network_is_checked() {
    let p = AccessPolicy::default()
        .apply(&admin_token("root", "s"))
        .expect("admin");
    assert!(p.validate().is_ok());
    let mut forged = p.clone();
    forged.tokens.get_mut("root").expect("root").grants = vec![Grant::new("*", [Perm::Read])];
    assert!(forged.validate().is_err());
    let mut forged = p;
    forged
        .certs
        .insert("a b".into(), vec![Grant::new("*", [Perm::Read])]);
    assert!(forged.validate().is_err());
}
