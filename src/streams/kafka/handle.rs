//! The [`Kafka`] handle a loop of the runtime holds: its settings, health and shutdown flag, and
//! what every loop asks of Kafka through them.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::BorrowedMessage;

use super::client::{Client, Rebalancing};
use super::health::{Health, Outages};
use super::retry::{self, backoff, sleep_unless};
use super::settings::StreamsSettings;
use crate::streams::record::RawRecord;

/// One process's way to Kafka: its settings, health and shutdown flag. Cheap to clone.
#[derive(Clone)]
pub struct Kafka {
    settings: Arc<StreamsSettings>,
    health: Arc<Health>,
    shutdown: Arc<AtomicBool>,
}

impl Kafka {
    /// A handle on `settings`, reporting into `health`, whose waits end when `shutdown` is set.
    pub fn new(settings: StreamsSettings, health: Arc<Health>, shutdown: Arc<AtomicBool>) -> Self {
        Self {
            settings: Arc::new(settings),
            health,
            shutdown,
        }
    }

    /// The settings.
    pub fn settings(&self) -> &StreamsSettings {
        &self.settings
    }

    /// The process's health.
    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// The dependencies that are away.
    pub fn outages(&self) -> &Outages {
        &self.health.outages
    }

    /// The shutdown flag.
    pub fn shutdown(&self) -> &Arc<AtomicBool> {
        &self.shutdown
    }

    /// Whether shutdown was requested.
    pub fn stopping(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }

    /// `topic` with the deployment's prefix (`streams.topic_prefix`).
    pub fn topic(&self, topic: &str) -> String {
        format!("{}{topic}", self.settings.topic_prefix)
    }

    /// A consumer group of this deployment: `name` with the prefix, as its topics have.
    pub fn group(&self, name: &str) -> String {
        self.topic(name)
    }

    /// A consumed message as a record, its topic without the prefix.
    pub fn record(&self, message: &BorrowedMessage<'_>) -> RawRecord {
        RawRecord::of(message, &self.settings.topic_prefix)
    }

    /// Runs `attempt` until it succeeds, treating each failure as the broker being away: waits
    /// with capped exponential backoff (`streams.max_backoff`), logs once per outage, and gives
    /// up when the outage has lasted `streams.max_outage` or shutdown was requested.
    ///
    /// # Errors
    /// The last failure, once the outage outlasted the limit or shutdown interrupted the wait.
    pub fn broker<T, E: Display>(
        &self,
        what: &str,
        attempt: impl FnMut() -> Result<T, E>,
    ) -> anyhow::Result<T> {
        retry::with_broker(
            &self.health.outages,
            self.settings.max_outage,
            self.settings.max_backoff,
            &self.shutdown,
            what,
            attempt,
        )
    }

    /// Sleeps `delay` in short steps; `false` when shutdown was requested meanwhile.
    pub fn sleep(&self, delay: Duration) -> bool {
        sleep_unless(&self.shutdown, delay)
    }

    /// The retry delays of a transient fault: 100 ms doubling up to `streams.max_backoff`, with
    /// jitter, without end.
    pub fn backoff(&self) -> impl Iterator<Item = Duration> + use<> {
        backoff(self.settings.max_backoff)
    }

    /// A consumer in `group` (see [`Kafka::group`]) with the runtime's consumer settings
    /// ([`StreamsSettings::consumer_config`]), reading `read_committed` from the earliest offset
    /// without committing on its own; `tune` adds what this consumer needs.
    ///
    /// # Errors
    /// librdkafka refused the settings.
    pub fn consumer<R: Rebalancing>(
        &self,
        group: &str,
        rebalancing: R,
        tune: impl FnOnce(&mut ClientConfig),
    ) -> anyhow::Result<BaseConsumer<Client<R>>> {
        let mut config = self.settings.consumer_config();
        config
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed");
        tune(&mut config);
        config
            .create_with_context(Client::new(Arc::clone(&self.health), rebalancing))
            .with_context(|| format!("creating a consumer of group {group}"))
    }

    /// The partition count of each of `topics` (prefixed names), from metadata fetched through
    /// `consumer` (waiting for the broker).
    ///
    /// # Errors
    /// A topic that does not exist, or the broker stayed away too long.
    pub fn partition_counts<R: Rebalancing>(
        &self,
        consumer: &BaseConsumer<Client<R>>,
        topics: impl IntoIterator<Item = String>,
    ) -> anyhow::Result<BTreeMap<String, usize>> {
        let metadata = self.broker("fetching metadata", || {
            consumer.fetch_metadata(None, Duration::from_secs(30))
        })?;
        topics
            .into_iter()
            .map(|topic| {
                let count = partition_count(&metadata, &topic)
                    .with_context(|| format!("topic {topic} does not exist"))?;
                Ok((topic, count))
            })
            .collect()
    }
}

/// How many partitions `topic` has in `metadata`; `None` when it does not exist (or the broker
/// reported an error for it).
fn partition_count(metadata: &rdkafka::metadata::Metadata, topic: &str) -> Option<usize> {
    metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len())
}
