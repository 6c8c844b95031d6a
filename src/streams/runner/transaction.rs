//! The commit interval's transaction in the loop: beginning it when work is handed out,
//! committing it ([`super::commit`]), and giving it up (abort, rewind to the last commit,
//! restore) when it is doomed. The states and their transitions are [`Transaction`]'s.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use rdkafka::Offset;
use rdkafka::consumer::Consumer;
use rdkafka::producer::{Producer as _, PurgeConfig};

use super::commit::commit;
use super::instance::Runner;
use super::shared::{Cause, Shared, Transaction};
use crate::streams::kafka::health::Dependency;
use crate::streams::kafka::produce::{ABORT_TIMEOUT, COMMIT_TIMEOUT};
use crate::streams::kafka::{Guarantee, flush};
use crate::streams::metrics as names;
use crate::streams::processor::Processor;
use crate::sync::lock;

impl<P: Processor + 'static, F: Fn() -> P> Runner<P, F> {
    /// Begins the interval's transaction if none is open (exactly-once).
    ///
    /// # Errors
    /// The producer could not begin one; the interval is then doomed.
    pub(super) fn begin_if_idle(&mut self, shared: &mut Shared) -> anyhow::Result<()> {
        if self.kafka.settings().guarantee != Guarantee::ExactlyOnce
            || shared.transaction != Transaction::Idle
        {
            return Ok(());
        }
        if let Err(error) = self.shop.producer.begin_transaction() {
            shared.doom(Cause::Commit);
            return Err(error).context("beginning a transaction");
        }
        shared.begin();
        self.transaction_started = Instant::now();
        self.shop.transaction_began(self.transaction_started);
        Ok(())
    }

    /// Commits the interval now; gives it up when the commit fails (see [`Runner::recover`]).
    pub(super) fn commit_now(&mut self) -> anyhow::Result<()> {
        let result = commit(
            &mut lock(&self.shared),
            &self.consumer,
            self.kafka.settings().guarantee,
            self.kafka.outages(),
        );
        self.shop.transaction_ended();
        self.transaction_started = Instant::now();
        match result {
            Ok(reached_broker) => {
                if reached_broker {
                    self.kafka.outages().up(Dependency::Broker);
                }
                if let Some(purge) = &mut self.purge {
                    purge.after_commit(&lock(&self.shared).committed_offsets);
                }
                Ok(())
            }
            Err(error) => {
                self.take_fatal()?;
                if self.kafka.stopping() {
                    // No rewind on the way out: the next start resumes from the last commit.
                    tracing::warn!(error = %format!("{error:#}"), "The last commit failed on shutdown.");
                    return Ok(());
                }
                let cause = lock(&self.shared).doomed().unwrap_or(Cause::Commit);
                self.recover(cause, &format_args!("{error:#}"))
            }
        }
    }

    /// Gives up a doomed interval: aborts its transaction, rewinds to the last commit and
    /// restores the stores, waiting for the broker as long as `streams.max_outage` allows.
    pub(super) fn recover(
        &mut self,
        cause: Cause,
        error: &dyn std::fmt::Display,
    ) -> anyhow::Result<()> {
        ::metrics::counter!(names::ERRORS, "class" => "transient").increment(1);
        ::metrics::counter!(names::REWINDS, "cause" => cause.name()).increment(1);
        if cause == Cause::Commit {
            // Commits fail when the broker is away; a registry outage was noted where it hit.
            self.kafka.outages().down(Dependency::Broker, error);
        }
        self.kafka.health().note_error(format_args!(
            "gave up an interval ({}): {error}",
            cause.name()
        ));
        // Part of waiting out an outage, which the health bookkeeping logs once.
        tracing::debug!(cause = cause.name(), error = %error, "Giving up the current transaction; rewinding to the last commit.");
        self.rewind()
    }

    /// Stops the workers (forgetting their state), ends the transaction, seeks back to the
    /// committed offsets and restores the stores from their changelogs.
    pub(super) fn rewind(&mut self) -> anyhow::Result<()> {
        self.gate.clear(&self.consumer);
        {
            let mut shared = lock(&self.shared);
            shared.drain();
            let partitions: Vec<i32> = shared.workers.keys().copied().collect();
            shared.workers.clear();
            shared.pending.clear();
            shared.to_restore.extend(partitions);
        }
        self.end_transaction()?;
        let assignment = self
            .consumer
            .assignment()
            .context("reading the assignment")?;
        let committed = self.kafka.broker("reading committed offsets", || {
            self.consumer
                .committed_offsets(assignment.clone(), COMMIT_TIMEOUT)
        })?;
        for element in committed.elements() {
            let offset = match element.offset() {
                Offset::Offset(o) => Offset::Offset(o),
                _ => Offset::Beginning,
            };
            // Local to the client (no broker round trip), so not retried: a seek that fails
            // would leave the position past the last commit, which must never be processed on.
            self.consumer
                .seek(element.topic(), element.partition(), offset, COMMIT_TIMEOUT)
                .with_context(|| format!("seeking {}[{}]", element.topic(), element.partition()))?;
        }
        self.after_callbacks()
    }

    /// Ends an open or doomed transaction with no worker left to write to it: aborts it, or,
    /// when the producer cannot (its state is fatal, or the broker is away), replaces the
    /// producer, whose initialisation fences the old one and aborts its transaction on the
    /// broker. At-least-once has no transaction: the interval is only forgotten.
    fn end_transaction(&mut self) -> anyhow::Result<()> {
        self.shop.transaction_ended();
        let idle = lock(&self.shared).transaction == Transaction::Idle;
        if idle || self.kafka.settings().guarantee == Guarantee::AtLeastOnce {
            lock(&self.shared).ended();
            return Ok(());
        }
        // We abort anyway, so what is still queued or in flight goes first. abort_transaction's
        // own flush cannot serve the delivery reports (only this runner's poll does): without
        // this it timed out with records outstanding and the producer had to be replaced.
        let producer = &self.shop.producer;
        producer.purge(PurgeConfig::default().queue().inflight());
        let outages = self.kafka.outages();
        if let Err(error) =
            outages.calling("flushing purged records", || flush(producer, ABORT_TIMEOUT))
        {
            tracing::debug!(error = %error, "Purged records still outstanding.");
        }
        producer.context().take_failed();
        let aborted = outages.calling("aborting the transaction", || {
            producer.abort_transaction(ABORT_TIMEOUT)
        });
        if let Err(error) = aborted {
            tracing::debug!(error = %error, "Aborting failed; replacing the producer.");
            let producer = self.kafka.create_producer(&self.producer_config)?;
            if self.state.is_some() {
                producer.context().track_changelogs();
            }
            self.shop = Arc::new(self.shop.with_producer(Arc::clone(&producer)));
            lock(&self.shared).producer = producer;
        }
        lock(&self.shared).ended();
        Ok(())
    }
}
