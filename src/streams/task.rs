//! One processor and its stores, handling one record at a time: decode, materialize or process,
//! then commit the record's writes or dead-letter it. Pure: the runner does the Kafka I/O
//! around it, the test driver calls it directly.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use apache_avro::types::Value as Avro;

use super::dlq;
use super::metrics::IGNORED;
use super::processor::{Context, Input, OutputRecord, Payload, ProcessError, Processor};
use super::record::{ProducedRecord, RawRecord};
use super::store::{StoreWrite, Stores, table_key};
use super::topology::{IndexError, InputFormat, InputKind, Topology};
use crate::cdc::{self, CdcRecord, Encoding, Operation};

/// What handling one record produced, to be written in one transaction with the input's offset.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Outcome {
    /// Records for the output topics (serialized by the runner).
    pub outputs: Vec<OutputRecord>,
    /// Records for every partition of a repartition topic ([`Context::broadcast`]).
    pub broadcasts: Vec<OutputRecord>,
    /// Changelog records of the store writes.
    pub changelog: Vec<ProducedRecord>,
    /// The dead-letter record, when the input was poison (then there is nothing else).
    pub dead_letter: Option<ProducedRecord>,
}

/// A failure that must stop the processor.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("fatal error on {topic}/{partition}@{offset}: {message}")]
pub struct FatalError {
    /// Source topic of the record being handled.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// What went wrong.
    pub message: String,
}

/// A changelog record a task's stores cannot take while restoring (fatal: the changelog is of
/// another topology, or an index cannot read its store's values).
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// No store (or index) of that name.
    #[error("no store {0}")]
    UnknownStore(String),
    /// An index of the store could not read the value.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// The store on disk could not be read or written.
    #[error(transparent)]
    Disk(#[from] crate::streams::disk::DiskError),
}

/// What the runner resolved through the registry for a record of an Avro topic.
#[derive(Debug, Clone, PartialEq)]
pub enum AvroResolved {
    /// A CDC topic's key and value as the JSON its envelope readers take, read straight from
    /// the Avro bodies ([`crate::cdc::avro_json`]).
    Cdc {
        /// The key, when the topic's keys are Avro too.
        key: Option<serde_json::Value>,
        /// The value (`None` for a tombstone).
        value: Option<cdc::AvroValue>,
    },
    /// A generic Avro value (`None` for a tombstone): a plain Avro topic's, or a CDC topic's
    /// value handed over as such (the test driver's), read as JSON when decoded.
    Generic {
        /// The key, when the topic's keys are Avro too.
        key: Option<Avro>,
        /// The value.
        value: Option<Avro>,
    },
}

impl AvroResolved {
    /// Key and value as the envelope readers take them.
    fn into_values(self) -> (Option<serde_json::Value>, Option<cdc::AvroValue>) {
        match self {
            Self::Cdc { key, value } => (key, value),
            Self::Generic { key, value } => (
                key.map(cdc::avro_json::into_json),
                value.map(|value| cdc::AvroValue::Json(cdc::avro_json::into_json(value))),
            ),
        }
    }
}

/// A processor with its topology and stores.
pub struct Task<P> {
    processor: P,
    topology: Topology,
    stores: Stores,
    /// The instance's global stores (read only here), when the topology has global inputs.
    globals: Option<SharedStores>,
}

impl<P: Processor> Task<P> {
    /// A task with empty stores (restore fills them through [`Task::restore`]).
    pub fn new(processor: P) -> Self {
        let topology = processor.topology();
        let stores = Stores::new(topology.task_stores());
        Self {
            processor,
            topology,
            stores,
            globals: None,
        }
    }

    /// Keeps the stores `on_disk` names in the instance's database `db`, as task `task`'s: they
    /// hold what was flushed to disk before (see [`Task::checkpoint`]); the others start empty
    /// in memory.
    ///
    /// # Errors
    /// The database cannot be read.
    pub fn with_state(
        mut self,
        db: &crate::streams::disk::StateDb,
        task: i32,
        on_disk: impl Fn(&str) -> bool,
    ) -> Result<Self, crate::streams::disk::DiskError> {
        self.stores = Stores::open(self.topology.task_stores(), on_disk, db, task)?;
        Ok(self)
    }

