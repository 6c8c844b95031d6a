//! `clinic cdc emulate`: a **development stand-in** for the MongoDB source connector, for
//! databases without change streams (FerretDB, the local stack's). Never for production: a real
//! MongoDB replica set and the connector in `connectors/source/` are the production path.
//!
//! It follows the collections the source connectors in `connectors/source/` watch (their
//! `database` and the `ns.coll` list of their `pipeline`, or `collection`), polls each one whole
//! every `interval`, compares it with what it saw last, and publishes what changed as the
//! connector would, in the format the connector file sets (Avro default schema; key =
//! `documentKey` as JSON; JSON in the dialect of `output.json.formatter`): `insert`, `update`
//! (with `updateDescription` as MongoDB reports it, dotted paths included: a field of an
//! embedded document changed is `a.b`, elements appended to an array are `a.<n>`, an element
//! changed in place `a.<n>`; any other array change is the whole array), `replace` (when no
//! field kept its value), `delete`; `fullDocument` as `updateLookup` gives it.
//!
//! What it cannot see: two writes to a document between two polls are one event (the real
//! connector reports both); an update that restores a value seen at the last poll is none; the
//! operator (`$set` or a replace) is inferred from the difference. A poll reads every document
//! of every followed collection: for the demo's few thousand documents a few milliseconds
//! (FerretDB answers a `find` of 1,000 documents in ~10 ms); it is not meant for more.
//!
//! Start: as the connector's `startup.mode` says; `latest` (the repository's) takes the documents
//! there at the first start as the starting point and publishes only later changes,
//! `copy_existing` publishes them first as the connector copies them (inserts marked by
//! `_id.copyingData`, which the decoder reads as snapshot reads: tables take them, no email).
//!
//! Position: what it saw is kept in a compacted topic (`<prefix>cdc-emulator.state`, one record
//! per document), written in the same Kafka transaction as the events of each poll, and read
//! back at start. A restart neither replays nor skips: changes made while it was down are
//! published by its first poll.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bson::{Bson, DateTime, Document, Timestamp, doc};
use futures::TryStreamExt as _;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};

use crate::cdc::extjson::{self, Dialect};
use crate::cdc::{ChangeEvent, Namespace, Operation, SourcePosition, mongo};
use crate::streams::OutValue;
use crate::streams::codec::AvroCodec;
use crate::streams::kafka::Health;
use crate::streams::store::table_key;

/// The state topic (without the prefix).
pub const STATE_TOPIC: &str = "cdc-emulator.state";

/// Where the emulator reads and publishes.
#[derive(Debug, Clone)]
pub struct Settings {
    /// MongoDB (or FerretDB) URI.
    pub mongo_uri: String,
    /// Kafka bootstrap servers.
    pub brokers: String,
    /// The registry's Confluent-compatible URL.
    pub registry_url: String,
    /// Prefix of every topic it writes (the source connectors' `topic.prefix`).
    pub topic_prefix: String,
    /// How often each collection is read.
    pub interval: Duration,
}

/// One database as a source connector follows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The database.
    pub database: String,
    /// Its collections followed.
    pub collections: Vec<String>,
    /// The dialect of the connector's JSON (`output.json.formatter`).
    pub dialect: Dialect,
    /// `startup.mode = copy_existing`: the documents there at the first start are published as
    /// inserts; otherwise (`latest`, the default) only later changes are.
    pub copy_existing: bool,
}

/// The sources the connector files in `dir` describe.
///
/// # Errors
/// A file that does not read or parse, or names no database.
pub fn sources(dir: &Path) -> anyhow::Result<Vec<Source>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path)?;
            let config: BTreeMap<String, String> = serde_json::from_str(&text)
                .with_context(|| format!("{}: not a connector config", path.display()))?;
            source_of(&config).with_context(|| path.display().to_string())
        })
        .collect()
}

