//! Reading topics whole: a changelog partition into a task's stores, the global tables' topics,
//! the effect stage's done ids, the emulator's state. Each reads `read_committed` from the
//! beginning to the end the partitions have when it starts, outside any consumer group's
//! assignment (and never committing).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message as _};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::client::Client;
use super::handle::Kafka;
use super::health::Health;

/// Why a record that was read could not be applied (any error; its message is kept).
pub type ApplyError = Box<dyn std::error::Error + Send + Sync>;

/// Why a read did not finish.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The broker did not answer (transient: read again).
    #[error(transparent)]
    Broker(#[from] KafkaError),
    /// A record its reader cannot take (fatal).
    #[error("{topic}[{partition}] offset {offset}: {message}")]
    Apply {
        /// Where the record is.
        topic: String,
        /// Its partition.
        partition: i32,
        /// Its offset.
        offset: i64,
        /// What its reader said.
        message: String,
    },
    /// A reader asked to start beyond a partition's end: what it holds (a store's checkpoint)
    /// does not come from this topic as it is now (it was recreated, or the state is another
    /// deployment's).
    #[error("{topic}[{partition}] ends at {end}, before offset {from} the reader holds up to")]
    Ahead {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// Where the reader was to start.
        from: i64,
        /// The partition's end.
        end: i64,
    },
    /// No progress at all for 300 s (fatal).
    #[error("reading {topic} partitions {partitions:?} made no progress for 300 s")]
    Stuck {
        /// The topic.
        topic: String,
        /// The partitions still short of their end.
        partitions: Vec<i32>,
    },
}

