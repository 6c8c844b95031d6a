//! The processor API: what a processor implements and what it can touch.

use std::borrow::Cow;
use std::sync::Arc;

use apache_avro::types::Value as Avro;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::record::RawRecord;
use super::store::{StoreWrite, Stores};
use super::topology::Topology;
use crate::cdc::CdcRecord;

/// A decoded input record's value, by its topic's declared format.
#[derive(Debug, Clone, PartialEq)]
#[allow(
    clippy::large_enum_variant,
    reason = "CDC changes are the common payload; boxing would allocate per record"
)]
pub enum Payload {
    /// A CDC record (change or tombstone).
    Cdc(CdcRecord),
    /// A JSON value (`None` for a null value).
    Json(Option<serde_json::Value>),
    /// A generic Avro value resolved through the registry (`None` for a null value).
    Avro(Option<Avro>),
}

/// One input record as the processor sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Input<'a> {
    /// Source topic.
    pub topic: &'a str,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// The record's timestamp, epoch milliseconds.
    pub timestamp_ms: Option<i64>,
    /// The raw key.
    pub key: Option<&'a [u8]>,
    /// The record's headers, in order (CloudEvents binary mode carries its attributes here).
    pub headers: &'a [(String, Vec<u8>)],
    /// The decoded value.
    pub payload: Payload,
}

impl<'a> Input<'a> {
    /// `record` as the processor sees it, with its decoded value.
    pub(crate) fn of(record: &'a RawRecord, payload: Payload) -> Self {
        Self {
            topic: &record.topic,
            partition: record.partition,
            offset: record.offset,
            timestamp_ms: record.timestamp_ms,
            key: record.key.as_deref(),
            headers: &record.headers,
            payload,
        }
    }
}

/// A value to write to an output topic; the runtime serializes it.
#[derive(Debug, Clone, PartialEq)]
pub enum OutValue {
    /// Avro with this writer schema (JSON text), registered under `<topic>-value` and
    /// Confluent-framed.
    Avro {
        /// The writer schema.
        schema: Arc<str>,
        /// The value.
        value: Avro,
    },
    /// JSON, written as text.
    Json(serde_json::Value),
    /// JSON text written already: a sink record's canonical Extended JSON ([`sink_document`]).
    JsonText(String),
}

impl OutValue {
    /// The bytes of a JSON value; `None` for Avro, which the registry frames
    /// ([`super::codec::AvroCodec::encode`]).
    pub fn json_bytes(&self) -> Option<Vec<u8>> {
        match self {
            Self::Json(json) => Some(serde_json::to_vec(json).expect("BUG: JSON serializes")),
            Self::JsonText(text) => Some(text.as_bytes().to_vec()),
            Self::Avro { .. } => None,
        }
    }

    /// The value as JSON (`None` for Avro): what a test reads an output as.
    ///
    /// # Panics
    /// When JSON text is not JSON (a bug of whoever wrote it).
    pub fn to_json(&self) -> Option<serde_json::Value> {
        match self {
            Self::Json(json) => Some(json.clone()),
            Self::JsonText(text) => {
                Some(serde_json::from_str(text).expect("BUG: JSON text that is not JSON"))
            }
            Self::Avro { .. } => None,
        }
    }
}

/// A record a processor emits: keyed by the target document's id; no value is a tombstone.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputRecord {
    /// Destination topic (one of the topology's outputs).
    pub topic: String,
    /// Key (the target document's id).
    pub key: String,
    /// Value; `None` deletes the key downstream.
    pub value: Option<OutValue>,
}

/// Why a processor could not process a record.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProcessError {
    /// The record is bad (valid encoding, invalid content): it goes to the DLQ and processing
    /// continues.
    #[error("{0}")]
    Poison(String),
    /// A bug or a misconfiguration: the processor stops and exits non-zero.
    #[error("{0}")]
    Fatal(String),
}

