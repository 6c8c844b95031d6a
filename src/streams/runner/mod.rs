//! The Kafka runner: drives a processor's [`Task`]s against a real broker.
//!
//! - One consumer in the group `<prefix>clinic-<processor>`, `read_committed`, range assignment so the
//!   same partition number of every input topic lands on the same instance (co-partitioning,
//!   which tables need; librdkafka offers no custom assignor, so the eager protocol it is).
//! - One [`Task`] per assigned partition number, each with its own stores, restored from the
//!   same partition of the stores' changelog topics before it sees a record.
//! - **Exactly-once**: one transactional producer (`transactional.id` =
//!   `<prefix>clinic-<processor>-<instance_id>`); outputs, changelog and DLQ records and the input offsets
//!   of a commit interval go in one transaction (`send_offsets_to_transaction`). A failed commit
//!   aborts, drops the tasks, rewinds to the committed offsets and restores: nothing is lost or
//!   applied twice.
//! - **At-least-once**: offsets are committed only after every record of the interval was
//!   delivered.
//! - Static membership (`group.instance.id` from the instance id): a restarted instance gets its
//!   partitions back at once; one that is gone for good is replaced after `session.timeout.ms`.
//! - Rebalance: the open transaction (or delivered interval) is committed in the revoke callback,
//!   before the partitions go; tasks of partitions not assigned again are dropped.
//! - Poison records go to the DLQ; transient registry failures are retried with capped
//!   exponential backoff, interruptible by shutdown; fatal errors stop the runner with an error.
//! - Shutdown (the flag, set by SIGTERM/SIGINT in [`run`]): finish the record in hand, commit,
//!   close.

pub mod admin;
pub mod config;
pub mod metrics;
mod restore;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use backon::{BackoffBuilder, ExponentialBuilder};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Header, Headers as _, Message as _, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

pub use config::{Guarantee, RunnerConfig};

use super::codec::{AvroCodec, CodecError};
use super::dlq::{ProducedRecord, RawRecord};
use super::processor::Processor;
use super::task::{AvroResolved, Outcome, Task};
use super::topology::{InputFormat, Topology};
use crate::cdc::{Encoding, Envelope};
use metrics as names;

/// Readiness and liveness the admin endpoint reports.
#[derive(Debug, Default)]
pub struct Health {
    /// Set once the first assignment's stores are restored; cleared while restoring again.
    pub ready: AtomicBool,
}

/// Runs `factory`'s processor until SIGTERM or SIGINT, serving the admin endpoint.
///
/// # Errors
/// Bad configuration, a broker or topic problem at start-up, or a fatal processing error.
pub async fn run<P, F>(config: RunnerConfig, factory: F) -> anyhow::Result<()>
where
    P: Processor + 'static,
    F: Fn() -> P + Send + 'static,
{
    let shutdown = Arc::new(AtomicBool::new(false));
    let signal = Arc::clone(&shutdown);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("Shutdown requested; finishing the current commit.");
        signal.store(true, Ordering::SeqCst);
    });
    let health = Arc::new(Health::default());
    if let Some(addr) = config.admin_addr {
        let bound = admin::serve(addr, Arc::clone(&health)).await?;
        tracing::info!(address = %bound, "Admin endpoint listening.");
    }
    let deadline = config.shutdown_deadline;
    let flag = Arc::clone(&shutdown);
    let work = run_until(config, factory, shutdown, health);
    tokio::pin!(work);
    tokio::select! {
        result = &mut work => result,
        () = async {
            while !flag.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tokio::time::sleep(deadline).await;
        } => anyhow::bail!("shutdown did not finish within {deadline:?}"),
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(term) => term,
            Err(error) => {
                tracing::warn!(error = %error, "Cannot listen for SIGTERM; only SIGINT stops the runner.");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Runs until `shutdown` is set, then commits and returns. The processing loop runs on a blocking
/// thread; `health` reports readiness.
///
/// # Errors
/// As [`run`].
pub async fn run_until<P, F>(
    config: RunnerConfig,
    factory: F,
    shutdown: Arc<AtomicBool>,
    health: Arc<Health>,
) -> anyhow::Result<()>
where
    P: Processor + 'static,
    F: Fn() -> P + Send + 'static,
{
    config.validate().map_err(anyhow::Error::msg)?;
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        Runner::start(config, factory, shutdown, health, runtime)?.run()
    })
    .await
    .context("the processing thread panicked")?
}

