//! Debezium's MongoDB connector envelope, as Avro or JSON.
//!
//! Key: `{id: "<the _id as Extended JSON text>"}`. Value: `op` (`c` create, `u` update, `d`
//! delete, `r` snapshot read), `after` (the document as a JSON string), `updateDescription`
//! (`updatedFields` as a JSON string, `removedFields`), `source` (`db`, `collection`, `ts_ms`,
//! `ord`, optionally `wallTime`). After each delete Debezium writes a tombstone: the key with a
//! null value.

use apache_avro::types::Value as Avro;
use bson::{Bson, DateTime, Document, Timestamp, doc};
use serde_json::{Value, json};

use super::avro_json::{nullable, record, string};
use super::error::DecodeError;
use super::event::{CdcRecord, ChangeEvent, Namespace, Operation, SourcePosition, TruncatedArray};
use super::extjson::{self, Dialect};
use super::fields::{self, into_object};

/// The key schema: `{id: string}`.
pub const DEBEZIUM_KEY_SCHEMA: &str = r#"{"type": "record", "name": "Key", "namespace": "clinic.cdc.debezium", "fields": [{"name": "id", "type": "string"}]}"#;

/// The envelope's value schema, with the `source` fields this decoder reads (Debezium's has more;
/// a decoder of ours ignores fields it does not know).
pub const DEBEZIUM_ENVELOPE_SCHEMA: &str = r#"{
  "type": "record", "name": "Envelope", "namespace": "clinic.cdc.debezium",
  "fields": [
    {"name": "before", "type": ["null", "string"], "default": null},
    {"name": "after", "type": ["null", "string"], "default": null},
    {"name": "updateDescription", "type": ["null", {"type": "record", "name": "updatedescription", "fields": [
      {"name": "removedFields", "type": ["null", {"type": "array", "items": "string"}], "default": null},
      {"name": "updatedFields", "type": ["null", "string"], "default": null},
      {"name": "truncatedArrays", "type": ["null", {"type": "array", "items": {"type": "record", "name": "truncatedarray", "fields": [
        {"name": "field", "type": "string"},
        {"name": "size", "type": "int"}]}}], "default": null}]}], "default": null},
    {"name": "source", "type": {"type": "record", "name": "Source", "fields": [
      {"name": "version", "type": "string"},
      {"name": "connector", "type": "string"},
      {"name": "name", "type": "string"},
      {"name": "ts_ms", "type": "long"},
      {"name": "snapshot", "type": ["null", "string"], "default": null},
      {"name": "db", "type": "string"},
      {"name": "rs", "type": "string"},
      {"name": "collection", "type": "string"},
      {"name": "ord", "type": "int"},
      {"name": "wallTime", "type": ["null", "long"], "default": null}]}},
    {"name": "op", "type": ["null", "string"], "default": null},
    {"name": "ts_ms", "type": ["null", "long"], "default": null}
  ]
}"#;

/// Decodes a Debezium record from its key and value as JSON (Avro ones read as JSON by
/// [`super::avro_json`]); a missing value is a tombstone.
pub fn decode(key: Option<Value>, value: Option<Value>) -> Result<CdcRecord, DecodeError> {
    let key = key.map(decode_key).transpose()?;
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return key
            .map(|document_key| CdcRecord::Tombstone { document_key })
            .ok_or(DecodeError::TombstoneWithoutKey);
    };
    let mut envelope = into_object(value, "envelope")?;
    let operation = match fields::take_str(&mut envelope, "op")?.as_deref() {
        Some("c") => Operation::Insert,
        Some("u") => Operation::Update,
        Some("d") => Operation::Delete,
        Some("r") => Operation::Snapshot,
        Some(other) => return Err(DecodeError::UnknownOp(other.to_owned())),
        None => return Err(DecodeError::Missing("op")),
    };
    let full_document = fields::take_document(&mut envelope, "after")?;
    let (updated_fields, removed_fields, truncated_arrays) =
        fields::take_update_description(&mut envelope)?;
    let document_key = match (key, &full_document) {
        (Some(key), _) => key,
        (None, Some(after)) => match after.get("_id") {
            Some(id) => doc! { "_id": id.clone() },
            None => return Err(DecodeError::Missing("key.id")),
        },
        (None, None) => return Err(DecodeError::Missing("key.id")),
    };
    let mut source =
        fields::take_object(&mut envelope, "source")?.ok_or(DecodeError::Missing("source"))?;
    let namespace = Some(Namespace {
        db: fields::take_str(&mut source, "db")?.ok_or(DecodeError::Missing("source.db"))?,
        coll: fields::take_str(&mut source, "collection")?,
    });
    let ts_ms = fields::take_i64(&mut source, "ts_ms")?;
    let ord = fields::take_i64(&mut source, "ord")?;
    let cluster_time = ts_ms.map(|ms| Timestamp {
        time: u32::try_from(ms.div_euclid(1000)).unwrap_or(0),
        increment: ord.and_then(|o| u32::try_from(o).ok()).unwrap_or(0),
    });
    let wall_time =
        fields::take_datetime(&mut source, "wallTime")?.or(ts_ms.map(DateTime::from_millis));
    Ok(CdcRecord::Change(ChangeEvent {
        operation,
        namespace,
        document_key,
        full_document,
        updated_fields,
        removed_fields,
        truncated_arrays,
        source: SourcePosition {
            resume_token: None,
            cluster_time,
            wall_time,
        },
    }))
}

fn decode_key(key: Value) -> Result<Document, DecodeError> {
    let mut key = into_object(key, "key")?;
    let id = fields::take(&mut key, "id").ok_or(DecodeError::Missing("key.id"))?;
    Ok(doc! { "_id": fields::bson_of(id, "key.id", true)? })
}