fn source_of(config: &BTreeMap<String, String>) -> anyhow::Result<Source> {
    let database = config.get("database").cloned().context("no `database`")?;
    let collections = match (config.get("collection"), config.get("pipeline")) {
        (Some(collection), _) => vec![collection.clone()],
        (None, Some(pipeline)) => {
            let stages: serde_json::Value =
                serde_json::from_str(pipeline).context("`pipeline` is not JSON")?;
            stages
                .pointer("/0/$match/ns.coll/$in")
                .and_then(serde_json::Value::as_array)
                .context("`pipeline` has no {$match: {ns.coll: {$in: [...]}}} first")?
                .iter()
                .filter_map(|c| c.as_str().map(str::to_owned))
                .collect()
        }
        (None, None) => anyhow::bail!("neither `collection` nor a `pipeline` naming collections"),
    };
    let dialect = match config
        .get("output.json.formatter")
        .map(|f| f.rsplit('.').next().unwrap_or(f))
    {
        None | Some("DefaultJson") => Dialect::Legacy,
        Some("ExtendedJson") => Dialect::Canonical,
        Some("SimplifiedJson") => Dialect::Relaxed,
        Some(other) => anyhow::bail!("unknown output.json.formatter {other}"),
    };
    let copy_existing = match config.get("startup.mode").map(String::as_str) {
        None | Some("latest") => false,
        Some("copy_existing") => true,
        Some(other) => anyhow::bail!("unknown startup.mode {other}"),
    };
    Ok(Source {
        database,
        collections,
        dialect,
        copy_existing,
    })
}

/// What one poll published.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Published {
    /// Inserts.
    pub inserts: usize,
    /// Updates.
    pub updates: usize,
    /// Replaces.
    pub replaces: usize,
    /// Deletes.
    pub deletes: usize,
}

impl Published {
    /// Events in all.
    pub fn total(&self) -> usize {
        self.inserts + self.updates + self.replaces + self.deletes
    }
}

/// The emulator: its clients and what it saw.
pub struct Emulator {
    settings: Settings,
    sources: Vec<Source>,
    mongo: mongodb::Client,
    producer: FutureProducer,
    codec: AvroCodec,
    /// `<db>.<coll>` → document key → document, as last published.
    seen: BTreeMap<String, BTreeMap<String, Document>>,
    /// Events published so far (resume tokens and `clusterTime` increments come from it).
    sequence: u64,
    schema: Arc<str>,
}

const SEQUENCE_KEY: &str = "sequence";
/// The state key marking a collection followed since the first start (`followed|<db.coll>`).
const FOLLOWED: &str = "followed";

impl Emulator {
    /// Connects, creates its state topic when missing, and reads back what it saw before.
    ///
    /// # Errors
    /// MongoDB or Kafka unreachable, or a state topic it cannot create or read.
    pub async fn start(settings: Settings, sources: Vec<Source>) -> anyhow::Result<Self> {
        let mongo = mongodb::Client::with_uri_str(&settings.mongo_uri)
            .await
            .context("MongoDB")?;
        let client = {
            let mut client = ClientConfig::new();
            client.set("bootstrap.servers", &settings.brokers);
            client
        };
        create_state_topic(&client, &format!("{}{STATE_TOPIC}", settings.topic_prefix)).await?;
        let transactional_id = format!("{}clinic-cdc-emulator", settings.topic_prefix);
        let producer: FutureProducer = client
            .clone()
            .set("transactional.id", &transactional_id)
            .set("linger.ms", "5")
            .create()
            .context("creating the producer")?;
        let init = producer.clone();
        tokio::task::spawn_blocking(move || init.init_transactions(Duration::from_secs(30)))
            .await?
            .context("initializing the transactional producer (is Kafka up?)")?;
        let mut emulator = Self {
            codec: AvroCodec::new(&settings.registry_url),
            settings,
            sources,
            mongo,
            producer,
            seen: BTreeMap::new(),
            sequence: 0,
            schema: Arc::from(mongo::MONGO_CHANGE_STREAM_SCHEMA),
        };
        emulator.restore(&client).await?;
        Ok(emulator)
    }

    fn state_topic(&self) -> String {
        format!("{}{STATE_TOPIC}", self.settings.topic_prefix)
    }

