//! Purging repartition topics, as Kafka Streams does (`repartition.purge.interval.ms`): their
//! records matter only until the group has committed past them, so every 30 s the runner asks
//! the broker to delete what lies before its last committed offsets (`DeleteRecords`). The topics
//! keep no retention limit of their own (`topics.yaml`), so a record is never lost to time while
//! a processor is down, and they do not grow without end while it runs.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::{Offset, TopicPartitionList};

use crate::streams::kafka::{Kafka, Quiet};

/// How often a runner purges (Kafka Streams' default).
const INTERVAL: Duration = Duration::from_secs(30);

/// The purging of one runner's repartition topics.
pub(super) struct Purge {
    admin: AdminClient<Quiet>,
    /// The repartition topics, prefixed.
    topics: BTreeSet<String>,
    runtime: tokio::runtime::Handle,
    last: Instant,
}

impl Purge {
    /// `None` without repartition topics.
    pub(super) fn new(
        kafka: &Kafka,
        topics: BTreeSet<String>,
        runtime: tokio::runtime::Handle,
    ) -> anyhow::Result<Option<Self>> {
        if topics.is_empty() {
            return Ok(None);
        }
        let admin = kafka
            .settings()
            .client_config()
            // Its connection failures during a broker outage are the runner's to report.
            .create_with_context(Quiet)
            .context("creating the admin client that purges repartition topics")?;
        Ok(Some(Self {
            admin,
            topics,
            runtime,
            last: Instant::now(),
        }))
    }

    /// After a commit: every [`INTERVAL`], deletes the repartition topics' records before the
    /// `committed` offsets (input partition → next offset), in the background. A failure is only
    /// logged: the next round deletes as much.
    pub(super) fn after_commit(&mut self, committed: &BTreeMap<(String, i32), i64>) {
        if self.last.elapsed() < INTERVAL {
            return;
        }
        self.last = Instant::now();
        let mut before = TopicPartitionList::new();
        for ((topic, partition), next) in committed {
            if self.topics.contains(topic)
                && let Err(error) =
                    before.add_partition_offset(topic, *partition, Offset::Offset(*next))
            {
                tracing::debug!(error = %error, "Not purging a partition.");
            }
        }
        if before.count() == 0 {
            return;
        }
        let deleting = self.admin.delete_records(&before, &AdminOptions::new());
        self.runtime.spawn(async move {
            match deleting.await {
                Ok(result) => {
                    for element in result.elements() {
                        if let Err(error) = element.error() {
                            tracing::debug!(error = %error, topic = element.topic(), partition = element.partition(), "Purging a repartition partition failed.");
                        }
                    }
                }
                Err(error) => {
                    tracing::debug!(error = %error, "Purging the repartition topics failed.");
                }
            }
        });
    }
}
