//! The runner consumer's rebalance callbacks: commit before partitions are revoked, note the
//! tasks to restore after an assignment.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};

use super::commit::commit;
use super::shared::Shared;
use crate::streams::kafka::{Client, Guarantee, Health, Rebalancing};
use crate::streams::topology::Topology;
use crate::sync::lock;

/// The runner consumer's callbacks.
pub(super) struct Callbacks {
    pub(super) topology: Topology,
    /// The input topics, prefixed.
    pub(super) inputs: Vec<String>,
    pub(super) shared: Arc<Mutex<Shared>>,
    pub(super) guarantee: Guarantee,
    pub(super) health: Arc<Health>,
}

/// The runner's consumer.
pub(super) type RunnerConsumer = BaseConsumer<Client<Callbacks>>;

impl Rebalancing for Callbacks {
    fn before(&self, consumer: &RunnerConsumer, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(_) = rebalance {
            let mut shared = lock(&self.shared);
            shared.rebalanced = true;
            // A failure dooms the interval; the loop gives it up after the callbacks.
            if let Err(error) = commit(&mut shared, consumer, self.guarantee, &self.health.outages)
            {
                tracing::warn!(error = %format!("{error:#}"), "Commit before revocation failed; work since the last commit will be redone.");
            }
        }
    }

    fn after(&self, consumer: &RunnerConsumer, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(assigned) = rebalance else {
            return;
        };
        let mut shared = lock(&self.shared);
        shared.rebalanced = true;
        if self.topology.single_task
            && let Err(error) =
                covers_every_input(consumer, assigned, &self.topology.name, &self.inputs)
        {
            shared.fatal.get_or_insert(error);
            return;
        }
        let partitions: BTreeSet<i32> = assigned
            .elements()
            .iter()
            .map(|e| self.topology.task_of(e.partition()))
            .collect();
        // Eager protocol: everything was revoked and committed; a partition we keep was
        // processed by nobody else in between, so its worker and stores stay valid.
        // Dropping a worker waits for it; it has no jobs left after the revoke's drain.
        shared.workers.retain(|p, _| partitions.contains(p));
        let missing: Vec<i32> = partitions
            .iter()
            .filter(|p| !shared.workers.contains_key(p))
            .copied()
            .collect();
        shared.to_restore.extend(missing);
        let mut status = lock(&self.health.status);
        status.assigned.clear();
        for element in assigned.elements() {
            status
                .assigned
                .entry(element.topic().to_owned())
                .or_default()
                .insert(element.partition(), None);
        }
        drop(status);
        tracing::info!(partitions = ?partitions, "Partitions assigned.");
    }
}

/// A single-task processor needs every partition of every input: a second instance in the group
/// would split them and each would see half the tables.
fn covers_every_input<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    assigned: &TopicPartitionList,
    name: &str,
    inputs: &[String],
) -> anyhow::Result<()> {
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(30))
        .context("fetching metadata")?;
    for topic in metadata
        .topics()
        .iter()
        .filter(|t| inputs.iter().any(|i| i == t.name()))
    {
        let have = assigned
            .elements()
            .iter()
            .filter(|e| e.topic() == topic.name())
            .count();
        let want = topic.partitions().len();
        anyhow::ensure!(
            have == want,
            "{name} runs as a single task and needs every input partition, but was assigned {have} of the {want} of {}: another instance is in its group (run one replica)",
            topic.name()
        );
    }
    Ok(())
}