impl From<crate::cdc::DecodeError> for ProcessError {
    /// A change record that decoded but cannot be folded (no `_id`, no document) is poison.
    fn from(error: crate::cdc::DecodeError) -> Self {
        Self::Poison(error.to_string())
    }
}

impl From<crate::events::NotAnEvent> for ProcessError {
    /// A record of a CloudEvents topic that is no CloudEvent is poison.
    fn from(error: crate::events::NotAnEvent) -> Self {
        Self::Poison(error.to_string())
    }
}

/// A store on disk that cannot be read: fatal (the runner stops; a restart reads the state again
/// from the last checkpoint and the changelog).
fn disk_failed(store: &str, error: &crate::streams::disk::DiskError) -> ProcessError {
    ProcessError::Fatal(format!("store {store}: {error}"))
}

/// A processor: a pure function of (input, state) → outputs. It does no I/O.
pub trait Processor: Send {
    /// What it reads, writes and stores.
    fn topology(&self) -> Topology;

    /// Handles one record of a stream input. Store writes and emitted records take effect only
    /// when this returns `Ok`.
    fn process(&mut self, input: Input<'_>, ctx: &mut Context<'_>) -> Result<(), ProcessError>;

    /// Keeps a global table: handles one record of a global input ([`Topology::global`]),
    /// writing only global stores and emitting nothing. Runs once per instance, outside any
    /// task and transaction, so it must do nothing but fold the record into the table.
    ///
    /// # Errors
    /// Poison is logged and skipped (the topic is the table's log; there is no transaction to
    /// dead-letter in); fatal stops the processor.
    fn process_global(&self, input: Input<'_>, ctx: &mut Context<'_>) -> Result<(), ProcessError> {
        let _ = (input, ctx);
        Err(ProcessError::Fatal(
            "BUG: a global input without process_global".into(),
        ))
    }

    /// A global table changed: `key` of the global store `store` was written. Runs in every
    /// task, in its transaction (it may read and write the task's stores and emit), after the
    /// change is visible: the place to act on what waited for it. Changes that land while a
    /// task is not running are not replayed to it; [`Processor::resumed`] covers them.
    ///
    /// # Errors
    /// Any error stops the processor (there is no record to dead-letter).
    fn global_changed(
        &mut self,
        store: &str,
        key: &str,
        ctx: &mut Context<'_>,
    ) -> Result<(), ProcessError> {
        let _ = (store, key, ctx);
        Ok(())
    }

    /// The task's stores were restored and the global tables are current: act on what became
    /// possible while the task was not running (a global table change it did not hear of).
    ///
    /// # Errors
    /// Any error stops the processor.
    fn resumed(&mut self, ctx: &mut Context<'_>) -> Result<(), ProcessError> {
        let _ = ctx;
        Ok(())
    }
}

/// What a processor may touch while handling a record: its stores (reads see the record's own
/// earlier writes), the global stores (read only) and its output topics. Keeping a global table,
/// it is the other way round: the global stores are its stores, and it emits nothing.
pub struct Context<'a> {
    pub(crate) topology: &'a Topology,
    pub(crate) stores: &'a Stores,
    globals: Option<&'a Stores>,
    keeping_global: bool,
    pub(crate) writes: Vec<StoreWrite>,
    pub(crate) outputs: Vec<OutputRecord>,
    pub(crate) broadcasts: Vec<OutputRecord>,
}

impl<'a> Context<'a> {
    pub(crate) fn new(topology: &'a Topology, stores: &'a Stores) -> Self {
        Self {
            topology,
            stores,
            globals: None,
            keeping_global: false,
            writes: Vec::new(),
            outputs: Vec::new(),
            broadcasts: Vec::new(),
        }
    }

    /// A task's context that can also read the global stores.
    pub(crate) fn with_globals(mut self, globals: Option<&'a Stores>) -> Self {
        self.globals = globals;
        self
    }

    /// The context of [`Processor::process_global`]: `globals` are the writable stores.
    pub(crate) fn keeping_global(topology: &'a Topology, globals: &'a Stores) -> Self {
        Self {
            keeping_global: true,
            ..Self::new(topology, globals)
        }
    }

