//! What a processor declares about itself: the topics it reads (and how they are encoded), the
//! topics it writes, and its stores. The runtime creates consumers, decoders and changelogs from
//! it; `clinic topology` and the consistency tests read it.

use super::stored::StoredError;
use crate::cdc;

/// How an input topic's records are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    /// A CDC topic in one of the forms of DESIGN.md 2.2, decoded to [`cdc::CdcRecord`].
    Cdc(cdc::Format),
    /// Plain JSON values (plain or double-encoded text).
    Json,
    /// Confluent-framed Avro values, decoded through the registry to a generic Avro value.
    Avro,
}

impl InputFormat {
    /// Whether values are Confluent-framed Avro, resolved through the registry.
    pub fn avro_values(self) -> bool {
        match self {
            Self::Avro => true,
            Self::Cdc(format) => format.encoding == cdc::Encoding::Avro,
            Self::Json => false,
        }
    }

    /// Whether this is a topic of the MongoDB connector's change events.
    pub fn mongo_change_stream(self) -> bool {
        matches!(self, Self::Cdc(format) if format.envelope == cdc::Envelope::MongoChangeStream)
    }

    /// Whether keys are too (Debezium's Avro keys; the MongoDB connector's keys are JSON).
    pub fn avro_keys(self) -> bool {
        matches!(self, Self::Cdc(format) if format.encoding == cdc::Encoding::Avro && format.envelope == cdc::Envelope::Debezium)
    }
}

/// Whether an input is processed record by record or materialized into a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputKind {
    /// Every record goes to [`super::Processor::process`].
    Stream,
    /// A CDC topic kept as a table in `store`: inserts, replaces and updates upsert the document
    /// under its `_id`, deletes remove it. The processor reads the table; it is not called.
    Table {
        /// The store holding the table.
        store: String,
    },
    /// A global table, as Kafka Streams' `GlobalKTable`: every instance reads every partition of
    /// the topic, outside the consumer group, into the global store `store` (no changelog: the
    /// topic is the log), through [`super::Processor::process_global`]. Tasks read it as any
    /// store and hear of its changes through [`super::Processor::global_changed`].
    Global {
        /// The global store the processor keeps from the topic.
        store: String,
    },
}

/// One input topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputTopic {
    /// Topic name (without the deployment's global prefix).
    pub topic: String,
    /// Its encoding.
    pub format: InputFormat,
    /// Stream or table.
    pub kind: InputKind,
    /// Handle a record only once every other input has been read up to where it ended when the
    /// record arrived (see [`Topology::stream_after_others`]).
    pub after_others: bool,
    /// The top-level fields of a CDC stream's `fullDocument` the processor reads; the others
    /// are skipped while decoding (see [`Topology::document_fields`]). `None`: all.
    pub fields: Option<&'static [&'static str]>,
}

/// What an index takes from one entry of the store it indexes: the index keys the entry is listed
/// under (`key` is the entry's key, `value` its bytes).
pub type IndexKeys = fn(key: &str, value: &[u8]) -> Result<Vec<String>, StoredError>;

/// A secondary index of a store, kept by the runtime (see [`Topology::index`]).
#[derive(Debug, Clone)]
pub struct StoreIndex {
    /// The index's name: read as a store of that name, whose entries have empty values.
    pub name: String,
    /// The store it indexes.
    pub of: String,
    /// Its keys per entry of `of`.
    pub keys: IndexKeys,
}

// By name: function pointers have no reliable equality (the same function may have two
// addresses), and two indexes of one topology never share a name.
impl PartialEq for StoreIndex {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.of == other.of
    }
}

impl Eq for StoreIndex {}

