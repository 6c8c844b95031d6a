//! Producing: the runtime's producer context ([`DeliveryCounter`]), [`send`] and [`flush`], and
//! the producers a [`Kafka`] handle creates (plain or transactional).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Message as _, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer as _, ProducerContext};
use rdkafka::{ClientConfig, ClientContext};

use super::client::{client_error, client_log};
use super::handle::Kafka;
use super::health::Health;
use super::settings::Guarantee;
use crate::streams::record::ProducedRecord;
use crate::sync::lock;

/// The runtime's producer.
pub type Producer = BaseProducer<DeliveryCounter>;

/// How long one broker call of a commit (or of its recovery) may take: the transaction's own
/// timeout, so a broker that went away is noticed (and waited for) soon.
pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one abort may take before the producer is replaced instead.
pub const ABORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Counts failed deliveries, so at-least-once commits only what was delivered; reports the
/// client's errors as outages; when asked, notes where changelog records landed (the offsets
/// persistent stores record as their checkpoints; their producer reports every delivery, the
/// others only failures: `runner::start`).
pub struct DeliveryCounter {
    failed: AtomicU64,
    health: Arc<Health>,
    track_changelogs: AtomicBool,
    /// Next offset per changelog topic and partition delivered since the last take.
    changelogs: Mutex<HashMap<String, HashMap<i32, i64>>>,
}

/// The topics whose delivered offsets [`DeliveryCounter`] notes (see
/// [`crate::streams::Topology::changelog_topic`]).
const CHANGELOG_SUFFIX: &str = ".changelog";

impl DeliveryCounter {
    /// A counter reporting the client's errors into `health`.
    pub fn new(health: Arc<Health>) -> Self {
        Self {
            failed: AtomicU64::new(0),
            health,
            track_changelogs: AtomicBool::new(false),
            changelogs: Mutex::default(),
        }
    }

    /// Deliveries failed since the last call.
    pub fn take_failed(&self) -> u64 {
        self.failed.swap(0, Ordering::SeqCst)
    }

    /// From now on, notes the offsets changelog records are delivered at.
    pub fn track_changelogs(&self) {
        self.track_changelogs.store(true, Ordering::SeqCst);
    }

    /// The next offset after the last changelog record delivered to each topic and partition
    /// since the last call.
    pub fn take_changelog_offsets(&self) -> HashMap<String, HashMap<i32, i64>> {
        std::mem::take(&mut *lock(&self.changelogs))
    }
}

impl ClientContext for DeliveryCounter {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        client_log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        client_error(&self.health.outages, &error, reason);
    }
}

impl ProducerContext for DeliveryCounter {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, (): ()) {
        // Per record, so DEBUG: the failed commit that follows says it once.
        match result {
            Err((error, _)) => {
                tracing::debug!(error = %error, "A record was not delivered.");
                self.failed.fetch_add(1, Ordering::SeqCst);
            }
            Ok(message)
                if self.track_changelogs.load(Ordering::Relaxed)
                    && message.topic().ends_with(CHANGELOG_SUFFIX) =>
            {
                let next = message.offset() + 1;
                let mut changelogs = lock(&self.changelogs);
                // No allocation once the topic is known: a record per store write comes here.
                let partitions = match changelogs.get_mut(message.topic()) {
                    Some(partitions) => partitions,
                    None => changelogs.entry(message.topic().to_owned()).or_default(),
                };
                let at = partitions.entry(message.partition()).or_insert(next);
                *at = (*at).max(next);
            }
            Ok(_) => {}
        }
    }
}

impl Kafka {
    /// The settings of a producer of this process: idempotent; with `transactional_id` (under
    /// exactly-once), transactional, with Kafka Streams' transaction timeout (10 s) unless
    /// `streams.librdkafka` sets one.
    pub fn producer_config(&self, transactional_id: Option<&str>) -> ClientConfig {
        let mut config = self.settings().client_config();
        if let Some(id) = transactional_id {
            config.set("transactional.id", id);
            // Kafka Streams' default: a crashed instance's open transaction blocks read_committed
            // readers of its partitions for at most this long.
            if config.get("transaction.timeout.ms").is_none() {
                config.set("transaction.timeout.ms", "10000");
            }
        }
        config.set("enable.idempotence", "true");
        config
    }