/// What the loop and the rebalance callbacks share. The loop never holds the lock across `poll`,
/// so the callbacks (which run inside `poll`, on the same thread) always get it at once.
struct Shared<P> {
    tasks: BTreeMap<i32, Task<P>>,
    /// Next offset to commit per input partition, for the records handled since the last commit.
    pending: BTreeMap<(String, i32), i64>,
    transaction_open: bool,
    /// Assigned input partitions (prefixed topic names).
    assignment: BTreeSet<(String, i32)>,
    /// Partitions whose tasks must be created and restored before their records are handled.
    to_restore: BTreeSet<i32>,
    /// A commit in a callback failed: the loop must rewind.
    commit_failed: Option<String>,
}

struct Context<P> {
    shared: Arc<Mutex<Shared<P>>>,
    producer: Arc<BaseProducer<DeliveryCounter>>,
    guarantee: Guarantee,
}

impl<P: Send + 'static> ClientContext for Context<P> {}

impl<P: Processor + 'static> ConsumerContext for Context<P> {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(_) = rebalance {
            let mut shared = lock(&self.shared);
            if let Err(error) = commit(&mut shared, consumer, &self.producer, self.guarantee) {
                tracing::warn!(error = %error, "Commit before revocation failed; work since the last commit will be redone.");
                shared.commit_failed = Some(error.to_string());
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let mut shared = lock(&self.shared);
        match rebalance {
            Rebalance::Assign(assigned) => {
                shared.assignment = assigned
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_owned(), e.partition()))
                    .collect();
                let partitions: BTreeSet<i32> = shared.assignment.iter().map(|(_, p)| *p).collect();
                // Eager protocol: everything was revoked and committed; a partition we keep was
                // processed by nobody else in between, so its task and stores stay valid.
                shared.tasks.retain(|p, _| partitions.contains(p));
                let missing: Vec<i32> = partitions
                    .iter()
                    .filter(|p| !shared.tasks.contains_key(p))
                    .copied()
                    .collect();
                shared.to_restore.extend(missing);
                tracing::info!(partitions = ?partitions, "Partitions assigned.");
            }
            Rebalance::Revoke(_) => {
                shared.assignment.clear();
            }
            Rebalance::Error(error) => tracing::warn!(error = %error, "Rebalance error."),
        }
    }
}

/// Counts failed deliveries, so at-least-once commits only what was delivered.
#[derive(Default)]
struct DeliveryCounter {
    failed: AtomicU64,
}

impl ClientContext for DeliveryCounter {}

