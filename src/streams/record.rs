//! The records the runtime reads and writes, as bytes: what a consumer hands over, and what is
//! produced to changelogs, the DLQ and other topics that need no serialization.

/// A record as read from Kafka, before decoding.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RawRecord {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Timestamp, epoch milliseconds.
    pub timestamp_ms: Option<i64>,
    /// Key bytes.
    pub key: Option<Vec<u8>>,
    /// Value bytes (`None` for a tombstone).
    pub value: Option<Vec<u8>>,
    /// Headers, in order.
    pub headers: Vec<(String, Vec<u8>)>,
}

/// A record ready to produce: bytes only (DLQ and changelog records need no serialization).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducedRecord {
    /// Destination topic.
    pub topic: String,
    /// Key bytes.
    pub key: Option<Vec<u8>>,
    /// Value bytes; `None` is a tombstone.
    pub value: Option<Vec<u8>>,
    /// Headers.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl ProducedRecord {
    /// The value of the last header named `name`, as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }
}

impl RawRecord {
    /// A consumed message, its topic without the deployment's `prefix`.
    pub fn of(message: &rdkafka::message::BorrowedMessage<'_>, prefix: &str) -> Self {
        use rdkafka::message::{Headers as _, Message as _};
        let topic = message.topic();
        Self {
            topic: topic.strip_prefix(prefix).unwrap_or(topic).to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            timestamp_ms: message.timestamp().to_millis(),
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().map(<[u8]>::to_vec),
            headers: message
                .headers()
                .map(|headers| {
                    headers
                        .iter()
                        .map(|h| {
                            (
                                h.key.to_owned(),
                                h.value.map(<[u8]>::to_vec).unwrap_or_default(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}