    /// The changelog offset from which `store` must be restored: what its disk copy holds up to
    /// (`0`: everything, as for a store in memory).
    ///
    /// # Errors
    /// The database cannot be read.
    pub fn checkpoint(&self, store: &str) -> Result<i64, crate::streams::disk::DiskError> {
        self.stores.checkpoint(store)
    }

    /// Writes the stores' pending writes to disk with, per store, the changelog offset they
    /// now reflect (`next_offset(store)`: the offset after their last changelog record, known
    /// once a commit or a restore's read went through): after each commit, and in batches
    /// while restoring. Stores in memory are untouched.
    ///
    /// # Errors
    /// The database cannot be written.
    pub fn flush(
        &mut self,
        next_offset: impl Fn(&str) -> Option<i64>,
    ) -> Result<(), crate::streams::disk::DiskError> {
        // An index is checkpointed with the store it indexes: a disk store whose index has no
        // checkpoint gained that index since it was written, and is rebuilt whole.
        let offsets: BTreeMap<String, i64> = self
            .stores
            .on_disk()
            .filter_map(|store| {
                let logged = self.topology.index_named(store).map_or(store, |i| &i.of);
                Some((store.to_owned(), next_offset(logged)?))
            })
            .collect();
        self.stores.flush(&offsets)
    }

    /// Writes held for the disk stores until the next [`Task::flush`].
    pub fn pending_writes(&self) -> usize {
        self.stores.pending()
    }

    /// Lets the task read the instance's global stores.
    #[must_use]
    pub fn with_globals(mut self, globals: SharedStores) -> Self {
        self.globals = Some(globals);
        self
    }

    /// The processor.
    pub fn processor(&self) -> &P {
        &self.processor
    }

    /// Scopes the task's changelogs to an application id (see [`Topology::with_application_id`]).
    #[must_use]
    pub fn with_application_id(mut self, id: Option<String>) -> Self {
        self.topology = self.topology.with_application_id(id);
        self
    }

    /// The processor's topology.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The stores, for inspection.
    pub fn stores(&self) -> &Stores {
        &self.stores
    }

    /// Applies one changelog record to its store, during restore.
    ///
    /// # Errors
    /// When the store is unknown, or an index of it cannot read the value.
    pub fn restore(
        &mut self,
        store: &str,
        key: &str,
        value: Option<&[u8]>,
    ) -> Result<(), RestoreError> {
        let target = self
            .stores
            .get_mut(store)
            .ok_or_else(|| RestoreError::UnknownStore(store.to_owned()))?;
        let mut listed = Vec::new();
        for index in self.topology.indexes_of(store) {
            let old = target.get(key).map_err(RestoreError::Disk)?;
            let changes = index.changes(key, old.as_deref(), value)?;
            listed.extend(changes.into_iter().map(|change| (&index.name, change)));
        }
        target.apply(key, value);
        for (index, (entry, present)) in listed {
            self.stores
                .get_mut(index)
                .ok_or_else(|| RestoreError::UnknownStore(index.clone()))?
                .apply(&entry, present.then_some(&[][..]));
        }
        Ok(())
    }

    /// Handles one record. `avro` carries what the runner resolved through the registry for an
    /// Avro topic; JSON topics are decoded here.
    ///
    /// # Errors
    /// [`FatalError`] when the processor reports a bug or the record's topic is not an input.
    pub fn handle(
        &mut self,
        record: &RawRecord,
        avro: Option<AvroResolved>,
    ) -> Result<Outcome, FatalError> {
        let fatal = |message: String| FatalError {
            topic: record.topic.clone(),
            partition: record.partition,
            offset: record.offset,
            message,
        };
        let input = self.topology.input(&record.topic).ok_or_else(|| {
            fatal(format!(
                "BUG: {} is not an input of {}",
                record.topic, self.topology.name
            ))
        })?;
        // Only what the match below needs, so the processor can borrow `self` mutably.
        let (format, fields) = (input.format, input.fields);
        let table = match &input.kind {
            InputKind::Table { store } => Some(store.clone()),
            // `input` never answers a global input: the global thread reads those.
            InputKind::Stream | InputKind::Global { .. } => None,
        };
        let payload = match decode(format, fields, record, avro) {
            Ok(Some(payload)) => payload,
            Ok(None) => return Ok(Outcome::default()),
            Err(error) => return Ok(self.dead_letter(record, &error.to_string())),
        };
        let result = self.attempt(|processor, ctx| match (table, payload) {
            (Some(store), Payload::Cdc(change)) => materialize(ctx, &store, change),
            (Some(_), _) => Err(ProcessError::Fatal(
                "BUG: a table input must be a CDC topic".into(),
            )),
            (None, payload) => processor.process(Input::of(record, payload), ctx),
        });
        match result {
            Ok(outcome) => Ok(outcome),
            Err(ProcessError::Poison(message)) => Ok(self.dead_letter(record, &message)),
            Err(ProcessError::Fatal(message)) => Err(fatal(message)),
        }
    }

