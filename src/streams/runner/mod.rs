//! The Kafka runner: drives a processor's [`Task`]s against a real broker.
//!
//! - One consumer in the group `<prefix>clinic-<processor>`, `read_committed`, range assignment
//!   so the same partition number of every input topic lands on the same instance
//!   (co-partitioning, which tables need; librdkafka offers no custom assignor, so the eager
//!   protocol it is).
//! - One [`Task`] per assigned partition number, each with its own stores, restored from the
//!   same partition of the stores' changelog topics before it sees a record ([`restore`]), and
//!   run by its own worker thread ([`worker`]): partitions are processed in parallel, each in
//!   order.
//! - **Exactly-once**: one transactional producer (`transactional.id` =
//!   `<prefix>clinic-<processor>-<instance_id>`); outputs, changelog and DLQ records and the input
//!   offsets of a commit interval go in one transaction (`send_offsets_to_transaction`). A failed
//!   commit dooms the interval ([`transaction`]): the runner aborts, drops the tasks, rewinds to
//!   the committed offsets and restores, so nothing is lost or applied twice.
//! - **At-least-once**: offsets are committed only after every record of the interval was
//!   delivered.
//! - Static membership (`group.instance.id` from the instance id): a restarted instance gets its
//!   partitions back at once; one that is gone for good is replaced after `session.timeout.ms`.
//! - Rebalance ([`rebalance`]): the open transaction (or delivered interval) is committed in the
//!   revoke callback, before the partitions go; tasks of partitions not assigned again are
//!   dropped.
//! - Poison records go to the DLQ; fatal errors stop the runner with an error.
//! - Transient faults are waited out: a registry that cannot be reached is retried with capped
//!   exponential backoff, never dead-lettering the record; a retry that would outlive the
//!   transaction's timeout gives up the transaction first (abort, rewind, restore, and try again
//!   in a new one), so the runner is never fenced by its own waiting. A broker that goes away
//!   fails the commit: the transaction is aborted (or, when the producer cannot abort it, the
//!   producer is replaced, which fences and aborts it), the runner rewinds to the committed
//!   offsets, and every step that needs the broker is retried until it is back. Only an outage
//!   longer than `streams.max_outage` stops the runner, with an error.
//! - Shutdown (the flag, set by SIGTERM/SIGINT in [`run`]): finish the record in hand, commit,
//!   close.
//!
//! The files, by job: this one supervises (restarts with new clients); [`instance`] is one
//! runner's state, for the life of its Kafka clients; [`start`] creates the
//! clients and checks the topics; [`poll`] is the loop that hands records to the workers;
//! [`transaction`] begins and gives up intervals, [`commit`] commits them; [`rebalance`] and [`restore`] follow
//! the assignment; [`gate`] holds records of inputs that wait for the others; [`global`] keeps
//! the global tables. The Kafka plumbing under all of them is [`crate::streams::kafka`].

mod commit;
mod gate;
mod global;
mod instance;
mod poll;
mod purge;
mod rebalance;
mod restore;
mod shared;
mod shop;
mod start;
mod transaction;
mod worker;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::Context as _;

use super::kafka::{Health, Kafka, StreamsSettings};
use super::processor::Processor;
use super::supervise::supervise;
use instance::{MAX_RESTARTS, Restart, Runner};

/// Runs `factory`'s processor until SIGTERM or SIGINT, serving the admin endpoint.
///
/// # Errors
/// Bad configuration, a broker or topic problem at start-up, or a fatal processing error.
pub async fn run<P, F>(settings: StreamsSettings, factory: F) -> anyhow::Result<()>
where
    P: Processor + 'static,
    F: Fn() -> P + Send + 'static,
{
    let runner = settings.clone();
    supervise(&settings, move |shutdown, health| {
        run_until(runner, factory, shutdown, health)
    })
    .await
}

/// Runs until `shutdown` is set, then commits and returns. The processing loop runs on a blocking
/// thread; `health` reports readiness. A Kafka client that fails fatally is replaced by a new
/// runner that resumes from the last commit, up to [`MAX_RESTARTS`] times within
/// `streams.max_outage`.
///
/// # Errors
/// As [`run`].
pub async fn run_until<P, F>(
    settings: StreamsSettings,
    factory: F,
    shutdown: Arc<AtomicBool>,
    health: Arc<Health>,
) -> anyhow::Result<()>
where
    P: Processor + 'static,
    F: Fn() -> P + Send + 'static,
{
    settings.validate()?;
    let max_outage = settings.max_outage;
    let kafka = Kafka::new(settings, Arc::clone(&health), shutdown);
    let runtime = tokio::runtime::Handle::current();
    let watchdog = super::kafka::health::watchdog(Arc::clone(&health));
    let result = tokio::task::spawn_blocking(move || {
        let factory = Arc::new(factory);
        let mut restarts: Vec<Instant> = Vec::new();
        loop {
            let runner = Runner::start(kafka.clone(), Arc::clone(&factory), runtime.clone())?;
            let error = match runner.run() {
                Err(error) if error.downcast_ref::<Restart>().is_some() => error,
                other => return other,
            };
            restarts.retain(|at| at.elapsed() < max_outage);
            anyhow::ensure!(
                restarts.len() < MAX_RESTARTS,
                "{error:#}, the {}th time within streams.max_outage ({max_outage:?}); giving up",
                MAX_RESTARTS + 1,
            );
            restarts.push(Instant::now());
            health.ready.store(false, Ordering::SeqCst);
            tracing::warn!(error = %format!("{error:#}"), "Restarting the runner with new Kafka clients; it resumes from the last commit.");
        }
    })
    .await;
    watchdog.abort();
    result.context("the processing thread panicked")?
}
