//! The simulated disk: what a node keeps, and what of it survives which
//! crash. Part of the simulator's model of the world (with the network,
//! the clocks and the clients), not of the node.
//!
//! It models what RocksDB and the file system give the real node:
//! - a write is visible to the process at once, but survives a **power
//!   loss** only once synced; a sync (a `dw` write) makes every earlier
//!   write durable too, as a write-ahead log sync does. A process crash
//!   (kill -9) loses nothing: the page cache survives it.
//! - the member table and the actor epoch are files written with fsync: they
//!   are durable at once.
//! - a record can be **corrupted** on disk; reading it then fails, and the
//!   node must notice (see the node's store) rather than take it for a
//!   missing key.
//! - a node that stops without closing its disk (any crash) finds it
//!   unclean at its next start.

use std::collections::BTreeMap;

use quorra_core::membership::SavedTable;
use quorra_core::Object;

/// One stored record.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Record {
    /// Readable.
    Ok(Object),
    /// Its bytes no longer decode.
    Corrupt,
}

/// A record read failed: the bytes on disk do not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Corrupt;

/// What is stored.
#[derive(Debug, Clone, Default, PartialEq)]
struct Contents {
    table: SavedTable,
    objects: BTreeMap<String, Record>,
    hints: BTreeMap<(String, String), Object>,
    epoch: u64,
    /// Set while a node has the disk open.
    open: bool,
    /// Corrupt records moved aside as evidence.
    quarantined: u64,
    /// Markers of reaped keys: when, and the tombstone.
    reaped: BTreeMap<String, (u64, Object)>,
}

/// A node's disk.
#[derive(Debug, Clone, Default)]
pub(crate) struct Disk {
    /// What the process sees.
    live: Contents,
    /// What survives a power loss, when it differs from `live`: the state
    /// at the last sync, with every fsynced file since.
    synced: Option<Box<Contents>>,
}

impl Disk {
    /// A fresh disk whose node versions its writes with `epoch`.
    pub(crate) fn new(epoch: u64) -> Self {
        Self {
            live: Contents {
                epoch,
                ..Contents::default()
            },
            synced: None,
        }
    }

    /// Before a write that is not synced: keep what survives a power loss.
    fn unsynced(&mut self) {
        if self.synced.is_none() {
            self.synced = Some(Box::new(self.live.clone()));
        }
    }

    /// A sync: every write so far is durable.
    fn sync(&mut self) {
        self.synced = None;
    }

    /// Writes a file with fsync: durable at once, without syncing the
    /// objects' log.
    fn durable_file(&mut self, set: impl Fn(&mut Contents)) {
        set(&mut self.live);
        if let Some(s) = self.synced.as_mut() {
            set(s);
        }
    }

    /// Opens the disk for a node starting; returns whether its previous
    /// run stopped without closing it (a crash).
    pub(crate) fn open(&mut self) -> bool {
        let unclean = self.live.open;
        self.durable_file(|c| c.open = true);
        unclean
    }

    /// The power fails: every write not synced is gone.
    pub(crate) fn power_loss(&mut self) {
        if let Some(s) = self.synced.take() {
            self.live = *s;
        }
    }

    /// Corrupts the `pick`-th stored object (if any); returns its key.
    pub(crate) fn corrupt(&mut self, pick: u64) -> Option<String> {
        let keys: Vec<String> = self.live.objects.keys().cloned().collect();
        if keys.is_empty() {
            return None;
        }
        let key = keys[(pick % keys.len() as u64) as usize].clone();
        // Corruption is on the medium: what survives a power loss is as
        // corrupt as what the process sees.
        let k = key.clone();
        self.durable_file(move |c| {
            if c.objects.contains_key(&k) {
                c.objects.insert(k.clone(), Record::Corrupt);
            }
        });
        Some(key)
    }

    /// The saved member table and layout.
    pub(crate) fn table(&self) -> &SavedTable {
        &self.live.table
    }

    /// Saves the member table (fsynced).
    pub(crate) fn save_table(&mut self, table: SavedTable) {
        self.durable_file(|c| c.table = table.clone());
    }

    /// The actor epoch.
    pub(crate) fn epoch(&self) -> u64 {
        self.live.epoch
    }

    /// Saves a new actor epoch (fsynced).
    pub(crate) fn set_epoch(&mut self, epoch: u64) {
        self.durable_file(|c| c.epoch = epoch);
    }

    /// Reads an object.
    pub(crate) fn object(&self, key: &str) -> Result<Option<&Object>, Corrupt> {
        match self.live.objects.get(key) {
            None => Ok(None),
            Some(Record::Ok(o)) => Ok(Some(o)),
            Some(Record::Corrupt) => Err(Corrupt),
        }
    }

    /// Moves a corrupt record aside (kept as evidence, counted).
    pub(crate) fn quarantine(&mut self, key: &str) {
        self.unsynced();
        if self.live.objects.remove(key).is_some() {
            self.live.quarantined += 1;
        }
    }