impl StoreIndex {
    /// How this index changes when the entry `key` of its store goes from `old` to `new`
    /// (`None`: absent): the index keys to add (`true`) and to remove (`false`).
    ///
    /// # Errors
    /// When the index cannot read one of the values.
    pub(crate) fn changes(
        &self,
        key: &str,
        old: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<Vec<(String, bool)>, IndexError> {
        let keys = |value: Option<&[u8]>| {
            value
                .map(|value| (self.keys)(key, value))
                .transpose()
                .map(Option::unwrap_or_default)
                .map_err(|source| IndexError {
                    index: self.name.clone(),
                    store: self.of.clone(),
                    key: key.to_owned(),
                    source,
                })
        };
        let (before, after) = (keys(old)?, keys(new)?);
        let removed = before.iter().filter(|k| !after.contains(k));
        let added = after.iter().filter(|k| !before.contains(k));
        Ok(removed
            .map(|k| (k.clone(), false))
            .chain(added.map(|k| (k.clone(), true)))
            .collect())
    }
}

/// An index could not read an entry of the store it indexes (a bug in its function, or a value
/// of another version's form).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("index {index} of {store} key {key}: {source}")]
pub struct IndexError {
    /// The index.
    pub index: String,
    /// The store it indexes.
    pub store: String,
    /// The entry's key.
    pub key: String,
    /// What reading the entry said.
    pub source: StoredError,
}

/// Where a store lives (`streams.stores`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    /// In memory, restored whole at every start.
    Memory,
    /// On disk under `streams.state_dir`, restored from its checkpoint.
    Disk,
}

/// A processor's declared shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// The processor's name: consumer group `clinic-<name>`, DLQ `<name>.dlq`, changelogs
    /// `<name>.<store>.changelog`.
    pub name: String,
    /// Topics read.
    pub inputs: Vec<InputTopic>,
    /// Topics written (besides the DLQ and changelogs).
    pub outputs: Vec<String>,
    /// Stores, by name (each task has its own, backed by a changelog).
    pub stores: Vec<String>,
    /// Global stores, by name (one per instance, kept from global inputs, no changelog).
    pub global_stores: Vec<String>,
    /// Indexes of stores, kept by the runtime (no changelog: rebuilt as their stores restore).
    pub indexes: Vec<StoreIndex>,
    /// Stores that may outgrow memory: kept on disk when the instance has a state directory
    /// (see [`Topology::persistent`]).
    pub persistent: Vec<String>,
    /// Repartition topics, by the name the processor uses (see [`Topology::repartition`]).
    pub repartitions: Vec<String>,
    /// Kafka Streams' `application.id`: scopes the consumer group, the transactional ids and the
    /// changelog topics. `None`: `clinic-<name>` and `<name>.<store>.changelog`.
    pub application_id: Option<String>,
}