    /// A declared store: the task's, else a global one.
    fn store(&self, store: &str) -> Result<&'a crate::streams::store::Store, ProcessError> {
        self.stores
            .get(store)
            .or_else(|| self.globals.and_then(|globals| globals.get(store)))
            .ok_or_else(|| undeclared("store", store))
    }

    /// The raw value under `key` in `store`.
    ///
    /// # Errors
    /// [`ProcessError::Fatal`] when the store is not declared.
    pub fn get(&self, store: &str, key: &str) -> Result<Option<Cow<'_, [u8]>>, ProcessError> {
        let committed = self.store(store)?;
        match self
            .writes
            .iter()
            .rev()
            .find(|w| w.store == store && w.key == key)
        {
            Some(write) => Ok(write.value.as_deref().map(Cow::Borrowed)),
            None => committed.get(key).map_err(|e| disk_failed(store, &e)),
        }
    }

    /// Every entry of `store` whose key starts with `prefix`, in key order, as this record's own
    /// earlier writes left them. For secondary indexes kept as composite keys
    /// (`<user id>|<document key>`).
    ///
    /// # Errors
    /// [`ProcessError::Fatal`] when the store is not declared.
    pub fn scan_prefix(
        &self,
        store: &str,
        prefix: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, ProcessError> {
        self.scan_prefix_after(store, prefix, None, usize::MAX)
    }

    /// Up to `limit` entries of `store` whose keys start with `prefix` and sort after `after`
    /// (from the first when `None`), in key order, as this record's own earlier writes left
    /// them: walks a long index a chunk at a time, each chunk costing its own length.
    ///
    /// # Errors
    /// [`ProcessError::Fatal`] when the store is not declared.
    pub fn scan_prefix_after(
        &self,
        store: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, ProcessError> {
        let committed = self.store(store)?;
        let mut own: std::collections::BTreeMap<&str, Option<&Vec<u8>>> = Default::default();
        for write in &self.writes {
            if write.store == store
                && write.key.starts_with(prefix)
                && after.is_none_or(|after| write.key.as_str() > after)
            {
                own.insert(&write.key, write.value.as_ref());
            }
        }
        let mut committed = committed.range_prefix_after(prefix, after).peekable();
        let mut own = own.into_iter().peekable();
        let mut entries = Vec::new();
        // A merge of the two ordered sequences; this record's write wins over the committed
        // value of the same key, and a deletion hides it.
        while entries.len() < limit {
            if let Some(Err(_)) = committed.peek() {
                let error = committed.next().expect("peeked").expect_err("an error");
                return Err(disk_failed(store, &error));
            }
            let next_committed = committed.peek().map(|entry| match entry {
                Ok((key, _)) => key.as_ref(),
                Err(_) => unreachable!("BUG: errors are returned above"),
            });
            let take_committed = match (next_committed, own.peek()) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some(c), Some((o, _))) if c < *o => true,
                (Some(c), Some((o, _))) => {
                    if c == *o {
                        committed.next();
                    }
                    false
                }
            };
            if take_committed {
                let (key, value) = committed.next().expect("peeked").expect("not an error");
                entries.push((key.into_owned(), value.into_owned()));
            } else if let (key, Some(value)) = own.next().expect("peeked") {
                entries.push((key.to_owned(), value.clone()));
            }
        }
        Ok(entries)
    }

    /// The JSON value under `key` in `store`, deserialized.
    ///
    /// # Errors
    /// Fatal when the store is undeclared or holds something that does not deserialize (state is
    /// only ever written by this processor, so that is a bug).
    pub fn get_json<T: DeserializeOwned>(
        &self,
        store: &str,
        key: &str,
    ) -> Result<Option<T>, ProcessError> {
        self.get(store, key)?
            .map(|bytes| {
                serde_json::from_slice(&bytes).map_err(|e| {
                    ProcessError::Fatal(format!("store {store} key {key}: unreadable value: {e}"))
                })
            })
            .transpose()
    }

    /// The document under `key` in a table store (written by [`Context::put_document`], or the
    /// runtime's table of a CDC input).
    ///
    /// # Errors
    /// As [`Context::get_json`].
    pub fn get_document(
        &self,
        store: &str,
        key: &str,
    ) -> Result<Option<bson::Document>, ProcessError> {
        self.get(store, key)?
            .map(|bytes| {
                crate::streams::stored::read_document(key, &bytes).map_err(|e| {
                    ProcessError::Fatal(format!(
                        "store {store} key {key}: unreadable document: {e}"
                    ))
                })
            })
            .transpose()
    }

    /// Writes `document` under `key` in `store`, in the stored form of documents
    /// ([`crate::streams::stored::document_value`]), which [`Context::get_document`] reads.
    ///
    /// # Errors
    /// Fatal when the store is undeclared.
    pub fn put_document(
        &mut self,
        store: &str,
        key: &str,
        document: &bson::Document,
    ) -> Result<(), ProcessError> {
        let value = crate::streams::stored::document_value(key, document);
        self.write(store, key, Some(value))
    }

    /// Writes `value` as JSON under `key` in `store`.
    ///
    /// # Errors
    /// Fatal when the store is undeclared or the value does not serialize.
    pub fn put_json<T: Serialize>(
        &mut self,
        store: &str,
        key: &str,
        value: &T,
    ) -> Result<(), ProcessError> {
        let bytes = serde_json::to_vec(value)
            .map_err(|e| ProcessError::Fatal(format!("store {store}: {e}")))?;
        self.write(store, key, Some(bytes))
    }

    /// Writes raw bytes under `key` in `store` (index entries kept by the processor itself).
    ///
    /// # Errors
    /// Fatal when the store is undeclared.
    pub fn write_raw(
        &mut self,
        store: &str,
        key: &str,
        value: Vec<u8>,
    ) -> Result<(), ProcessError> {
        self.write(store, key, Some(value))
    }

    /// Deletes `key` from `store`.
    ///
    /// # Errors
    /// Fatal when the store is undeclared.
    pub fn delete(&mut self, store: &str, key: &str) -> Result<(), ProcessError> {
        self.write(store, key, None)
    }

    pub(crate) fn write(
        &mut self,
        store: &str,
        key: &str,
        value: Option<Vec<u8>>,
    ) -> Result<(), ProcessError> {
        if self.stores.get(store).is_none() {
            if self
                .globals
                .and_then(|globals| globals.get(store))
                .is_some()
            {
                return Err(ProcessError::Fatal(format!(
                    "BUG: the global store {store} is written only by process_global"
                )));
            }
            return Err(undeclared("store", store));
        }
        if let Some(index) = self.topology.index_named(store) {
            return Err(ProcessError::Fatal(format!(
                "BUG: the index {store} is kept by the runtime from {}",
                index.of
            )));
        }
        // The store's indexes follow in the same record, so its later reads see them moved.
        let mut listed = Vec::new();
        let mut indexes = self.topology.indexes_of(store).peekable();
        let old = match indexes.peek() {
            Some(_) => self.get(store, key)?,
            None => None,
        };
        for index in indexes {
            let changes = index
                .changes(key, old.as_deref(), value.as_deref())
                .map_err(|error| ProcessError::Fatal(error.to_string()))?;
            listed.extend(changes.into_iter().map(|(entry, present)| StoreWrite {
                store: index.name.clone(),
                key: entry,
                value: present.then(Vec::new),
            }));
        }
        self.writes.push(StoreWrite {
            store: store.to_owned(),
            key: key.to_owned(),
            value,
        });
        self.writes.extend(listed);
        Ok(())
    }

    /// Emits a record to one of the topology's output topics.
    ///
    /// # Errors
    /// Fatal when the topic is not a declared output.
    pub fn emit(&mut self, record: OutputRecord) -> Result<(), ProcessError> {
        if self.keeping_global {
            return Err(ProcessError::Fatal(format!(
                "BUG: keeping a global table emits nothing (tried {})",
                record.topic
            )));
        }
        if !self.topology.outputs.contains(&record.topic) {
            return Err(undeclared("output topic", &record.topic));
        }
        self.outputs.push(record);
        Ok(())
    }

    /// Emits a record to every partition of one of the topology's repartition topics
    /// ([`Topology::repartition`]): every task reads it. For rare records that concern whatever
    /// each task holds (a user's deletion, when the tasks hold clinics).
    ///
    /// # Errors
    /// Fatal when the topic is not a declared repartition topic.
    pub fn broadcast(&mut self, record: OutputRecord) -> Result<(), ProcessError> {
        if self.keeping_global || !self.topology.is_repartition(&record.topic) {
            return Err(undeclared("repartition topic", &record.topic));
        }
        self.broadcasts.push(record);
        Ok(())
    }
}

