//! Dead-letter records: the original record, untouched, plus headers saying what went wrong and
//! where it came from, so an operator can inspect and replay it.

/// Header names added to a dead-lettered record.
pub mod headers {
    /// Source topic.
    pub const TOPIC: &str = "clinic.error.topic";
    /// Source partition (decimal text).
    pub const PARTITION: &str = "clinic.error.partition";
    /// Source offset (decimal text).
    pub const OFFSET: &str = "clinic.error.offset";
    /// Error class: always `poison` (transient errors are retried, fatal ones stop the processor).
    pub const CLASS: &str = "clinic.error.class";
    /// Human-readable error message.
    pub const MESSAGE: &str = "clinic.error.message";
    /// The processor that gave up on the record.
    pub const PROCESSOR: &str = "clinic.error.processor";
}

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

/// The dead-letter record for `record`, which `processor` could not process because of `message`.
pub fn dead_letter(
    dlq_topic: &str,
    processor: &str,
    record: &RawRecord,
    message: &str,
) -> ProducedRecord {
    let mut headers = record.headers.clone();
    headers.extend([
        (headers::TOPIC.to_owned(), record.topic.clone().into_bytes()),
        (
            headers::PARTITION.to_owned(),
            record.partition.to_string().into_bytes(),
        ),
        (
            headers::OFFSET.to_owned(),
            record.offset.to_string().into_bytes(),
        ),
        (headers::CLASS.to_owned(), b"poison".to_vec()),
        (headers::MESSAGE.to_owned(), message.as_bytes().to_vec()),
        (headers::PROCESSOR.to_owned(), processor.as_bytes().to_vec()),
    ]);
    ProducedRecord {
        topic: dlq_topic.to_owned(),
        key: record.key.clone(),
        value: record.value.clone(),
        headers,
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
