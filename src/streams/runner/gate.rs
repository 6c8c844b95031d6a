//! Holding back records of `after_others` inputs (`Topology::stream_after_others`) until the
//! other inputs have been read to the end they had when the record arrived: every partition of
//! the inputs from outside the processor, whichever instance of the group reads it, and the
//! assigned partitions of its repartition topics.
//!
//! When the first such record arrives, the gate pauses its partition (records of it already
//! fetched queue behind it) and, in the same turn of the loop, notes each of those partitions'
//! end offset (high watermark). An assigned partition has caught up when this consumer's
//! position (or the group's committed offset, for a partition with nothing new) reaches its end;
//! another instance's when the group's committed offset does, or when nothing committed lies
//! between that offset and the end (a partition written in transactions ends in commit markers
//! no consumer commits past: a reader of the gate's own looks): what that instance made of those
//! records is then committed too (under exactly-once the offsets commit in the transaction of
//! the records they made), so a repartition topic holds it ahead of anything the held record
//! makes. Then the held records are released in order, after the workers have finished
//! everything handed to them, and the partitions resume. While the broker cannot be asked, the
//! records stay held and the gate asks again every 200 ms; its questions are where the watchdog
//! sees them (`Outages::calling`), so one unanswered for 2 s is an outage on `/readyz` even when
//! the runner's own clients have nothing in flight that would report it. A rebalance or rewind
//! clears the gate: the held records were never handed out, so they are read again from the
//! committed offsets.

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};

use super::worker::Job;
use crate::streams::kafka::{Outages, Quiet};

const TIMEOUT: Duration = Duration::from_secs(10);
/// How often the group's committed offsets are read while another instance's partition is
/// awaited.
const RECHECK: Duration = Duration::from_millis(200);
/// How often a long wait is logged.
const NAG: Duration = Duration::from_secs(30);

/// The gate of one runner.
pub(super) struct Gate {
    /// Prefixed topics whose records wait for the others.
    gated: BTreeSet<String>,
    /// Prefixed inputs from outside the processor: awaited in every partition.
    sources: BTreeSet<String>,
    held: VecDeque<Job>,
    /// Partitions still to reach their ends (`None`: their ends are still to be read).
    targets: Option<Vec<Target>>,
    /// After the broker could not be asked: when to ask again.
    retry_at: Instant,
    /// When the group's committed offsets were last read for other instances' partitions.
    checked: Instant,
    /// Reads another instance's partition from the group's committed offset, to tell whether
    /// anything but commit markers (or aborted records) lies before its end.
    reader: Option<BaseConsumer<Quiet>>,
    paused: BTreeSet<(String, i32)>,
    since: Instant,
    nagged: Instant,
}

/// A partition a held record waits for.
#[derive(Debug)]
struct Target {
    topic: String,
    partition: i32,
    /// Its end offset when the record arrived.
    end: i64,
    /// Assigned to this consumer (else: another instance's, followed by the group's commits).
    local: bool,
}

impl Gate {
    pub(super) fn new(
        gated: BTreeSet<String>,
        sources: BTreeSet<String>,
        reader: Option<BaseConsumer<Quiet>>,
    ) -> Self {
        Self {
            gated,
            sources,
            reader,
            held: VecDeque::new(),
            targets: None,
            retry_at: Instant::now(),
            checked: Instant::now(),
            paused: BTreeSet::new(),
            since: Instant::now(),
            nagged: Instant::now(),
        }
    }

