//! `clinic connectors watch`: restarts the connectors and tasks Kafka Connect reports `FAILED`,
//! with a capped backoff per task, so a sink that failed on a transient cause (the database or
//! the broker away) comes back without a person.
//!
//! Why it is needed: mongo-kafka-connect 2.0.1 retries nothing itself (the 1.x settings
//! `max.num.retries` and `retries.defer.timeout` are gone); a bulk write that fails with
//! anything but a `MongoBulkWriteException` ("non Data Error, fail the connector") is thrown
//! from `put`, and Kafka Connect only retries a `put` that throws a `RetriableException`, so the
//! task fails and stays `FAILED`. Connect's `errors.retry.timeout` covers converters and
//! transformations, not `put`; the driver's own retry is one retry of one write. Strimzi's
//! `KafkaConnector` `spec.autoRestart` is the same loop where Strimzi runs Connect (the chart
//! enables it); this is the loop everywhere else (docs/operators.md).
//!
//! Backoff: a task's first restart comes at once, each further one waits twice as long as the
//! one before (from `first_backoff` up to `max_backoff`); a task seen `RUNNING` for longer than
//! `max_backoff` starts again from the first. Each restart is logged (connector, task, the
//! trace's first line and deepest cause) and counted in `clinic_connect_restarts_total{connector}`; the tasks seen
//! failed are `clinic_connect_failed_tasks`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::ops::PlanError;
use crate::ops::connectors::{Connect, trace_summary};

/// Restarts made, by connector.
pub const RESTARTS: &str = "clinic_connect_restarts_total";
/// Tasks (and connectors) failed at the last check.
pub const FAILED: &str = "clinic_connect_failed_tasks";

/// How often to look and how long to wait between restarts of one task.
#[derive(Debug, Clone)]
pub struct WatchSettings {
    /// Between two checks.
    pub interval: Duration,
    /// The wait before a task's second restart.
    pub first_backoff: Duration,
    /// The longest wait between two restarts of a task.
    pub max_backoff: Duration,
    /// Only connectors whose name starts with this (a deployment's topic prefix).
    pub prefix: String,
}

impl Default for WatchSettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(10),
            first_backoff: Duration::from_secs(10),
            max_backoff: Duration::from_secs(300),
            prefix: String::new(),
        }
    }
}

/// One restart made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restart {
    /// The connector.
    pub connector: String,
    /// The task; `None`: the connector itself.
    pub task: Option<i32>,
    /// This task's restarts in a row.
    pub attempt: u32,
    /// The failure's trace in a line ([`trace_summary`]).
    pub cause: String,
}

/// What is known of one task (or a connector, as task `None`) between checks.
#[derive(Debug, Clone, Copy)]
struct Attempts {
    /// Restarts in a row.
    made: u32,
    /// The last one.
    last: Instant,
    /// Since when it has been seen running, if it is.
    running_since: Option<Instant>,
}

/// The watcher: Connect, the settings and each task's attempts.
pub struct Watch {
    connect: Connect,
    settings: WatchSettings,
    attempts: BTreeMap<(String, Option<i32>), Attempts>,
}

impl Watch {
    /// A watcher of the Connect cluster at `url`.
    pub fn new(url: &str, settings: WatchSettings) -> Self {
        Self {
            connect: Connect::new(url),
            settings,
            attempts: BTreeMap::new(),
        }
    }

