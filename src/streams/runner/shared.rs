//! What the processing loop and the rebalance callbacks share, and the one way the runner locks.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex, MutexGuard};

use rdkafka::producer::BaseProducer;

use super::commit::DeliveryCounter;
use super::worker::{Event, Worker};

/// What the loop and the rebalance callbacks share. The loop never holds the lock across `poll`,
/// so the callbacks (which run inside `poll`, on the same thread) always get it at once.
pub(super) struct Shared {
    /// One worker per assigned partition number.
    pub(super) workers: BTreeMap<i32, Worker>,
    /// Jobs handed to workers and not yet reported back.
    pub(super) in_flight: usize,
    /// Workers' reports.
    pub(super) events: Receiver<Event>,
    /// Next offset to commit per input partition, for the records handled since the last commit.
    pub(super) pending: BTreeMap<(String, i32), i64>,
    /// The producer of the open transaction (replaced when it cannot abort one).
    pub(super) producer: Arc<BaseProducer<DeliveryCounter>>,
    pub(super) transaction_open: bool,
    /// The open transaction could not commit: it must be aborted before the next one.
    pub(super) transaction_failed: bool,
    /// A worker gave up a record on a transient fault: the transaction must be given up too.
    pub(super) stalled: bool,
    /// Partitions whose tasks must be created and restored before their records are handled.
    pub(super) to_restore: BTreeSet<i32>,
    /// A commit in a callback failed: the loop must rewind.
    pub(super) commit_failed: Option<String>,
    /// A worker failed fatally.
    pub(super) fatal: Option<anyhow::Error>,
    /// A worker stopped handling records because shutdown interrupted a retry.
    pub(super) interrupted: bool,
    /// The assignment changed since the loop last looked (held records are void).
    pub(super) rebalanced: bool,
}

impl Shared {
    pub(super) fn record(&mut self, event: Event) {
        self.in_flight -= 1;
        match event {
            Event::Done(Some(position)) => {
                self.pending.insert(
                    (position.prefixed_topic, position.partition),
                    position.next_offset,
                );
            }
            Event::Done(None) => {}
            Event::Interrupted => self.interrupted = true,
            Event::Stalled => self.stalled = true,
            Event::Skipped => {}
            Event::Fatal(error) => {
                if self.fatal.is_none() {
                    self.fatal = Some(error);
                }
            }
        }
    }

    /// Takes the reports that are already there.
    pub(super) fn collect(&mut self) {
        while let Ok(event) = self.events.try_recv() {
            self.record(event);
        }
    }

    /// Waits until every job handed out is reported back.
    pub(super) fn drain(&mut self) {
        while self.in_flight > 0 {
            match self.events.recv() {
                Ok(event) => self.record(event),
                Err(_) => break,
            }
        }
    }
}

/// Every lock of the runner. A panic while holding one already ends the runner (or, for the
/// plain counters and timestamps elsewhere, leaves nothing half-written), so poisoning is not
/// refused.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
