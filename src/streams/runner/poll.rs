//! The runner's loop: take what the consumer has fetched (a batch), hand each partition's
//! records to its worker in one piece (through the gate), pass on the global tables' news, and
//! commit every `streams.commit_interval`; on shutdown, the last commit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::Offset;
use rdkafka::consumer::Consumer as _;
use rdkafka::message::Message as _;

use super::global;
use super::instance::Runner;
use super::shared::{Cause, Transaction};
use super::worker::{Job, Worker};
use crate::streams::kafka::produce::COMMIT_TIMEOUT;
use crate::streams::kafka::{Dependency, flush};
use crate::streams::metrics as names;
use crate::streams::processor::Processor;
use crate::sync::lock;

/// Records taken from the consumer at most at once ([`Runner::take_batch`]): a worker is woken
/// once per batch rather than once per record, the loop's bookkeeping (callbacks, the gate, the
/// workers' reports, the commit clock) runs once per batch, and a record fetched is never kept
/// waiting for more: a batch is whatever has already arrived.
const BATCH: usize = 256;

/// How long the lag probe waits for a partition's end offset: past the watchdog's 2 s, so an
/// unanswered probe is an outage on `/readyz` while the loop waits for it.
const LAG_TIMEOUT: Duration = Duration::from_secs(3);

/// Which workers a piece of work goes to.
enum Target {
    /// The task of this partition number.
    Task(i32),
    /// Every task.
    All,
    /// Every task not resumed since it was restored.
    Unresumed,
}

