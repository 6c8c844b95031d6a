//! What a process of the runtime reports about itself: [`Health`] (ready, and the dependencies
//! that are away now), which the admin endpoint answers `/readyz` from.
//!
//! Outages of what the runtime depends on (the broker, the schema registry) are transient faults
//! it waits out. One WARN once an outage has lasted a second and one INFO when it ends (not a
//! line per retry), a gauge per dependency, `/readyz` answering 503 meanwhile, and the budget
//! (`streams.max_outage`) after which the process gives up and exits non-zero.
//!
//! A loop learns of a broker outage from a failed call or from librdkafka's error events, which
//! only its own poll delivers; while it blocks in a call to the broker (a commit, an abort: up to
//! their timeouts, back to back) it learns nothing. [`Outages::calling`] marks such calls and
//! [`Outages::watch`], run beside the loop ([`watchdog`]), takes one left unanswered for 2 s for
//! an outage, so logs, metrics and `/readyz` tell it while it lasts.

use std::fmt::Display;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::streams::metrics as names;
use crate::sync::lock;

/// Readiness and liveness the admin endpoint reports (`/readyz`, and `/status` for `clinic
/// status`).
#[derive(Debug, Default)]
pub struct Health {
    /// Set once the first assignment's stores are restored; cleared while restoring again.
    pub ready: AtomicBool,
    /// Dependencies that are away now: not ready meanwhile.
    pub outages: Outages,
    /// What the loop reports for `/status`: its assignment, lag, dead letters, last error.
    pub status: Mutex<Status>,
}

/// What a loop of the runtime reports about its work, for operators (`GET /status`). Never
/// record content: topics, partitions, offsets and error classes only.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct Status {
    /// The input partitions assigned (prefixed topic, partition), with their lag in records
    /// when last measured (every 5 s).
    pub assigned: std::collections::BTreeMap<String, std::collections::BTreeMap<i32, Option<i64>>>,
    /// Records dead-lettered since the start.
    pub dead_letters: u64,
    /// The last error worth an operator's look, and when (seconds since the Unix epoch).
    pub last_error: Option<(u64, String)>,
}

/// The `/status` document the admin endpoint serves and `clinic status` reads.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct StatusDocument {
    /// Ready: stores restored and no dependency away.
    pub ready: bool,
    /// The dependency away the longest, if one is (at most one entry).
    pub outages: Vec<Away>,
    /// The loop's work.
    pub work: Status,
}

/// A dependency that is away.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Away {
    /// Its name ([`Dependency::name`]).
    pub dependency: String,
    /// For how long, in seconds.
    pub away_seconds: u64,
}

impl Health {
    /// Notes an error for `/status` (never with record content).
    pub fn note_error(&self, error: impl std::fmt::Display) {
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        lock(&self.status).last_error = Some((at, error.to_string()));
    }

    /// The `/status` document.
    pub fn status_document(&self) -> StatusDocument {
        let outages: Vec<Away> = self
            .outages
            .longest()
            .into_iter()
            .map(|(d, away)| Away {
                dependency: d.name().to_owned(),
                away_seconds: away.as_secs(),
            })
            .collect();
        StatusDocument {
            ready: self.ready.load(Ordering::SeqCst) && outages.is_empty(),
            outages,
            work: lock(&self.status).clone(),
        }
    }
}

/// Something the runtime needs that can go away for a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dependency {
    /// The Kafka cluster.
    Broker,
    /// The schema registry.
    Registry,
}

impl Dependency {
    const ALL: [Self; 2] = [Self::Broker, Self::Registry];

    /// The name used in logs, metrics and `/readyz`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Broker => "broker",
            Self::Registry => "registry",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Self::Broker => 1,
            Self::Registry => 2,
        }
    }

    fn index(self) -> usize {
        match self {
            Self::Broker => 0,
            Self::Registry => 1,
        }
    }
}

/// How long a dependency must have been away before the outage is logged: librdkafka reports
/// "all brokers down" for a moment while it swaps its bootstrap connection for the cluster's,
/// and a dependency that answers again at once is no news for an operator.
const GRACE: Duration = Duration::from_secs(1);