    /// Tells the processor that global tables changed (`(store, key)` written, in order), as
    /// [`Processor::global_changed`] in this task.
    ///
    /// # Errors
    /// [`FatalError`] when the processor fails (there is no record to dead-letter).
    pub fn global_changed(&mut self, changed: &[(String, String)]) -> Result<Outcome, FatalError> {
        let mut outcome = Outcome::default();
        for (store, key) in changed {
            let part = self.step(&format!("global store {store}"), |processor, ctx| {
                processor.global_changed(store, key, ctx)
            })?;
            outcome.outputs.extend(part.outputs);
            outcome.broadcasts.extend(part.broadcasts);
            outcome.changelog.extend(part.changelog);
        }
        Ok(outcome)
    }

    /// [`Processor::resumed`], once the task's stores are restored.
    ///
    /// # Errors
    /// [`FatalError`] when the processor fails.
    pub fn resumed(&mut self) -> Result<Outcome, FatalError> {
        self.step("resuming", |processor, ctx| processor.resumed(ctx))
    }

    /// Runs one step of the processor that no input record caused, committing its writes.
    fn step(
        &mut self,
        what: &str,
        run: impl FnOnce(&mut P, &mut Context<'_>) -> Result<(), ProcessError>,
    ) -> Result<Outcome, FatalError> {
        self.attempt(run).map_err(|error| FatalError {
            topic: format!("({what})"),
            partition: -1,
            offset: -1,
            message: error.to_string(),
        })
    }

    /// Runs `run` with a context over the task's stores (and the global ones, read only), and
    /// commits its writes when it succeeds.
    fn attempt(
        &mut self,
        run: impl FnOnce(&mut P, &mut Context<'_>) -> Result<(), ProcessError>,
    ) -> Result<Outcome, ProcessError> {
        let globals = self.globals.as_ref().map(|g| read(g));
        let mut ctx = Context::new(&self.topology, &self.stores).with_globals(globals.as_deref());
        run(&mut self.processor, &mut ctx)?;
        let Context {
            writes,
            outputs,
            broadcasts,
            ..
        } = ctx;
        drop(globals);
        let mut outcome = self.commit(writes, outputs);
        outcome.broadcasts = broadcasts;
        Ok(outcome)
    }

    /// The outcome for a record the runner could not even hand over (undecodable Avro: bad magic
    /// byte, unknown schema id): its dead letter.
    pub fn dead_letter(&self, record: &RawRecord, message: &str) -> Outcome {
        Outcome {
            dead_letter: Some(dlq::dead_letter(
                &self.topology.dlq_topic(),
                &self.topology.name,
                record,
                message,
            )),
            ..Outcome::default()
        }
    }

    fn commit(&mut self, writes: Vec<StoreWrite>, outputs: Vec<OutputRecord>) -> Outcome {
        let mut changelog = Vec::with_capacity(writes.len());
        for write in writes {
            self.stores
                .get_mut(&write.store)
                .expect("BUG: writes are checked against declared stores")
                .apply(&write.key, write.value.as_deref());
            if self.topology.index_named(&write.store).is_some() {
                // Rebuilt from its store's changelog on restore.
                continue;
            }
            changelog.push(ProducedRecord {
                topic: self.topology.changelog_topic(&write.store),
                key: Some(write.key.into_bytes()),
                value: write.value,
                headers: Vec::new(),
            });
        }
        Outcome {
            outputs,
            changelog,
            ..Outcome::default()
        }
    }
}

/// The global stores of an instance: written by the global thread, read by every task.
pub type SharedStores = Arc<RwLock<Stores>>;

/// Reads shared stores (a writer that panicked left whole entries: the lock's poison is ignored).
pub(crate) fn read(stores: &SharedStores) -> std::sync::RwLockReadGuard<'_, Stores> {
    crate::sync::read(stores)
}

/// A record's payload by its topic's format; `None` for a collection-level change event (drop,
/// rename, invalidate, …): about no document, so nothing for a table or a processor, and not
/// poison either. `Err` is why the record is poison.
pub(crate) fn decode(
    format: InputFormat,
    fields: Option<&[&str]>,
    record: &RawRecord,
    avro: Option<AvroResolved>,
) -> Result<Option<Payload>, cdc::DecodeError> {
    let payload = decode_payload(format, fields, record, avro)?;
    if let Payload::Cdc(CdcRecord::Change(event)) = &payload
        && let Operation::Other(operation) = &event.operation
    {
        ::metrics::counter!(IGNORED, "topic" => record.topic.clone(), "operation" => operation.clone())
            .increment(1);
        tracing::debug!(topic = %record.topic, operation, "Collection-level change event skipped.");
        return Ok(None);
    }
    Ok(Some(payload))
}

fn decode_payload(
    format: InputFormat,
    fields: Option<&[&str]>,
    record: &RawRecord,
    avro: Option<AvroResolved>,
) -> Result<Payload, cdc::DecodeError> {
    let key = record.key.as_deref();
    let value = record.value.as_deref();
    match format {
        InputFormat::Cdc(cdc_format) => match cdc_format.encoding {
            Encoding::Json => cdc::decode_json_fields(cdc_format.envelope, key, value, fields),
            Encoding::Avro => {
                let (key, value) = avro.map(AvroResolved::into_values).unwrap_or_default();
                cdc::decode_avro_value_fields(cdc_format.envelope, key, value, fields)
            }
        }
        .map(Payload::Cdc),
        InputFormat::Json => value
            .map(cdc::parse_json_text)
            .transpose()
            .map(Payload::Json),
        InputFormat::Avro => match avro {
            None => Ok(Payload::Avro(None)),
            Some(AvroResolved::Generic { value, .. }) => Ok(Payload::Avro(value)),
            Some(AvroResolved::Cdc { .. }) => Err(cdc::DecodeError::Type {
                field: "value",
                expected: "a generic Avro value (BUG: resolved as a CDC record)",
            }),
        },
    }
}

/// Keeps a CDC table: each document under its `_id`, as [`cdc::next_document`] folds it.
fn materialize(ctx: &mut Context<'_>, store: &str, change: CdcRecord) -> Result<(), ProcessError> {
    let key = table_key(change.document_id()?);
    match cdc::next_document(change, || ctx.get_document(store, &key))? {
        cdc::Next::Keep => Ok(()),
        cdc::Next::Gone => ctx.delete(store, &key),
        cdc::Next::Becomes(document) => ctx.put_document(store, &key, &document),
    }
}

#[cfg(test)]
mod tests {
    use bson::doc;
    use serde_json::{Value, json};

