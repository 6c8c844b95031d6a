//! The effect stage: work that leaves Kafka (an email now; an HTTP call or another system later),
//! in the outbox pattern. A pure processor decides what to do and emits each effect as a request
//! record ([`request`]) in its exactly-once transaction; the executor here reads those requests
//! `read_committed`, performs each through an [`Effect`], records its id in the stage's compacted
//! done topic, and moves on.
//!
//! Guarantee: every committed request is performed at least once, and a crash repeats at most
//! the one in flight. Before performing a request the executor looks its id up in the done ids
//! of its partition (restored from the done topic when the partition is assigned); after
//! performing it, it writes the id to the done topic and waits until the broker has it, and
//! only then stores the request's offset. A crash between the effect and that write is the only
//! way an effect repeats, and only the effect in hand can be there.
//!
//! Failures are the [`Effect`]'s to classify: transient ones (a server away, a 4xx of SMTP) are
//! retried with capped backoff for as long as they last, nothing is committed meanwhile and
//! shutdown interrupts the wait; permanent ones (a 5xx for a recipient, a request that cannot
//! be done) go to the stage's DLQ with the reason, and the next request follows. Requests are
//! performed one at a time per executor, in partition order.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::Offset;
use rdkafka::consumer::{BaseConsumer, Consumer, Rebalance};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::dlq;
use super::kafka::{Client, Dependency, Health, Kafka, Producer, Rebalancing, StreamsSettings};
use super::metrics as names;
use super::processor::{OutValue, OutputRecord, ProcessError};
use super::record::{ProducedRecord, RawRecord};
use super::supervise::supervise;
use crate::sync::lock;

/// Why an effect was not performed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EffectError {
    /// It may succeed later (the target is away, or asked to try again): retried.
    #[error("transient: {0}")]
    Transient(String),
    /// It will never succeed as asked: dead-lettered with this reason.
    #[error("permanent: {0}")]
    Permanent(String),
}

/// Performs requests of one kind. Implementations hold their clients (an SMTP pool, an HTTP
/// client) and say which failures are transient.
pub trait Effect: Send + 'static {
    /// A request, as the processor wrote it (JSON).
    type Request: DeserializeOwned + Send;

    /// Performs `request`.
    fn perform(
        &mut self,
        request: &Self::Request,
    ) -> impl Future<Output = Result<(), EffectError>> + Send;
}

/// What names an effect stage's topics and consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// The stage's name: consumer group `<name>-effects`, DLQ header.
    pub name: String,
    /// The topic of requests (keyed by request id; JSON values).
    pub requests: String,
    /// The compacted topic of performed request ids, with at least as many partitions as
    /// `requests` (partition for partition).
    pub done: String,
    /// Where permanent failures and malformed requests go.
    pub dlq: String,
}

/// The record asking the stage on `topic` to perform `request` once. `id` must be
/// deterministic: the same decision, made again after a rewind, must produce the same id.
///
/// # Errors
/// Fatal when `request` does not serialize (a bug).
pub fn request<R: Serialize>(
    topic: &str,
    id: &str,
    request: &R,
) -> Result<OutputRecord, ProcessError> {
    let value = serde_json::to_value(request)
        .map_err(|e| ProcessError::Fatal(format!("BUG: an effect request: {e}")))?;
    Ok(OutputRecord {
        topic: topic.to_owned(),
        key: id.to_owned(),
        value: Some(OutValue::Json(value)),
    })
}

/// Runs the stage until SIGTERM or SIGINT, serving the admin endpoint (see [`supervise`]).
///
/// # Errors
/// As [`run_until`].
pub async fn run<E: Effect>(
    settings: StreamsSettings,
    stage: Stage,
    effect: E,
) -> anyhow::Result<()> {
    let executor = settings.clone();
    supervise(&settings, move |shutdown, health| {
        run_until(executor, stage, effect, shutdown, health)
    })
    .await
}

