//! Holding back records of `after_others` inputs (`Topology::stream_after_others`) until every
//! other assigned input partition has been read to the end it had when the record arrived.
//!
//! When the first such record arrives, the gate notes each other partition's end offset (high
//! watermark) and pauses the record's partition; records of it already fetched queue behind it.
//! Once every noted partition's position (or the group's committed offset, for a partition with
//! nothing new) reaches its end, the held records are released in order, after the workers have
//! finished everything handed to them, and the partitions resume. A rebalance or rewind clears
//! the gate: the held records were never handed out, so they are read again from the committed
//! offsets.

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::{Offset, TopicPartitionList};

use super::worker::Job;

const TIMEOUT: Duration = Duration::from_secs(10);
/// How often a long wait is logged.
const NAG: Duration = Duration::from_secs(30);

/// The gate of one runner.
pub(super) struct Gate {
    /// Prefixed topics whose records wait for the others.
    gated: BTreeSet<String>,
    held: VecDeque<Job>,
    /// (topic, partition, end offset) still to reach.
    targets: Vec<(String, i32, i64)>,
    paused: BTreeSet<(String, i32)>,
    since: Instant,
    nagged: Instant,
}

impl Gate {
    pub(super) fn new(gated: BTreeSet<String>) -> Self {
        Self {
            gated,
            held: VecDeque::new(),
            targets: Vec::new(),
            paused: BTreeSet::new(),
            since: Instant::now(),
            nagged: Instant::now(),
        }
    }

    /// Whether `job` must wait (it is then held); `false` hands it back untouched.
    /// `probe` answers the end offsets (see `Runner::probe`).
    pub(super) fn hold<C: ConsumerContext, Q: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        probe: &BaseConsumer<Q>,
        job: Job,
    ) -> anyhow::Result<Option<Job>> {
        if !self.gated.contains(&job.prefixed_topic) {
            return Ok(Some(job));
        }
        if self.held.is_empty() {
            self.targets = self.ends_of_others(consumer, probe)?;
            self.since = Instant::now();
            self.nagged = self.since;
        }
        let partition = (job.prefixed_topic.clone(), job.record.partition);
        if self.paused.insert(partition.clone()) {
            let mut list = TopicPartitionList::new();
            list.add_partition(&partition.0, partition.1);
            consumer.pause(&list).context("pausing a held partition")?;
        }
        self.held.push_back(job);
        Ok(None)
    }

    /// The held records, once the other partitions have caught up (empty otherwise).
    pub(super) fn release<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> anyhow::Result<Vec<Job>> {
        if self.held.is_empty() {
            return Ok(Vec::new());
        }
        let position = consumer.position().context("reading positions")?;
        self.targets.retain(|(topic, partition, end)| {
            !matches!(
                position.find_partition(topic, *partition).map(|e| e.offset()),
                Some(Offset::Offset(at)) if at >= *end
            )
        });
        if !self.targets.is_empty() {
            if self.nagged.elapsed() >= NAG {
                self.nagged = Instant::now();
                tracing::warn!(
                    waiting = ?self.since.elapsed(),
                    behind = ?self.targets,
                    "Records wait for the other inputs to catch up."
                );
            }
            return Ok(Vec::new());
        }
        self.resume(consumer);
        Ok(self.held.drain(..).collect())
    }

    /// Forgets the held records (they are read again from the committed offsets).
    pub(super) fn clear<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) {
        self.held.clear();
        self.targets.clear();
        self.resume(consumer);
    }

    fn resume<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) {
        let mut list = TopicPartitionList::new();
        for (topic, partition) in std::mem::take(&mut self.paused) {
            list.add_partition(&topic, partition);
        }
        if list.count() > 0
            && let Err(error) = consumer.resume(&list)
        {
            // After a rebalance the partition may be gone; a new assignment is not paused.
            tracing::debug!(error = %error, "Resuming held partitions failed.");
        }
    }

    /// Every other assigned partition with records not yet read by this group: its end offset.
    fn ends_of_others<C: ConsumerContext, Q: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        probe: &BaseConsumer<Q>,
    ) -> anyhow::Result<Vec<(String, i32, i64)>> {
        let assignment = consumer.assignment().context("reading the assignment")?;
        let mut others = TopicPartitionList::new();
        for element in assignment.elements() {
            if !self.gated.contains(element.topic()) {
                others.add_partition(element.topic(), element.partition());
            }
        }
        let committed = consumer
            .committed_offsets(others.clone(), TIMEOUT)
            .context("reading committed offsets")?;
        let position = consumer.position().context("reading positions")?;
        let mut targets = Vec::new();
        for element in others.elements() {
            let (topic, partition) = (element.topic(), element.partition());
            let (low, high) = probe
                .fetch_watermarks(topic, partition, TIMEOUT)
                .with_context(|| format!("reading the end of {topic}[{partition}]"))?;
            let offset_of = |list: &TopicPartitionList| match list
                .find_partition(topic, partition)
                .map(|e| e.offset())
            {
                Some(Offset::Offset(at)) => at,
                _ => low,
            };
            let reached = offset_of(&committed).max(offset_of(&position));
            if reached < high {
                targets.push((topic.to_owned(), partition, high));
            }
        }
        Ok(targets)
    }
}
