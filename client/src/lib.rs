//! The Rust client library for Quorra.
//!
//! A [`Client`] connects to a cluster over QUIC with mutual TLS (a
//! certificate from the cluster CA, made by `quorra certs --clients NAME`),
//! learns the ring from the cluster and keeps it fresh, and sends each
//! request straight to the key's primary replica (token-aware, like the
//! Cassandra and Scylla drivers), moving to the next replica and backing off
//! with jitter when a node fails.
//!
//! Conflicts are explicit: [`Client::get`] returns every sibling and one
//! [`Context`]; [`Client::put`] takes the context it replaces;
//! [`Client::modify`] does read-resolve-modify-write with your resolver.
//!
//! ```no_run
//! # async fn demo() -> Result<(), quorra_client::ClientError> {
//! use quorra_client::{Client, ClientConfig};
//!
//! let config = ClientConfig::new(vec!["127.0.0.1:8099".parse().unwrap()], "quorra-data/certs", "app1");
//! let client = Client::connect(config).await?;
//! client.put("carts", "alice", b"apples".to_vec(), None).await?;
//! let cart = client.get("carts", "alice").await?;
//! // Merge siblings (here: union of comma-separated items), then add one.
//! client
//!     .modify(
//!         "carts",
//!         "alice",
//!         |siblings| siblings.iter().map(|v| String::from_utf8_lossy(&v.bytes)).collect::<Vec<_>>().join(",").into_bytes(),
//!         |current| [current.unwrap_or_default(), b",pears".to_vec()].concat(),
//!     )
//!     .await?;
//! # let _ = cart;
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//!
//! - [`admin`]: the operator's calls (layout, status, repair, replicas)
//!   over a node's HTTP admin endpoints.
//! - [`client`]: the client, its options and results.
//! - [`datatypes`]: counters, sets, maps, registers and flags.
//! - [`error`]: typed, `#[non_exhaustive]` errors.
//! - [`tls`]: mutual-TLS identities from a cluster certificate dir.
//! - [`transport`]: QUIC connections, streams and frames. Nodes use the same
//!   transport for their peer links: there is one implementation.

pub mod admin;
pub mod client;
pub mod datatypes;
pub mod error;
pub mod tls;
pub mod transport;

pub use client::{Client, ClientConfig, Context, Fetched, Options, Value};
pub use datatypes::{DataValue, MapUpdate};
pub use error::ClientError;
pub use quorra_core::{CausalContext, ErrorCode, QuorumOverrides, VersionVector};
