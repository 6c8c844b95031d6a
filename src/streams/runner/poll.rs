//! The runner's loop: poll a record, hand it to its partition's worker (through the gate),
//! pass on the global tables' news, and commit every `streams.commit_interval`; on shutdown,
//! the last commit.

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
        while !self.kafka.stopping() {
            let polled = self
                .consumer
                .poll(Duration::from_millis(50))
                .map(|r| r.map(|m| (self.kafka.record(&m), m.topic().to_owned())));
            self.after_callbacks()?;
            self.global_news()?;
            match polled {
                Some(Ok((record, prefixed_topic))) => {
                    // No `outages.up` here: librdkafka hands out records fetched before an
                    // outage while the broker is gone. Commits and the lag probe say it is back.
                    let job = Job {
                        record,
                        prefixed_topic,
                    };
                    if let Some(job) = self.gate.hold(&self.consumer, &self.probe, job)? {
                        self.dispatch(job)?;
                    }
                }
                Some(Err(error)) => {
                    ::metrics::counter!(names::ERRORS, "class" => "transient").increment(1);
                    self.kafka
                        .outages()
                        .down(Dependency::Broker, &format_args!("consuming: {error}"));
                    self.check_consumer()?;
                }
                None => {}
            }
            let released = self.gate.release(&self.consumer)?;
            if !released.is_empty() {
                // Whatever the other inputs' workers still have in hand goes first.
                lock(&self.shared).drain();
                for job in released {
                    self.dispatch(job)?;
                }
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

    /// Hands a record to its partition's worker.
    fn dispatch(&mut self, job: Job) -> anyhow::Result<()> {
        let partition = self.shop.topology.task_of(job.record.partition);
        let mut job = Some(job);
        self.hand(Target::Task(partition), |worker| {
            worker.send(job.take().expect("BUG: a record goes to one worker"))
        })
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
        self.hand(Target::Unresumed, Worker::resume)?;
        for changed in changes {
            self.hand(Target::All, |worker| {
                worker.global_changed(Arc::clone(&changed))
            })?;
        }
        Ok(())
    }

    /// Hands work to `target`'s workers, opening the interval's transaction first.
    fn hand(
        &mut self,
        target: Target,
        mut give: impl FnMut(&Worker) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
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
            return Ok(());
        }
        if let Err(error) = self.begin_if_idle(&mut shared) {
            // The work is dropped here: records are read again after the rewind, and a
            // restored task resumes anew.
            drop(shared);
            return self.recover(Cause::Commit, &format_args!("{error:#}"));
        }
        for &partition in partitions {
            let worker = shared
                .workers
                .get_mut(&partition)
                .with_context(|| format!("BUG: no worker for assigned partition {partition}"))?;
            give(worker)?;
            worker.resumed |= resuming;
            shared.in_flight += 1;
        }
        Ok(())
    }

    fn report_lag(&self) {
        let Ok(position) = self.consumer.position() else {
            return;
        };
        for element in position.elements() {
            let Offset::Offset(at) = element.offset() else {
                continue;
            };
            if let Ok((_, high)) = self.probe.fetch_watermarks(
                element.topic(),
                element.partition(),
                Duration::from_secs(1),
            ) {
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
}