/// Runs the stage until `shutdown` is set; `health` reports its broker outages. Runs on a
/// blocking thread; `effect` runs on the current runtime.
///
/// # Errors
/// Bad configuration, missing topics, a broker outage longer than `streams.max_outage`, or a
/// done topic that cannot be read.
pub async fn run_until<E: Effect>(
    settings: StreamsSettings,
    stage: Stage,
    effect: E,
    shutdown: Arc<AtomicBool>,
    health: Arc<Health>,
) -> anyhow::Result<()> {
    settings.validate()?;
    let runtime = tokio::runtime::Handle::current();
    let watchdog = super::kafka::health::watchdog(Arc::clone(&health));
    let kafka = Kafka::new(settings, health, shutdown);
    let result =
        tokio::task::spawn_blocking(move || Executor::start(kafka, stage, effect, runtime)?.run())
            .await;
    watchdog.abort();
    result.context("the effect thread panicked")?
}

/// Partitions assigned since the loop last looked, and revoked ones.
#[derive(Default)]
struct Assignment {
    added: BTreeSet<i32>,
    revoked: BTreeSet<i32>,
}

/// The stage consumer's callbacks: they note the assignment's changes for the loop.
struct Follow(Arc<Mutex<Assignment>>);

impl Rebalancing for Follow {
    fn after(&self, _: &BaseConsumer<Client<Self>>, rebalance: &Rebalance<'_>) {
        let mut assignment = lock(&self.0);
        match rebalance {
            Rebalance::Assign(list) => {
                assignment
                    .added
                    .extend(list.elements().iter().map(|e| e.partition()));
            }
            Rebalance::Revoke(list) => {
                assignment
                    .revoked
                    .extend(list.elements().iter().map(|e| e.partition()));
            }
            Rebalance::Error(_) => {}
        }
    }
}

struct Executor<E> {
    effect: E,
    stage: Stage,
    kafka: Kafka,
    consumer: BaseConsumer<Client<Follow>>,
    producer: Arc<Producer>,
    assignment: Arc<Mutex<Assignment>>,
    /// Ids performed, per assigned partition.
    done: BTreeMap<i32, HashSet<String>>,
    runtime: tokio::runtime::Handle,
}

/// What became of one request.
enum Handled {
    Performed,
    Duplicate,
    DeadLettered,
    /// Shutdown interrupted a retry: nothing stored, the request is read again next time.
    Interrupted,
}

impl<E: Effect> Executor<E> {
    fn start(
        kafka: Kafka,
        stage: Stage,
        effect: E,
        runtime: tokio::runtime::Handle,
    ) -> anyhow::Result<Self> {
        let group = kafka.group(&format!("{}-effects", stage.name));
        let member = format!("{group}-{}", kafka.settings().instance_id);
        let assignment = Arc::new(Mutex::new(Assignment::default()));
        let consumer = kafka.consumer(&group, Follow(Arc::clone(&assignment)), |config| {
            config
                .set("group.instance.id", &member)
                // Offsets are stored by hand once a request is settled, and committed by
                // librdkafka every second, on rebalance and on close; a replay from an older
                // commit finds the settled requests in the done ids.
                .set("enable.auto.offset.store", "false")
                .set("enable.auto.commit", "true")
                .set("auto.commit.interval.ms", "1000");
        })?;
        let mut producer_config = kafka.producer_config(None);
        // One record is sent at a time and waited for: batching would only delay it.
        producer_config.set("linger.ms", "0");
        let producer = kafka.create_producer(&producer_config)?;
        let executor = Self {
            effect,
            stage,
            kafka,
            consumer,
            producer,
            assignment,
            done: BTreeMap::new(),
            runtime,
        };
        executor.check_topics()?;
        let requests = executor.kafka.topic(&executor.stage.requests);
        executor
            .consumer
            .subscribe(&[&requests])
            .context("subscribing")?;
        Ok(executor)
    }

