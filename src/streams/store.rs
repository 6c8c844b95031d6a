//! Key-value state stores, each backed by a compacted changelog topic the runtime writes and
//! restores from: in memory ([`KeyValueStore`], the default), or on disk behind the open
//! interval's writes ([`Store::Disk`], see [`super::disk`]).
//!
//! Keys are strings (document ids as canonical Extended JSON text, see [`table_key`]); values are
//! bytes (JSON, or documents as BSON, see [`super::stored`]). The runtime applies a record's
//! writes only after the processor succeeded, so a poison record leaves no trace in any store.

use std::borrow::{Borrow, Cow};
use std::collections::{BTreeMap, BTreeSet};
use std::iter::Peekable;

use bson::Bson;

use super::disk::{DiskError, StateDb};

/// One in-memory table.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KeyValueStore {
    // Ordered, so secondary indexes can be read by key prefix. One allocation per entry, sized
    // exactly, holds its key and value: a map of `String` to `Vec<u8>` took two allocations
    // (each rounded up, the value's often to twice its length by the serializer's growth) and
    // 48 bytes a slot in the tree's nodes: 337 bytes an entry where this takes 190
    // (`cargo bench --bench store_memory`).
    entries: BTreeSet<Entry>,
}

/// A key and its value in one boxed slice: the key's length (4 bytes, little-endian), the key
/// (UTF-8), the value. Ordered by key alone, and borrowed as the key's bytes, so the set is
/// looked up and ranged by key like a map (UTF-8 orders as its bytes do; comparing bytes spares
/// the tree's searches a UTF-8 check per comparison).
#[derive(Debug, Clone)]
struct Entry(Box<[u8]>);

const LENGTH: usize = std::mem::size_of::<u32>();

impl Entry {
    fn new(key: &str, value: &[u8]) -> Self {
        let length = u32::try_from(key.len()).expect("a store key shorter than 4 GiB");
        let mut bytes = Vec::with_capacity(LENGTH + key.len() + value.len());
        bytes.extend_from_slice(&length.to_le_bytes());
        bytes.extend_from_slice(key.as_bytes());
        bytes.extend_from_slice(value);
        Self(bytes.into_boxed_slice())
    }

    fn split(&self) -> (usize, &[u8]) {
        let (length, rest) = self.0.split_at(LENGTH);
        let length = u32::from_le_bytes(length.try_into().expect("4 bytes")) as usize;
        (length, rest)
    }

    fn key_bytes(&self) -> &[u8] {
        let (length, rest) = self.split();
        &rest[..length]
    }

    fn key(&self) -> &str {
        // Written from a `&str` in `new`, never changed.
        std::str::from_utf8(self.key_bytes()).expect("a store key is UTF-8")
    }

    fn value(&self) -> &[u8] {
        let (length, rest) = self.split();
        &rest[length..]
    }
}

impl Borrow<[u8]> for Entry {
    fn borrow(&self) -> &[u8] {
        self.key_bytes()
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.key_bytes() == other.key_bytes()
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key_bytes().cmp(other.key_bytes())
    }
}

impl KeyValueStore {
    /// The value under `key`.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.entries.get(key.as_bytes()).map(Entry::value)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries whose keys start with `prefix`, in key order.
    pub fn range_prefix<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a [u8])> {
        self.range_prefix_after(prefix, None)
    }

    /// The entries whose keys start with `prefix` and sort after `after` (all of them when
    /// `None`), in key order.
    pub fn range_prefix_after<'a>(
        &'a self,
        prefix: &'a str,
        after: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a str, &'a [u8])> {
        use std::ops::Bound::{Excluded, Included, Unbounded};
        let from = match after {
            Some(after) if after >= prefix => Excluded(after.as_bytes()),
            _ => Included(prefix.as_bytes()),
        };
        self.entries
            .range::<[u8], _>((from, Unbounded))
            .take_while(move |e| e.key_bytes().starts_with(prefix.as_bytes()))
            .map(|e| (e.key(), e.value()))
    }

    /// All entries, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.entries.iter().map(|e| (e.key(), e.value()))
    }

    /// Applies one write: a value upserts, `None` deletes.
    pub fn apply(&mut self, key: &str, value: Option<&[u8]>) {
        match value {
            Some(value) => {
                self.entries.replace(Entry::new(key, value));
            }
            None => {
                self.entries.remove(key.as_bytes());
            }
        }
    }
}

/// A store on disk: its keyspace, and the writes not flushed yet (the open interval's, or a
/// restore's batch), which reads see first.
pub struct DiskStore {
    keyspace: fjall::Keyspace,
    pending: BTreeMap<String, Option<Box<[u8]>>>,
}

/// One store of a task.
pub enum Store {
    /// In memory.
    Memory(KeyValueStore),
    /// On disk (`streams.state_dir`).
    Disk(DiskStore),
}

