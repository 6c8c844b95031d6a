//! One runner: its clients, its workers and the interval's state, for the life of its Kafka
//! clients (a client that fails fatally ends it: [`Restart`]).

use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rdkafka::ClientConfig;
use rdkafka::consumer::BaseConsumer;

use super::gate::Gate;
use super::global::GlobalThread;
use super::rebalance::RunnerConsumer;
use super::shared::Shared;
use super::shop::Shop;
use super::worker::Event;
use crate::streams::kafka::{Client, Kafka};
use crate::streams::processor::Processor;
use crate::streams::task::SharedStores;
use crate::sync::lock;

/// A Kafka client of the runner failed fatally (librdkafka's word for a client that can do
/// nothing more, e.g. a static group member fenced by its own re-join after a broker restart).
/// The runner starts again with new clients, from the last commit.
#[derive(Debug, thiserror::Error)]
#[error("the consumer failed fatally: {0}")]
pub(super) struct Restart(String);

/// How many restarts within `streams.max_outage` are waited out; one more is an error (e.g. two
/// instances with the same `instance_id`, fencing each other).
pub(super) const MAX_RESTARTS: usize = 5;

/// One runner: its clients, workers and the interval's state, for the life of its Kafka
/// clients.
pub(super) struct Runner<P, F> {
    pub(super) factory: Arc<F>,
    pub(super) kafka: Kafka,
    pub(super) consumer: RunnerConsumer,
    /// A consumer that never fetches, for watermark queries: on the main consumer's connection
    /// each waits behind the in-flight fetch (up to `fetch.wait.max.ms`, 500 ms), which made
    /// the gate take 6 s over 12 partitions and the lag report block the loop as long.
    pub(super) probe: BaseConsumer<Client>,
    pub(super) shared: Arc<Mutex<Shared>>,
    pub(super) events: Sender<Event>,
    pub(super) shop: Arc<Shop>,
    /// What a replacement producer is created from.
    pub(super) producer_config: ClientConfig,
    pub(super) transaction_started: Instant,
    /// Holds records of `after_others` inputs until the other inputs caught up.
    pub(super) gate: Gate,
    /// Deletes what the group has committed past from the repartition topics.
    pub(super) purge: Option<super::purge::Purge>,
    /// The instance's database of persistent stores (`streams.state_dir`), when the topology
    /// keeps a store on disk.
    pub(super) state: Option<crate::streams::disk::StateDb>,
    /// The global tables' thread and stores, when the processor has global inputs.
    pub(super) global: Option<(GlobalThread, SharedStores)>,
    pub(super) processor: std::marker::PhantomData<fn() -> P>,
}

impl<P: Processor + 'static, F: Fn() -> P> Runner<P, F> {
    /// A consumer in librdkafka's fatal state can do nothing more: [`Restart`].
    pub(super) fn check_consumer(&self) -> anyhow::Result<()> {
        use rdkafka::consumer::Consumer as _;
        match self.consumer.client().fatal_error() {
            Some((code, reason)) => Err(Restart(format!("{code:?}: {reason}")).into()),
            None => Ok(()),
        }
    }

    /// The first fatal error a worker reported, as this runner's error.
    pub(super) fn take_fatal(&self) -> anyhow::Result<()> {
        match lock(&self.shared).fatal.take() {
            Some(error) => {
                self.kafka
                    .health()
                    .note_error(format_args!("fatal: {error:#}"));
                Err(error.context("a partition worker failed"))
            }
            None => Ok(()),
        }
    }
}