    use super::*;
    use crate::streams::InputFormat;
    use crate::streams::driver::TestDriver;
    use crate::streams::processor::OutValue;
    use crate::streams::store::KeyValueStore;

    /// People by id, indexed by user; each record may ask how many people a user has, which it
    /// answers from the index after its own write.
    struct Roster;

    fn by_user(
        key: &str,
        value: &[u8],
    ) -> Result<Vec<String>, crate::streams::stored::StoredError> {
        let fields = crate::streams::stored::document_fields(key, value, &["userId"])?;
        Ok(fields
            .get_str("userId")
            .map(|user| vec![format!("{user}|{key}")])
            .unwrap_or_default())
    }

    impl Processor for Roster {
        fn topology(&self) -> Topology {
            Topology::new("roster")
                .stream("people", InputFormat::Json)
                .store("people")
                .index("by_user", "people", by_user)
                .output("counts")
        }

        fn process(&mut self, input: Input<'_>, ctx: &mut Context<'_>) -> Result<(), ProcessError> {
            let Payload::Json(Some(value)) = input.payload else {
                return Ok(());
            };
            let id = value["id"].as_str().unwrap_or_default();
            match value.get("user").and_then(Value::as_str) {
                Some(user) => ctx.put_document("people", id, &doc! {"userId": user})?,
                None if value.get("index").is_some() => ctx.write_raw("by_user", id, Vec::new())?,
                None => ctx.delete("people", id)?,
            }
            if let Some(asked) = value.get("ask").and_then(Value::as_str) {
                let count = ctx.scan_prefix("by_user", &format!("{asked}|"))?.len();
                ctx.emit(OutputRecord {
                    topic: "counts".into(),
                    key: asked.into(),
                    value: Some(OutValue::Json(json!(count))),
                })?;
            }
            Ok(())
        }
    }

