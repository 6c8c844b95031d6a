//! CDC codecs: every change-event form of DESIGN.md 2.2 into one typed [`ChangeEvent`], and the
//! encoders that write those forms exactly as their producers do (FerretDB has no change streams,
//! so tests and the demo play the connector's part with them).
//!
//! | form | producer | decode with |
//! |---|---|---|
//! | Avro, default change-stream schema (sub-documents as JSON strings) | MongoDB source connector, `output.format.value=schema` | registry → [`mongo::RawChange::read_avro`] → [`mongo::RawChange::decode`] (or [`avro_json::read`] → [`mongo::decode`]) |
//! | JSON text | MongoDB source connector, `json` + StringConverter | [`parse_json_text`] → [`mongo::decode`] |
//! | JSON string literal holding the JSON text | `json` + JsonConverter (existing Tidepool deployments) | same: [`parse_json_text`] unwraps it |
//! | Debezium envelope, Avro or JSON, tombstones | Debezium MongoDB connector | [`debezium::decode`] |
//!
//! Extended JSON in the canonical, relaxed and legacy dialects is accepted anywhere
//! ([`extjson`]); ObjectIds, dates and 64-bit integers stay typed. [`Format`] and
//! [`decode_json`] tie it together for a topic configured with one form.

pub mod avro_json;
pub mod debezium;
mod error;
mod event;
pub mod extjson;
mod fields;
mod fold;
pub mod mongo;
mod update;

pub use error::DecodeError;
pub use event::{CdcRecord, ChangeEvent, Namespace, Operation, SourcePosition, TruncatedArray};
pub use fields::parse_json_text;
pub use fold::{Next, next_document};
pub use update::apply_update;

use serde::{Deserialize, Serialize};

/// The envelope a topic carries, set per topic in a processor's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Envelope {
    /// The MongoDB source connector's change event.
    MongoChangeStream,
    /// Debezium's MongoDB envelope.
    Debezium,
}

/// How a topic's values are serialized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// Confluent-framed Avro resolved through the schema registry.
    Avro,
    /// JSON text, plain or double-encoded.
    Json,
}

/// A topic's CDC format: envelope and encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub struct Format {
    /// Which producer's envelope.
    pub envelope: Envelope,
    /// How it is serialized.
    pub encoding: Encoding,
}

/// Decodes a record whose key and value are JSON (plain or double-encoded).
///
/// For the MongoDB envelope the key is not needed (the value carries `documentKey`) and a missing
/// value is an error; for Debezium a missing value is a tombstone.
pub fn decode_json(
    envelope: Envelope,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) -> Result<CdcRecord, DecodeError> {
    decode_json_fields(envelope, key, value, None)
}

/// As [`decode_json`], keeping only the top-level `fields` of the MongoDB envelope's
/// `fullDocument` (all when `None`; Debezium's documents are kept whole).
///
/// # Errors
/// As [`decode_json`].
pub fn decode_json_fields(
    envelope: Envelope,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    fields: Option<&[&str]>,
) -> Result<CdcRecord, DecodeError> {
    let key = match envelope {
        // The MongoDB envelope's value carries `documentKey`: its key is not read.
        Envelope::MongoChangeStream => None,
        Envelope::Debezium => key.map(parse_json_text).transpose()?,
    };
    let value = value.map(parse_json_text).transpose()?;
    decode_values_fields(envelope, key, value, fields)
}

/// Decodes a record whose key and value were Avro, already resolved through the registry.
pub fn decode_avro(
    envelope: Envelope,
    key: Option<&apache_avro::types::Value>,
    value: Option<&apache_avro::types::Value>,
) -> Result<CdcRecord, DecodeError> {
    decode_values_fields(
        envelope,
        key.cloned().map(avro_json::into_json),
        value.cloned().map(avro_json::into_json),
        None,
    )
}

/// A CDC record's value read from Avro: as JSON ([`avro_json`]), or, for the MongoDB envelope
/// of a writer schema seen before, its fields read straight from the body
/// ([`mongo::RawChange::read_avro`]).
#[derive(Debug, Clone, PartialEq)]
pub enum AvroValue {
    /// The value as JSON.
    Json(serde_json::Value),
    /// A MongoDB change event's fields.
    Change(Box<mongo::RawChange>),
}

/// As [`decode_values_fields`], of a value read from Avro.
///
/// # Errors
/// As [`decode_values_fields`].
pub fn decode_avro_value_fields(
    envelope: Envelope,
    key: Option<serde_json::Value>,
    value: Option<AvroValue>,
    fields: Option<&[&str]>,
) -> Result<CdcRecord, DecodeError> {
    let value = match value {
        // Read as the MongoDB envelope's by construction.
        Some(AvroValue::Change(raw)) => return Ok(CdcRecord::Change(raw.decode(fields)?)),
        Some(AvroValue::Json(value)) => Some(value),
        None => None,
    };
    decode_values_fields(envelope, key, value, fields)
}

/// Decodes a record from its key and value as JSON (parsed JSON text, or Avro read as JSON by
/// [`avro_json`]), keeping only the top-level `fields` of the MongoDB envelope's `fullDocument`
/// (all when `None`; Debezium's documents are kept whole).
///
/// # Errors
/// As [`decode_json`].
pub fn decode_values_fields(
    envelope: Envelope,
    key: Option<serde_json::Value>,
    value: Option<serde_json::Value>,
    fields: Option<&[&str]>,
) -> Result<CdcRecord, DecodeError> {
    match envelope {
        Envelope::MongoChangeStream => {
            let value = value.ok_or(DecodeError::Missing("value"))?;
            Ok(CdcRecord::Change(mongo::decode_fields(value, fields)?))
        }
        Envelope::Debezium => debezium::decode(key, value),
    }
}

#[cfg(test)]
mod golden;
#[cfg(test)]
mod roundtrip;