    /// A producer from `config`. A transactional one gets its transactions initialised, which
    /// fences a previous producer with the same transactional id and aborts its open
    /// transaction, so the changelogs and inputs are settled before anything is restored; this
    /// waits for the broker.
    ///
    /// # Errors
    /// The producer cannot be created, or the broker stayed away longer than
    /// `streams.max_outage`.
    pub fn create_producer(&self, config: &ClientConfig) -> anyhow::Result<Arc<Producer>> {
        let producer: Producer = config
            .create_with_context(DeliveryCounter::new(Arc::clone(self.health())))
            .context("creating the producer")?;
        if config.get("transactional.id").is_some() {
            debug_assert_eq!(self.settings().guarantee, Guarantee::ExactlyOnce);
            // librdkafka sends the transaction coordinator query that `init_transactions` starts
            // only through a broker it is connected to, and when it has none yet retries 500 ms
            // later: a fresh instance's group join then waited that long in about one start of
            // three. A metadata round trip first connects one. Its failure is left to the wait
            // below.
            let _ = producer
                .client()
                .fetch_metadata(None, Duration::from_secs(2));
            self.broker("initialising transactions", || {
                producer.init_transactions(COMMIT_TIMEOUT)
            })?;
        }
        Ok(Arc::new(producer))
    }

    /// Produces `record` through `producer` and waits until the broker has it, for as long as
    /// the broker is away (`streams.max_outage`): for records that must be there before the
    /// caller moves on.
    ///
    /// # Errors
    /// The broker stayed away too long, or shutdown interrupted the wait.
    pub fn deliver(
        &self,
        producer: &Producer,
        record: &ProducedRecord,
        partition: Option<i32>,
        what: &str,
    ) -> anyhow::Result<()> {
        loop {
            self.broker(what, || send(producer, record, partition))?;
            self.broker(what, || {
                self.outages()
                    .calling(what, || flush(producer, Duration::from_secs(10)))
            })?;
            if producer.context().take_failed() == 0 {
                return Ok(());
            }
            // It expired in the queue (`message.timeout.ms`) while the broker was away.
        }
    }
}

/// Waits until every produced record is delivered (or failed), serving delivery reports.
///
/// Written here because rust-rdkafka 0.39's `BaseProducer::flush` polls in slices that each last
/// their full 100 ms, even when the reports arrived at once: every flush, and so every commit,
/// took at least 100 ms (measured: commits went from ~103 ms to a few ms). Nor does it wait in
/// `BaseProducer::poll` with a timeout: that poll runs until its deadline and asks librdkafka
/// for the time left in whole milliseconds, so its last millisecond is a busy loop, and a poll
/// of 1 ms is nothing else (on one core the spin kept the librdkafka thread that reads the
/// broker's answers from the CPU: a sixth of the loop thread's time was clock reads).
pub fn flush<C: ProducerContext>(
    producer: &BaseProducer<C>,
    timeout: Duration,
) -> Result<(), KafkaError> {
    let deadline = Instant::now() + timeout;
    loop {
        let before = producer.in_flight_count();
        if before == 0 {
            return Ok(());
        }
        // Serves one event of reports, if one is there.
        producer.poll(Duration::ZERO);
        if producer.in_flight_count() < before {
            continue;
        }
        if Instant::now() >= deadline {
            return Err(KafkaError::Flush(
                rdkafka::types::RDKafkaErrorCode::OperationTimedOut,
            ));
        }
        std::thread::sleep(WAIT_STEP);
    }
}

/// How long a wait for the producer ([`flush`], a full queue in [`send`]) sleeps before it
/// looks again.
const WAIT_STEP: Duration = Duration::from_micros(200);

/// Queues `record` (to `partition`, or the partitioner's choice), waiting while the producer's
/// queue is full.
pub fn send<C: ProducerContext<DeliveryOpaque = ()>>(
    producer: &BaseProducer<C>,
    record: &ProducedRecord,
    partition: Option<i32>,
) -> Result<(), KafkaError> {
    let mut base = BaseRecord::<[u8], [u8]>::to(&record.topic);
    // Most records carry none: an empty header list would still be a C allocation (and a free
    // on a librdkafka thread) per record.
    if !record.headers.is_empty() {
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
        for (name, value) in &record.headers {
            headers = headers.insert(Header {
                key: name,
                value: Some(value),
            });
        }
        base = base.headers(headers);
    }
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
                // Room is made as the broker answers; failures' reports need serving.
                producer.poll(Duration::ZERO);
                std::thread::sleep(WAIT_STEP);
                base = back;
            }
            Err((error, _)) => return Err(error),
        }
    }
}
