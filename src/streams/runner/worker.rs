//! One thread per assigned partition: it owns that partition's [`Task`] and handles its records
//! in order (decode, process, produce), so partitions are processed in parallel while each keeps
//! its order. Workers report every record back to the runner, which commits.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, SyncSender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::shop::{Retried, Shop};
use crate::streams::dlq::headers;
use crate::streams::global::Changed;
use crate::streams::kafka::send;
use crate::streams::metrics as names;
use crate::streams::processor::Processor;
use crate::streams::record::{ProducedRecord, RawRecord};
use crate::streams::task::{AvroResolved, Outcome, Task};
use crate::sync::lock;

/// A record to handle, with its (prefixed) source topic (shared by the records of a batch: an
/// allocation per record saved).
pub(super) struct Job {
    pub(super) record: RawRecord,
    pub(super) prefixed_topic: Arc<str>,
}

/// What a worker is given to do, in order.
enum Work {
    /// Records of partitioned inputs, in order: one report each.
    Records(Vec<Job>),
    /// Work for the task that no record brings: one report.
    Task(TaskWork),
}

/// Work for the task that no record brings.
enum TaskWork {
    /// Global tables changed ([`crate::streams::Processor::global_changed`]).
    GlobalChanged(Arc<[Changed]>),
    /// The task was restored ([`crate::streams::Processor::resumed`]).
    Resume,
    /// The commit of the work before went through: flush the disk stores.
    Committed(Arc<ChangelogOffsets>),
}

/// Where a commit's changelog records landed: the next offset per changelog topic (prefixed)
/// and partition.
pub(super) type ChangelogOffsets =
    std::collections::HashMap<String, std::collections::HashMap<i32, i64>>;

/// Where a handled record ends: the next offset to commit for its input partition.
pub(super) struct Position {
    pub(super) prefixed_topic: Arc<str>,
    pub(super) partition: i32,
    pub(super) next_offset: i64,
}

/// What a worker reports: jobs handled, a batch at a time, and each job that was not.
pub(super) enum Event {
    /// `jobs` jobs handled, in order; `positions`: where their records end (the last per input
    /// partition), offsets that may be committed. One report per batch, not per record: a
    /// channel send and the loop's bookkeeping per record were a cost of their own.
    Done {
        jobs: usize,
        positions: Vec<Position>,
    },
    /// Not handled because shutdown interrupted a retry (nor will later ones of this worker be).
    Interrupted,
    /// Not handled: a transient fault outlasted the transaction's budget, or producing failed.
    /// The runner gives up the transaction and rewinds; later jobs are [`Event::Skipped`].
    Stalled,
    /// Not handled, because an earlier job of this worker stalled.
    Skipped,
    /// The processor must stop.
    Fatal(anyhow::Error),
}

/// A running worker.
pub(super) struct Worker {
    /// Whether its task was resumed since it was restored (see [`Worker::resume`]).
    pub(super) resumed: bool,
    jobs: Option<SyncSender<Work>>,
    thread: Option<JoinHandle<()>>,
}

/// Pieces of work (a batch of up to 256 records is one) queued per worker before the loop waits
/// for it: at most about a thousand records, as when each record was one (64 batches let the
/// consumer run 16,000 records ahead of a worker on one core: +37 MiB peak and a later first
/// commit in the processors bench).
const QUEUE: usize = 4;