impl ProducerContext for DeliveryCounter {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, (): ()) {
        if let Err((error, _)) = result {
            tracing::warn!(error = %error, "A record was not delivered.");
            self.failed.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn lock<P>(shared: &Mutex<Shared<P>>) -> MutexGuard<'_, Shared<P>> {
    // A panic while holding the lock already ends the runner; the state is not used after it.
    shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

const COMMIT_TIMEOUT: Duration = Duration::from_secs(30);

/// Commits the interval: the transaction with its offsets, or (at-least-once) the offsets once
/// every record is delivered.
fn commit<P, C: ConsumerContext>(
    shared: &mut Shared<P>,
    consumer: &BaseConsumer<C>,
    producer: &BaseProducer<DeliveryCounter>,
    guarantee: Guarantee,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut offsets = TopicPartitionList::new();
    for ((topic, partition), next) in &shared.pending {
        offsets.add_partition_offset(topic, *partition, Offset::Offset(*next))?;
    }
    match guarantee {
        Guarantee::ExactlyOnce => {
            if !shared.transaction_open {
                return Ok(());
            }
            shared.transaction_open = false;
            let result = (|| -> Result<(), KafkaError> {
                if offsets.count() > 0 {
                    let metadata = consumer
                        .group_metadata()
                        .ok_or(KafkaError::NoMessageReceived)?;
                    producer.send_offsets_to_transaction(&offsets, &metadata, COMMIT_TIMEOUT)?;
                }
                // Delivery reports come from an event queue only the producer's own poll serves,
                // so flush first (commit_transaction's internal flush cannot serve it).
                flush(producer, COMMIT_TIMEOUT)?;
                producer.commit_transaction(COMMIT_TIMEOUT)
            })();
            if let Err(error) = result {
                let _ = producer.abort_transaction(COMMIT_TIMEOUT);
                shared.pending.clear();
                return Err(error).context("committing the transaction");
            }
        }
        Guarantee::AtLeastOnce => {
            flush(producer, COMMIT_TIMEOUT).context("flushing the producer")?;
            let failed = producer.context().failed.swap(0, Ordering::SeqCst);
            if failed > 0 {
                shared.pending.clear();
                anyhow::bail!("{failed} records were not delivered");
            }
            if offsets.count() > 0 {
                consumer
                    .commit(&offsets, CommitMode::Sync)
                    .context("committing offsets")?;
            }
        }
    }
    shared.pending.clear();
    tracing::debug!(elapsed = ?started.elapsed(), partitions = offsets.count(), "Committed.");
    ::metrics::counter!(names::COMMITS).increment(1);
    ::metrics::histogram!(names::COMMIT_LATENCY).record(started.elapsed().as_secs_f64());
    Ok(())
}

/// Waits until every produced record is delivered (or failed), serving delivery reports.
///
/// Written here because rust-rdkafka 0.39's `BaseProducer::flush` polls in slices that each last
/// their full 100 ms, even when the reports arrived at once: every flush, and so every commit,
/// took at least 100 ms (measured: commits went from ~103 ms to a few ms).
fn flush(producer: &BaseProducer<DeliveryCounter>, timeout: Duration) -> Result<(), KafkaError> {
    let deadline = Instant::now() + timeout;
    while producer.in_flight_count() > 0 {
        if Instant::now() >= deadline {
            return Err(KafkaError::Flush(
                rdkafka::types::RDKafkaErrorCode::OperationTimedOut,
            ));
        }
        producer.poll(Duration::from_millis(1));
    }
    Ok(())
}

struct Runner<P: Processor + 'static, F> {
    config: RunnerConfig,
    factory: F,
    topology: Topology,
    client: ClientConfig,
    consumer: BaseConsumer<Context<P>>,
    producer: Arc<BaseProducer<DeliveryCounter>>,
    shared: Arc<Mutex<Shared<P>>>,
    codec: AvroCodec,
    runtime: tokio::runtime::Handle,
    shutdown: Arc<AtomicBool>,
    health: Arc<Health>,
    transaction_started: Instant,
    /// Per-topic counters by metric name, cached (see `Runner::count`).
    counters: RefCell<HashMap<&'static str, HashMap<String, ::metrics::Counter>>>,
}

enum Handled {
    Done,
    /// Shutdown arrived while a transient failure was being retried; the record is not handled.
    Interrupted,
}

impl<P: Processor + 'static, F: Fn() -> P> Runner<P, F> {
    fn start(
        config: RunnerConfig,
        factory: F,
        shutdown: Arc<AtomicBool>,
        health: Arc<Health>,
        runtime: tokio::runtime::Handle,
    ) -> anyhow::Result<Self> {
        let topology = factory().topology();
        // The topic prefix namespaces a deployment; its group and transactional ids must be
        // namespaced alike, or two deployments on one cluster would fence each other.
        let group_id = format!("{}{}", config.topic_prefix, topology.group_id());
        let member_id = format!("{group_id}-{}", config.instance_id);
        let mut client = ClientConfig::new();
        client.set("bootstrap.servers", &config.brokers);
        for (key, value) in &config.librdkafka {
            client.set(key, value);
        }
        let mut producer_config = client.clone();
        if config.guarantee == Guarantee::ExactlyOnce {
            producer_config.set("transactional.id", &member_id);
            // Kafka Streams' default: a crashed instance's open transaction blocks read_committed
            // readers of its partitions for at most this long.
            if producer_config.get("transaction.timeout.ms").is_none() {
                producer_config.set("transaction.timeout.ms", "10000");
            }
        }
        producer_config.set("enable.idempotence", "true");
        let producer: BaseProducer<DeliveryCounter> = producer_config
            .create_with_context(DeliveryCounter::default())
            .context("creating the producer")?;
        let producer = Arc::new(producer);
        if config.guarantee == Guarantee::ExactlyOnce {
            // Fences a previous incarnation with the same transactional id and aborts its open
            // transaction, so the changelogs and inputs are settled before we restore.
            producer
                .init_transactions(COMMIT_TIMEOUT)
                .context("initialising transactions")?;
        }
        let shared = Arc::new(Mutex::new(Shared {
            tasks: BTreeMap::new(),
            pending: BTreeMap::new(),
            transaction_open: false,
            assignment: BTreeSet::new(),
            to_restore: BTreeSet::new(),
            commit_failed: None,
        }));
        let context = Context {
            shared: Arc::clone(&shared),
            producer: Arc::clone(&producer),
            guarantee: config.guarantee,
        };
        let consumer: BaseConsumer<Context<P>> = client
            .clone()
            .set("group.id", &group_id)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            .set("partition.assignment.strategy", "range")
            // Static membership: a restarted instance takes its partitions back without a
            // rebalance (and without waiting for its old session to expire).
            .set("group.instance.id", &member_id)
            .create_with_context(context)
            .context("creating the consumer")?;
        let runner = Self {
            codec: AvroCodec::new(&config.schema_registry_url),
            config,
            factory,
            topology,
            client,
            consumer,
            producer,
            shared,
            runtime,
            shutdown,
            health,
            transaction_started: Instant::now(),
            counters: RefCell::default(),
        };
        runner.check_topics()?;
        let topics: Vec<String> = runner
            .topology
            .inputs
            .iter()
            .map(|i| runner.prefixed(&i.topic))
            .collect();
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        runner.consumer.subscribe(&topics).context("subscribing")?;
        Ok(runner)
    }

