//! Restoring the tasks of newly assigned (or rewound) partitions from their stores' changelogs
//! before they process anything, and what the loop does after the consumer's callbacks ran.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use rdkafka::message::Message as _;

use super::instance::Runner;
use super::worker::Worker;
use crate::streams::kafka::ReadError;
use crate::streams::metrics as names;
use crate::streams::processor::Processor;
use crate::streams::task::Task;
use crate::sync::lock;

impl<P: Processor + 'static, F: Fn() -> P> Runner<P, F> {
    /// Handles what the rebalance callbacks left: a doomed interval (given up) and partitions
    /// to restore.
    pub(super) fn after_callbacks(&mut self) -> anyhow::Result<()> {
        self.take_fatal()?;
        if std::mem::take(&mut lock(&self.shared).rebalanced) {
            self.gate.clear(&self.consumer);
        }
        let doomed = lock(&self.shared).doomed();
        if let Some(cause) = doomed {
            return self.recover(cause, &"the commit before a rebalance failed");
        }
        let to_restore = std::mem::take(&mut lock(&self.shared).to_restore);
        if to_restore.is_empty() {
            return Ok(());
        }
        self.kafka.health().ready.store(false, Ordering::SeqCst);
        let started = Instant::now();
        let (tasks, applied) = self.restore(&to_restore)?;
        if self.kafka.outages().longest().is_some() {
            // Rewinds repeat while an outage lasts; the outage itself is logged once.
            tracing::debug!(partitions = ?to_restore, records = applied, elapsed = ?started.elapsed(), "Stores restored.");
        } else {
            tracing::info!(partitions = ?to_restore, records = applied, elapsed = ?started.elapsed(), "Stores restored.");
        }
        for (partition, task) in tasks {
            let worker =
                Worker::start(partition, task, Arc::clone(&self.shop), self.events.clone())?;
            lock(&self.shared).workers.insert(partition, worker);
        }
        self.kafka.health().ready.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Fresh tasks of `partitions` with every store's changelog partition replayed into them
    /// (read_committed, to the end): a store in memory from the beginning, a store on disk from
    /// its checkpoint (only what the last flush before the restart or rewind did not reach),
    /// flushed to disk every [`RESTORE_BATCH`] writes and at the end. One consumer reads them,
    /// store by store, all partitions of a store at once: librdkafka fetches them in parallel,
    /// so a restart with many partitions waits about as long as for its largest one. Each
    /// attempt (a broker outage starts it again) restores into fresh tasks: broken-off ones hold
    /// part of the state. A checkpoint beyond its changelog's end wipes that task's disk stores
    /// and restores them from the beginning. Returns the tasks and the number of records applied.
    fn restore(
        &self,
        partitions: &std::collections::BTreeSet<i32>,
    ) -> anyhow::Result<(BTreeMap<i32, Task<P>>, u64)> {
        match self.restore_from_checkpoints(partitions) {
            Err(error) => match error.downcast_ref::<ReadError>() {
                Some(ReadError::Ahead { partition, .. }) => {
                    let task = *partition;
                    tracing::warn!(task, error = %format!("{error:#}"), "The task's state on disk is ahead of its changelog; wiping it and restoring it whole.");
                    if let Some(db) = &self.state {
                        let stores: Vec<&str> = self.disk_stores().collect();
                        db.wipe(task, &stores)?;
                    }
                    self.restore_from_checkpoints(partitions)
                }
                _ => Err(error),
            },
            restored => restored,
        }
    }

    fn restore_from_checkpoints(
        &self,
        partitions: &std::collections::BTreeSet<i32>,
    ) -> anyhow::Result<(BTreeMap<i32, Task<P>>, u64)> {
        let topology = &self.shop.topology;
        let stores: BTreeMap<String, &String> = topology
            .stores
            .iter()
            .map(|store| (self.kafka.topic(&topology.changelog_topic(store)), store))
            .collect();
        let mut changelogs: Vec<(String, i32, i64)> = Vec::new();
        for (topic, store) in &stores {
            for &partition in partitions {
                let from = match &self.state {
                    Some(db) if self.on_disk(store) => self.checkpoint(db, partition, store)?,
                    _ => 0,
                };
                changelogs.push((topic.clone(), partition, from));
            }
        }
        let group = self
            .kafka
            .group(&format!("{}-restore", topology.group_id()));
        // The next changelog offset each (task, store) has read to, for its checkpoint.
        type Read = BTreeMap<(i32, String), i64>;
        let (state, applied) = self.kafka.read_whole(
            &format!("restoring the stores of partitions {partitions:?}"),
            &group,
            &changelogs,
            || -> anyhow::Result<(BTreeMap<i32, Task<P>>, Read)> {
                let tasks = partitions
                    .iter()
                    .map(|p| Ok((*p, self.new_task(*p)?)))
                    .collect::<anyhow::Result<_>>()?;
                Ok((tasks, Read::new()))
            },
            |state, message| {
                let (tasks, read) = state.as_mut().map_err(|e| format!("{e:#}"))?;
                let partition = message.partition();
                let task = tasks
                    .get_mut(&partition)
                    .ok_or_else(|| format!("BUG: no task for partition {partition}"))?;
                let store = stores
                    .get(message.topic())
                    .ok_or_else(|| format!("BUG: {} is no changelog", message.topic()))?;
                let key = String::from_utf8_lossy(message.key().unwrap_or_default());
                task.restore(store, &key, message.payload())?;
                read.insert((partition, (*store).clone()), message.offset() + 1);
                if task.pending_writes() >= RESTORE_BATCH {
                    task.flush(|store| read.get(&(partition, store.to_owned())).copied())?;
                }
                Ok(())
            },
        )?;
        let (mut tasks, read) = state?;
        for (partition, task) in &mut tasks {
            task.flush(|store| read.get(&(*partition, store.to_owned())).copied())?;
        }
        ::metrics::counter!(names::RESTORED).increment(applied);
        Ok((tasks, applied))
    }

    /// Whether `store` of this runner's topology lives on disk.
    pub(super) fn on_disk(&self, store: &str) -> bool {
        self.state.is_some()
            && self
                .shop
                .topology
                .on_disk(store, true, &self.kafka.settings().stores)
    }

    /// Where `store` of `task` on disk is restored from: its checkpoint, or `0` after wiping it
    /// and its indexes when one of them has no checkpoint of its own (an index the store did
    /// not have when it was written: replaying the tail would not list the entries already on
    /// disk). An index whose listing changes takes a new name, and so is rebuilt the same way.
    fn checkpoint(
        &self,
        db: &crate::streams::disk::StateDb,
        task: i32,
        store: &str,
    ) -> anyhow::Result<i64> {
        let from = db.checkpoint(task, store)?;
        let indexes: Vec<&str> = self
            .shop
            .topology
            .indexes_of(store)
            .map(|i| i.name.as_str())
            .collect();
        let mut missing = Vec::new();
        for index in &indexes {
            if db.checkpoint(task, index)? == 0 {
                missing.push(*index);
            }
        }
        if from == 0 || missing.is_empty() {
            return Ok(from);
        }
        tracing::info!(task, store, indexes = ?missing, "New indexes of a store on disk: rebuilding it from its changelog.");
        let mut wiped = vec![store];
        wiped.extend(indexes);
        db.wipe(task, &wiped)?;
        Ok(0)
    }

    /// The topology's stores (and indexes) that live on disk.
    pub(super) fn disk_stores(&self) -> impl Iterator<Item = &str> {
        self.shop
            .topology
            .task_stores()
            .map(String::as_str)
            .filter(|store| self.on_disk(store))
    }

    /// A task with its stores (on disk: as last flushed; in memory: empty), reading the global
    /// tables if there are any.
    pub(super) fn new_task(&self, partition: i32) -> anyhow::Result<Task<P>> {
        let mut task = Task::new((self.factory)())
            .with_application_id(self.kafka.settings().application_id.clone());
        if let Some(db) = &self.state {
            task = task.with_state(db, partition, |store| self.on_disk(store))?;
        }
        Ok(match &self.global {
            Some((_, globals)) => task.with_globals(Arc::clone(globals)),
            None => task,
        })
    }
}

/// How many writes a restore holds before it flushes them to disk with their checkpoint: a
/// store restored from the beginning (its first start) takes memory in proportion to this, not
/// to its size.
const RESTORE_BATCH: usize = 10_000;
