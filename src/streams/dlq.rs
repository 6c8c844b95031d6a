//! Dead-letter records: the original record, untouched, plus headers saying what went wrong and
//! where it came from, so an operator can inspect and replay it.

use super::record::{ProducedRecord, RawRecord};

/// Header names added to a dead-lettered record.
pub mod headers {
    /// What every name below starts with.
    pub const PREFIX: &str = "clinic.error.";
    /// Source topic, as the topology names it (without the deployment's topic prefix).
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
