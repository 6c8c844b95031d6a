//! The MongoDB Kafka source connector's change events, in its `schema` (Avro) and `json` output
//! formats.
//!
//! With `output.format.value = schema` and the default `output.schema.value`, the value is an Avro
//! record whose sub-documents (`fullDocument`, `documentKey`, `updateDescription.updatedFields`,
//! `_id`, `clusterTime`) are *strings* of JSON in the configured formatter's dialect
//! ([`MONGO_CHANGE_STREAM_SCHEMA`]). With `output.format.value = json` the value is the event as
//! JSON text, and JsonConverter double-encodes that text as a JSON string literal; both are read
//! by [`super::fields::parse_json_text`] and decoded here.

use std::fmt;

use apache_avro::types::Value as Avro;
use bson::{Bson, Document};
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::{Map, Value, json};

use super::avro_json::{AvroJson, nullable, record, string};
use super::error::DecodeError;
use super::event::{ChangeEvent, Namespace, Operation, SourcePosition};
use super::extjson::{self, Dialect};
use super::fields::{self, into_object};

/// The connector's default change-stream value schema as the Avro converter registers it:
/// optional fields are `["null", T]` unions defaulting to null.
pub const MONGO_CHANGE_STREAM_SCHEMA: &str = r#"{
  "type": "record", "name": "ChangeStream",
  "fields": [
    {"name": "_id", "type": "string"},
    {"name": "operationType", "type": ["null", "string"], "default": null},
    {"name": "fullDocumentBeforeChange", "type": ["null", "string"], "default": null},
    {"name": "fullDocument", "type": ["null", "string"], "default": null},
    {"name": "ns", "type": ["null", {"type": "record", "name": "ns", "fields": [
      {"name": "db", "type": "string"},
      {"name": "coll", "type": ["null", "string"], "default": null}]}], "default": null},
    {"name": "to", "type": ["null", {"type": "record", "name": "to", "fields": [
      {"name": "db", "type": "string"},
      {"name": "coll", "type": ["null", "string"], "default": null}]}], "default": null},
    {"name": "documentKey", "type": ["null", "string"], "default": null},
    {"name": "updateDescription", "type": ["null", {"type": "record", "name": "updateDescription", "fields": [
      {"name": "updatedFields", "type": ["null", "string"], "default": null},
      {"name": "removedFields", "type": ["null", {"type": "array", "items": "string"}], "default": null},
      {"name": "truncatedArrays", "type": ["null", {"type": "array", "items": {"type": "record", "name": "truncatedArray", "fields": [
        {"name": "field", "type": "string"},
        {"name": "newSize", "type": "int"}]}}], "default": null},
      {"name": "disambiguatedPaths", "type": ["null", "string"], "default": null}]}], "default": null},
    {"name": "clusterTime", "type": ["null", "string"], "default": null},
    {"name": "txnNumber", "type": ["null", "long"], "default": null},
    {"name": "lsid", "type": ["null", {"type": "record", "name": "lsid", "fields": [
      {"name": "id", "type": "string"},
      {"name": "uid", "type": "string"}]}], "default": null},
    {"name": "wallTime", "type": ["null", "long"], "default": null}
  ]
}"#;

/// Decodes a change event from its JSON form (the `json` output, or the Avro record read as JSON
/// by [`super::avro_json`]).
pub fn decode(value: Value) -> Result<ChangeEvent, DecodeError> {
    decode_fields(value, None)
}

/// As [`decode`], keeping only the top-level `fields` of `fullDocument` (all when `None`): what
/// a processor that declares the fields it reads needs (`Topology::document_fields`).
///
/// # Errors
/// As [`decode`].
pub fn decode_fields(value: Value, fields: Option<&[&str]>) -> Result<ChangeEvent, DecodeError> {
    RawChange::of_json(value)?.decode(fields)
}