    fn prefixed(&self, topic: &str) -> String {
        format!("{}{topic}", self.config.topic_prefix)
    }

    /// Every input and changelog topic must exist with the same partition count (tasks are
    /// per partition number across all of them); outputs and the DLQ must exist.
    fn check_topics(&self) -> anyhow::Result<()> {
        let metadata = self
            .consumer
            .fetch_metadata(None, Duration::from_secs(30))
            .context("fetching metadata")?;
        let partitions = |topic: &str| {
            metadata
                .topics()
                .iter()
                .find(|t| t.name() == topic && t.error().is_none())
                .map(|t| t.partitions().len())
        };
        let mut aligned: Vec<String> = self
            .topology
            .inputs
            .iter()
            .map(|i| self.prefixed(&i.topic))
            .collect();
        aligned.extend(
            self.topology
                .stores
                .iter()
                .map(|s| self.prefixed(&self.topology.changelog_topic(s))),
        );
        let mut counts = BTreeMap::new();
        for topic in &aligned {
            let count =
                partitions(topic).with_context(|| format!("topic {topic} does not exist"))?;
            counts.insert(topic.clone(), count);
        }
        let distinct: BTreeSet<usize> = counts.values().copied().collect();
        anyhow::ensure!(
            distinct.len() <= 1,
            "input and changelog topics must have the same partition count, found {counts:?}"
        );
        let mut others: Vec<String> = self
            .topology
            .outputs
            .iter()
            .map(|t| self.prefixed(t))
            .collect();
        others.push(self.prefixed(&self.topology.dlq_topic()));
        for topic in others {
            partitions(&topic).with_context(|| format!("topic {topic} does not exist"))?;
        }
        Ok(())
    }

