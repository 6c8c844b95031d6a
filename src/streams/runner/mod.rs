//! The Kafka runner: drives a processor's [`Task`]s against a real broker.
//!
//! - One consumer in the group `<prefix>clinic-<processor>`, `read_committed`, range assignment so the
//!   same partition number of every input topic lands on the same instance (co-partitioning,
//!   which tables need; librdkafka offers no custom assignor, so the eager protocol it is).
//! - One [`Task`] per assigned partition number, each with its own stores, restored from the
//!   same partition of the stores' changelog topics before it sees a record, and run by its own
//!   worker thread: partitions are processed in parallel, each in order.
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
//! - Poison records go to the DLQ; fatal errors stop the runner with an error.
//! - Transient faults are waited out (`outage`): a registry that cannot be reached is retried with
//!   capped exponential backoff, never dead-lettering the record; a retry that would outlive the
//!   transaction's timeout gives up the transaction first (abort, rewind, restore, and try again
//!   in a new one), so the runner is never fenced by its own waiting. A broker that goes away
//!   fails the commit: the transaction is aborted (or, when the producer cannot abort it, the
//!   producer is replaced, which fences and aborts it), the runner rewinds to the committed
//!   offsets, and every step that needs the broker is retried until it is back. Only an outage
//!   longer than `streams.max_outage` stops the runner, with an error.
//! - Shutdown (the flag, set by SIGTERM/SIGINT in [`run`]): finish the record in hand, commit,
//!   close.

pub mod admin;
pub(crate) mod commit;
pub mod config;
mod gate;
mod global;
pub mod metrics;
pub mod outage;
mod rebalance;
pub(crate) mod restore;
mod shared;
mod worker;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::producer::{Producer, PurgeConfig};
use rdkafka::{ClientConfig, Offset};

pub use admin::Health;
pub use commit::{DeliveryCounter, flush, send};
pub use config::{Guarantee, RunnerConfig};

use super::global::GlobalTables;
use super::processor::Processor;
use super::record::RawRecord;
use super::task::{SharedStores, Task};
use commit::{ABORT_TIMEOUT, COMMIT_TIMEOUT, commit, new_producer};
use metrics as names;
use rebalance::Context;
use shared::{Shared, lock};
use worker::{Event, Job, Shop, Worker};

/// Runs `factory`'s processor until SIGTERM or SIGINT, serving the admin endpoint.
///
/// # Errors
/// Bad configuration, a broker or topic problem at start-up, or a fatal processing error.
pub async fn run<P, F>(config: RunnerConfig, factory: F) -> anyhow::Result<()>
where
    P: Processor + 'static,
    F: Fn() -> P + Send + 'static,
{
    let runner = config.clone();
    supervise(&config, move |shutdown, health| {
        run_until(runner, factory, shutdown, health)
    })
    .await
}