/// An entry read from a store: borrowed from memory, or read from disk.
pub type ReadEntry<'a> = (Cow<'a, str>, Cow<'a, [u8]>);

impl Store {
    /// The value under `key`.
    ///
    /// # Errors
    /// The disk cannot be read.
    pub fn get(&self, key: &str) -> Result<Option<Cow<'_, [u8]>>, DiskError> {
        match self {
            Self::Memory(store) => Ok(store.get(key).map(Cow::Borrowed)),
            Self::Disk(store) => match store.pending.get(key) {
                Some(value) => Ok(value.as_deref().map(Cow::Borrowed)),
                None => Ok(store.keyspace.get(key)?.map(|v| Cow::Owned(v.to_vec()))),
            },
        }
    }

    /// The entries whose keys start with `prefix` and sort after `after` (all of them when
    /// `None`), in key order.
    pub fn range_prefix_after<'a>(
        &'a self,
        prefix: &'a str,
        after: Option<&'a str>,
    ) -> Box<dyn Iterator<Item = Result<ReadEntry<'a>, DiskError>> + 'a> {
        match self {
            Self::Memory(store) => Box::new(
                store
                    .range_prefix_after(prefix, after)
                    .map(|(k, v)| Ok((Cow::Borrowed(k), Cow::Borrowed(v)))),
            ),
            Self::Disk(store) => Box::new(Merged::new(store, prefix, after)),
        }
    }

    /// Applies one write: a value upserts, `None` deletes (on disk: to the pending writes).
    pub fn apply(&mut self, key: &str, value: Option<&[u8]>) {
        match self {
            Self::Memory(store) => store.apply(key, value),
            Self::Disk(store) => {
                store.pending.insert(key.to_owned(), value.map(Box::from));
            }
        }
    }

    /// Number of entries (on disk: fjall's estimate).
    pub fn len(&self) -> usize {
        match self {
            Self::Memory(store) => store.len(),
            Self::Disk(store) => store.keyspace.approximate_len(),
        }
    }

    /// Whether the store is empty (on disk: by fjall's estimate).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The in-memory store, if this is one.
    pub fn memory(&self) -> Option<&KeyValueStore> {
        match self {
            Self::Memory(store) => Some(store),
            Self::Disk(_) => None,
        }
    }
}

/// A disk store's entries from fjall, in key order.
type DiskEntries = Box<dyn Iterator<Item = Result<(Vec<u8>, Vec<u8>), DiskError>>>;

/// A disk store's entries under a prefix: its pending writes merged over fjall's (a pending
/// write wins over the disk's value of the same key, and a pending deletion hides it).
struct Merged<'a> {
    pending: Peekable<std::collections::btree_map::Range<'a, String, Option<Box<[u8]>>>>,
    disk: Peekable<DiskEntries>,
    prefix: &'a str,
}

impl<'a> Merged<'a> {
    fn new(store: &'a DiskStore, prefix: &'a str, after: Option<&'a str>) -> Self {
        use std::ops::Bound::{Excluded, Included, Unbounded};
        let after = after.filter(|after| *after >= prefix);
        let pending = match after {
            Some(after) => store.pending.range::<str, _>((Excluded(after), Unbounded)),
            None => store.pending.range::<str, _>((Included(prefix), Unbounded)),
        };
        let from: Vec<u8> = after.unwrap_or(prefix).as_bytes().to_vec();
        let skip_first = after.is_some();
        let disk: DiskEntries = Box::new(
            store
                .keyspace
                .range(from.clone()..)
                .map(|guard| {
                    let (key, value) = guard.into_inner()?;
                    Ok((key.to_vec(), value.to_vec()))
                })
                .skip_while(move |entry| {
                    skip_first && entry.as_ref().is_ok_and(|(key, _)| *key == from)
                }),
        );
        Self {
            pending: pending.peekable(),
            disk: disk.peekable(),
            prefix,
        }
    }
}

impl<'a> Iterator for Merged<'a> {
    type Item = Result<ReadEntry<'a>, DiskError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let prefix = self.prefix.as_bytes();
            let pending = self
                .pending
                .peek()
                .filter(|(key, _)| key.as_bytes().starts_with(prefix))
                .map(|(key, _)| key.as_bytes());
            let disk = match self.disk.peek() {
                Some(Ok((key, _))) if key.starts_with(prefix) => Some(key.as_slice()),
                Some(Ok(_)) | None => None,
                Some(Err(_)) => {
                    let error = self.disk.next().expect("peeked").expect_err("an error");
                    return Some(Err(error));
                }
            };
            let (take_pending, shadowed) = match (pending, disk) {
                (None, None) => return None,
                (Some(_), None) => (true, false),
                (None, Some(_)) => (false, false),
                (Some(p), Some(d)) => (p <= d, p == d),
            };
            if shadowed {
                // The pending write replaces the disk's value.
                self.disk.next();
            }
            if take_pending {
                let (key, value) = self.pending.next().expect("peeked");
                match value {
                    Some(value) => {
                        return Some(Ok((Cow::Borrowed(key.as_str()), Cow::Borrowed(value))));
                    }
                    // Deleted since the last flush.
                    None => continue,
                }
            }
            let (key, value) = self
                .disk
                .next()
                .expect("peeked")
                .expect("BUG: an error was returned above");
            let key = String::from_utf8(key)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
            return Some(Ok((Cow::Owned(key), Cow::Owned(value))));
        }
    }
}