    /// Whether `job` must wait (it is then held); `false` hands it back untouched.
    pub(super) fn hold<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        job: Job,
    ) -> anyhow::Result<Option<Job>> {
        if !self.gated.contains(&*job.prefixed_topic) {
            return Ok(Some(job));
        }
        if self.held.is_empty() {
            // The ends are read by the next release (so a broker that cannot be asked holds the
            // record instead of failing the runner).
            self.targets = None;
            self.since = Instant::now();
            self.nagged = self.since;
        }
        let partition = (job.prefixed_topic.to_string(), job.record.partition);
        if self.paused.insert(partition.clone()) {
            let mut list = TopicPartitionList::new();
            list.add_partition(&partition.0, partition.1);
            consumer.pause(&list).context("pausing a held partition")?;
        }
        self.held.push_back(job);
        Ok(None)
    }

    /// The held records, once the other partitions have caught up (empty otherwise). `probe`
    /// answers the end offsets (see `Runner::probe`).
    pub(super) fn release<C: ConsumerContext, Q: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        probe: &BaseConsumer<Q>,
        outages: &Outages,
    ) -> anyhow::Result<Vec<Job>> {
        if self.held.is_empty() {
            return Ok(Vec::new());
        }
        match self.caught_up(consumer, probe, outages) {
            Ok(true) => {}
            Ok(false) => {
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
            Err(error) => {
                // The broker cannot be asked (an outage, which the runner's own clients report):
                // the records stay held, and the gate asks again.
                self.retry_at = Instant::now() + RECHECK;
                tracing::debug!(error = %format!("{error:#}"), "The gate could not tell whether the other inputs caught up; asking again.");
                return Ok(Vec::new());
            }
        }
        self.targets = None;
        self.resume(consumer);
        Ok(self.held.drain(..).collect())
    }

    /// Whether every partition the held records wait for has reached its end.
    fn caught_up<C: ConsumerContext, Q: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        probe: &BaseConsumer<Q>,
        outages: &Outages,
    ) -> anyhow::Result<bool> {
        if Instant::now() < self.retry_at {
            return Ok(false);
        }
        let mut targets = match self.targets.take() {
            Some(targets) => targets,
            None => self.ends_of_others(consumer, probe, outages)?,
        };
        // Kept whatever happens: a failure asks again for what is left.
        let narrowed = self.narrow(consumer, outages, &mut targets);
        let done = targets.is_empty();
        self.targets = Some(targets);
        narrowed.map(|()| done)
    }

    /// Drops the partitions that have reached their ends from `targets` (each only once it is
    /// known to have).
    fn narrow<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        outages: &Outages,
        targets: &mut Vec<Target>,
    ) -> anyhow::Result<()> {
        let position = consumer.position().context("reading positions")?;
        let at = |list: &TopicPartitionList, target: &Target| match list
            .find_partition(&target.topic, target.partition)
            .map(|e| e.offset())
        {
            Some(Offset::Offset(at)) => Some(at),
            _ => None,
        };
        targets.retain(|t| !(t.local && at(&position, t).is_some_and(|at| at >= t.end)));
        if !targets.iter().any(|t| !t.local) || self.checked.elapsed() < RECHECK {
            return Ok(());
        }
        self.checked = Instant::now();
        let mut remote = TopicPartitionList::new();
        for target in targets.iter().filter(|t| !t.local) {
            remote.add_partition(&target.topic, target.partition);
        }
        let committed = outages
            .calling("reading committed offsets", || {
                consumer.committed_offsets(remote, TIMEOUT)
            })
            .context("reading committed offsets")?;
        // Every answer first, then the drop: a failure on the way leaves `targets` whole.
        let reached = targets
            .iter()
            .map(|target| match at(&committed, target) {
                _ if target.local => Ok(false),
                Some(at) if at >= target.end => Ok(true),
                Some(at) => self.nothing_before_end(target, Offset::Offset(at)),
                None => self.nothing_before_end(target, Offset::Beginning),
            })
            .collect::<anyhow::Result<Vec<bool>>>()?;
        let mut reached = reached.into_iter();
        targets.retain(|_| !reached.next().unwrap_or(false));
        Ok(())
    }

    /// Whether a `read_committed` read of `target`'s partition from `from` finds no record before
    /// its end: what lies between is commit markers or aborted records.
    fn nothing_before_end(&self, target: &Target, from: Offset) -> anyhow::Result<bool> {
        let Some(reader) = &self.reader else {
            return Err(anyhow::anyhow!(
                "BUG: a record held by a gate without a reader"
            ));
        };
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(&target.topic, target.partition, from)?;
        reader
            .assign(&list)
            .context("assigning the gate's reader")?;
        let deadline = Instant::now() + Duration::from_millis(500);
        let empty = loop {
            match reader.poll(Duration::from_millis(50)) {
                Some(Ok(message)) => break message.offset() >= target.end,
                Some(Err(KafkaError::PartitionEOF(_))) => break true,
                Some(Err(error)) => {
                    tracing::debug!(error = %error, "The gate's reader failed; asking again later.");
                    break false;
                }
                None if Instant::now() >= deadline => break false,
                None => {}
            }
        };
        reader.unassign().context("unassigning the gate's reader")?;
        Ok(empty)
    }

    /// Forgets the held records (they are read again from the committed offsets).
    pub(super) fn clear<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) {
        self.held.clear();
        self.targets = None;
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

    /// The partitions to wait for, with records not yet read by this group: every partition of
    /// the sources, and the other assigned ones (repartition topics); each with its end offset.
    fn ends_of_others<C: ConsumerContext, Q: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        probe: &BaseConsumer<Q>,
        outages: &Outages,
    ) -> anyhow::Result<Vec<Target>> {
        let assignment = consumer.assignment().context("reading the assignment")?;
        let mut others = TopicPartitionList::new();
        for element in assignment.elements() {
            if !self.gated.contains(element.topic()) {
                others.add_partition(element.topic(), element.partition());
            }
        }
        for topic in &self.sources {
            let metadata = outages
                .calling("reading partitions", || {
                    probe.fetch_metadata(Some(topic), TIMEOUT)
                })
                .with_context(|| format!("reading the partitions of {topic}"))?;
            for found in metadata.topics().iter().filter(|t| t.name() == topic) {
                for partition in found.partitions() {
                    if others.find_partition(topic, partition.id()).is_none() {
                        others.add_partition(topic, partition.id());
                    }
                }
            }
        }
        let committed = outages
            .calling("reading committed offsets", || {
                consumer.committed_offsets(others.clone(), TIMEOUT)
            })
            .context("reading committed offsets")?;
        let position = consumer.position().context("reading positions")?;
        let mut targets = Vec::new();
        for element in others.elements() {
            let (topic, partition) = (element.topic(), element.partition());
            let (low, high) = outages
                .calling("reading end offsets", || {
                    probe.fetch_watermarks(topic, partition, TIMEOUT)
                })
                .with_context(|| format!("reading the end of {topic}[{partition}]"))?;
            let local = assignment.find_partition(topic, partition).is_some();
            let offset_of = |list: &TopicPartitionList| match list
                .find_partition(topic, partition)
                .map(|e| e.offset())
            {
                Some(Offset::Offset(at)) => at,
                _ => low,
            };
            let read = if local { offset_of(&position) } else { low };
            if offset_of(&committed).max(read) < high {
                targets.push(Target {
                    topic: topic.to_owned(),
                    partition,
                    end: high,
                    local,
                });
            }
        }
        Ok(targets)
    }
}