    async fn restore(&mut self, client: &ClientConfig) -> anyhow::Result<()> {
        let topic = self.state_topic();
        let group = format!("{}clinic-cdc-emulator-restore", self.settings.topic_prefix);
        let client = client.clone();
        let (seen, sequence) = tokio::task::spawn_blocking(move || {
            let health = Arc::new(Health::default());
            let mut seen: BTreeMap<String, BTreeMap<String, Document>> = BTreeMap::new();
            let mut sequence = 0;
            crate::streams::kafka::read_partition(&client, &group, &topic, 0, &health, |message| {
                use rdkafka::message::Message as _;
                let key = String::from_utf8_lossy(message.key().unwrap_or_default());
                if key == SEQUENCE_KEY {
                    let text = String::from_utf8_lossy(message.payload().unwrap_or_default());
                    sequence = text.parse().map_err(|e| format!("sequence: {e}"))?;
                    return Ok(());
                }
                let (namespace, id) = key.split_once('|').ok_or("a key without |")?;
                if namespace == FOLLOWED {
                    seen.entry(id.to_owned()).or_default();
                    return Ok(());
                }
                let documents = seen.entry(namespace.to_owned()).or_default();
                match message.payload() {
                    None => {
                        documents.remove(id);
                    }
                    Some(value) => {
                        let text = std::str::from_utf8(value).map_err(|e| e.to_string())?;
                        let document = extjson::parse_document(text).map_err(|e| e.to_string())?;
                        documents.insert(id.to_owned(), document);
                    }
                }
                Ok(())
            })
            .map(|_| (seen, sequence))
        })
        .await?
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", self.state_topic()))?;
        self.seen = seen;
        self.sequence = sequence;
        Ok(())
    }

    /// Reads every followed collection once and publishes what changed since the last poll,
    /// with the new state, in one transaction.
    ///
    /// # Errors
    /// MongoDB, the registry or Kafka failing (the transaction is aborted; nothing is
    /// remembered, so the next poll finds the same changes).
    pub async fn poll(&mut self) -> anyhow::Result<Published> {
        let mut events: Vec<(String, ChangeEvent, Dialect)> = Vec::new();
        let mut state: Vec<(String, Option<Vec<u8>>)> = Vec::new();
        let mut next_seen = self.seen.clone();
        let mut published = Published::default();
        for source in self.sources.clone() {
            for collection in &source.collections {
                let namespace = format!("{}.{collection}", source.database);
                let current: BTreeMap<String, Document> = self
                    .mongo
                    .database(&source.database)
                    .collection::<Document>(collection)
                    .find(doc! {})
                    .await
                    .with_context(|| format!("reading {namespace}"))?
                    .try_collect::<Vec<Document>>()
                    .await
                    .with_context(|| format!("reading {namespace}"))?
                    .into_iter()
                    .map(|d| (table_key(d.get("_id").unwrap_or(&Bson::Null)), d))
                    .collect();
                let first = !next_seen.contains_key(&namespace);
                if first {
                    state.push((format!("{FOLLOWED}|{namespace}"), Some(b"1".to_vec())));
                }
                let before = next_seen.entry(namespace.clone()).or_default();
                if first && !source.copy_existing {
                    // `startup.mode = latest`: what is there now is the starting point.
                    state.extend(current.iter().map(|(key, document)| {
                        let text = extjson::to_string(document, Dialect::Canonical);
                        (format!("{namespace}|{key}"), Some(text.into_bytes()))
                    }));
                    *before = current;
                    continue;
                }
                let ns = Namespace {
                    db: source.database.clone(),
                    coll: Some(collection.clone()),
                };
                for (key, document) in &current {
                    let operation = match before.get(key) {
                        None if first => Some(Change::Copy),
                        None => Some(Change::Insert),
                        Some(old) if old == document => None,
                        Some(old) => Some(change_of(old, document)),
                    };
                    let Some(operation) = operation else { continue };
                    let event = self.event(&ns, document, operation, &mut published);
                    events.push((namespace.clone(), event, source.dialect));
                    state.push((
                        format!("{namespace}|{key}"),
                        Some(extjson::to_string(document, Dialect::Canonical).into_bytes()),
                    ));
                }
                for (key, old) in before.iter() {
                    if !current.contains_key(key) {
                        let event = self.event(&ns, old, Change::Delete, &mut published);
                        events.push((namespace.clone(), event, source.dialect));
                        state.push((format!("{namespace}|{key}"), None));
                    }
                }
                *before = current;
            }
        }
        if state.is_empty() {
            return Ok(published);
        }
        state.push((
            SEQUENCE_KEY.to_owned(),
            Some(self.sequence.to_string().into_bytes()),
        ));
        if let Err(error) = self.publish(&events, &state).await {
            let producer = self.producer.clone();
            let _ = tokio::task::spawn_blocking(move || {
                producer.abort_transaction(Duration::from_secs(30))
            })
            .await;
            self.sequence -= published.total() as u64;
            return Err(error);
        }
        self.seen = next_seen;
        Ok(published)
    }