    /// The done topic must have a partition for every request partition; the DLQ must exist.
    fn check_topics(&self) -> anyhow::Result<()> {
        let [requests, done, dlq] =
            [&self.stage.requests, &self.stage.done, &self.stage.dlq].map(|t| self.kafka.topic(t));
        let counts = self
            .kafka
            .partition_counts(&self.consumer, [requests.clone(), done.clone(), dlq])?;
        let (requests, done) = (counts[&requests], counts[&done]);
        anyhow::ensure!(
            done >= requests,
            "{} has {done} partitions, fewer than the {requests} of {}: each request partition records its done ids in the same partition",
            self.stage.done,
            self.stage.requests
        );
        Ok(())
    }

    fn run(mut self) -> anyhow::Result<()> {
        tracing::info!(stage = %self.stage.name, requests = %self.stage.requests, "Effect stage started.");
        while !self.kafka.stopping() {
            let polled = self
                .consumer
                .poll(Duration::from_millis(100))
                .map(|r| r.map(|m| self.kafka.record(&m)));
            self.follow_assignment()?;
            match polled {
                Some(Ok(record)) => {
                    if !self.done.contains_key(&record.partition) {
                        // Fetched before a revocation the loop has seen: no longer ours.
                        continue;
                    }
                    let (partition, offset) = (record.partition, record.offset);
                    match self.handle(record)? {
                        Handled::Interrupted => break,
                        handled => self.settled(partition, offset, &handled)?,
                    }
                }
                Some(Err(error)) => {
                    self.kafka
                        .outages()
                        .down(Dependency::Broker, &format_args!("consuming: {error}"));
                }
                None => {}
            }
            self.producer.poll(Duration::ZERO);
        }
        // Offsets stored so far are committed on close.
        if let Err(error) = self
            .consumer
            .commit_consumer_state(rdkafka::consumer::CommitMode::Sync)
        {
            tracing::debug!(error = %error, "Committing on shutdown failed; the done ids cover the replay.");
        }
        tracing::info!(stage = %self.stage.name, "Effect stage stopped.");
        Ok(())
    }

    /// Restores the done ids of newly assigned partitions and forgets revoked ones.
    fn follow_assignment(&mut self) -> anyhow::Result<()> {
        let (added, revoked) = {
            let mut assignment = lock(&self.assignment);
            (
                std::mem::take(&mut assignment.added),
                std::mem::take(&mut assignment.revoked),
            )
        };
        for partition in revoked {
            self.done.remove(&partition);
        }
        for partition in added {
            let started = Instant::now();
            let topic = self.kafka.topic(&self.stage.done);
            let group = self
                .kafka
                .group(&format!("{}-effects-restore", self.stage.name));
            let (ids, _) = self.kafka.read_whole(
                &format!("restoring {topic}[{partition}]"),
                &group,
                &[(topic.clone(), partition, 0)],
                HashSet::new,
                |ids, message| {
                    if let Some(key) = rdkafka::message::Message::key(message) {
                        ids.insert(String::from_utf8_lossy(key).into_owned());
                    }
                    Ok(())
                },
            )?;
            tracing::info!(partition, ids = ids.len(), elapsed = ?started.elapsed(), "Done ids restored.");
            self.done.insert(partition, ids);
        }
        Ok(())
    }