/// An outage that begins this soon after a logged one ended is taken for its tail (librdkafka
/// delivers errors it queued during the outage on the next poll, which can come after the broker
/// answered again): no second WARN, only the INFO when it ends.
const TAIL: Duration = Duration::from_secs(30);

/// How long a call to the broker may go unanswered before it counts as an outage: a healthy
/// broker answers a commit in milliseconds, and fencing a crashed instance's transaction (the
/// slowest call) in well under a second.
const UNANSWERED: Duration = Duration::from_secs(2);

/// The dependencies that are away now, and since when.
#[derive(Debug, Default)]
pub struct Outages {
    /// Bits of the dependencies that are away: lets `up`, called per record, skip the lock.
    away: AtomicU8,
    spans: Mutex<[Option<Span>; 2]>,
    /// When the last logged outage of each dependency ended.
    logged_end: Mutex<[Option<Instant>; 2]>,
    /// The call to the broker the loop is blocked in, and since when.
    call: Mutex<Option<(Instant, String)>>,
}

/// One outage.
#[derive(Debug)]
struct Span {
    began: Instant,
    /// The first error, for the one WARN.
    error: String,
    warned: bool,
    /// Began soon after a logged outage ended: taken for its tail, not logged again.
    tail: bool,
}

impl Span {
    /// Logs the WARN once the outage has lasted [`GRACE`].
    fn warn_when_due(&mut self, dependency: Dependency) {
        if !self.warned && self.began.elapsed() >= GRACE {
            self.warned = true;
            tracing::warn!(dependency = dependency.name(), error = %self.error, away = ?self.began.elapsed(), "Dependency unavailable; waiting for it (records are retried, none are dead-lettered).");
        }
    }
}

impl Outages {
    /// Records a failure of `dependency`. Returns how long the dependency has been away.
    pub fn down(&self, dependency: Dependency, error: &dyn Display) -> Duration {
        self.down_since(dependency, error, Instant::now())
    }

    /// [`Outages::down`] for a failure first seen at `began`.
    fn down_since(&self, dependency: Dependency, error: &dyn Display, began: Instant) -> Duration {
        let mut spans = self.lock();
        let span = spans[dependency.index()].get_or_insert_with(|| {
            self.away.fetch_or(dependency.bit(), Ordering::SeqCst);
            ::metrics::gauge!(names::DEPENDENCY_UP, "dependency" => dependency.name()).set(0.0);
            ::metrics::counter!(names::OUTAGES, "dependency" => dependency.name()).increment(1);
            tracing::debug!(dependency = dependency.name(), error = %error, "Dependency unavailable.");
            let tail = lock(&self.logged_end)[dependency.index()]
                .is_some_and(|ended| ended.elapsed() < TAIL);
            Span {
                began,
                error: error.to_string(),
                warned: tail,
                tail,
            }
        });
        span.warn_when_due(dependency);
        span.began.elapsed()
    }

    /// Runs `call`, which blocks until the broker answers or its own timeout passes, where
    /// [`Outages::watch`] can see it. What its result says about the broker is the caller's to
    /// report ([`Outages::up`], [`Outages::down`]).
    pub fn calling<T>(&self, what: &str, call: impl FnOnce() -> T) -> T {
        let outer = lock(&self.call).replace((Instant::now(), what.to_owned()));
        let result = call();
        *lock(&self.call) = outer;
        result
    }

    /// Run periodically beside the loop: a broker call unanswered for 2 s (`UNANSWERED`) is an
    /// outage from the moment it was made, and outages that have lasted long enough get their
    /// WARN.
    pub fn watch(&self) {
        self.watch_for(UNANSWERED);
    }

    fn watch_for(&self, unanswered: Duration) {
        let unanswered = lock(&self.call)
            .as_ref()
            .filter(|(since, _)| since.elapsed() >= unanswered)
            .map(|(since, what)| (*since, what.clone()));
        if let Some((since, what)) = unanswered {
            let error = format!("{what}: no answer from the broker");
            self.down_since(Dependency::Broker, &error, since);
        }
        self.remind();
    }

