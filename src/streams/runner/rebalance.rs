//! The runner consumer's rebalance callbacks: commit before partitions are revoked, note the
//! tasks to restore after an assignment.

use rdkafka::consumer::{BaseConsumer, Rebalance};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use super::commit::commit;
use super::shared::Shared;
use crate::streams::kafka::{Client, Guarantee, Health, Rebalancing};
use crate::sync::lock;

/// The runner consumer's callbacks.
pub(super) struct Callbacks {
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

    fn after(&self, _consumer: &RunnerConsumer, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(assigned) = rebalance else {
            return;
        };
        let mut shared = lock(&self.shared);
        shared.rebalanced = true;
        let partitions: BTreeSet<i32> = assigned.elements().iter().map(|e| e.partition()).collect();
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