/// A change event's top-level fields as JSON, not yet read (a sub-document an object or a
/// string of Extended JSON; absent and null fields `None`): taken out of the event's JSON form
/// ([`RawChange::of_json`]), or read straight from an Avro body ([`RawChange::read_avro`])
/// without the JSON map in between, whose keys would be allocated and hashed only to be taken
/// out again.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawChange {
    operation_type: Option<Value>,
    document_key: Option<Value>,
    full_document: Option<Value>,
    update_description: Option<Value>,
    ns: Option<Value>,
    resume_token: Option<Value>,
    cluster_time: Option<Value>,
    wall_time: Option<Value>,
}

/// Reads a change event's record into a [`RawChange`]: the fields it takes as JSON
/// ([`AvroJson`]), the others (`fullDocumentBeforeChange`, `to`, `txnNumber`, `lsid`, …) read
/// and dropped. By hand, as a map: apache-avro's deserializer checks a derived struct's name
/// against the record's, and writers name it as they like.
struct RawChangeVisitor;

impl<'de> Visitor<'de> for RawChangeVisitor {
    type Value = RawChange;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a MongoDB change event")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut fields: A) -> Result<RawChange, A::Error> {
        let mut raw = RawChange::default();
        while let Some(Field(field)) = fields.next_key()? {
            let slot = match field {
                Some(FieldName::OperationType) => &mut raw.operation_type,
                Some(FieldName::DocumentKey) => &mut raw.document_key,
                Some(FieldName::FullDocument) => &mut raw.full_document,
                Some(FieldName::UpdateDescription) => &mut raw.update_description,
                Some(FieldName::Ns) => &mut raw.ns,
                Some(FieldName::ResumeToken) => &mut raw.resume_token,
                Some(FieldName::ClusterTime) => &mut raw.cluster_time,
                Some(FieldName::WallTime) => &mut raw.wall_time,
                None => {
                    // Read and dropped: apache-avro's deserializer takes `IgnoredAny` for no
                    // record (it asks a record's field names as identifiers).
                    fields.next_value::<AvroJson>()?;
                    continue;
                }
            };
            let AvroJson(value) = fields.next_value()?;
            *slot = Some(value).filter(|v| !v.is_null());
        }
        Ok(raw)
    }
}

/// A [`RawChange`] read from Avro ([`RawChangeVisitor`]).
struct AvroRawChange(RawChange);

impl<'de> Deserialize<'de> for AvroRawChange {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(RawChangeVisitor)
            .map(AvroRawChange)
    }
}

/// The fields [`RawChange`] keeps.
enum FieldName {
    OperationType,
    DocumentKey,
    FullDocument,
    UpdateDescription,
    Ns,
    ResumeToken,
    ClusterTime,
    WallTime,
}

/// A record field's name: one [`RawChange`] keeps, or `None`.
struct Field(Option<FieldName>);

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldVisitor;
        impl Visitor<'_> for FieldVisitor {
            type Value = Field;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }

            fn visit_str<E>(self, name: &str) -> Result<Field, E> {
                Ok(Field(match name {
                    "operationType" => Some(FieldName::OperationType),
                    "documentKey" => Some(FieldName::DocumentKey),
                    "fullDocument" => Some(FieldName::FullDocument),
                    "updateDescription" => Some(FieldName::UpdateDescription),
                    "ns" => Some(FieldName::Ns),
                    "_id" => Some(FieldName::ResumeToken),
                    "clusterTime" => Some(FieldName::ClusterTime),
                    "wallTime" => Some(FieldName::WallTime),
                    _ => None,
                }))
            }
        }
        deserializer.deserialize_identifier(FieldVisitor)
    }
}

impl RawChange {
    /// The fields of a change event's JSON form.
    ///
    /// # Errors
    /// When it is not an object.
    pub fn of_json(value: Value) -> Result<Self, DecodeError> {
        let mut event = into_object(value, "change event")?;
        let mut take = |field| fields::take(&mut event, field);
        Ok(Self {
            operation_type: take("operationType"),
            document_key: take("documentKey"),
            full_document: take("fullDocument"),
            update_description: take("updateDescription"),
            ns: take("ns"),
            resume_token: take("_id"),
            cluster_time: take("clusterTime"),
            wall_time: take("wallTime"),
        })
    }

