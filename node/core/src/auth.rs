//! Who may ask what: certificate roles and the one permission check that
//! every entry point (QUIC and HTTP alike) goes through.
//!
//! A certificate from the cluster CA names a [`Role`] and a name in a
//! subject alternative name URI, `urn:quorra:ROLE:NAME` (`quorra certs`
//! writes it). Only a `node` certificate may send peer traffic (gossip,
//! replica reads and writes, indirect pings, handoff, forwarded writes), and
//! gossip about a member's own record is taken only from that member's
//! certificate (see [`crate::membership`]). `client` certificates send client
//! requests; `admin` certificates also call admin operations. A certificate
//! with no Quorra role may do nothing.
//!
//! Within its role, a principal may be narrowed to some buckets by grants
//! (see [`crate::access`]): a bearer token's, or the cluster policy's entry
//! for its certificate. [`authorize_bucket`] checks both.

use serde::{Deserialize, Serialize};

use crate::access::granted;
pub use crate::access::{Grant, Perm};
use crate::error::ErrorCode;

/// The URI prefix of a role in a certificate's subject alternative names.
pub const ROLE_URI_PREFIX: &str = "urn:quorra:";

/// What a certificate may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A cluster member: peer traffic about itself, and client requests.
    Node,
    /// An application: client requests only.
    Client,
    /// An operator: client requests and admin operations.
    Admin,
}

impl Role {
    /// The role's name in certificates and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Node => "node",
            Self::Client => "client",
            Self::Admin => "admin",
        }
    }
}

/// The authenticated party behind a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal {
    /// What it may do (`None`: a certificate with no Quorra role).
    pub role: Option<Role>,
    /// Its name: the node id for a node.
    pub name: String,
    /// The buckets it may use and how (a token's grants, or the cluster
    /// policy's entry for its certificate); `None`: every bucket, as its
    /// role allows.
    pub grants: Option<Vec<Grant>>,
}

impl Principal {
    /// A principal with a role.
    pub fn new(role: Role, name: impl Into<String>) -> Self {
        Self {
            role: Some(role),
            name: name.into(),
            grants: None,
        }
    }

    /// The principal narrowed to `grants`.
    pub fn with_grants(mut self, grants: Vec<Grant>) -> Self {
        self.grants = Some(grants);
        self
    }

    /// The principal a certificate's role URIs name (the first
    /// `urn:quorra:ROLE:NAME` that parses; none gives no role).
    pub fn from_uris<'a>(uris: impl IntoIterator<Item = &'a str>, fallback_name: &str) -> Self {
        for uri in uris {
            if let Some((role, name)) = parse_role_uri(uri) {
                return Self::new(role, name);
            }
        }
        Self {
            role: None,
            name: fallback_name.to_owned(),
            grants: None,
        }
    }

    /// The node id, when this is a node.
    pub fn node_id(&self) -> Option<&str> {
        (self.role == Some(Role::Node)).then_some(self.name.as_str())
    }
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.role {
            Some(r) => write!(f, "{} {:?}", r.as_str(), self.name),
            None => write!(f, "certificate {:?} with no Quorra role", self.name),
        }
    }
}

/// The URI that gives `name` the role `role`.
pub fn role_uri(role: Role, name: &str) -> String {
    format!("{ROLE_URI_PREFIX}{}:{name}", role.as_str())
}

/// Role and name from `urn:quorra:ROLE:NAME`.
pub fn parse_role_uri(uri: &str) -> Option<(Role, String)> {
    let rest = uri.strip_prefix(ROLE_URI_PREFIX)?;
    let (role, name) = rest.split_once(':')?;
    let role = match role {
        "node" => Role::Node,
        "client" => Role::Client,
        "admin" => Role::Admin,
        _ => return None,
    };
    (!name.is_empty()).then(|| (role, name.to_owned()))
}