    /// Logs the WARN of outages that have lasted long enough; for callers that do not call
    /// [`Outages::down`] again while one lasts.
    fn remind(&self) {
        if self.away.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut spans = self.lock();
        for dependency in Dependency::ALL {
            if let Some(span) = &mut spans[dependency.index()] {
                span.warn_when_due(dependency);
            }
        }
    }

    /// Records that `dependency` answered; logs an INFO when this ends a logged outage (a WARN
    /// when it ends one that lasted but was not logged yet).
    pub fn up(&self, dependency: Dependency) {
        if self.away.load(Ordering::Relaxed) & dependency.bit() == 0 {
            return;
        }
        let mut spans = self.lock();
        if let Some(span) = spans[dependency.index()].take() {
            self.away.fetch_and(!dependency.bit(), Ordering::SeqCst);
            ::metrics::gauge!(names::DEPENDENCY_UP, "dependency" => dependency.name()).set(1.0);
            let after = span.began.elapsed();
            if span.warned || after >= GRACE {
                lock(&self.logged_end)[dependency.index()] = Some(Instant::now());
            }
            if span.tail && after < GRACE {
                tracing::debug!(dependency = dependency.name(), after = ?after, "Dependency available again.");
            } else if span.warned {
                tracing::info!(dependency = dependency.name(), after = ?after, "Dependency available again.");
            } else if after >= GRACE {
                // Nothing noted the outage while it lasted (one call blocked throughout it).
                tracing::warn!(dependency = dependency.name(), error = %span.error, after = ?after, "Dependency was unavailable; waited for it (records were retried, none dead-lettered).");
            } else {
                tracing::debug!(dependency = dependency.name(), after = ?after, "Dependency available again.");
            }
        }
    }

    /// The dependency away the longest, and for how long.
    pub fn longest(&self) -> Option<(Dependency, Duration)> {
        if self.away.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let spans = self.lock();
        Dependency::ALL
            .into_iter()
            .filter_map(|d| spans[d.index()].as_ref().map(|s| (d, s.began.elapsed())))
            .max_by_key(|(_, away)| *away)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, [Option<Span>; 2]> {
        lock(&self.spans)
    }
}

/// Runs [`Outages::watch`] every 250 ms beside a loop that blocks in broker calls, until aborted.
pub(crate) fn watchdog(health: Arc<Health>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(250));
        loop {
            every.tick().await;
            health.outages.watch();
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_lasts_from_the_first_failure_until_the_dependency_answers() {
        let outages = Outages::default();
        assert_eq!(outages.longest(), None);

        outages.down(Dependency::Registry, &"refused");
        std::thread::sleep(Duration::from_millis(20));
        let away = outages.down(Dependency::Registry, &"refused again");
        outages.up(Dependency::Broker);

        assert!(away >= Duration::from_millis(20));
        assert!(matches!(outages.longest(), Some((Dependency::Registry, _))));
        outages.up(Dependency::Registry);
        assert_eq!(outages.longest(), None);
    }

    #[test]
    fn a_broker_call_left_unanswered_is_an_outage_from_when_it_was_made() {
        let outages = Outages::default();
        outages.calling("committing", || {
            outages.watch_for(Duration::from_millis(20));
            assert_eq!(outages.longest(), None, "answered in time");
            std::thread::sleep(Duration::from_millis(30));
            outages.watch_for(Duration::from_millis(20));
        });
        let (dependency, away) = outages.longest().expect("an outage");
        assert_eq!(dependency, Dependency::Broker);
        assert!(away >= Duration::from_millis(30), "{away:?}");

        // The call is over: watching adds nothing, and only an answer ends the outage.
        outages.watch_for(Duration::ZERO);
        outages.up(Dependency::Broker);
        outages.watch_for(Duration::ZERO);
        assert_eq!(outages.longest(), None);
    }
}