impl Topology {
    /// An empty topology for the processor `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            stores: Vec::new(),
            global_stores: Vec::new(),
            indexes: Vec::new(),
            persistent: Vec::new(),
            repartitions: Vec::new(),
            application_id: None,
        }
    }

    /// Scopes group, transactional ids and changelogs to `id` (a fresh id means fresh state and a
    /// replay of the inputs from the beginning, as a new Kafka Streams `application.id` does).
    #[must_use]
    pub fn with_application_id(mut self, id: Option<String>) -> Self {
        self.application_id = id;
        self
    }

    /// Adds a stream input.
    #[must_use]
    pub fn stream(mut self, topic: impl Into<String>, format: InputFormat) -> Self {
        self.inputs.push(InputTopic {
            topic: topic.into(),
            format,
            kind: InputKind::Stream,
            after_others: false,
            fields: None,
        });
        self
    }

    /// Adds a stream input whose records act on what the other inputs built: each is handled
    /// only after every other input partition has been read up to its end as it stood when the
    /// record arrived (the runner holds the record and pauses its partition meanwhile). So a
    /// trigger never acts on tables that lag behind it, whatever the consumer's fetch order, as
    /// Kafka Streams' `max.task.idle.ms` aims for; without a time bound, because acting on a
    /// partial table could delete data. Meant for rare records (user deletions).
    #[must_use]
    pub fn stream_after_others(mut self, topic: impl Into<String>, format: InputFormat) -> Self {
        self.inputs.push(InputTopic {
            topic: topic.into(),
            format,
            kind: InputKind::Stream,
            after_others: true,
            fields: None,
        });
        self
    }

    /// Adds a CDC table input materialized into the store `store` (declared here too).
    #[must_use]
    pub fn table(
        mut self,
        topic: impl Into<String>,
        format: cdc::Format,
        store: impl Into<String>,
    ) -> Self {
        let store = store.into();
        self.stores.push(store.clone());
        self.inputs.push(InputTopic {
            topic: topic.into(),
            format: InputFormat::Cdc(format),
            kind: InputKind::Table { store },
            after_others: false,
            fields: None,
        });
        self
    }

    /// Adds a global table input: every instance reads all of `topic` into the global store
    /// `store` (declared here too) before its tasks start, and keeps it current. For small tables
    /// a processor looks up by something other than the record key it is partitioned by
    /// (clinics and clinicians by clinic and user). A topic may be a global input and a stream
    /// input at once: the stream side sees each change as a trigger, in its task.
    #[must_use]
    pub fn global(
        mut self,
        topic: impl Into<String>,
        format: InputFormat,
        store: impl Into<String>,
    ) -> Self {
        let store = store.into();
        if !self.global_stores.contains(&store) {
            self.global_stores.push(store.clone());
        }
        self.inputs.push(InputTopic {
            topic: topic.into(),
            format,
            kind: InputKind::Global { store },
            after_others: false,
            fields: None,
        });
        self
    }

    /// Declares which top-level fields of the CDC stream `topic`'s `fullDocument` the processor
    /// reads (`_id` among them if it reads it there); the decoder skips the others without
    /// building them. A document with a broken value in a skipped field is then not a poison
    /// record. Tables keep whole documents and take no such list.
    ///
    /// # Panics
    /// When `topic` is not a stream input declared before: a bug in the processor's topology.
    #[must_use]
    pub fn document_fields(mut self, topic: &str, fields: &'static [&'static str]) -> Self {
        let input = self
            .inputs
            .iter_mut()
            .find(|i| i.topic == topic && matches!(i.kind, InputKind::Stream))
            .unwrap_or_else(|| panic!("BUG: {topic} is not a stream input declared before"));
        input.fields = Some(fields);
        self
    }

    /// Declares a repartition topic, as Kafka Streams' `repartition()`: an internal topic the
    /// processor writes under the name `name` (an output) and reads back (declare the input with
    /// [`Topology::stream`] or [`Topology::stream_after_others`] under the same name), so records
    /// re-keyed by what a lookup needs reach the task that holds it. Its partition follows the
    /// key (librdkafka's default partitioner: CRC32 of the key), or every partition for
    /// [`super::Context::broadcast`]. In Kafka it is [`Topology::repartition_topic`], scoped
    /// like the changelogs, with as many partitions as the inputs; its records are written and
    /// read in the tasks' transactions, so exactly-once holds across it.
    #[must_use]
    pub fn repartition(mut self, name: impl Into<String>) -> Self {
        let name = name.into();
        self.outputs.push(name.clone());
        self.repartitions.push(name);
        self
    }

    /// The Kafka topic of the repartition topic `name`: `<name of the processor>.<name>.repartition`
    /// (`<application id>.…` when one is set).
    pub fn repartition_topic(&self, name: &str) -> String {
        let scope = self.application_id.as_deref().unwrap_or(&self.name);
        format!("{scope}.{name}.repartition")
    }

    /// Whether `topic` (as the processor names it) is a repartition topic.
    pub fn is_repartition(&self, topic: &str) -> bool {
        self.repartitions.iter().any(|r| r == topic)
    }

    /// The Kafka topic (without the deployment's prefix) of a topic as the processor names it:
    /// itself, or a repartition topic's scoped name.
    pub fn kafka_topic(&self, topic: &str) -> String {
        if self.is_repartition(topic) {
            self.repartition_topic(topic)
        } else {
            topic.to_owned()
        }
    }

    /// The topic as the processor names it, of a Kafka topic (without the deployment's prefix):
    /// the inverse of [`Topology::kafka_topic`].
    pub fn processor_topic<'t>(&self, kafka_topic: &'t str) -> std::borrow::Cow<'t, str> {
        match self
            .repartitions
            .iter()
            .find(|r| self.repartition_topic(r) == kafka_topic)
        {
            Some(name) => std::borrow::Cow::Owned(name.clone()),
            None => std::borrow::Cow::Borrowed(kafka_topic),
        }
    }

    /// Declares an output topic.
    #[must_use]
    pub fn output(mut self, topic: impl Into<String>) -> Self {
        self.outputs.push(topic.into());
        self
    }

    /// Declares a store the processor writes itself.
    #[must_use]
    pub fn store(mut self, name: impl Into<String>) -> Self {
        self.stores.push(name.into());
        self
    }

    /// Declares a secondary index `name` of the store `of`: the runtime lists each entry of `of`
    /// under the keys `keys` gives for it, and keeps the index in step as the entry is written
    /// or deleted (a record reads its own changes in it, as in any store). The processor reads
    /// it as a store (`scan_prefix` over `<part>|<entry key>` style keys) and never writes it.
    /// It has no changelog: a restore rebuilds it from `of`'s, so it costs no records on the
    /// hot path, and its form may change between versions.
    ///
    /// # Panics
    /// When `of` is not a store declared before or `name` is taken: a bug in the topology.
    #[must_use]
    pub fn index(mut self, name: impl Into<String>, of: &str, keys: IndexKeys) -> Self {
        let name = name.into();
        assert!(
            self.stores.iter().any(|s| s == of),
            "BUG: index {name} of {of}, which is not a store declared before"
        );
        assert!(
            !self.stores.contains(&name) && self.index_named(&name).is_none(),
            "BUG: index {name}: the name is taken"
        );
        self.indexes.push(StoreIndex {
            name,
            of: of.to_owned(),
            keys,
        });
        self
    }

    /// Marks the declared store `store` as one that may outgrow memory: with a state directory
    /// (`streams.state_dir`) it lives on disk (`crate::streams::disk`), and a restart replays
    /// only its changelog's tail; its indexes live on disk with it. Without one, in memory.
    /// `streams.stores` can override the choice per store.
    ///
    /// # Panics
    /// When `store` is not a store declared before: a bug in the topology.
    #[must_use]
    pub fn persistent(mut self, store: &str) -> Self {
        assert!(
            self.stores.iter().any(|s| s == store),
            "BUG: persistent {store}, which is not a store declared before"
        );
        self.persistent.push(store.to_owned());
        self
    }

    /// Whether the store (or index) `store` is on disk, given the instance's choices:
    /// `overrides` per store (`streams.stores`), and whether it has a state directory at all.
    /// An index lives where the store it indexes lives.
    pub fn on_disk(
        &self,
        store: &str,
        has_state_dir: bool,
        overrides: &std::collections::BTreeMap<String, StoreKind>,
    ) -> bool {
        if !has_state_dir {
            return false;
        }
        if let Some(index) = self.index_named(store) {
            return self.on_disk(&index.of, has_state_dir, overrides);
        }
        match overrides.get(store) {
            Some(kind) => *kind == StoreKind::Disk,
            None => self.persistent.iter().any(|s| s == store),
        }
    }

    /// The index `name`, when it is one.
    pub fn index_named(&self, name: &str) -> Option<&StoreIndex> {
        self.indexes.iter().find(|i| i.name == name)
    }

    /// The indexes of the store `store`.
    pub fn indexes_of<'a>(&'a self, store: &'a str) -> impl Iterator<Item = &'a StoreIndex> {
        self.indexes.iter().filter(move |i| i.of == store)
    }

    /// Every store a task holds: the declared ones and the indexes.
    pub fn task_stores(&self) -> impl Iterator<Item = &String> {
        self.stores
            .iter()
            .chain(self.indexes.iter().map(|i| &i.name))
    }

    /// The dead-letter topic: `<name>.dlq`.
    pub fn dlq_topic(&self) -> String {
        format!("{}.dlq", self.name)
    }

    /// The changelog topic of `store`: `<name>.<store>.changelog` (`<application id>.…` when
    /// one is set).
    pub fn changelog_topic(&self, store: &str) -> String {
        let scope = self.application_id.as_deref().unwrap_or(&self.name);
        format!("{scope}.{store}.changelog")
    }

    /// The consumer group: `clinic-<name>`, or the application id when one is set.
    pub fn group_id(&self) -> String {
        match &self.application_id {
            Some(id) => id.clone(),
            None => format!("clinic-{}", self.name),
        }
    }

    /// Every topic it reads: inputs and its changelogs (restored from), as Kafka names them.
    pub fn reads(&self) -> Vec<String> {
        let mut topics = self.input_topics();
        topics.extend(self.stores.iter().map(|s| self.changelog_topic(s)));
        topics
    }

    /// Every topic it writes: outputs, its DLQ and its changelogs (Kafka names).
    pub fn writes(&self) -> Vec<String> {
        let mut topics: Vec<String> = self.outputs.iter().map(|t| self.kafka_topic(t)).collect();
        topics.push(self.dlq_topic());
        topics.extend(self.stores.iter().map(|s| self.changelog_topic(s)));
        topics
    }

    /// The input topics, each once (a topic can be a global and a stream input), as Kafka names
    /// them.
    pub fn input_topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = Vec::new();
        for input in &self.inputs {
            let topic = self.kafka_topic(&input.topic);
            if !topics.contains(&topic) {
                topics.push(topic);
            }
        }
        topics
    }

    /// The declared stream or table input for `topic` (what the consumer group reads).
    pub fn input(&self, topic: &str) -> Option<&InputTopic> {
        self.partitioned_inputs().find(|input| input.topic == topic)
    }

    /// The inputs the consumer group reads, partition by partition: all but the global ones.
    pub fn partitioned_inputs(&self) -> impl Iterator<Item = &InputTopic> {
        self.inputs
            .iter()
            .filter(|input| !matches!(input.kind, InputKind::Global { .. }))
    }

    /// The global input for `topic`, with its store.
    pub fn global_input(&self, topic: &str) -> Option<(&InputTopic, &str)> {
        self.inputs.iter().find_map(|input| match &input.kind {
            InputKind::Global { store } if input.topic == topic => Some((input, store.as_str())),
            _ => None,
        })
    }

    /// The global inputs' topics.
    pub fn global_topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = Vec::new();
        for input in &self.inputs {
            if matches!(input.kind, InputKind::Global { .. }) && !topics.contains(&input.topic) {
                topics.push(input.topic.clone());
            }
        }
        topics
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routed() -> Topology {
        Topology::new("router")
            .stream("clinic.patients", InputFormat::Json)
            .repartition("by-clinic")
            .stream("by-clinic", InputFormat::Json)
    }

    #[test]
    fn a_repartition_topic_is_scoped_like_the_changelogs_and_mapped_both_ways() {
        let topology = routed();
        assert_eq!(
            topology.kafka_topic("by-clinic"),
            "router.by-clinic.repartition"
        );
        assert_eq!(topology.kafka_topic("clinic.patients"), "clinic.patients");
        assert_eq!(
            topology.processor_topic("router.by-clinic.repartition"),
            "by-clinic"
        );
        assert_eq!(
            topology.processor_topic("clinic.patients"),
            "clinic.patients"
        );
        assert!(
            topology
                .writes()
                .contains(&"router.by-clinic.repartition".to_owned())
        );
        assert_eq!(
            topology.input_topics(),
            ["clinic.patients", "router.by-clinic.repartition"]
        );

        // A fresh application id gets fresh repartition topics, as it gets fresh changelogs.
        let replay = routed().with_application_id(Some("replay-1".into()));
        assert_eq!(
            replay.kafka_topic("by-clinic"),
            "replay-1.by-clinic.repartition"
        );
        assert_eq!(
            replay.processor_topic("replay-1.by-clinic.repartition"),
            "by-clinic"
        );
        assert_eq!(
            replay.processor_topic("router.by-clinic.repartition"),
            "router.by-clinic.repartition",
            "another scope's topic is not this one's"
        );
    }
}
