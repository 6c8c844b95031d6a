//! One thread per assigned partition: it owns that partition's [`Task`] and handles its records
//! in order (decode, process, produce), so partitions are processed in parallel while each keeps
//! its order. Workers report every record back to the runner, which commits.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use backon::{BackoffBuilder, ExponentialBuilder};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord};

use super::DeliveryCounter;
use super::config::RunnerConfig;
use super::metrics as names;
use crate::cdc::{Encoding, Envelope};
use crate::streams::codec::{AvroCodec, CodecError};
use crate::streams::dlq::{ProducedRecord, RawRecord};
use crate::streams::processor::Processor;
use crate::streams::task::{AvroResolved, Outcome, Task};
use crate::streams::topology::{InputFormat, Topology};

/// What every worker shares: the producer, the registry codec, settings.
pub(super) struct Shop {
    pub(super) producer: Arc<BaseProducer<DeliveryCounter>>,
    pub(super) codec: AvroCodec,
    pub(super) runtime: tokio::runtime::Handle,
    pub(super) config: RunnerConfig,
    pub(super) topology: Topology,
    pub(super) shutdown: Arc<AtomicBool>,
    /// Per-topic counters by metric name, cached: building labels per record costs allocations
    /// the hot path does not need.
    counters: Mutex<HashMap<&'static str, HashMap<String, ::metrics::Counter>>>,
}

impl Shop {
    pub(super) fn new(
        producer: Arc<BaseProducer<DeliveryCounter>>,
        runtime: tokio::runtime::Handle,
        config: RunnerConfig,
        topology: Topology,
        shutdown: Arc<AtomicBool>,
    ) -> Self {
        Self {
            producer,
            codec: AvroCodec::new(&config.schema_registry_url),
            runtime,
            config,
            topology,
            shutdown,
            counters: Mutex::default(),
        }
    }

    pub(super) fn prefixed(&self, topic: &str) -> String {
        format!("{}{topic}", self.config.topic_prefix)
    }

    fn count(&self, name: &'static str, topic: &str) {
        let mut counters = self
            .counters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let by_topic = counters.entry(name).or_default();
        if let Some(counter) = by_topic.get(topic) {
            counter.increment(1);
            return;
        }
        let counter = ::metrics::counter!(name, "topic" => topic.to_owned());
        counter.increment(1);
        by_topic.insert(topic.to_owned(), counter);
    }
}

/// A record to handle, with its (prefixed) source topic.
pub(super) struct Job {
    pub(super) record: RawRecord,
    pub(super) prefixed_topic: String,
}

/// What a worker reports for each job.
pub(super) enum Event {
    /// Handled; its offset may be committed.
    Done {
        prefixed_topic: String,
        partition: i32,
        next_offset: i64,
    },
    /// Not handled because shutdown interrupted a retry (nor will later ones of this worker be).
    Interrupted,
    /// The processor must stop.
    Fatal(anyhow::Error),
}

/// A running worker.
pub(super) struct Worker {
    jobs: Option<SyncSender<Job>>,
    thread: Option<JoinHandle<()>>,
}