    fn handle(&mut self, record: RawRecord) -> anyhow::Result<Handled> {
        let id = record
            .key
            .as_deref()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .filter(|id| !id.is_empty());
        let Some(id) = id else {
            return self.dead_letter(&record, "a request without an id (the record key)");
        };
        if self
            .done
            .get(&record.partition)
            .is_some_and(|ids| ids.contains(&id))
        {
            ::metrics::counter!(names::EFFECTS_SKIPPED, "stage" => self.stage.name.clone())
                .increment(1);
            return Ok(Handled::Duplicate);
        }
        let request: E::Request = match record
            .value
            .as_deref()
            .map(serde_json::from_slice)
            .transpose()
        {
            Ok(Some(request)) => request,
            Ok(None) => return self.refuse(&record, id, "a request without a value"),
            Err(error) => return self.refuse(&record, id, &format!("not a request: {error}")),
        };
        let mut delays = self.kafka.backoff();
        let mut failing_since: Option<Instant> = None;
        loop {
            let started = Instant::now();
            let result = self.runtime.block_on(self.effect.perform(&request));
            ::metrics::histogram!(names::EFFECT_LATENCY, "stage" => self.stage.name.clone())
                .record(started.elapsed().as_secs_f64());
            match result {
                Ok(()) => {
                    if let Some(since) = failing_since {
                        tracing::info!(stage = %self.stage.name, after = ?since.elapsed(), "Effect performed after transient failures.");
                    }
                    break;
                }
                Err(EffectError::Permanent(reason)) => {
                    ::metrics::counter!(names::EFFECTS_FAILED, "stage" => self.stage.name.clone(), "class" => "permanent").increment(1);
                    return self.refuse(&record, id, &reason);
                }
                Err(EffectError::Transient(reason)) => {
                    ::metrics::counter!(names::EFFECTS_FAILED, "stage" => self.stage.name.clone(), "class" => "transient").increment(1);
                    if failing_since.is_none() {
                        // Once per request, not per retry; the reason names no personal data
                        // by the Effect's contract.
                        tracing::warn!(stage = %self.stage.name, partition = record.partition, offset = record.offset, reason, "Effect failed transiently; retrying until it succeeds.");
                        failing_since = Some(Instant::now());
                    }
                    let delay = delays.next().unwrap_or(self.kafka.settings().max_backoff);
                    if !self.kafka.sleep(delay) {
                        return Ok(Handled::Interrupted);
                    }
                }
            }
        }
        self.record_done(record.partition, id, "performed")?;
        ::metrics::counter!(names::EFFECTS_PERFORMED, "stage" => self.stage.name.clone())
            .increment(1);
        Ok(Handled::Performed)
    }

    /// Dead-letters a request that has an id, and records the id as settled, so a replay does
    /// not try it again.
    fn refuse(&mut self, record: &RawRecord, id: String, reason: &str) -> anyhow::Result<Handled> {
        self.dead_letter(record, reason)?;
        self.record_done(record.partition, id, "dead-lettered")?;
        Ok(Handled::DeadLettered)
    }

    /// Writes `id` to the done topic and waits until the broker has it: before the request's
    /// offset is stored, so a crash from here on finds it settled.
    fn record_done(&mut self, partition: i32, id: String, outcome: &str) -> anyhow::Result<()> {
        let done = ProducedRecord {
            topic: self.kafka.topic(&self.stage.done),
            key: Some(id.clone().into_bytes()),
            value: Some(
                serde_json::json!({ "outcome": outcome, "at": now_ms() })
                    .to_string()
                    .into_bytes(),
            ),
            headers: Vec::new(),
        };
        self.kafka.deliver(
            &self.producer,
            &done,
            Some(partition),
            "recording a settled request",
        )?;
        if let Some(ids) = self.done.get_mut(&partition) {
            ids.insert(id);
        }
        Ok(())
    }

    fn dead_letter(&self, record: &RawRecord, reason: &str) -> anyhow::Result<Handled> {
        tracing::warn!(stage = %self.stage.name, topic = %record.topic, partition = record.partition, offset = record.offset, "Request dead-lettered.");
        let mut dead = dlq::dead_letter(&self.stage.dlq, &self.stage.name, record, reason);
        dead.topic = self.kafka.topic(&dead.topic);
        ::metrics::counter!(names::DLQ).increment(1);
        self.kafka
            .deliver(&self.producer, &dead, None, "dead-lettering a request")?;
        Ok(Handled::DeadLettered)
    }

    /// Stores the offset after a settled request, to be committed.
    fn settled(&self, partition: i32, offset: i64, handled: &Handled) -> anyhow::Result<()> {
        if matches!(handled, Handled::Duplicate) {
            tracing::debug!(partition, offset, "Request already performed; skipped.");
        }
        let topic = self.kafka.topic(&self.stage.requests);
        let mut list = rdkafka::TopicPartitionList::new();
        list.add_partition_offset(&topic, partition, Offset::Offset(offset + 1))?;
        self.consumer
            .store_offsets(&list)
            .with_context(|| format!("storing the offset of {topic}[{partition}]"))
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
