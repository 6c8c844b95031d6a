//! Reading the fields of a decoded envelope. Every input form is first turned into JSON (the Avro
//! ones by [`super::avro_json`]), where a sub-document is either an object (the JSON
//! forms) or a string of Extended JSON (the Avro forms and Debezium's `after`): the helpers here
//! accept both, so one decoder serves each envelope in all its encodings.

use bson::{Bson, DateTime, Document, Timestamp};
use serde_json::{Map, Value};

use super::error::DecodeError;
use super::event::TruncatedArray;
use super::extjson;

pub(crate) type Object = Map<String, Value>;

/// Removes `field`; `None` when absent or null.
pub(crate) fn take(map: &mut Object, field: &str) -> Option<Value> {
    map.remove(field).filter(|v| !v.is_null())
}

pub(crate) fn take_str(
    map: &mut Object,
    field: &'static str,
) -> Result<Option<String>, DecodeError> {
    string(take(map, field), field)
}

/// A field's value (absent or null: `None`) as a string.
pub(crate) fn string(
    value: Option<Value>,
    field: &'static str,
) -> Result<Option<String>, DecodeError> {
    match value {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(DecodeError::Type {
            field,
            expected: "a string",
        }),
    }
}

pub(crate) fn take_object(
    map: &mut Object,
    field: &'static str,
) -> Result<Option<Object>, DecodeError> {
    object(take(map, field), field)
}

/// A field's value (absent or null: `None`) as an object.
pub(crate) fn object(
    value: Option<Value>,
    field: &'static str,
) -> Result<Option<Object>, DecodeError> {
    match value {
        None => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(_) => Err(DecodeError::Type {
            field,
            expected: "an object",
        }),
    }
}

/// A sub-document, given as an object or as a string of Extended JSON.
pub(crate) fn take_document(
    map: &mut Object,
    field: &'static str,
) -> Result<Option<Document>, DecodeError> {
    document_fields(take(map, field), field, None)
}

/// A field's value (absent or null: `None`) as a sub-document, given as an object or as a
/// string of Extended JSON, keeping only its top-level `fields` (all when `None`).
pub(crate) fn document_fields(
    value: Option<Value>,
    field: &'static str,
    fields: Option<&[&str]>,
) -> Result<Option<Document>, DecodeError> {
    let parsed = match value {
        None => return Ok(None),
        Some(Value::String(text)) => extjson::parse_document_fields(&text, fields),
        Some(value @ Value::Object(_)) => extjson::document_from_value_fields(value, fields),
        Some(_) => {
            return Err(DecodeError::Type {
                field,
                expected: "a document or a JSON string",
            });
        }
    };
    parsed
        .map(Some)
        .map_err(|source| DecodeError::ExtJson { field, source })
}

/// Any Extended JSON value, given as JSON or as a string of Extended JSON when `as_text`.
pub(crate) fn bson_of(
    value: Value,
    field: &'static str,
    as_text: bool,
) -> Result<Bson, DecodeError> {
    let parsed = match value {
        Value::String(text) if as_text => extjson::parse_value(&text),
        other => extjson::bson_from_value(other),
    };
    parsed.map_err(|source| DecodeError::ExtJson { field, source })
}

pub(crate) fn take_strings(
    map: &mut Object,
    field: &'static str,
) -> Result<Vec<String>, DecodeError> {
    match take(map, field) {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|item| match item {
                Value::String(s) => Ok(s),
                _ => Err(DecodeError::Type {
                    field,
                    expected: "an array of strings",
                }),
            })
            .collect(),
        Some(_) => Err(DecodeError::Type {
            field,
            expected: "an array of strings",
        }),
    }
}

pub(crate) fn take_i64(map: &mut Object, field: &'static str) -> Result<Option<i64>, DecodeError> {
    match take(map, field) {
        None => Ok(None),
        Some(Value::Number(n)) => n.as_i64().map(Some).ok_or(DecodeError::Type {
            field,
            expected: "an integer",
        }),
        Some(_) => Err(DecodeError::Type {
            field,
            expected: "an integer",
        }),
    }
}

/// What `updateDescription` says: set paths, removed paths, shortened arrays.
pub(crate) type UpdateDescription = (Document, Vec<String>, Vec<TruncatedArray>);

