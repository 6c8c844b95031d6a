//! Confluent-framed Avro through the schema registry, with the registry client's schema cache,
//! and every failure classified the way the runtime acts on it: a record that can never decode
//! is *poison* (DLQ), a registry that cannot be reached is *transient* (retry, no commit), a
//! schema the registry refuses to register is *fatal* (configuration).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::schema::ResolvedSchema;
use apache_avro::types::Value as Avro;
use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{
    SchemaType, SubjectNameStrategy, SuppliedSchema,
};

use super::processor::OutValue;
use crate::cdc::mongo::RawChange;
use crate::cdc::{AvroValue, avro_json};

/// A codec failure, by what the runtime does about it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    /// The record cannot be decoded, now or ever.
    #[error("poison: {0}")]
    Poison(String),
    /// The registry is unavailable; retry later.
    #[error("transient: {0}")]
    Transient(String),
    /// The registry refused a schema we produce with: a deployment problem.
    #[error("fatal: {0}")]
    Fatal(String),
}

/// Avro decoding and encoding through one registry (its Confluent-compatible API).
pub struct AvroCodec {
    decoder: AvroDecoder,
    encoder: AvroEncoder,
    /// Writer schemas ready to read records with, by registry id, built once per schema: a record
    /// of a schema seen before is read here, synchronously, without the registry client (which
    /// would be entered through the async runtime and resolve the schema's names again on every
    /// call: a tenth of a processor's CPU per record in the processors bench).
    readers: RwLock<HashMap<u32, Arc<WriterSchema>>>,
}

/// A writer schema, its named types resolved once, and a datum reader over it.
struct WriterSchema {
    id: u32,
    /// Borrowed by `reader` and `resolved` for the life of the process: one per schema id the
    /// topics ever carry, as the registry client's own resolved-schema cache keeps them.
    schema: &'static Schema,
    resolved: ResolvedSchema<'static>,
    reader: GenericDatumReader<'static>,
}

impl WriterSchema {
    fn new(id: u32, schema: &Schema) -> Result<Self, CodecError> {
        let unresolved = |e: apache_avro::Error| {
            CodecError::Poison(format!("writer schema id {id} does not resolve: {e}"))
        };
        // Checked before the schema is kept for good: one that does not resolve is not kept (its
        // records are poison, each asking the registry client again).
        ResolvedSchema::try_from(schema).map_err(unresolved)?;
        let schema: &'static Schema = Box::leak(Box::new(schema.clone()));
        let resolved = ResolvedSchema::try_from(schema).map_err(unresolved)?;
        let reader = GenericDatumReader::builder(schema)
            .resolved_writer_schemata(resolved.clone())
            .build()
            .map_err(unresolved)?;
        Ok(Self {
            id,
            schema,
            resolved,
            reader,
        })
    }

    /// Reads a record's Avro body (after the framing).
    fn read(&self, mut body: &[u8]) -> Result<Avro, CodecError> {
        let value = self.reader.read_value(&mut body).map_err(|e| {
            CodecError::Poison(format!(
                "bytes do not match writer schema id {}: {e}",
                self.id
            ))
        })?;
        self.validated(value)
    }

    /// Reads a record's Avro body as JSON ([`avro_json::read`], straight from the bytes); a body
    /// that reader refuses goes through the generic value, for its answer or its poison.
    fn read_json(&self, body: &[u8]) -> Result<serde_json::Value, CodecError> {
        avro_json::read(&self.reader, body).or_else(|_| self.read(body).map(avro_json::into_json))
    }

    /// Reads a CDC record's Avro body: a MongoDB change event's fields straight
    /// ([`RawChange::read_avro`]), or, where that reader refuses the body, as JSON
    /// ([`WriterSchema::read_json`]) for the answer or its poison.
    fn read_change(&self, body: &[u8]) -> Result<AvroValue, CodecError> {
        match RawChange::read_avro(&self.reader, body) {
            Ok(raw) => Ok(AvroValue::Change(Box::new(raw))),
            Err(_) => self.read_json(body).map(AvroValue::Json),
        }
    }

    /// apache-avro 0.22's datum reader returns nulls instead of failing when the bytes end
    /// mid-record, so a truncated value would pass as a record of nulls: it is validated against
    /// the writer schema before it is trusted.
    fn validated(&self, value: Avro) -> Result<Avro, CodecError> {
        if value.validate_with_names(self.schema, self.resolved.get_names()) {
            Ok(value)
        } else {
            Err(CodecError::Poison(format!(
                "bytes do not match writer schema id {} (truncated or corrupt)",
                self.id
            )))
        }
    }
}

impl AvroCodec {
    /// A codec for the registry at `url` (e.g. `http://127.0.0.1:8081/apis/ccompat/v7`), with
    /// basic auth when `CLINIC_REGISTRY_USERNAME` is set ([`crate::endpoints::registry_credentials`]).
    ///
    /// # Panics
    /// When the registry client cannot be built (a TLS backend that does not start).
    pub fn new(url: &str) -> Self {
        let settings = || {
            let mut builder = SrSettings::new_builder(url.to_owned());
            if let Some((user, password)) = crate::endpoints::registry_credentials() {
                builder.set_basic_authorization(&user, Some(&password));
            }
            builder
                .build()
                .expect("BUG: the registry client builds from a URL")
        };
        Self {
            decoder: AvroDecoder::new(settings()),
            encoder: AvroEncoder::new(settings()),
            readers: RwLock::default(),
        }
    }

