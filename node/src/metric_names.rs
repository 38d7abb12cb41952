//! Every metric the node exports at `/metrics`, in one list with what it
//! means, so an operator (and a dashboard) has one place to look, and a
//! name cannot be misspelt at one call site: call sites use these
//! constants. [`describe`] registers the descriptions as Prometheus `HELP`
//! lines.

/// What kind of metric a name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// A distribution (seconds), rendered as a Prometheus histogram.
    Histogram,
}

/// One exported metric.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    /// The name.
    pub name: &'static str,
    /// Its kind.
    pub kind: Kind,
    /// Its labels.
    pub labels: &'static str,
    /// What it counts, for a person.
    pub help: &'static str,
}

macro_rules! metrics_list {
    ($($const:ident = $name:literal, $kind:ident, $labels:literal, $help:literal;)*) => {
        $(
            #[doc = $help]
            pub const $const: &str = $name;
        )*
        /// Every metric, in the order of this module.
        pub const ALL: &[Metric] = &[
            $(Metric { name: $name, kind: Kind::$kind, labels: $labels, help: $help },)*
        ];
    };
}

metrics_list! {
    // Requests.
    HTTP_REQUESTS = "quorra_http_requests_total", Counter, "method, status",
        "HTTP requests answered, by method and status code.";
    HTTP_REQUEST_SECONDS = "quorra_http_request_seconds", Histogram, "method",
        "HTTP request latency in seconds, by method.";
    KV_REQUESTS = "quorra_kv_requests_total", Counter, "op, outcome",
        "Key-value requests from clients (HTTP and QUIC alike), by operation (get, put, delete, crdt) and outcome (ok or the error code).";
    KV_REQUEST_SECONDS = "quorra_kv_request_seconds", Histogram, "op",
        "Key-value request latency in seconds at this node, by operation.";
    QUORUM_FAILURES = "quorra_quorum_failures_total", Counter, "op",
        "Requests refused because too few replicas answered (quorum_unavailable), by operation.";
    CLIENT_REQUESTS = "quorra_client_requests_total", Counter, "op",
        "Reads from the Rust (QUIC) client.";
    CLIENT_WRITES = "quorra_client_writes_total", Counter, "at",
        "Writes from the Rust (QUIC) client, by whether this node is a replica of the key (replica) or not (other).";
    FORWARDED_WRITES = "quorra_forwarded_writes_total", Counter, "",
        "Writes this node forwarded to a replica of the key to coordinate.";
    FORBIDDEN_REQUESTS = "quorra_forbidden_requests_total", Counter, "",
        "QUIC requests refused because the certificate's role does not allow them.";
    OVERLOADED = "quorra_overloaded_total", Counter, "from",
        "Requests refused at once because too many were in flight (overloaded), by source: http and client (QUIC) share one pool of permits, peer has its own.";
    SIBLING_WARNINGS = "quorra_sibling_warnings_total", Counter, "",
        "Writes that left an object with more siblings than before, past a quarter of limits.max_siblings (past the limit writes are refused).";
    LARGE_OBJECTS = "quorra_large_objects_total", Counter, "",
        "Objects stored past half the object size limit.";
    // Membership.
    MEMBERS = "quorra_members", Gauge, "status",
        "Members this node knows, by status (joining, up, suspect, down, leaving, removed).";
    MEMBERSHIP_VERSION = "quorra_membership_version", Gauge, "",
        "The version of this node's membership table.";
    GOSSIP_FOREIGN_MESSAGES = "quorra_gossip_foreign_messages", Gauge, "",
        "Gossip messages refused because their sender is in another cluster.";
    GOSSIP_REFUSED_RECORDS = "quorra_gossip_refused_records", Gauge, "",
        "Member records in gossip refused because their sender may not speak for them.";
    // Hinted handoff.
    HINTS_PENDING = "quorra_hints_pending", Gauge, "",
        "Hints held for members that missed writes.";
    HINT_BYTES = "quorra_hint_bytes", Gauge, "",
        "Bytes of hints held.";
    HINTS_DELIVERED = "quorra_hints_delivered_total", Counter, "",
        "Hints delivered to their owner.";
    HINTS_REHOMED = "quorra_hints_rehomed_total", Counter, "",
        "Hints sent to a key's new replica after a layout change.";
    HINTS_FOR_MISSED_WRITES = "quorra_hints_for_missed_writes_total", Counter, "",
        "Hints stored for a replica that did not acknowledge a write in time.";
    HINTS_DROPPED = "quorra_hints_dropped_total", Counter, "",
        "Hints dropped because the hint store was full.";
    HINTS_EXPIRED = "quorra_hints_expired_total", Counter, "",
        "Hints dropped past their age limit (anti-entropy repairs what they carried).";
    HINTS_REFUSED = "quorra_hints_refused_total", Counter, "",
        "Hints their owner refused.";
    CORRUPT_HINTS = "quorra_corrupt_hints_total", Counter, "",
        "Hint records that failed their checksum.";
    // Repair.
    READ_REPAIRS = "quorra_read_repairs_total", Counter, "",
        "Stale replicas repaired by reads.";
    AAE_EXCHANGES = "quorra_aae_exchanges_total", Counter, "",
        "Anti-entropy exchanges completed.";
    AAE_EXCHANGES_FAILED = "quorra_aae_exchanges_failed_total", Counter, "",
        "Anti-entropy exchanges that failed.";
    AAE_KEYS_REPAIRED = "quorra_aae_keys_repaired_total", Counter, "direction",
        "Keys repaired by anti-entropy, fetched from or pushed to a peer.";
    AAE_BYTES_COMPARED = "quorra_aae_bytes_compared_total", Counter, "",
        "Bytes of hash trees compared by anti-entropy.";
    AAE_TREE_BUILDS = "quorra_aae_tree_builds_total", Counter, "",
        "Partition hash trees built from the data.";
    AAE_TREES_BUILT = "quorra_aae_trees_built", Gauge, "",
        "Partition hash trees built since the node started.";
    SCRUB_RECORDS_CHECKED = "quorra_scrub_records_checked_total", Counter, "",
        "Records the scrub read and checked.";
    SCRUB_CORRUPT_FOUND = "quorra_scrub_corrupt_found_total", Counter, "",
        "Corrupt records the scrub found (moved aside, repaired by anti-entropy).";
    CORRUPT_OBJECTS = "quorra_corrupt_objects_total", Counter, "",
        "Objects that failed their checksum on a read.";
    // Transfers.
    TRANSFER_PARTITIONS_PENDING = "quorra_transfer_partitions_pending", Gauge, "",
        "Partitions this node still has to copy after a layout change.";
    PARTITIONS_COPIED = "quorra_partitions_copied_total", Counter, "",
        "Partitions copied to this node after layout changes.";
    OBJECTS_COPIED = "quorra_objects_copied_total", Counter, "",
        "Objects copied to this node after layout changes.";
    OBJECTS_DROPPED = "quorra_objects_dropped_total", Counter, "",
        "Objects dropped because this node no longer holds their partition.";
    // Tombstones and versions.
    TOMBSTONES_HELD = "quorra_tombstones_held", Gauge, "",
        "Tombstones waiting to be reaped.";
    TOMBSTONE_MARKERS = "quorra_tombstone_markers", Gauge, "",
        "Index entries of tombstones waiting to be reaped.";
    TOMBSTONES_REAPED = "quorra_tombstones_reaped_total", Counter, "",
        "Tombstones reaped after the grace period.";
    REAP_PASSES = "quorra_reap_passes_total", Counter, "",
        "Reaping passes run.";
    RESURRECTIONS = "quorra_resurrections_total", Counter, "",
        "Values written over tombstones that were about to be reaped.";
    DOT_COLLISIONS = "quorra_dot_collisions_total", Counter, "",
        "Writes whose dot collided with a stored one (a lost counter; the node moved to a new actor epoch).";
    ACTOR_EPOCHS = "quorra_actor_epochs_total", Counter, "",
        "New actor epochs this node started.";
    // Storage (RocksDB), read at each scrape.
    STORAGE_KEYS = "quorra_storage_keys", Gauge, "space",
        "Keys in each storage space, as RocksDB estimates them.";
    STORAGE_BYTES = "quorra_storage_bytes", Gauge, "space",
        "Bytes of table files on disk, by storage space.";
    STORAGE_DELETION_MARKERS = "quorra_storage_deletion_markers", Gauge, "space",
        "Deletion markers (RocksDB tombstones) not compacted away yet, by storage space.";
    STORAGE_PENDING_COMPACTION_BYTES = "quorra_storage_pending_compaction_bytes", Gauge, "space",
        "Bytes RocksDB estimates compaction still has to rewrite (the compaction backlog), by storage space.";
    STORAGE_WRITE_STALL_MICROS = "quorra_storage_write_stall_micros_total", Counter, "",
        "Microseconds writers were stalled by RocksDB (memtables or compaction behind).";
    STORAGE_MEMORY_BYTES = "quorra_storage_memory_bytes", Gauge, "part",
        "RocksDB memory: the budget, the block cache's use, the memtables.";
    STORAGE_WAL_SYNCS = "quorra_storage_wal_syncs_total", Counter, "",
        "Write-ahead log syncs (durable writes share them).";
}

/// Registers every metric's description with the recorder.
pub fn describe() {
    for m in ALL {
        match m.kind {
            Kind::Counter => metrics::describe_counter!(m.name, m.help),
            Kind::Gauge => metrics::describe_gauge!(m.name, m.help),
            Kind::Histogram => {
                metrics::describe_histogram!(m.name, metrics::Unit::Seconds, m.help)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_follow_prometheus_conventions() {
        let mut seen = std::collections::BTreeSet::new();
        for m in ALL {
            assert!(seen.insert(m.name), "{} listed twice", m.name);
            assert!(m.name.starts_with("quorra_"), "{}", m.name);
            assert!(
                m.name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{}",
                m.name
            );
            assert_eq!(
                m.kind == Kind::Counter,
                m.name.ends_with("_total"),
                "{}: counters and only counters end in _total",
                m.name
            );
            if m.kind == Kind::Histogram {
                assert!(m.name.ends_with("_seconds"), "{}", m.name);
            }
            assert!(!m.help.is_empty());
        }
    }
}
