//! Why a CDC record could not be decoded. Every variant is *poison*: the record itself is bad,
//! and retrying cannot help (registry outages are reported by the registry client, not here).

use super::extjson::ExtJsonError;

/// A CDC record that is not a change event in the configured format.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The bytes are not JSON (or a JSON string holding JSON).
    #[error("not JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A field holds invalid Extended JSON.
    #[error("field {field}: {source}")]
    ExtJson {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        source: ExtJsonError,
    },
    /// A required field is absent or null.
    #[error("missing field {0}")]
    Missing(&'static str),
    /// A field has the wrong JSON/Avro type.
    #[error("field {field} should be {expected}")]
    Type {
        /// The field.
        field: &'static str,
        /// What it should be.
        expected: &'static str,
    },
    /// A Debezium `op` that is none of `c`, `u`, `d`, `r`.
    #[error("unknown Debezium op {0:?}")]
    UnknownOp(String),
    /// A tombstone (null value) without a key to say what was deleted.
    #[error("a tombstone without a key")]
    TombstoneWithoutKey,
}
