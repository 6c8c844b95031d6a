//! Committing an interval, and the producer pieces it rests on: the delivery counter, `send`,
//! `flush`, and creating a (transactional) producer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

use super::admin::Health;
use super::config::{Guarantee, RunnerConfig};
use super::metrics as names;
use super::outage;
use super::shared::Shared;
use crate::streams::record::ProducedRecord;

/// Counts failed deliveries, so at-least-once commits only what was delivered; reports the
/// client's errors as outages.
pub struct DeliveryCounter {
    failed: AtomicU64,
    health: Arc<Health>,
}

impl DeliveryCounter {
    /// A counter reporting the client's errors into `health`.
    pub fn new(health: Arc<Health>) -> Self {
        Self {
            failed: AtomicU64::new(0),
            health,
        }
    }

    /// Deliveries failed since the last call.
    pub fn take_failed(&self) -> u64 {
        self.failed.swap(0, Ordering::SeqCst)
    }
}

impl ClientContext for DeliveryCounter {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        outage::client_log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        outage::client_error(&self.health.outages, &error, reason);
    }
}

impl ProducerContext for DeliveryCounter {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, (): ()) {
        // Per record, so DEBUG: the failed commit that follows says it once.
        if let Err((error, _)) = result {
            tracing::debug!(error = %error, "A record was not delivered.");
            self.failed.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// How long one broker call of a commit (or of its recovery) may take: the transaction's own
/// timeout, so a broker that went away is noticed (and waited for) soon.
pub(super) const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one abort may take before the producer is replaced instead.
pub(super) const ABORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Commits the interval once every job handed out is done: the transaction with its offsets, or
/// (at-least-once) the offsets once every record is delivered. A transaction that cannot commit
/// is left marked failed, for the runner to abort before it rewinds. `true` when the broker took
/// a commit (so it is there); `false` when there was nothing to commit.
pub(super) fn commit<C: ConsumerContext>(
    shared: &mut Shared,
    consumer: &BaseConsumer<C>,
    guarantee: Guarantee,
    outages: &outage::Outages,
) -> anyhow::Result<bool> {
    shared.drain();
    anyhow::ensure!(
        !shared.stalled,
        "not committing: a partition worker gave up a record on a transient fault"
    );
    let producer = Arc::clone(&shared.producer);
    // The runner stops on a worker's fatal error (see `Runner::take_fatal`); never commit then.
    anyhow::ensure!(
        shared.fatal.is_none(),
        "not committing: a partition worker failed"
    );
    let started = Instant::now();
    let mut offsets = TopicPartitionList::new();
    for ((topic, partition), next) in &shared.pending {
        offsets.add_partition_offset(topic, *partition, Offset::Offset(*next))?;
    }
    match guarantee {
        Guarantee::ExactlyOnce => {
            if !shared.transaction_open {
                return Ok(false);
            }
            shared.transaction_open = false;
            let result = outages.calling("committing the transaction", || {
                if offsets.count() > 0 {
                    let metadata = consumer
                        .group_metadata()
                        .ok_or(KafkaError::NoMessageReceived)?;
                    producer.send_offsets_to_transaction(&offsets, &metadata, COMMIT_TIMEOUT)?;
                }
                // Delivery reports come from an event queue only the producer's own poll serves,
                // so flush first (commit_transaction's internal flush cannot serve it).
                flush(&producer, COMMIT_TIMEOUT)?;
                producer.commit_transaction(COMMIT_TIMEOUT)
            });
            if let Err(error) = result {
                shared.transaction_failed = true;
                shared.pending.clear();
                return Err(error).context("committing the transaction");
            }
        }
        Guarantee::AtLeastOnce => {
            outages
                .calling("flushing the producer", || flush(&producer, COMMIT_TIMEOUT))
                .context("flushing the producer")?;
            let failed = producer.context().take_failed();
            if failed > 0 {
                shared.pending.clear();
                anyhow::bail!("{failed} records were not delivered");
            }
            if offsets.count() > 0 {
                outages
                    .calling("committing offsets", || {
                        consumer.commit(&offsets, CommitMode::Sync)
                    })
                    .context("committing offsets")?;
            }
        }
    }
    shared.pending.clear();
    tracing::debug!(elapsed = ?started.elapsed(), partitions = offsets.count(), "Committed.");
    ::metrics::counter!(names::COMMITS).increment(1);
    ::metrics::histogram!(names::COMMIT_LATENCY).record(started.elapsed().as_secs_f64());
    Ok(guarantee == Guarantee::ExactlyOnce || offsets.count() > 0)
}

/// Waits until every produced record is delivered (or failed), serving delivery reports.
///
/// Written here because rust-rdkafka 0.39's `BaseProducer::flush` polls in slices that each last
/// their full 100 ms, even when the reports arrived at once: every flush, and so every commit,
/// took at least 100 ms (measured: commits went from ~103 ms to a few ms).
pub fn flush<C: ProducerContext>(
    producer: &BaseProducer<C>,
    timeout: Duration,
) -> Result<(), KafkaError> {
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

/// Queues `record` (to `partition`, or the partitioner's choice), waiting while the producer's
/// queue is full.
pub fn send<C: ProducerContext<DeliveryOpaque = ()>>(
    producer: &BaseProducer<C>,
    record: &ProducedRecord,
    partition: Option<i32>,
) -> Result<(), KafkaError> {
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
        match producer.send(base) {
            Ok(()) => return Ok(()),
            Err((
                KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                back,
            )) => {
                producer.poll(Duration::from_millis(1));
                base = back;
            }
            Err((error, _)) => return Err(error),
        }
    }
}

/// A producer from `producer_config`; with exactly-once, its transactions initialised, which
/// fences a previous producer with the same transactional id and aborts its open transaction, so
/// the changelogs and inputs are settled before anything is restored. Waits for the broker.
pub(super) fn new_producer(
    producer_config: &ClientConfig,
    config: &RunnerConfig,
    health: &Arc<Health>,
    shutdown: &AtomicBool,
) -> anyhow::Result<Arc<BaseProducer<DeliveryCounter>>> {
    let producer: BaseProducer<DeliveryCounter> = producer_config
        .create_with_context(DeliveryCounter::new(Arc::clone(health)))
        .context("creating the producer")?;
    if config.guarantee == Guarantee::ExactlyOnce {
        // librdkafka sends the transaction coordinator query that `init_transactions` starts only
        // through a broker it is connected to, and when it has none yet retries 500 ms later:
        // a fresh instance's group join then waited that long in about one start of three. A
        // metadata round trip first connects one. Its failure is left to the wait below.
        let _ = producer
            .client()
            .fetch_metadata(None, Duration::from_secs(2));
        outage::with_broker(
            &health.outages,
            config.max_outage,
            config.max_backoff,
            shutdown,
            "initialising transactions",
            || producer.init_transactions(COMMIT_TIMEOUT),
        )?;
    }
    Ok(Arc::new(producer))
}
