//! The global thread (Kafka Streams' `GlobalStreamThread`): one per instance, for a processor
//! with global inputs. It reads every partition of those topics (`read_committed`, outside the
//! consumer group, never committing: the topics are the tables' logs) into the
//! [`GlobalTables`], first to the end of what was committed when it started (the runner starts
//! no task before that), then as records come. It tells the runner which keys each record
//! changed, and the runner hands that news to every task
//! ([`crate::streams::Processor::global_changed`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};

use super::shop::{Retried, Shop};
use crate::streams::global::{Changed, GlobalTables};
use crate::streams::kafka::Client;
use crate::streams::processor::Processor;
use crate::streams::record::RawRecord;

/// What the global thread tells the runner.
pub(super) enum News {
    /// The tables hold their topics up to where they ended at start: tasks may start.
    Ready,
    /// A record changed these keys (sent once ready).
    Changed(Arc<[Changed]>),
    /// The thread stopped with this error.
    Failed(anyhow::Error),
}

/// The running global thread.
pub(super) struct GlobalThread {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub(super) news: Receiver<News>,
}

impl GlobalThread {
    /// Starts keeping `tables` with `processor` (an instance of its own), and waits until they
    /// are read to the end of what their topics had committed.
    ///
    /// # Errors
    /// The consumer cannot be created, the thread failed before it was ready, or shutdown came
    /// first.
    pub(super) fn start<P: Processor + 'static>(
        processor: P,
        tables: GlobalTables,
        shop: Arc<Shop>,
    ) -> anyhow::Result<Self> {
        let kafka = &shop.kafka;
        let group = kafka.group(&format!("{}-global", shop.topology.group_id()));
        let consumer = kafka
            .consumer(&group, (), |_| {})
            .context("creating the global tables' consumer")?;
        let stop = Arc::new(AtomicBool::new(false));
        let shutdown = Arc::clone(kafka.shutdown());
        let (tell, news) = std::sync::mpsc::channel();
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("global-tables".into())
                .spawn(move || {
                    let keeper = Keeper {
                        processor,
                        tables,
                        consumer,
                        shop,
                        stop,
                        tell: tell.clone(),
                    };
                    if let Err(error) = keeper.run() {
                        let _ = tell.send(News::Failed(error));
                    }
                })
                .context("starting the global tables' thread")?
        };
        let global = Self {
            stop,
            thread: Some(thread),
            news,
        };
        loop {
            match global.news.recv() {
                Ok(News::Ready) => return Ok(global),
                Ok(News::Failed(error)) => return Err(error.context("reading the global tables")),
                Ok(News::Changed(_)) => {}
                // Shutdown while reading: the runner's loop ends before it starts a task.
                Err(_) if shutdown.load(Ordering::SeqCst) => return Ok(global),
                Err(_) => anyhow::bail!("the global tables' thread stopped before it was ready"),
            }
        }
    }
}

impl Drop for GlobalThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("The global tables' thread panicked.");
        }
    }
}

struct Keeper<P> {
    processor: P,
    tables: GlobalTables,
    consumer: BaseConsumer<Client>,
    shop: Arc<Shop>,
    stop: Arc<AtomicBool>,
    tell: Sender<News>,
}

impl<P: Processor> Keeper<P> {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst) || self.shop.kafka.stopping()
    }

    fn run(self) -> anyhow::Result<()> {
        let Some(assignment) = self.bootstrap()? else {
            return Ok(());
        };
        self.consumer
            .assign(&assignment)
            .context("assigning the global tables' partitions")?;
        tracing::info!("Global tables read.");
        if self.tell.send(News::Ready).is_err() {
            return Ok(());
        }
        let mut last_report = Instant::now();
        while !self.stopping() {
            if last_report.elapsed() >= Duration::from_secs(5) {
                self.tables.report_sizes();
                last_report = Instant::now();
            }
            match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(message)) => {
                    let record = self.shop.kafka.record(&message);
                    let Some(changed) = self.apply(&record)? else {
                        return Ok(());
                    };
                    if !changed.is_empty() && self.tell.send(News::Changed(changed.into())).is_err()
                    {
                        return Ok(());
                    }
                }
                // librdkafka retries on its own; the client context made it an outage.
                Some(Err(error)) => tracing::debug!(error = %error, "Reading the global tables."),
                None => {}
            }
        }
        Ok(())
    }

    /// Reads every partition of every global input from the beginning to the end of what is
    /// committed now (the restore reader: an open transaction does not hold the start up), and
    /// returns where to follow them from; `None` when shutdown came first. A broker outage
    /// midway starts it again on empty tables.
    fn bootstrap(&self) -> anyhow::Result<Option<TopicPartitionList>> {
        let kafka = &self.shop.kafka;
        let topics: Vec<String> = self
            .shop
            .topology
            .global_topics()
            .iter()
            .map(|t| kafka.topic(t))
            .collect();
        let mut partitions: Vec<(String, i32)> = Vec::new();
        for (topic, count) in kafka.partition_counts(&self.consumer, topics)? {
            partitions.extend((0..i32::try_from(count)?).map(|p| (topic.clone(), p)));
        }
        let group = kafka.group(&format!("{}-global", self.shop.topology.group_id()));
        let whole: Vec<(String, i32, i64)> =
            partitions.iter().map(|(t, p)| (t.clone(), *p, 0)).collect();
        let read = kafka.read_whole(
            "reading the global tables",
            &group,
            &whole,
            || {
                self.tables.clear();
                BTreeMap::new()
            },
            |next: &mut BTreeMap<(String, i32), i64>, message| {
                let record = kafka.record(message);
                match self.apply(&record) {
                    Ok(Some(_)) => {
                        next.insert(
                            (message.topic().to_owned(), message.partition()),
                            message.offset() + 1,
                        );
                        Ok(())
                    }
                    Ok(None) => Err("shutdown requested".into()),
                    Err(error) => Err(format!("{error:#}").into()),
                }
            },
        );
        let next = match read {
            Ok((next, _)) => next,
            Err(_) if self.stopping() => return Ok(None),
            Err(error) => return Err(error),
        };
        let mut assignment = TopicPartitionList::new();
        for at in &partitions {
            let from = next
                .get(at)
                .map_or(Offset::Beginning, |at| Offset::Offset(*at));
            assignment.add_partition_offset(&at.0, at.1, from)?;
        }
        Ok(Some(assignment))
    }

    /// Folds one record into the tables; `None` when shutdown interrupted a wait for the
    /// registry.
    fn apply(&self, record: &RawRecord) -> anyhow::Result<Option<Vec<Changed>>> {
        let (input, _) = self
            .shop
            .topology
            .global_input(&record.topic)
            .with_context(|| format!("BUG: read {} which is not a global input", record.topic))?;
        let avro = match self.shop.resolve_avro(input.format, record, false)? {
            Retried::Interrupted => return Ok(None),
            Retried::Stalled => anyhow::bail!("BUG: a global table waits outside transactions"),
            Retried::Answer(Err(error)) => {
                tracing::warn!(topic = %record.topic, partition = record.partition, offset = record.offset, error = %error, "A global table's record could not be decoded; skipped.");
                return Ok(Some(Vec::new()));
            }
            Retried::Answer(Ok(avro)) => avro,
        };
        Ok(Some(self.tables.apply(&self.processor, record, avro)?))
    }
}