/// Runs `work` (a processor, an effect stage, or both) until SIGTERM or SIGINT: sets the
/// shutdown flag it is given on the signal, serves the admin endpoint on its health, and gives up
/// when it has not finished `streams.shutdown_deadline` after the signal.
///
/// # Errors
/// `work`'s, or the admin address cannot be bound, or the deadline passed.
pub async fn supervise<W>(
    config: &RunnerConfig,
    work: impl FnOnce(Arc<AtomicBool>, Arc<Health>) -> W,
) -> anyhow::Result<()>
where
    W: std::future::Future<Output = anyhow::Result<()>>,
{
    let shutdown = Arc::new(AtomicBool::new(false));
    let signal = Arc::clone(&shutdown);
    tokio::spawn(async move {
        crate::shutdown::signal().await;
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
    let work = work(shutdown, health);
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
    let watchdog = outage::watchdog(Arc::clone(&health));
    let result = tokio::task::spawn_blocking(move || {
        let factory = Arc::new(factory);
        let mut restarts: Vec<Instant> = Vec::new();
        loop {
            let runner = Runner::start(
                config.clone(),
                Arc::clone(&factory),
                Arc::clone(&shutdown),
                Arc::clone(&health),
                runtime.clone(),
            )?;
            let error = match runner.run() {
                Err(error) if error.downcast_ref::<Restart>().is_some() => error,
                other => return other,
            };
            restarts.retain(|at| at.elapsed() < config.max_outage);
            anyhow::ensure!(
                restarts.len() < MAX_RESTARTS,
                "{error:#}, the {}th time within streams.max_outage ({:?}); giving up",
                MAX_RESTARTS + 1,
                config.max_outage
            );
            restarts.push(Instant::now());
            health.ready.store(false, Ordering::SeqCst);
            tracing::warn!(error = %format!("{error:#}"), "Restarting the runner with new Kafka clients; it resumes from the last commit.");
        }
    })
    .await;
    watchdog.abort();
    result.context("the processing thread panicked")?
}

/// How many partitions `topic` has in `metadata`; `None` when it does not exist (or the broker
/// reported an error for it).
pub(crate) fn partition_count(
    metadata: &rdkafka::metadata::Metadata,
    topic: &str,
) -> Option<usize> {
    metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len())
}

/// A Kafka client of the runner failed fatally (librdkafka's word for a client that can do
/// nothing more, e.g. a static group member fenced by its own re-join after a broker restart).
/// The runner starts again with new clients, from the last commit.
#[derive(Debug, thiserror::Error)]
#[error("the consumer failed fatally: {0}")]
struct Restart(String);

/// How many restarts within `streams.max_outage` are waited out; one more is an error (e.g. two
/// instances with the same `instance_id`, fencing each other).
const MAX_RESTARTS: usize = 5;

struct Runner<P, F> {
    factory: Arc<F>,
    client: ClientConfig,
    consumer: BaseConsumer<Context>,
    /// A consumer that never fetches, for watermark queries: on the main consumer's connection
    /// each waits behind the in-flight fetch (up to `fetch.wait.max.ms`, 500 ms), which made
    /// the gate take 6 s over 12 partitions and the lag report block the loop as long.
    probe: BaseConsumer<outage::Reporting>,
    shared: Arc<Mutex<Shared>>,
    events: Sender<Event>,
    shop: Arc<Shop>,
    health: Arc<Health>,
    /// What a replacement producer is created from.
    producer_config: ClientConfig,
    transaction_started: Instant,
    /// Holds records of `after_others` inputs until the other inputs caught up.
    gate: gate::Gate,
    /// The global tables' thread and stores, when the processor has global inputs.
    global: Option<(global::GlobalThread, SharedStores)>,
    processor: std::marker::PhantomData<fn() -> P>,
}

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
    fn start(
        config: RunnerConfig,
        factory: Arc<F>,
        shutdown: Arc<AtomicBool>,
        health: Arc<Health>,
        runtime: tokio::runtime::Handle,
    ) -> anyhow::Result<Self> {
        let topology = factory()
            .topology()
            .with_application_id(config.application_id.clone());
        // The topic prefix namespaces a deployment; its group and transactional ids must be
        // namespaced alike, or two deployments on one cluster would fence each other.
        let group_id = format!("{}{}", config.topic_prefix, topology.group_id());
        let member_id = format!("{group_id}-{}", config.instance_id);
        let mut producer_config = config.client_config();
        let client = config.consumer_config();
        if config.guarantee == Guarantee::ExactlyOnce {
            producer_config.set("transactional.id", &member_id);
            // Kafka Streams' default: a crashed instance's open transaction blocks read_committed
            // readers of its partitions for at most this long.
            if producer_config.get("transaction.timeout.ms").is_none() {
                producer_config.set("transaction.timeout.ms", "10000");
            }
        }
        producer_config.set("enable.idempotence", "true");
        // A worker waiting for the registry gives the transaction up at half its timeout, which
        // leaves the other half to commit it.
        let transaction_budget = (config.guarantee == Guarantee::ExactlyOnce).then(|| {
            let timeout_ms = producer_config
                .get("transaction.timeout.ms")
                .and_then(|ms| ms.parse::<u64>().ok())
                .unwrap_or(60_000);
            Duration::from_millis(timeout_ms / 2)
        });
        let producer = new_producer(&producer_config, &config, &health, &shutdown)?;
        let (events, reports) = std::sync::mpsc::channel();
        let shared = Arc::new(Mutex::new(Shared {
            workers: BTreeMap::new(),
            in_flight: 0,
            events: reports,
            pending: BTreeMap::new(),
            producer: Arc::clone(&producer),
            transaction_open: false,
            transaction_failed: false,
            stalled: false,
            to_restore: BTreeSet::new(),
            commit_failed: None,
            fatal: None,
            interrupted: false,
            rebalanced: false,
        }));
        let context = Context {
            inputs: topology
                .partitioned_inputs()
                .map(|i| format!("{}{}", config.topic_prefix, i.topic))
                .collect(),
            topology: topology.clone(),
            shared: Arc::clone(&shared),
            guarantee: config.guarantee,
            health: Arc::clone(&health),
        };
        let consumer: BaseConsumer<Context> = client
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
        let probe: BaseConsumer<outage::Reporting> = client
            .clone()
            .set("group.id", format!("{group_id}-probe"))
            .create_with_context(outage::Reporting(Arc::clone(&health)))
            .context("creating the probe consumer")?;
        let gated = topology
            .partitioned_inputs()
            .filter(|i| i.after_others)
            .map(|i| format!("{}{}", config.topic_prefix, i.topic))
            .collect();
        let shop = Arc::new(Shop::new(
            producer,
            runtime,
            config,
            topology,
            shutdown,
            Arc::clone(&health),
            transaction_budget,
        ));
        let mut runner = Self {
            factory,
            client,
            consumer,
            probe,
            shared,
            events,
            shop,
            health,
            producer_config,
            transaction_started: Instant::now(),
            gate: gate::Gate::new(gated),
            global: None,
            processor: std::marker::PhantomData,
        };
        runner.check_topics()?;
        if !runner.shop.topology.global_stores.is_empty() {
            // Before joining the group: no task starts before the global tables are read.
            let started = Instant::now();
            let tables = GlobalTables::new(runner.shop.topology.clone());
            let stores = tables.stores();
            let thread = global::GlobalThread::start(
                (runner.factory)(),
                tables,
                &runner.client,
                &group_id,
                Arc::clone(&runner.shop),
            )?;
            tracing::info!(elapsed = ?started.elapsed(), "Global tables ready.");
            runner.global = Some((thread, stores));
        }
        let topics: Vec<String> = runner
            .shop
            .topology
            .partitioned_inputs()
            .map(|i| runner.shop.prefixed(&i.topic))
            .collect();
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        runner.consumer.subscribe(&topics).context("subscribing")?;
        Ok(runner)
    }

    /// Every input and changelog topic must exist with the same partition count (tasks are
    /// per partition number across all of them; a single-task processor is exempt); outputs and
    /// the DLQ must exist.
    fn check_topics(&self) -> anyhow::Result<()> {
        let topology = &self.shop.topology;
        let metadata = self.broker("fetching metadata", || {
            self.consumer.fetch_metadata(None, Duration::from_secs(30))
        })?;
        let partitions = |topic: &str| partition_count(&metadata, topic);
        let mut aligned: Vec<String> = topology
            .partitioned_inputs()
            .map(|i| self.shop.prefixed(&i.topic))
            .collect();
        aligned.extend(
            topology
                .stores
                .iter()
                .map(|s| self.shop.prefixed(&topology.changelog_topic(s))),
        );
        let mut counts = BTreeMap::new();
        for topic in &aligned {
            let count =
                partitions(topic).with_context(|| format!("topic {topic} does not exist"))?;
            counts.insert(topic.clone(), count);
        }
        let distinct: BTreeSet<usize> = counts.values().copied().collect();
        // A single task reads every partition and writes changelog partition 0: nothing to align.
        anyhow::ensure!(
            topology.single_task || distinct.len() <= 1,
            "input and changelog topics must have the same partition count, found {counts:?}"
        );
        let mut others: Vec<String> = topology
            .outputs
            .iter()
            .map(|t| self.shop.prefixed(t))
            .collect();
        others.push(self.shop.prefixed(&topology.dlq_topic()));
        // Read whole by every instance: any partition count.
        others.extend(
            topology
                .global_topics()
                .iter()
                .map(|t| self.shop.prefixed(t)),
        );
        for topic in others {
            partitions(&topic).with_context(|| format!("topic {topic} does not exist"))?;
        }
        Ok(())
    }

    /// Runs `attempt` until the broker answers it (see [`outage::with_broker`]).
    fn broker<T, E: std::fmt::Display>(
        &self,
        what: &str,
        attempt: impl FnMut() -> Result<T, E>,
    ) -> anyhow::Result<T> {
        let config = &self.shop.config;
        outage::with_broker(
            &self.health.outages,
            config.max_outage,
            config.max_backoff,
            &self.shop.shutdown,
            what,
            attempt,
        )
    }

    fn run(mut self) -> anyhow::Result<()> {
        let mut last_report = Instant::now();
        while !self.shop.shutdown.load(Ordering::SeqCst) {
            let polled = self.consumer.poll(Duration::from_millis(50)).map(|r| {
                r.map(|m| {
                    (
                        RawRecord::of(&m, &self.shop.config.topic_prefix),
                        m.topic().to_owned(),
                    )
                })
            });
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
                    self.health.outages.down(
                        outage::Dependency::Broker,
                        &format_args!("consuming: {error}"),
                    );
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
            let (interrupted, stalled) = {
                let mut shared = lock(&self.shared);
                shared.collect();
                (shared.interrupted, shared.stalled)
            };
            self.take_fatal()?;
            if interrupted {
                break;
            }
            if stalled {
                self.recover(
                    "stall",
                    &"a record could not be handled before the transaction's timeout",
                )?;
            } else if self.transaction_started.elapsed() >= self.shop.config.commit_interval {
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
                !shared.transaction_failed && !shared.transaction_open,
                "the last commit failed on shutdown; work since the previous commit will be redone"
            );
        }
        flush(&self.shop.producer, COMMIT_TIMEOUT).context("flushing on shutdown")?;
        lock(&self.shared).workers.clear();
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
        let mut shared = lock(&self.shared);
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
        if self.shop.config.guarantee == Guarantee::ExactlyOnce && !shared.transaction_open {
            if let Err(error) = self.shop.producer.begin_transaction() {
                // The work is dropped here: records are read again after the rewind, and a
                // restored task resumes anew.
                shared.transaction_failed = true;
                drop(shared);
                return self.recover("commit", &format_args!("beginning a transaction: {error}"));
            }
            shared.transaction_open = true;
            self.transaction_started = Instant::now();
            self.shop.transaction_began(self.transaction_started);
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

    fn commit_now(&mut self) -> anyhow::Result<()> {
        let result = commit(
            &mut lock(&self.shared),
            &self.consumer,
            self.shop.config.guarantee,
            &self.health.outages,
        );
        self.shop.transaction_ended();
        self.transaction_started = Instant::now();
        match result {
            Ok(reached_broker) => {
                if reached_broker {
                    self.health.outages.up(outage::Dependency::Broker);
                }
                Ok(())
            }
            Err(error) => {
                self.take_fatal()?;
                if self.shop.shutdown.load(Ordering::SeqCst) {
                    // No rewind on the way out: the next start resumes from the last commit.
                    tracing::warn!(error = %format!("{error:#}"), "The last commit failed on shutdown.");
                    return Ok(());
                }
                let cause = if lock(&self.shared).stalled {
                    "stall"
                } else {
                    "commit"
                };
                self.recover(cause, &format_args!("{error:#}"))
            }
        }
    }

    /// Gives up the interval after a failed commit or a stalled worker: aborts the transaction,
    /// rewinds to the last commit and restores the stores, waiting for the broker as long as
    /// `streams.max_outage` allows.
    fn recover(
        &mut self,
        cause: &'static str,
        error: &dyn std::fmt::Display,
    ) -> anyhow::Result<()> {
        ::metrics::counter!(names::ERRORS, "class" => "transient").increment(1);
        ::metrics::counter!(names::REWINDS, "cause" => cause).increment(1);
        if cause == "commit" {
            // Commits fail when the broker is away; a registry outage was noted where it hit.
            self.health.outages.down(outage::Dependency::Broker, error);
        }
        // Part of waiting out an outage, which `outage` logs once.
        tracing::debug!(cause, error = %error, "Giving up the current transaction; rewinding to the last commit.");
        self.rewind()
    }

    /// A consumer in librdkafka's fatal state can do nothing more: [`Restart`].
    fn check_consumer(&self) -> anyhow::Result<()> {
        match self.consumer.client().fatal_error() {
            Some((code, reason)) => Err(Restart(format!("{code:?}: {reason}")).into()),
            None => Ok(()),
        }
    }

    /// The first fatal error a worker reported, as this runner's error.
    fn take_fatal(&self) -> anyhow::Result<()> {
        match lock(&self.shared).fatal.take() {
            Some(error) => Err(error.context("a partition worker failed")),
            None => Ok(()),
        }
    }

    /// Handles what the rebalance callbacks left: a failed commit (rewind) and partitions to
    /// restore.
    fn after_callbacks(&mut self) -> anyhow::Result<()> {
        self.take_fatal()?;
        if std::mem::take(&mut lock(&self.shared).rebalanced) {
            self.gate.clear(&self.consumer);
        }
        let failed = lock(&self.shared).commit_failed.take();
        if failed.is_some() {
            self.rewind()?;
        }
        let to_restore = std::mem::take(&mut lock(&self.shared).to_restore);
        if to_restore.is_empty() {
            return Ok(());
        }
        self.health.ready.store(false, Ordering::SeqCst);
        let started = Instant::now();
        // Each attempt restores into fresh tasks: broken-off ones hold part of the state.
        let restored = self.broker(
            &format!("restoring the stores of partitions {to_restore:?}"),
            || {
                let mut tasks: BTreeMap<i32, Task<P>> = to_restore
                    .iter()
                    .map(|partition| (*partition, self.new_task()))
                    .collect();
                match restore::restore(
                    &self.client,
                    &self.shop.config.topic_prefix,
                    &mut tasks,
                    &self.health,
                ) {
                    Ok(applied) => Ok(Ok((tasks, applied))),
                    Err(restore::RestoreError::Broker(error)) => Err(error),
                    Err(corrupt) => Ok(Err(corrupt)),
                }
            },
        )?;
        let (tasks, applied) = restored
            .with_context(|| format!("restoring the stores of partitions {to_restore:?}"))?;
        if self.health.outages.longest().is_some() {
            // Rewinds repeat while an outage lasts; the outage itself is logged once.
            tracing::debug!(partitions = ?to_restore, records = applied, elapsed = ?started.elapsed(), "Stores restored.");
        } else {
            tracing::info!(partitions = ?to_restore, records = applied, elapsed = ?started.elapsed(), "Stores restored.");
        }
        for (partition, task) in tasks {
            let worker =
                Worker::start(partition, task, Arc::clone(&self.shop), self.events.clone())?;
            lock(&self.shared).workers.insert(partition, worker);
        }
        self.health.ready.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// A task with empty stores, reading the global tables if there are any.
    fn new_task(&self) -> Task<P> {
        let task = Task::new((self.factory)())
            .with_application_id(self.shop.config.application_id.clone());
        match &self.global {
            Some((_, globals)) => task.with_globals(Arc::clone(globals)),
            None => task,
        }
    }

    /// After a failed commit, a stalled worker or undelivered records: stop the workers
    /// (forgetting their state), end the transaction, seek back to the committed offsets and
    /// restore the stores from their changelogs.
    fn rewind(&mut self) -> anyhow::Result<()> {
        self.gate.clear(&self.consumer);
        {
            let mut shared = lock(&self.shared);
            shared.drain();
            let partitions: Vec<i32> = shared.workers.keys().copied().collect();
            shared.workers.clear();
            shared.pending.clear();
            shared.stalled = false;
            shared.to_restore.extend(partitions);
        }
        self.end_transaction()?;
        let assignment = self
            .consumer
            .assignment()
            .context("reading the assignment")?;
        let committed = self.broker("reading committed offsets", || {
            self.consumer
                .committed_offsets(assignment.clone(), COMMIT_TIMEOUT)
        })?;
        for element in committed.elements() {
            let offset = match element.offset() {
                Offset::Offset(o) => Offset::Offset(o),
                _ => Offset::Beginning,
            };
            // Local to the client (no broker round trip), so not retried: a seek that fails
            // would leave the position past the last commit, which must never be processed on.
            self.consumer
                .seek(element.topic(), element.partition(), offset, COMMIT_TIMEOUT)
                .with_context(|| format!("seeking {}[{}]", element.topic(), element.partition()))?;
        }
        self.after_callbacks()
    }

    /// Ends an open or failed transaction with no worker left to write to it: aborts it, or,
    /// when the producer cannot (its state is fatal, or the broker is away), replaces the producer,
    /// whose initialisation fences the old one and aborts its transaction on the broker.
    fn end_transaction(&mut self) -> anyhow::Result<()> {
        self.shop.transaction_ended();
        let (open, failed) = {
            let shared = lock(&self.shared);
            (shared.transaction_open, shared.transaction_failed)
        };
        if !open && !failed {
            return Ok(());
        }
        // We abort anyway, so what is still queued or in flight goes first. abort_transaction's
        // own flush cannot serve the delivery reports (only this runner's poll does): without
        // this it timed out with records outstanding and the producer had to be replaced.
        let producer = &self.shop.producer;
        producer.purge(PurgeConfig::default().queue().inflight());
        let outages = &self.health.outages;
        if let Err(error) =
            outages.calling("flushing purged records", || flush(producer, ABORT_TIMEOUT))
        {
            tracing::debug!(error = %error, "Purged records still outstanding.");
        }
        producer.context().take_failed();
        let aborted = outages.calling("aborting the transaction", || {
            producer.abort_transaction(ABORT_TIMEOUT)
        });
        if let Err(error) = aborted {
            tracing::debug!(error = %error, "Aborting failed; replacing the producer.");
            let producer = new_producer(
                &self.producer_config,
                &self.shop.config,
                &self.health,
                &self.shop.shutdown,
            )?;
            self.shop = Arc::new(self.shop.with_producer(Arc::clone(&producer)));
            lock(&self.shared).producer = producer;
        }
        let mut shared = lock(&self.shared);
        shared.transaction_open = false;
        shared.transaction_failed = false;
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
                self.health.outages.up(outage::Dependency::Broker);
                ::metrics::gauge!(names::LAG, "topic" => element.topic().to_owned(), "partition" => element.partition().to_string())
                    .set((high - at).max(0) as f64);
            }
        }
    }
}