    fn event(
        &mut self,
        ns: &Namespace,
        document: &Document,
        change: Change,
        published: &mut Published,
    ) -> ChangeEvent {
        self.sequence += 1;
        let now = DateTime::now();
        let copy = matches!(change, Change::Copy);
        let (operation, full, updated, removed) = match change {
            Change::Insert | Change::Copy => {
                published.inserts += 1;
                let operation = if copy {
                    Operation::Snapshot
                } else {
                    Operation::Insert
                };
                (
                    operation,
                    Some(document.clone()),
                    Document::new(),
                    Vec::new(),
                )
            }
            Change::Replace => {
                published.replaces += 1;
                (
                    Operation::Replace,
                    Some(document.clone()),
                    Document::new(),
                    Vec::new(),
                )
            }
            Change::Update { updated, removed } => {
                published.updates += 1;
                (Operation::Update, Some(document.clone()), updated, removed)
            }
            Change::Delete => {
                published.deletes += 1;
                (Operation::Delete, None, Document::new(), Vec::new())
            }
        };
        let seconds = u32::try_from(now.timestamp_millis() / 1000).unwrap_or(u32::MAX);
        let id = document.get("_id").cloned().unwrap_or(Bson::Null);
        // The connector's copy carries its mark as the token, and no oplog or wall time.
        let source = if copy {
            SourcePosition {
                resume_token: Some(doc! { "_id": id, "copyingData": true }),
                cluster_time: None,
                wall_time: None,
            }
        } else {
            SourcePosition {
                resume_token: Some(doc! { "_data": format!("emulator-{:016x}", self.sequence) }),
                cluster_time: Some(Timestamp {
                    time: seconds,
                    #[allow(clippy::cast_possible_truncation, reason = "an increment wraps")]
                    increment: self.sequence as u32,
                }),
                wall_time: Some(now),
            }
        };
        ChangeEvent {
            operation,
            namespace: Some(ns.clone()),
            document_key: doc! { "_id": document.get("_id").cloned().unwrap_or(Bson::Null) },
            full_document: full,
            updated_fields: updated,
            removed_fields: removed,
            truncated_arrays: Vec::new(),
            source,
        }
    }

    async fn publish(
        &self,
        events: &[(String, ChangeEvent, Dialect)],
        state: &[(String, Option<Vec<u8>>)],
    ) -> anyhow::Result<()> {
        let prefix = &self.settings.topic_prefix;
        let mut records = Vec::with_capacity(events.len());
        for (namespace, event, dialect) in events {
            let topic = format!("{prefix}{namespace}");
            let value = OutValue::Avro {
                schema: Arc::clone(&self.schema),
                value: mongo::to_avro(event, *dialect),
            };
            let bytes = self
                .codec
                .encode(&topic, &value)
                .await
                .with_context(|| format!("encoding for {topic}"))?;
            let key = mongo::key_json(event, *dialect).to_string();
            records.push((topic, key, bytes));
        }
        self.producer.begin_transaction().context("beginning")?;
        let state_topic = self.state_topic();
        let sends = records
            .iter()
            .map(|(topic, key, bytes)| FutureRecord::to(topic).key(key).payload(bytes))
            .chain(state.iter().map(|(key, value)| {
                let record = FutureRecord::<String, Vec<u8>>::to(&state_topic)
                    .key(key)
                    .partition(0);
                match value {
                    Some(value) => record.payload(value),
                    None => record,
                }
            }))
            .map(|record| self.producer.send(record, Duration::from_secs(30)));
        for result in futures::future::join_all(sends).await {
            result
                .map_err(|(e, _)| e)
                .context("producing a change event")?;
        }
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || producer.commit_transaction(Duration::from_secs(30)))
            .await?
            .context("committing")?;
        Ok(())
    }

    /// Polls every `interval` until `shutdown` resolves, logging what each poll published.
    /// A failed poll is logged and tried again at the next tick.
    ///
    /// # Errors
    /// None so far; the signature leaves room for a fatal one.
    pub async fn run(
        mut self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        tokio::pin!(shutdown);
        let mut ticks = tokio::time::interval(self.settings.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                _ = ticks.tick() => {}
            }
            match self.poll().await {
                Ok(published) if published.total() > 0 => tracing::info!(
                    inserts = published.inserts,
                    updates = published.updates,
                    replaces = published.replaces,
                    deletes = published.deletes,
                    "Change events published."
                ),
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(error = %format!("{error:#}"), "A poll failed; trying again at the next one.");
                }
            }
        }
    }
}