/// A processor's stores, by name; on disk, the instance's database and the task they belong to.
#[derive(Default)]
pub struct Stores {
    stores: BTreeMap<String, Store>,
    disk: Option<(StateDb, i32)>,
}

impl Stores {
    /// Empty stores in memory with these names.
    pub fn new<'a>(names: impl IntoIterator<Item = &'a String>) -> Self {
        Self {
            stores: names
                .into_iter()
                .map(|name| (name.clone(), Store::Memory(KeyValueStore::default())))
                .collect(),
            disk: None,
        }
    }

    /// The stores `names`, those `on_disk` says are persistent in `db` as task `task`'s (their
    /// content is what was flushed before), the others empty in memory.
    ///
    /// # Errors
    /// The database cannot be read.
    pub fn open<'a>(
        names: impl IntoIterator<Item = &'a String>,
        on_disk: impl Fn(&str) -> bool,
        db: &StateDb,
        task: i32,
    ) -> Result<Self, DiskError> {
        let mut stores = BTreeMap::new();
        for name in names {
            let store = if on_disk(name) {
                Store::Disk(DiskStore {
                    keyspace: db.keyspace(task, name)?,
                    pending: BTreeMap::new(),
                })
            } else {
                Store::Memory(KeyValueStore::default())
            };
            stores.insert(name.clone(), store);
        }
        Ok(Self {
            stores,
            disk: Some((db.clone(), task)),
        })
    }

    /// The store `name`, if declared.
    pub fn get(&self, name: &str) -> Option<&Store> {
        self.stores.get(name)
    }

    pub(crate) fn get_mut(&mut self, name: &str) -> Option<&mut Store> {
        self.stores.get_mut(name)
    }

    /// Entry counts per store (for metrics and tests; on disk, fjall's estimates).
    pub fn sizes(&self) -> impl Iterator<Item = (&str, usize)> {
        self.stores
            .iter()
            .map(|(name, store)| (name.as_str(), store.len()))
    }

    /// The stores on disk, by name.
    pub fn on_disk(&self) -> impl Iterator<Item = &str> {
        self.stores
            .iter()
            .filter(|(_, store)| matches!(store, Store::Disk(_)))
            .map(|(name, _)| name.as_str())
    }

    /// Writes not flushed yet, over every disk store.
    pub fn pending(&self) -> usize {
        self.stores
            .values()
            .map(|store| match store {
                Store::Disk(store) => store.pending.len(),
                Store::Memory(_) => 0,
            })
            .sum()
    }

    /// The changelog offset up to which `store` is on disk (`0` for a store in memory).
    ///
    /// # Errors
    /// The database cannot be read.
    pub fn checkpoint(&self, store: &str) -> Result<i64, DiskError> {
        match (&self.disk, self.stores.get(store)) {
            (Some((db, task)), Some(Store::Disk(_))) => db.checkpoint(*task, store),
            _ => Ok(0),
        }
    }

    /// Writes every disk store's pending writes and the checkpoints `offsets` (store → next
    /// changelog offset) in one atomic batch: after the commit that carried their changelog
    /// records succeeded, or a restore's batch.
    ///
    /// # Errors
    /// The database cannot be written: the pending writes are lost, and the task's state with
    /// them (the runner stops, and a restart replays the changelog from the last checkpoint).
    pub fn flush(&mut self, offsets: &BTreeMap<String, i64>) -> Result<(), DiskError> {
        let Some((db, task)) = &self.disk else {
            return Ok(());
        };
        let writes: Vec<_> = self
            .stores
            .values_mut()
            .filter_map(|store| match store {
                Store::Disk(store) if !store.pending.is_empty() => {
                    Some((store.keyspace.clone(), std::mem::take(&mut store.pending)))
                }
                _ => None,
            })
            .collect();
        if writes.is_empty() && offsets.is_empty() {
            return Ok(());
        }
        db.commit(*task, writes, offsets)
    }
}

/// One buffered store write of a record being processed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreWrite {
    /// Store name.
    pub store: String,
    /// Key.
    pub key: String,
    /// New value; `None` deletes.
    pub value: Option<Vec<u8>>,
}

