//! Restoring a task's stores from their changelog partitions before it processes anything.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message as _};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::admin::Health;
use super::metrics as names;
use super::outage::Reporting;
use crate::streams::processor::Processor;
use crate::streams::task::Task;

/// Why a restore did not finish.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RestoreError {
    /// The broker did not answer (transient: restore again).
    #[error(transparent)]
    Broker(#[from] KafkaError),
    /// A changelog record the store cannot take, or no progress at all (fatal).
    #[error("{0}")]
    Corrupt(String),
}

/// Replays every store's changelog partition of each task into it (read_committed, from the
/// beginning to the end) through one consumer, store by store, all partitions of a store at
/// once: librdkafka fetches them in parallel, so a restart with many partitions waits about as
/// long as for its largest one. Returns the number of records applied.
pub(super) fn restore<P: Processor>(
    client: &ClientConfig,
    prefix: &str,
    tasks: &mut BTreeMap<i32, Task<P>>,
    health: &std::sync::Arc<Health>,
) -> Result<u64, RestoreError> {
    let Some(topology) = tasks.values().next().map(|t| t.topology().clone()) else {
        return Ok(0);
    };
    let group = format!("{}-restore", topology.group_id());
    let stores: BTreeMap<String, &String> = topology
        .stores
        .iter()
        .map(|store| {
            (
                format!("{prefix}{}", topology.changelog_topic(store)),
                store,
            )
        })
        .collect();
    let partitions: Vec<(String, i32)> = stores
        .keys()
        .flat_map(|topic| tasks.keys().map(|p| (topic.clone(), *p)))
        .collect();
    let applied = read_partitions(client, &group, &partitions, health, |message| {
        let task = tasks
            .get_mut(&message.partition())
            .ok_or_else(|| format!("BUG: no task for partition {}", message.partition()))?;
        let store = stores
            .get(message.topic())
            .ok_or_else(|| format!("BUG: {} is no changelog", message.topic()))?;
        let key = String::from_utf8_lossy(message.key().unwrap_or_default());
        task.restore(store, &key, message.payload())
    })?;
    metrics::counter!(names::RESTORED).increment(applied);
    Ok(applied)
}

/// Reads `topic[partition]` (read_committed) from the beginning to its end, handing each record
/// to `apply`. Returns the number of records read.
pub(crate) fn read_partition(
    client: &ClientConfig,
    group: &str,
    topic: &str,
    partition: i32,
    health: &std::sync::Arc<Health>,
    apply: impl FnMut(&BorrowedMessage<'_>) -> Result<(), String>,
) -> Result<u64, RestoreError> {
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
pub(crate) fn read_partitions(
    client: &ClientConfig,
    group: &str,
    partitions: &[(String, i32)],
    health: &std::sync::Arc<Health>,
    mut apply: impl FnMut(&BorrowedMessage<'_>) -> Result<(), String>,
) -> Result<u64, RestoreError> {
    if partitions.is_empty() {
        return Ok(0);
    }
    let consumer: BaseConsumer<Reporting> = client
        .clone()
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        // The end of a partition is known from the fetch that finds nothing more; the broker
        // holds such a fetch for fetch.wait.max.ms (500 ms by default), which every restore
        // paid once per partition and store.
        .set("fetch.wait.max.ms", "10")
        .set("isolation.level", "read_committed")
        .set("group.id", group)
        // Reaching the end of the partition is reported as a client error too, which
        // `outage::client_error` expects.
        .create_with_context(Reporting(std::sync::Arc::clone(health)))?;
    let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (topic, partition) in partitions {
        topics.entry(topic).or_default().push(*partition);
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
    consumer: &BaseConsumer<Reporting>,
    topic: &str,
    partitions: &[i32],
    apply: &mut impl FnMut(&BorrowedMessage<'_>) -> Result<(), String>,
) -> Result<u64, RestoreError> {
    // The end offset of each partition that has records; those are the ones to read.
    let mut remaining: BTreeMap<i32, i64> = BTreeMap::new();
    let mut assignment = TopicPartitionList::new();
    for &partition in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(30))?;
        if high > low {
            remaining.insert(partition, high);
            assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
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
                apply(&message).map_err(|e| {
                    RestoreError::Corrupt(format!(
                        "{topic}[{}] offset {}: {e}",
                        message.partition(),
                        message.offset()
                    ))
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
                    return Err(RestoreError::Corrupt(format!(
                        "reading {topic} partitions {remaining:?} made no progress for 300 s"
                    )));
                }
            }
            Some(Err(error)) => return Err(RestoreError::Broker(error)),
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
