//! Restoring the tasks of newly assigned (or rewound) partitions from their stores' changelogs
//! before they process anything, and what the loop does after the consumer's callbacks ran.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use rdkafka::message::Message as _;

use super::instance::Runner;
use super::worker::Worker;
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
    /// (read_committed, from the beginning to the end), through one consumer, store by store,
    /// all partitions of a store at once: librdkafka fetches them in parallel, so a restart with
    /// many partitions waits about as long as for its largest one. Each attempt (a broker outage
    /// starts it again) restores into fresh tasks: broken-off ones hold part of the state.
    /// Returns the tasks and the number of records applied.
    fn restore(
        &self,
        partitions: &std::collections::BTreeSet<i32>,
    ) -> anyhow::Result<(BTreeMap<i32, Task<P>>, u64)> {
        let topology = &self.shop.topology;
        let stores: BTreeMap<String, &String> = topology
            .stores
            .iter()
            .map(|store| (self.kafka.topic(&topology.changelog_topic(store)), store))
            .collect();
        let changelogs: Vec<(String, i32)> = stores
            .keys()
            .flat_map(|topic| partitions.iter().map(|p| (topic.clone(), *p)))
            .collect();
        let group = self
            .kafka
            .group(&format!("{}-restore", topology.group_id()));
        let (tasks, applied) = self.kafka.read_whole(
            &format!("restoring the stores of partitions {partitions:?}"),
            &group,
            &changelogs,
            || -> BTreeMap<i32, Task<P>> {
                partitions.iter().map(|p| (*p, self.new_task())).collect()
            },
            |tasks, message| {
                let task = tasks
                    .get_mut(&message.partition())
                    .ok_or_else(|| format!("BUG: no task for partition {}", message.partition()))?;
                let store = stores
                    .get(message.topic())
                    .ok_or_else(|| format!("BUG: {} is no changelog", message.topic()))?;
                let key = String::from_utf8_lossy(message.key().unwrap_or_default());
                Ok(task.restore(store, &key, message.payload())?)
            },
        )?;
        ::metrics::counter!(names::RESTORED).increment(applied);
        Ok((tasks, applied))
    }

    /// A task with empty stores, reading the global tables if there are any.
    pub(super) fn new_task(&self) -> Task<P> {
        let task = Task::new((self.factory)())
            .with_application_id(self.kafka.settings().application_id.clone());
        match &self.global {
            Some((_, globals)) => task.with_globals(Arc::clone(globals)),
            None => task,
        }
    }
}