/// Jobs queued per worker before the consumer waits for it.
const QUEUE: usize = 1_000;

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
            .spawn(move || work(task, &shop, &queue, &events))
            .context("starting a partition worker")?;
        Ok(Self {
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    /// Queues a job (waits while the worker's queue is full).
    pub(super) fn send(&self, job: Job) -> anyhow::Result<()> {
        self.jobs
            .as_ref()
            .expect("BUG: a stopped worker gets no jobs")
            .send(job)
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
    mut task: Task<P>,
    shop: &Shop,
    queue: &Receiver<Job>,
    events: &Sender<Event>,
) {
    let mut interrupted = false;
    let mut last_report = Instant::now();
    while let Ok(job) = queue.recv() {
        let event = if interrupted {
            Event::Interrupted
        } else {
            match handle(&mut task, shop, job) {
                Ok(Some(event)) => event,
                Ok(None) => {
                    interrupted = true;
                    Event::Interrupted
                }
                Err(error) => Event::Fatal(error),
            }
        };
        if events.send(event).is_err() {
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

/// Handles one record; `None` when shutdown interrupted a retry.
fn handle<P: Processor>(
    task: &mut Task<P>,
    shop: &Shop,
    job: Job,
) -> anyhow::Result<Option<Event>> {
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
    let avro_key = matches!(format, InputFormat::Cdc(f) if f.encoding == Encoding::Avro && f.envelope == Envelope::Debezium);
    let avro_value = matches!(format, InputFormat::Avro)
        || matches!(format, InputFormat::Cdc(f) if f.encoding == Encoding::Avro);
    let outcome = if avro_value {
        let key = if avro_key {
            decode_avro(shop, record.key.as_deref())?
        } else {
            Some(Ok(None))
        };
        let value = decode_avro(shop, record.value.as_deref())?;
        match (key, value) {
            (None, _) | (_, None) => return Ok(None),
            (Some(Err(message)), _) | (_, Some(Err(message))) => {
                task.dead_letter(&record, &message)
            }
            (Some(Ok(key)), Some(Ok(value))) => {
                handled(task, &record, Some(AvroResolved { key, value }))?
            }
        }
    } else {
        handled(task, &record, None)?
    };
    // Changelog records go to the task's partition (0 for a single-task processor).
    if !produce(shop, outcome, shop.topology.task_of(record.partition))? {
        return Ok(None);
    }
    ::metrics::histogram!(names::PROCESS_LATENCY).record(started.elapsed().as_secs_f64());
    Ok(Some(Event::Done {
        prefixed_topic,
        partition: record.partition,
        next_offset: record.offset + 1,
    }))
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

/// Decodes through the registry, retrying transient failures. `None`: interrupted by shutdown;
/// `Some(Err)`: poison.
#[allow(
    clippy::type_complexity,
    reason = "three outcomes, each meaningful, read once by the caller"
)]
fn decode_avro(
    shop: &Shop,
    bytes: Option<&[u8]>,
) -> anyhow::Result<Option<Result<Option<apache_avro::types::Value>, String>>> {
    retry(shop, || shop.runtime.block_on(shop.codec.decode(bytes)))
        .map(|r| r.map(|r| r.map_err(|e| e.to_string())))
}

/// Runs `attempt` until it is not transient. Fatal is an error, poison is returned; `None` when
/// shutdown arrived while waiting to retry.
fn retry<T>(
    shop: &Shop,
    attempt: impl Fn() -> Result<T, CodecError>,
) -> anyhow::Result<Option<Result<T, CodecError>>> {
    let mut delays = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(shop.config.max_backoff)
        .with_jitter()
        .without_max_times()
        .build();
    loop {
        match attempt() {
            Err(CodecError::Transient(message)) => {
                ::metrics::counter!(names::ERRORS, "class" => "transient").increment(1);
                let delay = delays.next().unwrap_or(shop.config.max_backoff);
                tracing::warn!(error = %message, retry_in = ?delay, "Registry unavailable; retrying.");
                let until = Instant::now() + delay;
                while Instant::now() < until {
                    if shop.shutdown.load(Ordering::SeqCst) {
                        return Ok(None);
                    }
                    std::thread::sleep(Duration::from_millis(50).min(until - Instant::now()));
                }
            }
            Err(CodecError::Fatal(message)) => {
                ::metrics::counter!(names::ERRORS, "class" => "fatal").increment(1);
                anyhow::bail!("fatal: {message}");
            }
            Err(poison @ CodecError::Poison(_)) => return Ok(Some(Err(poison))),
            Ok(value) => return Ok(Some(Ok(value))),
        }
    }
}

/// Sends an outcome's records; `false` when shutdown interrupted a retry.
fn produce(shop: &Shop, outcome: Outcome, partition: i32) -> anyhow::Result<bool> {
    let mut records: Vec<ProducedRecord> = Vec::with_capacity(outcome.outputs.len() + 1);
    for output in outcome.outputs {
        let topic = shop.prefixed(&output.topic);
        let value = match &output.value {
            None => None,
            Some(value) => match retry(shop, || {
                shop.runtime.block_on(shop.codec.encode(&topic, value))
            })? {
                None => return Ok(false),
                Some(Ok(bytes)) => Some(bytes),
                Some(Err(error)) => anyhow::bail!("encoding for {topic}: {error}"),
            },
        };
        shop.count(names::RECORDS_OUT, &output.topic);
        records.push(ProducedRecord {
            topic,
            key: Some(output.key.into_bytes()),
            value,
            headers: Vec::new(),
        });
    }
    for mut record in outcome.changelog {
        record.topic = shop.prefixed(&record.topic);
        send(shop, &record, Some(partition))?;
    }
    if let Some(mut dead) = outcome.dead_letter {
        ::metrics::counter!(names::DLQ).increment(1);
        ::metrics::counter!(names::ERRORS, "class" => "poison").increment(1);
        dead.topic = shop.prefixed(&dead.topic);
        records.push(dead);
    }
    for record in &records {
        send(shop, record, None)?;
    }
    Ok(true)
}

fn send(shop: &Shop, record: &ProducedRecord, partition: Option<i32>) -> anyhow::Result<()> {
    let mut headers = OwnedHeaders::new();
    for (name, value) in &record.headers {
        headers = headers.insert(Header {
            key: name,
            value: Some(value),
        });
    }
    let mut base = BaseRecord::<[u8], [u8]>::to(&record.topic).headers(headers);
    if let Some(key) = &record.key {
        base = base.key(key.as_slice());
    }
    if let Some(value) = &record.value {
        base = base.payload(value.as_slice());
    }
    if let Some(partition) = partition {
        base = base.partition(partition);
    }
    loop {
        match shop.producer.send(base) {
            Ok(()) => return Ok(()),
            Err((
                KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                back,
            )) => {
                shop.producer.poll(Duration::from_millis(1));
                base = back;
            }
            Err((error, _)) => {
                return Err(error).with_context(|| format!("producing to {}", record.topic));
            }
        }
    }
}