    fn pipe(driver: &mut TestDriver<Roster>, value: Value) -> Result<(), FatalError> {
        driver.pipe("people", None, Some(value.to_string().as_bytes()))
    }

    fn keys(store: &KeyValueStore) -> Vec<&str> {
        store.iter().map(|(key, _)| key).collect()
    }

    #[test]
    fn an_index_follows_its_store_within_the_record_and_has_no_changelog() {
        let mut driver = TestDriver::new(Roster);
        for value in [
            json!({"id": "p1", "user": "u1", "ask": "u1"}),
            json!({"id": "p2", "user": "u1", "ask": "u1"}),
            json!({"id": "p1", "user": "u2", "ask": "u1"}),
            json!({"id": "p2", "ask": "u1"}),
        ] {
            pipe(&mut driver, value).expect("handles");
        }
        let counts: Vec<Value> = driver
            .read_output("counts")
            .into_iter()
            .map(|r| match r.value {
                Some(OutValue::Json(count)) => count,
                other => panic!("a count, not {other:?}"),
            })
            .collect();
        assert_eq!(counts, [json!(1), json!(2), json!(1), json!(0)]);
        assert_eq!(keys(driver.store("by_user")), ["u2|p1"]);
        assert!(
            driver
                .changelog()
                .iter()
                .all(|r| r.topic == "roster.people.changelog"),
            "only the store is logged"
        );
        // The document is stored as BSON and read back as written.
        let stored = driver.store("people").get("p1").expect("stored");
        assert_eq!(
            crate::streams::stored::read_document("p1", stored).expect("reads"),
            doc! {"userId": "u2"}
        );
    }

    #[test]
    fn a_restore_rebuilds_the_index_from_the_store_including_extended_json_values() {
        let mut driver = TestDriver::new(Roster);
        // A document as earlier versions stored it: canonical Extended JSON text.
        driver.preload("people", "p0", br#"{"userId": "u0"}"#);
        for value in [
            json!({"id": "p1", "user": "u1"}),
            json!({"id": "p2", "user": "u1"}),
            json!({"id": "p1", "user": "u2"}),
            json!({"id": "p3", "user": "u3"}),
            json!({"id": "p3"}),
        ] {
            pipe(&mut driver, value).expect("handles");
        }
        assert_eq!(keys(driver.store("by_user")), ["u0|p0", "u1|p2", "u2|p1"]);
        driver.restart_task(Roster).expect("restarts");
        // p0 was preloaded, not logged: the restored store lacks it, and so does its index.
        assert_eq!(keys(driver.store("people")), ["p1", "p2"]);
        assert_eq!(keys(driver.store("by_user")), ["u1|p2", "u2|p1"]);
    }

    #[test]
    fn an_index_is_written_by_the_runtime_only_and_an_unreadable_value_is_fatal() {
        let mut driver = TestDriver::new(Roster);
        let error = pipe(&mut driver, json!({"id": "x", "index": true})).expect_err("fatal");
        assert!(error.message.contains("kept by the runtime"), "{error}");
        let mut task = Task::new(Roster);
        let error = task
            .restore("people", "p1", Some(b"not a document"))
            .expect_err("fatal");
        assert!(
            error.to_string().contains("index by_user of people key p1"),
            "{error}"
        );
    }
}
