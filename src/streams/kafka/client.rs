//! The context every Kafka consumer of the runtime is created with ([`Client`]): librdkafka's
//! error events become outages ([`super::Outages`]), its log lines go to `tracing`, and a loop
//! that follows its assignment adds its rebalance callbacks ([`Rebalancing`]).

use std::sync::Arc;

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use super::health::{Dependency, Health, Outages};

/// What a consumer does when its assignment changes, beside the runtime's reporting. The
/// callbacks run inside the consumer's `poll`, on the polling thread.
pub trait Rebalancing: Send + Sync + Sized + 'static {
    /// Before partitions are revoked or assigned (commit what is done, before they go).
    fn before(&self, _consumer: &BaseConsumer<Client<Self>>, _rebalance: &Rebalance<'_>) {}

    /// After partitions were revoked or assigned.
    fn after(&self, _consumer: &BaseConsumer<Client<Self>>, _rebalance: &Rebalance<'_>) {}
}

/// A consumer that does not follow its assignment (readers, probes, the global tables').
impl Rebalancing for () {}

/// The context of a Kafka consumer of the runtime.
pub struct Client<R: Rebalancing = ()> {
    health: Arc<Health>,
    /// The consumer's rebalance callbacks.
    pub rebalancing: R,
}

impl<R: Rebalancing> Client<R> {
    /// A context reporting into `health`, with `rebalancing`'s callbacks.
    pub fn new(health: Arc<Health>, rebalancing: R) -> Self {
        Self {
            health,
            rebalancing,
        }
    }
}

impl<R: Rebalancing> rdkafka::ClientContext for Client<R> {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        client_log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        client_error(&self.health.outages, &error, reason);
    }
}

impl<R: Rebalancing> ConsumerContext for Client<R> {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        self.rebalancing.before(consumer, rebalance);
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Error(error) = rebalance {
            tracing::warn!(error = %error, "Rebalance error.");
        }
        self.rebalancing.after(consumer, rebalance);
    }
}

/// The context of a side client whose failures the runner's own clients report already (the
/// admin client that purges repartition topics, the gate's reader): librdkafka's log lines as
/// [`client_log`] has them, its error events at DEBUG, no outage of its own (an idle side client
/// reports nothing that would end one).
pub struct Quiet;

impl rdkafka::ClientContext for Quiet {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        client_log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!(error = %error, reason, "A side client's error.");
    }
}

impl ConsumerContext for Quiet {}

/// What every Kafka client of the runtime does with librdkafka's error events: reaching the end of
/// a partition is expected (restore reads to it); anything else means the cluster cannot be
/// reached as configured (down, unresolvable, refusing our credentials) and is an outage, logged
/// once until it ends.
pub(crate) fn client_error(outages: &Outages, error: &KafkaError, reason: &str) {
    if matches!(
        error,
        KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
    ) {
        tracing::debug!(reason, "Partition read to its end.");
    } else if matches!(error, KafkaError::Global(RDKafkaErrorCode::AllBrokersDown))
        && reason.starts_with("0/")
    {
        // "0/1 brokers are down": librdkafka counts its bootstrap connection, which it drops
        // once it knows the cluster (at start), and such events are delivered on the next poll,
        // which after an outage can be after the broker answered again. No broker is down.
        tracing::debug!(reason, "All-brokers-down event with no broker down.");
    } else {
        outages.down(Dependency::Broker, &format_args!("{error} ({reason})"));
    }
}

/// librdkafka's own log lines, at DEBUG: it logs every failed reconnect, and what they say
/// reaches the operator once through [`client_error`]. Only its emergencies stay loud.
pub(crate) fn client_log(level: RDKafkaLogLevel, facility: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical => {
            tracing::error!(target: "librdkafka", facility, message, "librdkafka.");
        }
        _ => tracing::debug!(target: "librdkafka", facility, message, "librdkafka."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_all_brokers_down_event_with_no_broker_down_is_no_outage() {
        let outages = Outages::default();
        let all_down = KafkaError::Global(RDKafkaErrorCode::AllBrokersDown);

        client_error(&outages, &all_down, "0/1 brokers are down");
        assert_eq!(outages.longest(), None);
        client_error(&outages, &all_down, "1/1 brokers are down");
        assert!(matches!(outages.longest(), Some((Dependency::Broker, _))));
    }
}