/// `updateDescription`: its `updatedFields` (dotted keys kept), `removedFields` and
/// `truncatedArrays`; all empty when absent (every operation but an update). Both envelopes
/// shape it alike, except that Debezium names an array's new length `size`.
pub(crate) fn take_update_description(map: &mut Object) -> Result<UpdateDescription, DecodeError> {
    update_description(take(map, "updateDescription"))
}

/// As [`take_update_description`], of the field's value (absent or null: `None`).
pub(crate) fn update_description(value: Option<Value>) -> Result<UpdateDescription, DecodeError> {
    match object(value, "updateDescription")? {
        None => Ok((Document::new(), Vec::new(), Vec::new())),
        Some(mut update) => Ok((
            take_document(&mut update, "updatedFields")?.unwrap_or_default(),
            take_strings(&mut update, "removedFields")?,
            take_truncated_arrays(&mut update)?,
        )),
    }
}

fn take_truncated_arrays(update: &mut Object) -> Result<Vec<TruncatedArray>, DecodeError> {
    const FIELD: &str = "updateDescription.truncatedArrays";
    let invalid = || DecodeError::Type {
        field: FIELD,
        expected: "an array of {field, newSize}",
    };
    match take(update, "truncatedArrays") {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|item| {
                let Value::Object(mut item) = item else {
                    return Err(invalid());
                };
                let field = take_str(&mut item, "field")?.ok_or_else(invalid)?;
                let size = match take_i64(&mut item, "newSize")? {
                    Some(size) => Some(size),
                    None => take_i64(&mut item, "size")?,
                };
                let new_size = size
                    .and_then(|s| u32::try_from(s).ok())
                    .ok_or_else(invalid)?;
                Ok(TruncatedArray { field, new_size })
            })
            .collect(),
        Some(_) => Err(invalid()),
    }
}

/// `clusterTime`: `{"$timestamp": …}` as an object or a string (absent or null: `None`).
pub(crate) fn timestamp(
    value: Option<Value>,
    field: &'static str,
) -> Result<Option<Timestamp>, DecodeError> {
    match value {
        None => Ok(None),
        Some(value) => match bson_of(value, field, true)? {
            Bson::Timestamp(ts) => Ok(Some(ts)),
            _ => Err(DecodeError::Type {
                field,
                expected: "a BSON timestamp",
            }),
        },
    }
}

/// `wallTime`: epoch millis (the Avro schema's long) or an Extended JSON date.
pub(crate) fn take_datetime(
    map: &mut Object,
    field: &'static str,
) -> Result<Option<DateTime>, DecodeError> {
    datetime(take(map, field), field)
}

/// As [`take_datetime`], of the field's value (absent or null: `None`).
pub(crate) fn datetime(
    value: Option<Value>,
    field: &'static str,
) -> Result<Option<DateTime>, DecodeError> {
    match value {
        None => Ok(None),
        Some(Value::Number(n)) => {
            n.as_i64()
                .map(|ms| Some(DateTime::from_millis(ms)))
                .ok_or(DecodeError::Type {
                    field,
                    expected: "epoch milliseconds",
                })
        }
        Some(value) => match bson_of(value, field, true)? {
            Bson::DateTime(at) => Ok(Some(at)),
            _ => Err(DecodeError::Type {
                field,
                expected: "a date",
            }),
        },
    }
}

/// JSON text as producers write it: plain, or double-encoded as a JSON string literal whose
/// content is the JSON (what JsonConverter does to the source connector's `json` output). A
/// Connect `{"schema": …, "payload": …}` wrapper is removed as well.
pub fn parse_json_text(bytes: &[u8]) -> Result<Value, DecodeError> {
    let mut value: Value = serde_json::from_slice(bytes)?;
    if let Value::String(inner) = &value {
        value = serde_json::from_str(inner)?;
    }
    if let Value::Object(map) = &mut value
        && map.len() == 2
        && map.contains_key("schema")
        && let Some(payload) = map.remove("payload")
    {
        value = payload;
        if let Value::String(inner) = &value {
            value = serde_json::from_str(inner)?;
        }
    }
    Ok(value)
}

pub(crate) fn into_object(value: Value, field: &'static str) -> Result<Object, DecodeError> {
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(DecodeError::Type {
            field,
            expected: "an object",
        }),
    }
}
