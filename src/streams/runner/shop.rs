//! What every worker (and the global tables' thread) shares: the Kafka handle, the producer of
//! the open transaction, the registry codec and the topology; and the one way they call the
//! registry, waiting out its outages within the transaction's budget.

use std::cell::RefCell;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cdc::AvroValue;
use crate::streams::codec::{AvroCodec, CodecError};
use crate::streams::kafka::{Dependency, Kafka, Producer};
use crate::streams::metrics as names;
use crate::streams::record::RawRecord;
use crate::streams::task::AvroResolved;
use crate::streams::topology::{InputFormat, Topology};
use crate::sync::lock;

/// What every worker shares.
pub(super) struct Shop {
    pub(super) kafka: Kafka,
    pub(super) producer: Arc<Producer>,
    pub(super) codec: Arc<AvroCodec>,
    pub(super) runtime: tokio::runtime::Handle,
    pub(super) topology: Topology,
    /// How long a worker may wait for the registry within one transaction (half the
    /// transaction's timeout); `None` without transactions.
    transaction_budget: Option<Duration>,
    /// When the open transaction must be given up rather than waited in any longer.
    give_up_at: Mutex<Option<Instant>>,
    /// The partition count of the inputs (and so of the repartition topics), once checked.
    pub(super) partitions: Arc<std::sync::OnceLock<i32>>,
}

impl Shop {
    pub(super) fn new(
        kafka: Kafka,
        producer: Arc<Producer>,
        runtime: tokio::runtime::Handle,
        topology: Topology,
        transaction_budget: Option<Duration>,
    ) -> Self {
        Self {
            codec: Arc::new(AvroCodec::new(&kafka.settings().schema_registry_url)),
            kafka,
            producer,
            runtime,
            topology,
            transaction_budget,
            give_up_at: Mutex::default(),
            partitions: Arc::default(),
        }
    }

    /// The same shop around a replacement producer (no worker may hold the old one).
    pub(super) fn with_producer(&self, producer: Arc<Producer>) -> Self {
        Self {
            kafka: self.kafka.clone(),
            producer,
            codec: Arc::clone(&self.codec),
            runtime: self.runtime.clone(),
            topology: self.topology.clone(),
            transaction_budget: self.transaction_budget,
            give_up_at: Mutex::default(),
            partitions: Arc::clone(&self.partitions),
        }
    }

    /// A transaction began at `started`: waits inside it end at its budget.
    pub(super) fn transaction_began(&self, started: Instant) {
        *lock(&self.give_up_at) = self.transaction_budget.map(|budget| started + budget);
    }

    /// No transaction is open.
    pub(super) fn transaction_ended(&self) {
        *lock(&self.give_up_at) = None;
    }

    /// Whether waiting `delay` more would outlive the open transaction's budget.
    fn would_outlive_transaction(&self, delay: Duration) -> bool {
        lock(&self.give_up_at).is_some_and(|at| Instant::now() + delay >= at)
    }