    /// Decodes a Confluent-framed value as [`AvroCodec::decode`] does, when its schema was seen
    /// before; `None` when the registry must be asked first (then call [`AvroCodec::decode`]).
    pub fn decode_known(&self, bytes: Option<&[u8]>) -> Option<Result<Option<Avro>, CodecError>> {
        let Some(bytes) = bytes else {
            return Some(Ok(None));
        };
        let (id, body) = framed(bytes).ok()?;
        Some(self.known(id)?.read(body).map(Some))
    }

    /// As [`AvroCodec::decode_known`], the value as JSON ([`crate::cdc::avro_json`]): what a CDC
    /// topic's envelope readers take.
    pub fn decode_known_json(
        &self,
        bytes: Option<&[u8]>,
    ) -> Option<Result<Option<serde_json::Value>, CodecError>> {
        let Some(bytes) = bytes else {
            return Some(Ok(None));
        };
        let (id, body) = framed(bytes).ok()?;
        Some(self.known(id)?.read_json(body).map(Some))
    }

    /// The reader of writer schema `id`, once a record of it went through the registry client.
    fn known(&self, id: u32) -> Option<Arc<WriterSchema>> {
        crate::sync::read(&self.readers).get(&id).cloned()
    }

    /// Decodes a Confluent-framed value; `None` (a tombstone) stays `None`.
    ///
    /// # Errors
    /// Poison for a missing or wrong magic byte, an id the registry does not know, or bytes that
    /// do not match the schema; transient when the registry cannot be reached or answers 5xx.
    pub async fn decode(&self, bytes: Option<&[u8]>) -> Result<Option<Avro>, CodecError> {
        let Some(bytes) = bytes else { return Ok(None) };
        // Checked here so framing problems never reach the registry client's error cache.
        let (id, body) = framed(bytes)?;
        if let Some(reader) = self.known(id) {
            return reader.read(body).map(Some);
        }
        match self.decoder.decode_with_schema(Some(bytes)).await {
            Ok(Some(decoded)) => {
                let reader = Arc::new(WriterSchema::new(id, &decoded.schema.parsed)?);
                crate::sync::write(&self.readers).insert(id, Arc::clone(&reader));
                reader.validated(decoded.value).map(Some)
            }
            Ok(None) => Ok(None),
            Err(error) if is_transient(&error) => {
                // The client caches failures per schema id; a transient one must not stick.
                self.decoder.remove_errors_from_cache();
                Err(CodecError::Transient(error.to_string()))
            }
            Err(error) => Err(CodecError::Poison(error.to_string())),
        }
    }

    /// As [`AvroCodec::decode_known_json`], for a topic of MongoDB change events: their fields
    /// read straight from the body ([`RawChange::read_avro`]) where it can.
    pub fn decode_known_change(
        &self,
        bytes: Option<&[u8]>,
    ) -> Option<Result<Option<AvroValue>, CodecError>> {
        let Some(bytes) = bytes else {
            return Some(Ok(None));
        };
        let (id, body) = framed(bytes).ok()?;
        Some(self.known(id)?.read_change(body).map(Some))
    }

    /// As [`AvroCodec::decode`], the value as JSON ([`crate::cdc::avro_json`]).
    ///
    /// # Errors
    /// As [`AvroCodec::decode`].
    pub async fn decode_json(
        &self,
        bytes: Option<&[u8]>,
    ) -> Result<Option<serde_json::Value>, CodecError> {
        if let Some(known) = self.decode_known_json(bytes) {
            return known;
        }
        Ok(self.decode(bytes).await?.map(avro_json::into_json))
    }

    /// Encodes an output value for `topic`: Avro is registered under `<topic>-value` (once; the
    /// client caches the id) and Confluent-framed, JSON is written as text.
    ///
    /// # Errors
    /// Transient when the registry cannot be reached; fatal when it refuses the schema or the
    /// value does not match it.
    pub async fn encode(&self, topic: &str, value: &OutValue) -> Result<Vec<u8>, CodecError> {
        let OutValue::Avro { schema, value } = value else {
            return Ok(value
                .json_bytes()
                .expect("BUG: a value that is not Avro is JSON"));
        };
        let strategy = SubjectNameStrategy::TopicNameStrategyWithSchema(
            topic.to_owned(),
            false,
            SuppliedSchema::new(None, SchemaType::Avro, schema.to_string()),
        );
        self.encoder
            .encode_value(value.clone(), &strategy)
            .await
            .map_err(|error| {
                if is_transient(&error) {
                    self.encoder.remove_errors_from_cache();
                    CodecError::Transient(error.to_string())
                } else {
                    CodecError::Fatal(format!("{topic}: {error}"))
                }
            })
    }
}

/// The schema id and the Avro body of a Confluent-framed value (magic byte 0, a 4-byte id).
///
/// # Errors
/// Poison: not framed so.
fn framed(bytes: &[u8]) -> Result<(u32, &[u8]), CodecError> {
    match bytes {
        [0, a, b, c, d, body @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), body)),
        [magic, ..] if *magic != 0 => Err(CodecError::Poison(format!(
            "not Confluent-framed Avro: magic byte {magic:#04x}"
        ))),
        _ => Err(CodecError::Poison(format!(
            "not Confluent-framed Avro: {} bytes",
            bytes.len()
        ))),
    }
}

/// The client marks connection failures and 502/503 retriable; any other 5xx is an outage too.
fn is_transient(error: &SRCError) -> bool {
    error.retriable || error.error.contains("failed with status 5")
}