impl Worker {
    /// Starts a worker owning `task`.
    pub(super) fn start<P: Processor + 'static>(
        partition: i32,
        task: Task<P>,
        shop: Arc<Shop>,
        events: Sender<Event>,
    ) -> anyhow::Result<Self> {
        let (jobs, queue) = std::sync::mpsc::sync_channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name(format!("partition-{partition}"))
            .spawn(move || work(partition, task, &shop, &queue, &events))
            .context("starting a partition worker")?;
        Ok(Self {
            resumed: false,
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    /// Queues records, reported back together once handled (waits while the worker's queue is
    /// full).
    pub(super) fn send(&self, jobs: Vec<Job>) -> anyhow::Result<()> {
        self.queue(Work::Records(jobs))
    }

    /// Queues the news that global tables changed.
    pub(super) fn global_changed(&self, changed: Arc<[Changed]>) -> anyhow::Result<()> {
        self.queue(Work::Task(TaskWork::GlobalChanged(changed)))
    }

    /// Queues the task's resumption (its first work after a restore).
    pub(super) fn resume(&self) -> anyhow::Result<()> {
        self.queue(Work::Task(TaskWork::Resume))
    }

    /// Queues the flush of the task's disk stores after a commit.
    pub(super) fn committed(&self, offsets: Arc<ChangelogOffsets>) -> anyhow::Result<()> {
        self.queue(Work::Task(TaskWork::Committed(offsets)))
    }

    fn queue(&self, work: Work) -> anyhow::Result<()> {
        self.jobs
            .as_ref()
            .expect("BUG: a stopped worker gets no jobs")
            .send(work)
            .map_err(|_| anyhow::anyhow!("a partition worker stopped unexpectedly"))
    }
}

impl Drop for Worker {
    /// Stops the worker after the jobs already queued and waits for it.
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("A partition worker panicked.");
        }
    }
}

fn work<P: Processor>(
    partition: i32,
    mut task: Task<P>,
    shop: &Shop,
    queue: &Receiver<Work>,
    events: &Sender<Event>,
) {
    // Once a job is interrupted or stalls, the task's state is no longer trusted: later jobs are
    // only reported back, and the runner stops or rewinds.
    let mut stopped: Option<Event> = None;
    let mut last_report = Instant::now();
    let mut done = Tally::default();
    while let Ok(work) = queue.recv() {
        let mut sent = true;
        let mut tally = |result: Result<Option<Position>, Event>| match result {
            Ok(position) => done.add(position),
            // In order: what was handled before it first.
            Err(event) => sent &= done.report(events) && events.send(event).is_ok(),
        };
        match work {
            Work::Records(jobs) => {
                for job in jobs {
                    tally(report(&mut stopped, || handle(&mut task, shop, job)));
                }
            }
            Work::Task(work) => {
                tally(report(&mut stopped, || {
                    perform(partition, &mut task, shop, work)
                }));
            }
        }
        if !(sent && done.report(events)) {
            return;
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            for (store, size) in task.stores().sizes() {
                ::metrics::gauge!(names::STORE_ENTRIES, "store" => store.to_owned())
                    .set(size as f64);
            }
            last_report = Instant::now();
        }
    }
}

/// Jobs handled and not yet reported, with where their records end.
#[derive(Default)]
struct Tally {
    jobs: usize,
    positions: Vec<Position>,
}

impl Tally {
    fn add(&mut self, position: Option<Position>) {
        self.jobs += 1;
        let Some(position) = position else {
            return;
        };
        match self.positions.iter_mut().find(|p| {
            p.partition == position.partition && p.prefixed_topic == position.prefixed_topic
        }) {
            Some(last) => last.next_offset = position.next_offset,
            None => self.positions.push(position),
        }
    }

    /// Reports what was tallied, if anything; `false` when the runner is gone.
    fn report(&mut self, events: &Sender<Event>) -> bool {
        if self.jobs == 0 {
            return true;
        }
        let Self { jobs, positions } = std::mem::take(self);
        events.send(Event::Done { jobs, positions }).is_ok()
    }
}

/// What `run` made of one job: handled (with where its record ends, if a record brought it),
/// or the event to report instead; once a job was interrupted or stalled, what later ones are
/// reported as (without running them).
fn report(
    stopped: &mut Option<Event>,
    run: impl FnOnce() -> anyhow::Result<Handled>,
) -> Result<Option<Position>, Event> {
    match stopped {
        Some(Event::Interrupted) => Err(Event::Interrupted),
        Some(_) => Err(Event::Skipped),
        None => match run() {
            Ok(Handled::Done(position)) => Ok(position),
            Ok(Handled::Interrupted) => {
                *stopped = Some(Event::Interrupted);
                Err(Event::Interrupted)
            }
            Ok(Handled::Stalled) => {
                *stopped = Some(Event::Stalled);
                Err(Event::Stalled)
            }
            Err(error) => Err(Event::Fatal(error)),
        },
    }
}

