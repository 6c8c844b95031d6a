//! Runs a processor in-process without a broker, like Kafka Streams' `TopologyTestDriver`: pipe
//! records in (any supported input form), read what it emitted, dead-lettered and wrote to its
//! stores. Synchronous and deterministic: offsets count from 0 per topic, one partition. A
//! record of a topic that is a global input is folded into the global tables first and the
//! change announced to the task, then handled as a stream record if the topic is one too (the
//! order the runner's global thread, usually ahead of the group, gives most often). Records for
//! a repartition topic (emitted or broadcast) are handled as its input right after the record
//! that made them, before the next one is piped in: one of the orders the runner may give them.
//! A test that wants another order holds a repartition topic ([`TestDriver::hold`]), reads its
//! records as outputs and pipes them back when it chooses.

use std::collections::{HashMap, VecDeque};

use apache_avro::types::Value as Avro;

use super::global::GlobalTables;
use super::processor::{OutputRecord, Processor};
use super::record::{ProducedRecord, RawRecord};
use super::store::KeyValueStore;
use super::task::{AvroResolved, FatalError, Outcome, Task, read};

/// The driver around one processor.
pub struct TestDriver<P> {
    task: Task<P>,
    globals: GlobalTables,
    /// The task is stopped: only the global tables follow their topics.
    stopped: bool,
    next_offset: HashMap<String, i64>,
    outputs: Vec<OutputRecord>,
    changelog: Vec<ProducedRecord>,
    dead_letters: Vec<ProducedRecord>,
    /// Repartition topics whose records are kept as outputs instead of handled.
    held: Vec<String>,
}

impl<P: Processor> TestDriver<P> {
    /// A driver with empty stores.
    pub fn new(processor: P) -> Self {
        let task = Task::new(processor);
        let globals = GlobalTables::new(task.topology().clone());
        Self {
            task: task.with_globals(globals.stores()),
            globals,
            stopped: false,
            next_offset: HashMap::new(),
            outputs: Vec::new(),
            changelog: Vec::new(),
            dead_letters: Vec::new(),
            held: Vec::new(),
        }
    }

    /// Keeps the records the processor writes to the repartition topic `name` as outputs
    /// ([`TestDriver::read_output`]) instead of handling them: the test pipes them back (or
    /// not: a crash) when it chooses.
    #[must_use]
    pub fn hold(mut self, name: &str) -> Self {
        self.held.push(name.to_owned());
        self
    }