    /// Reads an Avro change event's body written with `reader`'s writer schema: the fields
    /// [`RawChange::of_json`] takes from the JSON [`super::avro_json::read`] makes of it, the
    /// same values (the golden and property tests compare the two).
    ///
    /// # Errors
    /// As [`super::avro_json::read`]; also where the body is not a record or a map (read it
    /// through [`super::avro_json::read`] for the answer or its error).
    pub fn read_avro(
        reader: &apache_avro::reader::datum::GenericDatumReader<'_>,
        mut body: &[u8],
    ) -> apache_avro::AvroResult<Self> {
        reader
            .read_deser::<AvroRawChange>(&mut body)
            .map(|AvroRawChange(raw)| raw)
    }

    /// The change event, keeping only the top-level `fields` of `fullDocument` (all when
    /// `None`).
    ///
    /// # Errors
    /// As [`decode`].
    pub fn decode(self, fields: Option<&[&str]>) -> Result<ChangeEvent, DecodeError> {
        let operation = Operation::from_mongo(
            &fields::string(self.operation_type, "operationType")?
                .ok_or(DecodeError::Missing("operationType"))?,
        );
        let document_key = match fields::document_fields(self.document_key, "documentKey", None)? {
            Some(key) => key,
            None if matches!(operation, Operation::Other(_)) => Document::new(),
            None => return Err(DecodeError::Missing("documentKey")),
        };
        let full_document = fields::document_fields(self.full_document, "fullDocument", fields)?;
        let (updated_fields, removed_fields, truncated_arrays) =
            fields::update_description(self.update_description)?;
        let namespace = match fields::object(self.ns, "ns")? {
            None => None,
            Some(mut ns) => Some(Namespace {
                db: fields::take_str(&mut ns, "db")?.ok_or(DecodeError::Missing("ns.db"))?,
                coll: fields::take_str(&mut ns, "coll")?,
            }),
        };
        let source = SourcePosition {
            resume_token: fields::document_fields(self.resume_token, "_id", None)?
                .filter(|token| !token.is_empty()),
            cluster_time: fields::timestamp(self.cluster_time, "clusterTime")?,
            wall_time: fields::datetime(self.wall_time, "wallTime")?,
        };
        // The connector's copy of existing documents (`startup.mode=copy_existing`, or a
        // connector re-created with `copy.existing`) mimics inserts, marked by
        // `_id.copyingData`: a snapshot read, as Debezium's `op = r`. Tables take it as an
        // insert; nothing treats it as new.
        let operation = match operation {
            Operation::Insert if is_copy(source.resume_token.as_ref()) => Operation::Snapshot,
            other => other,
        };
        Ok(ChangeEvent {
            operation,
            namespace,
            document_key,
            full_document,
            updated_fields,
            removed_fields,
            truncated_arrays,
            source,
        })
    }
}

/// Whether a resume token is the copy-existing mark the connector puts in its `_id`
/// (`{_id: <document id>, copyingData: true}`; `MongoCopyDataManager`).
fn is_copy(token: Option<&Document>) -> bool {
    token.is_some_and(|t| t.get_bool("copyingData") == Ok(true))
}

/// The resume token and operation type the connector writes for `event`: a snapshot read is
/// its copy of an existing document, an insert whose `_id` is `{_id: <document id>,
/// copyingData: true}`.
fn as_written(event: &ChangeEvent) -> (Option<Document>, &str) {
    let token = event.source.resume_token.clone();
    if event.operation != Operation::Snapshot {
        return (token, event.operation.as_str());
    }
    let copy = token.filter(|t| is_copy(Some(t))).unwrap_or_else(|| {
        let id = event.document_key.get("_id").cloned().unwrap_or(Bson::Null);
        bson::doc! { "_id": id, "copyingData": true }
    });
    (Some(copy), "insert")
}

