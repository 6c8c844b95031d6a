//! Starting a runner: its producer and consumers, the topic check, the global tables, and the
//! subscription.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::consumer::Consumer as _;
use rdkafka::producer::Producer as _;

use super::gate::Gate;
use super::global::GlobalThread;
use super::instance::Runner;
use super::rebalance::Callbacks;
use super::shared::{Shared, Transaction};
use super::shop::Shop;
use crate::streams::global::GlobalTables;
use crate::streams::kafka::{Guarantee, Kafka, Quiet};
use crate::streams::processor::Processor;

impl<P: Processor + 'static, F: Fn() -> P> Runner<P, F> {
    /// Creates the clients (the producer first: with exactly-once it fences a previous instance
    /// and aborts its transaction before anything is read), checks the topics, reads the global
    /// tables, and subscribes.
    pub(super) fn start(
        kafka: Kafka,
        factory: Arc<F>,
        runtime: tokio::runtime::Handle,
    ) -> anyhow::Result<Self> {
        let settings = kafka.settings();
        let topology = factory()
            .topology()
            .with_application_id(settings.application_id.clone());
        // The topic prefix namespaces a deployment; its group and transactional ids must be
        // namespaced alike, or two deployments on one cluster would fence each other.
        let group = kafka.group(&topology.group_id());
        let member = format!("{group}-{}", settings.instance_id);
        let exactly_once = settings.guarantee == Guarantee::ExactlyOnce;
        let mut producer_config = kafka.producer_config(exactly_once.then_some(member.as_str()));
        let persistent = settings.state_dir.is_some()
            && topology
                .task_stores()
                .any(|store| topology.on_disk(store, true, &settings.stores));
        delivery_reports(&mut producer_config, persistent);
        // A worker waiting for the registry gives the transaction up at half its timeout, which
        // leaves the other half to commit it.
        let transaction_budget = exactly_once.then(|| {
            let timeout_ms = producer_config
                .get("transaction.timeout.ms")
                .and_then(|ms| ms.parse::<u64>().ok())
                .unwrap_or(60_000);
            Duration::from_millis(timeout_ms / 2)
        });
        let producer = kafka.create_producer(&producer_config)?;
        // Persistent stores: one database per instance and group, under streams.state_dir.
        let state = match &settings.state_dir {
            Some(dir) if persistent => {
                let dir = dir.join(&group);
                let db = crate::streams::disk::StateDb::open(&dir)
                    .with_context(|| format!("opening the state in {}", dir.display()))?;
                tracing::info!(dir = %dir.display(), "Persistent stores on disk.");
                // Their checkpoints are the offsets their changelog records were delivered at.
                producer.context().track_changelogs();
                Some(db)
            }
            _ => None,
        };
        let (events, reports) = std::sync::mpsc::channel();
        let shared = Arc::new(Mutex::new(Shared {
            workers: BTreeMap::new(),
            in_flight: 0,
            events: reports,
            pending: BTreeMap::new(),
            committed_offsets: BTreeMap::new(),
            producer: Arc::clone(&producer),
            transaction: Transaction::Idle,
            to_restore: BTreeSet::new(),
            fatal: None,
            interrupted: false,
            rebalanced: false,
            flush_after_commit: state.is_some(),
        }));
        let callbacks = Callbacks {
            shared: Arc::clone(&shared),
            guarantee: settings.guarantee,
            health: Arc::clone(kafka.health()),
        };
        let consumer = kafka.consumer(&group, callbacks, |config| {
            config
                .set("partition.assignment.strategy", "range")
                // Static membership: a restarted instance takes its partitions back without a
                // rebalance (and without waiting for its old session to expire).
                .set("group.instance.id", &member);
        })?;
        let probe = kafka.consumer(&format!("{group}-probe"), (), |_| {})?;
        let gated: BTreeSet<String> = topology
            .partitioned_inputs()
            .filter(|i| i.after_others)
            .map(|i| kafka.topic(&topology.kafka_topic(&i.topic)))
            .collect();
        // Only a gate has a reader; its connection failures during an outage are the runner's
        // clients' to report (a quiet context: no outage nothing would end).
        let reader = if gated.is_empty() {
            None
        } else {
            let reader = kafka
                .settings()
                .consumer_config()
                .set("group.id", format!("{group}-gate"))
                .set("enable.auto.commit", "false")
                .set("enable.partition.eof", "true")
                .set("isolation.level", "read_committed")
                .set("fetch.wait.max.ms", "10")
                .create_with_context(Quiet)
                .context("creating the gate's reader")?;
            Some(reader)
        };
        // Inputs from outside the processor: a held record waits for every partition of these,
        // whoever in the group reads it (repartition topics are fed from them).
        let sources = topology
            .partitioned_inputs()
            .filter(|i| !i.after_others && !topology.is_repartition(&i.topic))
            .map(|i| kafka.topic(&i.topic))
            .collect();
        let repartitions = topology
            .repartitions
            .iter()
            .map(|r| kafka.topic(&topology.repartition_topic(r)))
            .collect();
        let purge = super::purge::Purge::new(&kafka, repartitions, runtime.clone())?;
        let shop = Arc::new(Shop::new(
            kafka.clone(),
            producer,
            runtime,
            topology,
            transaction_budget,
        ));
        let mut runner = Self {
            factory,
            kafka,
            consumer,
            probe,
            shared,
            events,
            shop,
            producer_config,
            transaction_started: Instant::now(),
            gate: Gate::new(gated, sources, reader),
            purge,
            state,
            global: None,
            processor: std::marker::PhantomData,
        };
        runner.check_topics()?;
        if !runner.shop.topology.global_stores.is_empty() {
            // Before joining the group: no task starts before the global tables are read.
            let started = Instant::now();
            let tables = GlobalTables::new(runner.shop.topology.clone());
            let stores = tables.stores();
            let thread = GlobalThread::start((runner.factory)(), tables, Arc::clone(&runner.shop))?;
            tracing::info!(elapsed = ?started.elapsed(), "Global tables ready.");
            runner.global = Some((thread, stores));
        }
        let topics: Vec<String> = runner
            .shop
            .topology
            .partitioned_inputs()
            .map(|i| {
                runner
                    .kafka
                    .topic(&runner.shop.topology.kafka_topic(&i.topic))
            })
            .collect();
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        runner.consumer.subscribe(&topics).context("subscribing")?;
        Ok(runner)
    }

    /// Every input and changelog topic must exist with the same partition count (tasks are
    /// per partition number across all of them); outputs, the DLQ and the global inputs must
    /// exist.
    fn check_topics(&self) -> anyhow::Result<()> {
        let topology = &self.shop.topology;
        let kafka = &self.kafka;
        let aligned: Vec<String> = topology
            .partitioned_inputs()
            .map(|i| kafka.topic(&topology.kafka_topic(&i.topic)))
            .chain(
                topology
                    .stores
                    .iter()
                    .map(|s| kafka.topic(&topology.changelog_topic(s))),
            )
            .collect();
        let others = topology
            .outputs
            .iter()
            .map(|t| topology.kafka_topic(t))
            .chain([topology.dlq_topic()])
            // Read whole by every instance: any partition count.
            .chain(topology.global_topics())
            .map(|t| kafka.topic(&t));
        let mut counts =
            kafka.partition_counts(&self.consumer, aligned.iter().cloned().chain(others))?;
        counts.retain(|topic, _| aligned.contains(topic));
        let distinct: BTreeSet<usize> = counts.values().copied().collect();
        anyhow::ensure!(
            distinct.len() <= 1,
            "input and changelog topics must have the same partition count, found {counts:?}"
        );
        if let Some(count) = distinct.first() {
            let _ = self.shop.partitions.set(i32::try_from(*count)?);
        }
        Ok(())
    }
}

