//! Persistent stores: a task's stores kept on disk in [fjall](https://docs.rs/fjall) (a pure-Rust
//! LSM tree; chosen over RocksDB by measurement, `docs/streams.md`, "Persistent stores"), for
//! state larger than memory and restarts that replay only the changelog's tail.
//!
//! One fjall database per instance ([`StateDb`], `streams.state_dir`), a keyspace per task and
//! store (`p<task>.<store>`), and one of checkpoints: per task and store, the changelog offset up
//! to which the store on disk holds the changelog (`p<task>.<store>` → next offset to read).
//!
//! **Never ahead of the committed changelog.** A record's writes go to the store's pending
//! writes, in memory, which reads see first; they reach the disk only once the commit that
//! carries their changelog records succeeded, in one atomic fjall batch with the checkpoint
//! (`Stores::flush`). A crash or a failed commit leaves the disk at the last flushed commit,
//! consistent with its checkpoint, and the restart (or the rewind) replays the changelog from
//! there: what the lost commits wrote, and nothing twice. Kafka Streams, under exactly-once,
//! instead wipes a task's state after an unclean shutdown and restores it whole. A checkpoint
//! beyond the changelog's end (a topic recreated) wipes the task's stores and restores them.

use std::collections::BTreeMap;
use std::path::Path;

use fjall::{Database, Keyspace, KeyspaceCreateOptions};

/// Why persistent state could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("the state directory: {0}")]
pub struct DiskError(#[from] fjall::Error);

/// The instance's fjall database (cheap to clone: a handle).
#[derive(Clone)]
pub struct StateDb {
    db: Database,
    checkpoints: Keyspace,
}

/// A keyspace's memtable is written to disk beyond this (fjall's default is 64 MiB): a task
/// holds a keyspace per store and index, so the state's memory stays bounded by their number
/// times this, whatever its size on disk.
const MEMTABLE: u64 = 8 << 20;
/// Data blocks of 16 KiB rather than fjall's 4 KiB: a quarter of the block index it keeps in
/// memory per segment (measured with 10,000,000 documents, `docs/streams.md`).
const BLOCK: u32 = 16 << 10;
/// fjall's block cache (its default).
const CACHE: u64 = 32 << 20;
/// The journals fjall keeps before it flushes the memtables that pin the oldest (its default is
/// 512 MiB, and its least; a start replays what they hold: up to seconds at that size).
const JOURNALS: u64 = 64 << 20;

impl StateDb {
    /// Opens (or creates) the database in `dir`.
    ///
    /// # Errors
    /// The directory cannot be created, or another process holds the database.
    pub fn open(dir: &Path) -> Result<Self, DiskError> {
        std::fs::create_dir_all(dir).map_err(fjall::Error::from)?;
        let db = Database::builder(dir)
            .cache_size(CACHE)
            .max_journaling_size(JOURNALS)
            .open()?;
        let checkpoints = db.keyspace("checkpoints", KeyspaceCreateOptions::default)?;
        Ok(Self { db, checkpoints })
    }

    fn name(task: i32, store: &str) -> String {
        format!("p{task}.{store}")
    }

    /// The keyspace of `store` of the task `task`.
    pub(crate) fn keyspace(&self, task: i32, store: &str) -> Result<Keyspace, DiskError> {
        Ok(self.db.keyspace(&Self::name(task, store), || {
            KeyspaceCreateOptions::default()
                .max_memtable_size(MEMTABLE)
                .data_block_size_policy(fjall::config::BlockSizePolicy::all(BLOCK))
        })?)
    }

    /// The changelog offset up to which `store` of `task` is on disk (`0`: nothing yet).
    ///
    /// # Errors
    /// The database cannot be read.
    pub fn checkpoint(&self, task: i32, store: &str) -> Result<i64, DiskError> {
        let value = self.checkpoints.get(Self::name(task, store))?;
        Ok(value
            .and_then(|v| <[u8; 8]>::try_from(&*v).ok())
            .map_or(0, i64::from_be_bytes))
    }

    /// Empties the task's stores and their checkpoints (their state cannot be trusted).
    ///
    /// # Errors
    /// The database cannot be written.
    pub fn wipe(&self, task: i32, stores: &[&str]) -> Result<(), DiskError> {
        for store in stores {
            let name = Self::name(task, store);
            if self.db.keyspace_exists(&name) {
                let keyspace = self.keyspace(task, store)?;
                self.db.delete_keyspace(keyspace)?;
            }
            self.checkpoints.remove(name)?;
        }
        Ok(())
    }

    /// Writes `writes` (per store: key → value, `None` deleting) and the checkpoints `offsets`
    /// (per store) of `task` in one atomic batch.
    ///
    /// # Errors
    /// The database cannot be written.
    pub(crate) fn commit(
        &self,
        task: i32,
        writes: impl IntoIterator<Item = (Keyspace, BTreeMap<String, Option<Box<[u8]>>>)>,
        offsets: &BTreeMap<String, i64>,
    ) -> Result<(), DiskError> {
        let mut batch = self.db.batch();
        for (keyspace, entries) in writes {
            for (key, value) in entries {
                match value {
                    Some(value) => batch.insert(&keyspace, key, &*value),
                    None => batch.remove(&keyspace, key),
                }
            }
        }
        for (store, next) in offsets {
            batch.insert(
                &self.checkpoints,
                Self::name(task, store),
                next.to_be_bytes().as_slice(),
            );
        }
        batch.commit()?;
        Ok(())
    }

    /// Hands what was committed to the operating system (on shutdown: a restart finds it even if
    /// the process is killed right after).
    ///
    /// # Errors
    /// The journal cannot be written.
    pub fn persist(&self) -> Result<(), DiskError> {
        Ok(self.db.persist(fjall::PersistMode::SyncAll)?)
    }
}