/// The compacted state topic, one partition (a development stack has one broker: replication 1).
async fn create_state_topic(client: &ClientConfig, topic: &str) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::types::RDKafkaErrorCode;
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        client.create().context("creating the admin client")?;
    let new = NewTopic::new(topic, 1, TopicReplication::Fixed(1)).set("cleanup.policy", "compact");
    let results = admin
        .create_topics(
            [&new],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .with_context(|| format!("creating {topic}"))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => anyhow::bail!("creating {name}: {code}"),
        }
    }
    Ok(())
}

/// How a document changed between two polls.
#[derive(Debug, Clone, PartialEq)]
enum Change {
    Insert,
    /// A document there when `copy_existing` started: the connector's copy of it.
    Copy,
    Update {
        updated: Document,
        removed: Vec<String>,
    },
    Replace,
    Delete,
}

/// An update with the paths MongoDB would report, or a replace when no field kept its value.
fn change_of(before: &Document, after: &Document) -> Change {
    let kept = after
        .iter()
        .any(|(k, v)| k != "_id" && before.get(k) == Some(v));
    if !kept && after.len() > 1 {
        return Change::Replace;
    }
    let mut updated = Document::new();
    let mut removed = Vec::new();
    diff("", before, after, &mut updated, &mut removed);
    Change::Update { updated, removed }
}

/// The `updateDescription` of `before` → `after`, as paths under `prefix`.
pub fn diff(
    prefix: &str,
    before: &Document,
    after: &Document,
    updated: &mut Document,
    removed: &mut Vec<String>,
) {
    for (key, value) in after {
        let path = format!("{prefix}{key}");
        match (before.get(key), value) {
            (Some(old), new) if old == new => {}
            (Some(Bson::Document(old)), Bson::Document(new)) => {
                diff(&format!("{path}."), old, new, updated, removed);
            }
            (Some(Bson::Array(old)), Bson::Array(new)) if new.len() >= old.len() => {
                let changed_in_place = old
                    .iter()
                    .zip(new)
                    .enumerate()
                    .filter(|(_, (o, n))| o != n)
                    .map(|(i, _)| i)
                    .collect::<Vec<_>>();
                // MongoDB reports a `$push` as `<path>.<n>` per new element, and a positional
                // `$set` as `<path>.<n>`; anything else (a shrink) as the whole array.
                for index in changed_in_place.into_iter().chain(old.len()..new.len()) {
                    updated.insert(format!("{path}.{index}"), new[index].clone());
                }
            }
            _ => {
                updated.insert(path, value.clone());
            }
        }
    }
    for key in before.keys() {
        if !after.contains_key(key) {
            removed.push(format!("{prefix}{key}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_are_described_with_dotted_paths_as_mongodb_reports_them() {
        let before = doc! {
            "_id": 1, "name": "A", "profile": { "city": "X", "zip": "1" },
            "rolesUpdates": [{ "roles": ["A"] }], "tags": [1, 2, 3], "gone": true,
        };
        let after = doc! {
            "_id": 1, "name": "A", "profile": { "city": "Y", "zip": "1" },
            "rolesUpdates": [{ "roles": ["A"] }, { "roles": ["B"] }], "tags": [1], "new": 5,
        };
        let Change::Update { updated, removed } = change_of(&before, &after) else {
            panic!("an update")
        };
        assert_eq!(
            updated,
            doc! { "profile.city": "Y", "rolesUpdates.1": { "roles": ["B"] }, "tags": [1], "new": 5 }
        );
        assert_eq!(removed, ["gone"]);
        let replaced = doc! { "_id": 1, "name": "B", "other": 1 };
        assert_eq!(change_of(&before, &replaced), Change::Replace);
    }

    #[test]
    fn sources_come_from_the_connector_files() {
        let dir = crate::testkit::repo_root(0).join("connectors/source");
        let sources = sources(&dir).expect("connector files");
        let clinic = sources
            .iter()
            .find(|s| s.database == "clinic")
            .expect("clinic");
        assert_eq!(
            clinic.collections,
            [
                "clinics",
                "clinicians",
                "patients",
                "migrations",
                "patient_invites"
            ]
        );
        assert_eq!(clinic.dialect, Dialect::Canonical);
        assert!(sources.iter().any(|s| s.database == "gatekeeper"));
    }
}
