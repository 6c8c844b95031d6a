//! Restoring a task's stores from their changelog partitions before it processes anything.

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

/// Replays every store's changelog partition `partition` into `task` (read_committed, from the
/// beginning to the end). Returns the number of records applied.
pub(super) fn restore<P: Processor>(
    client: &ClientConfig,
    prefix: &str,
    task: &mut Task<P>,
    partition: i32,
    health: &std::sync::Arc<Health>,
) -> Result<u64, RestoreError> {
    let stores = task.topology().stores.clone();
    let group = format!("{}-restore", task.topology().group_id());
    let mut applied = 0;
    for store in stores {
        let topic = format!("{prefix}{}", task.topology().changelog_topic(&store));
        applied += read_partition(client, &group, &topic, partition, health, |message| {
            let key = message
                .key()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .unwrap_or_default();
            task.restore(&store, key, message.payload().map(<[u8]>::to_vec))
        })?;
    }
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
    mut apply: impl FnMut(&BorrowedMessage<'_>) -> Result<(), String>,
) -> Result<u64, RestoreError> {
    let consumer: BaseConsumer<Reporting> = client
        .clone()
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        // The end of the partition is known from the fetch that finds nothing more; the
        // broker holds such a fetch for fetch.wait.max.ms (500 ms by default), which every
        // restore paid once per partition and store.
        .set("fetch.wait.max.ms", "10")
        .set("isolation.level", "read_committed")
        .set("group.id", group)
        // Reaching the end of the partition is reported as a client error too, which
        // `outage::client_error` expects.
        .create_with_context(Reporting(std::sync::Arc::clone(health)))?;
    let (low, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(30))?;
    if high <= low {
        return Ok(0);
    }
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
    consumer.assign(&assignment)?;
    let started = Instant::now();
    let mut read = 0;
    loop {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(message)) => {
                apply(&message).map_err(|e| {
                    RestoreError::Corrupt(format!(
                        "{topic}[{partition}] offset {}: {e}",
                        message.offset()
                    ))
                })?;
                read += 1;
            }
            Some(Err(KafkaError::PartitionEOF(_))) => break,
            Some(Err(error)) => return Err(RestoreError::Broker(error)),
            None => {
                // Transaction markers take offsets too, so the position can reach the high
                // watermark without a last message.
                let position = consumer.position()?;
                let at = position
                    .find_partition(topic, partition)
                    .map(|p| p.offset());
                if matches!(at, Some(Offset::Offset(o)) if o >= high) {
                    break;
                }
                if started.elapsed() > Duration::from_secs(300) {
                    return Err(RestoreError::Corrupt(format!(
                        "restoring {topic}[{partition}] made no progress for 300 s"
                    )));
                }
            }
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
