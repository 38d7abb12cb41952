//! Quick start for the Quorra client: write, read, make siblings, resolve
//! them with a read-modify-write.
//!
//! Against the README's dev cluster, after making a client certificate with
//! `quorra certs --out quorra-data/certs --clients app`:
//!
//! ```sh
//! cargo run -p quorra-client --example quickstart -- 127.0.0.1:8099 quorra-data/certs app
//! ```
//!
//! The test suite runs [`run`] against a real cluster.

use std::collections::BTreeSet;

use quorra_client::{Client, ClientConfig, ClientError, Value};

/// Merges siblings holding comma-separated items: their union.
pub(crate) fn union(siblings: &[Value]) -> Vec<u8> {
    let items: BTreeSet<String> = siblings
        .iter()
        .flat_map(|v| {
            String::from_utf8_lossy(&v.bytes)
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    items.into_iter().collect::<Vec<_>>().join(",").into_bytes()
}

/// The walk-through; returns what it prints.
pub(crate) async fn run(client: &Client) -> Result<Vec<String>, ClientError> {
    let mut out = Vec::new();
    // A blind write, then a read: one value and its context.
    client.put("carts", "alice", "apples", None).await?;
    let cart = client.get("carts", "alice").await?;
    out.push(format!("read {} value(s)", cart.values.len()));

    // Two writers who read the same context both win: two siblings.
    client
        .put("carts", "alice", "apples,bread", Some(&cart.context))
        .await?;
    client
        .put("carts", "alice", "apples,milk", Some(&cart.context))
        .await?;
    let cart = client.get("carts", "alice").await?;
    out.push(format!(
        "after two concurrent writes: {} siblings",
        cart.values.len()
    ));

    // Read-modify-write resolves them (union) and adds an item.
    client
        .modify("carts", "alice", union, |current| {
            let mut items = String::from_utf8_lossy(&current.unwrap_or_default()).into_owned();
            items.push_str(",pears");
            items.into_bytes()
        })
        .await?;
    let cart = client.get("carts", "alice").await?;
    let value = cart
        .values
        .first()
        .map(|v| String::from_utf8_lossy(&v.bytes).into_owned())
        .unwrap_or_default();
    out.push(format!("resolved: {} value: {value}", cart.values.len()));
    Ok(out)
}

#[allow(dead_code)] // unused when the test suite includes this file as a module
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: quickstart PEER_ADDR CERT_DIR NAME";
    let seed = args.next().ok_or(usage)?.parse()?;
    let certs = args.next().ok_or(usage)?;
    let name = args.next().ok_or(usage)?;
    let client = Client::connect(ClientConfig::new(vec![seed], certs, name)).await?;
    for line in run(&client).await? {
        println!("{line}");
    }
    Ok(())
}