/// The store key of a document id: its canonical Extended JSON text, so ids of different BSON
/// types never collide (`"5"` and `5` differ).
pub fn table_key(id: &Bson) -> String {
    crate::cdc::extjson::canonical_value_text(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_id_table_key_is_its_canonical_extended_json() {
        let id = bson::Bson::ObjectId(bson::oid::ObjectId::new());

        assert_eq!(
            table_key(&id),
            id.clone().into_canonical_extjson().to_string()
        );
    }

    fn scan(store: &Store, prefix: &str, after: Option<&str>) -> Vec<(String, Vec<u8>)> {
        store
            .range_prefix_after(prefix, after)
            .map(|entry| entry.map(|(k, v)| (k.into_owned(), v.into_owned())))
            .collect::<Result<_, _>>()
            .expect("reads")
    }

    fn owned(entries: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        entries
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn a_disk_store_reads_its_pending_writes_first_and_only_a_flush_puts_them_on_disk() {
        let dir = tempfile::tempdir().expect("a directory");
        let names = ["docs".to_owned()];
        let offsets = BTreeMap::from([("docs".to_owned(), 7)]);
        {
            let db = StateDb::open(dir.path()).expect("opens");
            let mut stores = Stores::open(&names, |_| true, &db, 3).expect("opens");
            let store = stores.get_mut("docs").expect("declared");
            store.apply("a", Some(b"1"));
            store.apply("b", Some(b"2"));
            assert_eq!(store.get("a").expect("reads").as_deref(), Some(&b"1"[..]));
            stores.flush(&offsets).expect("flushed");
            let store = stores.get_mut("docs").expect("declared");
            // A later interval's writes, never flushed (its commit failed, or the process died).
            store.apply("a", None);
            store.apply("c", Some(b"3"));
            assert_eq!(store.get("a").expect("reads"), None);
            assert_eq!(stores.pending(), 2);
        }
        let db = StateDb::open(dir.path()).expect("reopens");
        let stores = Stores::open(&names, |_| true, &db, 3).expect("opens");
        let store = stores.get("docs").expect("declared");
        assert_eq!(scan(store, "", None), owned(&[("a", "1"), ("b", "2")]));
        assert_eq!(stores.checkpoint("docs").expect("reads"), 7);
        // Another task of the same instance has its own keyspaces and checkpoints.
        let other = Stores::open(&names, |_| true, &db, 4).expect("opens");
        assert!(scan(other.get("docs").expect("declared"), "", None).is_empty());
        assert_eq!(other.checkpoint("docs").expect("reads"), 0);
    }

    #[test]
    fn prefix_scans_merge_pending_writes_over_the_disk_in_key_order() {
        let dir = tempfile::tempdir().expect("a directory");
        let db = StateDb::open(dir.path()).expect("opens");
        let names = ["index".to_owned()];
        let mut stores = Stores::open(&names, |_| true, &db, 0).expect("opens");
        let store = stores.get_mut("index").expect("declared");
        for key in ["u1|a", "u1|c", "u1|e", "u2|a"] {
            store.apply(key, Some(key.as_bytes()));
        }
        stores.flush(&BTreeMap::new()).expect("flushed");
        let store = stores.get_mut("index").expect("declared");
        store.apply("u1|b", Some(b"new"));
        store.apply("u1|c", Some(b"changed"));
        store.apply("u1|e", None);
        store.apply("u0|z", Some(b"before the prefix"));

        let store = stores.get("index").expect("declared");
        assert_eq!(
            scan(store, "u1|", None),
            owned(&[("u1|a", "u1|a"), ("u1|b", "new"), ("u1|c", "changed")])
        );
        assert_eq!(
            scan(store, "u1|", Some("u1|a")),
            owned(&[("u1|b", "new"), ("u1|c", "changed")])
        );
        assert_eq!(scan(store, "u2|", None), owned(&[("u2|a", "u2|a")]));
        assert!(scan(store, "u3|", None).is_empty());
    }

    #[test]
    fn wiping_a_task_forgets_its_stores_and_checkpoints() {
        let dir = tempfile::tempdir().expect("a directory");
        let db = StateDb::open(dir.path()).expect("opens");
        let names = ["docs".to_owned()];
        let mut stores = Stores::open(&names, |_| true, &db, 1).expect("opens");
        stores
            .get_mut("docs")
            .expect("declared")
            .apply("a", Some(b"1"));
        stores
            .flush(&BTreeMap::from([("docs".to_owned(), 5)]))
            .expect("flushed");
        drop(stores);

        db.wipe(1, &["docs"]).expect("wiped");

        let stores = Stores::open(&names, |_| true, &db, 1).expect("opens");
        assert!(scan(stores.get("docs").expect("declared"), "", None).is_empty());
        assert_eq!(stores.checkpoint("docs").expect("reads"), 0);
    }
}
