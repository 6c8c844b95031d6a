//! What the processing loop and the rebalance callbacks share: the workers, what they reported,
//! the offsets to commit, and where the interval's transaction stands ([`Transaction`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::mpsc::Receiver;

use super::worker::{ChangelogOffsets, Event, Worker};
use crate::streams::kafka::Producer;

/// Where the commit interval stands. Exactly-once opens a Kafka transaction for it; at-least-once
/// never does (its interval is never [`Transaction::Open`]), but can be doomed all the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Transaction {
    /// No transaction is open: the next work handed out begins one ([`Shared::begin`]).
    Idle,
    /// Open: the work handed out since it began is in it; a commit ends it
    /// ([`Shared::committed`]).
    Open,
    /// The interval cannot commit ([`Shared::doom`]): its transaction, if one is open, must be
    /// aborted and the inputs rewound to the last commit before work goes on
    /// ([`Shared::ended`]).
    Doomed(Cause),
}

/// Why an interval was given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cause {
    /// Beginning or committing it failed (the broker is away, or the producer was fenced).
    Commit,
    /// A worker gave up a record: a transient fault outlasted the transaction's budget, or
    /// producing failed.
    Stall,
}

impl Cause {
    /// The `cause` label of the rewinds metric.
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Commit => "commit",
            Self::Stall => "stall",
        }
    }
}

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
    /// The offsets committed last per input partition (what repartition topics are purged to).
    pub(super) committed_offsets: BTreeMap<(String, i32), i64>,
    /// The producer of the open transaction (replaced when it cannot abort one).
    pub(super) producer: Arc<Producer>,
    /// Where the interval's transaction stands.
    pub(super) transaction: Transaction,
    /// Partitions whose tasks must be created and restored before their records are handled.
    pub(super) to_restore: BTreeSet<i32>,
    /// A worker failed fatally.
    pub(super) fatal: Option<anyhow::Error>,
    /// A worker stopped handling records because shutdown interrupted a retry.
    pub(super) interrupted: bool,
    /// The assignment changed since the loop last looked (held records are void).
    pub(super) rebalanced: bool,
    /// Whether workers flush their disk stores after each commit ([`Shared::committed_to`]).
    pub(super) flush_after_commit: bool,
}

impl Shared {
    /// Idle → Open: a transaction began.
    pub(super) fn begin(&mut self) {
        debug_assert_eq!(self.transaction, Transaction::Idle);
        self.transaction = Transaction::Open;
    }

    /// Open → Idle: the transaction is committed (or being committed: a failure dooms it).
    pub(super) fn committed(&mut self) {
        self.transaction = Transaction::Idle;
    }

    /// Any → Doomed: the interval is given up. An interval already doomed keeps its first cause.
    pub(super) fn doom(&mut self, cause: Cause) {
        if !matches!(self.transaction, Transaction::Doomed(_)) {
            self.transaction = Transaction::Doomed(cause);
        }
    }

    /// Doomed or Open → Idle: the transaction was aborted (or its producer replaced, which
    /// aborts it) and the inputs rewound.
    pub(super) fn ended(&mut self) {
        self.transaction = Transaction::Idle;
    }

    /// Why the interval was given up, if it was.
    pub(super) fn doomed(&self) -> Option<Cause> {
        match self.transaction {
            Transaction::Doomed(cause) => Some(cause),
            Transaction::Idle | Transaction::Open => None,
        }
    }

    /// Tells every worker that the interval's commit went through, with where the changelog
    /// records landed: their tasks flush their disk stores (in order, before any later record).
    pub(super) fn committed_to(&mut self, offsets: Arc<ChangelogOffsets>) {
        for worker in self.workers.values() {
            if worker.committed(Arc::clone(&offsets)).is_ok() {
                self.in_flight += 1;
            }
        }
    }

    pub(super) fn record(&mut self, event: Event) {
        self.in_flight -= match &event {
            Event::Done { jobs, .. } => *jobs,
            _ => 1,
        };
        match event {
            Event::Done { positions, .. } => {
                for position in positions {
                    self.pending.insert(
                        (position.prefixed_topic.to_string(), position.partition),
                        position.next_offset,
                    );
                }
            }
            Event::Skipped => {}
            Event::Interrupted => self.interrupted = true,
            Event::Stalled => self.doom(Cause::Stall),
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