    /// How many corrupt records were moved aside.
    #[cfg(test)]
    pub(crate) fn quarantined(&self) -> u64 {
        self.live.quarantined
    }

    /// Writes an object, synced when `durable`.
    pub(crate) fn put_object(&mut self, key: &str, object: Object, durable: bool) {
        self.unsynced();
        self.live.objects.insert(key.to_owned(), Record::Ok(object));
        if durable {
            self.sync();
        }
    }

    /// The names of every object record, in order.
    pub(crate) fn object_names(&self) -> Vec<String> {
        self.live.objects.keys().cloned().collect()
    }

    /// Deletes an object record (not synced, like a RocksDB delete).
    pub(crate) fn remove_object(&mut self, key: &str) {
        self.unsynced();
        self.live.objects.remove(key);
    }

    /// Makes every write so far durable (a write-ahead log sync).
    pub(crate) fn sync_all(&mut self) {
        self.sync();
    }

    /// Reaps a key: its record goes, a marker of its tombstone stays (not
    /// synced, like the store's batch).
    pub(crate) fn reap(&mut self, key: &str, tombstone: Object, now_ms: u64) {
        self.unsynced();
        self.live.objects.remove(key);
        self.live.reaped.insert(key.to_owned(), (now_ms, tombstone));
    }

    /// The tombstone a reaped key left, while its marker is kept.
    pub(crate) fn marker(&self, key: &str) -> Option<&Object> {
        self.live.reaped.get(key).map(|(_, t)| t)
    }

    /// Whether a readable record holds only tombstones.
    pub(crate) fn holds_tombstones(&self) -> bool {
        self.live
            .objects
            .values()
            .any(|r| matches!(r, Record::Ok(o) if o.deleted_at().is_some()))
    }

    /// Drops the marker of `key` (a write replaced it).
    pub(crate) fn forget_marker(&mut self, key: &str) {
        if self.live.reaped.contains_key(key) {
            self.unsynced();
            self.live.reaped.remove(key);
        }
    }

    /// Drops the markers made before `before_ms` among `keys`.
    pub(crate) fn expire_markers(&mut self, before_ms: u64, keys: &dyn Fn(&str) -> bool) {
        let old: Vec<String> = self
            .live
            .reaped
            .iter()
            .filter(|(k, (at, _))| *at < before_ms && keys(k))
            .map(|(k, _)| k.clone())
            .collect();
        if !old.is_empty() {
            self.unsynced();
            for k in old {
                self.live.reaped.remove(&k);
            }
        }
    }

    /// A hint held for `owner`.
    pub(crate) fn hint(&self, owner: &str, key: &str) -> Option<&Object> {
        self.live.hints.get(&(owner.to_owned(), key.to_owned()))
    }

    /// Writes a hint, synced when `durable`.
    pub(crate) fn put_hint(&mut self, owner: &str, key: &str, object: Object, durable: bool) {
        self.unsynced();
        self.live
            .hints
            .insert((owner.to_owned(), key.to_owned()), object);
        if durable {
            self.sync();
        }
    }

    /// Deletes a delivered hint (not synced: a hint that comes back is
    /// delivered again).
    pub(crate) fn remove_hint(&mut self, owner: &str, key: &str) {
        self.unsynced();
        self.live.hints.remove(&(owner.to_owned(), key.to_owned()));
    }

    /// Every hint, by owner and key.
    pub(crate) fn hints(&self) -> &BTreeMap<(String, String), Object> {
        &self.live.hints
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object() -> Object {
        Object::default()
    }

    #[test]
    fn a_power_loss_keeps_synced_writes_and_fsynced_files_only() {
        let mut d = Disk::new(7);
        d.put_object("a", object(), false);
        d.put_object("b", object(), true); // syncs "a" too
        d.put_object("c", object(), false);
        d.set_epoch(8);
        d.put_hint("n2", "h", object(), false);
        d.power_loss();
        assert!(d.object("a").expect("readable").is_some());
        assert!(d.object("b").expect("readable").is_some());
        assert!(d.object("c").expect("readable").is_none(), "unsynced");
        assert!(d.hint("n2", "h").is_none(), "unsynced");
        assert_eq!(d.epoch(), 8, "the epoch file is fsynced");
    }

    #[test]
    fn a_crash_leaves_the_disk_unclean_and_corruption_is_seen() {
        let mut d = Disk::new(1);
        assert!(!d.open(), "a fresh disk is clean");
        d.put_object("a", object(), true);
        assert!(d.open(), "opened again without closing: unclean");
        assert_eq!(d.corrupt(0).as_deref(), Some("a"));
        assert_eq!(d.object("a"), Err(Corrupt));
        d.power_loss();
        assert_eq!(d.object("a"), Err(Corrupt), "the medium is corrupt");
        d.quarantine("a");
        assert_eq!(d.object("a"), Ok(None));
        assert_eq!(d.quarantined(), 1);
    }
}