impl Kafka {
    /// Reads `partitions` (prefixed topic, partition, first offset) to their end, as
    /// [`read_partitions_from`] does, and again while the broker is away (up to
    /// `streams.max_outage`). Each attempt starts from `fresh()`, which `apply` folds every record
    /// into (in order within a partition). Returns the folded state and the number of records
    /// read.
    ///
    /// # Errors
    /// A record `apply` refused, no progress for 300 s, a broker outage longer than
    /// `streams.max_outage`, or shutdown while waiting for the broker.
    pub fn read_whole<S>(
        &self,
        what: &str,
        group: &str,
        partitions: &[(String, i32, i64)],
        mut fresh: impl FnMut() -> S,
        mut apply: impl FnMut(&mut S, &BorrowedMessage<'_>) -> Result<(), ApplyError>,
    ) -> anyhow::Result<(S, u64)> {
        let client = self.settings().consumer_config();
        let read = self.broker(what, || {
            let mut state = fresh();
            match read_partitions_from(&client, group, partitions, self.health(), |message| {
                apply(&mut state, message)
            }) {
                Ok(count) => Ok(Ok((state, count))),
                Err(ReadError::Broker(error)) => Err(error),
                Err(fatal) => Ok(Err(fatal)),
            }
        })?;
        read.with_context(|| what.to_owned())
    }
}

/// Reads `topic[partition]` (read_committed) from the beginning to its end, handing each record
/// to `apply`. Returns the number of records read.
///
/// # Errors
/// As [`read_partitions`].
pub fn read_partition(
    client: &ClientConfig,
    group: &str,
    topic: &str,
    partition: i32,
    health: &Arc<Health>,
    apply: impl FnMut(&BorrowedMessage<'_>) -> Result<(), ApplyError>,
) -> Result<u64, ReadError> {
    read_partitions(
        client,
        group,
        &[(topic.to_owned(), partition)],
        health,
        apply,
    )
}

/// Reads `partitions` (topic, partition) (read_committed) from the beginning to the end they
/// have now through one consumer, handing each record to `apply` (in order within a
/// partition). Returns the number of records read.
///
/// A topic's partitions are read at once (librdkafka fetches them in parallel), the topics one
/// after another: the end of a partition is reported with its number only, so only one topic
/// may be assigned at a time. The consumer is shared: starting one (connecting, learning the
/// cluster) is most of what an empty changelog costs.
///
/// # Errors
/// The broker did not answer, a record `apply` refused, or no progress for 300 s.
pub fn read_partitions(
    client: &ClientConfig,
    group: &str,
    partitions: &[(String, i32)],
    health: &Arc<Health>,
    apply: impl FnMut(&BorrowedMessage<'_>) -> Result<(), ApplyError>,
) -> Result<u64, ReadError> {
    let from: Vec<(String, i32, i64)> = partitions
        .iter()
        .map(|(topic, partition)| (topic.clone(), *partition, 0))
        .collect();
    read_partitions_from(client, group, &from, health, apply)
}

/// [`read_partitions`], each partition from its offset (`(topic, partition, first offset)`;
/// `0`: the beginning).
///
/// # Errors
/// As [`read_partitions`]; and [`ReadError::Ahead`] for an offset beyond a partition's end.
pub fn read_partitions_from(
    client: &ClientConfig,
    group: &str,
    partitions: &[(String, i32, i64)],
    health: &Arc<Health>,
    mut apply: impl FnMut(&BorrowedMessage<'_>) -> Result<(), ApplyError>,
) -> Result<u64, ReadError> {
    if partitions.is_empty() {
        return Ok(0);
    }
    let consumer: BaseConsumer<Client> = client
        .clone()
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        // The end of a partition is known from the fetch that finds nothing more; the broker
        // holds such a fetch for fetch.wait.max.ms (500 ms by default), which every restore
        // paid once per partition and store.
        .set("fetch.wait.max.ms", "10")
        .set("isolation.level", "read_committed")
        .set("group.id", group)
        // An offset below the log's start (records deleted by retention) reads from its start.
        .set("auto.offset.reset", "earliest")
        // Reaching the end of the partition is reported as a client error too, which
        // `client::client_error` expects.
        .create_with_context(Client::new(Arc::clone(health), ()))?;
    let mut topics: BTreeMap<&str, Vec<(i32, i64)>> = BTreeMap::new();
    for (topic, partition, from) in partitions {
        topics.entry(topic).or_default().push((*partition, *from));
    }
    let mut read = 0;
    for (topic, partitions) in topics {
        read += read_topic(&consumer, topic, &partitions, &mut apply)?;
    }
    // Closing a client waits for its threads to notice (~100 ms); nothing waits for that here.
    std::thread::spawn(move || drop(consumer));
    Ok(read)
}

fn read_topic(
    consumer: &BaseConsumer<Client>,
    topic: &str,
    partitions: &[(i32, i64)],
    apply: &mut impl FnMut(&BorrowedMessage<'_>) -> Result<(), ApplyError>,
) -> Result<u64, ReadError> {
    // The end offset of each partition that has records past where to start; those are read.
    let mut remaining: BTreeMap<i32, i64> = BTreeMap::new();
    let mut assignment = TopicPartitionList::new();
    for &(partition, from) in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(30))?;
        if from > high {
            return Err(ReadError::Ahead {
                topic: topic.to_owned(),
                partition,
                from,
                end: high,
            });
        }
        if high > low.max(from) {
            remaining.insert(partition, high);
            let start = if from > 0 {
                Offset::Offset(from)
            } else {
                Offset::Beginning
            };
            assignment.add_partition_offset(topic, partition, start)?;
        }
    }
    if remaining.is_empty() {
        return Ok(0);
    }
    consumer.assign(&assignment)?;
    let mut last_progress = Instant::now();
    let mut read = 0;
    while !remaining.is_empty() {
        match consumer.poll(Duration::from_millis(500)) {
            // Left from the topic read before, whose partitions were all read to their end.
            Some(Ok(message)) if message.topic() != topic => {}
            Some(Ok(message)) => {
                apply(&message).map_err(|error| ReadError::Apply {
                    topic: topic.to_owned(),
                    partition: message.partition(),
                    offset: message.offset(),
                    message: error.to_string(),
                })?;
                read += 1;
                last_progress = Instant::now();
                let partition = message.partition();
                if remaining
                    .get(&partition)
                    .is_some_and(|end| message.offset() + 1 >= *end)
                {
                    remaining.remove(&partition);
                }
            }
            // The end of what is committed: an open transaction's records lie beyond it, up to
            // the high watermark, and are not for read_committed readers.
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                remaining.remove(&partition);
            }
            None => {
                // Transaction markers take offsets too, so the position can reach the end
                // without a last message.
                let position = consumer.position()?;
                remaining.retain(|partition, end| {
                    !matches!(
                        position.find_partition(topic, *partition).map(|p| p.offset()),
                        Some(Offset::Offset(at)) if at >= *end
                    )
                });
                if last_progress.elapsed() > Duration::from_secs(300) {
                    return Err(ReadError::Stuck {
                        topic: topic.to_owned(),
                        partitions: remaining.into_keys().collect(),
                    });
                }
            }
            Some(Err(error)) => return Err(ReadError::Broker(error)),
        }
    }
    if let Err(error) = consumer.unassign() {
        // Not worth failing the restore over; the consumer is dropped next.
        if error.rdkafka_error_code() != Some(RDKafkaErrorCode::NoError) {
            tracing::debug!(error = %error, "Unassigning the restore consumer failed.");
        }
    }
    Ok(read)
}