    /// Counts one record of `topic` in the counter `name`.
    pub(super) fn count(&self, name: &'static str, topic: &str) {
        thread_local! {
            // Per-topic counters by metric name, cached per thread: building labels per record
            // costs allocations, and one cache shared by the workers a lock, that the hot path
            // does not need. A list, not a map: a worker counts a handful of topics, and
            // comparing a few short names costs less than hashing two keys with SipHash.
            static COUNTERS: RefCell<Vec<(&'static str, String, ::metrics::Counter)>> =
                RefCell::default();
        }
        COUNTERS.with_borrow_mut(|counters| {
            if let Some((_, _, counter)) = counters
                .iter()
                .find(|(counted, counted_topic, _)| *counted == name && counted_topic == topic)
            {
                counter.increment(1);
                return;
            }
            let counter = ::metrics::counter!(name, "topic" => topic.to_owned());
            counter.increment(1);
            counters.push((name, topic.to_owned(), counter));
        });
    }

    /// Resolves a record of an Avro topic through the registry (`None` for other formats),
    /// waiting out registry outages; `within_transaction`: the wait ends at the open
    /// transaction's budget. A CDC topic's key and value are read as JSON, what its envelope
    /// readers take.
    pub(super) fn resolve_avro(
        &self,
        format: InputFormat,
        record: &RawRecord,
        within_transaction: bool,
    ) -> anyhow::Result<Retried<Option<AvroResolved>>> {
        if !format.avro_values() {
            return Ok(Retried::Answer(Ok(None)));
        }
        // A schema seen before needs no registry, nor the async runtime.
        let (codec, runtime) = (&self.codec, &self.runtime);
        if !matches!(format, InputFormat::Cdc(_)) {
            let value = self.registry(within_transaction, || {
                let bytes = record.value.as_deref();
                codec
                    .decode_known(bytes)
                    .unwrap_or_else(|| runtime.block_on(codec.decode(bytes)))
            })?;
            return Ok(value.map(|value| Some(AvroResolved::Generic { key: None, value })));
        }
        let decode = |bytes: Option<&[u8]>| {
            self.registry(within_transaction, || {
                codec
                    .decode_known_json(bytes)
                    .unwrap_or_else(|| runtime.block_on(codec.decode_json(bytes)))
            })
        };
        let key = if format.avro_keys() {
            decode(record.key.as_deref())?
        } else {
            Retried::Answer(Ok(None))
        };
        let bytes = record.value.as_deref();
        let value = if format.mongo_change_stream() {
            self.registry(within_transaction, || {
                codec.decode_known_change(bytes).unwrap_or_else(|| {
                    runtime
                        .block_on(codec.decode_json(bytes))
                        .map(|value| value.map(AvroValue::Json))
                })
            })?
        } else {
            decode(bytes)?.map(|value| value.map(AvroValue::Json))
        };
        Ok(key
            .and(value)
            .map(|(key, value)| Some(AvroResolved::Cdc { key, value })))
    }

    /// Runs a registry call until it is not transient, waiting with capped backoff (one WARN per
    /// outage, see [`crate::streams::kafka::health`]). Fatal is an error; poison is the answer.
    /// Gives up when shutdown arrives, when the wait would outlive the open transaction, or when
    /// the outage outlasted `streams.max_outage` (an error).
    pub(super) fn registry<T>(
        &self,
        within_transaction: bool,
        attempt: impl Fn() -> Result<T, CodecError>,
    ) -> anyhow::Result<Retried<T>> {
        let settings = self.kafka.settings();
        // Built at the first transient error: most calls answer at once.
        let mut delays = None;
        loop {
            match attempt() {
                Err(CodecError::Transient(message)) => {
                    ::metrics::counter!(names::ERRORS, "class" => "transient").increment(1);
                    let away = self.kafka.outages().down(Dependency::Registry, &message);
                    anyhow::ensure!(
                        away < settings.max_outage,
                        "the schema registry has been unavailable for {away:?}, longer than streams.max_outage ({:?}): {message}",
                        settings.max_outage
                    );
                    let delay = delays
                        .get_or_insert_with(|| self.kafka.backoff())
                        .next()
                        .unwrap_or(settings.max_backoff);
                    if within_transaction && self.would_outlive_transaction(delay) {
                        return Ok(Retried::Stalled);
                    }
                    if !self.kafka.sleep(delay) {
                        return Ok(Retried::Interrupted);
                    }
                }
                Err(CodecError::Fatal(message)) => {
                    ::metrics::counter!(names::ERRORS, "class" => "fatal").increment(1);
                    anyhow::bail!("fatal: {message}");
                }
                answer => {
                    self.kafka.outages().up(Dependency::Registry);
                    return Ok(Retried::Answer(answer));
                }
            }
        }
    }
}

/// What a retried registry call came to.
pub(super) enum Retried<T> {
    /// The call's answer (poison stays an error for the caller to dead-letter).
    Answer(Result<T, CodecError>),
    /// Shutdown interrupted the wait.
    Interrupted,
    /// The wait would outlive the transaction.
    Stalled,
}

impl<T> Retried<T> {
    /// The answer's value mapped; the rest as it is.
    fn map<U>(self, f: impl FnOnce(T) -> U) -> Retried<U> {
        match self {
            Self::Answer(answer) => Retried::Answer(answer.map(f)),
            Self::Interrupted => Retried::Interrupted,
            Self::Stalled => Retried::Stalled,
        }
    }

    /// Both answers, or the first of the two that is not one: an interruption, then a stall,
    /// then an error.
    fn and<U>(self, other: Retried<U>) -> Retried<(T, U)> {
        match (self, other) {
            (Self::Interrupted, _) | (_, Retried::Interrupted) => Retried::Interrupted,
            (Self::Stalled, _) | (_, Retried::Stalled) => Retried::Stalled,
            (Self::Answer(Err(error)), _) | (_, Retried::Answer(Err(error))) => {
                Retried::Answer(Err(error))
            }
            (Self::Answer(Ok(a)), Retried::Answer(Ok(b))) => Retried::Answer(Ok((a, b))),
        }
    }
}
