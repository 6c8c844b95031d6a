//! Committing an interval: the transaction with its input offsets (exactly-once), or the offsets
//! once every record is delivered (at-least-once). The loop commits every
//! `streams.commit_interval`, and the revoke callback before partitions go.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::producer::Producer as _;
use rdkafka::{Offset, TopicPartitionList};

use super::shared::{Cause, Shared, Transaction};
use crate::streams::kafka::produce::COMMIT_TIMEOUT;
use crate::streams::kafka::{Guarantee, Outages, Producer, flush};
use crate::streams::metrics as names;

/// Commits the interval once every job handed out is done: the transaction with its offsets, or
/// (at-least-once) the offsets once every record is delivered. An interval that cannot commit is
/// left doomed, for the runner to give up. `true` when the broker took a commit (so it is
/// there); `false` when there was nothing to commit.
pub(super) fn commit<C: ConsumerContext>(
    shared: &mut Shared,
    consumer: &BaseConsumer<C>,
    guarantee: Guarantee,
    outages: &Outages,
) -> anyhow::Result<bool> {
    shared.drain();
    // The runner stops on a worker's fatal error (see `Runner::take_fatal`); never commit then.
    anyhow::ensure!(
        shared.fatal.is_none(),
        "not committing: a partition worker failed"
    );
    if let Some(cause) = shared.doomed() {
        anyhow::bail!(
            "not committing: the interval was given up ({})",
            cause.name()
        );
    }
    let producer = Arc::clone(&shared.producer);
    let started = Instant::now();
    let mut offsets = TopicPartitionList::new();
    for ((topic, partition), next) in &shared.pending {
        offsets.add_partition_offset(topic, *partition, Offset::Offset(*next))?;
    }
    let result = match guarantee {
        Guarantee::ExactlyOnce => {
            if shared.transaction == Transaction::Idle {
                return Ok(false);
            }
            shared.committed();
            outages
                .calling("committing the transaction", || {
                    if offsets.count() > 0 {
                        let metadata = consumer
                            .group_metadata()
                            .ok_or(KafkaError::NoMessageReceived)?;
                        producer.send_offsets_to_transaction(
                            &offsets,
                            &metadata,
                            COMMIT_TIMEOUT,
                        )?;
                    }
                    // Delivery reports come from an event queue only the producer's own poll
                    // serves, so flush first (commit_transaction's internal flush cannot).
                    flush(&producer, COMMIT_TIMEOUT)?;
                    producer.commit_transaction(COMMIT_TIMEOUT)
                })
                .context("committing the transaction")
        }
        Guarantee::AtLeastOnce => commit_delivered(&producer, consumer, &offsets, outages),
    };
    let handled = std::mem::take(&mut shared.pending);
    if let Err(error) = result {
        shared.doom(Cause::Commit);
        return Err(error);
    }
    shared.committed_offsets.extend(handled);
    if shared.flush_after_commit {
        shared.committed_to(Arc::new(producer.context().take_changelog_offsets()));
    }
    tracing::debug!(elapsed = ?started.elapsed(), partitions = offsets.count(), "Committed.");
    ::metrics::counter!(names::COMMITS).increment(1);
    ::metrics::histogram!(names::COMMIT_LATENCY).record(started.elapsed().as_secs_f64());
    Ok(guarantee == Guarantee::ExactlyOnce || offsets.count() > 0)
}

/// At-least-once: commits `offsets` once every record produced before them was delivered.
fn commit_delivered<C: ConsumerContext>(
    producer: &Producer,
    consumer: &BaseConsumer<C>,
    offsets: &TopicPartitionList,
    outages: &Outages,
) -> anyhow::Result<()> {
    outages
        .calling("flushing the producer", || flush(producer, COMMIT_TIMEOUT))
        .context("flushing the producer")?;
    let failed = producer.context().take_failed();
    anyhow::ensure!(failed == 0, "{failed} records were not delivered");
    if offsets.count() > 0 {
        outages
            .calling("committing offsets", || {
                consumer.commit(offsets, CommitMode::Sync)
            })
            .context("committing offsets")?;
    }
    Ok(())
}