    /// Pipes a record of a JSON topic (CDC JSON forms, or plain JSON): raw key and value bytes as
    /// they would be on the topic; `None` value is a tombstone.
    ///
    /// # Errors
    /// When the processor fails fatally.
    pub fn pipe(
        &mut self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> Result<(), FatalError> {
        let record = self.raw(topic, key.map(<[u8]>::to_vec), value.map(<[u8]>::to_vec));
        self.handle(&record, None)
    }

    /// Pipes a change event as Tidepool's source connectors write it: the connector's
    /// `DefaultJson` text (legacy strict Extended JSON), double-encoded by Connect's
    /// JsonConverter. For a topic declared with the JSON encoding.
    ///
    /// # Errors
    /// When the processor fails fatally.
    pub fn pipe_tidepool_json(
        &mut self,
        topic: &str,
        change: &crate::cdc::ChangeEvent,
    ) -> Result<(), FatalError> {
        let text =
            crate::cdc::mongo::to_json(change, crate::cdc::extjson::Dialect::Legacy).to_string();
        let literal = serde_json::to_vec(&text).expect("BUG: a string serializes");
        self.pipe(topic, None, Some(&literal))
    }

    /// Pipes a record with headers (CloudEvents binary mode carries its attributes there).
    ///
    /// # Errors
    /// When the processor fails fatally.
    pub fn pipe_with_headers(
        &mut self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, &[u8])],
    ) -> Result<(), FatalError> {
        let mut record = self.raw(topic, key.map(<[u8]>::to_vec), value.map(<[u8]>::to_vec));
        record.headers = headers
            .iter()
            .map(|(name, value)| ((*name).to_owned(), value.to_vec()))
            .collect();
        self.handle(&record, None)
    }

    /// Pipes a record of an Avro topic resolved through the registry, as the generic Avro key and
    /// value (the runner reads a CDC topic's straight into the JSON they make, the task reads
    /// these into the same). (The raw bytes of such a record are not kept, so its dead letter, if
    /// any, carries no value.)
    ///
    /// # Errors
    /// When the processor fails fatally.
    pub fn pipe_avro(
        &mut self,
        topic: &str,
        key: Option<Avro>,
        value: Option<Avro>,
    ) -> Result<(), FatalError> {
        let record = self.raw(topic, None, None);
        self.handle(&record, Some(AvroResolved::Generic { key, value }))
    }

    /// Pipes a record of an Avro CDC topic as the runner hands it over: key and value read as
    /// JSON ([`crate::cdc::avro_json::read`]).
    ///
    /// # Errors
    /// When the processor fails fatally.
    pub fn pipe_avro_json(
        &mut self,
        topic: &str,
        key: Option<serde_json::Value>,
        value: Option<serde_json::Value>,
    ) -> Result<(), FatalError> {
        let record = self.raw(topic, None, None);
        let value = value.map(crate::cdc::AvroValue::Json);
        self.handle(&record, Some(AvroResolved::Cdc { key, value }))
    }

    /// Pipes bytes the registry could not resolve (bad magic byte, unknown schema id): they go to
    /// the DLQ with `error`, as the runner does.
    pub fn pipe_unresolvable(&mut self, topic: &str, value: &[u8], error: &str) {
        let record = self.raw(topic, None, Some(value.to_vec()));
        let outcome = self.task.dead_letter(&record, error);
        self.dead_letters.extend(outcome.dead_letter);
    }

    /// Seeds a store as a restore from its changelog would.
    ///
    /// # Panics
    /// When the store is not declared.
    pub fn preload(&mut self, store: &str, key: &str, value: &[u8]) {
        self.task
            .restore(store, key, Some(value))
            .expect("store is declared");
    }

    /// Takes the records emitted to `topic` so far, in order.
    pub fn read_output(&mut self, topic: &str) -> Vec<OutputRecord> {
        let (taken, kept) = std::mem::take(&mut self.outputs)
            .into_iter()
            .partition(|r| r.topic == topic);
        self.outputs = kept;
        taken
    }

    /// All dead-lettered records so far.
    pub fn dead_letters(&self) -> &[ProducedRecord] {
        &self.dead_letters
    }

    /// All changelog records written so far.
    pub fn changelog(&self) -> &[ProducedRecord] {
        &self.changelog
    }

    /// A store's current contents.
    ///
    /// # Panics
    /// When the store is not declared.
    pub fn store(&self, name: &str) -> &KeyValueStore {
        self.task
            .stores()
            .get(name)
            .expect("store is declared")
            .memory()
            .expect("the driver keeps its stores in memory")
    }

    /// A global store's current contents (a copy).
    ///
    /// # Panics
    /// When the global store is not declared.
    pub fn global_store(&self, name: &str) -> KeyValueStore {
        read(&self.globals.stores())
            .get(name)
            .and_then(|store| store.memory())
            .expect("global store is declared, in memory")
            .clone()
    }

    /// What a restarted task does once its stores are restored ([`Processor::resumed`]).
    ///
    /// # Errors
    /// When the processor fails fatally.
    pub fn resume(&mut self) -> Result<(), FatalError> {
        let outcome = self.task.resumed()?;
        let internal = self.collect(outcome);
        self.handle_internal(internal.into())
    }

    /// Stops the task, as a crash of its instance would: until [`TestDriver::restart_task`],
    /// records of global inputs only update the global tables (nobody hears of the change), and
    /// the stream side of their topics is left for after the restart.
    ///
    /// # Panics
    /// Later, when a record of a topic that is only a stream input is piped meanwhile.
    pub fn stop_task(&mut self) {
        self.stopped = true;
    }

    /// Empties the task's stores (not the global ones) and restores them from the changelog it
    /// wrote so far, then resumes: what a restart of the instance does to the task.
    ///
    /// # Errors
    /// When the processor fails fatally.
    pub fn restart_task(&mut self, processor: P) -> Result<(), FatalError> {
        let mut task = Task::new(processor).with_globals(self.globals.stores());
        let topology = self.task.topology();
        for record in &self.changelog {
            let store = topology
                .stores
                .iter()
                .find(|store| topology.changelog_topic(store) == record.topic)
                .expect("a changelog topic of this processor");
            let key = String::from_utf8_lossy(record.key.as_deref().unwrap_or_default());
            task.restore(store, &key, record.value.as_deref())
                .expect("store is declared");
        }
        self.task = task;
        self.stopped = false;
        self.resume()
    }

    fn raw(&mut self, topic: &str, key: Option<Vec<u8>>, value: Option<Vec<u8>>) -> RawRecord {
        let offset = self.next_offset.entry(topic.to_owned()).or_insert(0);
        let record = RawRecord {
            topic: topic.to_owned(),
            partition: 0,
            offset: *offset,
            timestamp_ms: Some(1_700_000_000_000 + *offset),
            key,
            value,
            headers: Vec::new(),
        };
        *offset += 1;
        record
    }

    /// Handles a piped record, then what it sent through repartition topics, in order.
    fn handle(&mut self, record: &RawRecord, avro: Option<AvroResolved>) -> Result<(), FatalError> {
        let internal = self.handle_one(record, avro)?;
        self.handle_internal(internal.into())
    }

    /// Handles records for repartition topics, and those they make, in order.
    fn handle_internal(&mut self, mut internal: VecDeque<OutputRecord>) -> Result<(), FatalError> {
        while let Some(output) = internal.pop_front() {
            let value = output.value.map(|value| {
                value.json_bytes().unwrap_or_else(|| {
                    panic!("repartition topics carry JSON ({} had Avro)", output.topic)
                })
            });
            let record = self.raw(&output.topic, Some(output.key.into_bytes()), value);
            internal.extend(self.handle_one(&record, None)?);
        }
        Ok(())
    }

    /// Handles one record; answers what it emitted to repartition topics.
    fn handle_one(
        &mut self,
        record: &RawRecord,
        avro: Option<AvroResolved>,
    ) -> Result<Vec<OutputRecord>, FatalError> {
        let mut internal = Vec::new();
        let topology = self.task.topology();
        let (global, stream) = (
            topology.global_input(&record.topic).is_some(),
            topology.input(&record.topic).is_some(),
        );
        if global {
            let changed = self
                .globals
                .apply(self.task.processor(), record, avro.clone())?;
            if !self.stopped {
                let outcome = self.task.global_changed(&changed)?;
                internal.extend(self.collect(outcome));
            }
        }
        if self.stopped {
            assert!(global, "the task is stopped: {} waits for it", record.topic);
            return Ok(internal);
        }
        if stream || !global {
            let outcome = self.task.handle(record, avro)?;
            internal.extend(self.collect(outcome));
        }
        Ok(internal)
    }

    /// Keeps an outcome's records; answers those for repartition topics, to be handled next.
    fn collect(&mut self, outcome: Outcome) -> Vec<OutputRecord> {
        let topology = self.task.topology();
        let (internal, outputs): (Vec<_>, Vec<_>) = outcome
            .outputs
            .into_iter()
            .chain(outcome.broadcasts)
            .partition(|r| topology.is_repartition(&r.topic) && !self.held.contains(&r.topic));
        self.outputs.extend(outputs);
        self.changelog.extend(outcome.changelog);
        self.dead_letters.extend(outcome.dead_letter);
        internal
    }
}