/// What became of one job.
enum Handled {
    /// Handled; where its record ends (`None` for work that no record brought).
    Done(Option<Position>),
    /// Shutdown interrupted a retry.
    Interrupted,
    /// Given up: a transient fault outlasted the transaction, or producing failed.
    Stalled,
}

/// Does one piece of work of the task of `partition` that no record brings.
fn perform<P: Processor>(
    partition: i32,
    task: &mut Task<P>,
    shop: &Shop,
    work: TaskWork,
) -> anyhow::Result<Handled> {
    let outcome = match work {
        TaskWork::GlobalChanged(changed) => task.global_changed(&changed),
        TaskWork::Resume => task.resumed(),
        TaskWork::Committed(offsets) => {
            let topology = task.topology().clone();
            task.flush(|store| {
                let changelog = shop.kafka.topic(&topology.changelog_topic(store));
                offsets.get(&changelog)?.get(&partition).copied()
            })
            .context("flushing the stores to disk after a commit")?;
            return Ok(Handled::Done(None));
        }
    };
    let outcome = outcome.map_err(|fatal| {
        ::metrics::counter!(names::ERRORS, "class" => "fatal").increment(1);
        anyhow::Error::new(fatal)
    })?;
    if let Some(unhandled) = produce(shop, outcome, partition)? {
        return Ok(unhandled);
    }
    Ok(Handled::Done(None))
}

/// Handles one record: decode, process, produce.
fn handle<P: Processor>(task: &mut Task<P>, shop: &Shop, job: Job) -> anyhow::Result<Handled> {
    let Job {
        record,
        prefixed_topic,
    } = job;
    let started = Instant::now();
    shop.count(names::RECORDS_IN, &record.topic);
    let format = shop
        .topology
        .input(&record.topic)
        .with_context(|| format!("BUG: consumed {} which is not an input", record.topic))?
        .format;
    let outcome = match shop.resolve_avro(format, &record, true)? {
        Retried::Interrupted => return Ok(Handled::Interrupted),
        Retried::Stalled => return Ok(Handled::Stalled),
        Retried::Answer(Err(error)) => task.dead_letter(&record, &error.to_string()),
        Retried::Answer(Ok(avro)) => handled(task, &record, avro)?,
    };
    if let Some(dead) = &outcome.dead_letter {
        let health = shop.kafka.health();
        lock(&health.status).dead_letters += 1;
        health.note_error(format_args!(
            "dead-lettered {}[{}] offset {} to {}",
            record.topic, record.partition, record.offset, dead.topic
        ));
        // Where, not what: the reason can quote the record, and records carry personal data.
        tracing::warn!(topic = %record.topic, partition = record.partition, offset = record.offset, dlq = %dead.topic, "Record dead-lettered.");
        tracing::debug!(
            reason = dead.header(headers::MESSAGE),
            "Why it was dead-lettered."
        );
    }
    // Changelog records go to the task's partition.
    if let Some(unhandled) = produce(shop, outcome, record.partition)? {
        return Ok(unhandled);
    }
    thread_local! {
        // The handle, looked up once per worker thread rather than in the recorder per record.
        static PROCESS_LATENCY: ::metrics::Histogram = ::metrics::histogram!(names::PROCESS_LATENCY);
    }
    PROCESS_LATENCY.with(|latency| latency.record(started.elapsed().as_secs_f64()));
    Ok(Handled::Done(Some(Position {
        prefixed_topic,
        partition: record.partition,
        next_offset: record.offset + 1,
    })))
}

fn handled<P: Processor>(
    task: &mut Task<P>,
    record: &RawRecord,
    avro: Option<AvroResolved>,
) -> anyhow::Result<Outcome> {
    task.handle(record, avro).map_err(|fatal| {
        ::metrics::counter!(names::ERRORS, "class" => "fatal").increment(1);
        anyhow::Error::new(fatal)
    })
}

