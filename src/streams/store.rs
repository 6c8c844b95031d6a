//! Key-value state stores, in memory, each backed by a compacted changelog topic the runtime
//! writes and restores from.
//!
//! Keys are strings (document ids as canonical Extended JSON text, see [`table_key`]); values are
//! bytes (JSON, or documents as BSON, see [`super::stored`]). The runtime applies a record's
//! writes only after the processor succeeded, so a poison record leaves no trace in any store.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};

use bson::Bson;

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

/// A processor's stores, by name.
#[derive(Debug, Default, Clone)]
pub struct Stores {
    stores: BTreeMap<String, KeyValueStore>,
}

impl Stores {
    /// Empty stores with these names.
    pub fn new<'a>(names: impl IntoIterator<Item = &'a String>) -> Self {
        Self {
            stores: names
                .into_iter()
                .map(|name| (name.clone(), KeyValueStore::default()))
                .collect(),
        }
    }

    /// The store `name`, if declared.
    pub fn get(&self, name: &str) -> Option<&KeyValueStore> {
        self.stores.get(name)
    }

    pub(crate) fn get_mut(&mut self, name: &str) -> Option<&mut KeyValueStore> {
        self.stores.get_mut(name)
    }

    /// Entry counts per store (for metrics and tests).
    pub fn sizes(&self) -> impl Iterator<Item = (&str, usize)> {
        self.stores
            .iter()
            .map(|(name, store)| (name.as_str(), store.len()))
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
    id.clone().into_canonical_extjson().to_string()
}