/// The key and value JSON Debezium writes for `record` (value `None` for a tombstone), with
/// documents in `dialect` (Debezium writes relaxed/strict JSON; all three decode).
pub fn to_json(record: &CdcRecord, dialect: Dialect) -> (Value, Option<Value>) {
    match record {
        CdcRecord::Tombstone { document_key } => (key_json(document_key, dialect), None),
        CdcRecord::Change(event) => {
            let parts = Parts::of(event, dialect);
            let value = json!({
                "before": null,
                "after": parts.after,
                "updateDescription": parts.update.map(|(updated, removed, truncated)| json!({
                    "removedFields": removed, "updatedFields": updated,
                    "truncatedArrays": (!truncated.is_empty()).then(|| truncated.iter()
                        .map(|t| json!({"field": t.field, "size": t.new_size}))
                        .collect::<Vec<_>>()),
                })),
                "source": {
                    "version": "2.7.3.Final", "connector": "mongodb", "name": "clinic",
                    "ts_ms": parts.ts_ms, "snapshot": parts.snapshot, "db": parts.db, "rs": "rs0",
                    "collection": parts.collection, "ord": parts.ord, "wallTime": parts.wall_time,
                },
                "op": parts.op,
                "ts_ms": parts.ts_ms,
            });
            (key_json(&event.document_key, dialect), Some(value))
        }
    }
}

/// Key and value as Avro records of [`DEBEZIUM_KEY_SCHEMA`] and [`DEBEZIUM_ENVELOPE_SCHEMA`].
pub fn to_avro(cdc: &CdcRecord, dialect: Dialect) -> (Avro, Option<Avro>) {
    let key = |key: &Document| record(vec![("id", string(id_text(key, dialect)))]);
    match cdc {
        CdcRecord::Tombstone { document_key } => (key(document_key), None),
        CdcRecord::Change(event) => {
            let parts = Parts::of(event, dialect);
            let update = parts.update.map(|(updated, removed, truncated)| {
                let truncated = (!truncated.is_empty()).then(|| {
                    Avro::Array(
                        truncated
                            .into_iter()
                            .map(|t| {
                                record(vec![
                                    ("field", string(t.field)),
                                    ("size", Avro::Int(t.new_size as i32)),
                                ])
                            })
                            .collect(),
                    )
                });
                record(vec![
                    (
                        "removedFields",
                        nullable(Some(Avro::Array(removed.into_iter().map(string).collect()))),
                    ),
                    ("updatedFields", nullable(Some(string(updated)))),
                    ("truncatedArrays", nullable(truncated)),
                ])
            });
            let value = record(vec![
                ("before", nullable(None)),
                ("after", nullable(parts.after.map(string))),
                ("updateDescription", nullable(update)),
                (
                    "source",
                    record(vec![
                        ("version", string("2.7.3.Final")),
                        ("connector", string("mongodb")),
                        ("name", string("clinic")),
                        ("ts_ms", Avro::Long(parts.ts_ms)),
                        ("snapshot", nullable(parts.snapshot.map(string))),
                        ("db", string(parts.db)),
                        ("rs", string("rs0")),
                        ("collection", string(parts.collection)),
                        ("ord", Avro::Int(parts.ord)),
                        ("wallTime", nullable(parts.wall_time.map(Avro::Long))),
                    ]),
                ),
                ("op", nullable(Some(string(parts.op)))),
                ("ts_ms", nullable(Some(Avro::Long(parts.ts_ms)))),
            ]);
            (key(&event.document_key), Some(value))
        }
    }
}

fn key_json(document_key: &Document, dialect: Dialect) -> Value {
    json!({ "id": id_text(document_key, dialect) })
}

/// Debezium's key `id`: the `_id` as Extended JSON text (`"1004"`, `"\"abc\""`, `{"$oid": …}`).
fn id_text(document_key: &Document, dialect: Dialect) -> String {
    let id = document_key.get("_id").cloned().unwrap_or(Bson::Null);
    extjson::bson_to_value(id, dialect).to_string()
}

/// The envelope fields both encodings share.
struct Parts {
    op: &'static str,
    after: Option<String>,
    update: Option<(String, Vec<String>, Vec<TruncatedArray>)>,
    db: String,
    collection: String,
    ts_ms: i64,
    ord: i32,
    wall_time: Option<i64>,
    snapshot: Option<String>,
}

impl Parts {
    fn of(event: &ChangeEvent, dialect: Dialect) -> Self {
        let op = match event.operation {
            Operation::Insert | Operation::Replace | Operation::Other(_) => "c",
            Operation::Update => "u",
            Operation::Delete => "d",
            Operation::Snapshot => "r",
        };
        let ts = event.source.cluster_time.unwrap_or(Timestamp {
            time: 0,
            increment: 0,
        });
        let namespace = event.namespace.clone().unwrap_or(Namespace {
            db: String::new(),
            coll: None,
        });
        Self {
            op,
            after: event
                .full_document
                .as_ref()
                .map(|d| extjson::to_string(d, dialect)),
            update: (event.operation == Operation::Update).then(|| {
                (
                    extjson::to_string(&event.updated_fields, dialect),
                    event.removed_fields.clone(),
                    event.truncated_arrays.clone(),
                )
            }),
            db: namespace.db,
            collection: namespace.coll.unwrap_or_default(),
            ts_ms: i64::from(ts.time) * 1000,
            ord: i32::try_from(ts.increment).unwrap_or(i32::MAX),
            wall_time: event.source.wall_time.map(|at| at.timestamp_millis()),
            snapshot: (event.operation == Operation::Snapshot).then(|| "true".to_owned()),
        }
    }
}
