//! The node's membership at boot and between runs: the member table and
//! layout kept in the data dir, and what the membership notices, in the log.
//!
//! The decisions themselves (failure detection, founding, joining, the ring)
//! are the state machine's ([`quorra_core::node`]); this module builds its
//! [`Membership`] from the configuration and a saved table, saves tables
//! it hands out (durably, off the async path) and reports its notices.

use std::net::SocketAddr;

use quorra_core::membership::{MemberInfo, Membership, Notice, SavedTable, Status};

use crate::config::NodeConfig;
/// Where a node keeps its layout and member table between runs.
const TABLE_FILE: &str = "cluster.json";

/// The layout and member table saved by a previous run (empty if none or
/// unreadable: the node then joins through its seeds like a new one; it
/// never founds a cluster its peers already have).
fn load_table(data_dir: &std::path::Path) -> SavedTable {
    let path = data_dir.join(TABLE_FILE);
    let Ok(bytes) = std::fs::read(&path) else {
        return SavedTable::default();
    };
    serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        tracing::warn!(path = %path.display(), "unreadable member table, joining afresh: {e}");
        SavedTable::default()
    })
}

/// Replaces `path` with `bytes` so that a crash leaves the old or the new
/// file, never a torn one: a temp file, fsynced, renamed, and the directory
/// fsynced so the rename itself is durable.
fn write_durably(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Told whether a table (or a later one) is on disk.
pub type Saved = Box<dyn FnOnce(Result<(), String>) + Send>;

/// A table to save, with its membership version, and who waits for it.
pub struct SaveJob {
    /// The membership version the table holds.
    pub version: u64,
    /// The table.
    pub table: SavedTable,
    /// Called once this version, or a later one, is on disk (or failed).
    pub done: Option<Saved>,
}

/// Tables waiting to be saved.
pub type SaveQueue = std::sync::mpsc::Sender<SaveJob>;

/// The thread that writes tables to `path`: the newest first (an older
/// table never replaces a newer one), each durably, then tells whoever
/// waits. It ends when the cluster view is dropped.
pub fn spawn_saver(path: std::path::PathBuf) -> SaveQueue {
    let (tx, rx) = std::sync::mpsc::channel::<SaveJob>();
    std::thread::spawn(move || {
        let mut saved = 0;
        while let Ok(first) = rx.recv() {
            // Only the newest of what queued up meanwhile is worth writing.
            let mut waiting: Vec<Saved> = Vec::new();
            let mut next = (first.version, first.table);
            waiting.extend(first.done);
            while let Ok(newer) = rx.try_recv() {
                waiting.extend(newer.done);
                if newer.version > next.0 {
                    next = (newer.version, newer.table);
                }
            }
            let (version, records) = next;
            let mut outcome = Ok(());
            if version > saved {
                let result = serde_json::to_vec(&records)
                    .map_err(std::io::Error::other)
                    .and_then(|b| write_durably(&path, &b));
                match result {
                    Ok(()) => saved = version,
                    Err(e) => {
                        tracing::warn!("cannot save the member table: {e}");
                        outcome = Err(e.to_string());
                    }
                }
            }
            for done in waiting {
                done(outcome.clone());
            }
        }
    });
    tx
}

/// The membership a node starts with: itself, its seeds (plus every peer
/// of its saved table), its initial members, and the saved layout and table
/// of a previous run. Without a peer transport (`clustered` false) the node
/// is a cluster of its own.
pub fn boot_membership(
    config: &NodeConfig,
    clustered: bool,
    peer_addr: SocketAddr,
    http_addr: SocketAddr,
    boot_ms: u64,
) -> Membership {
    let me = MemberInfo {
        id: config.node_id.clone(),
        peer_addr,
        http_addr,
        zone: config.zone.clone(),
        incarnation: boot_ms,
        status: Status::Up,
    };
    // A node that was a member before a restart takes its saved layout and
    // table back (it is a member at once, with the ring it knew); its peers
    // serve as seeds too, so even a node with no seeds of its own finds its
    // way back.
    let saved = if clustered {
        load_table(&config.data_dir)
    } else {
        SavedTable::default()
    };
    let mut seeds = Vec::new();
    if clustered {
        seeds = config.seeds.clone();
        for m in &saved.members {
            if m.id != config.node_id && !seeds.contains(&m.peer_addr) {
                seeds.push(m.peer_addr);
            }
        }
    }
    let initial = if clustered {
        config.initial_members.iter().cloned().collect()
    } else {
        std::collections::BTreeSet::from([config.node_id.clone()])
    };
    let mut membership = Membership::new(
        me,
        seeds,
        initial,
        quorra_core::layout::Bootstrap {
            shape: config.shape(),
            buckets: quorra_core::bucket::BucketTable {
                defaults: config.bucket_defaults,
                named: config.bucket_table(),
            },
        },
        config.gossip,
        0,
        boot_ms ^ 0x9e37_79b9_7f4a_7c15,
    );
    membership.restore(saved, 0);
    if let Some(layout) = membership.layout() {
        tracing::info!(cluster = %layout.cluster, version = layout.version, "member of cluster");
    } else {
        tracing::info!(
            initial_members = ?config.initial_members,
            "not in a cluster yet: founding with the initial members or joining through the seeds"
        );
    }
    membership
}

/// Where a node keeps its layout and member table between runs.
pub fn table_path(config: &NodeConfig) -> std::path::PathBuf {
    config.data_dir.join(TABLE_FILE)
}

/// Logs what the membership noticed: founding and joining at info, a node
/// of another cluster or a differing initial member list at error (an
/// operator has to act).
pub fn report(notices: &[Notice]) {
    for n in notices {
        match n {
            Notice::Founded { cluster } => {
                tracing::info!(%cluster, "founded the cluster with its initial members");
            }
            Notice::Joined { cluster, via } => {
                tracing::info!(%cluster, via = %via, "joined the cluster");
            }
            Notice::ForeignCluster { peer, theirs, ours } => {
                let ours = ours
                    .as_ref()
                    .map_or("none yet".to_owned(), |c| c.to_string());
                tracing::error!(
                    peer = %peer,
                    their_cluster = %theirs,
                    our_cluster = %ours,
                    "refused gossip from node {peer}: it belongs to another cluster ({theirs}, ours is {ours}); \
                     check its seeds, or wipe it if it should join this cluster afresh"
                );
            }
            Notice::InitialMembersDiffer { peer, theirs, ours } => {
                let theirs = theirs.as_ref().map_or("none".to_owned(), |c| c.to_string());
                tracing::error!(
                    peer = %peer,
                    "not founding: initial member {peer} would found cluster {theirs}, this node {ours}; \
                     give every initial member the same initial_members, partitions and tokens"
                );
            }
            Notice::FoundersBucketsDiffer { peer } => {
                tracing::error!(
                    peer = %peer,
                    "not founding: initial member {peer} is configured with other bucket properties \
                     ([bucket_defaults] or [buckets]); give every initial member the same"
                );
            }
            Notice::BucketsDiffer { cluster, buckets } => {
                let names = buckets
                    .iter()
                    .map(|b| {
                        if b == "*" {
                            "the defaults".to_owned()
                        } else {
                            format!("bucket {b}")
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                tracing::warn!(
                    %cluster,
                    "cluster {cluster} has other bucket properties than this node's configuration ({names}): \
                     following the cluster's (the configuration only bootstraps a new cluster; \
                     change them with PUT /v1/buckets/{{bucket}}/props)"
                );
            }
            Notice::LayoutsDiverge {
                peer,
                version,
                ours,
                theirs,
            } => {
                tracing::error!(
                    peer = %peer,
                    version,
                    "node {peer} holds layout version {version} with digest {theirs}, this node {ours}: \
                     two different layouts were committed as one version, which must never happen; \
                     each node keeps its own until a later version is committed. Report this as a bug, \
                     then stage and commit a change to move both to one version"
                );
            }
            Notice::InvalidLayout { peer, reason } => {
                tracing::error!(peer = %peer, "refused the layout node {peer} sent: {reason}");
            }
            Notice::ShapeDiffers {
                peer,
                cluster,
                theirs,
                ours,
            } => {
                let from = peer
                    .as_ref()
                    .map_or("its saved table".to_owned(), |p| format!("node {p}"));
                tracing::warn!(
                    %cluster,
                    "cluster {cluster} (from {from}) has {theirs}, this node's configuration says {ours}: \
                     following the cluster's (the configuration only bootstraps a new cluster)"
                );
            }
        }
    }
}