    fn run(mut self) -> anyhow::Result<()> {
        let mut last_report = Instant::now();
        loop {
            if self.shutdown.load(Ordering::SeqCst) {
                break;
            }
            let polled = self
                .consumer
                .poll(Duration::from_millis(50))
                .map(|r| r.map(|m| (to_raw(&m, &self.config.topic_prefix), m.topic().to_owned())));
            self.after_callbacks()?;
            match polled {
                Some(Ok((record, prefixed_topic))) => {
                    match self.handle(record, &prefixed_topic)? {
                        Handled::Done => {}
                        Handled::Interrupted => break,
                    }
                }
                Some(Err(error)) => {
                    ::metrics::counter!(names::ERRORS, "class" => "transient").increment(1);
                    tracing::warn!(error = %error, "Consumer error.");
                }
                None => {}
            }
            let due = self.transaction_started.elapsed() >= self.config.commit_interval;
            if due {
                self.commit_now()?;
            }
            self.producer.poll(Duration::ZERO);
            if last_report.elapsed() >= Duration::from_secs(5) {
                self.report();
                last_report = Instant::now();
            }
        }
        self.commit_now()?;
        flush(&self.producer, COMMIT_TIMEOUT).context("flushing on shutdown")?;
        tracing::info!("Stopped after the last commit.");
        Ok(())
    }

    fn commit_now(&mut self) -> anyhow::Result<()> {
        let result = {
            let mut shared = lock(&self.shared);
            commit(
                &mut shared,
                &self.consumer,
                &self.producer,
                self.config.guarantee,
            )
        };
        self.transaction_started = Instant::now();
        if let Err(error) = result {
            ::metrics::counter!(names::ERRORS, "class" => "transient").increment(1);
            tracing::warn!(error = %format!("{error:#}"), "Commit failed; rewinding to the last commit.");
            self.rewind()?;
        }
        Ok(())
    }

    /// Handles what the rebalance callbacks left: a failed commit (rewind) and partitions to
    /// restore.
    fn after_callbacks(&mut self) -> anyhow::Result<()> {
        let failed = lock(&self.shared).commit_failed.take();
        if failed.is_some() {
            self.rewind()?;
        }
        let to_restore = std::mem::take(&mut lock(&self.shared).to_restore);
        if to_restore.is_empty() {
            return Ok(());
        }
        self.health.ready.store(false, Ordering::SeqCst);
        for partition in to_restore {
            let mut task = Task::new((self.factory)());
            let started = Instant::now();
            let applied = restore::restore(
                &self.client,
                &self.config.topic_prefix,
                &mut task,
                partition,
            )
            .with_context(|| format!("restoring the stores of partition {partition}"))?;
            tracing::info!(partition, records = applied, elapsed = ?started.elapsed(), "Stores restored.");
            lock(&self.shared).tasks.insert(partition, task);
        }
        self.health.ready.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// After an aborted transaction or undelivered records: forget all in-memory state, seek back
    /// to the committed offsets and restore the stores from their changelogs.
    fn rewind(&mut self) -> anyhow::Result<()> {
        let assignment = self
            .consumer
            .assignment()
            .context("reading the assignment")?;
        let committed = self
            .consumer
            .committed_offsets(assignment, COMMIT_TIMEOUT)
            .context("reading committed offsets")?;
        for element in committed.elements() {
            let offset = match element.offset() {
                Offset::Offset(o) => Offset::Offset(o),
                _ => Offset::Beginning,
            };
            self.consumer
                .seek(element.topic(), element.partition(), offset, COMMIT_TIMEOUT)
                .with_context(|| format!("seeking {}[{}]", element.topic(), element.partition()))?;
        }
        let mut shared = lock(&self.shared);
        let partitions: Vec<i32> = shared.tasks.keys().copied().collect();
        shared.tasks.clear();
        shared.pending.clear();
        shared.to_restore.extend(partitions);
        drop(shared);
        self.after_callbacks()
    }

    fn handle(&mut self, record: RawRecord, prefixed_topic: &str) -> anyhow::Result<Handled> {
        let started = Instant::now();
        self.count(names::RECORDS_IN, &record.topic);
        let format = self
            .topology
            .input(&record.topic)
            .with_context(|| format!("BUG: consumed {} which is not an input", record.topic))?
            .format;
        if self.config.guarantee == Guarantee::ExactlyOnce && !lock(&self.shared).transaction_open {
            self.producer
                .begin_transaction()
                .context("beginning a transaction")?;
            lock(&self.shared).transaction_open = true;
            self.transaction_started = Instant::now();
        }
        let avro_key = matches!(format, InputFormat::Cdc(f) if f.encoding == Encoding::Avro && f.envelope == Envelope::Debezium);
        let avro_value = matches!(format, InputFormat::Avro)
            || matches!(format, InputFormat::Cdc(f) if f.encoding == Encoding::Avro);
        let outcome = if avro_value {
            let key = if avro_key {
                self.decode_avro(record.key.as_deref())?
            } else {
                Some(Ok(None))
            };
            let value = self.decode_avro(record.value.as_deref())?;
            match (key, value) {
                (None, _) | (_, None) => return Ok(Handled::Interrupted),
                (Some(Err(message)), _) | (_, Some(Err(message))) => {
                    self.task(record.partition)?.dead_letter(&record, &message)
                }
                (Some(Ok(key)), Some(Ok(value))) => self
                    .task(record.partition)?
                    .handle(&record, Some(AvroResolved { key, value }))?,
            }
        } else {
            self.task(record.partition)?.handle(&record, None)?
        };
        if !self.produce(outcome, record.partition)? {
            return Ok(Handled::Interrupted);
        }
        lock(&self.shared).pending.insert(
            (prefixed_topic.to_owned(), record.partition),
            record.offset + 1,
        );
        ::metrics::histogram!(names::PROCESS_LATENCY).record(started.elapsed().as_secs_f64());
        Ok(Handled::Done)
    }

    fn task(&self, partition: i32) -> anyhow::Result<TaskRef<'_, P>> {
        let shared = lock(&self.shared);
        anyhow::ensure!(
            shared.tasks.contains_key(&partition),
            "BUG: no task for assigned partition {partition}"
        );
        Ok(TaskRef { shared, partition })
    }