/// Sends an outcome's records; `Some` when they could not all be sent.
fn produce(shop: &Shop, outcome: Outcome, partition: i32) -> anyhow::Result<Option<Handled>> {
    let mut records: Vec<(ProducedRecord, Option<i32>)> =
        Vec::with_capacity(outcome.outputs.len() + 1);
    let partitions = shop.partitions.get().copied().unwrap_or(1);
    let broadcasts = outcome
        .broadcasts
        .into_iter()
        .flat_map(|output| (0..partitions).map(move |p| (output.clone(), Some(p))));
    let outputs = outcome.outputs.into_iter().map(|output| (output, None));
    for (output, to) in outputs.chain(broadcasts) {
        let topic = shop.kafka.topic(&shop.topology.kafka_topic(&output.topic));
        let value = match output
            .value
            .as_ref()
            .map(|value| (value, value.json_bytes()))
        {
            None => None,
            // JSON needs neither the registry nor the async runtime.
            Some((_, Some(json))) => Some(json),
            Some((value, None)) => match shop.registry(true, || {
                shop.runtime.block_on(shop.codec.encode(&topic, value))
            })? {
                Retried::Interrupted => return Ok(Some(Handled::Interrupted)),
                Retried::Stalled => return Ok(Some(Handled::Stalled)),
                Retried::Answer(Ok(bytes)) => Some(bytes),
                Retried::Answer(Err(error)) => anyhow::bail!("encoding for {topic}: {error}"),
            },
        };
        shop.count(names::RECORDS_OUT, &output.topic);
        records.push((
            ProducedRecord {
                topic,
                key: Some(output.key.into_bytes()),
                value,
                headers: Vec::new(),
            },
            to,
        ));
    }
    let changelog = outcome.changelog.into_iter().map(|mut record| {
        record.topic = shop.kafka.topic(&record.topic);
        (record, Some(partition))
    });
    let dead = outcome.dead_letter.map(|mut dead| {
        ::metrics::counter!(names::DLQ).increment(1);
        ::metrics::counter!(names::ERRORS, "class" => "poison").increment(1);
        dead.topic = shop.kafka.topic(&dead.topic);
        (dead, None)
    });
    let all = changelog.chain(records).chain(dead);
    for (record, partition) in all {
        if let Err(error) = send(&shop.producer, &record, partition) {
            // The producer is in a state no record can be added in (the broker went away
            // mid-transaction, or the transaction failed): the runner gives the transaction up.
            tracing::debug!(error = %error, topic = %record.topic, "Producing failed.");
            return Ok(Some(Handled::Stalled));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(topic: &Arc<str>, partition: i32, next_offset: i64) -> Option<Position> {
        Some(Position {
            prefixed_topic: Arc::clone(topic),
            partition,
            next_offset,
        })
    }

    #[test]
    fn a_batch_is_reported_once_with_every_job_and_the_last_offset_of_each_input_partition() {
        let (patients, clinicians): (Arc<str>, Arc<str>) =
            (Arc::from("clinic.patients"), Arc::from("clinic.clinicians"));
        let (events, reports) = std::sync::mpsc::channel();
        let mut done = Tally::default();
        assert!(done.report(&events), "nothing tallied, nothing to send");
        assert!(reports.try_recv().is_err());
        done.add(at(&patients, 0, 11));
        done.add(at(&clinicians, 0, 5));
        // Work no record brought counts as a job, with no offset.
        done.add(None);
        done.add(at(&patients, 0, 12));
        assert!(done.report(&events));
        let Ok(Event::Done { jobs, positions }) = reports.try_recv() else {
            panic!("one report for the batch");
        };
        assert_eq!(jobs, 4);
        let positions: Vec<(&str, i32, i64)> = positions
            .iter()
            .map(|p| (&*p.prefixed_topic, p.partition, p.next_offset))
            .collect();
        assert_eq!(
            positions,
            [("clinic.patients", 0, 12), ("clinic.clinicians", 0, 5)]
        );
        assert!(reports.try_recv().is_err(), "one report, not one per job");
        assert!(done.report(&events), "the tally starts over");
        assert!(reports.try_recv().is_err());
        drop(reports);
        done.add(None);
        assert!(!done.report(&events), "the runner is gone");
    }
}
