//! Key-value state stores, in memory, each backed by a compacted changelog topic the runtime
//! writes and restores from.
//!
//! Keys are strings (document ids as canonical Extended JSON text, see [`table_key`]); values are
//! bytes (JSON, or canonical Extended JSON for documents). The runtime applies a record's writes
//! only after the processor succeeded, so a poison record leaves no trace in any store.

use std::collections::BTreeMap;

use bson::Bson;

/// One in-memory table.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KeyValueStore {
    // Ordered, so secondary indexes can be read by key prefix.
    entries: BTreeMap<String, Vec<u8>>,
}

impl KeyValueStore {
    /// The value under `key`.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.entries.get(key).map(Vec::as_slice)
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
            Some(after) if after >= prefix => Excluded(after),
            _ => Included(prefix),
        };
        self.entries
            .range::<str, _>((from, Unbounded))
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    /// All entries, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    /// Applies one write: a value upserts, `None` deletes.
    pub fn apply(&mut self, key: String, value: Option<Vec<u8>>) {
        match value {
            Some(value) => {
                self.entries.insert(key, value);
            }
            None => {
                self.entries.remove(&key);
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