/// Which deliveries the runner's producer reports. Persistent stores' checkpoints are the
/// offsets their changelog records were delivered at, so with them every delivery is reported,
/// whatever `streams.librdkafka` says; without them only failures matter (at-least-once commits
/// count them), and reporting only those spares the loop's thread a report per produced record
/// (serving it, the callback, the record freed there): about 1.4 µs of CPU of ~13 per event in
/// permissions (`docs/processors.md`). `streams.librdkafka` may still ask for every report.
fn delivery_reports(config: &mut rdkafka::ClientConfig, persistent: bool) {
    const ONLY_ERRORS: &str = "delivery.report.only.error";
    if persistent {
        config.set(ONLY_ERRORS, "false");
    } else if config.get(ONLY_ERRORS).is_none() {
        config.set(ONLY_ERRORS, "true");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failed_deliveries_are_reported_unless_a_store_checkpoints_what_was_delivered() {
        let only_errors = |config: &rdkafka::ClientConfig| {
            config.get("delivery.report.only.error").map(str::to_owned)
        };
        let mut config = rdkafka::ClientConfig::new();
        delivery_reports(&mut config, false);
        assert_eq!(only_errors(&config).as_deref(), Some("true"));
        let mut config = rdkafka::ClientConfig::new();
        delivery_reports(&mut config, true);
        assert_eq!(only_errors(&config).as_deref(), Some("false"));
        // An operator's choice stands where nothing depends on it, and not where it would
        // leave checkpoints behind.
        let mut config = rdkafka::ClientConfig::new();
        config.set("delivery.report.only.error", "false");
        delivery_reports(&mut config, false);
        assert_eq!(only_errors(&config).as_deref(), Some("false"));
        config.set("delivery.report.only.error", "true");
        delivery_reports(&mut config, true);
        assert_eq!(only_errors(&config).as_deref(), Some("false"));
    }
}
