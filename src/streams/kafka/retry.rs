//! Waiting out transient faults: capped exponential backoff, sleeps that end at shutdown, and
//! broker calls retried for as long as `streams.max_outage` allows ([`super::Kafka::broker`]).

use std::fmt::Display;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};

use super::health::{Dependency, Outages};

/// Runs `attempt` until it succeeds, treating each failure as the broker being away: waits with
/// capped exponential backoff, logs once per outage, and gives up when the outage has lasted
/// `limit` or shutdown was requested.
///
/// # Errors
/// The last failure, once the outage outlasted `limit` or shutdown interrupted the wait.
pub(crate) fn with_broker<T, E: Display>(
    outages: &Outages,
    limit: Duration,
    max_backoff: Duration,
    shutdown: &AtomicBool,
    what: &str,
    mut attempt: impl FnMut() -> Result<T, E>,
) -> anyhow::Result<T> {
    let mut delays = backoff(max_backoff);
    loop {
        match outages.calling(what, &mut attempt) {
            Ok(value) => {
                outages.up(Dependency::Broker);
                return Ok(value);
            }
            Err(error) => {
                let error = format!("{what}: {error:#}");
                let away = outages.down(Dependency::Broker, &error);
                anyhow::ensure!(
                    away < limit,
                    "{error}; the broker has been unavailable for {away:?}, longer than streams.max_outage ({limit:?})"
                );
                let delay = delays.next().unwrap_or(max_backoff);
                anyhow::ensure!(
                    sleep_unless(shutdown, delay),
                    "{error}; shutdown requested while waiting for the broker (work since the last commit will be redone)"
                );
            }
        }
    }
}

/// The runner's retry delays: 100 ms doubling up to `max`, with jitter, without end.
pub(crate) fn backoff(max: Duration) -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(max)
        .with_jitter()
        .without_max_times()
        .build()
}

/// Sleeps for `delay` in short steps; `false` when `shutdown` was set meanwhile.
pub(crate) fn sleep_unless(shutdown: &AtomicBool, delay: Duration) -> bool {
    let until = Instant::now() + delay;
    while Instant::now() < until {
        if shutdown.load(Ordering::SeqCst) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50).min(until - Instant::now()));
    }
    !shutdown.load(Ordering::SeqCst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_calls_are_retried_until_they_answer_and_given_up_after_the_limit() {
        let outages = Outages::default();
        let shutdown = AtomicBool::new(false);
        let mut failures = 2;
        let answered = with_broker(
            &outages,
            Duration::from_secs(60),
            Duration::from_millis(10),
            &shutdown,
            "probing",
            || {
                if failures > 0 {
                    failures -= 1;
                    Err("down")
                } else {
                    Ok(7)
                }
            },
        );
        assert_eq!(answered.expect("answered"), 7);
        assert_eq!(outages.longest(), None);

        let given_up = with_broker(
            &outages,
            Duration::from_millis(50),
            Duration::from_millis(10),
            &shutdown,
            "probing",
            || Err::<(), _>("down"),
        );
        let message = format!("{:#}", given_up.expect_err("gave up"));
        assert!(
            message.contains("longer than streams.max_outage"),
            "{message}"
        );
    }
}