impl<P: Processor + 'static, F: Fn() -> P> Runner<P, F> {
    /// Runs until shutdown, a fatal error, or a client that needs replacing ([`super::instance::Restart`]).
    pub(super) fn run(mut self) -> anyhow::Result<()> {
        let mut last_report = Instant::now();
        let mut batch = Vec::with_capacity(BATCH);
        while !self.kafka.stopping() {
            self.take_batch(&mut batch)?;
            self.after_callbacks()?;
            self.global_news()?;
            let mut ready = Vec::with_capacity(batch.len());
            for job in batch.drain(..) {
                if let Some(job) = self.gate.hold(&self.consumer, job)? {
                    ready.push(job);
                }
            }
            self.dispatch(ready)?;
            let released = self
                .gate
                .release(&self.consumer, &self.probe, self.kafka.outages())?;
            if !released.is_empty() {
                // Whatever the other inputs' workers still have in hand goes first.
                lock(&self.shared).drain();
                self.dispatch(released)?;
            }
            let (interrupted, doomed) = {
                let mut shared = lock(&self.shared);
                shared.collect();
                (shared.interrupted, shared.doomed())
            };
            self.take_fatal()?;
            if interrupted {
                break;
            }
            if let Some(cause) = doomed {
                self.recover(
                    cause,
                    &"a record could not be handled before the transaction's timeout",
                )?;
            } else if self.transaction_started.elapsed() >= self.kafka.settings().commit_interval {
                self.commit_now()?;
            }
            self.shop.producer.poll(Duration::ZERO);
            if last_report.elapsed() >= Duration::from_secs(5) {
                self.check_consumer()?;
                self.report_lag();
                last_report = Instant::now();
            }
        }
        self.commit_now()?;
        {
            let shared = lock(&self.shared);
            anyhow::ensure!(
                shared.transaction == Transaction::Idle,
                "the last commit failed on shutdown; work since the previous commit will be redone"
            );
        }
        flush(&self.shop.producer, COMMIT_TIMEOUT).context("flushing on shutdown")?;
        // Dropping a worker waits for what it was given: the last commit's flush to disk too.
        lock(&self.shared).workers.clear();
        if let Some(db) = &self.state {
            db.persist().context("persisting the state on shutdown")?;
        }
        tracing::info!("Stopped after the last commit.");
        Ok(())
    }

    /// Takes what the consumer has fetched, up to [`BATCH`] records (waiting up to 50 ms for the
    /// first). Records taken before a rebalance are dropped: the eager protocol revoked every
    /// partition, committing what was handed out, so they are read again from the committed
    /// offsets by whoever is assigned their partition.
    fn take_batch(&mut self, batch: &mut Vec<Job>) -> anyhow::Result<()> {
        let mut wait = Duration::from_millis(50);
        // The batch's topics, each allocated once.
        let mut topics: Vec<Arc<str>> = Vec::new();
        while batch.len() < BATCH {
            let polled = self.consumer.poll(wait);
            wait = Duration::ZERO;
            // The callbacks run inside `poll`; the loop resets the flag after each batch.
            let rebalanced = lock(&self.shared).rebalanced;
            if rebalanced {
                batch.clear();
            }
            match polled {
                Some(Ok(message)) => {
                    let mut record = self.kafka.record(&message);
                    let topology = &self.shop.topology;
                    if !topology.repartitions.is_empty() {
                        record.topic = topology.processor_topic(&record.topic).into_owned();
                    }
                    let topic = message.topic();
                    let prefixed_topic = match topics.iter().find(|t| ***t == *topic) {
                        Some(known) => Arc::clone(known),
                        None => {
                            topics.push(Arc::from(topic));
                            Arc::clone(&topics[topics.len() - 1])
                        }
                    };
                    batch.push(Job {
                        record,
                        prefixed_topic,
                    });
                }
                Some(Err(error)) => {
                    // No `outages.up` for records: librdkafka hands out records fetched before
                    // an outage while the broker is gone. Commits and the lag probe say it is
                    // back.
                    ::metrics::counter!(names::ERRORS, "class" => "transient").increment(1);
                    self.kafka
                        .outages()
                        .down(Dependency::Broker, &format_args!("consuming: {error}"));
                    self.check_consumer()?;
                    break;
                }
                None => break,
            }
            if rebalanced {
                break;
            }
        }
        Ok(())
    }

    /// Hands records to their partitions' workers, each worker's in one piece and in order. A
    /// rewind on the way drops the rest: they are read again from the committed offsets.
    fn dispatch(&mut self, jobs: Vec<Job>) -> anyhow::Result<()> {
        let mut by_task: Vec<(i32, Vec<Job>)> = Vec::new();
        for job in jobs {
            let task = job.record.partition;
            match by_task.iter_mut().find(|(t, _)| *t == task) {
                Some((_, jobs)) => jobs.push(job),
                None => by_task.push((task, vec![job])),
            }
        }
        for (task, jobs) in by_task {
            let count = jobs.len();
            let mut jobs = Some(jobs);
            let handed = self.hand(Target::Task(task), count, |worker| {
                worker.send(jobs.take().expect("BUG: records go to one worker"))
            })?;
            if !handed {
                break;
            }
        }
        Ok(())
    }

    /// Hands the global thread's news to every task, and resumes the tasks restored since.
    fn global_news(&mut self) -> anyhow::Result<()> {
        let Some((thread, _)) = &self.global else {
            return Ok(());
        };
        let mut changes = Vec::new();
        while let Ok(news) = thread.news.try_recv() {
            match news {
                global::News::Changed(changed) => changes.push(changed),
                global::News::Failed(error) => {
                    return Err(error.context("the global tables' thread failed"));
                }
                global::News::Ready => {}
            }
        }
        self.hand(Target::Unresumed, 1, Worker::resume)?;
        for changed in changes {
            self.hand(Target::All, 1, |worker| {
                worker.global_changed(Arc::clone(&changed))
            })?;
        }
        Ok(())
    }

    /// Hands work to `target`'s workers, opening the interval's transaction first; each is
    /// given `reports` pieces of work (each reported back once). `false`: opening the
    /// transaction failed and the runner rewound; the work was not handed out.
    fn hand(
        &mut self,
        target: Target,
        reports: usize,
        mut give: impl FnMut(&Worker) -> anyhow::Result<()>,
    ) -> anyhow::Result<bool> {
        let shared = Arc::clone(&self.shared);
        let mut shared = lock(&shared);
        let resuming = matches!(target, Target::Unresumed);
        // A record goes to one task: no list is allocated for it on the hot path.
        let one;
        let several: Vec<i32>;
        let partitions: &[i32] = match target {
            Target::Task(partition) => {
                one = [partition];
                &one
            }
            Target::All => {
                several = shared.workers.keys().copied().collect();
                &several
            }
            Target::Unresumed => {
                several = shared
                    .workers
                    .iter()
                    .filter(|(_, worker)| !worker.resumed)
                    .map(|(partition, _)| *partition)
                    .collect();
                &several
            }
        };
        if partitions.is_empty() {
            return Ok(true);
        }
        if let Err(error) = self.begin_if_idle(&mut shared) {
            // The work is dropped here: records are read again after the rewind, and a
            // restored task resumes anew.
            drop(shared);
            self.recover(Cause::Commit, &format_args!("{error:#}"))?;
            return Ok(false);
        }
        for &partition in partitions {
            let worker = shared
                .workers
                .get_mut(&partition)
                .with_context(|| format!("BUG: no worker for assigned partition {partition}"))?;
            give(worker)?;
            worker.resumed |= resuming;
            shared.in_flight += reports;
        }
        Ok(true)
    }

    fn report_lag(&self) {
        let Ok(position) = self.consumer.position() else {
            return;
        };
        for element in position.elements() {
            let Offset::Offset(at) = element.offset() else {
                continue;
            };
            // Where the watchdog sees it: a broker that does not answer within 2 s is an outage
            // (the runner's clients may have nothing in flight that would say so).
            let answer = self.kafka.outages().calling("reading the lag", || {
                self.probe
                    .fetch_watermarks(element.topic(), element.partition(), LAG_TIMEOUT)
            });
            let high = match answer {
                Ok((_, high)) => high,
                // Asking for each other partition would hold the loop as long again.
                Err(error) if unanswered(&error) => return,
                Err(_) => continue,
            };
            // Also the probe that notices the broker is back while no record flows.
            self.kafka.outages().up(Dependency::Broker);
            let lag = (high - at).max(0);
            ::metrics::gauge!(names::LAG, "topic" => element.topic().to_owned(), "partition" => element.partition().to_string())
                .set(lag as f64);
            if let Some(partitions) = lock(&self.kafka.health().status)
                .assigned
                .get_mut(element.topic())
            {
                partitions.insert(element.partition(), Some(lag));
            }
        }
    }
}

/// Whether a broker request failed for want of an answer (timed out, or no connection), rather
/// than with the broker's own answer.
fn unanswered(error: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as Code;
    matches!(
        error.rdkafka_error_code(),
        Some(
            Code::OperationTimedOut
                | Code::RequestTimedOut
                | Code::AllBrokersDown
                | Code::BrokerTransportFailure
                | Code::BrokerNotAvailable
        )
    )
}

#[cfg(test)]
mod tests {
    use rdkafka::error::KafkaError;
    use rdkafka::types::RDKafkaErrorCode as Code;

    #[test]
    fn a_timeout_or_a_lost_connection_is_unanswered_and_an_answer_is_not() {
        assert!(super::unanswered(&KafkaError::MetadataFetch(
            Code::OperationTimedOut
        )));
        assert!(super::unanswered(&KafkaError::MetadataFetch(
            Code::AllBrokersDown
        )));
        assert!(!super::unanswered(&KafkaError::MetadataFetch(
            Code::UnknownTopicOrPartition
        )));
    }
}