    /// Decodes through the registry, retrying transient failures. `None`: interrupted by
    /// shutdown; `Some(Err)`: poison.
    fn decode_avro(
        &self,
        bytes: Option<&[u8]>,
    ) -> anyhow::Result<Option<Result<Option<apache_avro::types::Value>, String>>> {
        self.retry(|| self.runtime.block_on(self.codec.decode(bytes)))
            .map(|r| r.map(|r| r.map_err(|e| e.to_string())))
    }

    /// Runs `attempt` until it is not transient. Fatal is an error, poison is returned.
    fn retry<T>(
        &self,
        attempt: impl Fn() -> Result<T, CodecError>,
    ) -> anyhow::Result<Option<Result<T, CodecError>>> {
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(self.config.max_backoff)
            .with_jitter()
            .without_max_times()
            .build();
        loop {
            match attempt() {
                Err(CodecError::Transient(message)) => {
                    ::metrics::counter!(names::ERRORS, "class" => "transient").increment(1);
                    let delay = delays.next().unwrap_or(self.config.max_backoff);
                    tracing::warn!(error = %message, retry_in = ?delay, "Registry unavailable; retrying.");
                    let until = Instant::now() + delay;
                    while Instant::now() < until {
                        if self.shutdown.load(Ordering::SeqCst) {
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
    fn produce(&self, outcome: Outcome, partition: i32) -> anyhow::Result<bool> {
        let mut records: Vec<ProducedRecord> =
            Vec::with_capacity(outcome.outputs.len() + outcome.changelog.len() + 1);
        for output in outcome.outputs {
            let topic = self.prefixed(&output.topic);
            let value = match &output.value {
                None => None,
                Some(value) => {
                    match self.retry(|| self.runtime.block_on(self.codec.encode(&topic, value)))? {
                        None => return Ok(false),
                        Some(Ok(bytes)) => Some(bytes),
                        Some(Err(error)) => anyhow::bail!("encoding for {topic}: {error}"),
                    }
                }
            };
            self.count(names::RECORDS_OUT, &output.topic);
            records.push(ProducedRecord {
                topic,
                key: Some(output.key.into_bytes()),
                value,
                headers: Vec::new(),
            });
        }
        for mut record in outcome.changelog {
            record.topic = self.prefixed(&record.topic);
            self.send(&record, Some(partition))?;
        }
        if let Some(mut dead) = outcome.dead_letter {
            ::metrics::counter!(names::DLQ).increment(1);
            ::metrics::counter!(names::ERRORS, "class" => "poison").increment(1);
            dead.topic = self.prefixed(&dead.topic);
            records.push(dead);
        }
        for record in &records {
            self.send(record, None)?;
        }
        Ok(true)
    }

    fn send(&self, record: &ProducedRecord, partition: Option<i32>) -> anyhow::Result<()> {
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
            match self.producer.send(base) {
                Ok(()) => return Ok(()),
                Err((
                    KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                    back,
                )) => {
                    self.producer.poll(Duration::from_millis(1));
                    base = back;
                }
                Err((error, _)) => {
                    return Err(error).with_context(|| format!("producing to {}", record.topic));
                }
            }
        }
    }

    /// Increments a per-topic counter through a cached handle: building labels per record costs
    /// allocations the hot path does not need.
    fn count(&self, name: &'static str, topic: &str) {
        let mut counters = self.counters.borrow_mut();
        let by_topic = counters.entry(name).or_default();
        if let Some(counter) = by_topic.get(topic) {
            counter.increment(1);
            return;
        }
        let counter = ::metrics::counter!(name, "topic" => topic.to_owned());
        counter.increment(1);
        by_topic.insert(topic.to_owned(), counter);
    }

    fn report(&self) {
        let shared = lock(&self.shared);
        let mut sizes: BTreeMap<&str, usize> = BTreeMap::new();
        for task in shared.tasks.values() {
            for (store, size) in task.stores().sizes() {
                *sizes.entry(store).or_default() += size;
            }
        }
        for (store, size) in sizes {
            ::metrics::gauge!(names::STORE_ENTRIES, "store" => store.to_owned()).set(size as f64);
        }
        let Ok(position) = self.consumer.position() else {
            return;
        };
        for element in position.elements() {
            let Offset::Offset(at) = element.offset() else {
                continue;
            };
            if let Ok((_, high)) = self.consumer.fetch_watermarks(
                element.topic(),
                element.partition(),
                Duration::from_secs(1),
            ) {
                ::metrics::gauge!(names::LAG, "topic" => element.topic().to_owned(), "partition" => element.partition().to_string())
                    .set((high - at).max(0) as f64);
            }
        }
    }
}

/// A task borrowed through the shared lock.
struct TaskRef<'a, P> {
    shared: MutexGuard<'a, Shared<P>>,
    partition: i32,
}

impl<P: Processor> TaskRef<'_, P> {
    fn handle(mut self, record: &RawRecord, avro: Option<AvroResolved>) -> anyhow::Result<Outcome> {
        let task = self
            .shared
            .tasks
            .get_mut(&self.partition)
            .expect("BUG: checked in Runner::task");
        task.handle(record, avro).map_err(|fatal| {
            ::metrics::counter!(names::ERRORS, "class" => "fatal").increment(1);
            anyhow::Error::new(fatal)
        })
    }

    fn dead_letter(self, record: &RawRecord, message: &str) -> Outcome {
        self.shared.tasks[&self.partition].dead_letter(record, message)
    }
}

fn to_raw(message: &BorrowedMessage<'_>, prefix: &str) -> RawRecord {
    let topic = message.topic();
    RawRecord {
        topic: topic.strip_prefix(prefix).unwrap_or(topic).to_owned(),
        partition: message.partition(),
        offset: message.offset(),
        timestamp_ms: message.timestamp().to_millis(),
        key: message.key().map(<[u8]>::to_vec),
        value: message.payload().map(<[u8]>::to_vec),
        headers: message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| {
                        (
                            h.key.to_owned(),
                            h.value.map(<[u8]>::to_vec).unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}