    /// One check: restarts each failed connector or task whose backoff has passed.
    ///
    /// # Errors
    /// Connect unreachable (nothing restarted; the next check tries again).
    pub async fn check(&mut self) -> Result<Vec<Restart>, PlanError> {
        let now = Instant::now();
        let mut restarts = Vec::new();
        let mut failed: BTreeMap<String, u32> = BTreeMap::new();
        for (status, _) in self.connect.overview().await? {
            if !status.name.starts_with(&self.settings.prefix) {
                continue;
            }
            let units = std::iter::once((None, status.connector.state, status.connector.trace))
                .chain(
                    status
                        .tasks
                        .into_iter()
                        .map(|t| (Some(t.id), t.state, t.trace)),
                );
            for (task, state, trace) in units {
                let key = (status.name.clone(), task);
                if state != "FAILED" {
                    self.note_running(key, &state, now);
                    continue;
                }
                *failed.entry(status.name.clone()).or_default() += 1;
                let Some(attempt) = self.due(&key, now) else {
                    continue;
                };
                let restarted = match task {
                    Some(id) => self.connect.restart_task(&status.name, id).await,
                    None => self.connect.restart(&status.name).await,
                };
                let cause = trace
                    .as_deref()
                    .map_or_else(|| "no trace".to_owned(), trace_summary);
                if let Err(error) = restarted {
                    tracing::warn!(connector = %status.name, task = ?task, %error, "Restart refused; trying again at the next check.");
                    continue;
                }
                tracing::warn!(connector = %status.name, task = ?task, attempt, %cause, "Restarted a failed connector task.");
                ::metrics::counter!(RESTARTS, "connector" => status.name.clone()).increment(1);
                self.attempts.insert(
                    key,
                    Attempts {
                        made: attempt,
                        last: now,
                        running_since: None,
                    },
                );
                restarts.push(Restart {
                    connector: status.name.clone(),
                    task,
                    attempt,
                    cause,
                });
            }
        }
        ::metrics::gauge!(FAILED).set(f64::from(failed.values().sum::<u32>()));
        Ok(restarts)
    }

    /// The attempt number if a restart of `key` is due now.
    fn due(&self, key: &(String, Option<i32>), now: Instant) -> Option<u32> {
        let Some(attempts) = self.attempts.get(key) else {
            return Some(1);
        };
        let wait = self.backoff(attempts.made);
        (now.duration_since(attempts.last) >= wait).then_some(attempts.made + 1)
    }

    /// The wait after `made` restarts in a row: none before the first, then doubling.
    fn backoff(&self, made: u32) -> Duration {
        if made == 0 {
            return Duration::ZERO;
        }
        let doubled = self
            .settings
            .first_backoff
            .saturating_mul(1 << (made - 1).min(16));
        doubled.min(self.settings.max_backoff)
    }

    /// A task not failed: once it has run for longer than the longest backoff, its count
    /// starts again.
    fn note_running(&mut self, key: (String, Option<i32>), state: &str, now: Instant) {
        let Some(attempts) = self.attempts.get_mut(&key) else {
            return;
        };
        if state != "RUNNING" {
            attempts.running_since = None;
            return;
        }
        let since = *attempts.running_since.get_or_insert(now);
        if now.duration_since(since) > self.settings.max_backoff {
            self.attempts.remove(&key);
        }
    }

    /// Checks every `interval` until `shutdown` completes; returns the restarts made.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) -> u64 {
        tokio::pin!(shutdown);
        let mut ticks = tokio::time::interval(self.settings.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut made = 0;
        loop {
            tokio::select! {
                () = &mut shutdown => return made,
                _ = ticks.tick() => match self.check().await {
                    Ok(restarts) => made += restarts.len() as u64,
                    Err(error) => tracing::warn!(%error, "Kafka Connect did not answer; looking again at the next check."),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch() -> Watch {
        Watch::new(
            "http://127.0.0.1:1",
            WatchSettings {
                first_backoff: Duration::from_secs(10),
                max_backoff: Duration::from_secs(60),
                ..WatchSettings::default()
            },
        )
    }

    #[test]
    fn restarts_come_at_once_then_doubling_up_to_the_cap() {
        let watch = watch();
        let waits: Vec<u64> = (0..7).map(|n| watch.backoff(n).as_secs()).collect();
        assert_eq!(waits, [0, 10, 20, 40, 60, 60, 60]);
    }

    #[test]
    fn a_task_running_longer_than_the_cap_starts_counting_again() {
        let mut watch = watch();
        let key = ("sink".to_owned(), Some(0));
        let start = Instant::now();
        watch.attempts.insert(
            key.clone(),
            Attempts {
                made: 3,
                last: start,
                running_since: None,
            },
        );
        assert_eq!(watch.due(&key, start + Duration::from_secs(39)), None);
        assert_eq!(watch.due(&key, start + Duration::from_secs(40)), Some(4));
        watch.note_running(key.clone(), "RUNNING", start);
        watch.note_running(key.clone(), "RUNNING", start + Duration::from_secs(30));
        assert!(watch.attempts.contains_key(&key), "not long enough yet");
        watch.note_running(key.clone(), "RUNNING", start + Duration::from_secs(61));
        assert_eq!(watch.due(&key, start + Duration::from_secs(61)), Some(1));
    }
}