/// The kinds of request, as far as permissions go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Traffic between nodes.
    Peer,
    /// A client's reads and writes.
    Client,
    /// Operations on the cluster itself.
    Admin,
}

/// A refused request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// Who asked.
    pub principal: String,
    /// What it asked for.
    pub access: Access,
    /// The permission and bucket its grants lack, when that was why.
    pub on: Option<(Perm, String)>,
}

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.on {
            None => write!(
                f,
                "{} may not send {:?} requests",
                self.principal, self.access
            ),
            Some((perm, bucket)) => write!(
                f,
                "{} has no {} permission on bucket {bucket}",
                self.principal,
                perm.as_str()
            ),
        }
    }
}

impl std::error::Error for Denied {}

impl Denied {
    /// The stable code to answer with.
    pub fn code(&self) -> ErrorCode {
        ErrorCode::Forbidden
    }
}

/// The one permission check: may `who` make a request of kind `access`?
pub fn authorize(who: &Principal, access: Access) -> Result<(), Denied> {
    let allowed = matches!(
        (who.role, access),
        (Some(Role::Node), Access::Peer | Access::Client)
            | (Some(Role::Client), Access::Client)
            | (Some(Role::Admin), Access::Client | Access::Admin)
    );
    refused_unless(allowed, who, access, None)
}

fn refused_unless(
    allowed: bool,
    who: &Principal,
    access: Access,
    on: Option<(Perm, String)>,
) -> Result<(), Denied> {
    if allowed {
        return Ok(());
    }
    Err(Denied {
        principal: who.to_string(),
        access,
        on,
    })
}

/// The check for a request on one bucket: the role must allow client
/// requests, and the principal's grants (if it has any) must allow `perm`
/// on `bucket`. Without grants, `Admin` needs the admin role.
pub fn authorize_bucket(who: &Principal, bucket: &str, perm: Perm) -> Result<(), Denied> {
    let access = if perm == Perm::Admin {
        Access::Admin
    } else {
        Access::Client
    };
    let Some(grants) = &who.grants else {
        return authorize(who, access);
    };
    authorize(who, Access::Client)?;
    let allowed = granted(grants, bucket, perm);
    refused_unless(allowed, who, access, Some((perm, bucket.to_owned())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_may_do_what_it_is_for_and_no_more() {
        let node = Principal::new(Role::Node, "n1");
        let client = Principal::new(Role::Client, "app");
        let admin = Principal::new(Role::Admin, "ops");
        let none = Principal::from_uris(["https://example"], "legacy");
        let table = [
            (&node, [true, true, false]),
            (&client, [false, true, false]),
            (&admin, [false, true, true]),
            (&none, [false, false, false]),
        ];
        for (who, allowed) in table {
            for (access, ok) in [Access::Peer, Access::Client, Access::Admin]
                .into_iter()
                .zip(allowed)
            {
                assert_eq!(authorize(who, access).is_ok(), ok, "{who} {access:?}");
            }
        }
        assert_eq!(
            authorize(&client, Access::Peer).unwrap_err().code(),
            ErrorCode::Forbidden
        );
    }

    #[test]
    fn role_uris_round_trip_and_junk_gives_no_role() {
        for role in [Role::Node, Role::Client, Role::Admin] {
            let uri = role_uri(role, "x-1");
            assert_eq!(parse_role_uri(&uri), Some((role, "x-1".into())));
            assert_eq!(
                Principal::from_uris(["urn:other", uri.as_str()], "cn"),
                Principal::new(role, "x-1")
            );
        }
        for junk in [
            "urn:quorra:root:x",
            "urn:quorra:node:",
            "urn:quorra:node",
            "node:n1",
        ] {
            assert_eq!(parse_role_uri(junk), None, "{junk}");
        }
        assert_eq!(Principal::from_uris([], "cn").role, None);
        assert_eq!(Principal::new(Role::Node, "n1").node_id(), Some("n1"));
        assert_eq!(Principal::new(Role::Admin, "n1").node_id(), None);
    }
}