/// The event as the connector's `json` output writes it (sub-documents as objects), in `dialect`
/// (a snapshot read as its copy of an existing document, [`as_written`]).
pub fn to_json(event: &ChangeEvent, dialect: Dialect) -> Value {
    let doc = |d: &Document| extjson::to_value(d, dialect);
    let mut out = Map::new();
    let (token, operation) = as_written(event);
    if let Some(token) = &token {
        out.insert("_id".into(), doc(token));
    }
    out.insert("operationType".into(), json!(operation));
    if let Some(ts) = event.source.cluster_time {
        out.insert(
            "clusterTime".into(),
            extjson::bson_to_value(Bson::Timestamp(ts), dialect),
        );
    }
    if let Some(at) = event.source.wall_time {
        out.insert(
            "wallTime".into(),
            extjson::bson_to_value(Bson::DateTime(at), dialect),
        );
    }
    if let Some(full) = &event.full_document {
        out.insert("fullDocument".into(), doc(full));
    }
    if let Some(ns) = &event.namespace {
        out.insert("ns".into(), json!({"db": ns.db, "coll": ns.coll}));
    }
    if !event.document_key.is_empty() {
        out.insert("documentKey".into(), doc(&event.document_key));
    }
    if event.operation == Operation::Update {
        out.insert(
            "updateDescription".into(),
            json!({
                "updatedFields": doc(&event.updated_fields),
                "removedFields": event.removed_fields,
                "truncatedArrays": event.truncated_arrays.iter()
                    .map(|t| json!({"field": t.field, "newSize": t.new_size}))
                    .collect::<Vec<_>>(),
            }),
        );
    }
    Value::Object(out)
}

/// The event as the Avro record of [`MONGO_CHANGE_STREAM_SCHEMA`], sub-documents as JSON strings
/// in `dialect` (the connector's `output.json.formatter`).
pub fn to_avro(event: &ChangeEvent, dialect: Dialect) -> Avro {
    let text = |d: &Document| string(extjson::to_string(d, dialect));
    let (token, operation) = as_written(event);
    let token = token.as_ref().map_or_else(|| string("{}"), text);
    let update = (event.operation == Operation::Update).then(|| {
        record(vec![
            ("updatedFields", nullable(Some(text(&event.updated_fields)))),
            (
                "removedFields",
                nullable(Some(Avro::Array(
                    event
                        .removed_fields
                        .iter()
                        .map(|f| string(f.as_str()))
                        .collect(),
                ))),
            ),
            (
                "truncatedArrays",
                nullable(Some(Avro::Array(
                    event
                        .truncated_arrays
                        .iter()
                        .map(|t| {
                            record(vec![
                                ("field", string(t.field.as_str())),
                                ("newSize", Avro::Int(t.new_size as i32)),
                            ])
                        })
                        .collect(),
                ))),
            ),
            ("disambiguatedPaths", nullable(None)),
        ])
    });
    let namespace = event.namespace.as_ref().map(|ns| {
        record(vec![
            ("db", string(ns.db.as_str())),
            ("coll", nullable(ns.coll.as_deref().map(string))),
        ])
    });
    let cluster_time = event
        .source
        .cluster_time
        .map(|ts| string(extjson::bson_to_value(Bson::Timestamp(ts), dialect).to_string()));
    record(vec![
        ("_id", token),
        ("operationType", nullable(Some(string(operation)))),
        ("fullDocumentBeforeChange", nullable(None)),
        (
            "fullDocument",
            nullable(event.full_document.as_ref().map(text)),
        ),
        ("ns", nullable(namespace)),
        ("to", nullable(None)),
        (
            "documentKey",
            nullable((!event.document_key.is_empty()).then(|| text(&event.document_key))),
        ),
        ("updateDescription", nullable(update)),
        ("clusterTime", nullable(cluster_time)),
        ("txnNumber", nullable(None)),
        ("lsid", nullable(None)),
        (
            "wallTime",
            nullable(
                event
                    .source
                    .wall_time
                    .map(|at| Avro::Long(at.timestamp_millis())),
            ),
        ),
    ])
}

/// The connector's key for an event with `change.stream.document.key.as.key`: the document key.
pub fn key_json(event: &ChangeEvent, dialect: Dialect) -> Value {
    extjson::to_value(&event.document_key, dialect)
}
