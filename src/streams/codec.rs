//! Confluent-framed Avro through the schema registry, with the registry client's schema cache,
//! and every failure classified the way the runtime acts on it: a record that can never decode
//! is *poison* (DLQ), a registry that cannot be reached is *transient* (retry, no commit), a
//! schema the registry refuses to register is *fatal* (configuration).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use apache_avro::schema::{Names, ResolvedSchema};
use apache_avro::types::Value as Avro;
use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{
    SchemaType, SubjectNameStrategy, SuppliedSchema,
};

use super::processor::OutValue;

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
    /// Writer schemas with their named types resolved, by registry id: what validating a decoded
    /// value needs, built once per schema rather than per record.
    resolved: RwLock<HashMap<u32, Arc<Names>>>,
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
            resolved: RwLock::default(),
        }
    }

    /// Decodes a Confluent-framed value; `None` (a tombstone) stays `None`.
    ///
    /// # Errors
    /// Poison for a missing or wrong magic byte, an id the registry does not know, or bytes that
    /// do not match the schema; transient when the registry cannot be reached or answers 5xx.
    pub async fn decode(&self, bytes: Option<&[u8]>) -> Result<Option<Avro>, CodecError> {
        let Some(bytes) = bytes else { return Ok(None) };
        // Checked here so framing problems never reach the registry client's error cache.
        match bytes {
            [0, _, _, _, _, ..] => {}
            [magic, ..] if *magic != 0 => {
                return Err(CodecError::Poison(format!(
                    "not Confluent-framed Avro: magic byte {magic:#04x}"
                )));
            }
            _ => {
                return Err(CodecError::Poison(format!(
                    "not Confluent-framed Avro: {} bytes",
                    bytes.len()
                )));
            }
        }
        match self.decoder.decode_with_schema(Some(bytes)).await {
            // apache-avro 0.22's datum reader returns nulls instead of failing when the bytes end
            // mid-record, so a truncated value would pass as a record of nulls: validate against
            // the writer schema before trusting it.
            Ok(Some(decoded)) => {
                let names = self.names(&decoded.schema)?;
                if decoded
                    .value
                    .validate_with_names(&decoded.schema.parsed, &names)
                {
                    Ok(Some(decoded.value))
                } else {
                    Err(CodecError::Poison(format!(
                        "bytes do not match writer schema id {} (truncated or corrupt)",
                        decoded.schema.id
                    )))
                }
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

    /// The named types of a writer schema (cached by id).
    fn names(
        &self,
        schema: &schema_registry_converter::avro_common::AvroSchema,
    ) -> Result<Arc<Names>, CodecError> {
        let cached = crate::sync::read(&self.resolved).get(&schema.id).cloned();
        if let Some(resolved) = cached {
            return Ok(resolved);
        }
        let resolved = ResolvedSchema::try_from(&schema.parsed).map_err(|e| {
            CodecError::Poison(format!(
                "writer schema id {} does not resolve: {e}",
                schema.id
            ))
        })?;
        let resolved: Arc<Names> = Arc::new(
            resolved
                .get_names()
                .iter()
                .map(|(name, schema)| (name.clone(), (*schema).clone()))
                .collect(),
        );
        crate::sync::write(&self.resolved).insert(schema.id, Arc::clone(&resolved));
        Ok(resolved)
    }

    /// Encodes an output value for `topic`: Avro is registered under `<topic>-value` (once; the
    /// client caches the id) and Confluent-framed, JSON is written as text.
    ///
    /// # Errors
    /// Transient when the registry cannot be reached; fatal when it refuses the schema or the
    /// value does not match it.
    pub async fn encode(&self, topic: &str, value: &OutValue) -> Result<Vec<u8>, CodecError> {
        match value {
            OutValue::Json(json) => {
                serde_json::to_vec(json).map_err(|e| CodecError::Fatal(e.to_string()))
            }
            OutValue::Avro { schema, value } => {
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
    }
}

/// The client marks connection failures and 502/503 retriable; any other 5xx is an outage too.
fn is_transient(error: &SRCError) -> bool {
    error.retriable || error.error.contains("failed with status 5")
}