fn undeclared(what: &str, name: &str) -> ProcessError {
    ProcessError::Fatal(format!(
        "BUG: {what} {name} is not declared in the topology"
    ))
}

/// The key of a record for a MongoDB sink connector: `{"_id": <the id in canonical Extended
/// JSON>}`, which its ProvidedInKeyStrategy reads, so a tombstone can delete
/// (`connectors/README.md`).
pub fn sink_key(id: &bson::Bson) -> String {
    format!(
        r#"{{"_id":{}}}"#,
        crate::cdc::extjson::canonical_value_text(id)
    )
}

/// A record for a MongoDB sink connector: `document` (canonical Extended JSON, so ObjectIds and
/// dates keep their types) on `topic`, keyed by `id` ([`sink_key`]).
pub fn sink_document(topic: &str, id: &bson::Bson, document: &bson::Document) -> OutputRecord {
    OutputRecord {
        topic: topic.to_owned(),
        key: sink_key(id),
        value: Some(OutValue::JsonText(crate::cdc::extjson::canonical_text(
            document,
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_id_sink_key_is_its_canonical_extended_json() {
        let id = bson::Bson::ObjectId(bson::oid::ObjectId::new());

        assert_eq!(
            sink_key(&id),
            serde_json::json!({ "_id": id.clone().into_canonical_extjson() }).to_string()
        );
    }

    #[test]
    fn a_chunked_scan_merges_this_records_writes_and_resumes_after_its_cursor() {
        let topology = Topology::new("t").store("s");
        let mut stores = Stores::new(&topology.stores);
        for key in ["a|1", "a|2", "a|4", "a|5", "b|1"] {
            stores
                .get_mut("s")
                .expect("declared")
                .apply(key, Some(key.as_bytes()));
        }
        let mut ctx = Context::new(&topology, &stores);
        ctx.delete("s", "a|2").expect("declared");
        ctx.write_raw("s", "a|3", b"new".to_vec())
            .expect("declared");
        ctx.write_raw("s", "a|4", b"changed".to_vec())
            .expect("declared");
        let keys = |entries: Vec<(String, Vec<u8>)>| -> Vec<String> {
            entries
                .into_iter()
                .map(|(k, v)| format!("{k}={}", String::from_utf8(v).expect("text")))
                .collect()
        };
        let first = ctx.scan_prefix_after("s", "a|", None, 2).expect("scans");
        assert_eq!(keys(first), ["a|1=a|1", "a|3=new"]);
        let rest = ctx
            .scan_prefix_after("s", "a|", Some("a|3"), 10)
            .expect("scans");
        assert_eq!(keys(rest), ["a|4=changed", "a|5=a|5"]);
        assert_eq!(ctx.scan_prefix("s", "a|").expect("scans").len(), 4);
        assert!(
            ctx.scan_prefix_after("s", "a|", Some("a|5"), 10)
                .expect("scans")
                .is_empty()
        );
    }
}
